"""The prompt registry over HTTP (``/admin/prompts``): push, promote, roll back, history, diff.

Admin keys only, like the rest of ``/admin``. Pushes are linted against the
registry first, exactly as ``keel prompts push`` does, and every label move is
audited in its own transaction with the actor ``key:<key prefix>``.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Annotated, Any

from pydantic import Field
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from keel.api.admin import _body, _json, _listing, _query_limit, _Strict, admin_caller
from keel.api.state import state_of
from keel.errors import InvalidRequest
from keel.prompts.model import PromptFile
from keel.store import PromptRegistry, PushResult

if TYPE_CHECKING:
    from keel.prompts import Finding

Reason = Annotated[str, Field(max_length=1000)]


class PushBody(_Strict):
    prompts: Annotated[list[PromptFile], Field(min_length=1, max_length=1000)]


class PromoteBody(_Strict):
    version: str
    label: str = "production"
    force: bool = False
    reason: Reason | None = None


class RollbackBody(_Strict):
    label: str = "production"
    reason: Reason | None = None


def admin_prompt_routes() -> list[BaseRoute]:
    """The ``/admin/prompts`` routes, to add to the control-plane app."""
    return [
        Route("/admin/prompts", list_prompts, methods=["GET"]),
        Route("/admin/prompts", push_prompts, methods=["POST"]),
        Route("/admin/prompts/{name}", get_prompt, methods=["GET"]),
        Route("/admin/prompts/{name}/versions/{version}", get_version, methods=["GET"]),
        Route("/admin/prompts/{name}/labels/{label}", get_label, methods=["GET"]),
        Route("/admin/prompts/{name}/promote", promote, methods=["POST"]),
        Route("/admin/prompts/{name}/rollback", rollback, methods=["POST"]),
        Route("/admin/prompts/{name}/history", history, methods=["GET"]),
        Route("/admin/prompts/{name}/diff", diff, methods=["GET"]),
    ]


async def _registry(request: Request) -> tuple[PromptRegistry, str]:
    state, actor = await admin_caller(request)
    return PromptRegistry(state.engine), actor


async def list_prompts(request: Request) -> Response:
    registry, _ = await _registry(request)
    summaries = await asyncio.to_thread(registry.list_prompts)
    return _listing([s.as_dict() for s in summaries])


async def push_prompts(request: Request) -> Response:
    """Lint the prompts against the registry, then push them; all or nothing."""
    state, actor = await admin_caller(request)
    registry = PromptRegistry(state.engine)
    body = await _body(request, PushBody)
    aliases = [model.alias for model in state.config.models]

    def lint_and_push() -> tuple[list[Finding], list[PushResult] | None]:
        from keel.prompts import has_errors, lint

        findings = lint(body.prompts, registry.lint_view(), aliases=aliases)
        if has_errors(findings):
            return findings, None
        return findings, registry.push(body.prompts, actor=actor)

    findings, results = await asyncio.to_thread(lint_and_push)
    problems = [_finding(f) for f in findings]
    if results is None:
        errors = [f for f in findings if f.severity == "error"]
        first = errors[0]
        where = f"{first.name} {first.field}".strip()
        error = InvalidRequest(
            f"{len(errors)} lint error(s), nothing pushed; first: {where}:"
            f" {first.message.splitlines()[0]}",
            param="prompts",
            code="prompt_lint_failed",
        )
        payload = error.body()
        payload["error"]["findings"] = problems
        return _json(payload, status=400)
    created = any(r.status == "new" for r in results)
    return _json(
        {"object": "list", "data": [r.as_dict() for r in results], "findings": problems},
        status=201 if created else 200,
    )


def _finding(f: Finding) -> dict[str, Any]:
    return {"severity": f.severity, "name": f.name, "field": f.field, "message": f.message}


async def get_prompt(request: Request) -> Response:
    registry, _ = await _registry(request)
    name = request.path_params["name"]

    def read() -> dict[str, Any]:
        versions = registry.versions(name)
        if not versions:
            registry.history(name)  # raises NotFound naming the prompt
        labels = registry.labels(name)
        return {
            "name": name,
            "versions": [v.as_dict(content=False) for v in versions],
            "labels": {x.label: x.version for x in labels},
        }

    return _json(await asyncio.to_thread(read))


async def get_version(request: Request) -> Response:
    registry, _ = await _registry(request)
    params = request.path_params
    found = await asyncio.to_thread(registry.get, params["name"], params["version"])
    return _json(found.as_dict())


async def get_label(request: Request) -> Response:
    registry, _ = await _registry(request)
    params = request.path_params
    found = await asyncio.to_thread(registry.resolve, params["name"], params["label"])
    return _json(found.as_dict())


async def promote(request: Request) -> Response:
    registry, actor = await _registry(request)
    body = await _body(request, PromoteBody)
    name = request.path_params["name"]
    move = await asyncio.to_thread(
        registry.promote,
        name,
        body.version,
        body.label,
        actor,
        force=body.force,
        reason=body.reason,
    )
    await state_of(request).prompts.refresh()  # this replica serves it at once
    return _json(
        {
            "name": name,
            "label": body.label,
            "version": body.version,
            "changed": move is not None,
            "move": None if move is None else move.as_dict(),
        }
    )


async def rollback(request: Request) -> Response:
    registry, actor = await _registry(request)
    body = await _body(request, RollbackBody)
    move = await asyncio.to_thread(
        registry.rollback, request.path_params["name"], body.label, actor, reason=body.reason
    )
    await state_of(request).prompts.refresh()  # this replica serves it at once
    return _json(
        {
            "name": move.name,
            "label": move.label,
            "version": move.to_version,
            "changed": True,
            "move": move.as_dict(),
        }
    )


async def history(request: Request) -> Response:
    registry, _ = await _registry(request)
    moves = await asyncio.to_thread(
        registry.history,
        request.path_params["name"],
        label=request.query_params.get("label"),
        limit=_query_limit(request),
    )
    return _listing([m.as_dict() for m in moves])


async def diff(request: Request) -> Response:
    registry, _ = await _registry(request)
    name = request.path_params["name"]
    versions = []
    for param in ("a", "b"):
        value = request.query_params.get(param)
        if not value:
            raise InvalidRequest(
                f"{param}: give the two versions to compare, e.g. ?a=1.0.0&b=1.1.0", param=param
            )
        versions.append(value)
    a, b = versions
    text = await asyncio.to_thread(registry.diff, name, a, b)
    return _json({"name": name, "a": a, "b": b, "same": not text.strip(), "diff": text})
