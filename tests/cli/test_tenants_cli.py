"""``keel tenants``, ``keel audit`` and ``keel events``."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
import yaml
from cli_support import CONFIG, Invoke, one_error_line

from keel.cli.tenants import default_actor, parse_limit_options
from keel.config import load_config
from keel.store import AuditStore, EventStore, KeyStore, TenantStore, make_engine, upgrade

TIERS: dict[str, Any] = {
    "free": {"tenant": {"rpm": 60, "tpm": 40000}, "budget": {"daily_usd": 1.0}},
    "pro": {"tenant": {"rpm": 600}, "budget": {"daily_usd": 50.0}},
}


@pytest.fixture
def keel_yaml(tmp_path: Path) -> str:
    """The shared test config plus tiers (overrides conftest's)."""
    path = tmp_path / "keel.yaml"
    raw = {
        "database_url": f"sqlite:///{tmp_path / 'keel.db'}",
        **CONFIG,
        "tiers": TIERS,
        "limits": {"default_tier": "free"},
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


def ok(result: Any) -> str:
    assert result.exit_code == 0, (result.stdout, result.stderr)
    return str(result.stdout)


# --- create / set / show / list ---------------------------------------------------------


def test_create_then_show(keel: Invoke, engine: sa.Engine) -> None:
    out = ok(keel("tenants", "create", "acme", "--tier", "pro", "--limit", "tenant.rpm=100"))
    assert "created tenant acme" in out and "tenant.rpm=100" in out
    KeyStore(engine).create_key("acme")

    shown = ok(keel("tenants", "show", "acme"))
    assert "tier: pro" in shown and "1 active, 1 in all" in shown
    rpm = next(line for line in shown.splitlines() if line.strip().startswith("tenant.rpm"))
    assert "100" in rpm and "override" in rpm
    daily = next(line for line in shown.splitlines() if "budget.daily_usd" in line)
    assert "50.0" in daily and "tier" in daily
    assert "tenant.create" in shown and default_actor() in shown

    doc = json.loads(ok(keel("tenants", "show", "acme", "--format", "json")))
    assert doc["effective_tier"] == "pro" and doc["keys"] == {"active": 1, "total": 1}
    assert doc["effective_limits"]["tenant"]["rpm"] == 100
    assert doc["effective_limits"]["budget"]["daily_usd"] == 50.0
    assert [row["action"] for row in doc["audit"]] == ["tenant.create"]


def test_show_uses_the_default_tier(keel: Invoke) -> None:
    ok(keel("tenants", "create", "acme"))
    doc = json.loads(ok(keel("tenants", "show", "acme", "--format", "json")))
    assert doc["tier"] is None and doc["effective_tier"] == "free"
    assert doc["effective_limits"]["tenant"]["tpm"] == 40000


def test_set_changes_and_clears_overrides_with_an_audited_reason(
    keel: Invoke, engine: sa.Engine
) -> None:
    ok(keel("tenants", "create", "acme", "--limit", "tenant.rpm=10", "--limit", "tenant.tpm=99"))
    out = ok(
        keel(
            "tenants",
            "set",
            "acme",
            "--tier",
            "pro",
            "--limit",
            "budget.daily_usd=2.5",
            "--limit",
            "user.rpm=null",
            "--limit",
            "models=[fast]",
            "--clear-limit",
            "tenant.tpm",
            "--reason",
            "contract signed",
            "--actor",
            "ops:carol",
        )
    )
    assert "updated tenant acme" in out
    record = TenantStore(engine).require("acme")
    assert record.tier == "pro"
    assert record.limits == {
        "tenant": {"rpm": 10},
        "budget": {"daily_usd": 2.5},
        "user": {"rpm": None},
        "models": ["fast"],
    }
    row = AuditStore(engine).list(target="tenant:acme", limit=1)[0]
    assert (row.action, row.actor, row.reason) == ("tenant.set", "ops:carol", "contract signed")
    assert row.before is not None and row.before["limits"] == {"tenant": {"rpm": 10, "tpm": 99}}
    assert row.after is not None and row.after["tier"] == "pro"

    ok(keel("tenants", "set", "acme", "--clear-tier"))
    assert TenantStore(engine).require("acme").tier is None


def test_list(keel: Invoke) -> None:
    ok(keel("tenants", "create", "acme", "--tier", "pro", "--limit", "tenant.rpm=7"))
    ok(keel("tenants", "create", "beta"))
    ok(keel("tenants", "suspend", "beta", "--reason", "unpaid"))
    out = ok(keel("tenants", "list"))
    acme = next(line for line in out.splitlines() if line.startswith("acme"))
    beta = next(line for line in out.splitlines() if line.startswith("beta"))
    assert "pro" in acme and "tenant.rpm=7" in acme and "active" in acme
    assert "suspended" in beta
    rows = json.loads(ok(keel("tenants", "list", "--format", "json")))
    assert [(r["name"], r["suspended"]) for r in rows] == [("acme", False), ("beta", True)]


# --- refused input: one line, exit 2, nothing written ------------------------------------


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (["--limit", "tenant.rpm=-5"], "limits.tenant.rpm: Input should be greater than 0"),
        (["--limit", "tenant.rpm=abc"], "limits.tenant.rpm: Input should be a valid integer"),
        (["--limit", "budget.daily_usd=lots"], "limits.budget.daily_usd"),
        (["--limit", "tenant.rpx=5"], "limits.tenant.rpx: unknown key"),
        (["--limit", "tenant.rpm"], "--limit: expected PATH=VALUE"),
        (["--limit", "models=[nope]"], 'limits.models[0]: unknown alias "nope"'),
        (["--tier", "gold"], '--tier: unknown tier "gold"; known tiers: free, pro'),
    ],
)
def test_bad_limits_and_tiers_are_one_line_and_exit_2(
    keel: Invoke, engine: sa.Engine, args: list[str], words: str
) -> None:
    ok(keel("tenants", "create", "acme", "--limit", "tenant.rpm=10"))
    line = one_error_line(keel("tenants", "set", "acme", *args))
    assert words in line, line
    assert TenantStore(engine).require("acme").limits == {"tenant": {"rpm": 10}}
    assert len(AuditStore(engine).list()) == 1

    line = one_error_line(keel("tenants", "create", "beta", *args))
    assert words in line, line
    assert TenantStore(engine).get("beta") is None


