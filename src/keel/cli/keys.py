"""``keel keys``: create, list and revoke virtual keys in the configured database."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import click

from keel.cli._base import KeelGroup, config_option, parse_duration

if TYPE_CHECKING:
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
def _open_store(config_path: str) -> Iterator[KeyStore]:
    from keel.config import load_config
    from keel.store import KeyStore, make_engine, upgrade

    engine = make_engine(load_config(config_path).database_url)
    try:
        upgrade(engine)
        yield KeyStore(engine)
    finally:
        engine.dispose()


@click.group(cls=KeelGroup)
def keys() -> None:
    """Create, list and revoke virtual keys (stored hashed in database_url)."""


@keys.command("create")
@click.option("--tenant", required=True, help="Tenant the key belongs to; created if new.")
@click.option("--tier", default=None, help="Tier for this key, overriding the tenant's.")
@click.option("--name", default=None, help="A label to recognise the key by.")
@click.option("--expires-in", default=None, metavar="DURATION", help="e.g. 90m, 12h, 30d, 2w.")
@_FORMAT
@config_option
def create(
    tenant: str,
    tier: str | None,
    name: str | None,
    expires_in: str | None,
    fmt: str,
    config_path: str,
) -> None:
    """Create a key and print it once; only its hash is stored."""
    # Checked before touching the database, so a typo costs nothing.
    lifetime = None if expires_in is None else parse_duration(expires_in, "--expires-in")
    expires_at = None if lifetime is None else datetime.now(UTC) + lifetime
    with _open_store(config_path) as store:
        key, record = store.create_key(tenant, tier=tier, name=name, expires_at=expires_at)
    warning = "Store this key now: it cannot be shown again."
    if fmt == "json":
        import json

        click.echo(json.dumps({"key": key, **_as_json(record)}, indent=2))
        click.echo(warning, err=True)
        return
    from rich.console import Console
    from rich.panel import Panel

    console = Console(highlight=False, soft_wrap=True)
    title = f"key {record.id} for tenant {record.tenant}"
    console.print(Panel.fit(key, title=title, border_style="green"))
    console.print(f"[bold yellow]{warning}[/]")


@keys.command("list")
@click.option("--tenant", default=None, help="Only this tenant's keys.")
@_FORMAT
@config_option
def list_(tenant: str | None, fmt: str, config_path: str) -> None:
    """List keys with their status; never shows a key or its hash."""
    with _open_store(config_path) as store:
        records = store.list_keys(tenant)
    if fmt == "json":
        import json

        click.echo(json.dumps([_as_json(r) for r in records], indent=2))
        return
    from rich.console import Console
    from rich.table import Table

    now = datetime.now(UTC)
    # No borders: eight columns then fit an 80-column terminal without wrapping.
    table = Table(
        box=None,
        pad_edge=False,
        caption="times in UTC" if records else "no keys yet",
    )
    for column in ("id", "prefix", "tenant", "tier", "name", "created", "expires", "status"):
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
        )
    Console(highlight=False).print(table)


@keys.command("revoke")
@click.argument("key")
@config_option
def revoke(key: str, config_path: str) -> None:
    """Revoke KEY, given as its id, its 12-character prefix (sk-keel-....) or the whole key.

    Errors echo at most the first 12 characters of KEY, never the rest.
    """
    from keel.store import KeyResolver

    with _open_store(config_path) as store:
        record = store.revoke(key)
    ttl = KeyResolver.DEFAULT_TTL_S
    click.echo(
        f"revoked {record.key_prefix} (id {record.id}, tenant {record.tenant});"
        f" running gateways stop accepting it within {ttl:g}s"
    )


def _when(moment: datetime | None) -> str:
    return "-" if moment is None else moment.strftime("%Y-%m-%d %H:%M")


def _as_json(record: KeyRecord) -> dict[str, Any]:
    def iso(moment: datetime | None) -> str | None:
        return None if moment is None else moment.isoformat()

    return {
        "id": record.id,
        "key_prefix": record.key_prefix,
        "tenant": record.tenant,
        "tier": record.tier,
        "name": record.name,
        "created_at": iso(record.created_at),
        "expires_at": iso(record.expires_at),
        "revoked_at": iso(record.revoked_at),
    }
