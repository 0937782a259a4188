"""Limits shared by three real gateway processes on the machine's Redis."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import redis

from e2e_support import Cluster, Process

pytestmark = pytest.mark.e2e

REDIS_URL = "redis://127.0.0.1:6379/0"
HELLO = [{"role": "user", "content": "Hello there"}]
# sim/priced: 1 USD per million input tokens, 2 per million output; "Hello there"
# with max_tokens 10 reserves 13 input + 10 output tokens.
RESERVE_NANO = 13 * 1_000 + 10 * 2_000


@pytest.fixture
def prefix() -> Iterator[str]:
    name = f"keel-e2e-{uuid.uuid4().hex[:8]}:"
    yield name
    client = redis.Redis.from_url(REDIS_URL)
    keys = list(client.scan_iter(match=f"{name}*"))
    if keys:
        client.delete(*keys)
    client.close()


def config(prefix: str, tier: dict[str, Any]) -> dict[str, Any]:
    return {
        "providers": {
            "sim": {"kind": "simulator", "seed": 5},
            "slow": {"kind": "simulator", "latency": {"p50_ms": 400, "p99_ms": 400}},
        },
        "models": [
            {"alias": "fast", "deployments": [{"provider": "sim", "model": "priced"}]},
            {"alias": "slow", "deployments": [{"provider": "slow", "model": "priced"}]},
        ],
        "prices": {"priced": {"input_per_mtok": 1.0, "output_per_mtok": 2.0}},
        "telemetry": {"log": {"destination": "off"}},
        "tiers": {"standard": tier},
        "limits": {
            "backend": "redis",
            "redis_url": REDIS_URL,
            "redis_prefix": prefix,
            "default_tier": "standard",
        },
    }


async def spread(
    gateways: list[Process], key: str, count: int, model: str = "fast"
) -> list[httpx.Response]:
    """``count`` concurrent requests, dealt round-robin over the gateways."""
    headers = {"authorization": f"Bearer {key}"}
    body = {"model": model, "messages": HELLO, "max_tokens": 10}
    limits = httpx.Limits(max_connections=count)
    async with httpx.AsyncClient(timeout=30, limits=limits) as client:
        return await asyncio.gather(
            *(
                client.post(
                    f"{gateways[i % len(gateways)].url}/v1/chat/completions",
                    json=body,
                    headers=headers,
                )
                for i in range(count)
            )
        )


def test_three_gateways_never_spend_past_one_budget(cluster: Cluster, prefix: str) -> None:
    budget = 50 * RESERVE_NANO
    gateways, key = cluster.gateways(config(prefix, {"budget": {"daily_usd": budget / 1e9}}), 3)
    # One request through each gateway first, so every one of them spends from
    # the budget whatever order the burst's connections land in; then the burst.
    first = [asyncio.run(spread([gateway], key, 1))[0] for gateway in gateways]
    assert [r.status_code for r in first] == [200, 200, 200]
    responses = first + asyncio.run(spread(gateways, key, 200))
    served = [r for r in responses if r.status_code == 200]
    assert {r.status_code for r in responses} <= {200, 402}
    assert len(served) >= 50
    spent = sum(round(float(r.headers["x-keel-cost-usd"]) * 1e9) for r in served)
    assert spent <= budget


def test_rpm_holds_across_three_gateways(cluster: Cluster, prefix: str) -> None:
    gateways, key = cluster.gateways(config(prefix, {"tenant": {"rpm": 30}}), 3)
    started = time.monotonic()
    responses = asyncio.run(spread(gateways, key, 60))
    elapsed = time.monotonic() - started
    admitted = sum(r.status_code == 200 for r in responses)
    # 30 a minute, refilling at one every 2 s while the test ran: never more.
    assert 30 <= admitted <= 30 + int(elapsed / 2) + 1
    refused = [r for r in responses if r.status_code == 429]
    assert refused and all("rpm per tenant" in r.json()["error"]["message"] for r in refused)
    assert {r.headers["retry-after"] for r in refused} <= {"1", "2"}


def test_tpm_holds_across_three_gateways(cluster: Cluster, prefix: str) -> None:
    gateways, key = cluster.gateways(config(prefix, {"key": {"tpm": 230}}), 3)
    started = time.monotonic()
    responses = asyncio.run(spread(gateways, key, 60))
    elapsed = time.monotonic() - started
    served = [r for r in responses if r.status_code == 200]
    used = sum(r.json()["usage"]["total_tokens"] for r in served)
    # Each admission takes 23 estimated tokens; what is used never passes the
    # minute's 230 plus what refilled while the test ran.
    assert served and used <= 230 + elapsed * 230 / 60
    refused = [r for r in responses if r.status_code == 429]
    assert refused and all("tpm per key" in r.json()["error"]["message"] for r in refused)


def test_concurrency_holds_across_three_gateways(cluster: Cluster, prefix: str) -> None:
    gateways, key = cluster.gateways(config(prefix, {"tenant": {"concurrent": 2}}), 3)
    burst = asyncio.run(spread(gateways, key, 9, model="slow"))
    # Two slots across all replicas, whichever replica a request reached.
    assert sorted(r.status_code for r in burst) == [200] * 2 + [429] * 7
    after = asyncio.run(spread(gateways, key, 2, model="slow"))
    assert [r.status_code for r in after] == [200, 200]  # the slots came back


def test_a_suspension_reaches_every_gateway_within_a_second(cluster: Cluster, prefix: str) -> None:
    gateways, key = cluster.gateways(config(prefix, {}), 3)
    assert all(r.status_code == 200 for r in asyncio.run(spread(gateways, key, 3)))
    suspended = cluster.keel("tenants", "suspend", "e2e", "--reason", "incident 42")
    assert suspended.returncode == 0, suspended.stderr
    took = until_all(gateways, key, 403)
    assert took <= 1.0, f"suspension took {took:.2f} s"
    body = asyncio.run(spread(gateways, key, 1))[0].json()
    assert body["error"]["code"] == "tenant_suspended" and "incident 42" in body["error"]["message"]
    resumed = cluster.keel("tenants", "resume", "e2e")
    assert resumed.returncode == 0, resumed.stderr
    assert until_all(gateways, key, 200) <= 1.0


def until_all(gateways: list[Process], key: str, status: int) -> float:
    """Seconds until every gateway answers ``status``; gives up after 3 s."""
    started = time.monotonic()
    pending = {g.url for g in gateways}
    headers = {"authorization": f"Bearer {key}"}
    body = {"model": "fast", "messages": HELLO, "max_tokens": 5}
    with httpx.Client(timeout=5) as client:
        while pending and time.monotonic() - started < 3.0:
            for url in list(pending):
                answer = client.post(f"{url}/v1/chat/completions", json=body, headers=headers)
                if answer.status_code == status:
                    pending.discard(url)
    assert not pending, f"still not {status}: {pending}"
    return time.monotonic() - started
