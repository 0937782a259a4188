"""RequestRecord -> OpenTelemetry spans, built after the fact with explicit timestamps.

The request path never touches OpenTelemetry: it fills a ``RequestRecord``
and the telemetry writer calls :func:`build_spans` off the hot path. Spans
follow the OpenTelemetry GenAI semantic conventions (``gen_ai.*``) plus
``keel.*`` attributes; docs/telemetry.md lists every name.

Shape of one request's trace::

    SERVER  "chat fast"                 root; parent = the caller's traceparent span
      INTERNAL "keel.<stage>"           one per pipeline stage that did work
      CLIENT   "chat gpt-4o-mini"       one per upstream call actually made

Attempts that were never sent (breaker open, context window too small) are
zero-length ``keel.attempt_skipped`` events on the root, not spans: a span
claims that time was spent talking to an upstream, and none was.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from typing import Any

import orjson
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import Event, ReadableSpan
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from opentelemetry.trace import SpanContext, SpanKind, Status, StatusCode, TraceFlags
from opentelemetry.util.types import AttributeValue

import keel
from keel.errors import SKIPPED_OUTCOMES
from keel.telemetry.record import AttemptRecord, RequestRecord, StageTiming

__all__ = ["MAX_CONTENT_MESSAGES", "MAX_CONTENT_PART_CHARS", "build_spans"]

# Content is for eyeballing a trace, not an archive: backends reject or
# truncate large attributes anyway, so Keel cuts first and says so ("…").
MAX_CONTENT_PART_CHARS = 4_000
MAX_CONTENT_MESSAGES = 50

_SAMPLED = TraceFlags(TraceFlags.SAMPLED)
_SCOPE = InstrumentationScope("keel", keel.__version__)
_NS_PER_MS = 1_000_000

Attrs = dict[str, AttributeValue]


def build_spans(
    record: RequestRecord,
    resource: Resource,
    *,
    capture_content: bool = False,
) -> list[ReadableSpan]:
    """The root span first, then stage spans, then upstream attempt spans.

    Content (``gen_ai.input.messages`` / ``gen_ai.output.messages``) is added
    only when ``capture_content`` is true AND the request path captured the
    body (it does not for tenants excluded from capture).
    """
    trace_id = int(record.trace_id, 16)
    root_id = int(record.span_id, 16)
    root_ctx = SpanContext(trace_id, root_id, is_remote=False, trace_flags=_SAMPLED)
    parent = (
        SpanContext(trace_id, int(record.parent_span_id, 16), is_remote=True, trace_flags=_SAMPLED)
        if record.parent_span_id
        else None
    )
    # Integer ns from the float epoch once; offsets are added in integer ns so
    # children line up exactly with the root's start.
    start_ns = int(record.started_at * 1e9)

    events = [
        Event(
            "keel.attempt_skipped",
            {"keel.deployment": a.deployment, "keel.outcome": a.outcome},
            start_ns + int(a.start_ms * _NS_PER_MS),
        )
        for a in record.attempts
        if a.outcome in SKIPPED_OUTCOMES
    ]
    attrs = _root_attributes(record)
    if capture_content and record.request_body is not None:
        attrs.update(_content_attributes(record))
    spans = [
        ReadableSpan(
            name=f"{record.operation} {record.alias or 'unknown'}",
            context=root_ctx,
            parent=parent,
            resource=resource,
            attributes=attrs,
            events=events,
            kind=SpanKind.SERVER,
            status=_status((record.error_type or "error") if record.status == "error" else None),
            start_time=start_ns,
            end_time=start_ns + int(record.latency_ms * _NS_PER_MS),
            instrumentation_scope=_SCOPE,
        )
    ]
    for i, stage in enumerate(record.stages):
        spans.append(_stage_span(record, i, stage, root_ctx, resource, start_ns))
    answered = _answering_attempt(record)
    for i, attempt in enumerate(record.attempts):
        if attempt.outcome in SKIPPED_OUTCOMES:
            continue
        response_model = record.response_model if attempt is answered else None
        spans.append(
            _attempt_span(record, i, attempt, response_model, root_ctx, resource, start_ns)
        )
    return spans


def _root_attributes(record: RequestRecord) -> Attrs:
    usage = record.usage
    attrs: Attrs = {
        "gen_ai.operation.name": record.operation,
        "http.response.status_code": record.http_status,
        "keel.request_id": record.request_id,
        "keel.stream": record.stream,
        "keel.fallback": record.fallback_used,
        "keel.attempts": record.attempt_count,
        "keel.shadow": record.shadow,
    }
    _put(attrs, "gen_ai.request.model", record.alias)
    _put(attrs, "gen_ai.response.model", record.response_model)
    _put(attrs, "gen_ai.provider.name", _provider_name(record.provider, record.deployment))
    # Usage sits on the root only: backends that sum gen_ai.usage.* over a
    # trace's spans would otherwise count the answering attempt twice.
    if record.status == "ok" or usage.input_tokens or usage.output_tokens:
        attrs["gen_ai.usage.input_tokens"] = usage.input_tokens
        attrs["gen_ai.usage.output_tokens"] = usage.output_tokens
    if usage.cached_input_tokens:
        attrs["gen_ai.usage.cache_read.input_tokens"] = usage.cached_input_tokens
    if usage.cache_write_tokens:
        attrs["gen_ai.usage.cache_creation.input_tokens"] = usage.cache_write_tokens
    if usage.estimated:
        attrs["keel.usage.estimated"] = True
    if record.finish_reasons:
        attrs["gen_ai.response.finish_reasons"] = list(record.finish_reasons)
    if record.status == "error":
        attrs["error.type"] = record.error_type or "error"
    # None means "price unknown"; writing 0 would read as "free" in every
    # dashboard that sums this attribute.
    if record.cost_usd is not None:
        attrs["keel.cost_usd"] = record.cost_usd
    if record.ttft_ms is not None:
        attrs["keel.ttft_ms"] = record.ttft_ms
    if record.fallback_used:
        _put(attrs, "keel.served_alias", record.served_alias)
    for key, value in (
        ("keel.deployment", record.deployment),
        ("keel.tenant", record.tenant),
        ("keel.user", record.end_user),
        ("keel.feature", record.feature),
        ("keel.prompt.name", record.prompt_name),
        ("keel.prompt.version", record.prompt_version),
        ("keel.prompt.hash", record.prompt_hash),
        ("keel.experiment", record.experiment),
        ("keel.variant", record.variant),
        ("keel.cache", record.cache),
        ("keel.guardrail", record.guardrail),
    ):
        _put(attrs, key, value)
    return attrs


def _stage_span(
    record: RequestRecord,
    index: int,
    stage: StageTiming,
    root: SpanContext,
    resource: Resource,
    start_ns: int,
) -> ReadableSpan:
    name, start_ms, duration_ms = stage
    begin = start_ns + int(start_ms * _NS_PER_MS)
    return ReadableSpan(
        name=f"keel.{name}",
        context=_child_context(record, "stage", index, root.trace_id),
        parent=root,
        resource=resource,
        attributes={"keel.stage": name},
        kind=SpanKind.INTERNAL,
        start_time=begin,
        end_time=begin + int(duration_ms * _NS_PER_MS),
        instrumentation_scope=_SCOPE,
    )


def _attempt_span(
    record: RequestRecord,
    index: int,
    attempt: AttemptRecord,
    response_model: str | None,
    root: SpanContext,
    resource: Resource,
    start_ns: int,
) -> ReadableSpan:
    failed = attempt.outcome != "ok"
    attrs: Attrs = {
        "gen_ai.operation.name": record.operation,
        "gen_ai.request.model": attempt.provider_model,
        "keel.alias": attempt.alias,
        "keel.deployment": attempt.deployment,
        "keel.attempt": index,
    }
    _put(attrs, "gen_ai.provider.name", _provider_name(attempt.provider, attempt.deployment))
    _put(attrs, "gen_ai.response.model", response_model)
    if attempt.status is not None:
        attrs["http.response.status_code"] = attempt.status
    if failed:
        attrs["error.type"] = attempt.outcome
    begin = start_ns + int(attempt.start_ms * _NS_PER_MS)
    return ReadableSpan(
        name=f"{record.operation} {attempt.provider_model}",
        context=_child_context(record, "attempt", index, root.trace_id),
        parent=root,
        resource=resource,
        attributes=attrs,
        kind=SpanKind.CLIENT,
        status=_status(attempt.outcome if failed else None),
        start_time=begin,
        end_time=begin + int(attempt.duration_ms * _NS_PER_MS),
        instrumentation_scope=_SCOPE,
    )


def _child_context(record: RequestRecord, kind: str, index: int, trace_id: int) -> SpanContext:
    """A span id derived from the record, not drawn at random.

    Exporting the same record twice (a retried batch) then yields the same
    span ids, which backends deduplicate instead of doubling the waterfall.
    """
    digest = hashlib.blake2b(f"{record.span_id}/{kind}/{index}".encode(), digest_size=8).digest()
    span_id = int.from_bytes(digest, "big") or 1  # 0 is the invalid span id
    return SpanContext(trace_id, span_id, is_remote=False, trace_flags=_SAMPLED)


def _answering_attempt(record: RequestRecord) -> AttemptRecord | None:
    if record.status != "ok":
        return None
    for attempt in reversed(record.attempts):
        if attempt.outcome == "ok":
            return attempt
    return None


def _provider_name(provider: str | None, deployment: str | None) -> str | None:
    # The configured provider name ("openai", "azure-eu", "sim"), not the wire
    # format: openai_compat fronts vLLM, Groq, Together… alike, so the format
    # would say less than the name the operator chose.
    if provider:
        return provider
    if deployment and "/" in deployment:
        return deployment.split("/", 1)[0]
    return None


def _status(error: str | None) -> Status:
    if error is None:
        return Status(StatusCode.UNSET)
    return Status(StatusCode.ERROR, error)


def _put(attrs: Attrs, key: str, value: str | None) -> None:
    if value is not None:
        attrs[key] = value


# --- content (opt-in) --------------------------------------------------------


def _content_attributes(record: RequestRecord) -> Attrs:
    body = record.request_body or {}
    attrs: Attrs = {}
    raw = body.get("messages") if record.operation == "chat" else body.get("input")
    if raw is not None:
        attrs["gen_ai.input.messages"] = _json(_input_messages(raw))
    if record.response_text is not None:
        output: dict[str, Any] = {
            "role": "assistant",
            "parts": [_text_part(record.response_text)],
        }
        if record.finish_reasons:
            output["finish_reason"] = record.finish_reasons[0]
        attrs["gen_ai.output.messages"] = _json([output])
    return attrs


def _input_messages(raw: object) -> list[dict[str, Any]]:
    """OpenAI-shaped messages -> the semconv shape: ``{role, parts: [...]}``.

    Embeddings input (a string or list of strings) becomes user text parts.
    Only the newest messages are kept: they are what explains the answer.
    """
    if isinstance(raw, str):
        return [{"role": "user", "parts": [_text_part(raw)]}]
    if not isinstance(raw, Sequence):
        return []
    out: list[dict[str, Any]] = []
    for item in list(raw)[-MAX_CONTENT_MESSAGES:]:
        if isinstance(item, Mapping):
            out.append({"role": str(item.get("role", "user")), "parts": _parts(item)})
        else:
            out.append({"role": "user", "parts": [_text_part(str(item))]})
    return out


def _parts(message: Mapping[str, Any]) -> list[dict[str, Any]]:
    content = message.get("content")
    parts: list[dict[str, Any]] = []
    if isinstance(content, str):
        parts.append(_text_part(content))
    elif isinstance(content, list):
        for piece in content:
            if isinstance(piece, Mapping) and piece.get("type") == "text":
                parts.append(_text_part(str(piece.get("text", ""))))
            elif isinstance(piece, Mapping):
                # Images and audio are named, never inlined: base64 blobs
                # would dwarf every other attribute.
                parts.append({"type": str(piece.get("type", "unknown"))})
    for call in message.get("tool_calls") or ():
        if isinstance(call, Mapping):
            function = call.get("function") or {}
            parts.append(
                {
                    "type": "tool_call",
                    "id": call.get("id"),
                    "name": function.get("name") if isinstance(function, Mapping) else None,
                }
            )
    return parts


def _text_part(text: str) -> dict[str, Any]:
    if len(text) > MAX_CONTENT_PART_CHARS:
        text = text[:MAX_CONTENT_PART_CHARS] + "…"
    return {"type": "text", "content": text}


def _json(value: object) -> str:
    return orjson.dumps(value, default=str).decode()
