"""Experiments over HTTP (``/admin/experiments``): start, read, pause, resume, advance, roll back.

Admin keys only, like the rest of ``/admin``. It goes through the same
``ExperimentStore`` as ``keel rollout``, so a start is validated the same way
(the experiment file model, pushed prompt versions, known aliases) and every
change is an audited event with the actor ``key:<key prefix>``. A rollback
made here is announced through the process's notifier, like the
controller's. Gateways apply a change within 5 seconds.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Annotated, Any

from pydantic import Field
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from keel.api.admin import _body, _json, _listing, _query_limit, _Strict, admin_caller
from keel.api.state import AppState
from keel.experiments.spec import Experiment
from keel.store import Applied, ExperimentStore

Reason = Annotated[str, Field(max_length=1000)]


class Steer(_Strict):
    reason: Reason | None = None


class RollbackBody(_Strict):
    reason: Annotated[str, Field(min_length=1, max_length=1000)]


def admin_experiment_routes() -> list[BaseRoute]:
    """The ``/admin/experiments`` routes, to add to the control-plane app."""
    return [
        Route("/admin/experiments", list_experiments, methods=["GET"]),
        Route("/admin/experiments", start_experiment, methods=["POST"]),
        Route("/admin/experiments/{name}", get_experiment, methods=["GET"]),
        Route("/admin/experiments/{name}/events", list_events, methods=["GET"]),
        Route("/admin/experiments/{name}/pause", pause, methods=["POST"]),
        Route("/admin/experiments/{name}/resume", resume, methods=["POST"]),
        Route("/admin/experiments/{name}/advance", advance, methods=["POST"]),
        Route("/admin/experiments/{name}/rollback", rollback, methods=["POST"]),
    ]


def _store(state: AppState) -> ExperimentStore:
    return ExperimentStore(state.engine, aliases=[model.alias for model in state.config.models])


def _applied(applied: Applied) -> Response:
    event = applied.event
    return _json({**applied.record.as_dict(), "event": None if event is None else event.as_dict()})


async def list_experiments(request: Request) -> Response:
    """Every experiment (``?status=running`` for one status), by name."""
    state, _ = await admin_caller(request)
    store = _store(state)
    status = request.query_params.get("status")
    records = await asyncio.to_thread(store.list)
    return _listing([r.as_dict() for r in records if status is None or r.status == status])


async def start_experiment(request: Request) -> Response:
    """Start the experiment whose file (as JSON) is the body."""
    state, actor = await admin_caller(request)
    spec = await _body(request, Experiment)
    record = await asyncio.to_thread(_store(state).start, spec, actor)
    return _json(record.as_dict(), status=201)


async def get_experiment(request: Request) -> Response:
    """The experiment's state, this step's per-variant metrics and its latest events."""
    state, _ = await admin_caller(request)
    name = request.path_params["name"]
    limit = _query_limit(request) if "limit" in request.query_params else 20

    def read() -> dict[str, Any]:
        from keel.experiments.metrics_query import variant_metrics
        from keel.experiments.report import summarize

        store = _store(state)
        record = store.get(name)
        metrics = variant_metrics(state.engine, name, record.step_started_at, spec=record.spec)
        return {
            **record.as_dict(),
            "metrics": {variant: summarize(m) for variant, m in metrics.items()},
            "events": [e.as_dict() for e in store.events(name, limit=limit)],
        }

    return _json(await asyncio.to_thread(read))


async def list_events(request: Request) -> Response:
    state, _ = await admin_caller(request)
    store = _store(state)
    name = request.path_params["name"]

    def read() -> list[Mapping[str, Any]]:
        store.get(name)  # NotFound for an unknown experiment, not an empty list
        return [e.as_dict() for e in store.events(name, limit=_query_limit(request))]

    return _listing(await asyncio.to_thread(read))


async def _steer(request: Request, action: str) -> Response:
    """pause, resume or advance, as the operator asked."""
    state, actor = await admin_caller(request)
    body = await _body(request, Steer)
    act = getattr(_store(state), action)
    name = request.path_params["name"]
    return _applied(await asyncio.to_thread(lambda: act(name, actor, reason=body.reason)))


async def pause(request: Request) -> Response:
    return await _steer(request, "pause")


async def resume(request: Request) -> Response:
    return await _steer(request, "resume")


async def advance(request: Request) -> Response:
    return await _steer(request, "advance")


async def rollback(request: Request) -> Response:
    """Give the control everything and end the experiment; announced like the controller's."""
    state, actor = await admin_caller(request)
    body = await _body(request, RollbackBody)
    store = _store(state)
    name = request.path_params["name"]
    applied = await asyncio.to_thread(lambda: store.rollback(name, actor, reason=body.reason))
    if applied.event is not None:
        from keel.experiments.runtime import rollback_event

        state.tenancy.notifier.send(rollback_event(applied.record, applied.event))
    return _applied(applied)
