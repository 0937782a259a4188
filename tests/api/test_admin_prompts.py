"""The prompt registry's admin API in-process: auth, push, promote, rollback, history, diff."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx

from keel.store import AuditStore, KeyStore, make_engine, record_eval_run
from support import gateway_config, open_gateway


def prompt_doc(version: str = "1.0.0", **changes: Any) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "name": "rag-answer",
        "version": version,
        "model": "fast",
        "params": {"temperature": 0.2},
        "messages": [{"role": "user", "content": "{{ question }}"}],
        "variables": {"question": {"type": "string"}},
    }
    doc.update(changes)
    return doc


class Admin:
    def __init__(self, client: httpx.AsyncClient, key: str, prefix: str, db: str, user: str):
        self.client = client
        self.key = key
        self.actor = f"key:{prefix}"
        self.db = db
        self.user_key = user

    async def call(self, method: str, path: str, json: Any = None, **kwargs: Any) -> httpx.Response:
        headers = {"authorization": f"Bearer {self.key}"}
        return await self.client.request(method, path, json=json, headers=headers, **kwargs)

    def passing_run(self, version: str) -> int:
        engine = make_engine(self.db)
        try:
            return record_eval_run(
                engine,
                suite="rag-golden",
                prompt_name="rag-answer",
                prompt_version=version,
                dataset_hash="sha256:d1",
                passed=True,
            ).id
        finally:
            engine.dispose()


@asynccontextmanager
async def admin_gateway(tmp_path: Path) -> AsyncIterator[Admin]:
    config = gateway_config(
        tmp_path,
        {
            "providers": {"sim": {"kind": "simulator", "seed": 3}},
            "models": [{"alias": "fast", "deployments": [{"provider": "sim", "model": "m"}]}],
            "telemetry": {"log": {"destination": "off"}},
        },
    )
    async with open_gateway(config) as gw:
        engine = make_engine(config.database_url)
        try:
            key, record = KeyStore(engine).create_key("ops", admin=True)
        finally:
            engine.dispose()
        yield Admin(gw.client, key, record.key_prefix, config.database_url, gw.key)


def err(response: httpx.Response) -> dict[str, Any]:
    body: dict[str, Any] = response.json()["error"]
    return body


ROUTES = [
    ("GET", "/admin/prompts"),
    ("POST", "/admin/prompts"),
    ("GET", "/admin/prompts/rag-answer"),
    ("GET", "/admin/prompts/rag-answer/versions/1.0.0"),
    ("GET", "/admin/prompts/rag-answer/labels/production"),
    ("POST", "/admin/prompts/rag-answer/promote"),
    ("POST", "/admin/prompts/rag-answer/rollback"),
    ("GET", "/admin/prompts/rag-answer/history"),
    ("GET", "/admin/prompts/rag-answer/diff?a=1.0.0&b=1.0.0"),
]


async def test_every_prompt_route_needs_an_admin_key(tmp_path: Path) -> None:
    async with admin_gateway(tmp_path) as admin:
        for method, path in ROUTES:
            anonymous = await admin.client.request(method, path, json={})
            assert anonymous.status_code == 401, (method, path)
            ordinary = await admin.client.request(
                method, path, json={}, headers={"authorization": f"Bearer {admin.user_key}"}
            )
            assert ordinary.status_code == 403, (method, path)
            assert err(ordinary)["code"] == "permission_denied"


async def test_push_promote_rollback_history_and_diff(tmp_path: Path) -> None:
    async with admin_gateway(tmp_path) as admin:
        pushed = await admin.call("POST", "/admin/prompts", {"prompts": [prompt_doc()]})
        assert pushed.status_code == 201, pushed.text
        assert [r["status"] for r in pushed.json()["data"]] == ["new"]
        again = await admin.call("POST", "/admin/prompts", {"prompts": [prompt_doc()]})
        assert again.status_code == 200 and again.json()["data"][0]["status"] == "unchanged"
        newer = prompt_doc("1.1.0", params={"temperature": 0.6})
        assert (await admin.call("POST", "/admin/prompts", {"prompts": [newer]})).status_code == 201

        refused = await admin.call(
            "POST", "/admin/prompts/rag-answer/promote", {"version": "1.0.0"}
        )
        assert refused.status_code == 400
        assert err(refused)["code"] == "promotion_not_qualified"
        assert err(refused)["param"] == "version"

        run = admin.passing_run("1.0.0")
        promoted = await admin.call(
            "POST", "/admin/prompts/rag-answer/promote", {"version": "1.0.0", "reason": "ship"}
        )
        assert promoted.status_code == 200, promoted.text
        body = promoted.json()
        assert body["changed"] and body["move"]["eval_run_id"] == run
        assert body["move"]["actor"] == admin.actor and body["label"] == "production"
        forced = await admin.call(
            "POST",
            "/admin/prompts/rag-answer/promote",
            {"version": "1.1.0", "force": True, "reason": "hotfix"},
        )
        assert forced.status_code == 200 and forced.json()["move"]["forced"] is True
        served = await admin.call("GET", "/admin/prompts/rag-answer/labels/production")
        assert served.json()["version"] == "1.1.0"

        back = await admin.call("POST", "/admin/prompts/rag-answer/rollback", {"reason": "bad"})
        assert back.status_code == 200, back.text
        assert back.json()["version"] == "1.0.0" and back.json()["move"]["kind"] == "rollback"

        history = (await admin.call("GET", "/admin/prompts/rag-answer/history")).json()["data"]
        assert [(m["kind"], m["to_version"], m["reason"]) for m in history] == [
            ("rollback", "1.0.0", "bad"),
            ("promote", "1.1.0", "hotfix"),
            ("promote", "1.0.0", "ship"),
        ]
        assert {m["actor"] for m in history} == {admin.actor}

        detail = (await admin.call("GET", "/admin/prompts/rag-answer")).json()
        assert [v["version"] for v in detail["versions"]] == ["1.0.0", "1.1.0"]
        assert detail["labels"] == {"production": "1.0.0"}
        version = (await admin.call("GET", "/admin/prompts/rag-answer/versions/1.1.0")).json()
        assert version["content"]["params"] == {"temperature": 0.6}
        listing = (await admin.call("GET", "/admin/prompts")).json()["data"]
        assert listing[0]["labels"] == {"production": "1.0.0"}

        diff = await admin.call(
            "GET", "/admin/prompts/rag-answer/diff", params={"a": "1.0.0", "b": "1.1.0"}
        )
        assert diff.status_code == 200 and not diff.json()["same"]
        assert "0.6" in diff.json()["diff"]

        engine = make_engine(admin.db)
        try:
            actions = [row.action for row in AuditStore(engine).list(target="prompt:rag-answer")]
        finally:
            engine.dispose()
        assert actions == [
            "prompt.rollback",
            "prompt.promote",
            "prompt.promote",
            "prompt.push",
            "prompt.push",
        ]


async def test_push_is_linted_and_validated(tmp_path: Path) -> None:
    async with admin_gateway(tmp_path) as admin:
        await admin.call("POST", "/admin/prompts", {"prompts": [prompt_doc()]})

        mutated = await admin.call(
            "POST", "/admin/prompts", {"prompts": [prompt_doc(params={"temperature": 1.0})]}
        )
        assert mutated.status_code == 400, mutated.text
        assert err(mutated)["code"] == "prompt_lint_failed"
        assert any(f["severity"] == "error" for f in err(mutated)["findings"])

        shape = prompt_doc("1.1.0", variables={"question": {"type": "integer"}})
        no_major = await admin.call("POST", "/admin/prompts", {"prompts": [shape]})
        assert no_major.status_code == 400 and err(no_major)["code"] == "prompt_lint_failed"

        bad = await admin.call("POST", "/admin/prompts", {"prompts": [prompt_doc("one")]})
        assert bad.status_code == 400 and err(bad)["param"] == "prompts[0].version"
        extra = await admin.call("POST", "/admin/prompts", {"prompts": [prompt_doc()], "x": 1})
        assert extra.status_code == 400 and err(extra)["param"] == "x"
        empty = await admin.call("POST", "/admin/prompts", {"prompts": []})
        assert empty.status_code == 400 and err(empty)["param"] == "prompts"

        detail = (await admin.call("GET", "/admin/prompts/rag-answer")).json()
        assert [v["version"] for v in detail["versions"]] == ["1.0.0"]


async def test_errors_name_the_field(tmp_path: Path) -> None:
    async with admin_gateway(tmp_path) as admin:
        await admin.call("POST", "/admin/prompts", {"prompts": [prompt_doc()]})
        cases = [
            ("POST", "/admin/prompts/rag-answer/promote", {}, 400, "version"),
            ("POST", "/admin/prompts/rag-answer/promote", {"version": "9.0.0"}, 404, "version"),
            ("POST", "/admin/prompts/nope/promote", {"version": "1.0.0"}, 404, "name"),
            (
                "POST",
                "/admin/prompts/rag-answer/promote",
                {"version": "1.0.0", "force": True},
                400,
                "reason",
            ),
            (
                "POST",
                "/admin/prompts/rag-answer/promote",
                {"version": "1.0.0", "label": "Not A Label", "force": True, "reason": "x"},
                400,
                "label",
            ),
            ("POST", "/admin/prompts/rag-answer/rollback", {}, 404, "label"),
            ("GET", "/admin/prompts/nope", None, 404, "name"),
            ("GET", "/admin/prompts/rag-answer/labels/production", None, 404, "label"),
            ("GET", "/admin/prompts/rag-answer/diff?a=1.0.0", None, 400, "b"),
            ("GET", "/admin/prompts/rag-answer/history?limit=0", None, 400, "limit"),
        ]
        for method, path, body, status, param in cases:
            response = await admin.call(method, path, body)
            assert response.status_code == status, (path, body, response.text)
            assert err(response)["param"] == param, (path, body, response.text)
