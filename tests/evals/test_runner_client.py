"""Gateway clients: retries on transient failures only, headers read, in-process."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import pytest

from keel.config import parse_config
from keel.evals.client import CallError, HttpGatewayClient, InProcessGatewayClient
from keel.store import KeyStore, make_engine

OK_BODY = {
    "choices": [{"message": {"role": "assistant", "content": "hello"}}],
    "usage": {"prompt_tokens": 7, "completion_tokens": 3},
}
HEADERS = {"x-keel-cost-usd": "0.000123", "x-request-id": "req-1", "x-keel-prompt-version": "2.0.0"}


def client_on(responses: list[Any], **kwargs: Any) -> tuple[HttpGatewayClient, list[httpx.Request]]:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        item = responses.pop(0)
        if isinstance(item, Exception):
            raise item
        return item

    client = HttpGatewayClient(
        "http://gw", "sk-test", transport=httpx.MockTransport(handler), backoff_s=0.001, **kwargs
    )
    return client, seen


def error(status: int, code: str = "x") -> httpx.Response:
    return httpx.Response(status, json={"error": {"message": "nope", "code": code}})


async def test_reads_the_answer_and_keel_headers() -> None:
    client, seen = client_on([httpx.Response(200, json=OK_BODY, headers=HEADERS)])
    async with client:
        result = await client.chat({"prompt": {"name": "p", "version": "2.0.0"}, "messages": []})
    assert result.text == "hello"
    assert (result.input_tokens, result.output_tokens) == (7, 3)
    assert result.cost_usd == pytest.approx(0.000123)
    assert result.request_id == "req-1" and result.prompt_version == "2.0.0"
    assert seen[0].headers["authorization"] == "Bearer sk-test"
    assert seen[0].url.path == "/v1/chat/completions"


async def test_unknown_cost_is_none_never_zero() -> None:
    client, _ = client_on(
        [httpx.Response(200, json=OK_BODY, headers={"x-keel-cost-usd": "unknown"})]
    )
    async with client:
        assert (await client.chat({})).cost_usd is None


@pytest.mark.parametrize("first", [error(429), error(503), httpx.ConnectError("refused")])
async def test_transient_failures_are_retried(first: Any) -> None:
    client, seen = client_on([first, error(502), httpx.Response(200, json=OK_BODY)], retries=2)
    async with client:
        assert (await client.chat({})).text == "hello"
    assert len(seen) == 3


async def test_gives_up_after_the_retries() -> None:
    client, seen = client_on([error(503)] * 3, retries=2)
    async with client:
        with pytest.raises(CallError, match=r"503 x: nope \(after 3 attempts\)"):
            await client.chat({})
    assert len(seen) == 3


async def test_a_caller_error_is_not_retried() -> None:
    client, seen = client_on([error(422, "prompt_variables_invalid")], retries=2)
    async with client:
        with pytest.raises(CallError) as caught:
            await client.chat({})
    assert caught.value.status == 422 and caught.value.code == "prompt_variables_invalid"
    assert len(seen) == 1


async def test_embed_and_prompt_lookup() -> None:
    embeddings = {
        "data": [{"index": 1, "embedding": [0.0, 1.0]}, {"index": 0, "embedding": [1, 0]}]
    }
    served = {"name": "p", "version": "1.0.0", "content_hash": "sha256:ab", "label": "production"}
    client, seen = client_on(
        [httpx.Response(200, json=embeddings), httpx.Response(200, json=served), error(404)]
    )
    async with client:
        assert await client.embed("emb", ["a", "b"]) == [[1.0, 0.0], [0.0, 1.0]]
        found = await client.prompt("p", label="production")
        assert found is not None and found.version == "1.0.0"
        assert await client.prompt("p", label="staging") is None
    assert seen[0].url.path == "/v1/embeddings"
    assert seen[1].url.params["label"] == "production"


def sim_config(tmp_path: Path) -> Any:
    return parse_config(
        {
            "database_url": f"sqlite:///{tmp_path / 'keel.db'}",
            "providers": {
                "sim": {
                    "kind": "simulator",
                    "seed": 3,
                    "answers": [{"pattern": "capital", "answer": "Paris"}],
                }
            },
            "models": [
                {"alias": "fast", "deployments": [{"provider": "sim", "model": "m"}]},
                {
                    "alias": "emb",
                    "kind": "embeddings",
                    "deployments": [{"provider": "sim", "model": "e"}],
                },
            ],
            "prices": {"sim/m": {"input_per_mtok": 1.0, "output_per_mtok": 2.0}},
            "telemetry": {"log": {"destination": "off"}},
        }
    )


async def test_in_process_runs_the_real_gateway_and_revokes_its_key(tmp_path: Path) -> None:
    config = sim_config(tmp_path)
    async with InProcessGatewayClient(config) as client:
        result = await client.chat(
            {"model": "fast", "messages": [{"role": "user", "content": "capital of France?"}]}
        )
        vectors = await client.embed("emb", ["one", "two"])
        await client.check()
    assert result.text == "Paris"
    assert result.cost_usd is not None and result.cost_usd > 0
    assert result.request_id
    assert len(vectors) == 2
    engine = make_engine(config.database_url)
    try:
        keys = KeyStore(engine).list_keys(tenant="evals")
        assert keys and all(k.revoked_at is not None for k in keys)
    finally:
        engine.dispose()
