"""``keel keys`` with tiers, limit overrides, admin keys and the audit log."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
import yaml
from cli_support import CONFIG, Invoke, one_error_line

from keel.config import load_config
from keel.store import AuditStore, KeyStore, make_engine, upgrade


@pytest.fixture
def keel_yaml(tmp_path: Path) -> str:
    path = tmp_path / "keel.yaml"
    raw = {
        "database_url": f"sqlite:///{tmp_path / 'keel.db'}",
        **CONFIG,
        "tiers": {"free": {"key": {"rpm": 10}}, "pro": {}},
    }
    path.write_text(yaml.safe_dump(raw))
    return str(path)


@pytest.fixture
def engine(keel_yaml: str) -> Iterator[sa.Engine]:
    engine = make_engine(load_config(keel_yaml).database_url)
    upgrade(engine)
    try:
        yield engine
    finally:
        engine.dispose()


def created(keel: Invoke, *args: str) -> dict[str, Any]:
    result = keel("keys", "create", "--format", "json", *args)
    assert result.exit_code == 0, (result.stdout, result.stderr)
    doc: dict[str, Any] = json.loads(result.stdout)
    return doc


def test_admin_key_with_limits(keel: Invoke, engine: sa.Engine) -> None:
    doc = created(
        keel, "--tenant", "ops", "--tier", "pro", "--admin", "--limit", "key.rpm=5", "--actor", "me"
    )
    assert doc["admin"] is True and doc["limits"] == {"key": {"rpm": 5}}
    record = KeyStore(engine).resolve(doc["key"])
    assert record is not None and record.admin and record.limits == {"key": {"rpm": 5}}
    [key_row] = AuditStore(engine).list(action="key.create")
    assert key_row.actor == "me" and key_row.after is not None and key_row.after["admin"] is True


def test_panel_names_an_admin_key(keel: Invoke) -> None:
    result = keel("keys", "create", "--tenant", "ops", "--admin")
    assert result.exit_code == 0, result.output
    assert "admin key" in result.stdout


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (["--limit", "key.rpm=-1"], "limits.key.rpm: Input should be greater than 0"),
        (["--limit", "key.rpm=abc"], "limits.key.rpm: Input should be a valid integer"),
        (["--limit", "rpm"], "--limit: expected PATH=VALUE"),
        (["--tier", "gold"], '--tier: unknown tier "gold"; known tiers: free, pro'),
    ],
)
def test_bad_limits_and_tiers_are_refused(
    keel: Invoke, engine: sa.Engine, args: list[str], words: str
) -> None:
    line = one_error_line(keel("keys", "create", "--tenant", "acme", *args))
    assert words in line, line
    assert KeyStore(engine).list_keys() == []
    assert AuditStore(engine).list() == []


def test_list_shows_expiry_status_and_admin(keel: Invoke, engine: sa.Engine) -> None:
    admin = created(keel, "--tenant", "ops", "--admin", "--expires-in", "2d")
    plain = created(keel, "--tenant", "acme")
    revoked = created(keel, "--tenant", "acme")
    result = keel("keys", "revoke", revoked["key_prefix"], "--reason", "rotated", "--actor", "me")
    assert result.exit_code == 0, result.output

    listed = keel("keys", "list")
    assert listed.exit_code == 0, listed.output
    lines = {line.split()[1]: line for line in listed.stdout.splitlines()[1:] if line.strip()}
    expires = (datetime.now(UTC) + timedelta(days=2)).strftime("%Y-%m-%d")
    assert expires in lines[admin["key_prefix"]] and lines[admin["key_prefix"]].rstrip().endswith(
        "yes"
    )
    assert "active" in lines[plain["key_prefix"]]
    assert "revoked" in lines[revoked["key_prefix"]]

    rows = json.loads(keel("keys", "list", "--format", "json").stdout)
    assert [r["admin"] for r in rows] == [True, False, False]
    [revocation] = AuditStore(engine).list(action="key.revoke")
    assert (revocation.actor, revocation.reason) == ("me", "rotated")
    assert revocation.target == f"key:{revoked['key_prefix']}"


def test_revoked_and_expired_keys_no_longer_resolve(keel: Invoke, engine: sa.Engine) -> None:
    doc = created(keel, "--tenant", "acme")
    assert keel("keys", "revoke", str(doc["id"])).exit_code == 0
    assert KeyStore(engine).resolve(doc["key"]) is None

    expiring = created(keel, "--tenant", "acme", "--expires-in", "1h")
    later = KeyStore(engine, clock=lambda: datetime.now(UTC) + timedelta(hours=2))
    assert later.resolve(expiring["key"]) is None
