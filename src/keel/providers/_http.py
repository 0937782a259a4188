"""Shared aiohttp plumbing for the HTTP adapters.

Three things live here so each exists once: the lazily created connection
pool, the server-sent-events decoder, and the table that turns foreign
failures (aiohttp exceptions, timeouts, HTTP statuses, upstream error bodies)
into ``keel.errors``. The table goes by exception type, HTTP status and
structured error fields, never by the text of a message.
"""

from __future__ import annotations

import asyncio
import email.utils
import time
from collections.abc import AsyncGenerator, Mapping
from contextlib import aclosing
from types import TracebackType
from typing import Any, NamedTuple

import aiohttp
import orjson

from keel.errors import (
    ContextWindowExceeded,
    KeelError,
    ProviderError,
    UpstreamAuthError,
    UpstreamConnectError,
    UpstreamProtocolError,
    UpstreamRateLimited,
    UpstreamRejected,
    UpstreamTimeout,
    UpstreamUnavailable,
)

Json = dict[str, Any]

# Upstreams close idle connections after a while; reusing one they already
# dropped costs a failed attempt, so keep our side shorter than most servers'.
KEEPALIVE_S = 30.0
# A line without a newline this long is not an SSE stream we can trust.
MAX_SSE_BUFFER = 16 * 1024 * 1024
_BOM = b"\xef\xbb\xbf"


class HttpClient:
    """One pooled ``aiohttp.ClientSession`` per adapter, created on first use.

    The session must be born inside the running event loop, and building an
    adapter must not do I/O (workers start fast), hence the lazy creation.
    aiohttp's own timeouts are switched off: ``total`` defaults to 300 s,
    which would cut long streams; each adapter bounds its calls itself.
    """

    __slots__ = ("_headers", "_max_connections", "_session")

    def __init__(self, *, max_connections: int, headers: Mapping[str, str]) -> None:
        self._max_connections = max_connections
        self._headers = dict(headers)
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

    async def post_json(self, url: str, body: Json, *, timeout: float, secret: str | None) -> Json:
        """POST and return the JSON object answer; every failure as ``keel.errors``."""
        with translating:
            async with asyncio.timeout(timeout):
                response = await self.post(url, body)
                try:
                    if not 200 <= response.status < 300:
                        raise await read_error(response, secret)
                    raw = await response.read()
                finally:
                    finish(response)
        return parse_object(raw)

    async def post_events(
        self, url: str, body: Json, *, timeout: float, idle_timeout: float, secret: str | None
    ) -> AsyncGenerator[SSEEvent, None]:
        """POST and yield the answer's server-sent events.

        ``timeout`` bounds the wait for the first event, ``idle_timeout`` each
        later gap. Closing the generator early drops the connection, which is
        how the upstream learns to stop generating.
        """
        deadline = asyncio.get_running_loop().time() + timeout
        with translating:
            async with asyncio.timeout_at(deadline):
                response = await self.post(url, body)
            try:
                if not 200 <= response.status < 300:
                    async with asyncio.timeout_at(deadline):
                        raise await read_error(response, secret)
                events = sse_events(response, first_deadline=deadline, idle_timeout=idle_timeout)
                async with aclosing(events):
                    async for event in events:
                        yield event
            finally:
                finish(response)

    async def aclose(self) -> None:
        session, self._session = self._session, None
        if session is not None:
            await session.close()


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


# --- the translation table --------------------------------------------------

# Structured error types (OpenAI ``error.type``, Anthropic ``error.type``) to
# the HTTP status they stand for, for errors that arrive inside a 200 stream.
_TYPE_STATUS = {
    "invalid_request_error": 400,
    "authentication_error": 401,
    "permission_error": 403,
    "permission_denied_error": 403,
    "not_found_error": 404,
    "request_too_large": 413,
    "rate_limit_error": 429,
    "api_error": 500,
    "server_error": 500,
    "overloaded_error": 529,
    "timeout_error": 504,
}


def parse_retry_after(headers: Mapping[str, str], *, now: float | None = None) -> float | None:
    """Seconds to wait from ``retry-after-ms``, or ``retry-after`` (seconds or HTTP date)."""
    millis = headers.get("retry-after-ms")
    if millis is not None:
        try:
            return max(0.0, float(millis) / 1000)
        except ValueError:
            pass
    value = headers.get("retry-after")
    if value is None:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:  # RFC 9110 dates are GMT; a naive parse means "-0000"
        return None
    return max(0.0, when.timestamp() - (time.time() if now is None else now))


