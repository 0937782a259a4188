"""Rates, concurrency, all-or-nothing, suspension and alert dedup, on both backends."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from limits_support import (
    EXPIRES,
    SCOPE,
    FakeClock,
    admission,
    admitted,
    budget,
    refused,
    rpm,
    slots,
    tpm,
)

from keel.limits import LimitsBackend


async def test_rpm_admits_the_limit_then_says_when_to_retry(
    limits: LimitsBackend, clock: FakeClock
) -> None:
    rule = admission(rates=(rpm(5),))
    for _ in range(5):
        admitted(await limits.admit(rule))

    refusal = refused(await limits.admit(rule))
    assert (refusal.kind, refusal.name, refusal.limit) == ("rate", "rpm per key", 5)
    assert refusal.retry_after_s is not None
    assert refusal.retry_after_s == pytest.approx(60 / 5)

    clock.advance(refusal.retry_after_s)
    admitted(await limits.admit(rule))
    refused(await limits.admit(rule))


async def test_the_bucket_refills_continuously(limits: LimitsBackend, clock: FakeClock) -> None:
    rule = admission(rates=(rpm(60),))
    for _ in range(60):
        admitted(await limits.admit(rule))
    clock.advance(0.5)
    assert refused(await limits.admit(rule)).retry_after_s == pytest.approx(0.5)
    clock.advance(0.5)
    admitted(await limits.admit(rule))


async def test_tpm_settle_refunds_unused_tokens(limits: LimitsBackend) -> None:
    first = admitted(await limits.admit(admission(rates=(tpm(1000, 600),))))
    refused(await limits.admit(admission(rates=(tpm(1000, 600),))))

    await limits.settle(first.ticket, actual_tokens={"tpm:acme": 100}, cost_nano=None)
    admitted(await limits.admit(admission(rates=(tpm(1000, 600),))))  # 900 left


async def test_tpm_settle_over_the_estimate_leaves_debt(
    limits: LimitsBackend, clock: FakeClock
) -> None:
    first = admitted(await limits.admit(admission(rates=(tpm(1000, 100),))))
    await limits.settle(first.ticket, actual_tokens={"tpm:acme": 1600}, cost_nano=None)

    # 1000 - 1600 = -600 tokens; 100 more need 700 at 1000/60 per second: 42 s.
    refusal = refused(await limits.admit(admission(rates=(tpm(1000, 100),))))
    assert refusal.kind == "rate"
    assert refusal.retry_after_s == pytest.approx(42.0)
    clock.advance(41.9)
    refused(await limits.admit(admission(rates=(tpm(1000, 100),))))
    clock.advance(0.1)
    admitted(await limits.admit(admission(rates=(tpm(1000, 100),))))


async def test_a_refund_never_fills_a_bucket_past_its_capacity(limits: LimitsBackend) -> None:
    first = admitted(await limits.admit(admission(rates=(tpm(1000, 500),))))
    await limits.settle(first.ticket, actual_tokens={"tpm:acme": 0}, cost_nano=None)
    admitted(await limits.admit(admission(rates=(tpm(1000, 1000),))))
    refused(await limits.admit(admission(rates=(tpm(1000, 1),))))


async def test_more_than_the_capacity_can_never_be_admitted(limits: LimitsBackend) -> None:
    refusal = refused(await limits.admit(admission(rates=(tpm(1000, 1001),))))
    assert refusal.retry_after_s is None
    admitted(await limits.admit(admission(rates=(tpm(1000, 1000),))))  # nothing was taken


async def test_the_longest_wait_among_refusing_rates_is_reported(limits: LimitsBackend) -> None:
    short, long = rpm(60, "rpm:key"), rpm(2, "rpm:tenant")
    admitted(await limits.admit(admission(rates=(short, long))))
    admitted(await limits.admit(admission(rates=(short, long))))
    refusal = refused(await limits.admit(admission(rates=(short, long))))
    assert refusal.retry_after_s == pytest.approx(30.0)

    never = tpm(10, 11)
    refusal = refused(await limits.admit(admission(rates=(short, long, never))))
    assert (refusal.name, refusal.retry_after_s) == ("tpm per tenant", None)


async def test_a_refused_budget_takes_no_rate_and_no_slot(limits: LimitsBackend) -> None:

    over = admission(rates=(rpm(1),), concurrency=(slots(1),), budgets=(budget(100, 101),))
    refusal = refused(await limits.admit(over))
    assert (refusal.kind, refusal.name, refusal.limit) == ("budget", "daily budget", 100)
    assert refusal.retry_after_s is None

    admitted(await limits.admit(admission(rates=(rpm(1),), concurrency=(slots(1),))))


async def test_a_refused_slot_takes_no_rate(limits: LimitsBackend) -> None:
    rule = admission(rates=(rpm(2),), concurrency=(slots(1),))
    holder = admitted(await limits.admit(rule))
    refusal = refused(await limits.admit(rule))
    assert (refusal.kind, refusal.limit, refusal.retry_after_s) == ("concurrency", 1, None)

    await limits.settle(holder.ticket, cost_nano=None)
    admitted(await limits.admit(rule))  # the refused one took no rpm token
    assert refused(await limits.admit(rule)).kind == "rate"


async def test_concurrency_slots_are_freed_by_settle_and_reclaimed_after_the_lease(
    limits: LimitsBackend, clock: FakeClock
) -> None:
    rule = admission(concurrency=(slots(2),), lease_s=30.0)
    first = admitted(await limits.admit(rule))
    admitted(await limits.admit(rule))
    refused(await limits.admit(rule))

    await limits.settle(first.ticket, cost_nano=None)
    admitted(await limits.admit(rule))
    refused(await limits.admit(rule))

    clock.advance(29.9)
    refused(await limits.admit(rule))
    clock.advance(0.1)  # both holders' leases are over: their gateway must have died
    admitted(await limits.admit(rule))
    admitted(await limits.admit(rule))
    refused(await limits.admit(rule))


async def test_a_suspended_scope_is_refused_until_resumed(limits: LimitsBackend) -> None:
    rule = admission(rates=(rpm(10),))
    assert await limits.suspended(SCOPE) is None

    await limits.set_suspended(SCOPE, "unpaid invoice")
    assert await limits.suspended(SCOPE) == "unpaid invoice"
    refusal = refused(await limits.admit(rule))
    assert (refusal.kind, refusal.name, refusal.retry_after_s) == (
        "suspended",
        "unpaid invoice",
        None,
    )
    admitted(await limits.admit(admission(rates=(rpm(10),), scope="other")))
    admitted(await limits.admit(admission(rates=(rpm(10),), check_suspended=False)))

    await limits.set_suspended(SCOPE, None)
    assert await limits.suspended(SCOPE) is None
    admitted(await limits.admit(rule))


async def test_first_time_is_true_once_across_clients(
    make_limits: Callable[[], LimitsBackend],
) -> None:
    one, two = make_limits(), make_limits()
    key = "alert:50%:daily budget:acme:2026-11-30"

    assert await one.first_time(key, EXPIRES) is True
    assert await two.first_time(key, EXPIRES) is False
    assert await one.first_time(key, EXPIRES) is False
    assert await two.first_time(key + ":other", EXPIRES) is True


async def test_scopes_do_not_share_state(limits: LimitsBackend) -> None:
    admitted(await limits.admit(admission(rates=(rpm(1),))))
    refused(await limits.admit(admission(rates=(rpm(1),))))
    admitted(await limits.admit(admission(rates=(rpm(1),), scope="other")))
