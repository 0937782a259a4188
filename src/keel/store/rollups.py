"""Reading the daily spend rollups: spend by dimension, cost per useful output, model mix.

Rollups hold every request, sampled or not, so these answers are exact
whatever the trace sampling keeps. The write side is ``RequestStore.write_batch``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, time
from typing import Any

import sqlalchemy as sa

from keel.errors import InvalidRequest
from keel.store import feedback as fb
from keel.store._rows import NANO_PER_USD
from keel.store.tables import SPEND_COUNTERS, requests, spend_daily

GroupValue = str | date | None

# Public dimension names → rollup columns. "user" reads better on a CLI than end_user.
DIMENSIONS: dict[str, str] = {
    "tenant": "tenant",
    "user": "end_user",
    "feature": "feature",
    "alias": "alias",
    "provider_model": "provider_model",
    "prompt_version": "prompt_version",
    "variant": "variant",
    "day": "day",
}
USEFUL_DIMENSIONS = ("prompt_version", "alias")


@dataclass(frozen=True, slots=True)
class SpendRow:
    """One group of the spend report; ``group`` maps each dimension to its value (None: none)."""

    group: dict[str, GroupValue]
    requests: int
    errors: int
    input_tokens: int
    cached_input_tokens: int
    cache_write_tokens: int
    output_tokens: int
    cost_usd: float  # requests of known price only
    unknown_cost_requests: int  # requests whose price was unknown: not in cost_usd


@dataclass(frozen=True, slots=True)
class UsefulRow:
    group: dict[str, GroupValue]
    requests: int
    cost_usd: float
    unknown_cost_requests: int
    useful: int  # requests whose latest feedback scored >= 0.5
    cost_per_useful: float | None  # None when nothing was rated useful


@dataclass(frozen=True, slots=True)
class MixRow:
    provider_model: str | None
    requests: int
    input_tokens: int
    output_tokens: int
    cost_usd: float
    unknown_cost_requests: int


def check_dimensions(by: Sequence[str], allowed: Sequence[str]) -> list[str]:
    """``by`` without repeats; ``InvalidRequest`` naming every unknown dimension."""
    if isinstance(by, str):
        by = [by]
    unknown = [name for name in by if name not in allowed]
    if unknown:
        raise InvalidRequest(
            f"by: unknown dimension(s) {', '.join(map(repr, unknown))};"
            f" expected some of {', '.join(allowed)}",
            param="by",
        )
    return list(dict.fromkeys(by))


def _day(value: date, param: str) -> date:
    if not isinstance(value, date):
        raise InvalidRequest(f"{param}: expected a date", param=param)
    # A datetime is a date too; the rollups only know whole UTC days.
    return value.astimezone(UTC).date() if isinstance(value, datetime) else value


def _value(dimension: str, raw: Any) -> GroupValue:
    # Rollup keys store '' for "none" (so the unique key works); callers get None.
    if dimension == "day":
        return raw if isinstance(raw, date) else date.fromisoformat(str(raw))
    return raw or None


def _usd(nano: Any) -> float:
    # PostgreSQL sums BIGINT into NUMERIC (a Decimal); int() makes both databases alike.
    return int(nano or 0) / NANO_PER_USD


def spend(
    conn: sa.Connection,
    by: Sequence[str],
    *,
    since: date,
    until: date | None,
    tenant: str | None,
) -> list[SpendRow]:
    dims = check_dimensions(by, tuple(DIMENSIONS))
    first = _day(since, "since")
    last = None if until is None else _day(until, "until")
    if last is not None and last < first:
        raise InvalidRequest("until: must not be before since", param="until")
    columns = [spend_daily.c[DIMENSIONS[d]] for d in dims]
    sums = [sa.func.sum(spend_daily.c[c]).label(c) for c in SPEND_COUNTERS]
    query = sa.select(*columns, *sums).where(spend_daily.c.day >= first).group_by(*columns)
    if last is not None:
        query = query.where(spend_daily.c.day <= last)
    if tenant is not None:
        query = query.where(spend_daily.c.tenant == tenant)
    by_day = [spend_daily.c.day] if "day" in dims else []
    query = query.order_by(*by_day, sa.func.sum(spend_daily.c.cost_nano).desc(), *columns)
    rows = []
    for row in conn.execute(query):
        counts = row[len(dims) :]
        if not counts[0]:  # no grouping and no data: SUM over nothing is one NULL row
            continue
        totals = dict(zip(SPEND_COUNTERS, (int(n or 0) for n in counts), strict=True))
        rows.append(
            SpendRow(
                group={d: _value(d, v) for d, v in zip(dims, row[: len(dims)], strict=True)},
                requests=totals["requests"],
                errors=totals["errors"],
                input_tokens=totals["input_tokens"],
                cached_input_tokens=totals["cached_input_tokens"],
                cache_write_tokens=totals["cache_write_tokens"],
                output_tokens=totals["output_tokens"],
                cost_usd=totals["cost_nano"] / NANO_PER_USD,
                unknown_cost_requests=totals["unknown_cost_requests"],
            )
        )
    return rows


def useful_outputs(
    conn: sa.Connection, by: Sequence[str], *, since: date, tenant: str | None
) -> list[UsefulRow]:
    """Spend (from rollups) per positively rated request (from feedback on stored rows).

    Only stored (sampled-in) requests can carry feedback, so ``useful`` counts
    rated requests, not every useful answer; compare versions under one sampling policy.
    """
    dims = check_dimensions(by, USEFUL_DIMENSIONS)
    first = _day(since, "since")
    spend_cols = [spend_daily.c[d] for d in dims]
    spent = (
        sa.select(
            *spend_cols,
            sa.func.sum(spend_daily.c.requests),
            sa.func.sum(spend_daily.c.cost_nano),
            sa.func.sum(spend_daily.c.unknown_cost_requests),
        )
        .where(spend_daily.c.day >= first)
        .group_by(*spend_cols)
    )
    row_cols = [sa.func.coalesce(requests.c[d], "") for d in dims]
    useful = (
        sa.select(*row_cols, sa.func.count())
        .where(
            requests.c.request_id.in_(fb.latest_useful()),
            requests.c.started_at >= datetime.combine(first, time(), UTC),
        )
        .group_by(*row_cols)
    )
    if tenant is not None:
        spent = spent.where(spend_daily.c.tenant == tenant)
        useful = useful.where(requests.c.tenant == tenant)
    n = len(dims)
    counts = {tuple(row[:n]): int(row[n]) for row in conn.execute(useful)}
    rows = []
    for row in conn.execute(spent):
        key = tuple(row[:n])
        cost = _usd(row[n + 1])
        hits = counts.get(key, 0)
        rows.append(
            UsefulRow(
                group={d: _value(d, v) for d, v in zip(dims, key, strict=True)},
                requests=int(row[n] or 0),
                cost_usd=cost,
                unknown_cost_requests=int(row[n + 2] or 0),
                useful=hits,
                cost_per_useful=cost / hits if hits else None,
            )
        )
    return sorted(rows, key=lambda r: -r.cost_usd)


def recent_mix(conn: sa.Connection, since: datetime, *, tenant: str | None) -> list[MixRow]:
    """Requests and cost per provider model since ``since`` (rounded down to its UTC day)."""
    if not isinstance(since, datetime) or since.tzinfo is None:
        raise InvalidRequest("since: must be a timezone-aware datetime", param="since")
    model = spend_daily.c.provider_model
    cost = sa.func.sum(spend_daily.c.cost_nano)
    query = (
        sa.select(
            model,
            sa.func.sum(spend_daily.c.requests),
            sa.func.sum(spend_daily.c.input_tokens),
            sa.func.sum(spend_daily.c.output_tokens),
            cost,
            sa.func.sum(spend_daily.c.unknown_cost_requests),
        )
        .where(spend_daily.c.day >= _day(since, "since"))
        .group_by(model)
        .order_by(cost.desc(), model)
    )
    if tenant is not None:
        query = query.where(spend_daily.c.tenant == tenant)
    return [
        MixRow(
            provider_model=name or None,
            requests=int(n),
            input_tokens=int(tokens_in or 0),
            output_tokens=int(tokens_out or 0),
            cost_usd=_usd(nano),
            unknown_cost_requests=int(unknown or 0),
        )
        for name, n, tokens_in, tokens_out, nano, unknown in conn.execute(query)
    ]
