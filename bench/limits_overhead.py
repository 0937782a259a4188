"""What the limits stage costs per request: memory backend time, Redis round trips.

Runs the stage exactly as the pipeline does (``Gatekeeper.admit`` before the
call, ``settle`` after) for a tenant whose tier has every kind of rule: rpm,
tpm and concurrency per tenant, key and end user, plus daily and monthly
budgets — 9 rate and concurrency rules and 2 reservations per request. The
baseline is the same loop with the stage's work replaced by nothing, measured
in the same run. For Redis it also counts the commands the server executed
(``INFO commandstats``), so "one round trip per stage" is checked, not assumed.

    .venv/bin/python bench/limits_overhead.py [-n 20000] [--redis-url redis://127.0.0.1:6379/0]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
import uuid
from collections.abc import Callable
from typing import Any

from keel.config import parse_config
from keel.limits import LimitsBackend, MemoryLimits, RedisLimits
from keel.pipeline.context import RequestContext
from keel.pipeline.emit import usage_of
from keel.store import KeyRecord
from keel.tenants import Gatekeeper, TenantDirectory

GOAL_P50_MS = 0.2

TIER = {
    "tenant": {"rpm": 10**9, "tpm": 10**12, "concurrent": 10**6},
    "key": {"rpm": 10**9, "tpm": 10**12, "concurrent": 10**6},
    "user": {"rpm": 10**9, "tpm": 10**12, "concurrent": 10**6},
    "budget": {"daily_usd": 10**6, "monthly_usd": 10**7},
}


class _Prices:
    def cost(self, deployment: str, usage: Any) -> float:
        return float(usage.input_tokens * 1e-6 + usage.output_tokens * 2e-6)


def _gatekeeper(backend: LimitsBackend) -> Gatekeeper:
    config = parse_config(
        {
            "providers": {"sim": {"kind": "simulator"}},
            "models": [{"alias": "fast", "deployments": [{"provider": "sim", "model": "m"}]}],
            "tiers": {"pro": TIER},
            "limits": {"default_tier": "pro"},
        }
    )
    return Gatekeeper(
        config,
        backend,
        TenantDirectory(None, refresh_s=1),
        _Prices(),
        spent_loader=lambda tenant, first, last: 0,
    )


def _context(gatekeeper: Gatekeeper, key: KeyRecord) -> RequestContext:
    body = {
        "model": "fast",
        "messages": [{"role": "user", "content": "What is the capital of France?"}],
        "max_tokens": 64,
        "user": "user-1",
    }
    ctx = RequestContext(request_id="r", operation="chat", raw_body=b"", authorization=None)
    ctx.body = ctx.upstream_body = body
    ctx.end_user = "user-1"
    ctx.key = key
    ctx.alias = gatekeeper._aliases["fast"]
    return ctx


async def _run(make: Callable[[], LimitsBackend], n: int) -> tuple[list[float], list[float]]:
    """Per-request seconds through the stage, and through an empty stand-in."""
    backend = make()
    if isinstance(backend, RedisLimits):
        _count_round_trips(backend)
    try:
        return await _loop(_gatekeeper(backend), n)
    finally:
        await backend.aclose()


async def _loop(gatekeeper: Gatekeeper, n: int) -> tuple[list[float], list[float]]:
    key = KeyRecord(
        id=1,
        tenant=f"bench-{uuid.uuid4().hex[:6]}",
        tier=None,
        name=None,
        key_prefix="sk-keel-x",
        created_at=None,
        expires_at=None,
        revoked_at=None,  # type: ignore[arg-type]
    )
    staged, empty = [], []
    for i in range(n + n // 10):
        ctx = _context(gatekeeper, key)
        started = time.perf_counter()
        tier = gatekeeper.check_tenant(key)
        assert tier is not None
        held = await gatekeeper.admit(ctx, tier)
        assert held is not None
        await gatekeeper.settle(ctx, held, usage_of(ctx))
        middle = time.perf_counter()
        ctx = _context(gatekeeper, key)
        await asyncio.sleep(0)  # what an absent stage costs: nothing but the await
        done = time.perf_counter()
        if i >= n // 10:  # the first tenth warms caches and seeds the budgets
            staged.append(middle - started)
            empty.append(done - middle)
    return staged, empty


ROUND_TRIPS = [0]


async def _ping(url: str, n: int) -> float:
    """Median seconds of one bare round trip, the unit the Redis goal is stated in."""
    import redis.asyncio as aioredis

    client = aioredis.Redis.from_url(url)
    times = []
    try:
        for _ in range(n):
            started = time.perf_counter()
            await client.ping()
            times.append(time.perf_counter() - started)
    finally:
        await client.aclose()
    return statistics.median(times)


def _count_round_trips(backend: RedisLimits) -> None:
    """Count every command the backend's client sends (a script counts once)."""
    client = backend._redis
    send = client.execute_command

    async def counted(*args: Any, **kwargs: Any) -> Any:
        ROUND_TRIPS[0] += 1
        return await send(*args, **kwargs)

    client.execute_command = counted  # type: ignore[method-assign]


def _report(name: str, staged: list[float], empty: list[float]) -> float:
    p50 = (statistics.median(staged) - statistics.median(empty)) * 1000
    p99 = statistics.quantiles(staged, n=100)[98] * 1000
    print(
        f"{name:>7}: stage p50 {statistics.median(staged) * 1e3:.3f} ms, p99 {p99:.3f} ms;"
        f" added p50 {p50:.3f} ms"
    )
    return p50


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", type=int, default=20000)
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/0")
    args = parser.parse_args()

    staged, empty = asyncio.run(_run(MemoryLimits, args.n))
    memory_p50 = _report("memory", staged, empty)

    import redis

    client = redis.Redis.from_url(args.redis_url)
    prefix = f"keel-bench-{uuid.uuid4().hex[:6]}:"
    n_redis = max(1000, args.n // 4)
    staged, empty = asyncio.run(_run(lambda: RedisLimits(args.redis_url, prefix=prefix), n_redis))
    calls = ROUND_TRIPS[0]
    total = n_redis + n_redis // 10
    _report("redis", staged, empty)
    # Two seeds happen once per process and period; everything else is per request.
    per_call = (calls - 2) / total / 2
    print(
        f"  redis: {calls} round trips for {total} requests:"
        f" {per_call:.2f} per stage call (admit before the upstream, settle after)"
    )
    ping = asyncio.run(_ping(args.redis_url, n_redis))
    print(f"  redis: one PING through the same client library: p50 {ping * 1e3:.3f} ms")
    for key in client.scan_iter(match=f"{prefix}*"):
        client.delete(key)
    print(
        f"goal memory p50 <= {GOAL_P50_MS} ms: {'met' if memory_p50 <= GOAL_P50_MS else 'NOT met'}"
    )
    print(f"goal redis <= 1 round trip per stage call: {'met' if per_call <= 1.0 else 'NOT met'}")


if __name__ == "__main__":
    main()
