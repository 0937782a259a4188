"""What a request leaves behind, in-process: headers, stored rows, rollups, feedback."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import pytest

from keel.store import KeyStore, make_engine
from support import Gateway, gateway_config, open_gateway

HELLO = [{"role": "user", "content": "Hello there"}]
TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
PARENT = "00f067aa0ba902b7"


def config(tmp_path: Path, **telemetry: Any) -> Any:
    return gateway_config(
        tmp_path,
        {
            "providers": {"sim": {"kind": "simulator", "seed": 3}},
            "models": [
                {"alias": "fast", "deployments": [{"provider": "sim", "model": "priced"}]},
                {"alias": "free", "deployments": [{"provider": "sim", "model": "unpriced"}]},
            ],
            "prices": {"sim/priced": {"input_per_mtok": 1.0, "output_per_mtok": 2.0}},
            "telemetry": {
                "log": {"destination": "file", "path": str(tmp_path / "req.log")},
                **telemetry,
            },
        },
    )


def settle(gw: Gateway) -> None:
    gw.state.writer.flush()


def other_key(tmp_path: Path, tenant: str = "globex") -> str:
    engine = make_engine(f"sqlite:///{tmp_path / 'keel.db'}")
    try:
        key, _ = KeyStore(engine).create_key(tenant)
    finally:
        engine.dispose()
    return key


async def test_cost_and_tokens_on_the_response_match_the_row_and_the_rollup(
    tmp_path: Path,
) -> None:
    async with open_gateway(config(tmp_path)) as gw:
        response = await gw.chat(
            {"model": "fast", "messages": HELLO, "metadata": {"feature": "search"}}
        )
        settle(gw)
        stored = gw.state.requests.get(response.headers["x-request-id"], tenant="acme")
        spend = gw.state.requests.spend(
            ["tenant", "feature"], since=(datetime.now(UTC) - timedelta(days=1)).date()
        )
    usage = response.json()["usage"]
    expected = (usage["prompt_tokens"] * 1.0 + usage["completion_tokens"] * 2.0) / 1e6
    assert float(response.headers["x-keel-cost-usd"]) == pytest.approx(expected)
    assert stored is not None
    assert stored.input_tokens == usage["prompt_tokens"]
    assert stored.output_tokens == usage["completion_tokens"]
    assert stored.cost_usd == pytest.approx(expected)
    assert stored.feature == "search"
    [row] = spend
    assert (row.group["tenant"], row.group["feature"], row.requests) == ("acme", "search", 1)
    assert row.cost_usd == pytest.approx(expected)


async def test_an_unknown_price_is_reported_as_unknown_not_zero(tmp_path: Path) -> None:
    async with open_gateway(config(tmp_path)) as gw:
        response = await gw.chat({"model": "free", "messages": HELLO})
        settle(gw)
        stored = gw.state.requests.get(response.headers["x-request-id"], tenant="acme")
    assert response.headers["x-keel-cost-usd"] == "unknown"
    assert stored is not None and stored.cost_usd is None


async def test_the_trace_continues_the_callers_traceparent(tmp_path: Path) -> None:
    async with open_gateway(config(tmp_path)) as gw:
        response = await gw.chat(
            {"model": "fast", "messages": HELLO},
            headers={"traceparent": f"00-{TRACE}-{PARENT}-01"},
        )
        settle(gw)
        stored = gw.state.requests.get(response.headers["x-request-id"], tenant="acme")
    _version, trace_id, span_id, _flags = response.headers["traceparent"].split("-")
    assert trace_id == TRACE and span_id != PARENT
    assert stored is not None and stored.trace_id == TRACE


async def test_one_json_log_line_per_request(tmp_path: Path) -> None:
    async with open_gateway(config(tmp_path)) as gw:
        ok = await gw.chat({"model": "fast", "messages": HELLO, "user": "u1"})
        bad = await gw.chat({"model": "nope", "messages": HELLO})
        settle(gw)
    lines = [orjson.loads(line) for line in (tmp_path / "req.log").read_bytes().splitlines()]
    assert [line["request_id"] for line in lines] == [
        ok.headers["x-request-id"],
        bad.headers["x-request-id"],
    ]
    assert lines[0]["user"] == "u1" and lines[0]["status"] == "ok"
    assert lines[0]["input_tokens"] > 0 and lines[0]["cost_usd"] > 0
    assert lines[1]["status"] == "error" and lines[1]["error_type"] == "caller_model_not_found"
    assert gw.key not in (tmp_path / "req.log").read_text()


async def test_sampling_keeps_every_error_and_counts_everything(tmp_path: Path) -> None:
    async with open_gateway(config(tmp_path, sampling={"rate": 0.0})) as gw:
        ok = await gw.chat({"model": "fast", "messages": HELLO})
        bad = await gw.chat({"model": "fast", "messages": HELLO, "max_tokens": 10**6})
        settle(gw)
        requests = gw.state.requests
        assert requests.get(ok.headers["x-request-id"], tenant="acme") is None
        assert requests.get(bad.headers["x-request-id"], tenant="acme") is not None
        [row] = requests.spend(["tenant"], since=(datetime.now(UTC) - timedelta(days=1)).date())
        metrics = (await gw.client.get("/metrics")).text
    assert bad.status_code >= 400
    assert row.requests == 2 and row.errors == 1
    assert 'keel_requests_total{alias="fast",status="ok",tenant="acme"} 1.0' in metrics


async def test_feedback_joins_its_trace_and_stays_with_its_tenant(tmp_path: Path) -> None:
    async with open_gateway(config(tmp_path)) as gw:
        response = await gw.chat({"model": "fast", "messages": HELLO})
        rid = response.headers["x-request-id"]
        settle(gw)
        given = await gw.client.post(
            "/v1/feedback",
            headers=gw.auth,
            json={"request_id": rid, "score": True, "comment": "great", "tags": ["ok"]},
        )
        trace = await gw.client.get(f"/v1/traces/{rid}", headers=gw.auth)
        listed = await gw.client.get("/v1/traces", headers=gw.auth)

        intruder = {"authorization": f"Bearer {other_key(tmp_path)}"}
        stolen = await gw.client.get(f"/v1/traces/{rid}", headers=intruder)
        theirs = await gw.client.get("/v1/traces", headers=intruder)
        forged = await gw.client.post(
            "/v1/feedback", headers=intruder, json={"request_id": rid, "score": 0}
        )
        bad = await gw.client.post(
            "/v1/feedback", headers=gw.auth, json={"request_id": rid, "score": 3}
        )
    assert given.status_code == 201
    body = trace.json()
    assert body["request_id"] == rid and body["feedback"][0]["comment"] == "great"
    assert [t["request_id"] for t in listed.json()["data"]] == [rid]
    assert stolen.status_code == 404 and forged.status_code == 404
    assert theirs.json()["data"] == []
    assert bad.status_code == 400 and bad.json()["error"]["param"] == "score"


async def test_content_capture_can_be_switched_off_per_tenant(tmp_path: Path) -> None:
    async with open_gateway(config(tmp_path, capture_content_exclude=["acme"])) as gw:
        response = await gw.chat({"model": "fast", "messages": HELLO})
        settle(gw)
        stored = gw.state.requests.get(response.headers["x-request-id"], tenant="acme")
    assert stored is not None and stored.content is None


async def test_captured_content_includes_a_streamed_answer(tmp_path: Path) -> None:
    async with open_gateway(config(tmp_path)) as gw:
        response = await gw.chat({"model": "fast", "messages": HELLO, "stream": True})
        settle(gw)
        stored = gw.state.requests.get(response.headers["x-request-id"], tenant="acme")
    assert stored is not None and stored.content is not None
    assert stored.content["request_body"]["messages"] == HELLO
    assert stored.content["response_text"]
    assert stored.output_tokens > 0


async def test_spans_reach_an_otlp_collector_under_the_callers_span(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from otlp_support import attributes, otlp_receiver

    with otlp_receiver(monkeypatch) as collector:
        cfg = config(tmp_path, otlp={"endpoint": collector.url, "timeout_s": 2})
        async with open_gateway(cfg) as gw:
            response = await gw.chat(
                {"model": "fast", "messages": HELLO},
                headers={"traceparent": f"00-{TRACE}-{PARENT}-01"},
            )
            settle(gw)
        spans = collector.spans()
    root_id = response.headers["traceparent"].split("-")[2]
    [root] = [s for s in spans if s.span_id.hex() == root_id]
    assert root.trace_id.hex() == TRACE
    assert root.parent_span_id.hex() == PARENT
    attrs = attributes(root.attributes)
    usage = response.json()["usage"]
    assert attrs["gen_ai.operation.name"] == "chat"
    assert attrs["gen_ai.request.model"] == "fast"
    assert attrs["gen_ai.usage.input_tokens"] == usage["prompt_tokens"]
    assert attrs["gen_ai.usage.output_tokens"] == usage["completion_tokens"]
    assert attrs["keel.tenant"] == "acme"
    children = [s for s in spans if s.span_id.hex() != root_id]
    assert children and all(s.parent_span_id.hex() == root_id for s in children)
    attempt = next(s for s in children if s.name.startswith("chat "))
    assert attributes(attempt.attributes)["gen_ai.request.model"] == "priced"
