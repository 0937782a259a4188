"""POST /v1/chat/completions and /v1/embeddings as plain ASGI endpoints.

These bypass Starlette's Request/Response objects: the hot path reads the
body once, runs the pipeline under a disconnect watch, and writes bytes.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING

import orjson
from starlette.types import Receive, Scope, Send

from keel.api._asgi import (
    ClientGone,
    DisconnectWatch,
    RequestHeaders,
    read_body,
    send_error,
    send_json,
)
from keel.api.errors import internal_error
from keel.errors import KeelError, ProviderError, StreamInterrupted
from keel.pipeline import RequestContext
from keel.providers.base import Json, Operation
from keel.tokens import tokens_for_chars

if TYPE_CHECKING:
    from keel.api.app import AppState

log = logging.getLogger("keel.api")

_SSE_HEADERS = [
    (b"content-type", b"text/event-stream; charset=utf-8"),
    (b"cache-control", b"no-cache"),
    (b"x-accel-buffering", b"no"),
]
_DONE = b"data: [DONE]\n\n"


class DataPlaneEndpoint:
    def __init__(self, operation: Operation) -> None:
        self.operation = operation

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        state: AppState = scope["state"]["keel"]
        request = RequestHeaders.of(scope)
        headers = [(b"x-request-id", request.request_id.encode())]
        try:
            raw = await read_body(
                receive, state.config.server.max_body_bytes, request.content_length
            )
        except ClientGone:
            return
        except KeelError as error:
            await send_error(send, error, headers)
            return
        ctx = RequestContext(
            request_id=request.request_id,
            operation=self.operation,
            raw_body=raw,
            authorization=request.authorization,
        )
        watch = DisconnectWatch(receive)
        try:
            await state.pipeline.run(ctx)
        except asyncio.CancelledError:
            watch.stop()
            if not watch.fired:
                raise
            watch.absorb()
            log.info(
                "client disconnected; upstream call cancelled", extra={"request_id": ctx.request_id}
            )
            return
        except KeelError as error:
            watch.stop()
            await send_error(send, error, [*headers, *_route_headers(ctx)])
            return
        except Exception:
            watch.stop()
            await send_error(send, internal_error(scope["path"]), headers)
            return
        if ctx.opened is not None:
            await _stream(ctx, watch, send, headers)
            return
        watch.stop()
        assert ctx.route is not None
        ctx.usage = _usage(ctx.route.response)
        await send_json(
            send, 200, orjson.dumps(ctx.route.response), [*headers, *_route_headers(ctx)]
        )


async def _stream(
    ctx: RequestContext, watch: DisconnectWatch, send: Send, headers: list[tuple[bytes, bytes]]
) -> None:
    """Proxy chunk by chunk; a break after content is reported in-band, never as [DONE]."""
    opened = ctx.opened
    assert opened is not None
    tail = _DONE
    try:
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [*_SSE_HEADERS, *headers, *_route_headers(ctx)],
            }
        )
        async for chunk in opened.chunks():
            if not _forward(ctx, chunk):
                continue
            await send(
                {
                    "type": "http.response.body",
                    "body": b"data: " + orjson.dumps(chunk) + b"\n\n",
                    "more_body": True,
                }
            )
    except asyncio.CancelledError:
        if not watch.fired:
            raise
        watch.absorb()
        return
    except ProviderError as error:
        log.warning("stream interrupted", extra={"request_id": ctx.request_id})
        tail = b"data: " + orjson.dumps(_interrupted(ctx, error).body()) + b"\n\n"
    except Exception:
        tail = b"data: " + orjson.dumps(internal_error("stream").body()) + b"\n\n"
    finally:
        watch.stop()
        await opened.aclose()
    await send({"type": "http.response.body", "body": tail, "more_body": False})


def _forward(ctx: RequestContext, chunk: Json) -> bool:
    """Note usage and time to first token; False for a chunk the client did not ask for."""
    usage = chunk.get("usage")
    if isinstance(usage, dict):
        ctx.usage = usage
    choices = chunk.get("choices")
    if choices:
        if ctx.ttft_ms is None:
            ctx.ttft_ms = ctx.elapsed_ms()
        ctx.streamed_chars += _content_chars(choices)
    if not ctx.include_usage and "usage" in chunk:
        # Keel always asks upstreams for usage; clients that did not see none of it.
        if not choices:
            return False
        del chunk["usage"]
    return True


def _interrupted(ctx: RequestContext, error: ProviderError) -> StreamInterrupted:
    if ctx.usage is None:
        # What was sent is owed: count it when the upstream never said.
        sent = tokens_for_chars(ctx.streamed_chars)
        ctx.usage = {"completion_tokens": sent, "estimated": True}
    return StreamInterrupted(
        f"the upstream stream broke after the answer had started: {error.message}"
    )


def _content_chars(choices: object) -> int:
    total = 0
    if isinstance(choices, list):
        for choice in choices:
            delta = choice.get("delta") if isinstance(choice, dict) else None
            content = delta.get("content") if isinstance(delta, dict) else None
            if isinstance(content, str):
                total += len(content)
    return total


def _usage(response: Json) -> Json | None:
    usage = response.get("usage")
    return usage if isinstance(usage, dict) else None


def _route_headers(ctx: RequestContext) -> list[tuple[bytes, bytes]]:
    route = ctx.route
    if route is None:
        return []
    return [
        (b"x-keel-model", route.deployment.encode()),
        (b"x-keel-attempts", str(route.attempt_count).encode()),
    ]
