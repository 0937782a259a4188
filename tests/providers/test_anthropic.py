"""The anthropic adapter against a fake Messages API server."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import aclosing
from typing import TYPE_CHECKING, Any

import pytest
from pydantic import SecretStr

from keel.config import AnthropicProvider
from keel.errors import (
    InvalidRequest,
    UpstreamAuthError,
    UpstreamProtocolError,
    UpstreamRateLimited,
    UpstreamRejected,
    UpstreamTimeout,
    UpstreamUnavailable,
)
from keel.providers import UpstreamCall
from keel.providers.anthropic import AnthropicUpstream

if TYPE_CHECKING:
    from .conftest import FakeUpstream

KEY = "sk-ant-test-secret"
MESSAGE = {
    "id": "msg_1",
    "type": "message",
    "role": "assistant",
    "model": "claude-x-2025",
    "content": [{"type": "text", "text": "Hello!"}],
    "stop_reason": "end_turn",
    "usage": {"input_tokens": 4, "output_tokens": 2, "cache_read_input_tokens": 3},
}


def chat(timeout: float = 5.0, idle: float = 5.0, **body: Any) -> UpstreamCall:
    body = {"model": "alias", "messages": [{"role": "user", "content": "hi"}], **body}
    return UpstreamCall("chat", "claude-x", body, timeout=timeout, idle_timeout=idle)


@pytest.fixture
async def upstream(fake: FakeUpstream) -> AsyncIterator[AnthropicUpstream]:
    config = AnthropicProvider(
        kind="anthropic", base_url=fake.url, api_key=SecretStr(KEY), default_max_tokens=333
    )
    adapter = AnthropicUpstream(config, name="claude")
    yield adapter
    await adapter.aclose()


def events(fake: FakeUpstream, *payloads: dict[str, Any]) -> list[bytes]:
    return [fake.sse(p, event=p["type"]) for p in payloads]


START = {
    "type": "message_start",
    "message": {
        "id": "msg_1",
        "model": "claude-x-2025",
        "usage": {"input_tokens": 7, "output_tokens": 1},
    },
}
TEXT_START = {"type": "content_block_start", "index": 0,
              "content_block": {"type": "text", "text": ""}}  # fmt: skip


def text(value: str) -> dict[str, Any]:
    return {
        "type": "content_block_delta",
        "index": 0,
        "delta": {"type": "text_delta", "text": value},
    }


END: list[dict[str, Any]] = [
    {"type": "content_block_stop", "index": 0},
    {"type": "message_delta", "delta": {"stop_reason": "end_turn"}, "usage": {"output_tokens": 3}},
    {"type": "message_stop"},
]


async def collect(adapter: AnthropicUpstream, call: UpstreamCall) -> list[dict[str, Any]]:
    chunks = []
    async with aclosing(adapter.stream(call)) as stream:
        async for item in stream:
            chunks.append(item)
    return chunks


async def test_send_translates_both_ways(fake: FakeUpstream, upstream: AnthropicUpstream) -> None:
    fake.reply_json(MESSAGE)
    call = chat(messages=[{"role": "system", "content": "S"}, {"role": "user", "content": "hi"}])

    result = await upstream.send(call)

    assert fake.last.path == "/v1/messages"
    assert fake.last.headers["x-api-key"] == KEY
    assert fake.last.headers["anthropic-version"] == "2023-06-01"
    assert "Authorization" not in fake.last.headers
    assert fake.last.body == {
        "model": "claude-x",
        "max_tokens": 333,
        "system": "S",
        "messages": [{"role": "user", "content": [{"type": "text", "text": "hi"}]}],
    }
    assert result["object"] == "chat.completion"
    assert result["choices"][0]["message"]["content"] == "Hello!"
    assert result["choices"][0]["finish_reason"] == "stop"
    assert result["usage"]["prompt_tokens"] == 7
    assert result["usage"]["prompt_tokens_details"]["cached_tokens"] == 3


async def test_unsupported_param_fails_before_any_request(
    fake: FakeUpstream, upstream: AnthropicUpstream
) -> None:
    with pytest.raises(InvalidRequest) as caught:
        await upstream.send(chat(n=3))
    assert caught.value.param == "n"
    assert fake.requests == []


async def test_embeddings_are_refused(fake: FakeUpstream, upstream: AnthropicUpstream) -> None:
    call = UpstreamCall("embeddings", "claude-x", {"input": "a"}, timeout=1)
    with pytest.raises(InvalidRequest, match="embeddings"):
        await upstream.send(call)
    assert fake.requests == []


@pytest.mark.parametrize(
    ("status", "error_type", "error"),
    [
        (400, "invalid_request_error", UpstreamRejected),
        (401, "authentication_error", UpstreamAuthError),
        (429, "rate_limit_error", UpstreamRateLimited),
        (500, "api_error", UpstreamUnavailable),
        (529, "overloaded_error", UpstreamUnavailable),
    ],
)
async def test_error_statuses(
    fake: FakeUpstream,
    upstream: AnthropicUpstream,
    status: int,
    error_type: str,
    error: type[Exception],
) -> None:
    body = {"type": "error", "error": {"type": error_type, "message": f"nope {KEY}"}}
    fake.reply_json(body, status=status, headers={"retry-after": "3"})
    with pytest.raises(error) as caught:
        await upstream.send(chat())
    assert caught.value.upstream_status == status  # type: ignore[attr-defined]
    assert KEY not in str(caught.value)
    if status == 429:
        assert caught.value.retry_after == 3.0  # type: ignore[attr-defined]


async def test_stream_translates_events(fake: FakeUpstream, upstream: AnthropicUpstream) -> None:
    fake.reply_sse(
        [
            *events(fake, START, TEXT_START),
            b'event: ping\r\ndata: {"type": "ping"}\r\n\r\n',
            *events(fake, text("Hel"), text("lo"), *END),
        ]
    )
    chunks = await collect(upstream, chat())

    assert fake.last.body["stream"] is True
    assert chunks[0]["choices"][0]["delta"]["role"] == "assistant"
    content = "".join(c["choices"][0]["delta"].get("content", "") for c in chunks if c["choices"])
    assert content == "Hello"
    assert chunks[-2]["choices"][0]["finish_reason"] == "stop"
    assert chunks[-1]["choices"] == []
    assert chunks[-1]["usage"]["prompt_tokens"] == 7
    assert chunks[-1]["usage"]["completion_tokens"] == 3


async def test_stream_error_event(fake: FakeUpstream, upstream: AnthropicUpstream) -> None:
    overloaded = {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}
    fake.reply_sse([*events(fake, START, TEXT_START, text("a"), overloaded)])
    with pytest.raises(UpstreamUnavailable) as caught:
        await collect(upstream, chat())
    assert caught.value.upstream_status == 529


async def test_stream_cut_before_message_stop(
    fake: FakeUpstream, upstream: AnthropicUpstream
) -> None:
    fake.reply_sse(events(fake, START, TEXT_START, text("a")), then="cut")
    with pytest.raises(UpstreamProtocolError, match="before message_stop"):
        await collect(upstream, chat())


async def test_stream_idle_timeout(fake: FakeUpstream, upstream: AnthropicUpstream) -> None:
    fake.reply_sse(events(fake, START), then="hang")
    with pytest.raises(UpstreamTimeout):
        await collect(upstream, chat(idle=0.2))


async def test_stream_close_cancels_upstream(
    fake: FakeUpstream, upstream: AnthropicUpstream
) -> None:
    fake.reply_sse(events(fake, START, TEXT_START, text("a")), then="hang")
    stream = upstream.stream(chat())
    assert (await anext(stream))["choices"][0]["delta"]["role"] == "assistant"
    await stream.aclose()
    await asyncio.wait_for(fake.disconnected.wait(), timeout=5)


async def test_a_finished_stream_returns_its_connection_to_the_pool(
    fake: FakeUpstream, upstream: AnthropicUpstream
) -> None:
    # The end of the chunked body comes in its own write, after message_stop.
    fake.reply_sse(events(fake, START, TEXT_START, text("a"), *END), end_after=0.05)
    for _ in range(3):
        assert (await collect(upstream, chat()))[-1]["choices"] == []
    assert len({request.peer for request in fake.requests}) == 1
