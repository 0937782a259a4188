"""The pipeline's last step: price the call and leave its record for telemetry.

Everything here runs on the request path, so it only reads what the earlier
stages left on the context and appends one record to the telemetry queue;
spans, log lines, rows and exports are made from it on the writer thread.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Protocol

from keel.config import KeelConfig
from keel.errors import KeelError
from keel.pipeline.context import RequestContext
from keel.providers.base import Json
from keel.telemetry.record import AttemptRecord, RequestRecord, Usage
from keel.tokens import prompt_chars, tokens_for_chars

if TYPE_CHECKING:
    from keel.telemetry.writer import TelemetryWriter


class Pricing(Protocol):
    def cost(self, deployment: str, usage: Usage) -> float | None: ...


class Emitter:
    def __init__(self, config: KeelConfig, prices: Pricing, writer: TelemetryWriter) -> None:
        self._prices = prices
        self._writer = writer
        self._enabled = config.telemetry.enabled
        self._capture = config.telemetry.enabled and config.telemetry.capture_content
        self._no_capture = frozenset(config.telemetry.capture_content_exclude)
        self._deployments = {
            d.name: (d.provider, d.model) for m in config.models for d in m.deployments
        }

    def captures(self, tenant: str | None) -> bool:
        """Keep this tenant's prompts and answers? (telemetry.capture_content)"""
        return self._capture and tenant not in self._no_capture

    def price(self, ctx: RequestContext, usage: Usage | None = None) -> float | None:
        """The call's cost in USD from its usage; None when the price is unknown."""
        if ctx.route is not None and not ctx.priced:
            counted = usage if usage is not None else usage_of(ctx)
            ctx.cost_usd = self._prices.cost(ctx.route.deployment, counted)
            ctx.priced = True
        return ctx.cost_usd

    def finish(self, ctx: RequestContext, http_status: int, error: KeelError | None) -> None:
        """Queue the request's record. Never raises into the response path."""
        if not self._enabled:
            return
        route = ctx.route
        usage = usage_of(ctx)
        self.price(ctx, usage)
        provider, provider_model = self._deployments.get(
            route.deployment if route else "", (None, None)
        )
        response = route.response if route is not None else {}
        t0 = ctx.started
        self._writer.submit(
            RequestRecord(
                request_id=ctx.request_id,
                trace_id=ctx.trace_id,
                span_id=ctx.span_id,
                parent_span_id=ctx.parent_span_id,
                started_at=ctx.received_at,
                operation=ctx.operation,
                stream=ctx.stream,
                http_status=http_status,
                status="error" if error is not None else "ok",
                error_type=error.error_type if error is not None else None,
                tenant=ctx.tenant,
                key_id=ctx.key.id if ctx.key else None,
                end_user=ctx.end_user,
                feature=ctx.metadata.get("feature"),
                metadata=ctx.metadata,
                alias=ctx.alias.alias if ctx.alias else None,
                served_alias=route.alias if route else None,
                deployment=route.deployment if route else None,
                provider=provider,
                provider_model=provider_model,
                response_model=_str(response.get("model")),
                finish_reasons=tuple(ctx.finish_reasons) or _finish_reasons(response),
                usage=usage,
                cost_usd=ctx.cost_usd,
                latency_ms=ctx.elapsed_ms(),
                ttft_ms=ctx.ttft_ms,
                attempts=self._attempts(ctx),
                stages=tuple(
                    [
                        (name, (start - t0) * 1000, (end - start) * 1000)
                        for name, start, end in ctx.stages
                    ]
                ),
                prompt_name=ctx.prompt.name if ctx.prompt else None,
                prompt_version=ctx.prompt.version if ctx.prompt else None,
                prompt_hash=ctx.prompt.content_hash if ctx.prompt else None,
                experiment=ctx.assignment.experiment if ctx.assignment else None,
                variant=ctx.assignment.variant.name if ctx.assignment else None,
                shadow=ctx.shadow,
                extra=ctx.extra,
                request_body=ctx.body if ctx.capture else None,
                response_text=answer_text(ctx) if ctx.capture else None,
            )
        )

    def _attempts(self, ctx: RequestContext) -> tuple[AttemptRecord, ...]:
        out = []
        for a in ctx.attempts:
            provider, model = self._deployments.get(a.deployment, ("", a.deployment))
            out.append(
                AttemptRecord(
                    alias=a.alias,
                    deployment=a.deployment,
                    provider=provider,
                    provider_model=model,
                    outcome=a.outcome,
                    status=a.status,
                    start_ms=max(0.0, (a.started - ctx.started) * 1000),
                    duration_ms=a.latency_ms,
                )
            )
        return tuple(out)


def usage_of(ctx: RequestContext) -> Usage:
    """Usage as the upstream reported it, or counted by Keel when it did not."""
    raw = ctx.usage
    if raw is None and ctx.route is not None and not ctx.stream:
        raw = ctx.route.response.get("usage")
    if isinstance(raw, dict) and not raw.get("estimated"):
        details = raw.get("prompt_tokens_details")
        details = details if isinstance(details, dict) else {}
        return Usage(
            input_tokens=_int(raw.get("prompt_tokens")),
            output_tokens=_int(raw.get("completion_tokens")),
            cached_input_tokens=_int(details.get("cached_tokens")),
            cache_write_tokens=_int(details.get("cache_creation_tokens")),
        )
    if ctx.route is None:
        return Usage()
    # The upstream gave no usage (or the stream broke first): count what we saw.
    output_chars = ctx.streamed_chars if ctx.stream else len(answer_text(ctx) or "")
    return Usage(
        input_tokens=tokens_for_chars(prompt_chars(ctx.body)),
        output_tokens=tokens_for_chars(output_chars),
        estimated=True,
    )


def answer_text(ctx: RequestContext) -> str | None:
    if ctx.stream:
        return "".join(ctx.streamed_text) if ctx.streamed_text is not None else None
    if ctx.route is None:
        return None
    parts = []
    for choice in ctx.route.response.get("choices") or ():
        message = choice.get("message") if isinstance(choice, dict) else None
        content = message.get("content") if isinstance(message, dict) else None
        if isinstance(content, str):
            parts.append(content)
    return "\n".join(parts) if parts else None


def _finish_reasons(response: Json) -> tuple[str, ...]:
    reasons = []
    for choice in response.get("choices") or ():
        reason = choice.get("finish_reason") if isinstance(choice, dict) else None
        if isinstance(reason, str):
            reasons.append(reason)
    return tuple(reasons)


def _int(value: Any) -> int:
    return value if isinstance(value, int) and value > 0 else 0


def _str(value: Any) -> str | None:
    return value if isinstance(value, str) else None
