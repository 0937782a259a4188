"""Limits fixtures: every test that asks for ``limits`` runs on memory and on Redis.

The Redis runs use the server at ``KEEL_TEST_REDIS_URL`` (default: the local
one), a key prefix of their own, and delete their keys afterwards. Both take a
test clock, so refills and lease expiries are tested without sleeping.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Callable

import pytest
from limits_support import REDIS_URL, FakeClock
from redis.asyncio import Redis

from keel.limits import LimitsBackend, MemoryLimits, RedisLimits


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
async def prefix() -> AsyncIterator[str]:
    """A fresh Redis key prefix; every key under it is deleted after the test."""
    value = f"keeltest:{uuid.uuid4().hex[:12]}:"
    yield value
    client = Redis.from_url(REDIS_URL)
    try:
        keys = [k async for k in client.scan_iter(match=value + "*", count=1000)]
        if keys:
            await client.delete(*keys)
    finally:
        await client.aclose()


@pytest.fixture(params=["memory", "redis"])
async def make_limits(
    request: pytest.FixtureRequest, clock: FakeClock, prefix: str
) -> AsyncIterator[Callable[[], LimitsBackend]]:
    """Makes clients of one shared limits state: a new Redis client each call
    (like another replica), the one memory backend for memory."""
    made: list[LimitsBackend] = []
    memory = MemoryLimits(clock=clock)

    def make() -> LimitsBackend:
        if request.param == "memory":
            return memory
        client = RedisLimits(REDIS_URL, prefix=prefix, clock=clock, timeout_s=5.0)
        made.append(client)
        return client

    yield make
    for client in made:
        await client.aclose()


@pytest.fixture
def limits(make_limits: Callable[[], LimitsBackend]) -> LimitsBackend:
    return make_limits()


@pytest.fixture
async def redis_client() -> AsyncIterator[Redis]:
    client = Redis.from_url(REDIS_URL, decode_responses=True)
    yield client
    await client.aclose()
