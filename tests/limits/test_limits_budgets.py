"""Budgets that never overshoot: reservations, settling, leases and seeding, on both backends."""

from __future__ import annotations

import asyncio

from limits_support import (
    EXPIRES,
    SCOPE,
    FakeClock,
    admission,
    admitted,
    budget,
    refused,
    slots,
)

from keel.limits import Admitted, BudgetLevel, BudgetUsage, LimitsBackend

KEY = "budget:acme:day:2026-11-30"


async def test_concurrent_admits_reserve_exactly_what_fits(limits: LimitsBackend) -> None:
    rule = admission(budgets=(budget(50_000, 1_000),))
    results = await asyncio.gather(*(limits.admit(rule) for _ in range(200)))

    admitted_ = [r for r in results if isinstance(r, Admitted)]
    assert len(admitted_) == 50
    assert {refused(r).kind for r in results if not isinstance(r, Admitted)} == {"budget"}
    assert await limits.used(SCOPE, KEY) == BudgetUsage(0, 50_000)

    settled = await asyncio.gather(
        *(limits.settle(a.ticket, cost_nano=400 + i) for i, a in enumerate(admitted_))
    )
    spent = sum(400 + i for i in range(50))
    assert await limits.used(SCOPE, KEY) == BudgetUsage(spent, 0)
    assert spent <= 50_000
    assert all(levels[0].used_nano <= 50_000 for levels in settled)
    assert min(levels[0].used_nano for levels in settled) == spent  # the last to settle


async def test_admit_reports_levels_after_the_reservation(limits: LimitsBackend) -> None:
    first = admitted(await limits.admit(admission(budgets=(budget(10_000, 3_000),))))
    assert first.budgets == (BudgetLevel(KEY, "daily budget", 3_000, 10_000),)
    second = admitted(await limits.admit(admission(budgets=(budget(10_000, 3_000),))))
    assert second.budgets[0].used_nano == 6_000


async def test_a_reservation_that_does_not_fit_is_refused_exactly_at_the_limit(
    limits: LimitsBackend,
) -> None:
    admitted(await limits.admit(admission(budgets=(budget(10_000, 6_000),))))
    refused(await limits.admit(admission(budgets=(budget(10_000, 4_001),))))
    admitted(await limits.admit(admission(budgets=(budget(10_000, 4_000),))))
    refused(await limits.admit(admission(budgets=(budget(10_000, 1),))))
    admitted(await limits.admit(admission(budgets=(budget(10_000, 0),))))


async def test_settle_charges_the_cost_and_releases_the_rest(limits: LimitsBackend) -> None:
    ticket = admitted(await limits.admit(admission(budgets=(budget(10_000, 3_000),)))).ticket
    levels = await limits.settle(ticket, cost_nano=1_200)
    assert levels == (BudgetLevel(KEY, "daily budget", 1_200, 10_000),)
    assert await limits.used(SCOPE, KEY) == BudgetUsage(1_200, 0)


async def test_an_unknown_cost_charges_the_whole_reservation(limits: LimitsBackend) -> None:
    ticket = admitted(await limits.admit(admission(budgets=(budget(10_000, 3_000),)))).ticket
    await limits.settle(ticket, cost_nano=None)
    assert await limits.used(SCOPE, KEY) == BudgetUsage(3_000, 0)


async def test_settling_twice_changes_nothing(limits: LimitsBackend) -> None:
    rule = admission(concurrency=(slots(1),), budgets=(budget(10_000, 3_000),))
    ticket = admitted(await limits.admit(rule)).ticket
    await limits.settle(ticket, cost_nano=1_000)
    holder = admitted(await limits.admit(rule))

    levels = await limits.settle(ticket, cost_nano=2_000)
    assert levels[0].used_nano == 1_000 + 3_000
    assert await limits.used(SCOPE, KEY) == BudgetUsage(1_000, 3_000)
    refused(await limits.admit(rule))  # the second settle freed no one else's slot
    await limits.settle(holder.ticket, cost_nano=0)
    admitted(await limits.admit(rule))


async def test_an_unsettled_reservation_is_reclaimed_as_spent_after_its_lease(
    limits: LimitsBackend, clock: FakeClock
) -> None:
    rule = admission(budgets=(budget(10_000, 4_000),), lease_s=60.0)
    lost = admitted(await limits.admit(rule)).ticket  # its gateway dies before settling
    admitted(await limits.admit(rule))
    refused(await limits.admit(rule))

    clock.advance(60.0)
    # The lost call may have been billed: its reservation counts as spent, not freed.
    assert await limits.used(SCOPE, KEY) == BudgetUsage(8_000, 0)
    refused(await limits.admit(rule))

    await limits.settle(lost, cost_nano=10)  # late: it was already charged in full
    assert await limits.used(SCOPE, KEY) == BudgetUsage(8_000, 0)
    admitted(await limits.admit(admission(budgets=(budget(10_000, 2_000),))))


async def test_seed_spent_sets_an_absent_counter_once(limits: LimitsBackend) -> None:
    assert await limits.used(SCOPE, KEY) is None
    assert await limits.seed_spent(SCOPE, KEY, 7_000, EXPIRES) is True
    assert await limits.used(SCOPE, KEY) == BudgetUsage(7_000, 0)
    assert await limits.seed_spent(SCOPE, KEY, 1_000, EXPIRES) is False
    assert await limits.used(SCOPE, KEY) == BudgetUsage(7_000, 0)

    first = admitted(await limits.admit(admission(budgets=(budget(10_000, 3_000),))))
    assert first.unseeded == ()
    refused(await limits.admit(admission(budgets=(budget(10_000, 1),))))


async def test_a_counter_started_by_admissions_reports_it_and_can_be_seeded(
    limits: LimitsBackend,
) -> None:
    # After a Redis flush (or at a period's start) admissions recreate the counter from zero.
    first = admitted(await limits.admit(admission(budgets=(budget(10_000, 1_000),))))
    assert first.unseeded == (KEY,)

    assert await limits.seed_spent(SCOPE, KEY, 8_000, EXPIRES) is True
    assert await limits.used(SCOPE, KEY) == BudgetUsage(8_000, 1_000)
    assert await limits.seed_spent(SCOPE, KEY, 8_000, EXPIRES) is False
    refused(await limits.admit(admission(budgets=(budget(10_000, 1_001),))))
    second = admitted(await limits.admit(admission(budgets=(budget(10_000, 1_000),))))
    assert second.unseeded == ()


async def test_every_budget_of_an_admission_must_fit(limits: LimitsBackend) -> None:
    day = budget(10_000, 1_000, "budget:acme:day:2026-11-30")
    month = budget(1_500, 1_000, "budget:acme:month:2026-11")
    first = admitted(await limits.admit(admission(budgets=(day, month))))
    assert [b.used_nano for b in first.budgets] == [1_000, 1_000]

    refusal = refused(await limits.admit(admission(budgets=(day, month))))
    assert refusal.limit == 1_500
    assert await limits.used(SCOPE, day.key) == BudgetUsage(0, 1_000)  # day took nothing

    levels = await limits.settle(first.ticket, cost_nano=500)
    assert [b.used_nano for b in levels] == [500, 500]
