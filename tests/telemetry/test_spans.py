"""build_spans: names, GenAI attributes, parent linkage, errors, and content opt-in."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.trace import SpanKind, StatusCode

from keel.telemetry import Usage
from keel.telemetry.spans import MAX_CONTENT_PART_CHARS, build_spans
from telemetry_records import CALLER_SPAN_ID, ROOT_SPAN_ID, STARTED_AT, TRACE_ID, make_record

RESOURCE = Resource({"service.name": "keel-test"})
START_NS = int(STARTED_AT * 1e9)


def spans_of(**changes: object) -> list[ReadableSpan]:
    return build_spans(make_record(**changes), RESOURCE)


def by_kind(spans: list[ReadableSpan], kind: SpanKind) -> list[ReadableSpan]:
    return [s for s in spans if s.kind is kind]


def attrs(span: ReadableSpan) -> dict[str, object]:
    return dict(span.attributes or {})


def test_root_span_is_named_by_operation_and_alias_and_continues_the_callers_trace() -> None:
    root = spans_of()[0]
    assert root.name == "chat fast"
    assert root.kind is SpanKind.SERVER
    assert root.context is not None and root.parent is not None
    assert root.context.trace_id == int(TRACE_ID, 16)
    assert root.context.span_id == int(ROOT_SPAN_ID, 16)
    assert root.context.trace_flags.sampled
    assert root.parent.span_id == int(CALLER_SPAN_ID, 16)
    assert root.parent.trace_id == int(TRACE_ID, 16)
    assert root.parent.is_remote
    assert (root.start_time, root.end_time) == (START_NS, START_NS + 850_000_000)
    assert root.resource is RESOURCE


def test_root_has_no_parent_without_an_incoming_traceparent() -> None:
    assert spans_of(parent_span_id=None)[0].parent is None


def test_embeddings_root_is_named_embeddings() -> None:
    assert spans_of(operation="embeddings", alias="embed")[0].name == "embeddings embed"


def test_root_attributes_follow_genai_conventions_plus_keel() -> None:
    got = attrs(spans_of()[0])
    assert got == {
        "gen_ai.operation.name": "chat",
        "gen_ai.provider.name": "openai",
        "gen_ai.request.model": "fast",
        "gen_ai.response.model": "gpt-4o-mini-2024-07-18",
        "gen_ai.usage.input_tokens": 120,
        "gen_ai.usage.output_tokens": 30,
        "gen_ai.usage.cache_read.input_tokens": 100,
        "gen_ai.response.finish_reasons": ["stop"],
        "http.response.status_code": 200,
        "keel.request_id": "req_1",
        "keel.tenant": "acme",
        "keel.user": "u-42",
        "keel.feature": "support-bot",
        "keel.prompt.name": "support",
        "keel.prompt.version": "3",
        "keel.prompt.hash": "abc123",
        "keel.variant": "B",
        "keel.cache": "miss",
        "keel.guardrail": "allow",
        "keel.cost_usd": 0.0025,
        "keel.fallback": True,
        "keel.served_alias": "cheap",
        "keel.attempts": 2,
        "keel.shadow": False,
        "keel.stream": True,
        "keel.deployment": "openai/gpt-4o-mini",
        "keel.ttft_ms": 210.0,
    }


def test_stage_spans_are_internal_children_of_the_root_at_their_offsets() -> None:
    spans = spans_of()
    stages = by_kind(spans, SpanKind.INTERNAL)
    assert [s.name for s in stages] == ["keel.auth", "keel.guardrail"]
    for span in stages:
        assert span.parent is not None and span.parent.span_id == int(ROOT_SPAN_ID, 16)
        assert span.context is not None and span.context.trace_id == int(TRACE_ID, 16)
    guard = stages[1]
    assert (guard.start_time, guard.end_time) == (START_NS + 1_500_000, START_NS + 4_500_000)
    assert attrs(guard) == {"keel.stage": "guardrail"}


def test_attempt_spans_are_client_children_and_failures_are_errors() -> None:
    failed, answered = by_kind(spans_of(), SpanKind.CLIENT)
    assert failed.name == "chat gpt-4o"
    assert failed.parent is not None and failed.parent.span_id == int(ROOT_SPAN_ID, 16)
    assert failed.status.status_code is StatusCode.ERROR
    assert failed.status.description == "provider_unavailable"
    assert attrs(failed) == {
        "gen_ai.operation.name": "chat",
        "gen_ai.provider.name": "azure",
        "gen_ai.request.model": "gpt-4o",
        "http.response.status_code": 503,
        "error.type": "provider_unavailable",
        "keel.alias": "fast",
        "keel.deployment": "azure/gpt-4o",
        "keel.attempt": 0,
    }
    assert (failed.start_time, failed.end_time) == (START_NS + 5_000_000, START_NS + 305_000_000)

    assert answered.name == "chat gpt-4o-mini"
    assert answered.status.status_code is StatusCode.UNSET
    got = attrs(answered)
    assert got["gen_ai.response.model"] == "gpt-4o-mini-2024-07-18"
    assert "error.type" not in got
    # Usage lives on the root only, so backends summing usage don't double it.
    assert not any(k.startswith("gen_ai.usage") for k in got)


def test_skipped_attempts_are_events_on_the_root_not_spans() -> None:
    spans = spans_of()
    assert len(spans) == 1 + 2 + 2
    (event,) = spans[0].events
    assert event.name == "keel.attempt_skipped"
    assert dict(event.attributes or {}) == {
        "keel.deployment": "backup/gpt-4o",
        "keel.outcome": "breaker_open",
    }
    assert event.timestamp == START_NS + 306_000_000


def test_span_ids_are_unique_valid_and_stable_across_rebuilds() -> None:
    first = [s.context.span_id for s in spans_of() if s.context]
    again = [s.context.span_id for s in spans_of() if s.context]
    assert first == again
    assert len(set(first)) == len(first)
    assert all(0 < i < 2**64 for i in first)


def test_failed_request_root_has_error_status_and_type() -> None:
    root = spans_of(
        status="error",
        http_status=502,
        error_type="provider_all_upstreams_failed",
        served_alias=None,
        deployment=None,
        response_model=None,
        finish_reasons=(),
        usage=Usage(),
        cost_usd=None,
    )[0]
    assert root.status.status_code is StatusCode.ERROR
    assert root.status.description == "provider_all_upstreams_failed"
    got = attrs(root)
    assert got["error.type"] == "provider_all_upstreams_failed"
    assert got["http.response.status_code"] == 502
    assert "gen_ai.usage.input_tokens" not in got
    assert "gen_ai.response.model" not in got


def test_unknown_cost_is_omitted_never_zero() -> None:
    assert "keel.cost_usd" not in attrs(spans_of(cost_usd=None)[0])
    assert attrs(spans_of(cost_usd=0.0)[0])["keel.cost_usd"] == 0.0


def _all_values(spans: list[ReadableSpan]) -> str:
    return repr([dict(s.attributes or {}) for s in spans] + [s.name for s in spans])


def test_no_content_and_no_key_by_default() -> None:
    spans = spans_of()
    text = _all_values(spans)
    assert "secret" not in text
    assert not any(
        k.startswith(("gen_ai.input", "gen_ai.output")) or "key" in k
        for s in spans
        for k in (s.attributes or {})
    )


def test_no_content_when_the_body_was_not_captured_even_if_enabled() -> None:
    spans = build_spans(make_record(request_body=None), RESOURCE, capture_content=True)
    assert "secret" not in _all_values(spans)


def test_content_is_captured_as_semconv_messages_when_enabled() -> None:
    root = build_spans(make_record(), RESOURCE, capture_content=True)[0]
    got = attrs(root)
    assert json.loads(str(got["gen_ai.input.messages"])) == [
        {"role": "user", "parts": [{"type": "text", "content": "secret question"}]}
    ]
    assert json.loads(str(got["gen_ai.output.messages"])) == [
        {
            "role": "assistant",
            "parts": [{"type": "text", "content": "secret answer"}],
            "finish_reason": "stop",
        }
    ]


def test_captured_content_is_truncated_and_images_are_not_inlined() -> None:
    body = {
        "messages": [
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "x" * (MAX_CONTENT_PART_CHARS + 500)},
                    {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}},
                ],
            }
        ]
    }
    root = build_spans(make_record(request_body=body), RESOURCE, capture_content=True)[0]
    (message,) = json.loads(str(attrs(root)["gen_ai.input.messages"]))
    text, image = message["parts"]
    assert len(text["content"]) == MAX_CONTENT_PART_CHARS + 1
    assert text["content"].endswith("…")
    assert image == {"type": "image_url"}


@pytest.mark.parametrize("parent", [CALLER_SPAN_ID, None])
def test_spans_encode_to_otlp_protobuf(parent: str | None) -> None:
    request = encode_spans(spans_of(parent_span_id=parent))
    (resource_spans,) = request.resource_spans
    assert len(resource_spans.scope_spans[0].spans) == 5
    assert resource_spans.scope_spans[0].scope.name == "keel"


def test_every_span_name_pattern_and_attribute_is_documented() -> None:
    docs = (Path(__file__).parents[2] / "docs" / "telemetry.md").read_text()
    spans = build_spans(
        make_record(usage=Usage(1, 1, 1, 1, estimated=True)), RESOURCE, capture_content=True
    )
    keys = {k for s in spans for k in (s.attributes or {})}
    keys |= {k for s in spans for e in s.events for k in (e.attributes or {})}
    keys |= {e.name for s in spans for e in s.events}
    missing = sorted(k for k in keys if f"`{k}`" not in docs)
    assert not missing, f"docs/telemetry.md does not mention {missing}"
