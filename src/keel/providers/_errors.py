"""The table from an upstream's HTTP answer to ``keel.errors``.

It goes by HTTP status and structured error fields, never by the text of a
message. It imports neither aiohttp nor starlette, so the HTTP adapters (via
``_http``) and the in-process simulator share it: the simulator raises exactly
what an adapter would raise for the same HTTP answer.
"""

from __future__ import annotations

import email.utils
import time
from collections.abc import Iterable, Mapping
from typing import Any, NamedTuple

import orjson

from keel.errors import (
    ContextWindowExceeded,
    ProviderError,
    UpstreamAuthError,
    UpstreamNotFound,
    UpstreamProtocolError,
    UpstreamRateLimited,
    UpstreamRejected,
    UpstreamTimeout,
    UpstreamUnavailable,
)

Json = dict[str, Any]

# Structured error types (OpenAI ``error.type``, Anthropic ``error.type``) to
# the HTTP status they stand for, for errors that arrive inside a 200 stream.
TYPE_STATUS = {
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


def redact(message: str, secrets: Iterable[str]) -> str:
    """``message`` with every secret replaced by ``***``.

    Defence in depth: some servers echo what they were sent, headers included.
    Longest first, so a secret that contains another is hidden whole.
    """
    for secret in sorted(secrets, key=len, reverse=True):
        if secret and secret in message:  # an empty secret would match everywhere
            message = message.replace(secret, "***")
    return message


def error_from_status(
    status: int,
    headers: Mapping[str, str],
    body: bytes,
    *,
    secrets: Iterable[str] = (),
) -> ProviderError:
    """Map an upstream HTTP error response to a ``ProviderError``."""
    try:
        payload = orjson.loads(body) if body else None
    except orjson.JSONDecodeError:
        payload = None
    return error_from_payload(status, payload, headers=headers, secrets=secrets)


def _stream_status(payload: Any, error_type: str | None) -> int:
    """The status an in-stream error event stands for: an integer ``code``, else its type."""
    error = payload.get("error") if isinstance(payload, dict) else None
    raw_code = error.get("code") if isinstance(error, dict) else None
    if isinstance(raw_code, int) and 400 <= raw_code <= 599:
        return raw_code
    return TYPE_STATUS.get(error_type or "", 500)


def error_from_payload(
    status: int | None,
    payload: Any,
    *,
    headers: Mapping[str, str] | None = None,
    secrets: Iterable[str] = (),
) -> ProviderError:
    """Map a status and/or structured error body to a ``ProviderError``.

    ``status`` is None for an error event inside a stream; it is then derived
    from the error's own ``type`` (or an integer ``code`` some servers send).
    """
    detail = _detail(payload)
    if status is None:
        status = _stream_status(payload, detail.type)
    message = redact(detail.message, secrets)
    suffix = f": {message}" if message else ""
    if status in (401, 403):
        # The upstream's text may quote (part of) the key; never pass it on.
        return UpstreamAuthError(
            f"upstream refused Keel's credentials (HTTP {status})", upstream_status=status
        )
    if status == 404:
        # Almost always a wrong model name or base_url in keel.yaml: Keel's fault,
        # so the caller must not see it as their own 404.
        return UpstreamNotFound(
            f"upstream has no such model or route (HTTP 404){suffix}", upstream_status=status
        )
    if status == 408:
        return UpstreamTimeout(f"upstream timed out (HTTP 408){suffix}", upstream_status=status)
    if status == 429 or status >= 500:  # 5xx includes Anthropic's 529 "overloaded"
        retry_after = parse_retry_after(headers) if headers is not None else None
        kind = UpstreamRateLimited if status == 429 else UpstreamUnavailable
        what = "rate limited" if status == 429 else "unavailable"
        return kind(
            f"upstream {what} (HTTP {status}){suffix}",
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


def parse_object(body: bytes) -> Json:
    """Parse an upstream JSON body that must be an object."""
    try:
        value = orjson.loads(body)
    except orjson.JSONDecodeError:
        raise UpstreamProtocolError("upstream sent malformed JSON") from None
    if not isinstance(value, dict):
        raise UpstreamProtocolError("upstream sent JSON that is not an object")
    return value
