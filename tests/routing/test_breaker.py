from keel.config import BreakerConfig
from keel.routing import BreakerState, CircuitBreaker


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def breaker(clock: Clock) -> CircuitBreaker:
    config = BreakerConfig(window_s=10, min_requests=4, failure_rate=0.5, cooldown_s=5)
    return CircuitBreaker(config, clock=clock)


def test_opens_on_failure_rate_only_after_min_requests() -> None:
    clock = Clock()
    b = breaker(clock)
    for _ in range(3):
        b.record_failure()
    assert b.state is BreakerState.CLOSED  # 3 < min_requests
    b.record_failure()
    assert b.state is BreakerState.OPEN
    assert not b.allow()


def test_successes_keep_it_closed_below_the_rate() -> None:
    clock = Clock()
    b = breaker(clock)
    for _ in range(3):
        b.record_success()
    b.record_failure()
    b.record_failure()
    assert b.state is BreakerState.CLOSED  # 2 of 5 = 40 %


def test_old_outcomes_leave_the_window() -> None:
    clock = Clock()
    b = breaker(clock)
    for _ in range(3):
        b.record_failure()
    clock.now += 11  # the window has moved past those failures
    b.record_failure()
    assert b.state is BreakerState.CLOSED


def test_half_open_admits_one_probe_and_closes_on_success() -> None:
    clock = Clock()
    b = breaker(clock)
    for _ in range(4):
        b.record_failure()
    clock.now += 5
    assert b.state is BreakerState.HALF_OPEN
    assert b.allow()
    assert not b.allow()  # only one probe at a time
    b.record_success()
    assert b.state is BreakerState.CLOSED
    assert b.allow()


def test_failed_probe_reopens_for_another_cooldown() -> None:
    clock = Clock()
    b = breaker(clock)
    for _ in range(4):
        b.record_failure()
    clock.now += 5
    assert b.allow()
    b.record_failure()
    assert b.state is BreakerState.OPEN
    clock.now += 4.9
    assert not b.allow()
    assert b.opened_count == 2


def test_released_probe_lets_the_next_one_through() -> None:
    clock = Clock()
    b = breaker(clock)
    for _ in range(4):
        b.record_failure()
    clock.now += 5
    assert b.allow()
    b.release()
    assert b.allow()
