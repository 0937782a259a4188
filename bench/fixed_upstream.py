"""The cheapest OpenAI-shaped upstream we can write: a fixed-body HTTP/1.1 server.

Raw ``asyncio.Protocol`` on uvloop (when installed), keep-alive, pipelining
tolerated, no framework and no JSON work per request: every
``POST .../chat/completions`` gets the same pre-encoded ``chat.completion``
body (with ``usage``), ``POST .../embeddings`` a fixed embedding, and any
``GET`` a small ``{"status":"ok"}``. It exists so that a benchmark measures
the gateway in front of it, not the stand-in behind it.

    python bench/fixed_upstream.py --port 9100
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
from typing import cast

CHAT_BODY = json.dumps(
    {
        "id": "chatcmpl-bench0000000000000000000000",
        "object": "chat.completion",
        "created": 1_700_000_000,
        "model": "fixed-model",
        "system_fingerprint": "fp_bench",
        "choices": [
            {
                "index": 0,
                "message": {
                    "role": "assistant",
                    "content": "Paris is the capital of France. It sits on the Seine.",
                    "refusal": None,
                },
                "logprobs": None,
                "finish_reason": "stop",
            }
        ],
        "usage": {"prompt_tokens": 24, "completion_tokens": 13, "total_tokens": 37},
    },
    separators=(",", ":"),
).encode()

EMBEDDING_BODY = json.dumps(
    {
        "object": "list",
        "data": [{"object": "embedding", "index": 0, "embedding": [0.0125] * 16}],
        "model": "fixed-embed",
        "usage": {"prompt_tokens": 4, "total_tokens": 4},
    },
    separators=(",", ":"),
).encode()

HEALTH_BODY = b'{"status":"ok"}'
NOT_FOUND_BODY = b'{"error":{"message":"not found","type":"invalid_request_error"}}'
MAX_HEADER_BYTES = 64 * 1024


def _response(status: bytes, body: bytes) -> bytes:
    return (
        b"HTTP/1.1 "
        + status
        + b"\r\ncontent-type: application/json\r\ncontent-length: "
        + str(len(body)).encode()
        + b"\r\nconnection: keep-alive\r\n\r\n"
        + body
    )


CHAT_RESPONSE = _response(b"200 OK", CHAT_BODY)
EMBEDDING_RESPONSE = _response(b"200 OK", EMBEDDING_BODY)
HEALTH_RESPONSE = _response(b"200 OK", HEALTH_BODY)
NOT_FOUND_RESPONSE = _response(b"404 Not Found", NOT_FOUND_BODY)


def _pick(request_line: bytes) -> bytes:
    method, _, rest = request_line.partition(b" ")
    path = rest.partition(b" ")[0].partition(b"?")[0]
    if method == b"GET":
        return HEALTH_RESPONSE
    if path.endswith(b"/chat/completions"):
        return CHAT_RESPONSE
    if path.endswith(b"/embeddings"):
        return EMBEDDING_RESPONSE
    return NOT_FOUND_RESPONSE


class FixedHTTP(asyncio.Protocol):
    """One connection: split requests by Content-Length, answer each at once."""

    __slots__ = ("_buffer", "_transport")

    def __init__(self) -> None:
        self._buffer = b""
        self._transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports implement the interface without subclassing it.
        self._transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        buffer = self._buffer + data if self._buffer else data
        out: list[bytes] = []
        close = False
        while buffer:  # bounded: each pass consumes one whole request or stops
            end = buffer.find(b"\r\n\r\n")
            if end < 0:
                if len(buffer) > MAX_HEADER_BYTES:
                    close = True
                    buffer = b""
                break
            head = buffer[:end]
            length = 0
            lower = head.lower()
            at = lower.find(b"\r\ncontent-length:")
            if at >= 0:
                stop = lower.find(b"\r\n", at + 2)
                raw = lower[at + 17 : stop if stop >= 0 else len(lower)]
                length = int(raw.strip() or b"0")
            total = end + 4 + length
            if len(buffer) < total:
                break
            out.append(_pick(head.partition(b"\r\n")[0]))
            if b"\r\nconnection: close" in lower:
                close = True
            buffer = buffer[total:]
            if close:
                break
        self._buffer = buffer
        transport = self._transport
        if transport is None:
            return
        if out:
            transport.write(b"".join(out) if len(out) > 1 else out[0])
        if close:
            transport.close()

    def connection_lost(self, exc: Exception | None) -> None:
        self._transport = None


async def serve(host: str, port: int) -> None:
    loop = asyncio.get_running_loop()
    server = await loop.create_server(FixedHTTP, host, port, backlog=4096, reuse_address=True)
    stop = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    print(f"fixed upstream on http://{host}:{port}/v1", flush=True)
    async with server:
        await stop.wait()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=9100)
    args = parser.parse_args()
    try:
        import uvloop
    except ImportError:
        asyncio.run(serve(args.host, args.port))
    else:
        uvloop.run(serve(args.host, args.port))


if __name__ == "__main__":
    main()
