"""From ``RequestRecord``s to stored rows and to their share of the rollups.

Pure functions, no I/O: the write path encodes a whole batch in Python, in
one pass, into plain tuples the database driver takes as they are (see
``keel.store._bulk``), so the database sees one statement per table.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import date
from typing import Any

from keel.store.db import json_dumps
from keel.store.tables import ID_LEN, NAME_LEN, SHORT_LEN, SPEND_COUNTERS, TAG_LEN
from keel.telemetry.record import RequestRecord

NANO_PER_USD = 1_000_000_000

# One row as the driver takes it: values in the table's column order.
Row = tuple[Any, ...]
# Epoch seconds -> (the ``started_at`` value, the rollup ``day`` value), both
# already in the form the database stores (see ``keel.store._bulk``).
Stamp = Callable[[float], tuple[Any, Any]]
# day, tenant, end_user, feature, alias, provider_model, prompt_version, variant
RollupKey = tuple[date | str, str, str, str, str, str, str, str]


def cost_nano(cost_usd: float | None) -> int | None:
    """USD as integer nano-USD; None (unknown price) stays None, never 0."""
    return None if cost_usd is None else round(cost_usd * NANO_PER_USD)


def usd(nano: int | None) -> float | None:
    return None if nano is None else nano / NANO_PER_USD


def _clip(value: str | None, limit: int) -> str | None:
    # PostgreSQL enforces varchar widths and refuses NUL in text; one odd
    # caller-supplied value (a `user` field is any JSON string) must not fail
    # the whole batch, so it is cut to fit and a NUL becomes U+FFFD.
    if value is None:
        return None
    if "\x00" in value:
        value = value.replace("\x00", "\ufffd")
    return value if len(value) <= limit else value[:limit]


def _ms(value: float) -> float:
    # 0.1 ms is finer than any of these timings mean, and keeps the JSON short.
    # round(value * 10) / 10 gives what round(value, 1) does at these
    # magnitudes in half the time; a record has about twenty of them.
    return round(value * 10) / 10


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
            {"name": name, "start_ms": _ms(start_ms), "duration_ms": _ms(duration_ms)}
            for name, start_ms, duration_ms in record.stages
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
    if record.extra:  # e.g. a shadow call's judged comparison with the control's answer
        detail.update(record.extra)
    return detail


def _content(record: RequestRecord) -> str | None:
    # SQL NULL (not JSON null) when nothing was captured: "IS NULL" finds those rows.
    if record.request_body is None and record.response_text is None:
        return None
    return json_dumps({"request_body": record.request_body, "response_text": record.response_text})


def encode_batch(
    records: Sequence[RequestRecord], keep: Sequence[bool], stamp: Stamp
) -> tuple[list[Row], list[Row]]:
    """The ``requests`` rows of the kept records and one rollup increment per key.

    A request row holds the record's own facts only, nothing static, in the
    column order of ``tables.requests``; JSON columns are already text.
    An increment is a ``spend_daily`` key (SPEND_KEY, '' for none) followed by
    its counters (SPEND_COUNTERS), for every record, kept or not. Aggregating
    first keeps each key once per statement: PostgreSQL refuses an upsert
    that touches the same row twice, and fewer rows are cheaper anyway.
    One pass: the clipped names, timestamp and cost serve both.
    """
    rows: list[Row] = []
    sums: dict[RollupKey, list[int]] = {}
    for record, kept in zip(records, keep, strict=True):
        at, day = stamp(record.started_at)
        tenant = _clip(record.tenant, ID_LEN)
        end_user = _clip(record.end_user, ID_LEN)
        feature = _clip(record.feature, ID_LEN)
        alias = _clip(record.alias, NAME_LEN)
        provider_model = _clip(record.provider_model, NAME_LEN)
        prompt_version = _clip(record.prompt_version, SHORT_LEN)
        variant = _clip(record.variant, SHORT_LEN)
        usage = record.usage
        nano = cost_nano(record.cost_usd)
        if kept:
            rows.append(
                (
                    record.request_id,
                    record.trace_id,
                    record.span_id,
                    at,
                    tenant,
                    record.key_id,
                    end_user,
                    feature,
                    alias,
                    _clip(record.served_alias, NAME_LEN),
                    _clip(record.deployment, NAME_LEN),
                    provider_model,
                    record.operation,
                    record.stream,
                    record.http_status,
                    record.status,
                    _clip(record.error_type, ID_LEN),
                    usage.input_tokens,
                    usage.cached_input_tokens,
                    usage.cache_write_tokens,
                    usage.output_tokens,
                    usage.estimated,
                    nano,
                    _ms(record.latency_ms),
                    None if record.ttft_ms is None else _ms(record.ttft_ms),
                    len(record.attempts),
                    _clip(record.prompt_name, NAME_LEN),
                    prompt_version,
                    _clip(record.prompt_hash, ID_LEN),
                    _clip(record.experiment, ID_LEN),
                    variant,
                    _clip(record.cache, TAG_LEN),
                    _clip(record.guardrail, TAG_LEN),
                    record.shadow,
                    json_dumps(_detail(record)),
                    _content(record),
                )
            )
        # The alias the caller asked for: what an application owner budgets by.
        key = (
            day,
            tenant or "",
            end_user or "",
            feature or "",
            alias or "",
            provider_model or "",
            prompt_version or "",
            variant or "",
        )
        counters = sums.get(key)
        if counters is None:
            counters = sums[key] = [0] * len(SPEND_COUNTERS)
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
    return rows, [(*key, *values) for key, values in sums.items()]
