"""``keel audit`` and ``keel events``: what operators changed, and what the alerts noticed."""

from __future__ import annotations

from datetime import UTC, datetime

import click

from keel.cli._base import config_option, dumps, open_database, parse_duration
from keel.cli.tenants import TABLE_OR_JSON, audit_table
from keel.errors import InvalidRequest

MAX_LIST = 1000


def _since(text: str | None) -> datetime | None:
    return None if text is None else datetime.now(UTC) - parse_duration(text, "--since")


def _check_limit(limit: int) -> None:
    if not 1 <= limit <= MAX_LIST:
        raise InvalidRequest(f"--limit: must be from 1 to {MAX_LIST}, not {limit}", param="limit")


@click.command("audit")
@click.option(
    "--target",
    default=None,
    metavar="TARGET",
    help="tenant:NAME or key:PREFIX; a bare NAME means tenant:NAME.",
)
@click.option("--action", default=None, help="e.g. tenant.suspend, key.revoke.")
@click.option("--actor", default=None, help="e.g. cli:alice, key:sk-keel-Ab3x.")
@click.option("--since", default=None, metavar="DURATION", help="e.g. 24h, 7d.")
@click.option("--limit", type=int, default=50, show_default=True)
@TABLE_OR_JSON
@config_option
def audit(
    target: str | None,
    action: str | None,
    actor: str | None,
    since: str | None,
    limit: int,
    fmt: str,
    config_path: str,
) -> None:
    """Changes to tenants and keys, newest first: who, what, before and after, why."""
    from keel.store import AuditStore

    _check_limit(limit)
    start = _since(since)
    if target is not None and ":" not in target:
        target = f"tenant:{target}"
    with open_database(config_path) as (_, engine):
        rows = AuditStore(engine).list(
            target=target, action=action, actor=actor, since=start, limit=limit
        )
    if fmt == "json":
        click.echo(dumps([row.as_dict() for row in rows]))
        return
    from rich.console import Console

    if not rows:
        click.echo("no audit rows match")
        return
    Console(highlight=False).print(audit_table(rows))


@click.command("events")
@click.option("--tenant", default=None, help="Only this tenant's events.")
@click.option("--kind", default=None, help="e.g. budget_threshold, cost_anomaly.")
@click.option("--since", default=None, metavar="DURATION", help="e.g. 24h, 7d.")
@click.option("--limit", type=int, default=50, show_default=True)
@TABLE_OR_JSON
@config_option
def events(
    tenant: str | None, kind: str | None, since: str | None, limit: int, fmt: str, config_path: str
) -> None:
    """Events the alerts raised (budget thresholds, cost anomalies), newest first."""
    from keel.store import EventStore

    _check_limit(limit)
    start = _since(since)
    with open_database(config_path) as (_, engine):
        rows = EventStore(engine).list(tenant=tenant, since=start, kind=kind, limit=limit)
    if fmt == "json":
        click.echo(dumps([row.as_dict() for row in rows]))
        return
    if not rows:
        click.echo("no events match")
        return
    from rich.console import Console
    from rich.table import Table

    table = Table(box=None, pad_edge=False)
    for column in ("at (UTC)", "tenant", "kind", "severity", "message"):
        table.add_column(column, overflow="fold")
    for row in rows:
        table.add_row(
            row.at.strftime("%Y-%m-%d %H:%M"),
            row.tenant or "-",
            row.kind,
            row.severity,
            row.message,
        )
    Console(highlight=False).print(table)
