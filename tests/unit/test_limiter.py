"""Unit tests for vvp_helper.verifier.limiter: the Gradient2 arithmetic with a fake clock,
and the asyncio gate on it."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import pytest

from vvp_helper.verifier.limiter import ConcurrencyLimiter, Gradient2, LimitReached


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def run(limit: Gradient2, clock: Clock, rtt: float | Callable[[int], float], seconds: float,
        in_flight: int | None = None, per_second: int | None = None) -> None:  # fmt: skip
    """Feed answers of latency ``rtt`` (or ``rtt(calls in flight)``) for ``seconds`` of fake
    time, with the limit fully used unless ``in_flight`` says otherwise: ``per_second`` of
    them, or with None as many as those calls in flight give (Little's law: in flight /
    latency a second), as a verifier that keeps pace does."""
    end = clock.now + seconds
    while clock.now < end:
        used = int(limit.limit) if in_flight is None else in_flight
        latency = rtt(used) if callable(rtt) else rtt
        clock.now += 1 / per_second if per_second else latency / used
        limit.sample(latency, used)


def watch(limit: Gradient2) -> list[float]:
    """The limits ``limit`` tells its watcher from now on, in order."""
    seen: list[float] = []
    limit.on_update = lambda: seen.append(limit.limit)
    return seen


def test_grows_while_latency_stays_near_its_unloaded_minimum() -> None:
    clock = Clock()
    limit = Gradient2(initial=20, max_limit=512, clock=clock)
    run(limit, clock, 0.020, 5)
    assert limit.limit > 40


def test_slow_start_doubles_the_limit_each_window_until_the_ceiling() -> None:
    # Traffic arriving at an idle edge, against a verifier answering in 20 ms: one window
    # is 0.1 s (100 answers at the first limit), so 20 -> 40 -> 80 -> 160 -> 320 -> 512 in
    # about 0.6 s.
    clock = Clock()
    limit = Gradient2(initial=20, max_limit=512, clock=clock)
    seen = watch(limit)
    run(limit, clock, 0.020, 0.65)
    assert seen[:5] == [40, 80, 160, 320, 512]
    assert not limit.slow_start


def test_slow_start_ends_at_the_first_window_of_climbing_latency() -> None:
    clock = Clock()
    limit = Gradient2(initial=20, max_limit=512, clock=clock)
    run(limit, clock, 0.020, 0.25)
    assert limit.slow_start and limit.limit == 80
    # Quieter traffic (the limit not in use: no change) while the long average learns.
    # (The window straddling the change may still double it once.)
    run(limit, clock, 0.020, 2.0, in_flight=10)
    assert limit.slow_start
    before = limit.limit
    # The verifier queues behind its capacity: past the 200 ms floor and the tolerance.
    seen = watch(limit)
    run(limit, clock, 0.6, 3.0, per_second=50)
    assert not limit.slow_start
    assert max(seen) <= 2 * before  # at most the straddling window's doubling
    cut = limit.limit
    assert cut < max(seen) / 2
    # Healthy again: Gradient2's additive growth, never a doubling per window.
    seen = watch(limit)
    run(limit, clock, 0.020, 1.0)
    steps = [after / before for before, after in zip([cut, *seen], seen, strict=False)]
    assert seen and max(steps) < 1.5, steps


def test_slow_start_stops_near_a_saturated_verifiers_capacity() -> None:
    # A verifier taking 200 answers/s: latency is what queues in front of it (in flight /
    # 200). Slow start stops at the first window past 1.5 times the 200 ms floor, and the
    # long average stays the fastest window's (not a mean of the queueing the doubling
    # caused), so the limit settles where latency is about 300 ms, not past a second.
    clock = Clock()
    limit = Gradient2(initial=20, max_limit=512, clock=clock)
    run(limit, clock, lambda used: used / 200, 20)
    assert not limit.slow_start
    assert limit.limit < 100, limit.limit
    assert limit.long_rtt < 0.15


def test_a_timeout_ends_slow_start() -> None:
    clock = Clock()
    limit = Gradient2(initial=20, max_limit=512, clock=clock)
    run(limit, clock, 0.020, 0.15)
    grown = limit.limit
    limit.sample(6.0, int(limit.limit), dropped=True)
    clock.now += 0.2
    limit.sample(0.020, int(limit.limit))
    assert not limit.slow_start
    assert limit.limit < 1.5 * grown  # at most Gradient2's step, no doubling


def test_shrinks_when_latency_climbs_and_follows_it_within_seconds() -> None:
    clock = Clock()
    limit = Gradient2(initial=20, max_limit=512, slow_start=False, clock=clock)
    run(limit, clock, 0.020, 3, per_second=200)
    before = limit.limit
    # A second per answer (a verifier queueing behind its capacity: far past the 200 ms
    # latency floor and its 1.5 tolerance), and far fewer answers per second.
    run(limit, clock, 1.0, 3, per_second=20)
    assert limit.limit < before / 2
    run(limit, clock, 1.0, 7, per_second=20)
    assert limit.limit <= 6  # near its floor for a latency that does not come back


def test_never_cut_by_more_than_half_in_one_window() -> None:
    clock = Clock()
    limit = Gradient2(initial=100, max_limit=512, smoothing=1.0, smoothing_down=1.0, clock=clock)
    run(limit, clock, 0.020, 1)
    before = limit.limit
    for _ in range(limit.window_samples):  # one window of absurd latency
        limit.sample(5.0, int(limit.limit))
    clock.now += 1.0
    limit.sample(5.0, int(limit.limit))
    assert limit.limit >= before / 2


def test_app_limited_traffic_does_not_grow_the_limit() -> None:
    clock = Clock()
    limit = Gradient2(initial=20, clock=clock)
    run(limit, clock, 0.020, 10, in_flight=3)
    assert limit.limit == 20


def test_stays_between_its_floor_and_the_ceiling() -> None:
    clock = Clock()
    limit = Gradient2(initial=20, min_limit=4, max_limit=32, clock=clock)
    run(limit, clock, 0.020, 30)
    assert limit.limit == 32
    run(limit, clock, 2.0, 60, per_second=20)
    assert limit.limit == pytest.approx(4, abs=0.5)


def test_the_long_average_comes_back_down_after_a_long_overload() -> None:
    clock = Clock()
    limit = Gradient2(initial=20, clock=clock)
    run(limit, clock, 0.500, 20, per_second=20)
    run(limit, clock, 0.020, 10)
    assert limit.long_rtt < 0.1


async def test_a_full_limit_makes_a_call_wait_briefly_then_refuses_it() -> None:
    gate = ConcurrencyLimiter(Gradient2(initial=2, min_limit=1, max_limit=2), max_wait=0.01)
    await gate.acquire()
    await gate.acquire()
    with pytest.raises(LimitReached):
        await gate.acquire()
    assert gate.in_flight == 2 and gate.waiting == 0


async def test_a_freed_slot_goes_to_the_waiting_call() -> None:
    gate = ConcurrencyLimiter(Gradient2(initial=1, min_limit=1, max_limit=1), max_wait=5.0)
    await gate.acquire()
    waiting = asyncio.ensure_future(gate.acquire())
    while gate.waiting == 0:
        await asyncio.sleep(0)
    gate.release(0.01)
    await waiting
    assert gate.in_flight == 1 and gate.waiting == 0
    gate.release(None)
    assert gate.in_flight == 0


def test_latency_under_the_floor_is_not_a_verifier_slowing_down() -> None:
    # A verifier answering in 1 ms, then the helper's own busy event loop making answers
    # seem to take 120 ms (measured near a full core): not the verifier's doing, the limit
    # keeps growing (past slow start, which would reach the ceiling first).
    clock = Clock()
    limit = Gradient2(initial=20, max_limit=512, slow_start=False, clock=clock)
    run(limit, clock, 0.001, 3)
    before = limit.limit
    run(limit, clock, 0.120, 3)
    assert limit.limit > before


def test_slow_start_does_not_double_while_calls_pile_up_behind_missing_answers() -> None:
    # A verifier that slows tenfold at once: the calls sent since then fill the limit
    # before any of their slow answers comes back, so the window closing on the first
    # slow answer still has a mean latency within tolerance. Doubling there sent twice
    # the calls into the slowed verifier's queue.
    clock = Clock()
    limit = Gradient2(initial=20, max_limit=512, clock=clock)
    run(limit, clock, 0.060, 0.5, in_flight=4)  # 67 calls/s, the limit not in use
    assert limit.slow_start and limit.limit == 20
    for _ in range(4):  # the last fast answers, while the limit fills behind them
        clock.now += 0.015
        limit.sample(0.060, 20)
    clock.now += 0.6
    limit.sample(0.600, 20)  # the first slow answer closes the window: mean 168 ms
    assert limit.limit == 20 and limit.slow_start
    run(limit, clock, 0.600, 2.0)  # the slow answers that follow end slow start
    assert not limit.slow_start and limit.limit < 20


def test_a_watcher_hears_of_each_new_limit() -> None:
    # What shows the limit with several workers (no scrape-time function there).
    clock = Clock()
    limit = Gradient2(initial=20, max_limit=512, clock=clock)
    seen = watch(limit)
    run(limit, clock, 0.020, 3)
    assert seen and seen[-1] == limit.limit > 20
    assert seen == sorted(seen)  # every step up was told


async def test_a_watcher_hears_of_each_change_of_the_waiting_calls() -> None:
    gate = ConcurrencyLimiter(Gradient2(initial=1, min_limit=1, max_limit=1), max_wait=5.0)
    seen: list[int] = []
    gate.on_waiting = lambda: seen.append(gate.waiting)
    await gate.acquire()
    assert seen == []  # a call that finds a slot tells nobody
    handed = asyncio.ensure_future(gate.acquire())
    while gate.waiting == 0:
        await asyncio.sleep(0)
    gate.release(0.01)
    await handed
    gate.max_wait = 0.01
    with pytest.raises(LimitReached):
        await gate.acquire()  # waits, then gives up
    assert seen == [1, 0, 1, 0]
