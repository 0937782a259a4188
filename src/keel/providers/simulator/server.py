"""The simulator as its own HTTP server, speaking the OpenAI and Anthropic APIs.

Served by uvicorn from ``keel sim``, or mounted in tests through
``httpx.ASGITransport``. Simulated work that waits (latency, time to first
token, token pacing, a hung "timeout") runs beside a watcher of the ASGI
``receive`` channel, so a client that disconnects cancels the work at once and
is counted in ``GET /_sim/stats`` as ``cancelled``.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable, Iterable, Iterator
from typing import Any

import orjson
from pydantic import ValidationError
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

from keel.config import Outage, SimulatorProvider, format_validation
from keel.errors import InvalidRequest
from keel.providers.simulator import _anthropic, _openai
from keel.providers.simulator.engine import Completion, Failure, Json, Outcome, SimulatorEngine

# A failure render: the wire format's status and error body.
Render = Callable[[Failure], tuple[int, Json]]

DEFAULT_HANG_S = 300.0
_SSE_HEADERS = [(b"content-type", b"text/event-stream"), (b"cache-control", b"no-cache")]
_MODELS = ("sim", "sim-embedding")


def _json(status: int, payload: Any, headers: dict[str, str] | None = None) -> Response:
    return Response(orjson.dumps(payload), status, headers, media_type="application/json")


def _render_openai(failure: Failure) -> tuple[int, Json]:
    return failure.status, _openai.error_body(failure)


async def _until_disconnect(work: Awaitable[None], receive: Receive) -> None:
    """Run ``work``; cancel it if the client disconnects before it finishes."""

    async def disconnected() -> None:
        while (await receive())["type"] != "http.disconnect":
            pass

    task = asyncio.ensure_future(work)
    watcher = asyncio.ensure_future(disconnected())
    try:
        await asyncio.wait((task, watcher), return_when=asyncio.FIRST_COMPLETED)
    finally:
        watcher.cancel()
        if not task.done():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
    if not task.cancelled():
        task.result()  # re-raise a bug in the work instead of hiding it


class _Simulated(Response):
    """A response produced by simulated work that may be cancelled by a disconnect."""

    def __init__(self, work: Callable[[Send], Awaitable[None]], *, waits: bool) -> None:
        self._work = work
        self._waits = waits

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self._waits:
            await _until_disconnect(self._work(send), receive)
        else:
            # Nothing to wait for: skip the watcher task, the fast path for benchmarks.
            await self._work(send)


class _Handlers:
    def __init__(self, engine: SimulatorEngine, hang_s: float) -> None:
        self.engine = engine
        self.stats = engine.stats
        self.hang_s = hang_s

    # --- delivery ------------------------------------------------------------

    def _deliver(
        self, delay: float, status: int, payload: Json, headers: dict[str, str], outcome: Outcome
    ) -> Response:
        content = orjson.dumps(payload)
        raw_headers = [(b"content-type", b"application/json")]
        raw_headers += [(k.encode(), v.encode()) for k, v in headers.items()]

        async def work(send: Send) -> None:
            try:
                if delay > 0:
                    await asyncio.sleep(delay)
                await send(
                    {"type": "http.response.start", "status": status, "headers": raw_headers}
                )
                await send({"type": "http.response.body", "body": content})
            except (asyncio.CancelledError, OSError):
                # OSError: servers on ASGI spec 2.4+ report a gone client from send().
                self.stats.end("cancelled")
                raise
            self.stats.end(outcome)

        return _Simulated(work, waits=delay > 0)

    def _stream(self, frames: Iterator[tuple[float, bytes]], tail: bytes, waits: bool) -> Response:
        async def work(send: Send) -> None:
            try:
                await send({"type": "http.response.start", "status": 200, "headers": _SSE_HEADERS})
                # Frames due at the same moment go out in one write: cheap when unpaced.
                buffer: list[bytes] = []
                for delay, data in frames:
                    if delay > 0:
                        if buffer:
                            body = b"".join(buffer)
                            await send(
                                {"type": "http.response.body", "body": body, "more_body": True}
                            )
                            buffer.clear()
                        await asyncio.sleep(delay)
                    buffer.append(data)
                buffer.append(tail)
                await send({"type": "http.response.body", "body": b"".join(buffer)})
            except (asyncio.CancelledError, OSError):
                # OSError: servers on ASGI spec 2.4+ report a gone client from send().
                self.stats.end("cancelled")
                raise
            self.stats.end("completed")

        return _Simulated(work, waits=waits)

    def _fail(self, failure: Failure, render: Render) -> Response:
        status, body = render(failure)
        # A simulated timeout hangs like a stuck server until the client gives up.
        delay = self.hang_s if failure.kind == "timeout" else 0.0
        return self._deliver(delay, status, body, failure.headers(), "error")

    async def _parse(self, request: Request) -> tuple[Json, str]:
        try:
            body = orjson.loads(await request.body())
        except orjson.JSONDecodeError:
            raise InvalidRequest(
                "the request body is not valid JSON", code="invalid_json"
            ) from None
        if not isinstance(body, dict):
            raise InvalidRequest("the request body must be a JSON object")
        model = body.get("model")
        if not isinstance(model, str) or not model:
            raise InvalidRequest("'model' is required", param="model")
        return body, model

    # --- endpoints -----------------------------------------------------------

    async def chat_completions(self, request: Request) -> Response:
        return await self._chat(request, _openai.parse_chat, _render_openai, self._openai_answer)

    async def messages(self, request: Request) -> Response:
        return await self._chat(
            request, _anthropic.parse_messages, _anthropic.error, self._anthropic_answer
        )

    async def _chat(
        self,
        request: Request,
        parse: Callable[[Json], Any],
        render: Render,
        answer: Callable[[Completion, Json, str], Response],
    ) -> Response:
        self.stats.begin()
        try:
            body, model = await self._parse(request)
            plan = self.engine.plan_chat(parse(body))
        except ClientDisconnect:
            self.stats.end("cancelled")
            return Response(status_code=400)
        except InvalidRequest as error:
            return self._fail(Failure.invalid(error), render)
        if isinstance(plan, Failure):
            return self._fail(plan, render)
        return answer(plan, body, model)

    def _openai_answer(self, plan: Completion, body: Json, model: str) -> Response:
        if body.get("stream") is not True:
            return self._deliver(
                plan.latency_s, 200, _openai.completion_body(plan, model), {}, "completed"
            )
        options = body.get("stream_options")
        include_usage = isinstance(options, dict) and options.get("include_usage") is True
        frames = (
            (delay, b"data: " + orjson.dumps(chunk) + b"\n\n")
            for delay, chunk in _openai.chunks(plan, model, include_usage=include_usage)
        )
        return self._stream(frames, b"data: [DONE]\n\n", _waits(plan))

    def _anthropic_answer(self, plan: Completion, body: Json, model: str) -> Response:
        if body.get("stream") is not True:
            return self._deliver(
                plan.latency_s, 200, _anthropic.message_body(plan, model), {}, "completed"
            )
        frames = (
            (delay, b"event: " + name.encode() + b"\ndata: " + orjson.dumps(data) + b"\n\n")
            for delay, name, data in _anthropic.events(plan, model)
        )
        return self._stream(frames, b"", _waits(plan))

    async def embeddings(self, request: Request) -> Response:
        self.stats.begin()
        try:
            body, model = await self._parse(request)
            inputs = _openai.parse_embedding_input(body)
            plan = self.engine.plan_embeddings(inputs, _openai.dimensions(body))
        except ClientDisconnect:
            self.stats.end("cancelled")
            return Response(status_code=400)
        except InvalidRequest as error:
            return self._fail(Failure.invalid(error), _render_openai)
        if isinstance(plan, Failure):
            return self._fail(plan, _render_openai)
        base64 = body.get("encoding_format") == "base64"
        payload = _openai.embeddings_body(plan, model, base64=base64)
        return self._deliver(plan.latency_s, 200, payload, {}, "completed")

    async def models(self, request: Request) -> Response:
        data = [{"id": m, "object": "model", "created": 0, "owned_by": "keel-sim"} for m in _MODELS]
        return _json(200, {"object": "list", "data": data})

    async def healthz(self, request: Request) -> Response:
        return _json(200, {"status": "ok"})

    async def sim_stats(self, request: Request) -> Response:
        return _json(200, self.stats.as_dict())

    async def sim_outage(self, request: Request) -> Response:
        if request.method == "DELETE":
            self.engine.clear_outages()
            return _json(200, {"outage": None})
        try:
            body = orjson.loads(await request.body())
            if not isinstance(body, dict):
                raise ValueError("expected a JSON object")
            unknown = set(body) - {"duration_s", "status"}
            if unknown:
                raise ValueError(f"unknown keys: {', '.join(sorted(unknown))}")
            outage = Outage.model_validate({"start_s": 0, **body})
        except ValidationError as error:
            return _json(400, {"error": {"message": format_validation(error)}})
        except ValueError as error:  # includes orjson.JSONDecodeError
            return _json(400, {"error": {"message": str(error)}})
        self.engine.start_outage(outage.duration_s, outage.status)
        return _json(200, {"outage": {"duration_s": outage.duration_s, "status": outage.status}})


def _waits(plan: Completion) -> bool:
    return plan.ttft_s > 0 or (plan.token_gap_s > 0 and len(plan.pieces) > 1)


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    error = {"message": exc.detail, "type": "invalid_request_error", "code": None, "param": None}
    return _json(exc.status_code, {"error": error})


def create_sim_app(
    config: SimulatorProvider,
    *,
    hang_s: float = DEFAULT_HANG_S,
    clock: Callable[[], float] = time.monotonic,
) -> Starlette:
    """The simulator's ASGI app. ``hang_s`` bounds a simulated timeout's hang."""
    handlers = _Handlers(SimulatorEngine(config, clock=clock), hang_s)
    routes: Iterable[Route] = [
        Route("/v1/chat/completions", handlers.chat_completions, methods=["POST"]),
        Route("/v1/messages", handlers.messages, methods=["POST"]),
        Route("/v1/embeddings", handlers.embeddings, methods=["POST"]),
        Route("/v1/models", handlers.models, methods=["GET"]),
        Route("/healthz", handlers.healthz, methods=["GET"]),
        Route("/_sim/stats", handlers.sim_stats, methods=["GET"]),
        Route("/_sim/outage", handlers.sim_outage, methods=["POST", "DELETE"]),
    ]
    app = Starlette(routes=list(routes), exception_handlers={HTTPException: _http_error})
    app.state.engine = handlers.engine
    return app
