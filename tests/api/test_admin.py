"""The admin API in-process: auth, tenants, keys, audit and events over HTTP."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from keel.store import EventStore, KeyStore, TenantStore, make_engine
from support import Gateway, gateway_config, open_gateway

HELLO = [{"role": "user", "content": "Hello there"}]


class Admin:
    """The gateway plus an admin key's client calls."""

    def __init__(self, gw: Gateway, key: str, prefix: str) -> None:
        self.gw = gw
        self.key = key
        self.actor = f"key:{prefix}"

    async def call(self, method: str, path: str, json: Any = None, **kwargs: Any) -> httpx.Response:
        headers = {"authorization": f"Bearer {self.key}"}
        return await self.gw.client.request(method, path, json=json, headers=headers, **kwargs)


def _config(tmp_path: Path) -> Any:
    return gateway_config(
        tmp_path,
        {
            "providers": {"sim": {"kind": "simulator", "seed": 3}},
            "models": [{"alias": "fast", "deployments": [{"provider": "sim", "model": "m"}]}],
            "telemetry": {"log": {"destination": "off"}},
            "tiers": {"free": {"tenant": {"rpm": 60}}, "pro": {"tenant": {"rpm": 600}}},
            "limits": {"default_tier": "free"},
        },
    )


def _stores(tmp_path: Path) -> tuple[Any, TenantStore, KeyStore, EventStore]:
    engine = make_engine(f"sqlite:///{tmp_path / 'keel.db'}")
    return engine, TenantStore(engine), KeyStore(engine), EventStore(engine)


@asynccontextmanager
async def admin_gateway(tmp_path: Path) -> AsyncIterator[Admin]:
    async with open_gateway(_config(tmp_path)) as gw:
        engine, _, keys, _ = _stores(tmp_path)
        try:
            key, record = keys.create_key("ops", admin=True, name="admin")
        finally:
            engine.dispose()
        yield Admin(gw, key, record.key_prefix)


def err(response: httpx.Response) -> dict[str, Any]:
    body: dict[str, Any] = response.json()["error"]
    return body


# --- auth -------------------------------------------------------------------------------

ROUTES = [
    ("GET", "/admin/tenants"),
    ("POST", "/admin/tenants"),
    ("GET", "/admin/tenants/acme"),
    ("PATCH", "/admin/tenants/acme"),
    ("POST", "/admin/tenants/acme/suspend"),
    ("POST", "/admin/tenants/acme/resume"),
    ("GET", "/admin/keys"),
    ("POST", "/admin/keys"),
    ("POST", "/admin/keys/1/revoke"),
    ("GET", "/admin/audit"),
    ("GET", "/admin/events"),
]


async def test_every_route_needs_an_admin_key(tmp_path: Path) -> None:
    async with admin_gateway(tmp_path) as admin:
        client = admin.gw.client
        for method, path in ROUTES:
            anonymous = await client.request(method, path, json={})
            assert anonymous.status_code == 401, (method, path)
            assert err(anonymous)["code"] == "invalid_api_key"

            # The gateway's own key (tenant acme) is an ordinary key.
            ordinary = await client.request(method, path, json={}, headers=admin.gw.auth)
            assert ordinary.status_code == 403, (method, path)
            body = err(ordinary)
            assert body["code"] == "permission_denied" and body["type"] == "permission_error"
            assert "--admin" in body["message"]


async def test_revoked_and_expired_admin_keys_are_refused(tmp_path: Path) -> None:
    async with admin_gateway(tmp_path) as admin:
        engine, _, keys, _ = _stores(tmp_path)
        now = datetime.now(UTC)
        try:
            revoked_key, revoked = keys.create_key("ops", admin=True)
            keys.revoke(revoked.id)
            # Created (by a clock two hours back) to expire an hour ago.
            back_then = KeyStore(engine, clock=lambda: now - timedelta(hours=2))
            expired_key, _ = back_then.create_key(
                "ops", admin=True, expires_at=now - timedelta(hours=1)
            )
        finally:
            engine.dispose()
        for key in (revoked_key, expired_key):
            response = await admin.gw.client.get(
                "/admin/tenants", headers={"authorization": f"Bearer {key}"}
            )
            assert response.status_code == 401
            assert err(response)["code"] == "invalid_api_key"


# --- tenants ------------------------------------------------------------------------------


