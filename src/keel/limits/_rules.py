"""The arithmetic of the limits, in one place.

The memory backend calls these functions; the Redis Lua scripts (``_lua``)
restate them line for line, since a script cannot call Python. Change one,
change the other: the shared test suite runs both against the same cases.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping

from keel.limits.base import Admission, BudgetRule, BudgetUsage, RateRule

Clock = Callable[[], float]

# Slack when comparing tokens: a bucket refilled for exactly the advertised
# retry_after must admit, whatever the float rounding on the way.
EPSILON = 1e-6


def refill(tokens: float, at: float, now: float, rate: float, limit: int) -> float:
    """A bucket's tokens at ``now``; a clock that stepped back refills nothing."""
    return min(float(limit), tokens + max(0.0, now - at) * rate)


def retry_after(wait_s: float) -> float:
    """A wait rounded up to the millisecond, so retrying then never comes too early."""
    return math.ceil(wait_s * 1000.0 - EPSILON) / 1000.0


def rate_wait(rule: RateRule, tokens: float) -> tuple[bool, float | None]:
    """Whether ``rule.amount`` fits in ``tokens``; if not, the wait (None: never)."""
    if tokens + EPSILON >= rule.amount:
        return True, 0.0
    if rule.amount > rule.limit:
        return False, None
    return False, retry_after((rule.amount - tokens) / rule.rate)


def fits_budget(rule: BudgetRule, usage: BudgetUsage) -> bool:
    """Admit iff spent + reserved + this reservation stays within the limit."""
    return usage.spent_nano + usage.reserved_nano + rule.reserve_nano <= rule.limit_nano


def budget_charge(rule: BudgetRule, cost_nano: int | None) -> int:
    """What a settled request spends: its cost, or its whole reservation when unknown."""
    return rule.reserve_nano if cost_nano is None else cost_nano


def check_actual_tokens(
    admission: Admission, actual_tokens: Mapping[str, int] | None, cost_nano: int | None
) -> None:
    """Refuse a settle that names a rate the ticket did not take, before changing anything."""
    if cost_nano is not None and cost_nano < 0:
        raise ValueError(f"cost_nano must be >= 0, not {cost_nano}")
    if actual_tokens:
        known = {r.key for r in admission.rates}
        unknown = sorted(set(actual_tokens) - known)
        if unknown:
            raise ValueError(f"actual_tokens names rates this ticket did not take: {unknown}")
        negative = sorted(k for k, v in actual_tokens.items() if v < 0)
        if negative:
            raise ValueError(f"actual_tokens must be >= 0: {negative}")
