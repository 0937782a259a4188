"""The scale-out backend: limits state in Redis, shared by every gateway replica.

Every operation is one server-side script (``_lua``), so it is atomic across
replicas and costs one round trip (EVALSHA; the script is loaded on the first
NOSCRIPT). The clock is Redis's own ``TIME``, one clock for all replicas,
unless a test passes one.

When Redis fails (refused, timed out, erroring) every call raises
``LimitsUnavailable``: the gateway refuses rather than fall back to
per-process counters, which would quietly multiply every limit by the number
of replicas. Commands are never retried: a timed-out admit may have run, and
running it twice would take twice.
"""

from __future__ import annotations

import json
import math
import uuid
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from keel.errors import LimitsUnavailable
from keel.limits import _lua
from keel.limits._rules import Clock, budget_charge, check_actual_tokens
from keel.limits.base import (
    Admission,
    Admitted,
    BudgetLevel,
    BudgetUsage,
    Refused,
    Ticket,
    levels,
)

if TYPE_CHECKING:
    from redis.asyncio import Redis


def redact_url(url: str) -> str:
    """``url`` with any password (in the userinfo or the query) replaced by ``***``."""
    try:
        parts = urlsplit(url)
        host = parts.netloc.rpartition("@")[2]
        netloc = parts.netloc
        if parts.password is not None:
            netloc = f"{parts.username or ''}:***@{host}"
        query = urlencode(
            [(k, "***" if k == "password" else v) for k, v in parse_qsl(parts.query)], safe="*"
        )
        return urlunsplit(parts._replace(netloc=netloc, query=query))
    except ValueError:
        return f"{url.split(':', 1)[0]}://<unparseable>"


def _secrets(url: str) -> list[str]:
    try:
        parts = urlsplit(url)
        found = [parts.password or ""]
        found += [v for k, v in parse_qsl(parts.query) if k == "password"]
    except ValueError:
        return [url]
    return [s for s in found if s]