def test_other_refusals(keel: Invoke) -> None:
    ok(keel("tenants", "create", "acme"))
    assert 'tenant "acme" already exists' in one_error_line(keel("tenants", "create", "acme"))
    assert 'no tenant "nobody"' in one_error_line(keel("tenants", "show", "nobody"))
    assert 'no tenant "nobody"' in one_error_line(
        keel("tenants", "suspend", "nobody", "--reason", "x")
    )
    assert "nothing to change" in one_error_line(keel("tenants", "set", "acme"))
    both = keel("tenants", "set", "acme", "--tier", "pro", "--clear-tier")
    assert "cannot be used together" in one_error_line(both)
    assert "reason" in one_error_line(keel("tenants", "suspend", "acme", "--reason", " "))


def test_limit_values_are_yaml_scalars() -> None:
    assert parse_limit_options(
        ["tenant.rpm=100", "user.rpm=null", "budget.daily_usd=2.5", "x=abc", "d=2030-01-01", "e="]
    ) == {
        "tenant.rpm": 100,
        "user.rpm": None,
        "budget.daily_usd": 2.5,
        "x": "abc",
        "d": "2030-01-01",
        "e": None,
    }


# --- suspension ---------------------------------------------------------------------------


def test_suspend_and_resume_are_stored_and_audited(keel: Invoke, engine: sa.Engine) -> None:
    ok(keel("tenants", "create", "acme"))
    out = ok(keel("tenants", "suspend", "acme", "--reason", "card declined"))
    assert "suspended tenant acme: card declined" in out and "within 0.5s" in out
    record = TenantStore(engine).require("acme")
    assert record.suspended and record.suspend_reason == "card declined"
    shown = ok(keel("tenants", "show", "acme"))
    assert "suspended since" in shown and "card declined" in shown

    ok(keel("tenants", "resume", "acme", "--reason", "paid"))
    assert not TenantStore(engine).require("acme").suspended
    actions = [r.action for r in AuditStore(engine).list(target="tenant:acme")]
    assert actions == ["tenant.resume", "tenant.suspend", "tenant.create"]


