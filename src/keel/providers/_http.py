"""Shared aiohttp plumbing for the HTTP adapters.

Three things live here so each exists once: the lazily created connection
pool, the server-sent-events decoder, and the translation of foreign
exceptions (aiohttp errors, timeouts) into ``keel.errors``. HTTP statuses and
upstream error bodies are mapped by ``_errors``, which the simulator shares.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, Callable, Iterable, Mapping
from contextlib import aclosing
from types import TracebackType
from typing import NamedTuple

import aiohttp
import orjson

from keel.errors import (
    KeelError,
    ProviderError,
    UpstreamConnectError,
    UpstreamProtocolError,
    UpstreamTimeout,
)
from keel.providers._errors import Json, error_from_status, parse_object

# Upstreams close idle connections after a while; reusing one they already
# dropped costs a failed attempt, so keep our side shorter than most servers'.
KEEPALIVE_S = 30.0
# After a stream's terminal event, how long to wait for the end of the body so
# the connection can go back to the pool. The end usually follows at once (the
# last chunk of a chunked body); a server that lingers costs a new connection.
DRAIN_S = 1.0
# A line without a newline this long is not an SSE stream we can trust.
MAX_SSE_BUFFER = 16 * 1024 * 1024
_BOM = b"\xef\xbb\xbf"


class HttpClient:
    """One pooled ``aiohttp.ClientSession`` per adapter, created on first use.

    The session must be born inside the running event loop, and building an
    adapter must not do I/O (workers start fast), hence the lazy creation.
    aiohttp's own timeouts are switched off: ``total`` defaults to 300 s,
    which would cut long streams; each adapter bounds its calls itself.
    ``secrets`` (the key, secret header values) are redacted from any upstream
    text passed on in an error.
    """

    __slots__ = ("_headers", "_max_connections", "_session", "secrets")

    def __init__(
        self, *, max_connections: int, headers: Mapping[str, str], secrets: Iterable[str] = ()
    ) -> None:
        self._max_connections = max_connections
        self._headers = dict(headers)
        self.secrets = tuple(s for s in secrets if s)
        self._session: aiohttp.ClientSession | None = None

    @property
    def session(self) -> aiohttp.ClientSession:
        session = self._session
        if session is None or session.closed:
            connector = aiohttp.TCPConnector(
                limit=self._max_connections, keepalive_timeout=KEEPALIVE_S
            )
            session = aiohttp.ClientSession(
                connector=connector,
                headers=self._headers,
                timeout=aiohttp.ClientTimeout(total=None, sock_connect=None, sock_read=None),
                # An API proxy keeps no cookies, and asking for identity encoding
                # spares a decompression pass on every answer.
                cookie_jar=aiohttp.DummyCookieJar(),
                skip_auto_headers=("Accept-Encoding",),
                auto_decompress=False,
            )
            self._session = session
        return session

    async def post(self, url: str, body: Json) -> aiohttp.ClientResponse:
        """POST ``body`` as JSON; redirects are a misconfigured base URL, not followed."""
        return await self.session.post(url, data=orjson.dumps(body), allow_redirects=False)

    async def post_json(self, url: str, body: Json, *, timeout: float) -> Json:
        """POST and return the JSON object answer; every failure as ``keel.errors``."""
        with translating:
            async with asyncio.timeout(timeout):
                response = await self.post(url, body)
                try:
                    if not 200 <= response.status < 300:
                        raise await read_error(response, self.secrets)
                    raw = await response.read()
                finally:
                    finish(response)
        return parse_object(raw)

    async def post_events(
        self,
        url: str,
        body: Json,
        *,
        timeout: float,
        idle_timeout: float,
        terminal: Callable[[SSEEvent], bool],
    ) -> AsyncGenerator[SSEEvent, None]:
        """POST and yield the answer's server-sent events.

        ``timeout`` bounds the wait for the first event, ``idle_timeout`` each
        later gap. ``terminal`` recognises the protocol's last event: before it
        is yielded the rest of the body is read (for at most ``DRAIN_S``), so
        the connection goes back to the pool when the caller stops there.
        Closing the generator at any other point, or cancelling it, drops the
        connection at once, which is how the upstream learns to stop generating.
        """
        deadline = asyncio.get_running_loop().time() + timeout
        with translating:
            async with asyncio.timeout_at(deadline):
                response = await self.post(url, body)
            try:
                if not 200 <= response.status < 300:
                    async with asyncio.timeout_at(deadline):
                        raise await read_error(response, self.secrets)
                events = sse_events(response, first_deadline=deadline, idle_timeout=idle_timeout)
                async with aclosing(events):
                    async for event in events:
                        if terminal(event):
                            await drain(response)
                        yield event
            finally:
                finish(response)

    async def aclose(self) -> None:
        session, self._session = self._session, None
        if session is not None:
            await session.close()


async def drain(response: aiohttp.ClientResponse) -> None:
    """Read what is left of the body, for at most ``DRAIN_S``, discarding it.

    Only a timeout or a broken body is absorbed (``finish`` then closes the
    socket); cancellation propagates at once, so a gone client never waits.
    """
    try:
        async with asyncio.timeout(DRAIN_S):
            while await response.content.readany():
                pass
    except (TimeoutError, aiohttp.ClientError):
        pass


def finish(response: aiohttp.ClientResponse) -> None:
    """Return the connection to the pool if the body was read, else drop it.

    Closing an unfinished response closes its socket, which is how the
    upstream learns that the client went away and stops generating.
    """
    if response.content.is_eof():
        response.release()
    else:
        response.close()


# --- server-sent events -----------------------------------------------------


class SSEEvent(NamedTuple):
    event: str
    data: bytes


class SSEDecoder:
    """Incremental SSE parser: feed raw bytes, get complete events.

    Follows the WHATWG rules that matter here: LF, CR and CRLF line ends (a
    CRLF may be split across chunks), ``:`` comments, multi-line ``data``
    joined with LF, one optional space after the colon, and an event is only
    dispatched at a blank line, so a half-received event is never returned.
    """

    __slots__ = ("_buffer", "_data", "_event", "_skip_lf", "_started")

    def __init__(self) -> None:
        self._buffer = b""
        self._skip_lf = False
        self._started = False
        self._data: list[bytes] = []
        self._event = ""

    def feed(self, chunk: bytes) -> list[SSEEvent]:
        if not self._started and chunk:
            self._started = True
            chunk = chunk.removeprefix(_BOM)
        if self._skip_lf and chunk:
            self._skip_lf = False
            if chunk[:1] == b"\n":
                chunk = chunk[1:]
        buffer = self._buffer + chunk if self._buffer else chunk
        # bytes.splitlines splits on exactly LF, CR and CRLF, as SSE wants.
        lines = buffer.splitlines(keepends=True)
        if lines and not lines[-1].endswith((b"\n", b"\r")):
            self._buffer = lines.pop()
            if len(self._buffer) > MAX_SSE_BUFFER:
                raise UpstreamProtocolError("upstream sent an over-long stream line")
        else:
            self._buffer = b""
            # A trailing CR may be the first half of a CRLF.
            self._skip_lf = buffer.endswith(b"\r")
        events: list[SSEEvent] = []
        for raw in lines:
            self._line(raw.rstrip(b"\r\n"), events)
        return events

    def _line(self, line: bytes, events: list[SSEEvent]) -> None:
        if not line:
            data = b"\n".join(self._data)
            if data:  # per the spec, an event with empty data is not dispatched
                events.append(SSEEvent(self._event or "message", data))
            self._data = []
            self._event = ""
        elif line[0] != 0x3A:  # a leading ":" marks a comment (keep-alive)
            field, _, value = line.partition(b":")
            if value[:1] == b" ":
                value = value[1:]
            if field == b"data":
                self._data.append(value)
            elif field == b"event":
                self._event = value.decode("utf-8", "replace")
            # "id" and "retry" matter only to reconnecting browsers.


async def sse_events(
    response: aiohttp.ClientResponse, *, first_deadline: float, idle_timeout: float
) -> AsyncGenerator[SSEEvent, None]:
    """Yield the events of a streamed response.

    Until the first event arrives, reads are bounded by ``first_deadline``
    (loop time); after it, each gap by ``idle_timeout``. Either raises
    ``UpstreamTimeout``. The end of the body, or a connection cut mid-body,
    simply ends the iteration: the caller knows its protocol's terminator and
    must treat an ending without it as a broken stream.
    """
    decoder = SSEDecoder()
    content = response.content
    seen_event = False
    while True:
        try:
            if seen_event:
                async with asyncio.timeout(idle_timeout):
                    chunk = await content.readany()
            else:
                async with asyncio.timeout_at(first_deadline):
                    chunk = await content.readany()
        except TimeoutError:
            wait = f"{idle_timeout:g}s idle" if seen_event else "the first event"
            raise UpstreamTimeout(f"upstream stream stalled (waited {wait})") from None
        except (aiohttp.ClientPayloadError, aiohttp.ClientConnectionError):
            return
        if not chunk:
            return
        for event in decoder.feed(chunk):
            seen_event = True
            yield event


# --- foreign exceptions ---------------------------------------------------


def error_from_exception(exc: BaseException) -> ProviderError | None:
    """Map an exception raised while talking to an upstream; None if it is not foreign."""
    if not isinstance(exc, Exception) or isinstance(exc, KeelError):
        return None  # cancellation, generator exit and Keel's own errors pass through
    # Order matters: aiohttp's timeout errors are also connection errors.
    if isinstance(exc, TimeoutError):
        return UpstreamTimeout("upstream did not answer in time")
    if isinstance(exc, aiohttp.ClientPayloadError):
        return UpstreamProtocolError("upstream response body was cut short")
    if isinstance(exc, aiohttp.ClientConnectionError):
        return UpstreamConnectError(f"cannot reach upstream: {type(exc).__name__}: {exc}")
    if isinstance(exc, orjson.JSONDecodeError):
        return UpstreamProtocolError("upstream sent malformed JSON")
    if isinstance(exc, aiohttp.ClientError):
        return UpstreamProtocolError(f"bad upstream response: {type(exc).__name__}")
    return None  # anything else is a Keel bug and must surface as one


class _Translating:
    """``with translating: ...`` re-raises foreign failures as ``ProviderError``."""

    __slots__ = ()

    def __enter__(self) -> None:
        return None

    def __exit__(
        self,
        kind: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if exc is not None:
            error = error_from_exception(exc)
            if error is not None:
                raise error from exc


# Stateless, so one shared instance serves every call without an allocation.
translating = _Translating()


async def read_error(response: aiohttp.ClientResponse, secrets: Iterable[str]) -> ProviderError:
    """Read an error response's body and map it; the body is small and read fully."""
    body = await response.read()
    return error_from_status(response.status, response.headers, body, secrets=secrets)
