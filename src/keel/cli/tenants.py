"""``keel tenants``: create tenants, set their tier and limit overrides, suspend and resume.

Every change is audited (``keel audit``) with the actor ``--actor`` names,
``cli:<os user>`` by default. Suspensions are written to the store, which
every gateway replica re-reads within ``limits.refresh_s``; with the Redis
limits backend they are also pushed to Redis so replicas refuse at once.
"""

from __future__ import annotations

import getpass
import re
from collections.abc import Callable, Iterable, Mapping
from datetime import date, datetime
from typing import TYPE_CHECKING, Any, TypeVar

import click

from keel.cli._base import KeelGroup, config_option, dumps, open_database
from keel.errors import InvalidRequest, KeelError

if TYPE_CHECKING:
    from rich.table import Table
    from sqlalchemy import Engine

    from keel.config import KeelConfig, Tier
    from keel.store import AuditRecord, TenantRecord, TenantStore

F = TypeVar("F", bound=Callable[..., Any])
_ISO_TIME = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?\+00:00")

TABLE_OR_JSON = click.option(
    "--format",
    "fmt",
    type=click.Choice(["table", "json"]),
    default="table",
    show_default=True,
    help="json prints one machine-readable document for scripts.",
)


def default_actor() -> str:
    """``cli:<os user>``: who the audit log names when ``--actor`` is not given."""
    try:
        return f"cli:{getpass.getuser()}"
    except (OSError, KeyError):  # no login name (a bare container): still say it was the CLI
        return "cli:unknown"


def actor_option(command: F) -> F:
    return click.option(
        "--actor",
        default=None,
        metavar="WHO",
        help="Who the audit log names for this change [default: cli:<os user>].",
    )(command)


def limit_option(command: F) -> F:
    return click.option(
        "--limit",
        "limits",
        multiple=True,
        metavar="PATH=VALUE",
        help="Override one tier field, e.g. tenant.rpm=100 or budget.daily_usd=5"
        " (null = unlimited). Repeatable.",
    )(command)


def parse_limit_options(values: Iterable[str]) -> dict[str, Any]:
    """``--limit PATH=VALUE`` options as ``{path: value}``, values read as YAML scalars.

    ``100`` is a number, ``null`` is None (unlimited), ``[fast, smart]`` a
    list; anything else stays text, so validation names the field it reached.
    """
    import yaml

    parsed: dict[str, Any] = {}
    for item in values:
        path, sep, raw = item.partition("=")
        if not sep or not path.strip():
            raise InvalidRequest(
                f"--limit: expected PATH=VALUE such as tenant.rpm=100, not {item!r}",
                param="--limit",
            )
        try:
            value = yaml.safe_load(raw) if raw.strip() else None
        except yaml.YAMLError:
            value = raw
        if isinstance(value, date | bytes):
            value = raw  # YAML reads 2030-01-01 as a date; no tier field is one
        parsed[path.strip()] = value
    return parsed


def check_tier_option(config: KeelConfig, tier: str | None, option: str = "--tier") -> None:
    """Refuse a tier keel.yaml does not define, naming the ones it does."""
    if tier is None or tier in config.tiers:
        return
    known = ", ".join(sorted(config.tiers)) or "none (keel.yaml has no tiers:)"
    raise InvalidRequest(f'{option}: unknown tier "{tier}"; known tiers: {known}', param=option)


def tenant_store(config: KeelConfig, engine: Engine) -> TenantStore:
    """A tenant store that accepts only the tiers and aliases ``config`` defines."""
    from keel.store import TenantStore

    return TenantStore(engine, tiers=config.tiers.keys(), aliases=_aliases(config))


def _aliases(config: KeelConfig) -> list[str]:
    return [model.alias for model in config.models]


def push_suspension(config: KeelConfig, tenant: str, reason: str | None) -> None:
    """Push a suspension (or its end, ``reason=None``) to Redis when that is the backend.

    The store is already written and every replica re-reads it within
    ``limits.refresh_s``; this makes replicas on Redis refuse on the very
    next request. Imported lazily: only Redis deployments pay for it.
    """
    if config.limits.backend != "redis":
        return
    import asyncio

    from keel.tenants import propagate_suspension

    try:
        asyncio.run(propagate_suspension(config, tenant, reason))
    except KeelError as error:
        state = "suspended" if reason is not None else "resumed"
        raise KeelError(
            f"tenant {tenant} is {state} in the store (replicas apply it within"
            f" {config.limits.refresh_s:g}s), but pushing it to Redis failed: {error.message}"
        ) from None


@click.group(cls=KeelGroup)
def tenants() -> None:
    """Tenants: tiers, limit overrides, suspension (kill switch); every change is audited."""


