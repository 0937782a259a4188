"""A client that goes away cancels the upstream call, streaming or not."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import orjson

from keel.config import SimulatorProvider
from keel.errors import UpstreamProtocolError
from keel.providers.base import Json, UpstreamCall
from keel.providers.simulator import SimulatorUpstream
from support import gateway_config, open_gateway


class Watched:
    """The simulator, plus an event set as soon as a call reaches it."""

    def __init__(self, sim: SimulatorUpstream, *, cut_after: int | None = None) -> None:
        self.sim = sim
        self.started = asyncio.Event()
        self.cut_after = cut_after

    async def send(self, call: UpstreamCall) -> Json:
        self.started.set()
        return await self.sim.send(call)

    async def stream(self, call: UpstreamCall) -> AsyncIterator[Json]:
        self.started.set()
        count = 0
        async for chunk in self.sim.stream(call):
            yield chunk
            count += 1
            if self.cut_after is not None and count >= self.cut_after:
                raise UpstreamProtocolError("connection reset by upstream")

    async def aclose(self) -> None:
        await self.sim.aclose()


def slow_sim(**overrides: Any) -> SimulatorUpstream:
    settings: dict[str, Any] = {
        "kind": "simulator",
        "latency": {"p50_ms": 30_000},
        "ttft": {"p50_ms": 0},
        "tokens_per_second": 2,
        **overrides,
    }
    return SimulatorUpstream(SimulatorProvider.model_validate(settings))


def cfg(tmp_path: Path) -> Any:
    return gateway_config(
        tmp_path,
        {
            "providers": {"sim": {"kind": "simulator"}},
            "models": [{"alias": "fast", "deployments": [{"provider": "sim", "model": "m"}]}],
        },
    )


async def call_then_disconnect(
    asgi: Any,
    key: str,
    body: dict[str, Any],
    disconnect_when: asyncio.Event,
    on_send: Any = None,
) -> list[dict[str, Any]]:
    """Drive the ASGI app like a server whose client hangs up once ``disconnect_when`` is set."""
    raw = orjson.dumps(body)
    messages = [{"type": "http.request", "body": raw, "more_body": False}]
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        if messages:
            return messages.pop(0)
        await disconnect_when.wait()
        return {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)
        if on_send is not None:
            on_send(message)

    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": "/v1/chat/completions",
        "raw_path": b"/v1/chat/completions",
        "query_string": b"",
        "root_path": "",
        "server": ("keel", 80),
        "client": ("test", 1),
        "headers": [
            (b"authorization", f"Bearer {key}".encode()),
            (b"content-type", b"application/json"),
        ],
    }
    await asyncio.wait_for(asgi(scope, receive, send), timeout=10)
    return sent


async def test_disconnect_cancels_a_non_streaming_call(tmp_path: Path) -> None:
    sim = slow_sim()
    watched = Watched(sim)
    async with open_gateway(cfg(tmp_path), upstreams={"sim": watched}) as gw:
        sent = await call_then_disconnect(
            gw.asgi,
            gw.key,
            {"model": "fast", "messages": [{"role": "user", "content": "hi"}]},
            watched.started,
        )
    assert sent == []  # nothing is written to a client that is gone
    assert sim.stats.cancelled == 1
    assert sim.stats.completed == 0


async def test_disconnect_cancels_a_stream(tmp_path: Path) -> None:
    sim = slow_sim(default_answer=" ".join(["word"] * 200))
    content_sent = asyncio.Event()

    def note(message: dict[str, Any]) -> None:
        if b'"content":"word' in message.get("body", b""):
            content_sent.set()  # the answer has started reaching the client

    async with open_gateway(cfg(tmp_path), upstreams={"sim": sim}) as gw:
        body = {"model": "fast", "messages": [{"role": "user", "content": "hi"}], "stream": True}
        sent = await call_then_disconnect(gw.asgi, gw.key, body, content_sent, note)
    assert sent[0]["status"] == 200
    assert content_sent.is_set()
    assert not any(m.get("body", b"").endswith(b"[DONE]\n\n") for m in sent)
    assert sim.stats.cancelled == 1
    assert sim.stats.completed == 0


async def test_a_stream_cut_after_content_ends_with_an_error_event(tmp_path: Path) -> None:
    sim = SimulatorUpstream(SimulatorProvider(kind="simulator", default_answer="a b c d e f g"))
    async with open_gateway(cfg(tmp_path), upstreams={"sim": Watched(sim, cut_after=3)}) as gw:
        response = await gw.chat(
            {"model": "fast", "messages": [{"role": "user", "content": "hi"}], "stream": True}
        )
    assert response.status_code == 200
    events = [e for e in response.text.split("\n\n") if e.startswith("data: ")]
    assert "[DONE]" not in response.text
    last = orjson.loads(events[-1][len("data: ") :])
    assert last["error"]["code"] == "stream_interrupted"
    contents = [orjson.loads(e[6:])["choices"][0]["delta"].get("content") for e in events[:-1]]
    assert any(contents)  # what was already sent stayed sent
