"""Tenants on SQLite and PostgreSQL: overrides, suspension, change polling, audit, migration."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from keystore_support import T0, Clock

from keel.errors import InvalidRequest, NotFound
from keel.store import (
    UNSET,
    AuditStore,
    KeyStore,
    TenantStore,
    apply_limit_changes,
    db,
    generate_key,
    hash_key,
    make_engine,
    upgrade,
)
from keel.store import tenants as tenants_module
from keel.store.tables import audit_log, tenants

TIERS = ("free", "pro")
ALIASES = ("fast", "smart")


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def ts(engine: sa.Engine, clock: Clock) -> TenantStore:
    return TenantStore(engine, clock=clock, tiers=TIERS, aliases=ALIASES)


def audit_rows(engine: sa.Engine) -> list[dict[str, Any]]:
    with engine.connect() as conn:
        rows = conn.execute(sa.select(audit_log).order_by(audit_log.c.id)).mappings()
        return [dict(row) for row in rows]


# --- create, read ---------------------------------------------------------------------


def test_create_get_list(ts: TenantStore, engine: sa.Engine) -> None:
    created = ts.create("acme", tier="pro", limits={"tenant": {"rpm": 100}}, actor="cli:alice")

    assert created.name == "acme" and created.tier == "pro"
    assert created.limits == {"tenant": {"rpm": 100}}
    assert not created.suspended and created.updated_at == created.created_at == T0
    assert ts.get("acme") == created
    assert ts.get("nobody") is None
    ts.create("beta")
    assert [t.name for t in ts.list()] == ["acme", "beta"]
    [row] = [r for r in audit_rows(engine) if r["target"] == "tenant:acme"]
    assert (row["action"], row["actor"], row["before"]) == ("tenant.create", "cli:alice", None)
    assert row["after"] == {
        "tier": "pro",
        "limits": {"tenant": {"rpm": 100}},
        "suspended_at": None,
        "suspend_reason": None,
    }


def test_create_refuses_a_tenant_that_exists(ts: TenantStore, engine: sa.Engine) -> None:
    ts.create("acme")
    with pytest.raises(InvalidRequest, match='tenant "acme" already exists') as caught:
        ts.create("acme", tier="pro")
    assert caught.value.param == "name"
    assert len(audit_rows(engine)) == 1


@pytest.mark.parametrize(
    ("kwargs", "param", "words"),
    [
        ({"name": "a b"}, "name", "not a valid name"),
        ({"tier": "gold"}, "tier", 'unknown tier "gold"; known tiers: free, pro'),
        ({"limits": {"tenant": {"rpm": -1}}}, "limits.tenant.rpm", "greater than 0"),
        ({"limits": {"tenant": {"rpm": "abc"}}}, "limits.tenant.rpm", "valid integer"),
        ({"limits": {"tenant": {"rpx": 1}}}, "limits.tenant.rpx", "unknown key"),
        ({"limits": {"models": ["nope"]}}, "limits.models[0]", 'unknown alias "nope"'),
        ({"limits": {"budget": {"daily_usd": 0}}}, "limits.budget.daily_usd", "greater than 0"),
    ],
)
def test_create_rejects_bad_input_naming_the_field(
    ts: TenantStore, engine: sa.Engine, kwargs: dict[str, Any], param: str, words: str
) -> None:
    kwargs = dict(kwargs)
    name = kwargs.pop("name", "acme")
    with pytest.raises(InvalidRequest) as caught:
        ts.create(name, **kwargs)
    assert caught.value.param == param
    assert caught.value.message.startswith(param) and words in caught.value.message
    assert ts.list() == [] and audit_rows(engine) == []


def test_without_known_tiers_any_well_formed_tier_is_accepted(engine: sa.Engine) -> None:
    assert TenantStore(engine).create("acme", tier="gold").tier == "gold"


# --- set --------------------------------------------------------------------------------


def test_set_changes_fields_by_path_and_audits_before_and_after(
    ts: TenantStore, engine: sa.Engine, clock: Clock
) -> None:
    ts.create("acme", tier="free", limits={"tenant": {"rpm": 10, "tpm": 1000}})
    clock.now = T0 + timedelta(minutes=1)

    record = ts.set(
        "acme",
        tier="pro",
        set_limits={"tenant.rpm": 100, "budget.daily_usd": 5, "key.concurrent": None},
        clear_limits=["tenant.tpm"],
        actor="cli:bob",
        reason="upgrade",
    )

    assert record.tier == "pro"
    assert record.limits == {
        "tenant": {"rpm": 100},
        "budget": {"daily_usd": 5},
        "key": {"concurrent": None},  # explicitly unlimited, not "the tier's"
    }
    assert record.updated_at == T0 + timedelta(minutes=1)
    row = audit_rows(engine)[-1]
    assert (row["action"], row["actor"], row["reason"]) == ("tenant.set", "cli:bob", "upgrade")
    assert row["target"] == "tenant:acme"
    assert row["before"]["tier"] == "free"
    assert row["before"]["limits"] == {"tenant": {"rpm": 10, "tpm": 1000}}
    assert row["after"]["tier"] == "pro" and row["after"]["limits"] == record.limits


def test_set_replaces_or_removes_the_whole_override(ts: TenantStore) -> None:
    ts.create("acme", tier="free", limits={"tenant": {"rpm": 10}})
    assert ts.set("acme", limits={"user": {"rpm": 3}}).limits == {"user": {"rpm": 3}}
    assert ts.set("acme", limits=None).limits is None
    assert ts.set("acme", tier=None).tier is None
    # Clearing the last field of a section removes the section, then the override.
    ts.set("acme", set_limits={"tenant.rpm": 5})
    assert ts.set("acme", clear_limits=["tenant.rpm"]).limits is None


@pytest.mark.parametrize(
    ("changes", "param"),
    [
        ({"set_limits": {"tenant.rpm": -5}}, "limits.tenant.rpm"),
        ({"set_limits": {"tenant.rpm": "abc"}}, "limits.tenant.rpm"),
        ({"set_limits": {"budget.monthly_usd": "lots"}}, "limits.budget.monthly_usd"),
        ({"set_limits": {"tenant..rpm": 1}}, "limits"),
        ({"limits": {"max_tokens": 0}}, "limits.max_tokens"),
        ({"limits": "fast"}, "limits"),
        ({"tier": "enterprise"}, "tier"),
    ],
)
def test_set_refuses_bad_input_and_changes_nothing(
    ts: TenantStore, engine: sa.Engine, clock: Clock, changes: dict[str, Any], param: str
) -> None:
    before = ts.create("acme", tier="free", limits={"tenant": {"rpm": 10}})
    clock.now = T0 + timedelta(minutes=1)
    with pytest.raises(InvalidRequest) as caught:
        ts.set("acme", **changes)
    assert caught.value.param == param
    assert ts.get("acme") == before
    assert len(audit_rows(engine)) == 1


def test_a_change_that_changes_nothing_writes_nothing(
    ts: TenantStore, engine: sa.Engine, clock: Clock
) -> None:
    before = ts.create("acme", tier="free", limits={"tenant": {"rpm": 10}})
    clock.now = T0 + timedelta(minutes=1)
    assert ts.set("acme", tier="free", set_limits={"tenant.rpm": 10}) == before
    assert ts.set("acme", tier=UNSET, limits=UNSET) == before
    assert ts.resume("acme") == before
    assert len(audit_rows(engine)) == 1


def test_unknown_tenant_is_not_found(ts: TenantStore) -> None:
    for change in (
        lambda: ts.set("nobody", tier="free"),
        lambda: ts.suspend("nobody", reason="x"),
        lambda: ts.resume("nobody"),
        lambda: ts.require("nobody"),
    ):
        with pytest.raises(NotFound) as caught:
            change()
        assert caught.value.param == "tenant"


def test_the_change_and_its_audit_row_commit_together(
    ts: TenantStore, engine: sa.Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    before = ts.create("acme", tier="free")

    def broken(*_args: object, **_kwargs: object) -> None:
        raise RuntimeError("audit write failed")

    monkeypatch.setattr(tenants_module, "record_change", broken)
    with pytest.raises(RuntimeError):
        ts.suspend("acme", reason="abuse")
    with pytest.raises(RuntimeError):
        ts.set("acme", tier="pro")
    assert ts.get("acme") == before


# --- suspension --------------------------------------------------------------------------


def test_suspend_and_resume(ts: TenantStore, engine: sa.Engine, clock: Clock) -> None:
    ts.create("acme")
    clock.now = T0 + timedelta(minutes=1)
    suspended = ts.suspend("acme", reason="card declined", actor="key:sk-keel-Ab3x")
    assert suspended.suspended and suspended.suspended_at == clock.now
    assert suspended.suspend_reason == "card declined"

    clock.now = T0 + timedelta(minutes=2)
    again = ts.suspend("acme", reason="fraud review")
    assert again.suspended_at == suspended.suspended_at  # suspended since the first time
    assert again.suspend_reason == "fraud review"

    clock.now = T0 + timedelta(minutes=3)
    resumed = ts.resume("acme", actor="cli:alice", reason="paid")
    assert not resumed.suspended and resumed.suspend_reason is None

    rows = audit_rows(engine)
    assert [r["action"] for r in rows] == [
        "tenant.create",
        "tenant.suspend",
        "tenant.suspend",
        "tenant.resume",
    ]
    assert rows[1]["before"]["suspended_at"] is None
    assert rows[1]["after"]["suspend_reason"] == "card declined"
    assert rows[1]["reason"] == "card declined" and rows[1]["actor"] == "key:sk-keel-Ab3x"
    assert rows[3]["before"]["suspend_reason"] == "fraud review"
    assert rows[3]["after"]["suspended_at"] is None and rows[3]["reason"] == "paid"


@pytest.mark.parametrize("reason", ["", "   "])
def test_suspension_needs_a_reason(ts: TenantStore, reason: str) -> None:
    ts.create("acme")
    with pytest.raises(InvalidRequest) as caught:
        ts.suspend("acme", reason=reason)
    assert caught.value.param == "reason"
    assert not ts.require("acme").suspended


# --- change polling ---------------------------------------------------------------------


def test_updated_at_moves_on_every_change_and_changed_since_finds_it(
    ts: TenantStore, clock: Clock
) -> None:
    ts.create("acme")
    ts.create("beta")
    assert {t.name for t in ts.snapshot()} == {"acme", "beta"}
    seen = max(t.updated_at for t in ts.snapshot())

    stamps = []
    for minute, change in enumerate(
        [
            lambda: ts.set("acme", set_limits={"tenant.rpm": 5}),
            lambda: ts.suspend("acme", reason="x"),
            lambda: ts.resume("acme"),
        ],
        start=1,
    ):
        clock.now = T0 + timedelta(minutes=minute)
        stamps.append(change().updated_at)
        changed = ts.changed_since(seen + timedelta(microseconds=1))
        assert [t.name for t in changed] == ["acme"]
        seen = changed[-1].updated_at
    assert stamps == sorted(stamps) and len(set(stamps)) == 3
    assert ts.changed_since(T0 + timedelta(hours=1)) == []


def test_a_writer_with_a_slow_clock_still_stamps_after_the_newest_change(
    ts: TenantStore, engine: sa.Engine, clock: Clock
) -> None:
    ts.create("acme")
    clock.now = T0 + timedelta(minutes=10)
    ahead = ts.suspend("acme", reason="x").updated_at

    behind = TenantStore(engine, clock=Clock(T0 + timedelta(minutes=1)))
    stamped = behind.set("acme", tier="pro").updated_at
    assert stamped > ahead
    assert [t.name for t in ts.changed_since(stamped)] == ["acme"]


def test_apply_limit_changes_leaves_its_input_alone() -> None:
    stored = {"tenant": {"rpm": 5, "tpm": 10}}
    assert apply_limit_changes(stored, {"tenant.rpm": 6}, ["tenant.tpm"]) == {"tenant": {"rpm": 6}}
    assert stored == {"tenant": {"rpm": 5, "tpm": 10}}
    assert apply_limit_changes(None, {"budget.on_exceed.downgrade": "fast"}) == {
        "budget": {"on_exceed": {"downgrade": "fast"}}
    }
    assert apply_limit_changes({"tenant": {"rpm": 5}}, clear_limits=["tenant.rpm"]) is None


# --- keys: limits, admin flag, audit ----------------------------------------------------


def test_key_creation_and_revocation_are_audited(engine: sa.Engine) -> None:
    store = KeyStore(engine, tiers=TIERS)
    key, record = store.create_key(
        "ops", tier="pro", limits={"key": {"rpm": 5}}, admin=True, actor="cli:alice"
    )
    assert record.admin and record.limits == {"key": {"rpm": 5}} and record.own_tier == "pro"
    assert store.resolve(key) == record

    store.revoke(record.key_prefix, actor="key:sk-keel-Zz9y", reason="leaked")
    store.revoke(record.id)  # already revoked: no second row

    rows = audit_rows(engine)
    assert [(r["action"], r["target"], r["actor"]) for r in rows] == [
        ("tenant.create", "tenant:ops", "cli:alice"),
        ("key.create", f"key:{record.key_prefix}", "cli:alice"),
        ("key.revoke", f"key:{record.key_prefix}", "key:sk-keel-Zz9y"),
    ]
    created, revoked = rows[1], rows[2]
    assert created["before"] is None
    assert created["after"]["admin"] is True and created["after"]["limits"] == {"key": {"rpm": 5}}
    assert revoked["before"]["revoked_at"] is None and revoked["after"]["revoked_at"] is not None
    assert revoked["reason"] == "leaked"
    dump = repr(rows)
    assert key not in dump and hash_key(key) not in dump


def test_a_second_key_for_a_tenant_audits_no_tenant_creation(engine: sa.Engine) -> None:
    store = KeyStore(engine)
    store.create_key("acme")
    store.create_key("acme")
    assert [r["action"] for r in audit_rows(engine)] == [
        "tenant.create",
        "key.create",
        "key.create",
    ]


@pytest.mark.parametrize(
    ("kwargs", "param"),
    [
        ({"limits": {"key": {"rpm": 0}}}, "limits.key.rpm"),
        ({"limits": {"tenant": {"tpm": "many"}}}, "limits.tenant.tpm"),
        ({"tier": "gold"}, "tier"),
    ],
)
def test_key_creation_validates_tier_and_limits(
    engine: sa.Engine, kwargs: dict[str, Any], param: str
) -> None:
    store = KeyStore(engine, tiers=TIERS)
    with pytest.raises(InvalidRequest) as caught:
        store.create_key("acme", **kwargs)
    assert caught.value.param == param
    assert store.list_keys() == [] and audit_rows(engine) == []


def test_revoked_and_expired_admin_keys_are_refused(engine: sa.Engine) -> None:
    clock = Clock()
    store = KeyStore(engine, clock=clock)
    revoked_key, revoked = store.create_key("ops", admin=True)
    expiring_key, _ = store.create_key("ops", admin=True, expires_at=T0 + timedelta(hours=1))
    store.revoke(revoked.id)
    clock.now = T0 + timedelta(hours=1)
    assert store.resolve(revoked_key) is None
    assert store.resolve(expiring_key) is None
    assert store.count_keys("ops") == 2 and store.count_keys("ops", active_only=True) == 0


# --- audit listing ------------------------------------------------------------------------


def test_audit_listing_filters(ts: TenantStore, engine: sa.Engine, clock: Clock) -> None:
    ts.create("acme", actor="cli:alice")
    clock.now = T0 + timedelta(days=1)
    ts.create("beta", actor="cli:bob")
    ts.suspend("acme", reason="x", actor="cli:bob")

    audit = AuditStore(engine)
    assert [r.action for r in audit.list()] == ["tenant.suspend", "tenant.create", "tenant.create"]
    assert [r.action for r in audit.list(target="tenant:acme")] == [
        "tenant.suspend",
        "tenant.create",
    ]
    assert len(audit.list(action="tenant.create")) == 2
    assert [r.target for r in audit.list(actor="cli:alice")] == ["tenant:acme"]
    assert len(audit.list(since=T0 + timedelta(hours=1))) == 2
    assert len(audit.list(limit=1)) == 1
    newest = audit.list(limit=1)[0].as_dict()
    assert newest["at"].startswith("2030-01-02") and newest["after"]["suspend_reason"] == "x"


# --- migration ----------------------------------------------------------------------------


def _migrate_to(engine: sa.Engine, revision: str) -> None:
    from alembic import command
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(db._MIGRATIONS))
    with engine.begin() as conn:
        config.attributes["connection"] = conn
        command.upgrade(config, revision)


def test_upgrade_from_0002_keeps_tenants_and_keys(db_url: str) -> None:
    engine = make_engine(db_url)
    key = generate_key()
    try:
        _migrate_to(engine, "0002_requests_rollups_feedback")
        created = T0 - timedelta(days=3)
        with engine.begin() as conn:
            # Rows as 0002 knew them (today's repositories write columns it lacks).
            conn.execute(
                sa.text("INSERT INTO tenants (name, tier, created_at) VALUES ('acme', 'pro', :t)"),
                {"t": created},
            )
            tenant_id = conn.execute(sa.text("SELECT id FROM tenants")).scalar_one()
            conn.execute(
                sa.text(
                    "INSERT INTO api_keys (key_hash, key_prefix, tenant_id, created_at)"
                    " VALUES (:h, :p, :tenant, :t)"
                ),
                {"h": hash_key(key), "p": key[:12], "tenant": tenant_id, "t": created},
            )

        upgrade(engine)

        with engine.connect() as conn:
            version = conn.execute(sa.text("SELECT version_num FROM alembic_version")).scalar()
        assert version == db.SCHEMA_HEAD
        store = TenantStore(engine, clock=Clock())
        [tenant] = store.list()
        assert tenant.tier == "pro" and tenant.limits is None and not tenant.suspended
        assert tenant.updated_at == tenant.created_at == created
        record = KeyStore(engine).resolve(key)
        assert record is not None and record.tenant == "acme" and record.tier == "pro"
        assert record.admin is False and record.limits is None
        # The migrated rows take every change the new columns allow.
        assert store.suspend("acme", reason="x").suspended
        assert store.set("acme", set_limits={"tenant.rpm": 9}).limits == {"tenant": {"rpm": 9}}
        assert [r.action for r in AuditStore(engine).list()] == ["tenant.set", "tenant.suspend"]
    finally:
        engine.dispose()


def test_migration_0003_downgrades_and_upgrades_again(engine: sa.Engine) -> None:
    from alembic import command
    from alembic.config import Config

    KeyStore(engine).create_key("acme", admin=True)
    config = Config()
    config.set_main_option("script_location", str(db._MIGRATIONS))
    with engine.begin() as conn:
        config.attributes["connection"] = conn
        command.downgrade(config, "0002_requests_rollups_feedback")
    with engine.connect() as conn:
        names = set(sa.inspect(conn).get_table_names())
        columns = {c["name"] for c in sa.inspect(conn).get_columns("tenants")}
    assert "audit_log" not in names and "events" not in names
    assert "updated_at" not in columns

    upgrade(engine)
    with engine.connect() as conn:
        assert conn.execute(sa.select(sa.func.count()).select_from(tenants)).scalar() == 1


def test_sqlite_upgrade_leaves_foreign_keys_intact(tmp_path: Path) -> None:
    engine = make_engine(f"sqlite:///{tmp_path / 'keel.db'}")
    try:
        _migrate_to(engine, "0002_requests_rollups_feedback")
        upgrade(engine)
        with engine.connect() as conn:
            assert conn.exec_driver_sql("PRAGMA foreign_key_check").all() == []
            [fk] = sa.inspect(conn).get_foreign_keys("api_keys")
        assert fk["referred_table"] == "tenants"
    finally:
        engine.dispose()
