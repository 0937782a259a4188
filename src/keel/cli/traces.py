"""``keel traces``: list stored requests and show one request's whole story.

An operator tool: it reads every tenant's requests straight from the
configured database (the HTTP ``/v1/traces`` API is the tenant-scoped view).
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, NamedTuple

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
from keel.errors import InvalidRequest, NotFound

if TYPE_CHECKING:
    from rich.console import RenderableType
    from rich.tree import Tree

    from keel.store import StoredRequest


@click.group(cls=KeelGroup)
def traces() -> None:
    """Inspect stored requests: what was asked, where it went, what it cost."""


@traces.command("list")
@click.option("--tenant", default=None, help="Only this tenant's requests.")
@click.option("--status", type=click.Choice(["ok", "error"]), default=None)
@click.option("--alias", default=None, help="Only requests for this alias (as requested).")
@click.option("--prompt-version", default=None, help="Only this prompt version.")
@click.option("--since", default=None, metavar="DURATION", help="e.g. 30m, 24h, 7d.")
@click.option("--slow", type=float, default=None, metavar="MS", help="Latency at least MS.")
@click.option("--errors", is_flag=True, help="Only failed requests.")
@click.option("--limit", type=int, default=50, show_default=True)
@click.option(
    "--format", "fmt", type=click.Choice(["table", "json"]), default="table", show_default=True
)
@config_option
def list_(
    tenant: str | None,
    status: str | None,
    alias: str | None,
    prompt_version: str | None,
    since: str | None,
    slow: float | None,
    errors: bool,
    limit: int,
    fmt: str,
    config_path: str,
) -> None:
    """Stored requests, newest first."""
    from keel.store import RequestStore, TraceFilter
    from keel.store.db import MAX_LIST

    # Checked before opening the database, so a typo costs nothing.
    if not 1 <= limit <= MAX_LIST:
        raise InvalidRequest(f"--limit: must be from 1 to {MAX_LIST}, not {limit}", param="limit")
    if slow is not None and slow < 0:
        raise InvalidRequest(f"--slow: must be 0 or more milliseconds, not {slow:g}", param="slow")
    start = None if since is None else datetime.now(UTC) - parse_duration(since, "--since")
    filters = TraceFilter(
        tenant=tenant,
        status=status,
        alias=alias,
        prompt_version=prompt_version,
        since=start,
        min_latency_ms=slow,
        errors_only=errors,
    )
    with open_database(config_path) as (_, engine):
        rows = RequestStore(engine).list_requests(filters, limit=limit)
    if fmt == "json":
        click.echo(dumps([r.as_dict() for r in rows]))
        return
    from rich.console import Console

    console = Console(highlight=False)
    print_whole(_list_table(rows, console.width), console)


@traces.command("show")
@click.argument("request_id")
@click.option(
    "--format", "fmt", type=click.Choice(["text", "json"]), default="text", show_default=True
)
@config_option
def show(request_id: str, fmt: str, config_path: str) -> None:
    """Everything stored about REQUEST_ID: header, span tree, feedback, content."""
    stored = load_request(config_path, request_id)
    if fmt == "json":
        click.echo(dumps(stored.as_dict()))
        return
    from rich.console import Console

    console = Console(highlight=False)
    for part in story(stored):
        console.print(part)


def load_request(config_path: str, request_id: str) -> StoredRequest:
    """The stored request of any tenant; ``NotFound`` (exit 2) when it is not stored."""
    from keel.store import RequestStore

    with open_database(config_path) as (_, engine):
        stored = RequestStore(engine).get(request_id, tenant=None)
    if stored is None:
        # Sampling drops ordinary requests and gc deletes old ones: say so, since
        # "not found" for an id the user just saw in a log is otherwise puzzling.
        raise NotFound(
            f"no stored request {request_id!r}; it may have been sampled out or"
            " removed by `keel gc`",
            param="request_id",
        )
    return stored


# --- rendering ---------------------------------------------------------------------


def cost_text(cost_usd: float | None) -> str:
    return "unknown" if cost_usd is None else format_usd(cost_usd)


def ms(value: float | None) -> str:
    return "-" if value is None else f"{value:,.0f} ms"


def _status(stored: StoredRequest) -> str:
    if stored.status == "ok":
        return "[green]ok[/]"
    return f"[red]{stored.http_status} {stored.error_type or 'error'}[/]"


def _route(stored: StoredRequest) -> str:
    alias = stored.alias or "-"
    return alias if stored.deployment is None else f"{alias} → {stored.deployment}"


class _Column(NamedTuple):
    header: str
    cell: Callable[[StoredRequest], str]
    right: bool = False
    # 0: always shown. On a narrow terminal the highest rank gives way first,
    # so the columns that stay are whole instead of every one folded thin.
    give_way: int = 0


_STATUS_COLUMN = _Column("status", lambda r: "ok" if r.status == "ok" else str(r.http_status))
_LIST_COLUMNS = (
    _Column("time", lambda r: r.started_at.strftime("%m-%d %H:%M:%S")),
    # Whole, so it can be copied into `keel traces show`.
    _Column("request id", lambda r: r.request_id),
    _Column("tenant", lambda r: r.tenant or "-", give_way=4),
    _Column("alias → deployment", _route, give_way=5),
    _STATUS_COLUMN,
    _Column(
        "tokens in/out", lambda r: f"{r.input_tokens:,}/{r.output_tokens:,}", right=True, give_way=3
    ),
    _Column("cost", lambda r: cost_text(r.cost_usd), right=True, give_way=1),
    _Column("latency", lambda r: ms(r.latency_ms), right=True, give_way=2),
    _Column("ttft", lambda r: ms(r.ttft_ms), right=True, give_way=6),
    _Column("tries", lambda r: str(r.attempt_count), right=True, give_way=7),
)
_GAP = 2  # between columns: one cell of padding on each side


def _list_table(rows: list[StoredRequest], width: int) -> RenderableType:
    from rich.cells import cell_len
    from rich.table import Table
    from rich.text import Text

    cells = {c.header: [c.cell(r) for r in rows] for c in _LIST_COLUMNS}
    need = {h: max(cell_len(x) for x in [h, *values]) for h, values in cells.items()}
    shown = list(_LIST_COLUMNS)
    for column in sorted(_LIST_COLUMNS, key=lambda c: -c.give_way):
        fits = sum(need[c.header] + _GAP for c in shown) - _GAP <= width
        if not rows or fits or not column.give_way:
            break
        shown.remove(column)
    hidden = [c.header for c in _LIST_COLUMNS if c not in shown]
    caption = "times in UTC" if rows else "no requests"
    if hidden:
        caption += f"; too narrow for {', '.join(hidden)} (see --format json)"
    table = Table(box=None, pad_edge=False, caption=caption)
    for column in shown:
        fixed = not column.give_way
        table.add_column(
            column.header,
            justify="right" if column.right else "left",
            no_wrap=fixed,
            min_width=need[column.header] if fixed else None,
            overflow="fold",
        )
    for i, row in enumerate(rows):
        color = "green" if row.status == "ok" else "red"  # the error type is left to `show`
        table.add_row(
            *(Text(cells[c.header][i], style=color if c is _STATUS_COLUMN else "") for c in shown)
        )
    return table


def story(stored: StoredRequest) -> list[RenderableType]:
    """The renderables of ``keel traces show``, in reading order."""
    from rich.panel import Panel
    from rich.text import Text

    parts: list[RenderableType] = [_header(stored), span_tree(stored), _feedback(stored)]
    content = stored.content or {}
    body = content.get("request_body")
    if body is not None:
        parts.append(Panel(Text(dumps(body)), title="captured request", title_align="left"))
    if content.get("response_text") is not None:
        answer = Text(str(content["response_text"]))
        parts.append(Panel(answer, title="captured answer", title_align="left"))
    if not content:
        parts.append(Text("content not captured for this request", style="dim"))
    return parts


def _tokens(stored: StoredRequest) -> str:
    extras = []
    if stored.cached_input_tokens:
        extras.append(f"{stored.cached_input_tokens:,} cached")
    if stored.cache_write_tokens:
        extras.append(f"{stored.cache_write_tokens:,} cache write")
    inside = f" ({', '.join(extras)})" if extras else ""
    estimated = " [dim](estimated by Keel)[/]" if stored.usage_estimated else ""
    return f"{stored.input_tokens:,} in{inside} / {stored.output_tokens:,} out{estimated}"


def _header(stored: StoredRequest) -> RenderableType:
    from rich.table import Table

    def either(*values: str | None) -> str:
        return " ".join(v for v in values if v) or "-"

    prompt = "-"
    if stored.prompt_name or stored.prompt_version:
        prompt = f"{stored.prompt_name or '?'} v{stored.prompt_version or '?'}"
    served = stored.served_alias
    alias = stored.alias or "-"
    if served and served != stored.alias:
        alias += f" (served by fallback {served})"
    fields = {
        "request": f"{stored.request_id}  [dim]trace {stored.trace_id}[/]",
        "time": stored.started_at.strftime("%Y-%m-%d %H:%M:%S.%f")[:-3] + " UTC",
        "tenant": stored.tenant or "-",
        "user": stored.end_user or "-",
        "feature": stored.feature or "-",
        "alias": alias,
        "deployment": stored.deployment or "-",
        "prompt": prompt,
        "variant": stored.variant or "-",
        "cache": stored.cache or "-",
        "guardrail": stored.guardrail or "-",
        "status": _status(stored),
        "cost": cost_text(stored.cost_usd),
        "tokens": _tokens(stored),
        "latency": either(ms(stored.latency_ms), "(stream)" if stored.stream else None),
        "ttft": ms(stored.ttft_ms),
    }
    grid = Table.grid(padding=(0, 2))
    grid.add_column(style="bold")
    grid.add_column(overflow="fold")
    for name, value in fields.items():
        grid.add_row(name, value)
    return grid


def span_tree(stored: StoredRequest) -> Tree:
    """Stages in order, each upstream attempt under the stage it ran in."""
    from rich.tree import Tree

    root = Tree(f"[bold]{stored.operation}[/] {stored.request_id}  {ms(stored.latency_ms)}")
    stages: list[dict[str, Any]] = list(stored.detail.get("stages", []))
    attempts: list[dict[str, Any]] = list(stored.detail.get("attempts", []))
    nodes = []
    for stage in sorted(stages, key=lambda s: float(s["start_ms"])):
        label = f"{stage['name']}  {_span(stage)}"
        nodes.append((stage, root.add(label)))
    for number, attempt in enumerate(attempts, start=1):
        # Attempts start inside the route stage; older rows or odd clocks may not
        # line up, and then the attempt hangs off the root rather than vanishing.
        parent = next((node for s, node in nodes if _contains(s, attempt)), root)
        parent.add(_attempt_label(number, attempt))
    return root


def _span(item: dict[str, Any]) -> str:
    return f"[dim]+{float(item['start_ms']):,.1f} ms[/]  {float(item['duration_ms']):,.1f} ms"


def _contains(stage: dict[str, Any], attempt: dict[str, Any]) -> bool:
    start = float(stage["start_ms"])
    return start <= float(attempt["start_ms"]) <= start + float(stage["duration_ms"])


def _attempt_label(number: int, attempt: dict[str, Any]) -> str:
    outcome = str(attempt.get("outcome", "?"))
    colour = "green" if outcome == "ok" else "red"
    status = attempt.get("status")
    code = f" {status}" if status is not None else ""
    return (
        f"attempt {number} {attempt.get('deployment', '?')} [dim]({attempt.get('alias', '?')})[/]"
        f"  {_span(attempt)}  [{colour}]{outcome}{code}[/]"
    )


def _feedback(stored: StoredRequest) -> RenderableType:
    from rich.table import Table
    from rich.text import Text

    from keel.store.feedback import USEFUL_SCORE

    if not stored.feedback:
        return Text("no feedback", style="dim")
    table = Table(title="feedback", title_justify="left", box=None, pad_edge=False)
    for column in ("time", "score", "tags", "comment"):
        table.add_column(column, overflow="fold")
    for note in stored.feedback:
        table.add_row(
            note.created_at.strftime("%Y-%m-%d %H:%M"),
            f"{note.score:g} ({'positive' if note.score >= USEFUL_SCORE else 'negative'})",
            ", ".join(note.tags) or "-",
            note.comment or "-",
        )
    return table


# --- json ----------------------------------------------------------------------