@tenants.command("create")
@click.argument("name")
@click.option("--tier", default=None, help="One of the tiers in keel.yaml.")
@limit_option
@click.option("--reason", default=None, help="Why, for the audit log.")
@actor_option
@TABLE_OR_JSON
@config_option
def create(
    name: str,
    tier: str | None,
    limits: tuple[str, ...],
    reason: str | None,
    actor: str | None,
    fmt: str,
    config_path: str,
) -> None:
    """Create tenant NAME (an error if it exists)."""
    from keel.store import apply_limit_changes

    overrides = parse_limit_options(limits)
    with open_database(config_path) as (config, engine):
        check_tier_option(config, tier)
        record = tenant_store(config, engine).create(
            name,
            tier=tier,
            limits=apply_limit_changes(None, overrides),
            actor=actor or default_actor(),
            reason=reason,
        )
    _print_record(record, fmt, f"created tenant {record.name}")


@tenants.command("set")
@click.argument("name")
@click.option("--tier", default=None, help="One of the tiers in keel.yaml.")
@click.option("--clear-tier", is_flag=True, help="Remove the tenant's tier (the default applies).")
@limit_option
@click.option(
    "--clear-limit",
    "clear_limits",
    multiple=True,
    metavar="PATH",
    help="Remove one override, e.g. tenant.rpm, so the tier's value applies again. Repeatable.",
)
@click.option("--reason", default=None, help="Why, for the audit log.")
@actor_option
@TABLE_OR_JSON
@config_option
def set_(
    name: str,
    tier: str | None,
    clear_tier: bool,
    limits: tuple[str, ...],
    clear_limits: tuple[str, ...],
    reason: str | None,
    actor: str | None,
    fmt: str,
    config_path: str,
) -> None:
    """Change tenant NAME's tier and limit overrides (in one audited change)."""
    from keel.store import UNSET

    if tier is not None and clear_tier:
        raise InvalidRequest("--tier and --clear-tier cannot be used together", param="--tier")
    if tier is None and not clear_tier and not limits and not clear_limits:
        raise InvalidRequest(
            "nothing to change: give --tier, --clear-tier, --limit or --clear-limit",
            param="--limit",
        )
    overrides = parse_limit_options(limits)
    with open_database(config_path) as (config, engine):
        check_tier_option(config, tier)
        record = tenant_store(config, engine).set(
            name,
            tier=None if clear_tier else (tier if tier is not None else UNSET),
            set_limits=overrides,
            clear_limits=clear_limits,
            actor=actor or default_actor(),
            reason=reason,
        )
    _print_record(record, fmt, f"updated tenant {record.name}")


@tenants.command("suspend")
@click.argument("name")
@click.option("--reason", required=True, help="Why; shown to the tenant's callers and audited.")
@actor_option
@config_option
def suspend(name: str, reason: str, actor: str | None, config_path: str) -> None:
    """Suspend tenant NAME: every request of its keys is refused with 403 tenant_suspended."""
    with open_database(config_path) as (config, engine):
        record = tenant_store(config, engine).suspend(
            name, reason=reason, actor=actor or default_actor()
        )
        push_suspension(config, record.name, record.suspend_reason)
        refresh = config.limits.refresh_s
    click.echo(
        f"suspended tenant {record.name}: {record.suspend_reason};"
        f" running gateways refuse its requests within {refresh:g}s"
    )


@tenants.command("resume")
@click.argument("name")
@click.option("--reason", default=None, help="Why, for the audit log.")
@actor_option
@config_option
def resume(name: str, reason: str | None, actor: str | None, config_path: str) -> None:
    """Lift tenant NAME's suspension."""
    with open_database(config_path) as (config, engine):
        record = tenant_store(config, engine).resume(
            name, actor=actor or default_actor(), reason=reason
        )
        push_suspension(config, record.name, None)
        refresh = config.limits.refresh_s
    click.echo(f"resumed tenant {record.name}; running gateways serve it within {refresh:g}s")


@tenants.command("list")
@TABLE_OR_JSON
@config_option
def list_(fmt: str, config_path: str) -> None:
    """Every tenant with its tier, overrides and status."""
    with open_database(config_path) as (config, engine):
        records = tenant_store(config, engine).list()
    if fmt == "json":
        click.echo(dumps([r.as_dict() for r in records]))
        return
    from rich.console import Console
    from rich.table import Table

    table = Table(box=None, pad_edge=False, caption=None if records else "no tenants yet")
    for column in ("name", "tier", "overrides", "status", "updated"):
        table.add_column(column, overflow="fold")
    for r in records:
        overrides = ", ".join(f"{k}={_shown(v)}" for k, v in flatten(r.limits or {}).items())
        table.add_row(r.name, r.tier or "-", overrides or "-", _status(r), _when(r.updated_at))
    Console(highlight=False).print(table)


