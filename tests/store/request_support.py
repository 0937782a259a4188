"""A factory for ``RequestRecord`` fixtures in the request-store tests."""

from __future__ import annotations

import itertools
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

from keel.telemetry.record import AttemptRecord, RequestRecord, StageRecord, Usage

T0 = datetime(2030, 1, 15, 12, 0, tzinfo=UTC)
_ids = itertools.count(1)

_BASE = RequestRecord(
    request_id="",
    trace_id="0af7651916cd43dd8448eb211c80319c",
    span_id="b7ad6b7169203331",
    parent_span_id=None,
    started_at=T0.timestamp(),
    operation="chat",
    stream=False,
    http_status=200,
    status="ok",
    error_type=None,
    tenant="acme",
    key_id=1,
    end_user="u1",
    feature="chat",
    metadata={"team": "search"},
    alias="fast",
    served_alias="fast",
    deployment="openai/gpt-4o-mini",
    provider="openai",
    provider_model="gpt-4o-mini",
    response_model="gpt-4o-mini-2024-07-18",
    finish_reasons=("stop",),
    usage=Usage(input_tokens=100, output_tokens=20, cached_input_tokens=40),
    cost_usd=0.000123,
    latency_ms=250.04,
    ttft_ms=None,
    attempts=(
        AttemptRecord(
            alias="fast",
            deployment="openai/gpt-4o-mini",
            provider="openai",
            provider_model="gpt-4o-mini",
            outcome="ok",
            status=200,
            start_ms=1.234,
            duration_ms=240.0,
        ),
    ),
    stages=(StageRecord(name="route", start_ms=1.0, duration_ms=241.0),),
    prompt_name="support",
    prompt_version="1.0.0",
    prompt_hash="sha256:abc",
    variant=None,
)


def make_record(*, at: datetime | timedelta = T0, **changes: Any) -> RequestRecord:
    """A plausible finished request; ``at`` is a time or an offset from ``T0``."""
    when = T0 + at if isinstance(at, timedelta) else at
    changes.setdefault("request_id", f"req-{next(_ids):06d}")
    return replace(_BASE, started_at=when.timestamp(), **changes)


def error_record(**changes: Any) -> RequestRecord:
    defaults: dict[str, Any] = {
        "status": "error",
        "http_status": 502,
        "error_type": "provider_all_upstreams_failed",
        "usage": Usage(),
        "cost_usd": 0.0,
        "finish_reasons": (),
    }
    return make_record(**(defaults | changes))
