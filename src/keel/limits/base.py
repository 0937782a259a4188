"""The limits interface: what the gateway asks, and what every backend answers.

One admission carries every rule a request must pass (rates, concurrency,
budgets, the tenant's kill switch) so a backend can check and take them all
at once: all or nothing, in one step (one Redis round trip). Rules are plain
frozen data built by the caller from config; the backend knows no tiers,
tenants or prices, only keys, limits and amounts.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal, Protocol

RefusalKind = Literal["suspended", "rate", "concurrency", "budget"]


def _require(condition: bool, message: str) -> None:
    # A bad rule is a bug in the caller's config translation; fail where it is built.
    if not condition:
        raise ValueError(message)


@dataclass(frozen=True, slots=True)
class RateRule:
    """A token bucket: capacity ``limit`` per ``period_s``, refilling continuously.

    ``amount`` is taken at admission (1 for a request, the estimated tokens for
    tpm); settle corrects it to the actual count. A bucket may go negative
    after a correction and then refuses until it has refilled.
    """

    key: str
    limit: int
    amount: int
    name: str
    period_s: float = 60.0

    def __post_init__(self) -> None:
        _require(self.limit > 0, f"{self.name}: limit must be > 0, not {self.limit}")
        _require(self.amount >= 0, f"{self.name}: amount must be >= 0, not {self.amount}")
        _require(
            math.isfinite(self.period_s) and self.period_s > 0,
            f"{self.name}: period_s must be > 0, not {self.period_s}",
        )

    @property
    def rate(self) -> float:
        """Tokens refilled per second."""
        return self.limit / self.period_s


@dataclass(frozen=True, slots=True)
class ConcurrencyRule:
    """At most ``limit`` admitted and unsettled tickets hold a slot of ``key``."""

    key: str
    limit: int
    name: str

    def __post_init__(self) -> None:
        _require(self.limit > 0, f"{self.name}: limit must be > 0, not {self.limit}")


@dataclass(frozen=True, slots=True)
class BudgetRule:
    """A cost budget for one period, in integer nano-USD.

    ``reserve_nano`` is the request's maximum possible cost, reserved at
    admission so concurrent requests can never spend past ``limit_nano``.
    ``expires_at`` (unix seconds; the period's end plus a margin) is when the
    counter may be forgotten.
    """

    key: str
    limit_nano: int
    reserve_nano: int
    name: str
    expires_at: float

    def __post_init__(self) -> None:
        _require(self.limit_nano >= 0, f"{self.name}: limit_nano must be >= 0")
        _require(self.reserve_nano >= 0, f"{self.name}: reserve_nano must be >= 0")
        _require(math.isfinite(self.expires_at), f"{self.name}: expires_at must be finite")


def _unique(kind: str, keys: list[str]) -> None:
    # Two rules on one key would each check the old state and both take: not atomic.
    dupes = sorted({k for k in keys if keys.count(k) > 1})
    _require(not dupes, f"{kind} rules repeat keys {dupes}")


@dataclass(frozen=True, slots=True)
class Admission:
    """Every limit one request must pass, checked and taken together.

    ``scope`` is the tenant. Every backend key of the admission carries it as
    the Redis Cluster hash tag ``{scope}``, so one script touches one slot.
    ``lease_s`` bounds how long a crashed gateway's concurrency slot or budget
    reservation can linger before a later admission reclaims it.
    ``check_suspended`` folds the tenant's kill switch into the same step, so
    the request path needs one backend round trip for all of it.
    """

    scope: str
    rates: tuple[RateRule, ...] = ()
    concurrency: tuple[ConcurrencyRule, ...] = ()
    budgets: tuple[BudgetRule, ...] = ()
    lease_s: float = 600.0
    check_suspended: bool = True

    def __post_init__(self) -> None:
        _require(bool(self.scope), "scope must not be empty")
        # An empty hash tag `{}` would not pin the keys to one slot.
        _require("{" not in self.scope and "}" not in self.scope, "scope must not contain braces")
        _require(
            math.isfinite(self.lease_s) and self.lease_s > 0, f"lease_s must be > 0: {self.lease_s}"
        )
        _unique("rate", [r.key for r in self.rates])
        _unique("concurrency", [c.key for c in self.concurrency])
        _unique("budget", [b.key for b in self.budgets])


@dataclass(frozen=True, slots=True)
class Ticket:
    """An admitted request: what ``settle`` needs to give back what it took."""

    id: str
    admission: Admission


@dataclass(frozen=True, slots=True)
class BudgetLevel:
    """A budget after an operation; ``used_nano`` is spent plus reserved."""

    key: str
    name: str
    used_nano: int
    limit_nano: int


@dataclass(frozen=True, slots=True)
class BudgetUsage:
    """A budget counter as stored: what was spent and what is reserved in flight."""

    spent_nano: int
    reserved_nano: int

    @property
    def used_nano(self) -> int:
        return self.spent_nano + self.reserved_nano


@dataclass(frozen=True, slots=True)
class Admitted:
    """Admitted: hold ``ticket`` until the request ends, then settle it.

    ``budgets`` are the levels after this reservation (for threshold alerts).
    ``unseeded`` names budget counters never seeded from the store: new this
    period, or lost (a Redis flush); the caller should ``seed_spent`` them.
    """

    ticket: Ticket
    budgets: tuple[BudgetLevel, ...]
    unseeded: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Refused:
    """Why an admission was refused; nothing was taken.

    ``name`` is the refusing rule's name, or the suspension reason for
    ``kind="suspended"`` (``limit`` is then 0). ``retry_after_s`` is when this
    rule would admit this same request: exact for rates, ``None`` when it never
    can (amount > capacity) or cannot be known (concurrency waits on other
    requests finishing; budgets on settlements or the next period, which the
    caller knows from its calendar; suspension on an operator).
    """

    kind: RefusalKind
    name: str
    limit: int
    retry_after_s: float | None


def levels(admission: Admission, usage: Mapping[str, BudgetUsage]) -> tuple[BudgetLevel, ...]:
    """The admission's budgets as levels, from their counters (absent = unused)."""
    out = []
    for rule in admission.budgets:
        now = usage.get(rule.key, BudgetUsage(0, 0))
        out.append(BudgetLevel(rule.key, rule.name, now.used_nano, rule.limit_nano))
    return tuple(out)


class LimitsBackend(Protocol):
    """Shared limits state: the memory backend embedded, Redis across replicas."""

    async def admit(self, admission: Admission) -> Admitted | Refused:
        """Check and take every rule of ``admission``, all or nothing, atomically.

        Rules are checked in this order and the first refusal wins: suspension,
        budgets, rates (the longest wait among refusing buckets), concurrency.
        Expired leases of the admission's keys are reclaimed first.
        """
        ...

    async def settle(
        self,
        ticket: Ticket,
        *,
        actual_tokens: Mapping[str, int] | None = None,
        cost_nano: int | None,
    ) -> tuple[BudgetLevel, ...]:
        """Give back what ``ticket`` took; idempotent (a second settle changes nothing).

        Frees its concurrency slots. Each rate key in ``actual_tokens`` is
        corrected by ``actual - amount`` (a refund, or debt). Each budget's
        reservation becomes spending of ``cost_nano``, or of the whole
        reservation when the cost is unknown (``None``). A reservation already
        reclaimed as spent stays spent. Returns the budgets after settling.
        """
        ...

    async def seed_spent(self, scope: str, key: str, spent_nano: int, expires_at: float) -> bool:
        """Seed a budget counter's spending from the store, once per counter.

        An absent counter is created with ``spent_nano``. A counter that
        admissions created before any seed (see ``Admitted.unseeded``) gets
        ``spent_nano`` added: spending settled since then may be counted twice,
        which errs toward refusing, never toward overspending. A seeded
        counter is left alone. Returns whether it seeded.
        """
        ...

    async def used(self, scope: str, key: str) -> BudgetUsage | None:
        """A budget counter (expired leases reclaimed first), or None if absent."""
        ...

    async def first_time(self, key: str, expires_at: float) -> bool:
        """True exactly once per ``key`` until ``expires_at``, across all replicas."""
        ...

    async def set_suspended(self, scope: str, reason: str | None) -> None:
        """Suspend ``scope`` with ``reason`` (refused by admit), or resume it (None)."""
        ...

    async def suspended(self, scope: str) -> str | None:
        """The reason ``scope`` is suspended, or None."""
        ...

    async def aclose(self) -> None:
        """Release connections; the backend is unusable afterwards."""
        ...
