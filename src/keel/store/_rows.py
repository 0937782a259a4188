"""From a ``RequestRecord`` to a stored row and to its share of a rollup.

Pure functions, no I/O: the write path builds every row and aggregates the
whole batch in Python, so the database sees one executemany per table.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, date, datetime
from typing import Any

from keel.store.tables import ID_LEN, NAME_LEN, SHORT_LEN, SPEND_COUNTERS, SPEND_KEY, TAG_LEN
from keel.telemetry.record import RequestRecord

NANO_PER_USD = 1_000_000_000

# day, tenant, end_user, feature, alias, provider_model, prompt_version, variant
RollupKey = tuple[date, str, str, str, str, str, str, str]


def cost_nano(cost_usd: float | None) -> int | None:
    """USD as integer nano-USD; None (unknown price) stays None, never 0."""
    return None if cost_usd is None else round(cost_usd * NANO_PER_USD)


def usd(nano: int | None) -> float | None:
    return None if nano is None else nano / NANO_PER_USD


def started_at(record: RequestRecord) -> datetime:
    return datetime.fromtimestamp(record.started_at, UTC)


def _clip(value: str | None, limit: int) -> str | None:
    # PostgreSQL enforces varchar widths; one long caller-supplied value must
    # not fail the whole batch, so it is cut to fit instead.
    return value if value is None or len(value) <= limit else value[:limit]


def _ms(value: float) -> float:
    # 0.1 ms is finer than any of these timings mean, and keeps the JSON short.
    return round(value, 1)


def _detail(record: RequestRecord) -> dict[str, Any]:
    """What a trace view needs beyond the columns; empty parts are left out."""
    detail: dict[str, Any] = {}
    if record.attempts:
        # Spelled out: dataclasses.asdict deep-copies and was a third of the write cost.
        detail["attempts"] = [
            {
                "alias": a.alias,
                "deployment": a.deployment,
                "provider": a.provider,
                "provider_model": a.provider_model,
                "outcome": a.outcome,
                "status": a.status,
                "start_ms": _ms(a.start_ms),
                "duration_ms": _ms(a.duration_ms),
            }
            for a in record.attempts
        ]
    if record.stages:
        detail["stages"] = [
            {"name": s.name, "start_ms": _ms(s.start_ms), "duration_ms": _ms(s.duration_ms)}
            for s in record.stages
        ]
    if record.finish_reasons:
        detail["finish_reasons"] = list(record.finish_reasons)
    if record.metadata:
        detail["metadata"] = dict(record.metadata)
    if record.parent_span_id is not None:
        detail["parent_span_id"] = record.parent_span_id
    if record.response_model is not None:
        detail["response_model"] = record.response_model
    if record.provider is not None:
        detail["provider"] = record.provider
    return detail


def _content(record: RequestRecord) -> dict[str, Any] | None:
    if record.request_body is None and record.response_text is None:
        return None
    return {"request_body": record.request_body, "response_text": record.response_text}


def request_row(record: RequestRecord) -> dict[str, Any]:
    """The ``requests`` row for ``record``: its own facts only, nothing static."""
    usage = record.usage
    return {
        "request_id": record.request_id,
        "trace_id": record.trace_id,
        "span_id": record.span_id,
        "started_at": started_at(record),
        "tenant": _clip(record.tenant, ID_LEN),
        "key_id": record.key_id,
        "end_user": _clip(record.end_user, ID_LEN),
        "feature": _clip(record.feature, ID_LEN),
        "alias": _clip(record.alias, NAME_LEN),
        "served_alias": _clip(record.served_alias, NAME_LEN),
        "deployment": _clip(record.deployment, NAME_LEN),
        "provider_model": _clip(record.provider_model, NAME_LEN),
        "operation": record.operation,
        "stream": record.stream,
        "http_status": record.http_status,
        "status": record.status,
        "error_type": _clip(record.error_type, ID_LEN),
        "input_tokens": usage.input_tokens,
        "cached_input_tokens": usage.cached_input_tokens,
        "cache_write_tokens": usage.cache_write_tokens,
        "output_tokens": usage.output_tokens,
        "usage_estimated": usage.estimated,
        "cost_nano": cost_nano(record.cost_usd),
        "latency_ms": _ms(record.latency_ms),
        "ttft_ms": None if record.ttft_ms is None else _ms(record.ttft_ms),
        "attempt_count": len(record.attempts),
        "prompt_name": _clip(record.prompt_name, NAME_LEN),
        "prompt_version": _clip(record.prompt_version, SHORT_LEN),
        "prompt_hash": _clip(record.prompt_hash, ID_LEN),
        "variant": _clip(record.variant, SHORT_LEN),
        "cache": _clip(record.cache, TAG_LEN),
        "guardrail": _clip(record.guardrail, TAG_LEN),
        "shadow": record.shadow,
        "detail": _detail(record),
        "content": _content(record),
    }


def _key_part(value: str | None, limit: int) -> str:
    return _clip(value, limit) or ""


def rollup_key(record: RequestRecord) -> RollupKey:
    """The ``spend_daily`` row ``record`` counts towards ('' for none, UTC day)."""
    return (
        started_at(record).date(),
        _key_part(record.tenant, ID_LEN),
        _key_part(record.end_user, ID_LEN),
        _key_part(record.feature, ID_LEN),
        # The alias the caller asked for: what an application owner budgets by.
        _key_part(record.alias, NAME_LEN),
        _key_part(record.provider_model, NAME_LEN),
        _key_part(record.prompt_version, SHORT_LEN),
        _key_part(record.variant, SHORT_LEN),
    )


def aggregate(records: Iterable[RequestRecord]) -> list[dict[str, Any]]:
    """One rollup increment per distinct key in ``records``.

    Aggregating first keeps each key once per statement: PostgreSQL refuses an
    upsert that touches the same row twice, and fewer rows are cheaper anyway.
    """
    sums: dict[RollupKey, list[int]] = {}
    for record in records:
        counters = sums.setdefault(rollup_key(record), [0] * len(SPEND_COUNTERS))
        usage = record.usage
        nano = cost_nano(record.cost_usd)
        counters[0] += 1
        counters[1] += record.status == "error"
        counters[2] += usage.input_tokens
        counters[3] += usage.cached_input_tokens
        counters[4] += usage.cache_write_tokens
        counters[5] += usage.output_tokens
        if nano is None:
            counters[7] += 1
        else:
            counters[6] += nano
    return [
        dict(zip(SPEND_KEY, key, strict=True)) | dict(zip(SPEND_COUNTERS, values, strict=True))
        for key, values in sums.items()
    ]
