"""What one request leaves behind: the record every telemetry sink reads.

The request path only fills this in (timestamps, usage, outcome); spans,
log lines, stored rows, rollups and OTLP export are all derived from it off
the hot path, by the telemetry writer.

Records are never changed once queued, but the classes are not frozen
dataclasses: a frozen dataclass sets every field through
``object.__setattr__``, which made building one record (40 fields, a stage
per pipeline step) cost about 30 µs of the request path instead of about 5.
Stages are plain tuples for the same reason.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal, NamedTuple

from keel.errors import SKIPPED_OUTCOMES

Status = Literal["ok", "error"]


@dataclass(slots=True)
class AttemptRecord:
    """One upstream call, with offsets from the request's start."""

    alias: str
    deployment: str  # "provider/model"
    provider: str
    provider_model: str
    outcome: str  # "ok" or an error code
    status: int | None
    start_ms: float
    duration_ms: float


class StageRecord(NamedTuple):
    """A pipeline stage that did work, with offsets from the request's start."""

    name: str
    start_ms: float
    duration_ms: float


# What a record holds per stage: a StageRecord, or the plain tuple the request
# path builds (a named tuple costs a Python-level call per stage, and orjson
# encodes only plain tuples itself). Readers unpack by position.
StageTiming = tuple[str, float, float]


@dataclass(slots=True)
class Usage:
    """Tokens of one request, with OpenTelemetry semantics.

    ``input_tokens`` includes ``cached_input_tokens`` and
    ``cache_write_tokens``; those two are priced subsets of it, never added
    on top. ``estimated`` is true when the upstream reported nothing and the
    numbers were counted by Keel (e.g. a stream cut before its usage chunk).
    """

    input_tokens: int = 0
    output_tokens: int = 0
    cached_input_tokens: int = 0
    cache_write_tokens: int = 0
    estimated: bool = False


@dataclass(slots=True)
class RequestRecord:
    request_id: str
    trace_id: str  # 32 hex
    span_id: str  # 16 hex, the root span
    parent_span_id: str | None  # from an incoming traceparent
    started_at: float  # epoch seconds
    operation: Literal["chat", "embeddings"]
    stream: bool
    http_status: int
    status: Status
    error_type: str | None  # fault domain + code, e.g. "provider_all_upstreams_failed"
    tenant: str | None
    key_id: int | None
    end_user: str | None
    feature: str | None
    metadata: dict[str, str]
    alias: str | None  # as requested
    served_alias: str | None  # the alias that answered (differs after a fallback)
    deployment: str | None  # the one that answered
    provider: str | None
    provider_model: str | None
    response_model: str | None
    finish_reasons: tuple[str, ...]
    usage: Usage
    cost_usd: float | None  # None: unknown price, never silently zero
    latency_ms: float
    ttft_ms: float | None
    attempts: tuple[AttemptRecord, ...]
    stages: tuple[StageTiming, ...]
    prompt_name: str | None = None
    prompt_version: str | None = None
    prompt_hash: str | None = None
    experiment: str | None = None
    variant: str | None = None
    cache: str | None = None  # "hit" | "miss" | None when no cache is configured
    guardrail: str | None = None  # "allow" | "flag" | "redact" | "block"
    shadow: bool = False
    # Captured only when telemetry.capture_content is on for the tenant.
    request_body: dict[str, Any] | None = None
    response_text: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def fallback_used(self) -> bool:
        return self.served_alias is not None and self.served_alias != self.alias

    @property
    def attempt_count(self) -> int:
        """Upstream calls made (deployments passed over are not calls)."""
        return sum(1 for a in self.attempts if a.outcome not in SKIPPED_OUTCOMES)

    @property
    def retries(self) -> int:
        return max(0, self.attempt_count - 1)
