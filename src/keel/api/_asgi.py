"""Small ASGI helpers for the hot path: reading bodies, sending JSON."""

from __future__ import annotations

import asyncio
import os
import re
from typing import Any

import orjson
from starlette.types import Receive, Scope, Send

from keel.errors import KeelError, PayloadTooLarge, http_status, retry_after_header

_REQUEST_ID = re.compile(rb"^[A-Za-z0-9._:-]{1,128}$")
JSON_HEADERS = [(b"content-type", b"application/json")]


class ClientGone(Exception):
    """The client disconnected before the response was complete."""


def header(scope: Scope, name: bytes) -> bytes | None:
    for key, value in scope["headers"]:
        if key == name:
            return bytes(value)
    return None


def request_id(scope: Scope) -> str:
    """The caller's ``x-request-id`` when it is sane, else a fresh one."""
    given = header(scope, b"x-request-id")
    if given is not None and _REQUEST_ID.match(given):
        return given.decode()
    return os.urandom(16).hex()


async def read_body(scope: Scope, receive: Receive, limit: int) -> bytes:
    declared = header(scope, b"content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise PayloadTooLarge(f"request body is larger than the limit of {limit} bytes")
    parts: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise ClientGone
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise PayloadTooLarge(f"request body is larger than the limit of {limit} bytes")
        parts.append(chunk)
        if not message.get("more_body", False):
            return b"".join(parts)


async def send_json(
    send: Send, status: int, payload: Any, headers: list[tuple[bytes, bytes]]
) -> None:
    body = orjson.dumps(payload)
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [*JSON_HEADERS, (b"content-length", str(len(body)).encode()), *headers],
        }
    )
    await send({"type": "http.response.body", "body": body})


async def send_error(send: Send, error: KeelError, headers: list[tuple[bytes, bytes]]) -> None:
    extra = [(k.encode(), v.encode()) for k, v in retry_after_header(error).items()]
    await send_json(send, http_status(error), error.body(), [*headers, *extra])


class DisconnectWatch:
    """Cancels the handler task when the client disconnects.

    One extra task per request, started once the body is read: ASGI servers
    deliver ``http.disconnect`` on ``receive`` when the connection drops.
    Stop the watch before sending the last body part; after the response is
    complete the server reports a disconnect that must not cancel anything.
    """

    __slots__ = ("_owner", "_task", "fired")

    def __init__(self, receive: Receive) -> None:
        self.fired = False
        owner = asyncio.current_task()
        assert owner is not None
        self._owner = owner
        self._task = asyncio.ensure_future(self._watch(receive))

    async def _watch(self, receive: Receive) -> None:
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                self.fired = True
                self._owner.cancel()
                return

    def stop(self) -> None:
        self._task.cancel()

    def absorb(self) -> None:
        """Turn our own cancellation of the owner back into a normal return."""
        if self.fired:
            self._owner.uncancel()
