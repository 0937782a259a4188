"""The openai_compat adapter against a fake OpenAI server, and the provider registry."""

from __future__ import annotations

import asyncio
import sys
import types
from collections.abc import AsyncIterator
from contextlib import aclosing
from typing import TYPE_CHECKING, Any

import pytest
from pydantic import SecretStr

from keel.config import AnthropicProvider, OpenAICompatProvider, SimulatorProvider
from keel.errors import (
    ConfigError,
    ContextWindowExceeded,
    InvalidRequest,
    UpstreamAuthError,
    UpstreamConnectError,
    UpstreamNotFound,
    UpstreamProtocolError,
    UpstreamRateLimited,
    UpstreamRejected,
    UpstreamTimeout,
    UpstreamUnavailable,
)
from keel.providers import UpstreamCall, _http, build_upstream, register_provider
from keel.providers.anthropic import AnthropicUpstream
from keel.providers.openai_compat import OpenAICompatUpstream

if TYPE_CHECKING:
    from .conftest import FakeUpstream

KEY = "sk-test-0123456789abcdef"
COMPLETION = {
    "id": "chatcmpl-1",
    "object": "chat.completion",
    "created": 1,
    "model": "gpt-x-2025",
    "choices": [
        {"index": 0, "message": {"role": "assistant", "content": "hi"}, "finish_reason": "stop"}
    ],
    "usage": {"prompt_tokens": 3, "completion_tokens": 1, "total_tokens": 4},
}


def chunk(content: str | None = None, **extra: Any) -> dict[str, Any]:
    delta = {} if content is None else {"content": content}
    return {
        "id": "chatcmpl-1",
        "object": "chat.completion.chunk",
        "choices": [{"index": 0, "delta": delta, "finish_reason": None}],
        **extra,
    }


def chat(timeout: float = 5.0, idle: float = 5.0, **body: Any) -> UpstreamCall:
    body = {"model": "client-model", "messages": [{"role": "user", "content": "hi"}], **body}
    return UpstreamCall("chat", "gpt-x", body, timeout=timeout, idle_timeout=idle)


@pytest.fixture
async def upstream(fake: FakeUpstream) -> AsyncIterator[OpenAICompatUpstream]:
    config = OpenAICompatProvider(
        kind="openai_compat",
        base_url=fake.url + "/v1/",
        api_key=SecretStr(KEY),
        headers={"x-org": SecretStr("acme")},
    )
    adapter = OpenAICompatUpstream(config, name="oai")
    yield adapter
    await adapter.aclose()


async def collect(adapter: OpenAICompatUpstream, call: UpstreamCall) -> list[dict[str, Any]]:
    chunks = []
    async with aclosing(adapter.stream(call)) as stream:
        async for item in stream:
            chunks.append(item)
    return chunks


# --- send -------------------------------------------------------------------


async def test_send_posts_with_deployment_model_and_auth(
    fake: FakeUpstream, upstream: OpenAICompatUpstream
) -> None:
    fake.reply_json(COMPLETION)
    call = chat(stream=True, stream_options={"include_usage": False}, temperature=0.1)
    before = dict(call.body)

    result = await upstream.send(call)

    assert result == COMPLETION
    assert call.body == before  # the caller's body is never mutated
    assert fake.last.path == "/v1/chat/completions"
    assert fake.last.headers["Authorization"] == f"Bearer {KEY}"
    assert fake.last.headers["x-org"] == "acme"
    assert fake.last.headers["Content-Type"] == "application/json"
    assert fake.last.body["model"] == "gpt-x"
    assert fake.last.body["temperature"] == 0.1
    assert "stream" not in fake.last.body and "stream_options" not in fake.last.body


async def test_send_embeddings(fake: FakeUpstream, upstream: OpenAICompatUpstream) -> None:
    fake.reply_json({"object": "list", "data": [{"embedding": [0.1]}]})
    call = UpstreamCall("embeddings", "embed-x", {"model": "e", "input": "a"}, timeout=5)
    result = await upstream.send(call)
    assert result["data"][0]["embedding"] == [0.1]
    assert fake.last.path == "/v1/embeddings"
    assert fake.last.body == {"model": "embed-x", "input": "a"}


