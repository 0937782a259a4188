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
from keel.errors import (
    CLIENT_CLOSED,
    ClientClosed,
    KeelError,
    ProviderError,
    StreamInterrupted,
    http_status,
)
from keel.pipeline import RequestContext
from keel.pipeline.emit import answer_text, usage_of
from keel.providers.base import Json, Operation
from keel.telemetry.context import new_span_id, parse_traceparent, traceparent
from keel.tokens import tokens_for_chars

if TYPE_CHECKING:
    from keel.api.state import AppState

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
        trace_id, parent = parse_traceparent(request.traceparent)
        ctx = RequestContext(
            request_id=request.request_id,
            operation=self.operation,
            raw_body=b"",
            authorization=request.authorization,
            trace_id=trace_id,
            parent_span_id=parent,
            span_id=new_span_id(),
        )
        headers = [
            (b"x-request-id", ctx.request_id.encode()),
            (b"traceparent", traceparent(trace_id, ctx.span_id).encode()),
        ]
        emit = state.emitter
        try:
            ctx.raw_body = await read_body(
                receive, state.config.server.max_body_bytes, request.content_length
            )
        except ClientGone:
            return
        except KeelError as error:
            await _fail(send, ctx, state, error, headers)
            return
        watch = DisconnectWatch(receive)
        try:
            await state.pipeline.run(ctx)
        except asyncio.CancelledError:
            watch.stop()
            if not watch.fired:
                raise
            watch.absorb()
            log.info("client disconnected; upstream call cancelled")
            await _finish(state, ctx, CLIENT_CLOSED, ClientClosed())
            return
        except KeelError as error:
            watch.stop()
            await _fail(send, ctx, state, error, [*headers, *_route_headers(ctx)])
            return
        except Exception:
            watch.stop()
            await _fail(send, ctx, state, internal_error(scope["path"]), headers)
            return
        ctx.capture = emit.captures(ctx.tenant)
        if ctx.opened is not None:
            await _stream(ctx, watch, send, headers, state)
            return
        watch.stop()
        assert ctx.route is not None
        cost_header = (b"x-keel-cost-usd", _format_cost(emit.price(ctx)))
        try:
            await send_json(
                send,
                200,
                orjson.dumps(ctx.route.response),
                [*headers, *_route_headers(ctx), cost_header],
            )
        finally:
            await _finish(state, ctx, 200, None)  # the upstream answered and was paid for anyway


async def _fail(
    send: Send,
    ctx: RequestContext,
    state: AppState,
    error: KeelError,
    headers: list[tuple[bytes, bytes]],
) -> None:
    try:
        await send_error(send, error, headers)
    finally:
        await _finish(state, ctx, http_status(error), error)


async def _finish(
    state: AppState, ctx: RequestContext, status: int, error: KeelError | None
) -> None:
    """Record the request, mirror it when an experiment picked it for shadowing, then
    give back what it held against its tenant's limits."""
    if ctx.judge is not None and error is None:
        state.online_judge.submit(ctx, status)  # recorded once its answer is rated
    else:
        state.emitter.finish(ctx, status, error)
    if ctx.mirror is not None and error is None:
        state.shadow.submit(ctx, answer_text(ctx))
    held, ctx.held = ctx.held, None
    if held is None:
        return
    state.emitter.price(ctx)
    try:
        await state.gatekeeper.settle(ctx, held, usage_of(ctx))
    except Exception as exc:  # the lease expires and is reclaimed; the client has its answer
        log.warning("settling limits for %s failed: %s", ctx.request_id, exc)


async def _stream(
    ctx: RequestContext,
    watch: DisconnectWatch,
    send: Send,
    headers: list[tuple[bytes, bytes]],
    state: AppState,
) -> None:
    """Proxy chunk by chunk; a break after content is reported in-band, never as [DONE]."""
    opened = ctx.opened
    assert opened is not None
    if ctx.capture or ctx.mirror is not None:  # the shadow comparison needs the answer
        ctx.streamed_text = []
    tail = _DONE
    failure: KeelError | None = None
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
        failure = ClientClosed()
    except ProviderError as error:
        log.warning("stream interrupted after content: %s", error.code)
        failure = _interrupted(ctx, error)
        tail = b"data: " + orjson.dumps(failure.body()) + b"\n\n"
    except Exception:
        failure = internal_error("stream")
        tail = b"data: " + orjson.dumps(failure.body()) + b"\n\n"
    finally:
        watch.stop()
        await opened.aclose()
    if not isinstance(failure, ClientClosed):
        await send({"type": "http.response.body", "body": tail, "more_body": False})
    status = CLIENT_CLOSED if isinstance(failure, ClientClosed) else 200
    await _finish(state, ctx, status, failure)


def _forward(ctx: RequestContext, chunk: Json) -> bool:
    """Note usage and time to first token; False for a chunk the client did not ask for."""
    usage = chunk.get("usage")
    if isinstance(usage, dict):
        ctx.usage = usage
    choices = chunk.get("choices")
    if choices:
        if ctx.ttft_ms is None:
            ctx.ttft_ms = ctx.elapsed_ms()
        _note_choices(ctx, choices)
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


def _note_choices(ctx: RequestContext, choices: object) -> None:
    """Count (and, when captured, keep) the text sent; note finish reasons."""
    if not isinstance(choices, list):
        return
    for choice in choices:
        if not isinstance(choice, dict):
            continue
        delta = choice.get("delta")
        content = delta.get("content") if isinstance(delta, dict) else None
        if isinstance(content, str):
            ctx.streamed_chars += len(content)
            if ctx.streamed_text is not None:
                ctx.streamed_text.append(content)
        reason = choice.get("finish_reason")
        if isinstance(reason, str):
            ctx.finish_reasons.append(reason)


def _format_cost(cost: float | None) -> bytes:
    """Plain decimal USD (never exponent notation), or "unknown" — never a silent 0."""
    if cost is None:
        return b"unknown"
    return (f"{cost:.10f}".rstrip("0").rstrip(".") or "0").encode()


def _route_headers(ctx: RequestContext) -> list[tuple[bytes, bytes]]:
    headers = []
    route = ctx.route
    if route is not None:
        headers += [
            (b"x-keel-model", route.deployment.encode()),
            (b"x-keel-attempts", str(route.attempt_count).encode()),
        ]
    if ctx.downgraded_from is not None:
        headers.append((b"x-keel-downgraded-from", ctx.downgraded_from.encode()))
    if ctx.assignment is not None:  # errors too: a variant that fails must be visible
        headers.append((b"x-keel-experiment", ctx.assignment.experiment.encode()))
        headers.append((b"x-keel-variant", ctx.assignment.variant.name.encode()))
    if ctx.prompt is not None:
        headers.append((b"x-keel-prompt", ctx.prompt.name.encode()))
        headers.append((b"x-keel-prompt-version", ctx.prompt.version.encode()))
    return headers
