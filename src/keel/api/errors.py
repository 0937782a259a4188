"""The one place a ``KeelError`` becomes an HTTP answer."""

from __future__ import annotations

import logging
import math

import orjson

from keel.errors import (
    BudgetExceeded,
    KeelError,
    LimitsUnavailable,
    ProviderError,
    RateLimited,
    StoreError,
    http_status,
)

log = logging.getLogger("keel.api")

INTERNAL = "internal error in Keel; see the gateway log"


def internal_error(where: str) -> KeelError:
    """Log the exception being handled and return what the client may see of it."""
    log.exception("unexpected error serving %s", where)
    return KeelError(INTERNAL)


def error_response(error: KeelError) -> tuple[int, bytes, list[tuple[bytes, bytes]]]:
    """Status, OpenAI-shaped body and extra headers for ``error``."""
    if isinstance(error, StoreError):
        # Its body carries a fixed sentence; the detail names the database, so it
        # goes to the log only.
        log.error("store unavailable: %s", error.message)
    elif isinstance(error, LimitsUnavailable):
        log.error("%s", error.message)
    body = error.body()
    headers: list[tuple[bytes, bytes]] = []
    if isinstance(error, ProviderError) and error.retry_after is not None:
        headers.append((b"retry-after", str(max(1, round(error.retry_after))).encode()))
    elif isinstance(error, RateLimited | BudgetExceeded) and error.retry_after_s is not None:
        # Rounded up: a client that waits exactly this long is admitted.
        headers.append((b"retry-after", str(max(1, math.ceil(error.retry_after_s))).encode()))
    return http_status(error), orjson.dumps(body), headers
