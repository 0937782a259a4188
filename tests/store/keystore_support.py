"""Helpers shared by the store tests (fixtures live in conftest.py)."""

from __future__ import annotations

from datetime import UTC, datetime

T0 = datetime(2030, 1, 1, 12, 0, tzinfo=UTC)
UNKNOWN = "sk-keel-" + "A" * 43  # well formed, never issued


class Clock:
    """A hand-moved clock, for expiry and cache TTLs without sleeping."""

    def __init__(self, now: datetime = T0) -> None:
        self.now = now
        self.mono = 1000.0
        self.calls = 0  # wall-clock reads, to keep them off the cache-hit path

    def __call__(self) -> datetime:
        self.calls += 1
        return self.now

    def monotonic(self) -> float:
        return self.mono


class QueryCounter:
    """Counts statements sent to the database through one engine."""

    def __init__(self) -> None:
        self.count = 0

    def __call__(self, *_args: object) -> None:
        self.count += 1