async def test_connection_pool_is_reused_across_calls(
    fake: FakeUpstream, upstream: OpenAICompatUpstream
) -> None:
    fake.reply_json(COMPLETION)
    await upstream.send(chat())
    session = upstream._http.session
    await upstream.send(chat())
    assert upstream._http.session is session


@pytest.mark.parametrize(
    ("status", "body", "headers", "error", "retry_after"),
    [
        (
            401,
            {"error": {"message": f"Incorrect API key provided: {KEY}"}},
            {},
            UpstreamAuthError,
            None,
        ),
        (403, {}, {}, UpstreamAuthError, None),
        (404, {"error": {"message": "no model gpt-x"}}, {}, UpstreamNotFound, None),
        (408, {}, {}, UpstreamTimeout, None),
        (429, {"error": {"message": "slow down"}}, {"retry-after": "7"}, UpstreamRateLimited, 7.0),
        (429, {}, {"retry-after-ms": "1500", "retry-after": "9"}, UpstreamRateLimited, 1.5),
        (500, {"error": {"message": "boom"}}, {}, UpstreamUnavailable, None),
        (503, b"<html>bad gateway</html>", {}, UpstreamUnavailable, None),
        (
            529,
            {"type": "error", "error": {"type": "overloaded_error"}},
            {},
            UpstreamUnavailable,
            None,
        ),
    ],
)
async def test_error_statuses(
    fake: FakeUpstream,
    upstream: OpenAICompatUpstream,
    status: int,
    body: Any,
    headers: dict[str, str],
    error: type[Exception],
    retry_after: float | None,
) -> None:
    fake.reply_json(body, status=status, headers=headers)
    with pytest.raises(error) as caught:
        await upstream.send(chat())
    assert caught.value.upstream_status == status  # type: ignore[attr-defined]
    assert caught.value.retry_after == retry_after  # type: ignore[attr-defined]
    assert KEY not in str(caught.value)


async def test_bad_request_passes_upstream_message_through(
    fake: FakeUpstream, upstream: OpenAICompatUpstream
) -> None:
    fake.reply_json(
        {"error": {"message": "temperature too high", "param": "temperature", "code": None}},
        status=422,
    )
    with pytest.raises(UpstreamRejected) as caught:
        await upstream.send(chat())
    assert type(caught.value) is UpstreamRejected
    assert caught.value.message == "temperature too high"
    assert caught.value.param == "temperature"
    assert caught.value.http_status == 422


async def test_context_length_is_recognised_by_code(
    fake: FakeUpstream, upstream: OpenAICompatUpstream
) -> None:
    fake.reply_json(
        {"error": {"message": "too long", "code": "context_length_exceeded", "param": "messages"}},
        status=400,
    )
    with pytest.raises(ContextWindowExceeded) as caught:
        await upstream.send(chat())
    assert caught.value.upstream_status == 400


async def test_malformed_json_is_a_protocol_error(
    fake: FakeUpstream, upstream: OpenAICompatUpstream
) -> None:
    async def handler(request: Any) -> Any:
        from aiohttp import web

        return web.Response(body=b"{not json", content_type="application/json")

    fake.handler = handler
    with pytest.raises(UpstreamProtocolError):
        await upstream.send(chat())


async def test_send_timeout(fake: FakeUpstream, upstream: OpenAICompatUpstream) -> None:
    fake.hang()
    with pytest.raises(UpstreamTimeout):
        await upstream.send(chat(timeout=0.2))


async def test_connection_refused(fake: FakeUpstream) -> None:
    config = OpenAICompatProvider(kind="openai_compat", base_url=fake.unused_url())
    adapter = OpenAICompatUpstream(config, name="down")
    try:
        with pytest.raises(UpstreamConnectError):
            await adapter.send(chat())
    finally:
        await adapter.aclose()


# --- stream -----------------------------------------------------------------


