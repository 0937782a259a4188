"""Rule builders shared by the limits tests."""

from __future__ import annotations

import os
import time

from keel.limits import Admission, Admitted, BudgetRule, ConcurrencyRule, RateRule, Refused

REDIS_URL = os.environ.get("KEEL_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")


class FakeClock:
    """Unix seconds that move only when a test says so."""

    def __init__(self, now: float = 1_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


SCOPE = "acme"
# Budget counters expire on the real clock in Redis, so give them an hour of it.
EXPIRES = time.time() + 3600


def rpm(limit: int, key: str = "rpm:key:17") -> RateRule:
    return RateRule(key, limit, 1, "rpm per key")


def tpm(limit: int, amount: int, key: str = "tpm:acme") -> RateRule:
    return RateRule(key, limit, amount, "tpm per tenant")


def slots(limit: int, key: str = "conc:acme") -> ConcurrencyRule:
    return ConcurrencyRule(key, limit, "concurrency per tenant")


def budget(limit: int, reserve: int, key: str = "budget:acme:day:2026-11-30") -> BudgetRule:
    return BudgetRule(key, limit, reserve, "daily budget", EXPIRES)


def admission(
    *,
    rates: tuple[RateRule, ...] = (),
    concurrency: tuple[ConcurrencyRule, ...] = (),
    budgets: tuple[BudgetRule, ...] = (),
    lease_s: float = 600.0,
    scope: str = SCOPE,
    check_suspended: bool = True,
) -> Admission:
    return Admission(scope, rates, concurrency, budgets, lease_s, check_suspended)


def admitted(result: Admitted | Refused) -> Admitted:
    assert isinstance(result, Admitted), result
    return result


def refused(result: Admitted | Refused) -> Refused:
    assert isinstance(result, Refused), result
    return result
