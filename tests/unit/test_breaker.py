"""Unit tests for vvp_helper.verifier.guard.CircuitBreaker with a fake clock."""

from __future__ import annotations

import pytest

from vvp_helper.errors import VerifierHTTPError, VerifierTimeout, VerifierUnreachable
from vvp_helper.verifier.guard import BreakerSettings, CircuitBreaker, State, failure_cause


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def breaker(clock: Clock, **changes: float) -> CircuitBreaker:
    return CircuitBreaker(BreakerSettings(**changes), clock=clock)  # type: ignore[arg-type]


def open_it(b: CircuitBreaker) -> None:
    for _ in range(b.settings.min_calls):
        b.record("unreachable")
    assert b.state is State.OPEN


def test_a_minority_of_failures_never_opens_it() -> None:
    b = breaker(Clock())
    for i in range(500):
        b.record("timeout" if i % 5 < 2 else None)  # 40 % failures, interleaved
    assert b.state is State.CLOSED


def test_failures_below_the_minimum_number_of_calls_do_not_open_it() -> None:
    b = breaker(Clock())
    for _ in range(b.settings.min_calls - 1):
        b.record("unreachable")
    assert b.state is State.CLOSED
    b.record("http_503")
    assert b.state is State.OPEN
    assert not b.allow()


def test_the_rate_is_over_the_last_window_of_answers() -> None:
    b = breaker(Clock(), window=50, min_calls=20)
    for _ in range(200):
        b.record(None)
    for _ in range(24):  # 24 of the last 50 failed: under half
        b.record("timeout")
    assert b.state is State.CLOSED
    b.record("timeout")  # 25 of 50
    assert b.state is State.OPEN
    assert b.causes() == {}  # the window starts afresh when it opens


def test_open_refuses_until_its_time_then_admits_a_share_half_open() -> None:
    clock = Clock()
    b = breaker(clock, open_seconds=5.0, ramp_start=0.1)
    open_it(b)
    clock.now += 4.9
    assert not any(b.allow() for _ in range(100))
    clock.now += 0.2
    assert b.allow()  # the first call after the pause is a probe
    assert b.state is State.HALF_OPEN
    admitted = sum(b.allow() for _ in range(100))
    assert admitted == 10  # 10 % of calls, not one probe and not the flood


def test_half_open_ramps_admission_up_step_by_step_then_closes() -> None:
    clock = Clock()
    b = breaker(clock, open_seconds=5.0, ramp_start=0.1, ramp_step=1.0)
    open_it(b)
    clock.now += 5.0
    shares = []
    for _ in range(10):
        admitted = sum(b.allow() for _ in range(100))
        shares.append(admitted)
        for _ in range(admitted):
            b.record(None)
        clock.now += 1.0
        b.record(None)  # a probe answer after the step's time: the step is judged
        if b.state is State.CLOSED:
            break
    assert shares[:4] == [10, 20, 40, 80], shares
    assert b.state is State.CLOSED
    assert sum(b.allow() for _ in range(100)) == 100


def test_half_open_probes_failing_reopen_it() -> None:
    clock = Clock()
    b = breaker(clock, open_seconds=5.0, probe_min=3)
    open_it(b)
    clock.now += 5.0
    assert b.allow()
    b.record(None)
    b.record("timeout")
    assert b.state is State.HALF_OPEN  # 1 of 2: not judged yet
    b.record("timeout")
    assert b.state is State.OPEN
    clock.now += 1.0
    assert not b.allow()


def test_healthy_needs_a_recent_verdict_and_a_closed_breaker() -> None:
    clock = Clock()
    b = breaker(clock, healthy_seconds=2.0)
    assert not b.healthy()  # nothing answered yet: a 500 is the verifier's
    b.record(None)
    assert b.healthy()
    clock.now += 2.5
    assert not b.healthy()  # no verdict for a while: the verifier may be failing all
    b.record(None)
    open_it(b)
    b.record(None)
    assert not b.healthy()  # open: whatever it answered last


def test_crafted_500s_among_half_open_probes_do_not_keep_it_open() -> None:
    clock = Clock()
    b = breaker(clock, open_seconds=5.0, healthy_seconds=2.0)
    open_it(b)
    clock.now += 5.0
    assert b.allow()
    assert not b.healthy()  # no verdict since it opened: a 500 now is the verifier's
    b.record(None)  # a probe got its verdict
    assert b.healthy()  # so a 500 for the next request is that request's, not counted


@pytest.mark.parametrize(
    ("exc", "cause"),
    [
        (VerifierHTTPError(503, "x"), "http_503"),
        (VerifierHTTPError(500, "x"), "http_500"),
        (VerifierHTTPError(999, "x"), "http_other"),
        (VerifierTimeout("x"), "timeout"),
        (VerifierUnreachable("x"), "unreachable"),
    ],
)
def test_failure_causes_are_bounded_labels(exc: Exception, cause: str) -> None:
    assert failure_cause(exc) == cause  # type: ignore[arg-type]