async def test_stream_yields_chunks_and_always_asks_for_usage(
    fake: FakeUpstream, upstream: OpenAICompatUpstream
) -> None:
    usage = {"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5}
    fake.reply_sse(
        [
            b": keep-alive comment\n\n",
            fake.sse(chunk("Hel")),
            fake.sse(chunk("lo")),
            fake.sse({**chunk(), "choices": [], "usage": usage}),
            b"data: [DONE]\n\n",
        ]
    )
    call = chat(stream_options={"include_usage": False, "other": 1})
    chunks = await collect(upstream, call)

    assert [c["choices"][0]["delta"]["content"] for c in chunks[:2]] == ["Hel", "lo"]
    assert chunks[-1]["usage"] == usage
    assert fake.last.body["stream"] is True
    assert fake.last.body["stream_options"] == {"include_usage": True, "other": 1}
    assert call.body["stream_options"] == {"include_usage": False, "other": 1}


async def test_stream_cut_before_done_is_an_error(
    fake: FakeUpstream, upstream: OpenAICompatUpstream
) -> None:
    fake.reply_sse([fake.sse(chunk("partial"))], then="cut")
    with pytest.raises(UpstreamProtocolError, match=r"before \[DONE\]"):
        await collect(upstream, chat())


async def test_stream_clean_http_end_without_done_is_an_error(
    fake: FakeUpstream, upstream: OpenAICompatUpstream
) -> None:
    fake.reply_sse([fake.sse(chunk("partial"))], then="end")
    with pytest.raises(UpstreamProtocolError, match=r"before \[DONE\]"):
        await collect(upstream, chat())


async def test_stream_idle_timeout(fake: FakeUpstream, upstream: OpenAICompatUpstream) -> None:
    fake.reply_sse([fake.sse(chunk("a"))], then="hang")
    received: list[dict[str, Any]] = []
    with pytest.raises(UpstreamTimeout, match="idle"):
        async with aclosing(upstream.stream(chat(idle=0.2))) as stream:
            async for item in stream:
                received.append(item)
    assert len(received) == 1


async def test_stream_first_event_timeout(
    fake: FakeUpstream, upstream: OpenAICompatUpstream
) -> None:
    fake.reply_sse([], then="hang")  # headers arrive, events never do
    with pytest.raises(UpstreamTimeout, match="first event"):
        await collect(upstream, chat(timeout=0.2, idle=10))


async def test_stream_error_status(fake: FakeUpstream, upstream: OpenAICompatUpstream) -> None:
    fake.reply_json({"error": {"message": "slow"}}, status=429, headers={"retry-after": "2"})
    with pytest.raises(UpstreamRateLimited) as caught:
        await collect(upstream, chat())
    assert caught.value.retry_after == 2.0


async def test_stream_error_event_is_translated(
    fake: FakeUpstream, upstream: OpenAICompatUpstream
) -> None:
    fake.reply_sse(
        [fake.sse(chunk("a")), fake.sse({"error": {"message": "melted", "type": "server_error"}})]
    )
    with pytest.raises(UpstreamUnavailable, match="melted"):
        await collect(upstream, chat())


async def test_closing_the_stream_cancels_the_upstream_request(
    fake: FakeUpstream, upstream: OpenAICompatUpstream
) -> None:
    fake.reply_sse([fake.sse(chunk("a"))], then="hang")
    stream = upstream.stream(chat())
    first = await anext(stream)
    assert first["choices"][0]["delta"]["content"] == "a"
    await stream.aclose()  # what the gateway does when its client disconnects
    await asyncio.wait_for(fake.disconnected.wait(), timeout=5)


async def test_cancelling_the_consumer_cancels_the_upstream_request(
    fake: FakeUpstream, upstream: OpenAICompatUpstream
) -> None:
    fake.reply_sse([fake.sse(chunk("a"))], then="hang")
    got_first = asyncio.Event()

    async def consume() -> None:
        async with aclosing(upstream.stream(chat())) as stream:
            async for _ in stream:
                got_first.set()

    task = asyncio.create_task(consume())
    await asyncio.wait_for(got_first.wait(), timeout=5)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await asyncio.wait_for(fake.disconnected.wait(), timeout=5)


@pytest.mark.parametrize(
    "data",
    [
        b'{"choices": [null]}',
        b'{"choices": {"0": {"delta": {}}}}',
        b'{"choices": [{"index": 0, "delta": "hi"}]}',
        b'{"choices": [], "usage": 12}',
        b"[1, 2]",
        b'"chunk"',
    ],
)
async def test_a_malformed_chunk_is_a_protocol_error(
    fake: FakeUpstream, upstream: OpenAICompatUpstream, data: bytes
) -> None:
    fake.reply_sse([fake.sse(chunk("a")), fake.sse(data), b"data: [DONE]\n\n"])
    with pytest.raises(UpstreamProtocolError):
        await collect(upstream, chat())


async def test_a_finished_stream_returns_its_connection_to_the_pool(
    fake: FakeUpstream, upstream: OpenAICompatUpstream
) -> None:
    # The end of the chunked body comes in its own write, after [DONE].
    fake.reply_sse([fake.sse(chunk("a")), b"data: [DONE]\n\n"], end_after=0.05)
    for _ in range(3):
        assert len(await collect(upstream, chat())) == 1
    assert len({request.peer for request in fake.requests}) == 1


async def test_a_server_lingering_after_done_costs_at_most_the_drain_bound(
    fake: FakeUpstream, upstream: OpenAICompatUpstream, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(_http, "DRAIN_S", 0.1)
    fake.reply_sse([fake.sse(chunk("a")), b"data: [DONE]\n\n"], then="hang")
    chunks = await asyncio.wait_for(collect(upstream, chat()), timeout=2)
    assert len(chunks) == 1
    await asyncio.wait_for(fake.disconnected.wait(), timeout=5)  # dropped, not pooled


async def test_cancelling_while_draining_drops_the_connection_at_once(
    fake: FakeUpstream, upstream: OpenAICompatUpstream, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(_http, "DRAIN_S", 60.0)
    fake.reply_sse([b"data: [DONE]\n\n"], then="hang")
    task = asyncio.create_task(collect(upstream, chat()))
    await asyncio.sleep(0.2)  # [DONE] has arrived; the adapter waits for the body's end
    assert not task.done()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(task, timeout=1)
    await asyncio.wait_for(fake.disconnected.wait(), timeout=5)


async def test_secret_header_values_are_redacted_from_upstream_errors(
    fake: FakeUpstream,
) -> None:
    token = "azure-token-9f8e7d6c"
    config = OpenAICompatProvider(
        kind="openai_compat",
        base_url=fake.url,
        api_key=SecretStr(KEY),
        headers={"api-key": SecretStr(token)},
    )
    adapter = OpenAICompatUpstream(config, name="azure")
    echo = f"bad headers: api-key={token} authorization=Bearer {KEY}"
    try:
        fake.reply_json({"error": {"message": echo}}, status=400)
        with pytest.raises(UpstreamRejected) as rejected:
            await adapter.send(chat())
        assert fake.last.headers["api-key"] == token  # sent as the plain value
        fake.reply_sse([fake.sse({"error": {"message": echo, "type": "server_error"}})])
        with pytest.raises(UpstreamUnavailable) as unavailable:
            await collect(adapter, chat())
    finally:
        await adapter.aclose()
    for error in (rejected.value, unavailable.value):
        assert token not in error.message and KEY not in error.message
        assert "api-key=***" in error.message


async def test_embeddings_cannot_stream(upstream: OpenAICompatUpstream) -> None:
    call = UpstreamCall("embeddings", "e", {"input": "a"}, timeout=1)
    with pytest.raises(InvalidRequest):
        await anext(upstream.stream(call))


# --- registry ---------------------------------------------------------------


async def test_build_upstream_dispatches_on_kind() -> None:
    oai = build_upstream("o", OpenAICompatProvider(kind="openai_compat", base_url="http://x"))
    ant = build_upstream("a", AnthropicProvider(kind="anthropic"))
    assert isinstance(oai, OpenAICompatUpstream)
    assert isinstance(ant, AnthropicUpstream)
    await oai.aclose()
    await ant.aclose()


def test_simulator_is_imported_lazily(monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[tuple[Any, str]] = []

    class SimulatorUpstream:
        def __init__(self, config: Any, *, name: str) -> None:
            seen.append((config, name))

    module = types.ModuleType("keel.providers.simulator")
    module.SimulatorUpstream = SimulatorUpstream  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "keel.providers.simulator", module)
    config = SimulatorProvider(kind="simulator")
    built = build_upstream("sim", config)
    assert isinstance(built, SimulatorUpstream)
    assert seen == [(config, "sim")]


def test_unknown_kind_and_duplicate_registration() -> None:
    bogus = OpenAICompatProvider.model_construct(kind="nope", base_url="http://x")
    with pytest.raises(ConfigError, match="unknown provider kind"):
        build_upstream("x", bogus)
    with pytest.raises(ValueError, match="already registered"):
        register_provider("anthropic")(lambda name, config: build_upstream(name, config))
