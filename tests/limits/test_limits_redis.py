"""What only the Redis backend promises: one state for many processes, one slot per
admission, keys that expire, and failing closed when Redis is gone."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

import pytest
from limits_support import (
    EXPIRES,
    REDIS_URL,
    SCOPE,
    FakeClock,
    admission,
    admitted,
    budget,
    rpm,
    slots,
    tpm,
)
from redis.asyncio import Redis

from keel.errors import LimitsUnavailable
from keel.limits import BudgetUsage, RedisLimits, Ticket, redact_url

WORKER = Path(__file__).with_name("limits_race_worker.py")


async def test_three_processes_racing_admit_exactly_what_fits(
    prefix: str, redis_client: Redis
) -> None:
    gate = prefix + "gate"
    procs = [
        await asyncio.create_subprocess_exec(
            sys.executable,
            str(WORKER),
            REDIS_URL,
            prefix,
            gate,
            "100",
            "50000",
            "1000",
            str(EXPIRES),
            stdout=asyncio.subprocess.PIPE,
        )
        for _ in range(3)
    ]
    try:
        for proc in procs:
            assert proc.stdout is not None
            assert (await asyncio.wait_for(proc.stdout.readline(), 30)).strip() == b"ready"
        await redis_client.rpush(gate, *["go"] * len(procs))
        outputs = [await asyncio.wait_for(proc.communicate(), 60) for proc in procs]
    finally:
        for proc in procs:
            if proc.returncode is None:
                proc.kill()
                await proc.wait()

    assert [p.returncode for p in procs] == [0, 0, 0]
    counts = [int(out.strip()) for out, _ in outputs]
    assert sum(counts) == 50, counts
    checker = RedisLimits(REDIS_URL, prefix=prefix)
    try:
        assert await checker.used("acme", "budget:race") == BudgetUsage(0, 50_000)
    finally:
        await checker.aclose()


async def test_every_key_of_an_admission_shares_the_scope_hash_tag_and_expires(
    prefix: str, clock: FakeClock, redis_client: Redis
) -> None:
    limits = RedisLimits(REDIS_URL, prefix=prefix, clock=clock)
    try:
        rule = admission(
            rates=(rpm(10), tpm(1000, 10)), concurrency=(slots(5),), budgets=(budget(10**6, 10),)
        )
        held = admitted(await limits.admit(rule))
        admitted(await limits.admit(rule))
        await limits.settle(held.ticket, actual_tokens={"tpm:acme": 20}, cost_nano=5)
        await limits.set_suspended("other", "paused")
    finally:
        await limits.aclose()

    keys = sorted([k async for k in redis_client.scan_iter(match=prefix + "*")])
    scoped = [k for k in keys if k.startswith(f"{prefix}{{{SCOPE}}}:")]
    assert len(scoped) == 6  # 2 buckets, 1 slot set, budget + its leases, 1 open ticket
    assert keys == sorted([*scoped, prefix + "{other}:suspended"])
    for key in scoped:
        assert await redis_client.pttl(key) > 0, f"{key} would never expire"


async def test_a_down_redis_raises_limits_unavailable_without_the_password() -> None:
    limits = RedisLimits("redis://keel:s3cret-pw@127.0.0.1:1/0", timeout_s=1.0)
    try:
        with pytest.raises(LimitsUnavailable) as caught:
            await limits.admit(admission(rates=(rpm(10),)))
        assert "s3cret-pw" not in str(caught.value)
        assert "127.0.0.1:1" in str(caught.value)
        assert caught.value.code == "limits_unavailable"
        assert caught.value.status == 503

        ticket = Ticket("t", admission(rates=(rpm(10),)))
        for call in (
            limits.settle(ticket, cost_nano=None),
            limits.used(SCOPE, "budget"),
            limits.seed_spent(SCOPE, "budget", 1, EXPIRES),
            limits.first_time("alert", EXPIRES),
            limits.set_suspended(SCOPE, "x"),
            limits.suspended(SCOPE),
        ):
            with pytest.raises(LimitsUnavailable) as caught:
                await call
            assert "s3cret-pw" not in str(caught.value)
    finally:
        await limits.aclose()


async def test_a_password_in_the_query_is_hidden_too() -> None:
    limits = RedisLimits("redis://127.0.0.1:1/0?password=qs-s3cret", timeout_s=1.0)
    try:
        with pytest.raises(LimitsUnavailable) as caught:
            await limits.admit(admission(rates=(rpm(10),)))
        assert "qs-s3cret" not in str(caught.value)
    finally:
        await limits.aclose()


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("redis://127.0.0.1:6379/0", "redis://127.0.0.1:6379/0"),
        ("redis://user:pw@host:6379/0", "redis://user:***@host:6379/0"),
        ("rediss://:pw@host/1", "rediss://:***@host/1"),
        ("redis://host/0?password=pw&db=2", "redis://host/0?password=***&db=2"),
    ],
)
def test_redact_url(url: str, shown: str) -> None:
    assert redact_url(url) == shown


async def test_scripts_survive_a_script_flush(prefix: str, redis_client: Redis) -> None:
    limits = RedisLimits(REDIS_URL, prefix=prefix)
    try:
        admitted(await limits.admit(admission(rates=(rpm(10),))))
        await redis_client.script_flush()
        admitted(await limits.admit(admission(rates=(rpm(10),))))
    finally:
        await limits.aclose()


def test_a_prefix_with_braces_is_refused() -> None:
    with pytest.raises(ValueError, match="braces"):
        RedisLimits(REDIS_URL, prefix="keel:{x}:")
