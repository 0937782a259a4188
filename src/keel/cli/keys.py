"""``keel keys``: create, list and revoke virtual keys in the configured database.

Creating and revoking a key are audited (``keel audit``) under ``--actor``.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import click

from keel.cli._base import KeelGroup, config_option, open_database, parse_duration
from keel.cli.tenants import (
    actor_option,
    check_tier_option,
    default_actor,
    limit_option,
    parse_limit_options,
)

if TYPE_CHECKING:
    from keel.config import KeelConfig
    from keel.store import KeyRecord, KeyStore

_FORMAT = click.option(
    "--format",
    "fmt",
    type=click.Choice(["text", "json"]),
    default="text",
    show_default=True,
    help="json prints one machine-readable document for scripts.",
)


@contextmanager
def _open_store(config_path: str) -> Iterator[tuple[KeelConfig, KeyStore]]:
    from keel.store import KeyStore

    with open_database(config_path) as (config, engine):
        aliases = [model.alias for model in config.models]
        yield config, KeyStore(engine, tiers=config.tiers.keys(), aliases=aliases)


@click.group(cls=KeelGroup)
def keys() -> None:
    """Create, list and revoke virtual keys (stored hashed in database_url)."""


@keys.command("create")
@click.option("--tenant", required=True, help="Tenant the key belongs to; created if new.")
@click.option("--tier", default=None, help="Tier for this key, overriding the tenant's.")
@click.option("--name", default=None, help="A label to recognise the key by.")
@click.option("--expires-in", default=None, metavar="DURATION", help="e.g. 90m, 12h, 30d, 2w.")
@click.option("--admin", is_flag=True, help="The key may call the admin API (/admin/*).")
@limit_option
@actor_option
@_FORMAT
@config_option
def create(
    tenant: str,
    tier: str | None,
    name: str | None,
    expires_in: str | None,
    admin: bool,
    limits: tuple[str, ...],
    actor: str | None,
    fmt: str,
    config_path: str,
) -> None:
    """Create a key and print it once; only its hash is stored."""
    from keel.store import apply_limit_changes

    # Checked before touching the database, so a typo costs nothing.
    lifetime = None if expires_in is None else parse_duration(expires_in, "--expires-in")
    expires_at = None if lifetime is None else datetime.now(UTC) + lifetime
    overrides = apply_limit_changes(None, parse_limit_options(limits))
    with _open_store(config_path) as (config, store):
        check_tier_option(config, tier)
        key, record = store.create_key(
            tenant,
            tier=tier,
            name=name,
            expires_at=expires_at,
            limits=overrides,
            admin=admin,
            actor=actor or default_actor(),
        )
    warning = "Store this key now: it cannot be shown again."
    if fmt == "json":
        import json

        click.echo(json.dumps({"key": key, **_as_json(record)}, indent=2))
        click.echo(warning, err=True)
        return
    from rich.console import Console
    from rich.panel import Panel

    console = Console(highlight=False, soft_wrap=True)
    title = f"{'admin ' if record.admin else ''}key {record.id} for tenant {record.tenant}"
    console.print(Panel.fit(key, title=title, border_style="green"))
    console.print(f"[bold yellow]{warning}[/]")


@keys.command("list")
@click.option("--tenant", default=None, help="Only this tenant's keys.")
@_FORMAT
@config_option
def list_(tenant: str | None, fmt: str, config_path: str) -> None:
    """List keys with their expiry and status; never shows a key or its hash."""
    with _open_store(config_path) as (_, store):
        records = store.list_keys(tenant)
    if fmt == "json":
        import json

        click.echo(json.dumps([_as_json(r) for r in records], indent=2))
        return
    from rich.console import Console
    from rich.table import Table

    now = datetime.now(UTC)
    # No borders: the columns then fit an 80-column terminal without wrapping.
    table = Table(
        box=None,
        pad_edge=False,
        caption="times in UTC" if records else "no keys yet",
    )
    for column in (
        "id",
        "prefix",
        "tenant",
        "tier",
        "name",
        "created",
        "expires",
        "status",
        "admin",
    ):
        wraps = column in ("tenant", "tier", "name")
        table.add_column(column, no_wrap=not wraps, overflow="fold" if wraps else "ellipsis")
    for r in records:
        table.add_row(
            str(r.id),
            r.key_prefix,
            r.tenant,
            r.tier or "-",
            r.name or "-",
            r.created_at.strftime("%Y-%m-%d"),
            _when(r.expires_at),
            r.status_at(now),
            "yes" if r.admin else "-",
        )
    Console(highlight=False).print(table)


@keys.command("revoke")
@click.argument("key")
@click.option("--reason", default=None, help="Why, for the audit log.")
@actor_option
@config_option
def revoke(key: str, reason: str | None, actor: str | None, config_path: str) -> None:
    """Revoke KEY, given as its id, its 12-character prefix (sk-keel-....) or the whole key.

    Errors echo at most the first 12 characters of KEY, never the rest.
    """
    from keel.store import KeyResolver

    with _open_store(config_path) as (_, store):
        record = store.revoke(key, actor=actor or default_actor(), reason=reason)
    ttl = KeyResolver.DEFAULT_TTL_S
    click.echo(
        f"revoked {record.key_prefix} (id {record.id}, tenant {record.tenant});"
        f" running gateways stop accepting it within {ttl:g}s"
    )


def _when(moment: datetime | None) -> str:
    return "-" if moment is None else moment.strftime("%Y-%m-%d %H:%M")


def _as_json(record: KeyRecord) -> dict[str, Any]:
    return record.as_dict()
