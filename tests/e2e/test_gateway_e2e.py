"""A real `keel serve` and real `keel sim` processes, driven by the official SDKs."""

from __future__ import annotations

import concurrent.futures
import threading
from typing import Any

import anthropic
import httpx
import openai
import pytest

from e2e_support import Cluster

pytestmark = pytest.mark.e2e

FAST_SIM = {"kind": "simulator", "seed": 7}


def gateway_config(primary: str, backup: str, **routing: Any) -> dict[str, Any]:
    return {
        "providers": {
            "primary": {"kind": "openai_compat", "base_url": f"{primary}/v1"},
            "backup": {"kind": "openai_compat", "base_url": f"{backup}/v1"},
            "claude": {"kind": "anthropic", "base_url": backup, "api_key": "sim-key"},
        },
        "models": [
            {
                "alias": "fast",
                "deployments": [{"provider": "primary", "model": "sim-fast"}],
                "retries": 1,
                "timeout_s": 5,
                "fallbacks": ["backup"],
            },
            {"alias": "backup", "deployments": [{"provider": "backup", "model": "sim-backup"}]},
            {"alias": "claude", "deployments": [{"provider": "claude", "model": "sim-claude"}]},
            {
                "alias": "embed",
                "kind": "embeddings",
                "deployments": [{"provider": "primary", "model": "sim-embed"}],
            },
        ],
        "routing": {"backoff_base_s": 0.01, **routing},
    }


def client(cluster: Cluster, gateway_url: str, key: str) -> openai.OpenAI:
    sdk = openai.OpenAI(base_url=f"{gateway_url}/v1", api_key=key, max_retries=0, timeout=20)
    return cluster.closing(sdk)


