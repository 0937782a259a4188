"""Rules are checked where they are built, and a settle that names the wrong rate is refused."""

from __future__ import annotations

import pytest
from limits_support import EXPIRES, FakeClock, admission, admitted, budget, rpm, slots, tpm

from keel.limits import (
    Admission,
    BudgetRule,
    ConcurrencyRule,
    LimitsBackend,
    MemoryLimits,
    RateRule,
    RedisLimits,
    open_limits,
)


@pytest.mark.parametrize(
    "build",
    [
        lambda: RateRule("k", 0, 1, "rpm"),
        lambda: RateRule("k", 10, -1, "tpm"),
        lambda: RateRule("k", 10, 1, "rpm", period_s=0.0),
        lambda: ConcurrencyRule("k", 0, "concurrency"),
        lambda: BudgetRule("k", -1, 0, "daily", EXPIRES),
        lambda: BudgetRule("k", 10, -1, "daily", EXPIRES),
        lambda: Admission(""),
        lambda: Admission("a}b"),
        lambda: Admission("acme", lease_s=0.0),
        lambda: Admission("acme", rates=(rpm(1), rpm(2))),
        lambda: Admission("acme", concurrency=(slots(1), slots(2))),
    ],
)
def test_bad_rules_fail_where_they_are_built(build: object) -> None:
    with pytest.raises(ValueError):
        build()  # type: ignore[operator]


async def test_settle_refuses_tokens_for_a_rate_the_ticket_did_not_take(
    limits: LimitsBackend,
) -> None:
    ticket = admitted(await limits.admit(admission(rates=(tpm(1000, 10),)))).ticket
    with pytest.raises(ValueError, match="did not take"):
        await limits.settle(ticket, actual_tokens={"tpm:other": 5}, cost_nano=None)
    with pytest.raises(ValueError, match="cost_nano"):
        await limits.settle(ticket, cost_nano=-1)
    await limits.settle(ticket, actual_tokens={"tpm:acme": 5}, cost_nano=0)  # still unsettled


async def test_memory_forgets_what_redis_would_have_expired() -> None:
    clock = FakeClock()
    limits = MemoryLimits(clock=clock)
    rule = admission(rates=(rpm(60),), concurrency=(slots(1),), budgets=(budget(10, 1),))
    ticket = admitted(await limits.admit(rule)).ticket
    await limits.settle(ticket, cost_nano=1)
    assert await limits.first_time("alert", clock.now + 30)

    clock.advance(3600)
    fresh = admitted(await limits.admit(admission(scope="other")))  # sweeps first
    assert limits._buckets == {}
    assert limits._slots == {}
    assert list(limits._tickets) == [fresh.ticket.id]
    assert limits._once == {}
    assert await limits.first_time("alert", clock.now + 30)


async def test_open_limits_picks_the_backend() -> None:
    assert isinstance(open_limits(None), MemoryLimits)
    assert isinstance(open_limits("memory://"), MemoryLimits)
    redis = open_limits("redis://127.0.0.1:6379/0")
    assert isinstance(redis, RedisLimits)
    await redis.aclose()