def test_suspension_is_pushed_to_redis_when_that_is_the_backend(
    keel_yaml: str, keel: Invoke, engine: sa.Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    import keel.tenants as tenancy

    raw = yaml.safe_load(Path(keel_yaml).read_text())
    raw["limits"]["backend"] = "redis"
    Path(keel_yaml).write_text(yaml.safe_dump(raw))
    pushed: list[tuple[str, str | None, bool]] = []

    async def propagate(config: Any, tenant: str, reason: str | None) -> None:
        # The store is written (and committed) before anything is pushed.
        suspended = TenantStore(engine).require(tenant).suspended
        pushed.append((tenant, reason, suspended))

    monkeypatch.setattr(tenancy, "propagate_suspension", propagate)
    ok(keel("tenants", "create", "acme"))
    ok(keel("tenants", "suspend", "acme", "--reason", "abuse"))
    ok(keel("tenants", "resume", "acme"))
    assert pushed == [("acme", "abuse", True), ("acme", None, False)]


def test_a_failed_push_says_the_store_has_it_and_exits_1(
    keel_yaml: str, keel: Invoke, engine: sa.Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    import keel.tenants as tenancy
    from keel.errors import LimitsUnavailable

    raw = yaml.safe_load(Path(keel_yaml).read_text())
    raw["limits"]["backend"] = "redis"
    Path(keel_yaml).write_text(yaml.safe_dump(raw))

    async def propagate(config: Any, tenant: str, reason: str | None) -> None:
        raise LimitsUnavailable("redis://127.0.0.1:6379/0 refused the connection")

    monkeypatch.setattr(tenancy, "propagate_suspension", propagate)
    ok(keel("tenants", "create", "acme"))
    result = keel("tenants", "suspend", "acme", "--reason", "abuse")
    assert result.exit_code == 1
    assert "is suspended in the store" in result.stderr and "refused" in result.stderr
    assert TenantStore(engine).require("acme").suspended


# --- audit and events -----------------------------------------------------------------------


def test_audit_command(keel: Invoke) -> None:
    ok(keel("tenants", "create", "acme"))
    ok(keel("tenants", "suspend", "acme", "--reason", "abuse", "--actor", "ops:dan"))
    ok(keel("keys", "create", "--tenant", "beta", "--format", "json"))

    table = ok(keel("audit"))
    assert "tenant.suspend" in table and "key.create" in table
    assert "suspend_reason: - → abuse" in table

    rows = json.loads(ok(keel("audit", "--target", "acme", "--format", "json")))
    assert [r["action"] for r in rows] == ["tenant.suspend", "tenant.create"]
    assert rows[0]["actor"] == "ops:dan" and rows[0]["before"]["suspend_reason"] is None
    rows = json.loads(
        ok(keel("audit", "--action", "key.create", "--since", "1h", "--format", "json"))
    )
    assert len(rows) == 1 and rows[0]["target"].startswith("key:sk-keel-")
    assert "no audit rows match" in ok(keel("audit", "--target", "key:sk-keel-none"))
    assert "--since" in one_error_line(keel("audit", "--since", "soon"))
    assert "--limit" in one_error_line(keel("audit", "--limit", "0"))


def test_events_command(keel: Invoke, engine: sa.Engine) -> None:
    assert "no events match" in ok(keel("events"))
    events = EventStore(engine)
    events.add(tenant="acme", kind="budget_threshold", severity="warning", message="daily at 80%")
    events.add(tenant="beta", kind="cost_anomaly", severity="critical", message="3x the 7-day mean")

    table = ok(keel("events"))
    assert "daily at 80%" in table and "cost_anomaly" in table
    rows = json.loads(ok(keel("events", "--tenant", "acme", "--since", "1d", "--format", "json")))
    assert [(r["kind"], r["severity"]) for r in rows] == [("budget_threshold", "warning")]
    assert (
        json.loads(ok(keel("events", "--kind", "cost_anomaly", "--format", "json")))[0]["tenant"]
        == "beta"
    )
