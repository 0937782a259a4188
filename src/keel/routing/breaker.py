"""A circuit breaker per deployment.

Closed, it counts outcomes in a rolling window of buckets; when the failure
rate over at least ``min_requests`` calls reaches the threshold it opens and
refuses calls for ``cooldown_s``. Then it lets exactly one probe through
(half-open): the probe's success closes it with a clean window, its failure
opens it again. Only the probe decides: a call admitted earlier, while the
breaker was closed, that ends during the cooldown or the probe counts for
nothing, so a late answer can neither close the breaker early nor let a
second probe through.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum, StrEnum

from keel.config import BreakerConfig

_BUCKETS = 10


class BreakerState(StrEnum):
    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


class Admission(Enum):
    """What ``allow`` granted; hand it back with the call's verdict."""

    REFUSED = 0
    CALL = 1
    PROBE = 2


@dataclass(slots=True)
class _Bucket:
    index: int = -1  # which slice of time this bucket holds; tells stale from fresh
    calls: int = 0
    failures: int = 0


class CircuitBreaker:
    def __init__(
        self, config: BreakerConfig, *, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._config = config
        self._clock = clock
        self._bucket_s = config.window_s / _BUCKETS
        self._buckets = [_Bucket() for _ in range(_BUCKETS)]
        self._state = BreakerState.CLOSED
        self._open_until = 0.0
        self._probe_in_flight = False
        self.opened_count = 0

    @property
    def state(self) -> BreakerState:
        if self._state is BreakerState.OPEN and self._clock() >= self._open_until:
            return BreakerState.HALF_OPEN
        return self._state

    def admits(self) -> bool:
        """Would ``allow`` admit a call now? Claims nothing."""
        state = self.state
        return state is BreakerState.CLOSED or (
            state is BreakerState.HALF_OPEN and not self._probe_in_flight
        )

    def allow(self) -> Admission:
        """May a call go to this deployment now? Claims the probe when half-open."""
        if self._state is BreakerState.CLOSED:
            return Admission.CALL
        if self._state is BreakerState.OPEN:
            if self._clock() < self._open_until:
                return Admission.REFUSED
            self._state = BreakerState.HALF_OPEN
            self._probe_in_flight = False
        if self._probe_in_flight:
            return Admission.REFUSED
        self._probe_in_flight = True
        return Admission.PROBE

    def record_success(self, admission: Admission) -> None:
        if admission is Admission.PROBE:
            self._close()
        elif self._state is BreakerState.CLOSED:
            self._count(failed=False)

    def record_failure(self, admission: Admission) -> None:
        if admission is Admission.PROBE:
            self._open()
            return
        if self._state is not BreakerState.CLOSED:
            return
        self._count(failed=True)
        calls, failures = self._totals()
        if calls >= self._config.min_requests and failures / calls >= self._config.failure_rate:
            self._open()

    def release(self, admission: Admission) -> None:
        """The call ended with no verdict (the client went away): free the probe."""
        if admission is Admission.PROBE:
            self._probe_in_flight = False

    def _count(self, *, failed: bool) -> None:
        index = int(self._clock() / self._bucket_s)
        bucket = self._buckets[index % _BUCKETS]
        if bucket.index != index:
            bucket.index, bucket.calls, bucket.failures = index, 0, 0
        bucket.calls += 1
        bucket.failures += failed

    def _totals(self) -> tuple[int, int]:
        oldest = int(self._clock() / self._bucket_s) - _BUCKETS + 1
        fresh = [b for b in self._buckets if b.index >= oldest]
        return sum(b.calls for b in fresh), sum(b.failures for b in fresh)

    def _open(self) -> None:
        self._state = BreakerState.OPEN
        self._open_until = self._clock() + self._config.cooldown_s
        self._probe_in_flight = False
        self.opened_count += 1

    def _close(self) -> None:
        self._state = BreakerState.CLOSED
        self._probe_in_flight = False
        self._buckets = [_Bucket() for _ in range(_BUCKETS)]
