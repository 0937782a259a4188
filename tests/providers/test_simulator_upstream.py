"""SimulatorUpstream: the Upstream protocol in-process, errors as keel.errors, cancellation."""

from __future__ import annotations

import asyncio
import base64
import struct
from typing import Any

import pytest

from keel.config import SimulatorProvider
from keel.errors import (
    ContextWindowExceeded,
    UpstreamRateLimited,
    UpstreamRejected,
    UpstreamTimeout,
    UpstreamUnavailable,
)
from keel.providers.base import Upstream, UpstreamCall
from keel.providers.simulator import SimulatorUpstream


def upstream(**fields: Any) -> SimulatorUpstream:
    return SimulatorUpstream(SimulatorProvider.model_validate({"kind": "simulator", **fields}))


def chat(text: str = "hello", *, timeout: float = 5.0, **body: Any) -> UpstreamCall:
    messages = [{"role": "user", "content": text}]
    return UpstreamCall(
        "chat", "deployed-model", {"model": "alias", "messages": messages, **body}, timeout
    )


def test_it_satisfies_the_upstream_protocol() -> None:
    candidate: Upstream = upstream()
    assert candidate is not None


async def test_send_returns_a_chat_completion_for_the_deployment_model() -> None:
    sim = upstream(default_answer="Hi there.")
    body = await sim.send(chat())
    assert body["object"] == "chat.completion"
    assert body["model"] == "deployed-model"
    assert body["choices"][0]["message"] == {
        "role": "assistant",
        "content": "Hi there.",
        "refusal": None,
    }
    assert body["choices"][0]["finish_reason"] == "stop"
    assert body["usage"] == {"prompt_tokens": 1, "completion_tokens": 3, "total_tokens": 4}
    assert sim.stats.as_dict() == {
        "requests": 1,
        "completed": 1,
        "errors": 0,
        "cancelled": 0,
        "in_flight": 0,
    }
    await sim.aclose()


async def test_stream_yields_chunks_that_match_send_and_end_with_usage() -> None:
    sent = await upstream(seed=5).send(chat("tell me a story"))
    chunks = [c async for c in upstream(seed=5).stream(chat("tell me a story"))]
    assert {c["object"] for c in chunks} == {"chat.completion.chunk"}
    text = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c["choices"])
    assert text == sent["choices"][0]["message"]["content"]
    assert chunks[-2]["choices"][0]["finish_reason"] == "stop"
    assert chunks[-1]["choices"] == []
    assert chunks[-1]["usage"] == sent["usage"]


async def test_tool_calls_stream_like_openai() -> None:
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
    chunks = [c async for c in upstream().stream(chat("find cats", tools=[tool]))]
    first = chunks[0]["choices"][0]["delta"]["tool_calls"][0]
    assert (first["index"], first["type"], first["function"]) == (
        0,
        "function",
        {"name": "lookup", "arguments": ""},
    )
    arguments = "".join(
        c["choices"][0]["delta"]["tool_calls"][0]["function"]["arguments"]
        for c in chunks[1:]
        if c["choices"] and "tool_calls" in c["choices"][0]["delta"]
    )
    assert arguments == '{"q":"find cats"}'
    assert chunks[-2]["choices"][0]["finish_reason"] == "tool_calls"


async def test_embeddings_as_floats_or_base64() -> None:
    sim = upstream(embedding_dimensions=8)
    call = UpstreamCall("embeddings", "emb", {"model": "e", "input": ["a", "b c"]}, 5.0)
    floats = await sim.send(call)
    assert [d["index"] for d in floats["data"]] == [0, 1]
    assert floats["usage"] == {"prompt_tokens": 3, "total_tokens": 3}
    packed = await sim.send(
        UpstreamCall("embeddings", "emb", {**call.body, "encoding_format": "base64"}, 5.0)
    )
    decoded = struct.unpack("<8f", base64.b64decode(packed["data"][0]["embedding"]))
    assert decoded == pytest.approx(floats["data"][0]["embedding"])


@pytest.mark.parametrize(
    ("fields", "error", "status"),
    [
        ({"rate_limit_rate": 1.0, "retry_after_s": 3}, UpstreamRateLimited, 429),
        ({"error_rate": 1.0}, UpstreamUnavailable, 500),
        ({"outages": [{"start_s": 0, "duration_s": 60, "status": 503}]}, UpstreamUnavailable, 503),
        ({"context_window": 5}, ContextWindowExceeded, 400),
    ],
)
async def test_failures_raise_keel_errors(
    fields: dict[str, Any], error: type[Exception], status: int
) -> None:
    sim = upstream(**fields)
    with pytest.raises(error) as raised:
        await sim.send(chat("one two three four five six"))
    assert getattr(raised.value, "upstream_status", None) == status
    if status == 429:
        assert getattr(raised.value, "retry_after", None) == 3
    with pytest.raises(error):
        await anext(aiter(sim.stream(chat("one two three four five six"))))
    assert (sim.stats.errors, sim.stats.in_flight) == (2, 0)


async def test_bad_bodies_are_rejected_like_an_upstream_400() -> None:
    sim = upstream()
    with pytest.raises(UpstreamRejected) as raised:
        await sim.send(UpstreamCall("chat", "m", {"messages": "nope"}, 5.0))
    assert raised.value.upstream_status == 400
    with pytest.raises(UpstreamRejected):
        await anext(aiter(sim.stream(UpstreamCall("embeddings", "m", {"input": "x"}, 5.0))))


async def test_a_simulated_timeout_hangs_until_the_call_timeout() -> None:
    sim = upstream(timeout_rate=1.0)
    loop = asyncio.get_running_loop()
    started = loop.time()
    with pytest.raises(UpstreamTimeout):
        await sim.send(chat(timeout=0.05))
    assert loop.time() - started >= 0.05
    with pytest.raises(UpstreamTimeout):
        await anext(aiter(sim.stream(chat(timeout=0.05))))


async def test_latency_beyond_the_timeout_is_a_timeout() -> None:
    sim = upstream(latency={"p50_ms": 60_000}, ttft={"p50_ms": 60_000})
    with pytest.raises(UpstreamTimeout):
        await sim.send(chat(timeout=0.01))
    with pytest.raises(UpstreamTimeout):
        await anext(aiter(sim.stream(chat(timeout=0.01))))


async def test_cancelling_send_counts_as_cancelled() -> None:
    sim = upstream(latency={"p50_ms": 60_000})
    task = asyncio.create_task(sim.send(chat(timeout=120)))
    await asyncio.sleep(0)  # one loop turn: the call starts and parks in its latency
    assert sim.stats.in_flight == 1
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert sim.stats.as_dict() == {
        "requests": 1,
        "completed": 0,
        "errors": 0,
        "cancelled": 1,
        "in_flight": 0,
    }


async def test_closing_a_stream_early_counts_as_cancelled() -> None:
    sim = upstream(tokens_per_second=1, default_answer="many words in this answer")
    stream = sim.stream(chat(timeout=5))
    assert (await anext(aiter(stream)))["choices"][0]["delta"]["role"] == "assistant"
    await stream.aclose()  # an async generator underneath
    assert (sim.stats.cancelled, sim.stats.completed, sim.stats.in_flight) == (1, 0, 0)
