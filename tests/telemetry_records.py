"""A realistic RequestRecord for span, OTLP and metrics tests: a fallback after a 503."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from keel.telemetry import AttemptRecord, RequestRecord, StageRecord, Usage

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
ROOT_SPAN_ID = "b7ad6b7169203331"
CALLER_SPAN_ID = "00f067aa0ba902b7"
STARTED_AT = 1_800_000_000.0


def make_record(**changes: Any) -> RequestRecord:
    base = RequestRecord(
        request_id="req_1",
        trace_id=TRACE_ID,
        span_id=ROOT_SPAN_ID,
        parent_span_id=CALLER_SPAN_ID,
        started_at=STARTED_AT,
        operation="chat",
        stream=True,
        http_status=200,
        status="ok",
        error_type=None,
        tenant="acme",
        key_id=7,
        end_user="u-42",
        feature="support-bot",
        metadata={"team": "a"},
        alias="fast",
        served_alias="cheap",
        deployment="openai/gpt-4o-mini",
        provider="openai",
        provider_model="gpt-4o-mini",
        response_model="gpt-4o-mini-2024-07-18",
        finish_reasons=("stop",),
        usage=Usage(input_tokens=120, output_tokens=30, cached_input_tokens=100),
        cost_usd=0.0025,
        latency_ms=850.0,
        ttft_ms=210.0,
        attempts=(
            AttemptRecord(
                "fast", "azure/gpt-4o", "azure", "gpt-4o", "provider_unavailable", 503, 5.0, 300.0
            ),
            AttemptRecord(
                "fast", "backup/gpt-4o", "backup", "gpt-4o", "breaker_open", None, 306.0, 0.0
            ),
            AttemptRecord(
                "cheap", "openai/gpt-4o-mini", "openai", "gpt-4o-mini", "ok", 200, 310.0, 530.0
            ),
        ),
        stages=(StageRecord("auth", 0.0, 1.5), StageRecord("guardrail", 1.5, 3.0)),
        prompt_name="support",
        prompt_version="3",
        prompt_hash="abc123",
        variant="B",
        cache="miss",
        guardrail="allow",
        request_body={"messages": [{"role": "user", "content": "secret question"}]},
        response_text="secret answer",
    )
    return replace(base, **changes)
