"""The state of one request as it moves through the pipeline."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from keel.config import ModelAlias, Tier
from keel.errors import AttemptSummary
from keel.pipeline.schema import PromptRef
from keel.providers.base import Json, Operation
from keel.routing import OpenedStream, RouteResult
from keel.store import KeyRecord
from keel.tenants import Held

if TYPE_CHECKING:
    from keel.experiments.spec import Guard
    from keel.pipeline.experimenting import Assignment
    from keel.pipeline.prompting import ServedPrompt


@dataclass(slots=True)
class RequestContext:
    request_id: str
    operation: Operation
    raw_body: bytes
    authorization: str | None
    started: float = field(default_factory=time.monotonic)
    received_at: float = field(default_factory=time.time)

    # parse
    body: Json = field(default_factory=dict)
    upstream_body: Json = field(default_factory=dict)
    stream: bool = False
    include_usage: bool = False
    end_user: str | None = None
    metadata: dict[str, Any] = field(default_factory=dict)
    prompt_ref: PromptRef | None = None
    # experiment: the variant this request runs, and a candidate to mirror it to
    assignment: Assignment | None = None
    mirror: Assignment | None = None
    variant_alias: str | None = None
    judge: Guard | None = None  # picked for the online judge: record once rated
    shadow: bool = False  # this request is itself a mirrored copy
    extra: dict[str, Any] = field(default_factory=dict)  # recorded with the request as is
    # prompt: what was rendered (name, version, content hash)
    prompt: ServedPrompt | None = None
    # auth, tenant gate
    key: KeyRecord | None = None
    tier: Tier | None = None
    # model
    alias: ModelAlias | None = None
    # limits: what this request holds until it settles
    held: Held | None = None
    downgraded_from: str | None = None
    # route / call
    route: RouteResult | None = None
    opened: OpenedStream | None = None
    usage: Json | None = None
    ttft_ms: float | None = None
    streamed_chars: int = 0
    # telemetry
    trace_id: str = ""
    parent_span_id: str | None = None
    span_id: str = ""
    stages: list[tuple[str, float, float]] = field(default_factory=list)
    capture: bool = False  # keep prompt and answer text for this request
    streamed_text: list[str] | None = None
    finish_reasons: list[str] = field(default_factory=list)
    cost_usd: float | None = None
    priced: bool = False  # cost_usd is final (None then means: unknown price)

    @property
    def tenant(self) -> str | None:
        return self.key.tenant if self.key else None

    @property
    def attempts(self) -> list[AttemptSummary]:
        return self.route.attempts if self.route else []

    def elapsed_ms(self) -> float:
        return (time.monotonic() - self.started) * 1000
