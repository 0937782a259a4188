"""The admin API (``/admin/*``): tenants, keys, the audit log and events over HTTP.

Only admin virtual keys may call it (``keel keys create --admin``): no key is
401, a key without the flag 403 ``permission_denied``. It goes through the
same repositories as the CLI, so every change is validated the same way and
audited in its own transaction, with the actor ``key:<key prefix>``.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Annotated, Any, TypeVar

import orjson
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from keel._time import parse_iso_time
from keel.api.state import AppState, caller
from keel.config import format_path
from keel.errors import InvalidRequest, KeelError, PermissionDenied
from keel.store import AuditStore, EventStore, KeyRecord, KeyStore, TenantStore
from keel.store.tenants import UNSET, TenantRecord, effective_tier

log = logging.getLogger("keel.api")

MAX_LIST = 1000
_Body = TypeVar("_Body", bound=BaseModel)
Reason = Annotated[str, Field(max_length=1000)]
Overrides = dict[str, Any]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class TenantCreate(_Strict):
    name: str
    tier: str | None = None
    limits: Overrides | None = None
    reason: Reason | None = None


class TenantPatch(_Strict):
    tier: str | None = None  # null clears the tier; absent leaves it
    limits: Overrides | None = None  # replaces the whole override; null removes it
    set_limits: dict[str, Any] = {}  # {"tenant.rpm": 100}
    clear_limits: list[str] = []  # ["tenant.rpm"]
    reason: Reason | None = None


class Suspend(_Strict):
    reason: Annotated[str, Field(min_length=1, max_length=1000)]


class Resume(_Strict):
    reason: Reason | None = None


class KeyCreate(_Strict):
    tenant: str
    tier: str | None = None
    name: str | None = None
    expires_at: datetime | None = None
    limits: Overrides | None = None
    admin: bool = False


class KeyRevoke(_Strict):
    reason: Reason | None = None


def admin_routes() -> list[BaseRoute]:
    """The ``/admin`` routes, to add to the control-plane app."""
    return [
        Route("/admin/tenants", list_tenants, methods=["GET"]),
        Route("/admin/tenants", create_tenant, methods=["POST"]),
        Route("/admin/tenants/{name}", get_tenant, methods=["GET"]),
        Route("/admin/tenants/{name}", patch_tenant, methods=["PATCH"]),
        Route("/admin/tenants/{name}/suspend", suspend_tenant, methods=["POST"]),
        Route("/admin/tenants/{name}/resume", resume_tenant, methods=["POST"]),
        Route("/admin/keys", list_keys, methods=["GET"]),
        Route("/admin/keys", create_key, methods=["POST"]),
        Route("/admin/keys/{key}/revoke", revoke_key, methods=["POST"]),
        Route("/admin/audit", list_audit, methods=["GET"]),
        Route("/admin/events", list_events, methods=["GET"]),
    ]


# --- plumbing -------------------------------------------------------------------


async def admin_caller(request: Request) -> tuple[AppState, str]:
    """The process state and the audit actor of an admin key.

    401 without a valid key, 403 ``permission_denied`` for a key that is not admin.
    """
    state, key = await caller(request)
    if not key.admin:
        raise PermissionDenied(
            "this key may not call the admin API; use a key created with `keel keys create --admin`"
        )
    return state, f"key:{key.key_prefix}"


def _tenants(state: AppState) -> TenantStore:
    config = state.config
    aliases = [model.alias for model in config.models]
    return TenantStore(state.engine, tiers=config.tiers.keys(), aliases=aliases)


def _keys(state: AppState) -> KeyStore:
    config = state.config
    aliases = [model.alias for model in config.models]
    return KeyStore(state.engine, tiers=config.tiers.keys(), aliases=aliases)


async def _body(request: Request, model: type[_Body]) -> _Body:
    raw = await request.body()
    try:
        return model.model_validate_json(raw or b"{}")
    except ValidationError as exc:
        error = exc.errors(include_url=False)[0]
        param = format_path(tuple(error["loc"]))
        message = "unknown field" if error["type"] == "extra_forbidden" else error["msg"]
        raise InvalidRequest(f"{param}: {message}", param=param) from None


def _json(payload: object, status: int = 200) -> Response:
    return Response(orjson.dumps(payload), status_code=status, media_type="application/json")


def _listing(rows: list[Mapping[str, Any]]) -> Response:
    return _json({"object": "list", "data": rows})


def _query_limit(request: Request) -> int:
    text = request.query_params.get("limit", "100")
    try:
        limit = int(text)
    except ValueError:
        limit = 0
    if not 1 <= limit <= MAX_LIST:
        raise InvalidRequest(f"limit: expected 1 to {MAX_LIST}, not {text!r}", param="limit")
    return limit


def _query_since(request: Request) -> datetime | None:
    text = request.query_params.get("since")
    return None if text is None else parse_iso_time(text, "since")


def _tenant_view(state: AppState, record: TenantRecord, keys: tuple[int, int]) -> dict[str, Any]:
    config = state.config
    name, tier, problem = effective_tier(record, config.tiers, config.limits.default_tier)
    return {
        **record.as_dict(),
        "effective_tier": name,
        "effective_limits": tier.model_dump(mode="json"),
        "warning": problem,
        "keys": {"active": keys[0], "total": keys[1]},
    }


async def _mirror_suspension(state: AppState, record: TenantRecord) -> str | None:
    """Push the switch to this process's limits backend (Redis: every replica) at once.

    The store is already written and every replica re-reads it within
    ``limits.refresh_s``, so a failure here delays the switch, never loses it.
    """
    try:
        await state.tenancy.backend.set_suspended(record.name, record.suspend_reason)
    except (KeelError, OSError) as exc:
        log.warning(
            "pushing the suspension of %s to the limits backend failed: %s", record.name, exc
        )
        return (
            "saved; pushing it to the limits backend failed, so replicas apply it"
            f" within {state.config.limits.refresh_s:g}s"
        )
    return None


# --- tenants --------------------------------------------------------------------


async def list_tenants(request: Request) -> Response:
    state, _ = await admin_caller(request)
    records = await asyncio.to_thread(_tenants(state).list)
    return _listing([record.as_dict() for record in records])


async def create_tenant(request: Request) -> Response:
    state, actor = await admin_caller(request)
    body = await _body(request, TenantCreate)
    record = await asyncio.to_thread(
        _tenants(state).create,
        body.name,
        tier=body.tier,
        limits=body.limits,
        actor=actor,
        reason=body.reason,
    )
    return _json(record.as_dict(), status=201)


async def get_tenant(request: Request) -> Response:
    state, _ = await admin_caller(request)
    name = request.path_params["name"]

    def read() -> tuple[TenantRecord, tuple[int, int]]:
        record = _tenants(state).require(name)
        keys = _keys(state)
        return record, (keys.count_keys(name, active_only=True), keys.count_keys(name))

    record, counts = await asyncio.to_thread(read)
    return _json(_tenant_view(state, record, counts))


async def patch_tenant(request: Request) -> Response:
    state, actor = await admin_caller(request)
    body = await _body(request, TenantPatch)
    given = body.model_fields_set
    record = await asyncio.to_thread(
        _tenants(state).set,
        request.path_params["name"],
        tier=body.tier if "tier" in given else UNSET,
        limits=body.limits if "limits" in given else UNSET,
        set_limits=body.set_limits,
        clear_limits=body.clear_limits,
        actor=actor,
        reason=body.reason,
    )
    return _json(record.as_dict())


async def suspend_tenant(request: Request) -> Response:
    state, actor = await admin_caller(request)
    body = await _body(request, Suspend)
    record = await asyncio.to_thread(
        _tenants(state).suspend, request.path_params["name"], reason=body.reason, actor=actor
    )
    warning = await _mirror_suspension(state, record)
    return _json({**record.as_dict(), "warning": warning})


async def resume_tenant(request: Request) -> Response:
    state, actor = await admin_caller(request)
    body = await _body(request, Resume)
    record = await asyncio.to_thread(
        _tenants(state).resume, request.path_params["name"], actor=actor, reason=body.reason
    )
    warning = await _mirror_suspension(state, record)
    return _json({**record.as_dict(), "warning": warning})


# --- keys -----------------------------------------------------------------------


async def list_keys(request: Request) -> Response:
    state, _ = await admin_caller(request)
    tenant = request.query_params.get("tenant")
    records = await asyncio.to_thread(_keys(state).list_keys, tenant)
    now = datetime.now(UTC)
    return _listing([{**r.as_dict(), "status": r.status_at(now)} for r in records])


async def create_key(request: Request) -> Response:
    state, actor = await admin_caller(request)
    body = await _body(request, KeyCreate)
    expires_at = body.expires_at
    if expires_at is not None and expires_at.tzinfo is None:
        expires_at = expires_at.replace(tzinfo=UTC)
    key, record = await asyncio.to_thread(
        _keys(state).create_key,
        body.tenant,
        tier=body.tier,
        name=body.name,
        expires_at=expires_at,
        limits=body.limits,
        admin=body.admin,
        actor=actor,
    )
    return _json({"key": key, **record.as_dict()}, status=201)


async def revoke_key(request: Request) -> Response:
    state, actor = await admin_caller(request)
    body = await _body(request, KeyRevoke)
    record: KeyRecord = await asyncio.to_thread(
        _keys(state).revoke, request.path_params["key"], actor=actor, reason=body.reason
    )
    # This process stops accepting it at once; other replicas within the cache TTL.
    state.resolver.clear()
    return _json({**record.as_dict(), "status": record.status_at(datetime.now(UTC))})


# --- audit and events -----------------------------------------------------------


async def list_audit(request: Request) -> Response:
    state, _ = await admin_caller(request)
    query = request.query_params
    rows = await asyncio.to_thread(
        AuditStore(state.engine).list,
        target=query.get("target"),
        action=query.get("action"),
        actor=query.get("actor"),
        since=_query_since(request),
        limit=_query_limit(request),
    )
    return _listing([row.as_dict() for row in rows])


async def list_events(request: Request) -> Response:
    state, _ = await admin_caller(request)
    query = request.query_params
    rows = await asyncio.to_thread(
        EventStore(state.engine).list,
        tenant=query.get("tenant"),
        kind=query.get("kind"),
        since=_query_since(request),
        limit=_query_limit(request),
    )
    return _listing([row.as_dict() for row in rows])
