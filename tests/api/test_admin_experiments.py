"""Experiments over the admin API in-process: auth, start, read, steer, roll back (announced)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx

from keel.store import KeyStore, make_engine
from support import Gateway, gateway_config, open_gateway

CANARY: dict[str, Any] = {
    "name": "smart-canary",
    "alias": "fast",
    "variants": [
        {"name": "control", "control": True, "alias": "fast"},
        {"name": "candidate", "alias": "smart"},
    ],
    "guards": [{"metric": "error_rate", "max_increase": 0.02}],
    "ramp": {"steps": [5, 50, 100], "hold_s": 60, "min_samples": 50},
}


class Admin:
    def __init__(self, gw: Gateway, key: str, prefix: str) -> None:
        self.gw = gw
        self.client = gw.client
        self.key = key
        self.actor = f"key:{prefix}"

    async def call(self, method: str, path: str, json: Any = None) -> httpx.Response:
        headers = {"authorization": f"Bearer {self.key}"}
        return await self.client.request(method, path, json=json, headers=headers)


@asynccontextmanager
async def admin_gateway(tmp_path: Path) -> AsyncIterator[Admin]:
    config = gateway_config(
        tmp_path,
        {
            "providers": {"sim": {"kind": "simulator", "seed": 3}},
            "models": [
                {"alias": "fast", "deployments": [{"provider": "sim", "model": "a"}]},
                {"alias": "smart", "deployments": [{"provider": "sim", "model": "b"}]},
            ],
            "telemetry": {"log": {"destination": "off"}},
        },
    )
    async with open_gateway(config) as gw:
        engine = make_engine(config.database_url)
        try:
            key, record = KeyStore(engine).create_key("ops", admin=True)
        finally:
            engine.dispose()
        yield Admin(gw, key, record.key_prefix)


def err(response: httpx.Response) -> dict[str, Any]:
    body: dict[str, Any] = response.json()["error"]
    return body


ROUTES = [
    ("GET", "/admin/experiments"),
    ("POST", "/admin/experiments"),
    ("GET", "/admin/experiments/smart-canary"),
    ("GET", "/admin/experiments/smart-canary/events"),
    ("POST", "/admin/experiments/smart-canary/pause"),
    ("POST", "/admin/experiments/smart-canary/resume"),
    ("POST", "/admin/experiments/smart-canary/advance"),
    ("POST", "/admin/experiments/smart-canary/rollback"),
]


async def test_every_experiment_route_needs_an_admin_key(tmp_path: Path) -> None:
    async with admin_gateway(tmp_path) as admin:
        for method, path in ROUTES:
            anonymous = await admin.client.request(method, path, json={})
            assert anonymous.status_code == 401, (method, path)
            ordinary = await admin.client.request(method, path, json={}, headers=admin.gw.auth)
            assert ordinary.status_code == 403, (method, path)
            assert err(ordinary)["code"] == "permission_denied"


async def test_start_read_and_steer_an_experiment(tmp_path: Path) -> None:
    async with admin_gateway(tmp_path) as admin:
        started = await admin.call("POST", "/admin/experiments", CANARY)
        assert started.status_code == 201, started.text
        body = started.json()
        assert body["status"] == "running" and body["created_by"] == admin.actor
        assert body["shares"] == {"control": 95.0, "candidate": 5.0}

        again = await admin.call("POST", "/admin/experiments", CANARY)
        assert again.status_code == 400 and err(again)["code"] == "experiment_running"

        listing = (await admin.call("GET", "/admin/experiments?status=running")).json()
        assert [e["name"] for e in listing["data"]] == ["smart-canary"]

        paused = await admin.call("POST", "/admin/experiments/smart-canary/pause", {})
        assert paused.json()["status"] == "paused"
        assert paused.json()["event"]["actor"] == admin.actor
        resumed = await admin.call("POST", "/admin/experiments/smart-canary/resume")
        assert resumed.json()["status"] == "running"
        advanced = await admin.call(
            "POST", "/admin/experiments/smart-canary/advance", {"reason": "looks fine"}
        )
        assert advanced.json()["shares"] == {"control": 50.0, "candidate": 50.0}
        assert advanced.json()["event"]["reasons"] == ["looks fine"]

        detail = (await admin.call("GET", "/admin/experiments/smart-canary")).json()
        assert detail["step_index"] == 1 and set(detail["metrics"]) == {"control", "candidate"}
        assert detail["metrics"]["candidate"]["n"] == 0
        assert [e["action"] for e in detail["events"]] == ["advance", "resume", "pause", "start"]
        events = (await admin.call("GET", "/admin/experiments/smart-canary/events?limit=2")).json()
        assert [e["action"] for e in events["data"]] == ["advance", "resume"]


async def test_rollback_needs_a_reason_and_is_announced(tmp_path: Path) -> None:
    async with admin_gateway(tmp_path) as admin:
        assert (await admin.call("POST", "/admin/experiments", CANARY)).status_code == 201
        refused = await admin.call("POST", "/admin/experiments/smart-canary/rollback", {})
        assert refused.status_code == 400 and err(refused)["param"] == "reason"

        rolled = await admin.call(
            "POST", "/admin/experiments/smart-canary/rollback", {"reason": "thumbs down"}
        )
        assert rolled.status_code == 200
        assert rolled.json()["status"] == "rolled_back"
        assert rolled.json()["shares"] == {"control": 100.0, "candidate": 0.0}
        await admin.gw.state.tenancy.notifier.drain()
        alerts = (await admin.call("GET", "/admin/events?kind=rollback")).json()["data"]
        assert [a["data"]["experiment"] for a in alerts] == ["smart-canary"]
        assert "thumbs down" in alerts[0]["message"]
        audit = (await admin.call("GET", "/admin/audit?target=experiment:smart-canary")).json()
        assert [a["action"] for a in audit["data"]] == ["experiment.rollback", "experiment.start"]

        ended = await admin.call("POST", "/admin/experiments/smart-canary/pause")
        assert ended.status_code == 400 and err(ended)["code"] == "experiment_state"


async def test_a_bad_spec_or_name_is_refused_clearly(tmp_path: Path) -> None:
    async with admin_gateway(tmp_path) as admin:
        bad = await admin.call(
            "POST", "/admin/experiments", {**CANARY, "ramp": {"steps": [5, 500]}}
        )
        assert bad.status_code == 400 and err(bad)["param"] == "ramp.steps[1]"
        unknown_alias = await admin.call("POST", "/admin/experiments", {**CANARY, "alias": "huge"})
        assert unknown_alias.status_code == 400 and err(unknown_alias)["param"] == "alias"
        missing = await admin.call("GET", "/admin/experiments/nope")
        assert missing.status_code == 404
        missing_events = await admin.call("GET", "/admin/experiments/nope/events")
        assert missing_events.status_code == 404
