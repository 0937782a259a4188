"""The app factory: builds all state in the lifespan and passes it explicitly."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from sqlalchemy import text
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

from keel.api._asgi import RequestHeaders
from keel.api.admin import admin_routes
from keel.api.admin_experiments import admin_experiment_routes
from keel.api.admin_prompts import admin_prompt_routes
from keel.api.data_plane import DataPlaneEndpoint
from keel.api.errors import error_response, internal_error
from keel.api.prompts import get_prompt
from keel.api.records import feedback, get_trace, list_traces
from keel.api.state import AppState, app_state, caller, state_of
from keel.config import KeelConfig
from keel.errors import KeelError, MethodNotAllowed, NotFound
from keel.providers import Upstream
from keel.routing import Router

log = logging.getLogger("keel.api")


def create_app(
    config: KeelConfig,
    *,
    upstreams: dict[str, Upstream] | None = None,
    router: Router | None = None,
) -> KeelApp:
    """Build the gateway. ``upstreams``/``router`` let tests inject their own.

    The database must already be migrated (``keel serve`` does it once before
    starting workers, so N workers never race on migrations).
    """

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[dict[str, AppState]]:
        async with app_state(config, upstreams=upstreams, router=router) as state:
            yield {"keel": state}

    data_plane = {
        "/v1/chat/completions": DataPlaneEndpoint("chat"),
        "/v1/embeddings": DataPlaneEndpoint("embeddings"),
    }
    control = Starlette(
        routes=[
            *(Route(path, endpoint, methods=["POST"]) for path, endpoint in data_plane.items()),
            Route("/v1/models", list_models, methods=["GET"]),
            Route("/v1/feedback", feedback, methods=["POST"]),
            Route("/v1/traces", list_traces, methods=["GET"]),
            Route("/v1/traces/{request_id}", get_trace, methods=["GET"]),
            Route("/v1/prompts/{name}", get_prompt, methods=["GET"]),
            Route("/healthz", healthz, methods=["GET"]),
            Route("/metrics", metrics, methods=["GET"]),
            Route("/readyz", readyz, methods=["GET"]),
            *admin_routes(),
            *admin_prompt_routes(),
            *admin_experiment_routes(),
        ],
        exception_handlers={
            HTTPException: http_exception,
            KeelError: keel_error,
            Exception: unexpected_error,
        },
        lifespan=lifespan,
    )
    return KeelApp(control, data_plane)


class KeelApp:
    """The ASGI entry point.

    The data-plane POSTs go straight to their endpoints; Starlette's router
    and middleware (about a tenth of the CPU of a proxied call) serve
    everything else, including lifespan and wrong-method answers.
    """

    def __init__(self, control: Starlette, data_plane: dict[str, DataPlaneEndpoint]) -> None:
        self.control = control
        self._data_plane = data_plane

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] == "POST":
            endpoint = self._data_plane.get(scope["path"])
            if endpoint is not None:
                await endpoint(scope, receive, send)
                return
        await self.control(scope, receive, send)


async def list_models(request: Request) -> Response:
    state, _ = await caller(request)
    data = [
        {"id": m.alias, "object": "model", "created": 0, "owned_by": "keel", "kind": m.kind}
        for m in state.config.models
    ]
    return JSONResponse({"object": "list", "data": data})


async def metrics(request: Request) -> Response:
    body, content_type = state_of(request).metrics.render()
    return Response(body, media_type=content_type)


async def healthz(request: Request) -> Response:
    return JSONResponse({"status": "ok"})


async def readyz(request: Request) -> Response:
    """Ready when the store answers; the gateway cannot authenticate without it."""
    state = state_of(request)

    def ping() -> None:
        with state.engine.connect() as connection:
            connection.execute(text("SELECT 1"))

    try:
        await asyncio.to_thread(ping)
    except Exception as exc:
        log.warning("readiness check failed: %s", type(exc).__name__)
        return JSONResponse({"status": "unavailable", "store": "unreachable"}, status_code=503)
    breakers = {name: b.state.value for name, b in state.router.breakers.items()}
    return JSONResponse({"status": "ready", "breakers": breakers})


def _error_response(request: Request, error: KeelError) -> Response:
    status, body, extra = error_response(error)
    headers = [(b"x-request-id", RequestHeaders.of(request.scope).request_id.encode()), *extra]
    response = Response(body, status_code=status, media_type="application/json")
    response.raw_headers.extend(headers)
    return response


async def keel_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, KeelError)
    return _error_response(request, exc)


async def http_exception(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    if exc.status_code == 405:
        error: KeelError = MethodNotAllowed(
            f"{request.method} is not allowed on {request.url.path}"
        )
    else:
        error = NotFound(f"no route for {request.method} {request.url.path}")
    return _error_response(request, error)


async def unexpected_error(request: Request, exc: Exception) -> Response:
    return _error_response(request, internal_error(request.url.path))
