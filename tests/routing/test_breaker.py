from keel.config import BreakerConfig
from keel.routing import Admission, BreakerState, CircuitBreaker

CALL, PROBE = Admission.CALL, Admission.PROBE


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
        b.record_failure(CALL)
    assert b.state is BreakerState.CLOSED  # 3 < min_requests
    b.record_failure(CALL)
    assert b.state is BreakerState.OPEN
    assert b.allow() is Admission.REFUSED


def test_successes_keep_it_closed_below_the_rate() -> None:
    clock = Clock()
    b = breaker(clock)
    for _ in range(3):
        b.record_success(CALL)
    b.record_failure(CALL)
    b.record_failure(CALL)
    assert b.state is BreakerState.CLOSED  # 2 of 5 = 40 %


def test_old_outcomes_leave_the_window() -> None:
    clock = Clock()
    b = breaker(clock)
    for _ in range(3):
        b.record_failure(CALL)
    clock.now += 11  # the window has moved past those failures
    b.record_failure(CALL)
    assert b.state is BreakerState.CLOSED


def opened(clock: Clock) -> CircuitBreaker:
    b = breaker(clock)
    for _ in range(4):
        b.record_failure(CALL)
    return b


def test_half_open_admits_one_probe_and_closes_on_success() -> None:
    clock = Clock()
    b = opened(clock)
    clock.now += 5
    assert b.state is BreakerState.HALF_OPEN
    assert b.allow() is PROBE
    assert b.allow() is Admission.REFUSED  # only one probe at a time
    b.record_success(PROBE)
    assert b.state is BreakerState.CLOSED
    assert b.allow() is CALL


def test_failed_probe_reopens_for_another_cooldown() -> None:
    clock = Clock()
    b = opened(clock)
    clock.now += 5
    assert b.allow() is PROBE
    b.record_failure(PROBE)
    assert b.state is BreakerState.OPEN
    clock.now += 4.9
    assert b.allow() is Admission.REFUSED
    assert b.opened_count == 2


def test_released_probe_lets_the_next_one_through() -> None:
    clock = Clock()
    b = opened(clock)
    clock.now += 5
    assert b.allow() is PROBE
    b.release(PROBE)
    assert b.allow() is PROBE


def test_a_late_success_from_before_the_opening_does_not_close_it() -> None:
    clock = Clock()
    b = opened(clock)
    b.record_success(CALL)  # admitted while closed, answered after the breaker opened
    assert b.state is BreakerState.OPEN
    assert b.allow() is Admission.REFUSED


def test_late_verdicts_cannot_free_or_steal_the_probe() -> None:
    clock = Clock()
    b = opened(clock)
    clock.now += 5
    assert b.allow() is PROBE
    b.release(CALL)  # an old call's client went away
    assert b.allow() is Admission.REFUSED  # still one probe only
    b.record_failure(CALL)  # an old call failed late
    assert b.state is BreakerState.HALF_OPEN
    assert b.opened_count == 1
    b.record_success(PROBE)
    assert b.state is BreakerState.CLOSED