@tenants.command("show")
@click.argument("name")
@click.option("--audit", "audit_rows", type=int, default=10, show_default=True, metavar="N")
@TABLE_OR_JSON
@config_option
def show(name: str, audit_rows: int, fmt: str, config_path: str) -> None:
    """Tenant NAME: tier, effective limits, suspension, keys and its latest audit rows."""
    from keel.store import AuditStore, KeyStore
    from keel.store.keys import tenant_target
    from keel.store.tenants import effective_tier

    with open_database(config_path) as (config, engine):
        record = tenant_store(config, engine).require(name)
        keys = KeyStore(engine)
        active, total = keys.count_keys(name, active_only=True), keys.count_keys(name)
        history = AuditStore(engine).list(target=tenant_target(name), limit=max(1, audit_rows))
    tier_name, effective, problem = effective_tier(record, config.tiers, config.limits.default_tier)
    if fmt == "json":
        click.echo(
            dumps(
                {
                    **record.as_dict(),
                    "effective_tier": tier_name,
                    "effective_limits": effective.model_dump(mode="json"),
                    "warning": problem,
                    "keys": {"active": active, "total": total},
                    "audit": [row.as_dict() for row in history],
                }
            )
        )
        return
    from rich.console import Console

    console = Console(highlight=False, soft_wrap=True)
    console.print(f"[bold]tenant {record.name}[/]  {_status(record)}")
    if record.suspended:
        console.print(f"  suspended since {_when(record.suspended_at)}: {record.suspend_reason}")
    console.print(f"  tier: {tier_name or '- (unlimited)'}")
    console.print(f"  keys: {active} active, {total} in all")
    if problem:
        console.print(f"  [yellow]{problem}[/]")
    console.print(_limits_table(effective, record.limits or {}))
    if history:
        console.print(audit_table(history))


def flatten(data: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"tenant": {"rpm": 5}}`` as ``{"tenant.rpm": 5}``."""
    flat: dict[str, Any] = {}
    for key, value in data.items():
        path = f"{prefix}{key}"
        if isinstance(value, Mapping) and value:
            flat.update(flatten(value, path + "."))
        else:
            flat[path] = value
    return flat


def _limits_table(effective: Tier, overrides: Mapping[str, Any]) -> Table:
    from rich.table import Table

    overridden = flatten(overrides)
    table = Table(box=None, pad_edge=False, title="effective limits", title_justify="left")
    for column in ("field", "value", "from"):
        table.add_column(column, overflow="fold")
    for path, value in flatten(effective.model_dump(mode="json")).items():
        source = "override" if path in overridden else "tier"
        table.add_row(path, _shown(value), source)
    return table


def audit_table(rows: Iterable[AuditRecord]) -> Table:
    """Audit rows as a table: time, actor, action, target, what changed, reason."""
    from rich.table import Table

    table = Table(box=None, pad_edge=False, title="audit (newest first)", title_justify="left")
    for column in ("at (UTC)", "actor", "action", "target"):
        table.add_column(column, no_wrap=True)
    table.add_column("change", overflow="fold", min_width=16)
    table.add_column("reason", overflow="fold", min_width=8)
    for row in rows:
        table.add_row(
            _when(row.at),
            row.actor,
            row.action,
            row.target,
            describe_change(row.before, row.after),
            row.reason or "-",
        )
    return table


def describe_change(before: Mapping[str, Any] | None, after: Mapping[str, Any] | None) -> str:
    """The fields that differ, as ``path: old → new``; a creation lists what was set."""
    if before is None and after is not None:
        made = [
            f"{path}={_shown(v)}" for path, v in flatten(after).items() if v not in (None, False)
        ]
        return ", ".join(made) or "-"
    old, new = flatten(before or {}), flatten(after or {})
    changes = [
        f"{path}: {_shown(old.get(path), '-')} → {_shown(new.get(path), '-')}"
        for path in sorted(set(old) | set(new))
        if old.get(path) != new.get(path)
    ]
    return "; ".join(changes) or "-"


def _print_record(record: TenantRecord, fmt: str, headline: str) -> None:
    if fmt == "json":
        click.echo(dumps(record.as_dict()))
        return
    overrides = ", ".join(f"{k}={_shown(v)}" for k, v in flatten(record.limits or {}).items())
    click.echo(f"{headline}: tier {record.tier or '-'}, overrides {overrides or '-'}")


def _status(record: TenantRecord) -> str:
    return "suspended" if record.suspended else "active"


def _shown(value: Any, none: str = "unlimited") -> str:
    if value is None:
        return none
    if isinstance(value, str) and _ISO_TIME.fullmatch(value):
        return value[:16].replace("T", " ")  # audit rows keep times as ISO text
    if isinstance(value, list):
        return "[" + ", ".join(str(v) for v in value) + "]"
    return str(value)


def _when(moment: datetime | None) -> str:
    return "-" if moment is None else moment.strftime("%Y-%m-%d %H:%M")
