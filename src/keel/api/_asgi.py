"""Small ASGI helpers for the hot path: headers, bodies, JSON answers, disconnects."""

from __future__ import annotations

import asyncio
import os
import re
import time
from dataclasses import dataclass
from typing import Any

from starlette.types import Receive, Scope, Send

from keel.api.errors import error_response
from keel.errors import KeelError, PayloadTooLarge

_REQUEST_ID = re.compile(rb"[A-Za-z0-9._:-]{1,128}")
JSON_HEADERS = [(b"content-type", b"application/json")]


class ClientGone(Exception):
    """The client disconnected before the response was complete."""


@dataclass(frozen=True, slots=True)
class RequestHeaders:
    """The few request headers the data plane reads, found in one pass."""

    request_id: str
    authorization: str | None
    content_length: int | None
    traceparent: str | None

    @classmethod
    def of(cls, scope: Scope) -> RequestHeaders:
        given_id = authorization = length = parent = None
        for key, value in scope["headers"]:
            if key == b"authorization":
                authorization = bytes(value).decode("latin-1")
            elif key == b"x-request-id":
                given_id = bytes(value)
            elif key == b"traceparent":
                parent = bytes(value).decode("latin-1")
            elif key == b"content-length" and value.isdigit():
                length = int(value)
        return cls(_request_id(given_id), authorization, length, parent)


def _request_id(given: bytes | None) -> str:
    """The caller's ``x-request-id`` when it is sane, else a fresh one."""
    if given is not None and _REQUEST_ID.fullmatch(given):
        return given.decode()
    return new_request_id()


def new_request_id() -> str:
    """32 hex digits: milliseconds since the epoch, then 80 random bits.

    Ids that grow with time land at the end of the request store's
    primary-key index instead of on a random page of it, which keeps each
    telemetry batch's inserts to a few pages however large the table grows
    (the same reason UUIDv7 exists). They also sort by arrival.
    """
    return f"{time.time_ns() // 1_000_000:012x}{os.urandom(10).hex()}"


async def read_body(receive: Receive, limit: int, declared: int | None) -> bytes:
    if declared is not None and declared > limit:
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
    send: Send, status: int, body: bytes, headers: list[tuple[bytes, bytes]]
) -> None:
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [*JSON_HEADERS, (b"content-length", str(len(body)).encode()), *headers],
        }
    )
    await send({"type": "http.response.body", "body": body})


async def send_error(send: Send, error: KeelError, headers: list[tuple[bytes, bytes]]) -> None:
    status, body, extra = error_response(error)
    await send_json(send, status, body, [*headers, *extra])


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
            message: Any = await receive()
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
