"""What a key may read back and add: its own traces, and feedback on its requests.

Every query is scoped by the key's tenant; another tenant's request answers
exactly like a missing one, so not even its existence leaks.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Annotated

import orjson
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from starlette.requests import Request
from starlette.responses import Response

from keel.api.state import caller
from keel.config import format_path
from keel.errors import InvalidRequest, NotFound
from keel.store import TraceFilter

MAX_LIST = 200


class FeedbackBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    request_id: Annotated[str, Field(min_length=1, max_length=128)]
    # true/false for thumbs up/down, or a score from 0 to 1
    score: bool | Annotated[float, Field(ge=0, le=1)]
    comment: Annotated[str, Field(max_length=4000)] | None = None
    tags: Annotated[list[Annotated[str, Field(max_length=64)]], Field(max_length=20)] = []


def _json(payload: object, status: int = 200) -> Response:
    return Response(orjson.dumps(payload), status_code=status, media_type="application/json")


async def feedback(request: Request) -> Response:
    state, key = await caller(request)
    try:
        body = FeedbackBody.model_validate_json(await request.body())
    except ValidationError as exc:
        error = exc.errors(include_url=False)[0]
        param = format_path(tuple(p for p in error["loc"] if p not in ("bool", "float")))
        raise InvalidRequest(f"{param}: {error['msg']}", param=param) from None
    score = float(body.score)
    record = await asyncio.to_thread(
        state.requests.add_feedback,
        body.request_id,
        tenant=key.tenant,
        score=score,
        comment=body.comment,
        tags=body.tags,
    )
    state.metrics.feedback(score)
    return _json(record, status=201)


async def get_trace(request: Request) -> Response:
    state, key = await caller(request)
    request_id = request.path_params["request_id"]
    stored = await asyncio.to_thread(state.requests.get, request_id, tenant=key.tenant)
    if stored is None:
        raise NotFound(f'no trace for request "{request_id}"', param="request_id")
    return _json(stored.as_dict())


async def list_traces(request: Request) -> Response:
    state, key = await caller(request)
    query = request.query_params
    try:
        limit = min(int(query.get("limit", "50")), MAX_LIST)
        since_h = float(query["since_hours"]) if "since_hours" in query else None
        slow = float(query["min_latency_ms"]) if "min_latency_ms" in query else None
    except ValueError:
        raise InvalidRequest(
            "limit, since_hours and min_latency_ms must be numbers", param="query"
        ) from None
    filters = TraceFilter(
        tenant=key.tenant,
        status=query.get("status"),
        alias=query.get("alias"),
        prompt_version=query.get("prompt_version"),
        since=datetime.now(UTC) - timedelta(hours=since_h) if since_h is not None else None,
        min_latency_ms=slow,
        errors_only=query.get("errors") in ("1", "true"),
    )
    rows = await asyncio.to_thread(state.requests.list_requests, filters, limit=limit)
    return _json({"object": "list", "data": [row.as_dict() for row in rows]})
