"""Measure the gateway's building blocks, so each choice rests on a number.

(a) upstream HTTP client: aiohttp vs httpx, the same keep-alive POSTs to the
    fixed upstream from one process; CPU per request and requests/s;
(b) JSON: orjson vs stdlib json on a representative chat request (parse)
    and chat.completion response (serialise);
(c) server: uvicorn with httptools vs h11 (and uvloop vs the stdlib loop) on
    a minimal raw-ASGI app answering a fixed JSON body, driven by
    ``_load.py``; plus (d) the floor of Keel's stack: a bare pass-through
    (raw ASGI + aiohttp + orjson) under uvicorn/httptools/uvloop, the best any
    gateway built on these parts can do.

Ratios only: the machine is shared, so every number is compared with one
measured minutes apart in the same run.

    .venv/bin/python bench/micro.py [--duration 3] [--only json,client,server]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
import timeit
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _load import CHAT_REQUEST
from _procs import (
    BENCH,
    PYTHON,
    Procs,
    cpu_seconds,
    free_port,
    run_load,
    tree,
    wait_ready,
)

Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]

FIXED = b'{"object":"chat.completion","choices":[{"index":0,"message":{"role":"assistant"}}]}'
_HEADERS = [(b"content-type", b"application/json"), (b"content-length", str(len(FIXED)).encode())]


# --- ASGI apps that uvicorn imports as ``micro:echo_app`` / ``micro:passthrough_app`` ---


async def echo_app(scope: Scope, receive: Receive, send: Send) -> None:
    if scope["type"] != "http":
        return
    more = True
    while more:  # bounded by the request body
        message = await receive()
        more = message.get("more_body", False)
    await send({"type": "http.response.start", "status": 200, "headers": _HEADERS})
    await send({"type": "http.response.body", "body": FIXED})


_session: Any = None


async def passthrough_app(scope: Scope, receive: Receive, send: Send) -> None:
    """Read, parse, forward with aiohttp, parse the answer, re-serialise, send."""
    global _session
    if scope["type"] != "http":
        return
    import aiohttp
    import orjson

    if _session is None:
        _session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=512))
    parts = []
    more = True
    while more:
        message = await receive()
        parts.append(message.get("body", b""))
        more = message.get("more_body", False)
    body = orjson.loads(b"".join(parts))
    body["model"] = "fixed-model"
    url = os.environ["BENCH_UPSTREAM"]
    async with _session.post(url, data=orjson.dumps(body)) as response:
        answer = orjson.loads(await response.read())
    out = orjson.dumps(answer)
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(out)).encode())]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": out})


# --- (b) JSON ----------------------------------------------------------------------


def bench_json(number: int = 20_000) -> list[tuple[str, float, float]]:
    import orjson

    request = json.dumps(CHAT_REQUEST).encode()
    response = {
        "id": "chatcmpl-bench",
        "object": "chat.completion",
        "created": 1_700_000_000,
        "model": "fixed-model",
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": "Paris, on the Seine. " * 8},
                "finish_reason": "stop",
            }
        ],
        "usage": {"prompt_tokens": 24, "completion_tokens": 13, "total_tokens": 37},
    }
    rows = []
    for name, loads, dumps in (
        ("orjson", orjson.loads, orjson.dumps),
        ("json", json.loads, lambda v: json.dumps(v, separators=(",", ":")).encode()),
    ):
        parse = (
            min(timeit.repeat(lambda parse_fn=loads: parse_fn(request), number=number, repeat=5))
            / number
        )
        write = (
            min(timeit.repeat(lambda dump_fn=dumps: dump_fn(response), number=number, repeat=5))
            / number
        )
        rows.append((name, parse * 1e6, write * 1e6))
    return rows


# --- (a) HTTP client -----------------------------------------------------------------


async def _drive(post: Callable[[], Awaitable[bytes]], concurrency: int, total: int) -> None:
    per = total // concurrency

    async def worker() -> None:
        for _ in range(per):
            await post()

    await asyncio.gather(*(worker() for _ in range(concurrency)))


async def _client_round(name: str, url: str, concurrency: int, total: int) -> tuple[float, float]:
    import orjson

    payload = orjson.dumps(CHAT_REQUEST)
    headers = {"content-type": "application/json", "authorization": "Bearer sk-x"}
    if name == "aiohttp":
        import aiohttp

        session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=512))

        async def post() -> bytes:
            async with session.post(url, data=payload, headers=headers) as r:
                body: bytes = await r.read()
            orjson.loads(body)
            return body

        close: Callable[[], Awaitable[None]] = session.close
    else:
        import httpx

        client = httpx.AsyncClient(limits=httpx.Limits(max_connections=512), timeout=30)

        async def post() -> bytes:
            r = await client.post(url, content=payload, headers=headers)
            orjson.loads(r.content)
            return r.content

        close = client.aclose
    try:
        await _drive(post, concurrency, 200)  # warm the pool
        cpu0, wall0 = time.process_time(), time.perf_counter()
        await _drive(post, concurrency, total)
        cpu, wall = time.process_time() - cpu0, time.perf_counter() - wall0
    finally:
        await close()
    return total / wall, cpu / total * 1e6


def bench_clients(procs: Procs, total: int) -> list[tuple[str, int, float, float]]:
    import uvloop

    port = free_port()
    proc = procs.spawn(
        "micro-upstream", [PYTHON, str(BENCH / "fixed_upstream.py"), "--port", str(port)]
    )
    wait_ready(proc, port, "/healthz", time.perf_counter(), 10)
    url = f"http://127.0.0.1:{port}/v1/chat/completions"
    rows = []
    for concurrency in (1, 16):
        samples: dict[str, list[tuple[float, float]]] = {"aiohttp": [], "httpx": []}
        for _ in range(3):  # alternate, so drift hits both alike
            for name in samples:
                samples[name].append(uvloop.run(_client_round(name, url, concurrency, total)))
        for name, runs in samples.items():
            rps = statistics.median(r[0] for r in runs)
            cpu = statistics.median(r[1] for r in runs)
            rows.append((name, concurrency, rps, cpu))
    procs.stop(proc)
    return rows


# --- (c)/(d) servers -----------------------------------------------------------------

SERVERS: list[tuple[str, str, str, str]] = [
    ("uvicorn httptools + uvloop", "echo_app", "httptools", "uvloop"),
    ("uvicorn h11 + uvloop", "echo_app", "h11", "uvloop"),
    ("uvicorn httptools + asyncio", "echo_app", "httptools", "asyncio"),
    ("pass-through floor (httptools+uvloop+aiohttp)", "passthrough_app", "httptools", "uvloop"),
]


def bench_servers(procs: Procs, duration: float) -> list[tuple[str, str, dict[str, Any]]]:
    up_port = free_port()
    upstream = procs.spawn(
        "micro-upstream2", [PYTHON, str(BENCH / "fixed_upstream.py"), "--port", str(up_port)]
    )
    wait_ready(upstream, up_port, "/healthz", time.perf_counter(), 10)
    env = {"BENCH_UPSTREAM": f"http://127.0.0.1:{up_port}/v1/chat/completions"}
    rows = []
    for label, app, http, loop in SERVERS:
        port = free_port()
        cmd = [PYTHON, "-m", "uvicorn", f"micro:{app}", "--app-dir", str(BENCH)]
        cmd += ["--port", str(port), "--http", http, "--loop", loop, "--log-level", "warning"]
        cmd += ["--no-access-log", "--lifespan", "off"]
        proc = procs.spawn(f"server-{app}-{http}-{loop}", cmd, env)
        try:
            wait_ready_post(proc, port)
            url = f"http://127.0.0.1:{port}/v1/chat/completions"
            run_load(url, concurrency=16, duration=1.0)
            for scenario, kwargs in (("c16", {"concurrency": 16}), ("c1", {"concurrency": 1})):
                pids = tree(proc.pid)
                before = cpu_seconds(pids)
                r = run_load(url, duration=duration, **kwargs)  # type: ignore[arg-type]
                r["cpu_us_per_req"] = (cpu_seconds(pids) - before) / max(1, r["ok"]) * 1e6
                rows.append((label, scenario, r))
        finally:
            procs.stop(proc)
    procs.stop(upstream)
    return rows


def wait_ready_post(proc: Any, port: int) -> None:
    from _procs import http_ok

    deadline = time.perf_counter() + 15
    while time.perf_counter() < deadline:  # the pass-through answers a GET with a 500
        if proc.poll() is not None:
            raise RuntimeError("server exited")
        if http_ok(port, "/", any_status=True):
            return
        time.sleep(0.01)
    raise RuntimeError("server did not start")


# --- main ---------------------------------------------------------------------------


def main() -> None:
    from rich.console import Console
    from rich.table import Table

    parser = argparse.ArgumentParser(description="building-block micro-benchmarks")
    parser.add_argument("--duration", type=float, default=3.0)
    parser.add_argument("--requests", type=int, default=4000, help="per client round")
    parser.add_argument("--only", default="json,client,server")
    args = parser.parse_args()
    only = set(args.only.split(","))
    console = Console(width=140)
    tmp = Path(tempfile.mkdtemp(prefix="keel-micro-"))
    procs = Procs(tmp)
    try:
        if "json" in only:
            rows = bench_json()
            t = Table(title="(b) JSON, µs per call (best of 5)")
            for col in ("library", "parse chat request", "serialise chat response"):
                t.add_column(col)
            for name, parse, write in rows:
                t.add_row(name, f"{parse:.2f}", f"{write:.2f}")
            (_, op, od), (_, jp, jd) = rows
            console.print(t)
            console.print(f"orjson vs json: parse {jp / op:.1f}x faster, serialise {jd / od:.1f}x")
        if "client" in only:
            rows2 = bench_clients(procs, args.requests)
            t = Table(title="(a) upstream HTTP client, one process (median of 3 alternating)")
            for col in ("client", "concurrency", "req/s", "CPU µs/req"):
                t.add_column(col)
            for name, c, rps, cpu in rows2:
                t.add_row(name, str(c), f"{rps:.0f}", f"{cpu:.0f}")
            console.print(t)
            for c in (1, 16):
                a = next(r for r in rows2 if r[0] == "aiohttp" and r[1] == c)
                h = next(r for r in rows2 if r[0] == "httpx" and r[1] == c)
                console.print(
                    f"c={c}: aiohttp {a[2] / h[2]:.2f}x the req/s of httpx, "
                    f"{h[3] / a[3]:.2f}x less CPU per request"
                )
        if "server" in only:
            rows3 = bench_servers(procs, args.duration)
            t = Table(title="(c) server: minimal ASGI app; (d) pass-through floor")
            for col in ("server", "load", "req/s", "p50 ms", "p99 ms", "server CPU µs/req"):
                t.add_column(col)
            for label, scenario, r in rows3:
                t.add_row(
                    label,
                    scenario,
                    f"{r['rps']:.0f}",
                    f"{r['p50_ms']:.2f}",
                    f"{r['p99_ms']:.2f}",
                    f"{r['cpu_us_per_req']:.0f}",
                )
            console.print(t)
    finally:
        procs.stop_all()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