async def test_tenant_lifecycle_is_audited_with_the_key_as_actor(tmp_path: Path) -> None:
    async with admin_gateway(tmp_path) as admin:
        made = await admin.call(
            "POST",
            "/admin/tenants",
            {"name": "globex", "tier": "pro", "limits": {"tenant": {"rpm": 100}}},
        )
        assert made.status_code == 201, made.text
        assert made.json()["tier"] == "pro" and made.json()["limits"] == {"tenant": {"rpm": 100}}

        patched = await admin.call(
            "PATCH",
            "/admin/tenants/globex",
            {"set_limits": {"budget.daily_usd": 5}, "clear_limits": ["tenant.rpm"], "reason": "r"},
        )
        assert patched.status_code == 200, patched.text
        assert patched.json()["limits"] == {"budget": {"daily_usd": 5}}
        assert patched.json()["tier"] == "pro"  # absent: unchanged

        shown = (await admin.call("GET", "/admin/tenants/globex")).json()
        assert shown["effective_tier"] == "pro"
        assert shown["effective_limits"]["tenant"]["rpm"] == 600
        assert shown["effective_limits"]["budget"]["daily_usd"] == 5
        assert shown["keys"] == {"active": 0, "total": 0}

        suspended = await admin.call(
            "POST", "/admin/tenants/globex/suspend", {"reason": "card declined"}
        )
        assert suspended.status_code == 200, suspended.text
        assert suspended.json()["suspended"] is True and suspended.json()["warning"] is None
        resumed = await admin.call("POST", "/admin/tenants/globex/resume")
        assert resumed.status_code == 200 and resumed.json()["suspended"] is False

        cleared = await admin.call("PATCH", "/admin/tenants/globex", {"tier": None, "limits": None})
        assert cleared.json()["tier"] is None and cleared.json()["limits"] is None

        listed = (await admin.call("GET", "/admin/tenants")).json()["data"]
        assert {t["name"] for t in listed} >= {"acme", "ops", "globex"}

        audit = (await admin.call("GET", "/admin/audit", params={"target": "tenant:globex"})).json()
        rows = audit["data"]
        assert [r["action"] for r in rows] == [
            "tenant.set",
            "tenant.resume",
            "tenant.suspend",
            "tenant.set",
            "tenant.create",
        ]
        assert {r["actor"] for r in rows} == {admin.actor}
        suspend = rows[2]
        assert suspend["before"]["suspend_reason"] is None
        assert suspend["after"]["suspend_reason"] == "card declined"
        assert rows[3]["reason"] == "r"
        assert rows[3]["before"]["limits"] == {"tenant": {"rpm": 100}}


async def test_a_suspended_tenant_is_refused_by_the_gateway(tmp_path: Path) -> None:
    async with admin_gateway(tmp_path) as admin:
        response = await admin.call("POST", "/admin/tenants/acme/suspend", {"reason": "abuse"})
        assert response.status_code == 200, response.text
        refused = await admin.gw.chat({"model": "fast", "messages": HELLO})
        assert refused.status_code == 403
        assert err(refused)["code"] == "tenant_suspended"

        await admin.call("POST", "/admin/tenants/acme/resume")
        served = await admin.gw.chat({"model": "fast", "messages": HELLO})
        assert served.status_code == 200, served.text


@pytest.mark.parametrize(
    ("method", "path", "body", "param", "words"),
    [
        (
            "PATCH",
            "/admin/tenants/acme",
            {"set_limits": {"tenant.rpm": -1}},
            "limits.tenant.rpm",
            "greater than 0",
        ),
        (
            "PATCH",
            "/admin/tenants/acme",
            {"set_limits": {"tenant.rpm": "abc"}},
            "limits.tenant.rpm",
            "valid integer",
        ),
        (
            "PATCH",
            "/admin/tenants/acme",
            {"limits": {"tenant": {"tpm": 0}}},
            "limits.tenant.tpm",
            "greater than 0",
        ),
        ("PATCH", "/admin/tenants/acme", {"tier": "gold"}, "tier", 'unknown tier "gold"'),
        ("PATCH", "/admin/tenants/acme", {"tierx": "pro"}, "tierx", "unknown field"),
        ("POST", "/admin/tenants", {"name": "x y"}, "name", "not a valid name"),
        ("POST", "/admin/tenants", {"name": "acme"}, "name", "already exists"),
        ("POST", "/admin/tenants", {"tier": "pro"}, "name", "required"),
        ("POST", "/admin/tenants/acme/suspend", {}, "reason", "required"),
        (
            "POST",
            "/admin/keys",
            {"tenant": "acme", "limits": {"key": {"rpm": -3}}},
            "limits.key.rpm",
            "greater than 0",
        ),
        ("POST", "/admin/keys", {"tenant": "acme", "tier": "gold"}, "tier", "known tiers"),
        ("POST", "/admin/keys", {"tenant": "acme", "admin": "maybe"}, "admin", "boolean"),
    ],
)
async def test_bad_input_is_400_naming_the_field(
    tmp_path: Path, method: str, path: str, body: Any, param: str, words: str
) -> None:
    async with admin_gateway(tmp_path) as admin:
        before = (await admin.call("GET", "/admin/audit")).json()["data"]
        response = await admin.call(method, path, body)
        assert response.status_code == 400, response.text
        error = err(response)
        assert error["param"] == param and words in error["message"], error
        assert error["type"] == "invalid_request_error"
        assert (await admin.call("GET", "/admin/audit")).json()["data"] == before


