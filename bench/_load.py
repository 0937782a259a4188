"""A cheap HTTP/1.1 load generator: raw asyncio (uvloop when installed), keep-alive.

It shares two cores with the gateway and the upstream, so it avoids every
client library: requests are pre-encoded bytes, responses are split by
Content-Length (or chunked framing) without building header objects.

Two modes, both bounded in time:

* closed loop (``--concurrency C``): C connections, each sends its next
  request when the previous answer arrives, for ``--duration`` seconds;
* open loop (``--rate R``): request *i* is scheduled at ``start + i/R``
  whatever happened before; latency is measured from the scheduled time, so
  a stalled server cannot hide its queue (no coordinated omission). Requests
  take an idle keep-alive connection or open one, up to ``--max-connections``.

After the window, in-flight requests get ``--grace`` seconds, then count as
errors (``timeout``). Prints one JSON document on stdout.

    python bench/_load.py --url http://127.0.0.1:9100/v1/chat/completions \\
        --concurrency 16 --duration 5
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, cast
from urllib.parse import urlsplit

CHAT_REQUEST: dict[str, Any] = {
    "model": "bench",
    "messages": [
        {"role": "system", "content": "You are a concise assistant. Answer in one sentence."},
        {"role": "user", "content": "What is the capital of France, and which river runs by it?"},
    ],
    "max_tokens": 64,
    "temperature": 0.2,
    "user": "bench-user-1",
}
MAX_HEAD = 64 * 1024


class ConnectionLost(Exception):
    """The server closed the connection with a request outstanding."""


class Conn(asyncio.Protocol):
    """One keep-alive connection with at most one request outstanding."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.waiter: asyncio.Future[int] | None = None
        self.buffer = bytearray()
        self.closed = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports implement the interface without subclassing it.
        self.transport = cast(asyncio.Transport, transport)

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        waiter, self.waiter = self.waiter, None
        if waiter is not None and not waiter.done():
            waiter.set_exception(ConnectionLost())

    def request(self, payload: bytes) -> asyncio.Future[int]:
        assert self.transport is not None and self.waiter is None
        waiter: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        self.waiter = waiter
        self.transport.write(payload)
        return waiter

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        status = self._parse()
        if status is None:
            return
        waiter, self.waiter = self.waiter, None
        if waiter is not None and not waiter.done():
            waiter.set_result(status)

    def _parse(self) -> int | None:
        """The status once a whole response is buffered (and consumed), else None."""
        buf = self.buffer
        end = buf.find(b"\r\n\r\n")
        if end < 0:
            if len(buf) > MAX_HEAD:
                raise ValueError("response head too large")
            return None
        head = bytes(buf[:end]).lower()
        status = int(head[9:12])
        at = head.find(b"\r\ncontent-length:")
        if at >= 0:
            stop = head.find(b"\r\n", at + 2)
            length = int(head[at + 17 : stop if stop >= 0 else len(head)].strip())
            total = end + 4 + length
            if len(buf) < total:
                return None
            del buf[:total]
            return status
        if b"\r\ntransfer-encoding: chunked" in head:
            pos = end + 4
            for _ in range(1_000_000):  # bounded walk over the chunks
                line_end = buf.find(b"\r\n", pos)
                if line_end < 0:
                    return None
                size = int(bytes(buf[pos:line_end]).split(b";")[0], 16)
                pos = line_end + 2 + size + 2
                if len(buf) < pos:
                    return None
                if size == 0:
                    del buf[:pos]
                    return status
            raise ValueError("too many chunks")
        del buf[: end + 4]  # no body (e.g. 204)
        return status


