"""W3C trace context: continue the caller's trace, or start one."""

from __future__ import annotations

import os
import re

_TRACEPARENT = re.compile(r"00-([0-9a-f]{32})-([0-9a-f]{16})-[0-9a-f]{2}")
_INVALID_TRACE = "0" * 32
_INVALID_SPAN = "0" * 16


def new_span_id() -> str:
    return os.urandom(8).hex()


def parse_traceparent(header: str | None) -> tuple[str, str | None]:
    """(trace id, parent span id) from a ``traceparent`` header, or a fresh trace.

    A malformed or all-zero header starts a new trace instead of failing the
    request: tracing must never cost a caller its answer.
    """
    if header:
        match = _TRACEPARENT.fullmatch(header.strip().lower())
        if match and match[1] != _INVALID_TRACE and match[2] != _INVALID_SPAN:
            return match[1], match[2]
    return os.urandom(16).hex(), None


def traceparent(trace_id: str, span_id: str) -> str:
    """The header that puts the caller's next span under Keel's root span."""
    return f"00-{trace_id}-{span_id}-01"
