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

from keel.api._asgi import ClientGone, DisconnectWatch, read_body, request_id, send_error
from keel.errors import KeelError, ProviderError, StreamInterrupted
from keel.pipeline import RequestContext
from keel.providers.base import Json, Operation

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
        rid = request_id(scope)
        headers = [(b"x-request-id", rid.encode())]
        try:
            raw = await read_body(scope, receive, state.config.server.max_body_bytes)
        except ClientGone:
            return
        except KeelError as error:
            await send_error(send, error, headers)
            return
        ctx = RequestContext(
            request_id=rid,
            operation=self.operation,
            raw_body=raw,
            authorization=_authorization(scope),
        )
        watch = DisconnectWatch(receive)
        try:
            await state.pipeline.run(ctx)
        except asyncio.CancelledError:
            watch.stop()
            if not watch.fired:
                raise
            watch.absorb()
            log.info("client disconnected; upstream call cancelled", extra={"request_id": rid})
            return
        except KeelError as error:
            watch.stop()
            await send_error(send, error, [*headers, *_route_headers(ctx)])
            return
        except Exception:
            watch.stop()
            log.exception("unexpected error serving %s", scope["path"])
            await send_error(
                send, KeelError("internal error in Keel; see the gateway log"), headers
            )
            return
        if ctx.opened is not None:
            await _stream(ctx, watch, send, headers)
            return
        watch.stop()
        assert ctx.route is not None
        body = orjson.dumps(ctx.route.response)
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(body)).encode()),
                    *headers,
                    *_route_headers(ctx),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})


async def _stream(
    ctx: RequestContext, watch: DisconnectWatch, send: Send, headers: list[tuple[bytes, bytes]]
) -> None:
    """Proxy chunk by chunk; a break after content is reported in-band, never as [DONE]."""
    opened = ctx.opened
    assert opened is not None
    await send(
        {
            "type": "http.response.start",
            "status": 200,
            "headers": [*_SSE_HEADERS, *headers, *_route_headers(ctx)],
        }
    )
    tail = _DONE
    try:
        async for chunk in opened.chunks():
            if "usage" in chunk and not chunk.get("choices"):
                ctx.usage = chunk["usage"]
                if not ctx.include_usage:
                    continue
            else:
                if ctx.ttft_ms is None:
                    ctx.ttft_ms = ctx.elapsed_ms()
                ctx.streamed_chars += _content_chars(chunk)
            await send(
                {
                    "type": "http.response.body",
                    "body": b"data: " + orjson.dumps(chunk) + b"\n\n",
                    "more_body": True,
                }
            )
    except asyncio.CancelledError:
        watch.stop()
        await opened.aclose()
        if not watch.fired:
            raise
        watch.absorb()
        return
    except ProviderError as error:
        interrupted = StreamInterrupted(
            f"the upstream stream broke after the answer had started: {error.message}"
        )
        log.warning("stream interrupted", extra={"request_id": ctx.request_id})
        # What was sent is owed: count it when the upstream never said.
        if ctx.usage is None:
            sent = -(-ctx.streamed_chars // 4)
            ctx.usage = {"completion_tokens": sent, "estimated": True}
        tail = b"data: " + orjson.dumps(interrupted.body()) + b"\n\n"
    watch.stop()
    await opened.aclose()
    await send({"type": "http.response.body", "body": tail, "more_body": False})


def _content_chars(chunk: Json) -> int:
    total = 0
    for choice in chunk.get("choices") or ():
        content = (choice.get("delta") or {}).get("content")
        if content:
            total += len(content)
    return total


def _authorization(scope: Scope) -> str | None:
    for key, value in scope["headers"]:
        if key == b"authorization":
            return bytes(value).decode("latin-1")
    return None


def _route_headers(ctx: RequestContext) -> list[tuple[bytes, bytes]]:
    route = ctx.route
    if route is None:
        return []
    return [
        (b"x-keel-model", route.deployment.encode()),
        (b"x-keel-attempts", str(route.attempt_count).encode()),
    ]