def build_request(url: str, key: str | None, body: dict[str, Any]) -> bytes:
    parts = urlsplit(url)
    raw = json.dumps(body, separators=(",", ":")).encode()
    lines = [
        f"POST {parts.path or '/'} HTTP/1.1",
        f"host: {parts.netloc}",
        "content-type: application/json",
        "accept: application/json",
        f"content-length: {len(raw)}",
    ]
    if key:
        lines.append(f"authorization: Bearer {key}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + raw


@dataclass
class Result:
    latencies: list[float] = field(default_factory=list)
    errors: Counter[str] = field(default_factory=Counter)
    first: float = 0.0
    last: float = 0.0

    def record(self, status: int, started: float) -> None:
        now = time.perf_counter()
        self.last = now
        if status == 200:
            self.latencies.append(now - started)
        else:
            self.errors[f"http_{status}"] += 1


async def _open(host: str, port: int) -> Conn:
    loop = asyncio.get_running_loop()
    _, proto = await loop.create_connection(Conn, host, port)
    return proto


async def closed_loop(
    host: str, port: int, payload: bytes, concurrency: int, duration: float, grace: float
) -> Result:
    result = Result()
    conns = await asyncio.gather(*(_open(host, port) for _ in range(concurrency)))
    result.first = time.perf_counter()
    stop_at = result.first + duration

    async def worker(conn: Conn) -> None:
        while time.perf_counter() < stop_at:
            if conn.closed:
                conn = await _open(host, port)
            started = time.perf_counter()
            try:
                status = await conn.request(payload)
            except (ConnectionLost, ValueError) as exc:
                result.errors[type(exc).__name__] += 1
                if conn.transport is not None:
                    conn.transport.close()
                conn.closed = True
                continue
            result.record(status, started)
        if conn.transport is not None:
            conn.transport.close()

    tasks = [asyncio.ensure_future(worker(c)) for c in conns]
    await _drain(tasks, duration + grace, result)
    return result


async def open_loop(
    host: str,
    port: int,
    payload: bytes,
    rate: float,
    duration: float,
    grace: float,
    max_connections: int,
) -> Result:
    result = Result()
    idle: asyncio.Queue[Conn] = asyncio.Queue()
    for conn in await asyncio.gather(*(_open(host, port) for _ in range(8))):
        idle.put_nowait(conn)
    opened = idle.qsize()

    async def one(scheduled: float) -> None:
        nonlocal opened
        if idle.empty() and opened < max_connections:
            opened += 1
            conn = await _open(host, port)
        else:
            conn = await idle.get()
        try:
            status = await conn.request(payload)
        except (ConnectionLost, ValueError) as exc:
            result.errors[type(exc).__name__] += 1
            if conn.transport is not None:
                conn.transport.close()
            opened -= 1
            return
        result.record(status, scheduled)
        if conn.closed:
            opened -= 1
        else:
            idle.put_nowait(conn)

    total = int(rate * duration)
    tasks: list[asyncio.Task[None]] = []
    start = time.perf_counter() + 0.01
    result.first = start
    sent = 0
    while sent < total:  # bounded: one pass per tick, each sends every due request
        now = time.perf_counter()
        due = min(total, int((now - start) * rate) + 1)
        while sent < due:
            tasks.append(asyncio.ensure_future(one(start + sent / rate)))
            sent += 1
        if sent < total:
            await asyncio.sleep(max(0.0, start + sent / rate - time.perf_counter()))
    await _drain(tasks, start + duration + grace - time.perf_counter(), result)
    while not idle.empty():
        conn = idle.get_nowait()
        if conn.transport is not None:
            conn.transport.close()
    return result


async def _drain(tasks: list[asyncio.Task[None]], timeout: float, result: Result) -> None:
    """Give in-flight requests ``timeout`` seconds, then cancel them and count timeouts."""
    if not tasks:
        return
    _, pending = await asyncio.wait(tasks, timeout=max(0.1, timeout))
    for task in pending:
        task.cancel()
    if pending:
        result.errors["timeout"] += len(pending)
    await asyncio.gather(*pending, return_exceptions=True)


def percentile(sorted_values: list[float], q: float) -> float:
    if not sorted_values:
        return math.nan
    rank = max(0, math.ceil(q * len(sorted_values)) - 1)
    return sorted_values[rank]


def summarize(result: Result, duration: float) -> dict[str, Any]:
    lat = sorted(result.latencies)
    ok = len(lat)
    wall = max(duration, result.last - result.first) if ok else duration
    ms = 1000.0
    return {
        "ok": ok,
        "errors": sum(result.errors.values()),
        "error_kinds": dict(result.errors),
        "rps": ok / wall if wall > 0 else 0.0,
        "p50_ms": percentile(lat, 0.50) * ms,
        "p90_ms": percentile(lat, 0.90) * ms,
        "p99_ms": percentile(lat, 0.99) * ms,
        "max_ms": (lat[-1] * ms) if lat else math.nan,
        "mean_ms": (sum(lat) / ok * ms) if ok else math.nan,
        "load_cpu_s": sum(os.times()[:2]),
    }


async def run(args: argparse.Namespace) -> dict[str, Any]:
    parts = urlsplit(args.url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 80
    body = dict(CHAT_REQUEST, model=args.model)
    payload = build_request(args.url, args.key, body)
    if args.rate:
        result = await open_loop(
            host, port, payload, args.rate, args.duration, args.grace, args.max_connections
        )
    else:
        result = await closed_loop(host, port, payload, args.concurrency, args.duration, args.grace)
    return summarize(result, args.duration)


def main() -> None:
    parser = argparse.ArgumentParser(description="closed/open loop HTTP load generator")
    parser.add_argument("--url", required=True)
    parser.add_argument("--key", default=None, help="bearer token")
    parser.add_argument("--model", default="bench")
    mode = parser.add_mutually_exclusive_group(required=True)
    mode.add_argument("--concurrency", type=int, help="closed loop with C connections")
    mode.add_argument("--rate", type=float, help="open loop at R requests/s")
    parser.add_argument("--duration", type=float, default=5.0)
    parser.add_argument("--grace", type=float, default=5.0)
    parser.add_argument("--max-connections", type=int, default=512)
    args = parser.parse_args()
    try:
        import uvloop
    except ImportError:
        summary = asyncio.run(run(args))
    else:
        summary = uvloop.run(run(args))
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
