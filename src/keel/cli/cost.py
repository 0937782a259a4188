"""``keel cost``: spend reports, cost per useful output and monthly projections.

Everything here reads the daily spend rollups, which count every request
whether or not its trace was kept, so the numbers are exact under sampling.
A request whose price is unknown is reported as such, never as $0.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict
from datetime import UTC, date, datetime
from typing import TYPE_CHECKING, Any

import click

from keel.cli._base import (
    KeelGroup,
    config_option,
    dumps,
    format_usd,
    open_database,
    parse_duration,
    print_whole,
)
from keel.errors import InvalidRequest

if TYPE_CHECKING:
    from rich.table import Table

    from keel.costs import Projection
    from keel.store import SpendRow, UsefulRow

_COUNTERS = (
    "requests",
    "errors",
    "input_tokens",
    "cached_input_tokens",
    "cache_write_tokens",
    "output_tokens",
)
# Two lines, so the column is no wider than its numbers need.
_UNKNOWN_HEADER = "unknown-cost\nrequests"
_FLOOR_NOTE = "≥: a floor; requests of unknown price are counted apart, never as $0"


@click.group(cls=KeelGroup)
def cost() -> None:
    """Spend by tenant, feature, model...; cost per useful answer; projections."""


@cost.command("report")
@click.option(
    "--by",
    default="tenant",
    show_default=True,
    metavar="DIMS",
    help="Comma-separated: tenant, user, feature, alias, provider_model,"
    " prompt_version, variant, day.",
)
@click.option("--since", default="30d", show_default=True, metavar="DURATION")
@click.option("--until", default=None, metavar="DATE", help="Last UTC day included, YYYY-MM-DD.")
@click.option("--tenant", default=None, help="Only this tenant's spend.")
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["table", "csv", "json"]),
    default="table",
    show_default=True,
)
@config_option
def report(
    by: str, since: str, until: str | None, tenant: str | None, fmt: str, config_path: str
) -> None:
    """Spend per group over whole UTC days, with a total."""
    from keel.store import DIMENSIONS, RequestStore

    dims = parse_dimensions(by, tuple(DIMENSIONS))
    first = since_day(since)
    last = None if until is None else _until_day(until, first)
    with open_database(config_path) as (_, engine):
        rows = RequestStore(engine).spend(dims, since=first, until=last, tenant=tenant)
    if fmt == "csv":
        _write_csv(dims, rows)
    elif fmt == "json":
        payload = {
            "since": first,
            "until": last,
            "by": dims,
            "rows": [_spend_json(r) for r in rows],
            "total": _spend_json(_total(rows)),
        }
        click.echo(dumps(payload))
    else:
        print_whole(_report_table(dims, rows, first, last))


@cost.command("useful")
@click.option(
    "--by",
    default="prompt_version,alias",
    show_default=True,
    metavar="DIMS",
    help="Comma-separated: prompt_version, alias.",
)
@click.option("--since", default="30d", show_default=True, metavar="DURATION")
@click.option("--tenant", default=None, help="Only this tenant's spend.")
@click.option(
    "--format", "fmt", type=click.Choice(["table", "json"]), default="table", show_default=True
)
@config_option
def useful(by: str, since: str, tenant: str | None, fmt: str, config_path: str) -> None:
    """Cost per useful (positively rated) output."""
    from keel.store import RequestStore
    from keel.store.rollups import USEFUL_DIMENSIONS

    dims = parse_dimensions(by, USEFUL_DIMENSIONS)
    first = since_day(since)
    with open_database(config_path) as (_, engine):
        rows = RequestStore(engine).useful_outputs(dims, since=first, tenant=tenant)
    if fmt == "json":
        click.echo(dumps({"since": first, "by": dims, "rows": [asdict(r) for r in rows]}))
        return
    print_whole(_useful_table(dims, rows, first))


@cost.command("project")
@click.option("--qps", type=float, required=True, help="Requests per second to project for.")
@click.option("--window", default="7d", show_default=True, help="Recent traffic to project from.")
@click.option("--tenant", default=None, help="Project from this tenant's traffic only.")
@click.option(
    "--format", "fmt", type=click.Choice(["table", "json"]), default="table", show_default=True
)
@config_option
def project(qps: float, window: str, tenant: str | None, fmt: str, config_path: str) -> None:
    """A 30-day month at --qps with the recent model mix."""
    import math

    from keel.costs import MixEntry, project_monthly
    from keel.store import RequestStore

    if not (math.isfinite(qps) and qps > 0):
        raise InvalidRequest(f"--qps: must be a positive number, not {qps:g}", param="qps")
    start = datetime.now(UTC) - parse_duration(window, "--window")
    with open_database(config_path) as (_, engine):
        mix = RequestStore(engine).recent_mix(start, tenant=tenant)
    if not any(m.requests for m in mix):
        raise InvalidRequest(
            f"--window: no requests since {start:%Y-%m-%d} to project from; try a longer window",
            param="window",
        )
    # Requests that failed before reaching a model have no provider model.
    entries = [
        MixEntry(m.provider_model or "(no model)", m.requests, m.cost_usd, m.unknown_cost_requests)
        for m in mix
    ]
    projection = project_monthly(entries, qps)
    if fmt == "json":
        click.echo(dumps({"window_since": start, **asdict(projection)}))
        return
    from rich.console import Console

    console = Console(highlight=False)
    print_whole(_projection_table(projection, start), console)
    console.print(_unknown_line(projection.unknown_share))


# --- input ----------------------------------------------------------------------


def parse_dimensions(text: str, allowed: Sequence[str]) -> list[str]:
    """``tenant,feature`` as a list, refusing unknown names with the ones allowed."""
    dims = list(dict.fromkeys(d.strip() for d in text.split(",") if d.strip()))
    unknown = [d for d in dims if d not in allowed]
    if unknown or not dims:
        named = f"unknown dimension(s) {', '.join(map(repr, unknown))}" if unknown else "empty"
        raise InvalidRequest(
            f"--by: {named}; expected some of {', '.join(allowed)}, comma-separated",
            param="by",
        )
    return dims


def since_day(text: str) -> date:
    """The first UTC day of a ``--since`` window: rollups hold whole days."""
    return (datetime.now(UTC) - parse_duration(text, "--since")).date()


def _until_day(text: str, first: date) -> date:
    try:
        last = date.fromisoformat(text.strip())
    except ValueError:
        raise InvalidRequest(
            f"--until: {text!r} is not a date; expected YYYY-MM-DD", param="until"
        ) from None
    if last < first:
        raise InvalidRequest(
            f"--until: {last} is before the start of --since ({first})", param="until"
        )
    return last


# --- output ---------------------------------------------------------------------


def _label(value: object) -> str:
    if value is None:
        return "(none)"
    return value.isoformat() if isinstance(value, date) else str(value)


def _cost_cell(cost_usd: float, requests: int, unknown: int) -> str:
    if requests and unknown == requests:
        return "unknown"
    return ("≥" if unknown else "") + format_usd(cost_usd)


def _known_cost(row: SpendRow) -> float | None:
    """None when no request of the group had a price: unknown, not $0."""
    return None if row.requests and row.unknown_cost_requests == row.requests else row.cost_usd


def _total(rows: Sequence[SpendRow]) -> SpendRow:
    from keel.store import SpendRow

    sums = {n: sum(getattr(r, n) for r in rows) for n in (*_COUNTERS, "unknown_cost_requests")}
    return SpendRow(group={}, cost_usd=sum(r.cost_usd for r in rows), **sums)


def _spend_json(row: SpendRow) -> dict[str, Any]:
    return {
        **row.group,
        **{name: getattr(row, name) for name in _COUNTERS},
        "cost_usd": _known_cost(row),
        "unknown_cost_requests": row.unknown_cost_requests,
    }


def _write_csv(dims: list[str], rows: Sequence[SpendRow]) -> None:
    import csv
    import sys

    writer = csv.writer(sys.stdout, lineterminator="\n")
    writer.writerow([*dims, *_COUNTERS, "cost_usd", "unknown_cost_requests"])
    for r in rows:
        known = _known_cost(r)
        writer.writerow(
            [
                *("" if r.group[d] is None else _label(r.group[d]) for d in dims),
                *(getattr(r, name) for name in _COUNTERS),
                # Empty, not 0, when unknown; nano-dollar digits, never exponent notation.
                "" if known is None else f"{known:.9f}",
                r.unknown_cost_requests,
            ]
        )


def _window(first: date, last: date | None) -> str:
    return f"{first} to {last or 'today'} (UTC days)"


def _table(
    title: str,
    caption: str | None,
    headers: list[str],
    labels: int,
    rows: list[list[str]],
    total: list[str] | None = None,
) -> Table:
    """A table whose first ``labels`` columns are text and the rest numbers.

    Every column is at least as wide as its widest cell and its header's
    longest line (labels: up to 24, then they fold), so on a narrow terminal
    ``print_whole`` prints the table wider instead of breaking
    "$2,419,200.00" in two or cutting off the last columns.
    """
    from rich import box
    from rich.table import Table

    # Rules under the header and above the total only: columns stay narrow.
    table = Table(title=title, caption=caption, box=box.SIMPLE, show_edge=False)
    every = [*rows, *([total] if total else [])]
    header_lines = [max(len(line) for line in h.split("\n")) for h in headers]
    widest = [max([header_lines[i], *(len(row[i]) for row in every)]) for i in range(len(headers))]
    minimum = [min(w, 24) if i < labels else w for i, w in enumerate(widest)]
    for i, header in enumerate(headers):
        table.add_column(
            header,
            justify="left" if i < labels else "right",
            overflow="fold",
            min_width=minimum[i],
        )
    for row in rows:
        table.add_row(*row)
    if total is not None:
        table.add_section()
        table.add_row(*total, style="bold")
    return table


def _report_table(
    dims: list[str], rows: Sequence[SpendRow], first: date, last: date | None
) -> Table:
    total = _total(rows)
    unknown = total.unknown_cost_requests
    headers = [*dims, "requests", "errors", "tokens\nin", "tokens\nout", "cost", _UNKNOWN_HEADER]
    return _table(
        f"spend {_window(first, last)}",
        _FLOOR_NOTE if unknown else ("no spend recorded" if not rows else None),
        headers,
        len(dims),
        [[*(_label(r.group[d]) for d in dims), *_spend_cells(r)] for r in rows],
        ["total", *([""] * (len(dims) - 1)), *_spend_cells(total)],
    )


def _spend_cells(r: SpendRow) -> list[str]:
    return [
        *(f"{n:,}" for n in (r.requests, r.errors, r.input_tokens, r.output_tokens)),
        _cost_cell(r.cost_usd, r.requests, r.unknown_cost_requests),
        f"{r.unknown_cost_requests:,}",
    ]


def _per_useful(r: UsefulRow) -> str:
    if r.cost_per_useful is None:
        return "-"  # nothing rated useful: no denominator
    return ("≥" if r.unknown_cost_requests else "") + format_usd(r.cost_per_useful)


def _useful_table(dims: list[str], rows: Sequence[UsefulRow], first: date) -> Table:
    return _table(
        f"cost per useful output {_window(first, None)}",
        "useful: latest feedback scored ≥ 0.5; only stored (sampled) requests carry feedback",
        [*dims, "requests", "cost", _UNKNOWN_HEADER, "useful", "cost per\nuseful"],
        len(dims),
        [
            [
                *(_label(r.group[d]) for d in dims),
                f"{r.requests:,}",
                _cost_cell(r.cost_usd, r.requests, r.unknown_cost_requests),
                f"{r.unknown_cost_requests:,}",
                f"{r.useful:,}",
                _per_useful(r),
            ]
            for r in rows
        ],
    )


def _projection_table(projection: Projection, start: datetime) -> Table:
    def per_request(value: float | None) -> str:
        return "unknown" if value is None else format_usd(value)

    return _table(
        f"monthly projection at {projection.qps:g} qps (30-day month, mix since {start:%Y-%m-%d})",
        None,
        ["model", "share", "requests/\nmonth", "cost/\nrequest", "monthly\ncost", "unknown\nprice"],
        1,
        [
            [
                m.name,
                f"{m.share:.1%}",
                f"{m.requests_per_month:,.0f}",
                per_request(m.cost_per_request_usd),
                _floor(m.monthly_usd, m.unknown_share),
                f"{m.unknown_share:.0%}",
            ]
            for m in projection.models
        ],
        [
            "total",
            "100%",
            f"{projection.requests_per_month:,.0f}",
            "",
            _floor(projection.monthly_usd, projection.unknown_share),
            f"{projection.unknown_share:.0%}",
        ],
    )


def _floor(monthly_usd: float, unknown_share: float) -> str:
    if unknown_share >= 1:
        return "unknown"
    return ("≥" if unknown_share else "") + format_usd(monthly_usd)


def _unknown_line(unknown_share: float) -> str:
    if not unknown_share:
        return "Every request in the window had a known price."
    return (
        f"{unknown_share:.1%} of traffic has an unknown price and is not included:"
        " the total is a floor. Add prices for those models under `prices:` in keel.yaml."
    )
