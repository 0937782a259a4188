"""Time helpers: the clock stores and runtimes default to, and reading the times
people type (ISO 8601, UTC when no offset is given)."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime

from keel.errors import InvalidRequest

# What a store or runtime takes as ``clock=``: tests pass a fake one.
Clock = Callable[[], datetime]


def utcnow() -> datetime:
    return datetime.now(UTC)


def parse_iso_time(text: str, param: str) -> datetime:
    """``text`` as an aware datetime, or an error naming ``param`` and the expected form."""
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise InvalidRequest(
            f"{param}: {text!r} is not an ISO 8601 time such as 2030-01-31T12:00:00Z",
            param=param,
        ) from None
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)