class RedisLimits:
    """Limits in Redis at ``url`` (``redis://``, ``rediss://`` or ``unix://``).

    ``prefix`` starts every key (no braces: the scope is the hash tag).
    ``timeout_s`` bounds waiting for a pooled connection, connecting, and
    each command, so a stalled Redis costs a request about that before it is
    refused. ``max_connections`` bounds the pool. ``clock`` (unix
    seconds) replaces Redis's ``TIME`` in tests.
    """

    def __init__(
        self,
        url: str,
        *,
        prefix: str = "keel:",
        timeout_s: float = 0.25,
        max_connections: int = 64,
        clock: Clock | None = None,
    ) -> None:
        if "{" in prefix or "}" in prefix:
            raise ValueError(f"prefix must not contain braces: {prefix!r}")
        # Imported here, not at module import: the embedded default never needs it.
        from redis.asyncio import BlockingConnectionPool, Redis
        from redis.asyncio.retry import Retry
        from redis.backoff import NoBackoff
        from redis.exceptions import RedisError

        self.url = redact_url(url)
        self._secrets = _secrets(url)
        self._prefix = prefix
        self._clock = clock
        self._failures: tuple[type[BaseException], ...] = (RedisError, OSError)
        # A bounded pool: a burst queues for a connection (up to timeout_s)
        # instead of opening one per request.
        pool = BlockingConnectionPool.from_url(
            url,
            max_connections=max_connections,
            timeout=timeout_s,
            decode_responses=True,
            socket_timeout=timeout_s,
            socket_connect_timeout=timeout_s,
            retry=Retry(NoBackoff(), 0),
        )
        self._redis: Redis = Redis.from_pool(pool)
        self._admit = self._redis.register_script(_lua.ADMIT)
        self._settle = self._redis.register_script(_lua.SETTLE)
        self._used = self._redis.register_script(_lua.USED)
        self._seed = self._redis.register_script(_lua.SEED)

    async def admit(self, admission: Admission) -> Admitted | Refused:
        ticket = Ticket(uuid.uuid4().hex, admission)
        base = self._base(admission.scope)
        keys = [base + "suspended", base + "t:" + ticket.id]
        keys += [base + "r:" + r.key for r in admission.rates]
        keys += [base + "c:" + c.key for c in admission.concurrency]
        keys += [base + "b:" + b.key for b in admission.budgets]
        keys += [base + "l:" + b.key for b in admission.budgets]
        args = [
            self._now(),
            "1" if admission.check_suspended else "0",
            ticket.id,
            repr(admission.lease_s),
            str(len(admission.rates)),
            str(len(admission.concurrency)),
            str(len(admission.budgets)),
        ]
        for r in admission.rates:
            args += (str(r.limit), str(r.amount), repr(r.period_s))
        args += [str(c.limit) for c in admission.concurrency]
        for b in admission.budgets:
            args += (str(b.limit_nano), str(b.reserve_nano), str(_ms(b.expires_at)))
        # One JSON argument, not one per number: see _lua.
        reply: str = await self._call("admit", self._admit, keys, json.dumps(args))
        kind, _, rest = reply.partition(",")
        match kind:
            case "ok":
                pass
            case "suspended":
                return Refused("suspended", rest, 0, None)
            case "budget":
                rule = admission.budgets[int(rest) - 1]
                return Refused("budget", rule.name, rule.limit_nano, None)
            case "rate":
                i, _, wait = rest.partition(",")
                rate = admission.rates[int(i) - 1]
                return Refused("rate", rate.name, rate.limit, float(wait) if wait else None)
            case "concurrency":
                conc = admission.concurrency[int(rest) - 1]
                return Refused("concurrency", conc.name, conc.limit, None)
            case _:
                raise LimitsUnavailable(f"limits backend: admit on {self.url} replied {reply!r}")
        counters = rest.split(",")
        usage = {
            b.key: BudgetUsage(int(counters[3 * n]), int(counters[3 * n + 1]))
            for n, b in enumerate(admission.budgets)
        }
        unseeded = tuple(
            b.key for n, b in enumerate(admission.budgets) if counters[3 * n + 2] != "1"
        )
        return Admitted(ticket, levels(admission, usage), unseeded)

    async def settle(
        self,
        ticket: Ticket,
        *,
        actual_tokens: Mapping[str, int] | None = None,
        cost_nano: int | None,
    ) -> tuple[BudgetLevel, ...]:
        admission = ticket.admission
        check_actual_tokens(admission, actual_tokens, cost_nano)
        actual = actual_tokens or {}
        base = self._base(admission.scope)
        keys = [base + "t:" + ticket.id]
        keys += [base + "r:" + r.key for r in admission.rates]
        keys += [base + "c:" + c.key for c in admission.concurrency]
        keys += [base + "b:" + b.key for b in admission.budgets]
        keys += [base + "l:" + b.key for b in admission.budgets]
        args = [
            self._now(),
            ticket.id,
            str(len(admission.rates)),
            str(len(admission.concurrency)),
            str(len(admission.budgets)),
        ]
        for r in admission.rates:
            correction = str(actual[r.key] - r.amount) if r.key in actual else ""
            args += (str(r.limit), repr(r.period_s), correction)
        for b in admission.budgets:
            args += (str(b.reserve_nano), str(budget_charge(b, cost_nano)), str(_ms(b.expires_at)))
        reply: str = await self._call("settle", self._settle, keys, json.dumps(args))
        counters = reply.split(",")
        usage = {
            b.key: BudgetUsage(int(counters[2 * n]), int(counters[2 * n + 1]))
            for n, b in enumerate(admission.budgets)
        }
        return levels(admission, usage)

    async def seed_spent(self, scope: str, key: str, spent_nano: int, expires_at: float) -> bool:
        if spent_nano < 0:
            raise ValueError(f"spent_nano must be >= 0, not {spent_nano}")
        keys = [self._base(scope) + "b:" + key]
        seeded = await self._call(
            "seed_spent", self._seed, keys, str(spent_nano), str(_ms(expires_at))
        )
        return bool(seeded)

    async def used(self, scope: str, key: str) -> BudgetUsage | None:
        base = self._base(scope)
        keys = [base + "b:" + key, base + "l:" + key]
        reply: list[str] | None = await self._call("used", self._used, keys, self._now())
        return None if reply is None else BudgetUsage(int(reply[0]), int(reply[1]))

    async def first_time(self, key: str, expires_at: float) -> bool:
        # One key, so no hash tag needed: SET NX is atomic on its own.
        name = self._prefix + "once:" + key
        done = await self._run(
            "first_time", self._redis.set(name, "1", nx=True, pxat=_ms(expires_at))
        )
        return bool(done)

    async def set_suspended(self, scope: str, reason: str | None) -> None:
        name = self._base(scope) + "suspended"
        if reason is None:
            await self._run("set_suspended", self._redis.delete(name))
        else:
            await self._run("set_suspended", self._redis.set(name, reason))

    async def suspended(self, scope: str) -> str | None:
        reason: str | None = await self._run(
            "suspended", self._redis.get(self._base(scope) + "suspended")
        )
        return reason

    async def aclose(self) -> None:
        await self._redis.aclose()

    # --- helpers ---------------------------------------------------------------

    def _base(self, scope: str) -> str:
        if not scope or "{" in scope or "}" in scope:
            raise ValueError(f"scope must be non-empty and without braces: {scope!r}")
        return f"{self._prefix}{{{scope}}}:"

    def _now(self) -> str:
        return "" if self._clock is None else repr(float(self._clock()))

    async def _call(
        self,
        operation: str,
        script: Callable[..., Awaitable[Any]],
        keys: Sequence[str],
        *args: str,
    ) -> Any:
        return await self._run(operation, script(keys=keys, args=args))

    async def _run(self, operation: str, command: Awaitable[Any]) -> Any:
        try:
            return await command
        except self._failures as error:
            raise LimitsUnavailable(self._describe(operation, error)) from error

    def _describe(self, operation: str, error: BaseException) -> str:
        detail = f"{type(error).__name__}: {error}"
        for secret in self._secrets:
            detail = detail.replace(secret, "***")
        return f"limits backend unavailable: {operation} on {self.url} failed ({detail})"


def _ms(unix_s: float) -> int:
    """Unix seconds as the whole milliseconds PEXPIREAT wants, rounded up."""
    return math.ceil(unix_s * 1000)
