"""A circuit breaker per deployment.

Closed, it counts outcomes in a rolling window of buckets; when the failure
rate over at least ``min_requests`` calls reaches the threshold it opens and
refuses calls for ``cooldown_s``. Then it lets exactly one probe through
(half-open): success closes it with a clean window, failure opens it again.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from enum import StrEnum

from keel.config import BreakerConfig

_BUCKETS = 10


class BreakerState(StrEnum):
    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


class CircuitBreaker:
    def __init__(
        self, config: BreakerConfig, *, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._config = config
        self._clock = clock
        self._bucket_s = config.window_s / _BUCKETS
        # Each bucket: [bucket index, calls, failures]; index tells stale from fresh.
        self._buckets = [[-1, 0, 0] for _ in range(_BUCKETS)]
        self._state = BreakerState.CLOSED
        self._open_until = 0.0
        self._probe_in_flight = False
        self.opened_count = 0

    @property
    def state(self) -> BreakerState:
        if self._state is BreakerState.OPEN and self._clock() >= self._open_until:
            return BreakerState.HALF_OPEN
        return self._state

    def allow(self) -> bool:
        """May a call go to this deployment now? Claims the probe when half-open."""
        if self._state is BreakerState.CLOSED:
            return True
        if self._state is BreakerState.OPEN:
            if self._clock() < self._open_until:
                return False
            self._state = BreakerState.HALF_OPEN
            self._probe_in_flight = False
        if self._probe_in_flight:
            return False
        self._probe_in_flight = True
        return True

    def record_success(self) -> None:
        if self._state is not BreakerState.CLOSED:
            self._close()
            return
        self._count(failed=False)

    def record_failure(self) -> None:
        if self._state is not BreakerState.CLOSED:
            self._open()
            return
        self._count(failed=True)
        calls, failures = self._totals()
        if calls >= self._config.min_requests and failures / calls >= self._config.failure_rate:
            self._open()

    def release(self) -> None:
        """The call ended with no verdict (the client went away): free the probe."""
        self._probe_in_flight = False

    def _count(self, *, failed: bool) -> None:
        index = int(self._clock() / self._bucket_s)
        bucket = self._buckets[index % _BUCKETS]
        if bucket[0] != index:
            bucket[0], bucket[1], bucket[2] = index, 0, 0
        bucket[1] += 1
        if failed:
            bucket[2] += 1

    def _totals(self) -> tuple[int, int]:
        oldest = int(self._clock() / self._bucket_s) - _BUCKETS + 1
        calls = failures = 0
        for index, bucket_calls, bucket_failures in self._buckets:
            if index >= oldest:
                calls += bucket_calls
                failures += bucket_failures
        return calls, failures

    def _open(self) -> None:
        self._state = BreakerState.OPEN
        self._open_until = self._clock() + self._config.cooldown_s
        self._probe_in_flight = False
        self.opened_count += 1

    def _close(self) -> None:
        self._state = BreakerState.CLOSED
        self._probe_in_flight = False
        for bucket in self._buckets:
            bucket[0], bucket[1], bucket[2] = -1, 0, 0
