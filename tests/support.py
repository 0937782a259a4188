"""Helpers shared by test modules (importable as `support`)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
from starlette.types import Receive, Scope, Send

from keel.api import create_app
from keel.config import KeelConfig, parse_config
from keel.store import KeyStore, make_engine, upgrade


def gateway_config(tmp_path: Path, raw: dict[str, Any]) -> KeelConfig:
    return parse_config({"database_url": f"sqlite:///{tmp_path / 'keel.db'}", **raw})


@asynccontextmanager
async def running(app: Any) -> AsyncIterator[Any]:
    """Run the app's lifespan and hand scope['state'] to requests, as a server would."""
    async with app.control.router.lifespan_context(app.control) as state:

        async def with_state(scope: Scope, receive: Receive, send: Send) -> None:
            scope["state"] = dict(state)
            await app(scope, receive, send)

        with_state.state = state  # type: ignore[attr-defined]
        yield with_state


class Gateway:
    """An in-process gateway: an httpx client on the ASGI app plus a valid key."""

    def __init__(self, asgi: Any, client: httpx.AsyncClient, key: str) -> None:
        self.asgi = asgi
        self.client = client
        self.key = key
        self.state = asgi.state["keel"]

    @property
    def auth(self) -> dict[str, str]:
        return {"authorization": f"Bearer {self.key}"}

    async def chat(
        self, body: dict[str, Any], headers: dict[str, str] | None = None
    ) -> httpx.Response:
        return await self.client.post(
            "/v1/chat/completions", json=body, headers={**self.auth, **(headers or {})}
        )


@asynccontextmanager
async def open_gateway(config: KeelConfig, **app_kwargs: Any) -> AsyncIterator[Gateway]:
    engine = make_engine(config.database_url)
    try:
        upgrade(engine)
        key, _ = KeyStore(engine).create_key("acme")
    finally:
        engine.dispose()
    async with running(create_app(config, **app_kwargs)) as asgi:
        transport = httpx.ASGITransport(app=asgi)
        async with httpx.AsyncClient(transport=transport, base_url="http://keel") as client:
            yield Gateway(asgi, client, key)