def test_openai_sdk_end_to_end(cluster: Cluster) -> None:
    primary = cluster.sim("primary", **FAST_SIM)
    backup = cluster.sim("backup", **FAST_SIM)
    gateway, key = cluster.gateway(gateway_config(primary.url, backup.url))
    sdk = client(cluster, gateway.url, key)

    raw = sdk.chat.completions.with_raw_response.create(
        model="fast", messages=[{"role": "user", "content": "Say hello"}]
    )
    reply = raw.parse()
    assert reply.choices[0].message.content
    assert reply.usage is not None and reply.usage.completion_tokens > 0
    assert raw.headers["x-keel-model"] == "primary/sim-fast"
    assert raw.headers["x-request-id"]

    stream = sdk.chat.completions.create(
        model="fast",
        messages=[{"role": "user", "content": "Tell me a story"}],
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens > 0

    tool = {
        "type": "function",
        "function": {
            "name": "lookup",
            "parameters": {
                "type": "object",
                "properties": {"q": {"type": "string"}},
                "required": ["q"],
            },
        },
    }
    called = sdk.chat.completions.create(
        model="fast",
        messages=[{"role": "user", "content": "find x"}],
        tools=[tool],  # type: ignore[list-item]
    )
    tool_calls = called.choices[0].message.tool_calls
    assert tool_calls and tool_calls[0].function.name == "lookup"  # type: ignore[union-attr]

    vectors = sdk.embeddings.create(model="embed", input=["a cat", "a dog"])
    assert len(vectors.data) == 2 and len(vectors.data[0].embedding) > 0

    assert {m.id for m in sdk.models.list()} == {"fast", "backup", "claude", "embed"}

    with pytest.raises(openai.NotFoundError):
        sdk.chat.completions.create(model="nope", messages=[{"role": "user", "content": "x"}])
    with pytest.raises(openai.AuthenticationError):
        client(cluster, gateway.url, "sk-keel-invalid").models.list()


def test_anthropic_provider_through_the_gateway(cluster: Cluster) -> None:
    primary = cluster.sim("primary", **FAST_SIM)
    gateway, key = cluster.gateway(gateway_config(primary.url, primary.url))
    sdk = client(cluster, gateway.url, key)

    reply = sdk.chat.completions.create(
        model="claude",
        messages=[{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hello"}],
        max_tokens=50,
    )
    assert reply.choices[0].message.content
    assert reply.usage is not None and reply.usage.prompt_tokens > 0

    chunks = list(
        sdk.chat.completions.create(
            model="claude",
            messages=[{"role": "user", "content": "Hello"}],
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert chunks[-1].usage is not None


def test_the_sims_anthropic_api_with_the_anthropic_sdk(cluster: Cluster) -> None:
    sim = cluster.sim("claude", **FAST_SIM)
    sdk = cluster.closing(anthropic.Anthropic(base_url=sim.url, api_key="sim-key", max_retries=0))
    message = sdk.messages.create(
        model="sim-claude", max_tokens=64, messages=[{"role": "user", "content": "Hi"}]
    )
    assert message.content[0].type == "text"
    with sdk.messages.stream(
        model="sim-claude", max_tokens=64, messages=[{"role": "user", "content": "Hi"}]
    ) as stream:
        assert "".join(stream.text_stream)


def test_killing_the_primary_loses_no_request_and_the_breaker_recovers(
    cluster: Cluster,
) -> None:
    slowish = {**FAST_SIM, "latency": {"p50_ms": 5}}
    primary = cluster.sim("primary", **slowish)
    backup = cluster.sim("backup", **slowish)
    gateway, key = cluster.gateway(
        gateway_config(
            primary.url,
            backup.url,
            breaker={"min_requests": 3, "failure_rate": 0.5, "cooldown_s": 1, "window_s": 10},
        )
    )
    sdk = client(cluster, gateway.url, key)
    killed = threading.Event()
    results: list[tuple[int, str, int]] = []
    lock = threading.Lock()

    def one(i: int) -> None:
        if i == 40:
            primary.kill()
            killed.set()
        raw = sdk.chat.completions.with_raw_response.create(
            model="fast", messages=[{"role": "user", "content": f"request {i}"}]
        )
        assert raw.parse().choices[0].message.content
        with lock:
            results.append((i, raw.headers["x-keel-model"], int(raw.headers["x-keel-attempts"])))

    with concurrent.futures.ThreadPoolExecutor(max_workers=4) as pool:
        for future in [pool.submit(one, i) for i in range(120)]:
            future.result()  # every request got an answer

    assert len(results) == 120
    after = sorted(r for r in results if r[0] > 60)
    assert all(model == "backup/sim-backup" for _, model, _ in after)
    # Once the breaker is open the primary is skipped: one attempt, straight to the backup.
    assert any(attempts == 1 for _, _, attempts in after)
    ready = httpx.get(f"{gateway.url}/readyz").json()
    assert ready["breakers"]["primary/sim-fast"] in ("open", "half_open")

    # Bring the primary back on its port: after the cooldown one probe closes the breaker.
    cluster.restart(primary)
    for i in range(400):  # bounded: each request is a real round trip
        raw = sdk.chat.completions.with_raw_response.create(
            model="fast", messages=[{"role": "user", "content": f"probe {i}"}]
        )
        if raw.headers["x-keel-model"] == "primary/sim-fast":
            break
    else:
        pytest.fail("the primary never came back")
    ready = httpx.get(f"{gateway.url}/readyz").json()
    assert ready["breakers"]["primary/sim-fast"] == "closed"


def test_a_stream_cut_mid_answer_ends_with_an_error_not_done(cluster: Cluster) -> None:
    slow = {**FAST_SIM, "tokens_per_second": 20, "default_answer": " ".join(["tok"] * 400)}
    primary = cluster.sim("primary", **slow)
    gateway, key = cluster.gateway(gateway_config(primary.url, primary.url))
    sdk = client(cluster, gateway.url, key)
    stream = sdk.chat.completions.create(
        model="fast", messages=[{"role": "user", "content": "long answer"}], stream=True
    )
    received = []
    with pytest.raises(openai.APIError) as caught:
        for chunk in stream:
            received.append(chunk)
            if len(received) == 3:
                primary.kill()
    assert len(received) >= 3
    assert caught.value.code == "stream_interrupted"


def test_client_disconnect_cancels_the_upstream_call(cluster: Cluster) -> None:
    slow = {**FAST_SIM, "latency": {"p50_ms": 20_000}}
    primary = cluster.sim("primary", **slow)
    gateway, key = cluster.gateway(gateway_config(primary.url, primary.url))
    with pytest.raises(httpx.ReadTimeout):
        httpx.post(
            f"{gateway.url}/v1/chat/completions",
            json={"model": "fast", "messages": [{"role": "user", "content": "hi"}]},
            headers={"authorization": f"Bearer {key}"},
            timeout=httpx.Timeout(5, read=0.5),
        )
    for _ in range(100):  # bounded: the sim counts the cancellation when the gateway hangs up
        stats = httpx.get(f"{primary.url}/_sim/stats").json()
        if stats["cancelled"] >= 1:
            break
        threading.Event().wait(0.05)
    assert stats["cancelled"] == 1
    assert stats["completed"] == 0