async def test_unknown_tenant_is_404(tmp_path: Path) -> None:
    async with admin_gateway(tmp_path) as admin:
        for method, path, body in [
            ("GET", "/admin/tenants/nobody", None),
            ("PATCH", "/admin/tenants/nobody", {"tier": "pro"}),
            ("POST", "/admin/tenants/nobody/suspend", {"reason": "x"}),
        ]:
            response = await admin.call(method, path, body)
            assert response.status_code == 404 and err(response)["param"] == "tenant"


# --- keys -----------------------------------------------------------------------------------


async def test_keys_create_list_revoke(tmp_path: Path) -> None:
    async with admin_gateway(tmp_path) as admin:
        made = await admin.call(
            "POST",
            "/admin/keys",
            {"tenant": "globex", "tier": "pro", "name": "ci", "limits": {"key": {"rpm": 5}}},
        )
        assert made.status_code == 201, made.text
        doc = made.json()
        key = doc["key"]
        assert doc["tenant"] == "globex" and doc["limits"] == {"key": {"rpm": 5}}
        assert doc["admin"] is False
        works = await admin.gw.client.post(
            "/v1/chat/completions",
            json={"model": "fast", "messages": HELLO},
            headers={"authorization": f"Bearer {key}"},
        )
        assert works.status_code == 200, works.text

        listed = (await admin.call("GET", "/admin/keys", params={"tenant": "globex"})).json()
        [row] = listed["data"]
        assert row["status"] == "active" and "key" not in row and row["key_prefix"] == key[:12]

        revoked = await admin.call(
            "POST", f"/admin/keys/{doc['key_prefix']}/revoke", {"reason": "leaked"}
        )
        assert revoked.status_code == 200 and revoked.json()["status"] == "revoked"
        # Revoked through this process: refused here at once, not after the cache TTL.
        refused = await admin.gw.client.post(
            "/v1/chat/completions",
            json={"model": "fast", "messages": HELLO},
            headers={"authorization": f"Bearer {key}"},
        )
        assert refused.status_code == 401

        rows = (await admin.call("GET", "/admin/audit", params={"action": "key.revoke"})).json()
        [revocation] = rows["data"]
        assert revocation["actor"] == admin.actor and revocation["reason"] == "leaked"
        assert revocation["before"]["revoked_at"] is None
        assert revocation["after"]["revoked_at"] is not None

        missing = await admin.call("POST", "/admin/keys/sk-keel-none/revoke")
        assert missing.status_code == 404


# --- audit and events -------------------------------------------------------------------------


async def test_events_and_audit_queries(tmp_path: Path) -> None:
    async with admin_gateway(tmp_path) as admin:
        engine, _, _, events = _stores(tmp_path)
        try:
            events.add(tenant="acme", kind="budget_threshold", message="80%", severity="warning")
            events.add(tenant="beta", kind="cost_anomaly", message="3x", severity="critical")
        finally:
            engine.dispose()
        rows = (await admin.call("GET", "/admin/events", params={"tenant": "acme"})).json()["data"]
        assert [(r["kind"], r["message"]) for r in rows] == [("budget_threshold", "80%")]
        since = (datetime.now(UTC) - timedelta(hours=1)).isoformat()
        rows = (await admin.call("GET", "/admin/events", params={"since": since})).json()["data"]
        assert len(rows) == 2
        assert (await admin.call("GET", "/admin/events", params={"limit": 1})).json()["data"]

        for params, param in [({"since": "yesterday"}, "since"), ({"limit": "0"}, "limit")]:
            for path in ("/admin/events", "/admin/audit"):
                bad = await admin.call("GET", path, params=params)
                assert bad.status_code == 400 and err(bad)["param"] == param

        future = (datetime.now(UTC) + timedelta(hours=1)).isoformat()
        assert (await admin.call("GET", "/admin/audit", params={"since": future})).json()[
            "data"
        ] == []
