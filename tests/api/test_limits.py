"""The limits stage in-process: rate limits, concurrency, budgets, downgrades, suspension."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx

from keel.config import KeelConfig
from keel.store import EventStore, KeyStore, TenantStore
from support import Gateway, gateway_config, open_gateway

HELLO = [{"role": "user", "content": "Hello there"}]
# Prices of sim/priced: 1 USD per million input tokens, 2 per million output.
# "Hello there" with max_tokens 10 reserves (3 + 4 + 6) input + 10 output tokens.
RESERVE_NANO = 13 * 1_000 + 10 * 2_000


def config(tmp_path: Path, tiers: dict[str, Any], **limits: Any) -> KeelConfig:
    return gateway_config(
        tmp_path,
        {
            "providers": {
                "sim": {"kind": "simulator", "seed": 3},
                "slow": {"kind": "simulator", "latency": {"p50_ms": 300, "p99_ms": 300}},
            },
            "models": [
                {"alias": "fast", "deployments": [{"provider": "sim", "model": "priced"}]},
                {"alias": "cheap", "deployments": [{"provider": "sim", "model": "cheap"}]},
                {"alias": "slow", "deployments": [{"provider": "slow", "model": "priced"}]},
            ],
            "prices": {
                "priced": {"input_per_mtok": 1.0, "output_per_mtok": 2.0},
                "cheap": {"input_per_mtok": 0.01, "output_per_mtok": 0.01},
            },
            "telemetry": {"log": {"destination": "off"}},
            "tiers": tiers,
            "limits": {"default_tier": next(iter(tiers)), **limits},
        },
    )


def ask(gw: Gateway, model: str = "fast", **extra: Any) -> Any:
    return gw.chat({"model": model, "messages": HELLO, "max_tokens": 10, **extra})


def error(response: httpx.Response) -> dict[str, Any]:
    body: dict[str, Any] = response.json()["error"]
    return body


@asynccontextmanager
async def redis_gateway(tmp_path: Path, tiers: dict[str, Any]) -> AsyncIterator[Gateway]:
    prefix = f"keel-test-{uuid.uuid4().hex[:8]}:"
    cfg = config(tmp_path, tiers, backend="redis", redis_prefix=prefix)
    try:
        async with open_gateway(cfg) as gw:
            yield gw
    finally:
        import redis.asyncio as aioredis

        client = aioredis.Redis.from_url(cfg.limits.redis_url)
        keys = [k async for k in client.scan_iter(match=f"{prefix}*")]
        if keys:
            await client.delete(*keys)
        await client.aclose()


async def test_over_the_tenant_rpm_is_429_naming_the_limit_with_an_honest_retry_after(
    tmp_path: Path,
) -> None:
    async with open_gateway(config(tmp_path, {"free": {"tenant": {"rpm": 2}}})) as gw:
        assert [(await ask(gw)).status_code for _ in range(2)] == [200, 200]
        refused = await ask(gw)
    assert refused.status_code == 429
    assert error(refused)["code"] == "rate_limit_exceeded"
    assert "rpm per tenant" in error(refused)["message"]
    # Two a minute refill one every 30 s.
    assert 29 <= int(refused.headers["retry-after"]) <= 30


async def test_end_users_have_their_own_limit_under_the_tenants(tmp_path: Path) -> None:
    async with open_gateway(config(tmp_path, {"free": {"user": {"rpm": 1}}})) as gw:
        assert (await ask(gw, user="ann")).status_code == 200
        second = await ask(gw, user="ann")
        other = await ask(gw, user="bob")
    assert second.status_code == 429 and "rpm per user" in error(second)["message"]
    assert other.status_code == 200


async def test_a_request_larger_than_the_tpm_limit_is_refused_without_retry_after(
    tmp_path: Path,
) -> None:
    async with open_gateway(config(tmp_path, {"free": {"key": {"tpm": 15}}})) as gw:
        refused = await ask(gw)
    assert refused.status_code == 429
    assert "larger than the tpm per key limit" in error(refused)["message"]
    assert "retry-after" not in refused.headers


async def test_tpm_is_corrected_to_the_actual_usage(tmp_path: Path) -> None:
    # Each request takes 23 tokens at admission and uses about 12: 50 a minute
    # fit two estimates, and a third only because the unused part comes back.
    async with open_gateway(config(tmp_path, {"free": {"tenant": {"tpm": 50}}})) as gw:
        statuses = [(await ask(gw)).status_code for _ in range(3)]
    assert statuses == [200, 200, 200]


async def test_concurrent_requests_over_the_limit_are_refused(tmp_path: Path) -> None:
    async with open_gateway(config(tmp_path, {"free": {"tenant": {"concurrent": 1}}})) as gw:
        first, second = await asyncio.gather(ask(gw, "slow"), ask(gw, "slow"))
        after = await ask(gw, "slow")
    assert sorted([first.status_code, second.status_code]) == [200, 429]
    refused = first if first.status_code == 429 else second
    assert "concurrent per tenant" in error(refused)["message"]
    assert after.status_code == 200  # the slot came back when the first one finished


async def test_aliases_outside_the_tier_are_refused(tmp_path: Path) -> None:
    async with open_gateway(config(tmp_path, {"free": {"models": ["cheap"]}})) as gw:
        refused = await ask(gw, "fast")
        allowed = await ask(gw, "cheap")
    assert refused.status_code == 403
    assert error(refused)["code"] == "model_not_allowed" and error(refused)["param"] == "model"
    assert allowed.status_code == 200


async def test_max_tokens_over_the_tier_cap_is_refused_and_absent_gets_the_cap(
    tmp_path: Path,
) -> None:
    async with open_gateway(config(tmp_path, {"free": {"max_tokens": 5}})) as gw:
        refused = await ask(gw)
        capped = await gw.chat({"model": "fast", "messages": HELLO})
    assert refused.status_code == 400 and error(refused)["param"] == "max_tokens"
    assert "at most 5" in error(refused)["message"]
    assert capped.status_code == 200
    assert capped.json()["usage"]["completion_tokens"] <= 5


async def budget_race(gw: Gateway, budget_nano: int) -> None:
    responses = await asyncio.gather(*(ask(gw) for _ in range(200)))
    served = [r for r in responses if r.status_code == 200]
    refused = [r for r in responses if r.status_code != 200]
    assert {r.status_code for r in refused} == {402}
    assert {error(r)["code"] for r in refused} == {"budget_exceeded"}
    # Every reservation fits 50 times; settled ones give back what they did not use.
    assert len(served) >= 50
    spent = sum(round(float(r.headers["x-keel-cost-usd"]) * 1e9) for r in served)
    assert spent <= budget_nano
    gw.state.writer.flush()
    rows = gw.state.requests.spend([], since=datetime.now(UTC).date(), tenant="acme")
    assert round(rows[0].cost_usd * 1e9) <= budget_nano


async def test_200_concurrent_requests_never_spend_past_the_budget(tmp_path: Path) -> None:
    budget = 50 * RESERVE_NANO
    tiers = {"free": {"budget": {"daily_usd": budget / 1e9}}}
    async with open_gateway(config(tmp_path, tiers)) as gw:
        await budget_race(gw, budget)


async def test_the_budget_race_holds_on_redis(tmp_path: Path) -> None:
    budget = 50 * RESERVE_NANO
    async with redis_gateway(tmp_path, {"free": {"budget": {"daily_usd": budget / 1e9}}}) as gw:
        await budget_race(gw, budget)


async def test_at_the_budget_a_downgrade_tier_is_served_by_the_cheaper_alias(
    tmp_path: Path,
) -> None:
    tiers = {
        "free": {"budget": {"daily_usd": RESERVE_NANO / 1e9, "on_exceed": {"downgrade": "cheap"}}}
    }
    async with open_gateway(config(tmp_path, tiers)) as gw:
        first = await ask(gw)
        second = await ask(gw)
        third = await ask(gw)
    assert first.status_code == 200 and "x-keel-downgraded-from" not in first.headers
    assert second.status_code == third.status_code == 200
    assert second.headers["x-keel-downgraded-from"] == "fast"
    assert second.headers["x-keel-model"] == "sim/cheap"


async def test_budget_status_can_be_429_for_clients_that_need_it(tmp_path: Path) -> None:
    tiers = {"free": {"budget": {"daily_usd": 1e-9}}}
    async with open_gateway(config(tmp_path, tiers, budget_status=429)) as gw:
        refused = await ask(gw)
    assert refused.status_code == 429 and error(refused)["code"] == "budget_exceeded"


async def test_spend_survives_a_restart(tmp_path: Path) -> None:
    cfg = config(tmp_path, {"free": {"budget": {"daily_usd": 3 * RESERVE_NANO / 1e9}}})
    async with open_gateway(cfg) as gw:
        statuses = [(await ask(gw)).status_code for _ in range(6)]
    assert statuses[0] == 200 and statuses[-1] == 402
    # A new process starts its counters from the store's rollups, not from zero.
    async with open_gateway(cfg) as gw:
        assert (await ask(gw)).status_code == 402


async def test_a_suspended_tenant_is_refused_and_resumed(tmp_path: Path) -> None:
    async with open_gateway(config(tmp_path, {"free": {}})) as gw:
        tenants = TenantStore(gw.state.engine)
        tenants.suspend("acme", reason="runaway agent", actor="test")
        await gw.state.tenancy.directory.refresh()
        refused = await ask(gw)
        tenants.resume("acme", actor="test")
        await gw.state.tenancy.directory.refresh()
        resumed = await ask(gw)
    assert refused.status_code == 403
    assert error(refused)["code"] == "tenant_suspended"
    assert "runaway agent" in error(refused)["message"]
    assert resumed.status_code == 200


async def test_tenant_overrides_in_the_store_apply_on_the_next_refresh(tmp_path: Path) -> None:
    async with open_gateway(config(tmp_path, {"free": {"tenant": {"rpm": 100}}})) as gw:
        TenantStore(gw.state.engine).set("acme", limits={"tenant": {"rpm": 1}}, actor="test")
        await gw.state.tenancy.directory.refresh()
        statuses = [(await ask(gw)).status_code for _ in range(2)]
    assert statuses == [200, 429]


async def test_budget_alerts_fire_once_per_threshold(tmp_path: Path) -> None:
    # Requests until the budget refuses: the level passes 50 % and 80 % on the way.
    tiers = {"free": {"budget": {"daily_usd": 4 * RESERVE_NANO / 1e9}}}
    async with open_gateway(config(tmp_path, tiers)) as gw:
        for _ in range(8):
            await ask(gw)
        await gw.state.tenancy.alerts.drain()
        await gw.state.tenancy.notifier.drain()
        events = EventStore(gw.state.engine).list(tenant="acme")
    thresholds = sorted(e.data["threshold"] for e in events if e.kind == "budget_threshold")
    assert thresholds[:2] == [0.5, 0.8]
    assert len(thresholds) == len(set(thresholds))  # each once


async def test_one_tenants_budget_and_limits_never_touch_anothers(tmp_path: Path) -> None:
    tiers = {"free": {"tenant": {"rpm": 1}, "budget": {"daily_usd": RESERVE_NANO / 1e9}}}
    async with open_gateway(config(tmp_path, tiers)) as gw:
        other, _ = KeyStore(gw.state.engine).create_key("globex")
        assert (await ask(gw)).status_code == 200
        assert (await ask(gw)).status_code in (402, 429)
        theirs = await gw.client.post(
            "/v1/chat/completions",
            json={"model": "fast", "messages": HELLO, "max_tokens": 10},
            headers={"authorization": f"Bearer {other}"},
        )
    assert theirs.status_code == 200