class _Detail(NamedTuple):
    message: str
    type: str | None
    code: str | None
    param: str | None


def _detail(payload: Any) -> _Detail:
    """The structured fields of an OpenAI or Anthropic error body, if any."""
    error = payload.get("error") if isinstance(payload, dict) else None
    if isinstance(error, str):
        return _Detail(error, None, None, None)
    if not isinstance(error, dict):
        return _Detail("", None, None, None)

    def text(key: str) -> str | None:
        value = error.get(key)
        return value if isinstance(value, str) else None

    return _Detail(text("message") or "", text("type"), text("code"), text("param"))


def _redact(message: str, secret: str | None) -> str:
    # Defence in depth: some servers echo what they were sent.
    return message.replace(secret, "***") if secret and secret in message else message


def error_from_status(
    status: int,
    headers: Mapping[str, str],
    body: bytes,
    *,
    secret: str | None = None,
) -> ProviderError:
    """Map an upstream HTTP error response to a ``ProviderError``."""
    try:
        payload = orjson.loads(body) if body else None
    except orjson.JSONDecodeError:
        payload = None
    return error_from_payload(status, payload, headers=headers, secret=secret)


def error_from_payload(
    status: int | None,
    payload: Any,
    *,
    headers: Mapping[str, str] | None = None,
    secret: str | None = None,
) -> ProviderError:
    """Map a status and/or structured error body to a ``ProviderError``.

    ``status`` is None for an error event inside a stream; it is then derived
    from the error's own ``type`` (or an integer ``code`` some servers send).
    """
    detail = _detail(payload)
    if status is None:
        error = payload.get("error") if isinstance(payload, dict) else None
        raw_code = error.get("code") if isinstance(error, dict) else None
        if isinstance(raw_code, int) and 400 <= raw_code <= 599:
            status = raw_code
        else:
            status = _TYPE_STATUS.get(detail.type or "", 500)
    message = _redact(detail.message, secret)
    suffix = f": {message}" if message else ""
    if status in (401, 403):
        # The upstream's text may quote (part of) the key; never pass it on.
        return UpstreamAuthError(
            f"upstream refused Keel's credentials (HTTP {status})", upstream_status=status
        )
    if status == 408:
        return UpstreamTimeout(f"upstream timed out (HTTP 408){suffix}", upstream_status=status)
    if status == 429:
        retry_after = parse_retry_after(headers) if headers is not None else None
        return UpstreamRateLimited(
            f"upstream rate limited (HTTP 429){suffix}",
            upstream_status=status,
            retry_after=retry_after,
        )
    if status >= 500:  # includes Anthropic's 529 "overloaded"
        retry_after = parse_retry_after(headers) if headers is not None else None
        return UpstreamUnavailable(
            f"upstream unavailable (HTTP {status}){suffix}",
            upstream_status=status,
            retry_after=retry_after,
        )
    if 400 <= status < 500:
        if detail.code == "context_length_exceeded":
            return ContextWindowExceeded(
                message or "the request exceeds the model's context window",
                upstream_status=status,
                param=detail.param or "messages",
            )
        # The caller's request was bad: their status, the upstream's words.
        return UpstreamRejected(
            message or f"upstream rejected the request (HTTP {status})",
            upstream_status=status,
            param=detail.param,
        )
    return UpstreamProtocolError(f"unexpected upstream HTTP {status}", upstream_status=status)


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


def parse_object(body: bytes) -> Json:
    """Parse an upstream JSON body that must be an object."""
    try:
        value = orjson.loads(body)
    except orjson.JSONDecodeError:
        raise UpstreamProtocolError("upstream sent malformed JSON") from None
    if not isinstance(value, dict):
        raise UpstreamProtocolError("upstream sent JSON that is not an object")
    return value


async def read_error(response: aiohttp.ClientResponse, secret: str | None) -> ProviderError:
    """Read an error response's body and map it; the body is small and read fully."""
    body = await response.read()
    return error_from_status(response.status, response.headers, body, secret=secret)
