"""Limits: rate limits, concurrency, budget reservations and the kill switch.

Owns the state every request is admitted against, behind one async Protocol
(``LimitsBackend``) with two implementations: ``MemoryLimits``, in-process,
for one gateway (the embedded default), and ``RedisLimits``, atomic Lua
scripts in Redis shared by every replica. One ``admit`` checks and takes all
of a request's rules at once, all or nothing; ``settle`` gives back what the
request did not use. Budgets are reserved at their maximum cost before the
call, so concurrent requests can never spend past them; reservations and
concurrency slots are leases, reclaimed if a gateway dies holding them. See
docs/limits-backends.md.

Knows keys, limits and amounts, not tiers, tenants or prices: the pipeline
builds an ``Admission`` from config. May import ``keel.errors`` only; never
``keel.api`` or ``keel.cli``. Importing it does not import redis.
"""

from __future__ import annotations

from keel.limits._memory import MemoryLimits
from keel.limits._redis import RedisLimits, redact_url
from keel.limits._rules import Clock
from keel.limits.base import (
    Admission,
    Admitted,
    BudgetLevel,
    BudgetRule,
    BudgetUsage,
    ConcurrencyRule,
    LimitsBackend,
    RateRule,
    RefusalKind,
    Refused,
    Ticket,
)

__all__ = [
    "Admission",
    "Admitted",
    "BudgetLevel",
    "BudgetRule",
    "BudgetUsage",
    "Clock",
    "ConcurrencyRule",
    "LimitsBackend",
    "MemoryLimits",
    "RateRule",
    "RedisLimits",
    "RefusalKind",
    "Refused",
    "Ticket",
    "open_limits",
    "redact_url",
]


def open_limits(
    url: str | None, *, prefix: str = "keel:", timeout_s: float = 0.25
) -> LimitsBackend:
    """The backend for ``url``: ``None`` or ``memory://`` embedded, else Redis.

    Builds the client only; the first call connects, so a down Redis shows
    up as ``LimitsUnavailable`` on the request path, not as a failed start.
    """
    if url is None or url == "memory://":
        return MemoryLimits()
    return RedisLimits(url, prefix=prefix, timeout_s=timeout_s)
