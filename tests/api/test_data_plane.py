"""The data plane in-process (httpx ASGI transport) against the simulator."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import orjson
import pytest

from support import gateway_config, open_gateway

SIM = {"kind": "simulator", "seed": 1}
HELLO = [{"role": "user", "content": "Hello there"}]


def config(tmp_path: Path, providers: dict[str, Any] | None = None, **models: Any) -> Any:
    raw_models = models.get("models") or [
        {"alias": "fast", "deployments": [{"provider": "primary", "model": "m1"}]},
        {
            "alias": "embed",
            "kind": "embeddings",
            "deployments": [{"provider": "primary", "model": "e1"}],
        },
    ]
    return gateway_config(
        tmp_path,
        {
            "providers": providers or {"primary": SIM},
            "models": raw_models,
            "server": {"max_body_bytes": 2048},
        },
    )


def error_of(response: Any) -> dict[str, Any]:
    body = response.json()
    assert set(body["error"]) >= {"message", "type", "code", "param"}
    return body["error"]  # type: ignore[no-any-return]


async def test_chat_completion(tmp_path: Path) -> None:
    async with open_gateway(config(tmp_path)) as gw:
        response = await gw.chat({"model": "fast", "messages": HELLO})
    assert response.status_code == 200
    body = response.json()
    assert body["object"] == "chat.completion"
    assert body["choices"][0]["message"]["content"]
    assert body["usage"]["total_tokens"] > 0
    assert response.headers["x-keel-model"] == "primary/m1"
    assert response.headers["x-keel-attempts"] == "1"
    assert len(response.headers["x-request-id"]) == 32


def test_new_request_ids_start_with_the_time_so_they_sort_by_arrival() -> None:
    from keel.api._asgi import new_request_id

    before = time.time_ns() // 1_000_000
    ids = [new_request_id() for _ in range(1000)]
    after = time.time_ns() // 1_000_000
    assert all(len(i) == 32 and int(i, 16) >= 0 and i == i.lower() for i in ids)
    assert len(set(ids)) == len(ids)
    assert all(before <= int(i[:12], 16) <= after for i in ids)
    assert [i[:12] for i in ids] == sorted(i[:12] for i in ids)


async def test_caller_request_id_is_kept(tmp_path: Path) -> None:
    async with open_gateway(config(tmp_path)) as gw:
        response = await gw.chat(
            {"model": "fast", "messages": HELLO}, headers={"x-request-id": "abc-123"}
        )
    assert response.headers["x-request-id"] == "abc-123"


def sse_events(text: str) -> list[str]:
    return [line[len("data: ") :] for line in text.split("\n\n") if line.startswith("data: ")]


@pytest.mark.parametrize("include_usage", [False, True])
async def test_streaming(tmp_path: Path, include_usage: bool) -> None:
    body: dict[str, Any] = {"model": "fast", "messages": HELLO, "stream": True}
    if include_usage:
        body["stream_options"] = {"include_usage": True}
    async with open_gateway(config(tmp_path)) as gw:
        response = await gw.chat(body)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/event-stream")
    events = sse_events(response.text)
    assert events[-1] == "[DONE]"
    chunks = [orjson.loads(e) for e in events[:-1]]
    text = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c["choices"])
    assert text
    usage_chunks = [c for c in chunks if c.get("usage") and not c["choices"]]
    assert len(usage_chunks) == (1 if include_usage else 0)
    if not include_usage:
        assert not any("usage" in c for c in chunks)


async def test_malformed_json_is_400(tmp_path: Path) -> None:
    async with open_gateway(config(tmp_path)) as gw:
        response = await gw.client.post(
            "/v1/chat/completions", content=b"{not json", headers=gw.auth
        )
    assert response.status_code == 400
    assert error_of(response)["code"] == "invalid_json"


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"model": "fast"}, "messages"),
        ({"model": "fast", "messages": []}, "messages"),
        ({"model": "fast", "messages": [{"role": "wizard", "content": "x"}]}, "messages[0].role"),
        ({"model": "fast", "messages": HELLO, "temperature": "hot"}, "temperature"),
        ({"model": "fast", "messages": HELLO, "max_tokens": 0}, "max_tokens"),
        ({"model": "fast", "messages": HELLO, "max_tokens": "10"}, "max_tokens"),
        ({"model": "fast", "messages": HELLO, "stream": "yes"}, "stream"),
        ({"messages": HELLO}, "model"),
    ],
)
async def test_schema_errors_name_the_field(
    tmp_path: Path, body: dict[str, Any], param: str
) -> None:
    async with open_gateway(config(tmp_path)) as gw:
        response = await gw.chat(body)
    assert response.status_code == 400
    error = error_of(response)
    assert error["param"] == param
    assert error["message"].startswith(param)


async def test_unknown_model_is_404(tmp_path: Path) -> None:
    async with open_gateway(config(tmp_path)) as gw:
        response = await gw.chat({"model": "gpt-9", "messages": HELLO})
    assert response.status_code == 404
    assert error_of(response)["code"] == "model_not_found"


async def test_body_over_the_limit_is_413(tmp_path: Path) -> None:
    big = [{"role": "user", "content": "x" * 4096}]
    async with open_gateway(config(tmp_path)) as gw:
        response = await gw.chat({"model": "fast", "messages": big})
    assert response.status_code == 413
    assert error_of(response)["code"] == "payload_too_large"


@pytest.mark.parametrize("authorization", [None, "Bearer sk-keel-wrong", "Basic abc"])
async def test_missing_or_invalid_key_is_401(tmp_path: Path, authorization: str | None) -> None:
    headers = {"authorization": authorization} if authorization else {}
    async with open_gateway(config(tmp_path)) as gw:
        response = await gw.client.post(
            "/v1/chat/completions", json={"model": "fast", "messages": HELLO}, headers=headers
        )
    assert response.status_code == 401
    error = error_of(response)
    assert error["code"] == "invalid_api_key"
    assert "sk-keel-wrong" not in response.text


async def test_all_upstreams_failed_is_502_with_attempts(tmp_path: Path) -> None:
    providers = {"primary": {**SIM, "error_rate": 1.0}, "backup": {**SIM, "error_rate": 1.0}}
    models = [
        {
            "alias": "fast",
            "deployments": [{"provider": "primary", "model": "m1"}],
            "retries": 1,
            "fallbacks": ["slow"],
        },
        {"alias": "slow", "deployments": [{"provider": "backup", "model": "m2"}], "retries": 0},
    ]
    cfg = config(tmp_path, providers, models=models)
    cfg = cfg.model_copy(update={"routing": cfg.routing.model_copy(update={"backoff_base_s": 0})})
    async with open_gateway(cfg) as gw:
        response = await gw.chat({"model": "fast", "messages": HELLO})
    assert response.status_code == 502
    error = error_of(response)
    assert error["code"] == "all_upstreams_failed"
    assert [a["deployment"] for a in response.json()["error"]["attempts"]] == [
        "primary/m1",
        "primary/m1",
        "backup/m2",
    ]


async def test_fallback_answers_when_primary_fails(tmp_path: Path) -> None:
    providers = {"primary": {**SIM, "error_rate": 1.0}, "backup": SIM}
    models = [
        {
            "alias": "fast",
            "deployments": [{"provider": "primary", "model": "m1"}],
            "retries": 0,
            "fallbacks": ["slow"],
        },
        {"alias": "slow", "deployments": [{"provider": "backup", "model": "m2"}]},
    ]
    async with open_gateway(config(tmp_path, providers, models=models)) as gw:
        plain = await gw.chat({"model": "fast", "messages": HELLO})
        streamed = await gw.chat({"model": "fast", "messages": HELLO, "stream": True})
    assert plain.status_code == 200
    assert plain.headers["x-keel-model"] == "backup/m2"
    assert plain.headers["x-keel-attempts"] == "2"
    assert streamed.status_code == 200
    assert streamed.headers["x-keel-model"] == "backup/m2"
    assert sse_events(streamed.text)[-1] == "[DONE]"


async def test_context_window_error_uses_the_larger_alias(tmp_path: Path) -> None:
    providers = {"small": {**SIM, "context_window": 50}, "large": SIM}
    models = [
        {
            "alias": "fast",
            "deployments": [{"provider": "small", "model": "m1"}],
            "context_fallback": "long",
        },
        {"alias": "long", "deployments": [{"provider": "large", "model": "m2"}]},
    ]
    long_prompt = [{"role": "user", "content": "word " * 200}]
    async with open_gateway(config(tmp_path, providers, models=models)) as gw:
        response = await gw.chat({"model": "fast", "messages": long_prompt, "max_tokens": 10})
    assert response.status_code == 200
    assert response.headers["x-keel-model"] == "large/m2"


async def test_context_window_error_without_fallback_reaches_the_caller(tmp_path: Path) -> None:
    providers = {"primary": {**SIM, "context_window": 50}}
    long_prompt = [{"role": "user", "content": "word " * 200}]
    async with open_gateway(config(tmp_path, providers)) as gw:
        response = await gw.chat({"model": "fast", "messages": long_prompt, "max_tokens": 10})
    assert response.status_code == 400
    assert error_of(response)["code"] == "context_length_exceeded"


async def test_deadline_is_504(tmp_path: Path) -> None:
    providers = {"primary": {**SIM, "timeout_rate": 1.0}}
    models = [
        {
            "alias": "fast",
            "deployments": [{"provider": "primary", "model": "m1"}],
            "timeout_s": 0.05,
            "deadline_s": 0.12,
            "retries": 5,
        }
    ]
    cfg = config(tmp_path, providers, models=models)
    # No backoff: the attempts themselves run the clock out.
    cfg = cfg.model_copy(update={"routing": cfg.routing.model_copy(update={"backoff_base_s": 0})})
    async with open_gateway(cfg) as gw:
        response = await gw.chat({"model": "fast", "messages": HELLO})
    assert response.status_code == 504
    assert error_of(response)["code"] == "deadline_exceeded"


async def test_open_breaker_is_503(tmp_path: Path) -> None:
    providers = {"primary": {**SIM, "error_rate": 1.0}}
    models = [
        {"alias": "fast", "deployments": [{"provider": "primary", "model": "m1"}], "retries": 0}
    ]
    cfg = config(tmp_path, providers, models=models)
    cfg = cfg.model_copy(
        update={
            "routing": cfg.routing.model_copy(
                update={
                    "breaker": cfg.routing.breaker.model_copy(
                        update={"min_requests": 2, "cooldown_s": 60}
                    )
                }
            )
        }
    )
    async with open_gateway(cfg) as gw:
        statuses = [
            (await gw.chat({"model": "fast", "messages": HELLO})).status_code for _ in range(3)
        ]
        ready = (await gw.client.get("/readyz")).json()
    assert statuses == [502, 502, 503]
    assert ready["breakers"]["primary/m1"] == "open"


async def test_rate_limited_upstream_is_retried(tmp_path: Path) -> None:
    providers = {"primary": {**SIM, "seed": 3, "rate_limit_rate": 0.5, "retry_after_s": 0}}
    models = [
        {"alias": "fast", "deployments": [{"provider": "primary", "model": "m1"}], "retries": 8}
    ]
    async with open_gateway(config(tmp_path, providers, models=models)) as gw:
        responses = [await gw.chat({"model": "fast", "messages": HELLO}) for _ in range(10)]
    assert all(r.status_code == 200 for r in responses)
    assert any(int(r.headers["x-keel-attempts"]) > 1 for r in responses)


async def test_tools_and_response_format_pass_through(tmp_path: Path) -> None:
    tool = {
        "type": "function",
        "function": {
            "name": "get_weather",
            "parameters": {
                "type": "object",
                "properties": {"city": {"type": "string"}},
                "required": ["city"],
            },
        },
    }
    async with open_gateway(config(tmp_path)) as gw:
        called = await gw.chat({"model": "fast", "messages": HELLO, "tools": [tool]})
        as_json = await gw.chat(
            {"model": "fast", "messages": HELLO, "response_format": {"type": "json_object"}}
        )
    call = called.json()["choices"][0]["message"]["tool_calls"][0]
    assert call["function"]["name"] == "get_weather"
    assert "city" in orjson.loads(call["function"]["arguments"])
    assert isinstance(orjson.loads(as_json.json()["choices"][0]["message"]["content"]), dict)


async def test_embeddings(tmp_path: Path) -> None:
    async with open_gateway(config(tmp_path)) as gw:
        response = await gw.client.post(
            "/v1/embeddings",
            json={"model": "embed", "input": ["a cat", "a dog"]},
            headers=gw.auth,
        )
        wrong_kind = await gw.client.post(
            "/v1/embeddings", json={"model": "fast", "input": "x"}, headers=gw.auth
        )
    assert response.status_code == 200
    assert len(response.json()["data"]) == 2
    assert wrong_kind.status_code == 400
    assert error_of(wrong_kind)["param"] == "model"


async def test_models_lists_aliases_for_a_valid_key(tmp_path: Path) -> None:
    async with open_gateway(config(tmp_path)) as gw:
        listed = await gw.client.get("/v1/models", headers=gw.auth)
        anonymous = await gw.client.get("/v1/models")
    assert [m["id"] for m in listed.json()["data"]] == ["fast", "embed"]
    assert anonymous.status_code == 401


async def test_unknown_route_and_wrong_method(tmp_path: Path) -> None:
    async with open_gateway(config(tmp_path)) as gw:
        missing = await gw.client.get("/v1/nothing")
        wrong = await gw.client.get("/v1/chat/completions")
        health = await gw.client.get("/healthz")
        ready = await gw.client.get("/readyz")
    assert missing.status_code == 404 and error_of(missing)["code"] == "not_found"
    assert wrong.status_code == 405 and error_of(wrong)["code"] == "method_not_allowed"
    assert health.json() == {"status": "ok"}
    assert ready.json()["status"] == "ready"


async def test_metadata_stays_in_keel_and_user_goes_upstream(tmp_path: Path) -> None:
    from keel.pipeline import RequestContext
    from keel.pipeline.stages import Parse

    class Recording:
        def __init__(self) -> None:
            self.bodies: list[dict[str, Any]] = []

        async def send(self, call: Any) -> dict[str, Any]:
            self.bodies.append(call.body)
            return {"choices": [], "usage": {}}

        def stream(self, call: Any) -> Any:
            raise AssertionError("not streamed")

        async def aclose(self) -> None:
            pass

    upstream = Recording()
    body = {"model": "fast", "messages": HELLO, "user": "u-42", "metadata": {"feature": "search"}}
    async with open_gateway(config(tmp_path), upstreams={"primary": upstream}) as gw:
        response = await gw.chat(body)
        bad = await gw.chat({**body, "metadata": {"feature": 3}})
    assert response.status_code == 200
    assert upstream.bodies == [{"model": "fast", "messages": HELLO, "user": "u-42"}]
    assert bad.status_code == 400
    assert error_of(bad)["param"] == "metadata.feature"

    ctx = RequestContext("r", "chat", orjson.dumps(body), None)
    await Parse()(ctx)
    assert ctx.end_user == "u-42"
    assert ctx.metadata == {"feature": "search"}


async def test_a_bug_in_keel_is_a_500_in_the_openai_shape(tmp_path: Path) -> None:
    class Broken:
        async def send(self, call: Any) -> dict[str, Any]:
            raise RuntimeError("boom")

        def stream(self, call: Any) -> Any:
            raise RuntimeError("boom")

        async def aclose(self) -> None:
            pass

    async with open_gateway(config(tmp_path), upstreams={"primary": Broken()}) as gw:
        response = await gw.chat({"model": "fast", "messages": HELLO})
    assert response.status_code == 500
    assert error_of(response)["code"] == "keel_internal_error"
    assert "boom" not in response.text


async def test_a_broken_store_is_a_503_that_names_no_database(tmp_path: Path) -> None:
    import sqlalchemy as sa

    from keel.errors import StoreError
    from keel.store import make_engine

    cfg = config(tmp_path)
    async with open_gateway(cfg) as gw:
        engine = make_engine(cfg.database_url)
        with engine.begin() as connection:
            connection.execute(sa.text("DROP TABLE api_keys"))
        engine.dispose()
        response = await gw.client.post(
            "/v1/chat/completions",
            json={"model": "fast", "messages": HELLO},
            headers={"authorization": "Bearer sk-keel-" + "x" * 43},
        )
    assert response.status_code == 503
    error = error_of(response)
    assert error["code"] == "store_unavailable"
    assert error["message"] == StoreError.CLIENT_MESSAGE
    assert "keel.db" not in response.text and "api_keys" not in response.text
