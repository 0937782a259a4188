"""The embedded backend: limits state in this process's memory.

For one gateway process (``keel serve`` without Redis). Every check-and-take
runs without an ``await`` in between, so on one event loop it is atomic by
construction. State is lost on restart: budget counters are seeded back from
the store (``seed_spent``); rate buckets start full; nothing survives to leak.
Run several replicas on it and each one limits alone, N replicas spending N
times a budget: that is what the Redis backend is for.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from keel.limits._rules import (
    Clock,
    budget_charge,
    check_actual_tokens,
    fits_budget,
    rate_wait,
    refill,
)
from keel.limits.base import (
    Admission,
    Admitted,
    BudgetLevel,
    BudgetUsage,
    Refused,
    Ticket,
    levels,
)

# Expired counters, markers and full buckets are dropped this often (clock seconds).
SWEEP_EVERY_S = 60.0

Scoped = tuple[str, str]  # (scope, rule key): the memory twin of "{scope}:key"


@dataclass(slots=True)
class _Bucket:
    tokens: float
    at: float
    full_at: float  # when it has refilled to capacity, and so can be forgotten


def _bucket(tokens: float, now: float, rate: float, limit: int) -> _Bucket:
    return _Bucket(tokens, now, now + max(0.0, limit - tokens) / rate)


@dataclass(slots=True)
class _Budget:
    expires_at: float
    spent: int = 0
    reserved: int = 0
    seeded: bool = False
    leases: dict[str, tuple[float, int]] = field(default_factory=dict)  # ticket -> (until, amount)

    def reclaim(self, now: float) -> None:
        """Expired reservations become spending: the call may well have been billed."""
        for ticket, (until, amount) in list(self.leases.items()):
            if until <= now:
                del self.leases[ticket]
                self.reserved -= amount
                self.spent += amount

    def usage(self) -> BudgetUsage:
        return BudgetUsage(self.spent, self.reserved)


class MemoryLimits:
    """In-process limits; ``clock`` (unix seconds) is injectable for tests."""

    def __init__(self, clock: Clock = time.time) -> None:
        self._clock: Callable[[], float] = clock
        self._buckets: dict[Scoped, _Bucket] = {}
        self._slots: dict[Scoped, dict[str, float]] = {}  # ticket -> lease end
        self._budgets: dict[Scoped, _Budget] = {}
        self._tickets: dict[str, float] = {}  # unsettled ticket -> lease end
        self._once: dict[str, float] = {}
        self._suspended: dict[str, str] = {}
        self._next_sweep = 0.0

    async def admit(self, admission: Admission) -> Admitted | Refused:
        now = self._clock()
        self._maybe_sweep(now)
        scope = admission.scope
        if admission.check_suspended and scope in self._suspended:
            return Refused("suspended", self._suspended[scope], 0, None)
        # From here to the return there is no await: check-and-take is atomic.
        slots, budgets = self._reclaim(admission, now)
        tokens = [self._tokens((scope, r.key), r.rate, r.limit, now) for r in admission.rates]
        refusal = _refusal(admission, budgets, tokens, slots)
        if refusal is not None:
            return refusal

        ticket = Ticket(uuid.uuid4().hex, admission)
        until = now + admission.lease_s
        self._tickets[ticket.id] = until
        for rate, have in zip(admission.rates, tokens, strict=True):
            left = have - rate.amount
            self._buckets[(scope, rate.key)] = _bucket(left, now, rate.rate, rate.limit)
        for held in slots:
            held[ticket.id] = until
        unseeded = []
        for rule, budget in zip(admission.budgets, budgets, strict=True):
            if budget is None:
                budget = self._budgets[(scope, rule.key)] = _Budget(rule.expires_at)
            budget.expires_at = rule.expires_at
            budget.reserved += rule.reserve_nano
            budget.leases[ticket.id] = (until, rule.reserve_nano)
            if not budget.seeded:
                unseeded.append(rule.key)
        return Admitted(ticket, self._levels(admission, now), tuple(unseeded))

    async def settle(
        self,
        ticket: Ticket,
        *,
        actual_tokens: Mapping[str, int] | None = None,
        cost_nano: int | None,
    ) -> tuple[BudgetLevel, ...]:
        admission = ticket.admission
        check_actual_tokens(admission, actual_tokens, cost_nano)
        now = self._clock()
        if self._tickets.pop(ticket.id, None) is None:
            return self._levels(admission, now)  # settled already, or never admitted here
        scope = admission.scope
        for conc in admission.concurrency:
            self._slots.get((scope, conc.key), {}).pop(ticket.id, None)
        for rate in admission.rates:
            if actual_tokens is not None and rate.key in actual_tokens:
                have = self._tokens((scope, rate.key), rate.rate, rate.limit, now)
                corrected = min(rate.limit, have - (actual_tokens[rate.key] - rate.amount))
                self._buckets[(scope, rate.key)] = _bucket(corrected, now, rate.rate, rate.limit)
        for budget_rule in admission.budgets:
            budget = self._budget((scope, budget_rule.key), now)
            # No lease left means it was reclaimed, and already counted as spent.
            if budget is not None and budget.leases.pop(ticket.id, None) is not None:
                budget.reserved -= budget_rule.reserve_nano
                budget.spent += budget_charge(budget_rule, cost_nano)
        return self._levels(admission, now)

    async def seed_spent(self, scope: str, key: str, spent_nano: int, expires_at: float) -> bool:
        if spent_nano < 0:
            raise ValueError(f"spent_nano must be >= 0, not {spent_nano}")
        now = self._clock()
        budget = self._budget((scope, key), now)
        if budget is None:
            budget = self._budgets[(scope, key)] = _Budget(expires_at)
        elif budget.seeded:
            return False
        budget.spent += spent_nano
        budget.seeded = True
        return True

    async def used(self, scope: str, key: str) -> BudgetUsage | None:
        now = self._clock()
        budget = self._budget((scope, key), now)
        if budget is None:
            return None
        budget.reclaim(now)
        return budget.usage()

    async def first_time(self, key: str, expires_at: float) -> bool:
        now = self._clock()
        if self._once.get(key, now) > now:
            return False
        self._once[key] = expires_at  # already past: true, and forgotten, as in Redis
        return True

    async def set_suspended(self, scope: str, reason: str | None) -> None:
        if reason is None:
            self._suspended.pop(scope, None)
        else:
            self._suspended[scope] = reason

    async def suspended(self, scope: str) -> str | None:
        return self._suspended.get(scope)

    async def aclose(self) -> None:
        return None

    # --- helpers ---------------------------------------------------------------

    def _reclaim(
        self, admission: Admission, now: float
    ) -> tuple[list[dict[str, float]], list[_Budget | None]]:
        """The admission's slots and budgets, with expired leases reclaimed."""
        scope = admission.scope
        slots = [self._slots.setdefault((scope, c.key), {}) for c in admission.concurrency]
        for held in slots:
            for ticket_id, until in list(held.items()):
                if until <= now:
                    del held[ticket_id]
        budgets = [self._budget((scope, b.key), now) for b in admission.budgets]
        for budget in budgets:
            if budget is not None:
                budget.reclaim(now)
        return slots, budgets

    def _tokens(self, key: Scoped, rate: float, limit: int, now: float) -> float:
        bucket = self._buckets.get(key)
        if bucket is None:
            return float(limit)
        return refill(bucket.tokens, bucket.at, now, rate, limit)

    def _budget(self, key: Scoped, now: float) -> _Budget | None:
        budget = self._budgets.get(key)
        if budget is not None and budget.expires_at <= now:
            del self._budgets[key]  # the period is over: forget it, as Redis would
            return None
        return budget

    def _levels(self, admission: Admission, now: float) -> tuple[BudgetLevel, ...]:
        usage = {}
        for rule in admission.budgets:
            budget = self._budget((admission.scope, rule.key), now)
            if budget is not None:
                usage[rule.key] = budget.usage()
        return levels(admission, usage)

    def _maybe_sweep(self, now: float) -> None:
        """Drop what Redis would have expired, so a long-lived process stays small."""
        if now < self._next_sweep:
            return
        self._next_sweep = now + SWEEP_EVERY_S
        for key, budget in list(self._budgets.items()):
            if budget.expires_at <= now:
                del self._budgets[key]
        self._once = {k: until for k, until in self._once.items() if until > now}
        self._tickets = {t: until for t, until in self._tickets.items() if until > now}
        self._slots = {k: held for k, held in self._slots.items() if held}
        self._buckets = {k: b for k, b in self._buckets.items() if b.full_at > now}


def _refusal(
    admission: Admission,
    budgets: list[_Budget | None],
    tokens: list[float],
    slots: list[dict[str, float]],
) -> Refused | None:
    """The first refusing rule: budgets, then rates, then concurrency."""
    for rule, budget in zip(admission.budgets, budgets, strict=True):
        if not fits_budget(rule, budget.usage() if budget else BudgetUsage(0, 0)):
            return Refused("budget", rule.name, rule.limit_nano, None)
    refusal = _worst_rate(admission, tokens)
    if refusal is not None:
        return refusal
    for conc, held in zip(admission.concurrency, slots, strict=True):
        if len(held) >= conc.limit:
            return Refused("concurrency", conc.name, conc.limit, None)
    return None


def _worst_rate(admission: Admission, tokens: list[float]) -> Refused | None:
    """The refusing bucket with the longest wait (never-fitting first), if any."""
    worst: Refused | None = None
    for rule, have in zip(admission.rates, tokens, strict=True):
        fits, wait = rate_wait(rule, have)
        if fits:
            continue
        if (
            worst is None
            or wait is None
            or (worst.retry_after_s is not None and wait > worst.retry_after_s)
        ):
            worst = Refused("rate", rule.name, rule.limit, wait)
            if wait is None:
                break
    return worst
