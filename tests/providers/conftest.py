"""A fake external provider: a tiny aiohttp server on loopback.

Each test installs a handler; the server records every request (with the
client's address, so tests can tell a reused connection from a new one) and
whether the client went away before the handler finished (``disconnected``).
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import orjson
import pytest
from aiohttp import web

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@dataclass
class Recorded:
    path: str
    headers: dict[str, str]
    body: Any
    peer: Any  # the client's (host, port): the same on a reused connection


@dataclass
class FakeUpstream:
    url: str = ""
    handler: Handler | None = None
    requests: list[Recorded] = field(default_factory=list)
    disconnected: asyncio.Event = field(default_factory=asyncio.Event)
    # Handlers that must hang wait on this; teardown sets it so nothing lingers.
    release: asyncio.Event = field(default_factory=asyncio.Event)

    async def dispatch(self, request: web.Request) -> web.StreamResponse:
        raw = await request.read()
        peer = request.transport.get_extra_info("peername") if request.transport else None
        self.requests.append(
            Recorded(request.path, dict(request.headers), orjson.loads(raw) if raw else None, peer)
        )
        assert self.handler is not None, "the test did not install a handler"
        try:
            return await self.handler(request)
        except (asyncio.CancelledError, ConnectionResetError):
            # aiohttp cancels the handler when the client drops the connection.
            self.disconnected.set()
            raise

    @property
    def last(self) -> Recorded:
        return self.requests[-1]

    def reply_json(
        self, payload: Any, status: int = 200, headers: dict[str, str] | None = None
    ) -> None:
        async def handler(request: web.Request) -> web.StreamResponse:
            return web.Response(
                body=payload if isinstance(payload, bytes) else orjson.dumps(payload),
                status=status,
                headers=headers,
                content_type="application/json",
            )

        self.handler = handler

    def reply_sse(
        self, chunks: Iterable[bytes], *, then: str = "end", end_after: float = 0.0
    ) -> None:
        """Stream ``chunks``; then ``"end"`` cleanly, ``"cut"`` the socket, or ``"hang"``.

        ``end_after`` pauses before ending the body, so its end arrives in a
        separate read, after the last event (as it often does from real servers).
        """
        chunks = list(chunks)

        async def handler(request: web.Request) -> web.StreamResponse:
            response = web.StreamResponse(headers={"content-type": "text/event-stream"})
            await response.prepare(request)
            for chunk in chunks:
                await response.write(chunk)
            if then == "cut":
                assert request.transport is not None
                request.transport.close()
                return response
            if then == "hang":
                await self.release.wait()
            if end_after:
                await asyncio.sleep(end_after)
            await response.write_eof()
            return response

        self.handler = handler

    def hang(self) -> None:
        """Accept the request and never answer (until teardown)."""

        async def handler(request: web.Request) -> web.StreamResponse:
            await self.release.wait()
            return web.Response()

        self.handler = handler

    @staticmethod
    def sse(data: Any, event: str | None = None) -> bytes:
        """One SSE event; ``data`` is JSON-encoded unless it is already bytes."""
        payload = data if isinstance(data, bytes) else orjson.dumps(data)
        head = f"event: {event}\n".encode() if event else b""
        return head + b"data: " + payload + b"\n\n"

    @staticmethod
    def unused_url() -> str:
        """A loopback URL with nothing listening (for connection-refused tests)."""
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]
        return f"http://127.0.0.1:{port}"


@pytest.fixture
async def fake() -> AsyncIterator[FakeUpstream]:
    upstream = FakeUpstream()
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", upstream.dispatch)
    runner = web.AppRunner(app, handler_cancellation=True, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    server = site._server
    assert server is not None
    port = server.sockets[0].getsockname()[1]  # type: ignore[attr-defined]
    upstream.url = f"http://127.0.0.1:{port}"
    try:
        yield upstream
    finally:
        upstream.release.set()
        await runner.cleanup()
