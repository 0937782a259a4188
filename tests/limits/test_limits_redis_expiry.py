"""Redis key expiry that the scripts keep up without resetting it on every call:
budget counters follow their ``expires_at``, and a counter recreated behind the
scripts' back still expires."""

from __future__ import annotations

import dataclasses
import time

from limits_support import (
    EXPIRES,
    REDIS_URL,
    SCOPE,
    FakeClock,
    admission,
    admitted,
    budget,
    refused,
)
from redis.asyncio import Redis

from keel.limits import RedisLimits


async def _expires_in_s(redis_client: Redis, key: str) -> float:
    """When ``key`` expires, in seconds after the moment EXPIRES was set up to be an hour from.

    Measured from that fixed base rather than from now, so the answer does not
    depend on how long the suite ran before this test.
    """
    remaining = float(await redis_client.pttl(key)) / 1000
    return time.time() + remaining - (EXPIRES - 3600)


async def test_a_budget_counter_follows_a_changed_expires_at(
    prefix: str, clock: FakeClock, redis_client: Redis
) -> None:
    limits = RedisLimits(REDIS_URL, prefix=prefix, clock=clock)
    counter = f"{prefix}{{{SCOPE}}}:b:{budget(1, 1).key}"
    leases = counter.replace(":b:", ":l:")
    try:
        first = admitted(await limits.admit(admission(budgets=(budget(10_000, 1_000),))))
        assert 3590 < await _expires_in_s(redis_client, counter) <= 3600 + 1
        assert 3590 < await _expires_in_s(redis_client, leases) <= 3600 + 1

        later = dataclasses.replace(budget(10_000, 1_000), expires_at=EXPIRES + 3600)
        admitted(await limits.admit(admission(budgets=(later,))))
        assert 7190 < await _expires_in_s(redis_client, counter) <= 7200 + 1
        assert 7190 < await _expires_in_s(redis_client, leases) <= 7200 + 1

        # A refused admission moves it too, like every call that names the counter.
        sooner = dataclasses.replace(budget(10_000, 9_000), expires_at=EXPIRES + 1800)
        refused(await limits.admit(admission(budgets=(sooner,))))
        assert 5390 < await _expires_in_s(redis_client, counter) <= 5400 + 1
        assert 5390 < await _expires_in_s(redis_client, leases) <= 5400 + 1

        # So does a settle of a ticket that was admitted under another one.
        await limits.settle(first.ticket, cost_nano=500)
        assert 3590 < await _expires_in_s(redis_client, counter) <= 3600 + 1
    finally:
        await limits.aclose()


async def test_a_counter_recreated_behind_the_scripts_back_still_expires(
    prefix: str, clock: FakeClock, redis_client: Redis
) -> None:
    limits = RedisLimits(REDIS_URL, prefix=prefix, clock=clock)
    counter = f"{prefix}{{{SCOPE}}}:b:{budget(1, 1).key}"
    rule = admission(budgets=(budget(10_000, 1_000),), lease_s=10)
    try:
        held = admitted(await limits.admit(rule))
        await redis_client.delete(counter)  # evicted, say
        await limits.settle(held.ticket, cost_nano=400)  # recreates it
        assert await redis_client.pttl(counter) > 0

        admitted(await limits.admit(rule))  # its gateway dies before settling
        await redis_client.delete(counter)
        clock.advance(11)
        admitted(await limits.admit(rule))  # reclaiming the lease recreates it
        assert await redis_client.pttl(counter) > 0
    finally:
        await limits.aclose()
