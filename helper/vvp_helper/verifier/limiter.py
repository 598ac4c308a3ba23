"""Adaptive concurrency limit on the verifier link: Netflix concurrency-limits' Gradient2.

A fixed number of verifications in flight is wrong both ways: too high, and a saturated
verifier gets a queue it cannot drain (answers come later and later until every call waits
the full timeout); too low, and a healthy verifier is left idle. The limit here follows
the verifier's measured latency, as Netflix's ``Gradient2Limit`` does:

    gradient  = clamp(tolerance * max(long_rtt, latency_floor) / short_rtt, 0.5, 1.0)
    new_limit = limit * gradient + queue_size
    limit     = limit * (1 - smoothing) + new_limit * smoothing      (within min..max)
    queue_size = sqrt(limit)

(One change from Netflix's defaults: a falling limit is smoothed by ``smoothing_down``,
0.5, instead of 0.2, so that it follows a verifier that slowed down within a few seconds
rather than tens of them: cut fast, grow slowly, as TCP does.)

(A second change: latencies under ``latency_floor``, 200 ms, are never taken for a
verifier slowing down. The latency is measured in the helper, from sending the request to
the answer being processed, so it includes the helper's own event loop: against a verifier
answering in a fraction of a millisecond, a helper at 80-90% of a core makes its own
lateness look like a verifier a hundred times slower (answers at 76-116 ms median at
1,500-1,650 calls/s), and the limit answered EXT_VERIFIER_OVERLOADED for calls the
verifier could have taken: 1,407 of 90,000 at 1,500 calls/s with a 50 ms floor. A
saturated verifier's latency climbs far past the floor: the real one goes from 10-100 ms
to seconds, the simulator with a capacity to over a second.)

(A third change, TCP's slow start: from its first guess the limit doubles after every
window in which it was in use, latency stayed within tolerance and nothing timed out,
until the first window that is not so, or the ceiling; from then on it moves as
Gradient2 says. Gradient2 alone grows by about ``0.2 * sqrt(limit)`` a window, 20 to
100 in some 6 s: traffic arriving at an idle edge found 20 slots and got
EXT_VERIFIER_OVERLOADED - under the default policy an unverified call - for the calls
past them (725 of the first 17,250 calls of a jump from idle to 1,725 calls/s). A
verifier that cannot take the doubled load answers later within a window or two; its
latency past the tolerance ends the doubling and cuts the limit as before. A window
whose calls pile up faster than its answers account for does not double it: a verifier
that has just slowed down fills the limit before any slow answer comes back, and
doubling then sent twice the calls into its queue.)

``short_rtt`` is the average latency of the last window of samples, ``long_rtt`` a slow
exponential average of those windows (the verifier's "unloaded" latency): while latency
stays near it (within ``tolerance``) the limit grows by ``queue_size`` per window; when
latency climbs the limit shrinks, at most by half per window. As in Gradient2, the limit
does not grow while less than half of it is used (nothing to learn), and the long average
is pulled down quickly when latency falls back to well under it (recovery after a long
overload). Samples are grouped in windows (Netflix's ``WindowedLimit``: at least
``window_samples`` answers and ``window_min`` seconds, at most ``window_max``) so that one
slow answer does not move the limit and the long average spans minutes, not a second.

``Gradient2`` is the arithmetic only (a clock is passed in: unit-tested with a fake one);
``ConcurrencyLimiter`` is the asyncio gate built on it: a call that finds the limit full
waits at most ``max_wait`` seconds for a slot, then is refused at once.

Why not a library: see docs/adr/0006-adaptive-verifier-concurrency.md.
"""

from __future__ import annotations

import asyncio
import collections
import math
import time
from collections.abc import Callable
from dataclasses import dataclass

#: Windows averaged plainly before the long RTT becomes an exponential average.
LONG_WARMUP = 10

#: During slow start, a window whose peak of calls in flight is more than this many times
#: what its answers account for (Little's law: answers a second times their latency) is
#: not doubled on: calls are piling up behind answers that have not come back, so the
#: verifier is slowing down where no latency shows it yet. Poisson traffic peaks at about
#: twice its mean; a verifier slowing tenfold gave 10-20 times.
STALL_RATIO = 4.0


@dataclass(slots=True)
class _Window:
    started: float
    samples: int = 0
    rtt_sum: float = 0.0
    min_rtt: float = math.inf
    max_in_flight: int = 0
    dropped: bool = False


class Gradient2:
    """The limit arithmetic; ``sample()`` after every verifier answer."""

    def __init__(
        self,
        *,
        initial: float = 20,
        min_limit: float = 4,
        max_limit: float = 512,
        smoothing: float = 0.2,
        smoothing_down: float = 0.5,
        tolerance: float = 1.5,
        latency_floor: float = 0.2,
        long_windows: int = 600,
        queue_size: Callable[[float], float] = math.sqrt,
        window_samples: int = 5,
        window_min: float = 0.1,
        window_max: float = 0.5,
        slow_start: bool = True,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if not 1 <= min_limit <= max_limit:
            raise ValueError("need 1 <= min_limit <= max_limit")
        self.limit = float(min(max(initial, min_limit), max_limit))
        self.min_limit = float(min_limit)
        self.max_limit = float(max_limit)
        self.smoothing = smoothing
        self.smoothing_down = smoothing_down
        self.tolerance = tolerance
        self.latency_floor = latency_floor  # seconds
        self.long_windows = long_windows
        self.queue_size = queue_size
        self.window_samples = window_samples
        self.window_min = window_min
        self.window_max = window_max
        #: Doubling per window until the first window with latency past tolerance, a
        #: timeout, or the ceiling (see the module docstring).
        self.slow_start = slow_start and self.limit < self.max_limit
        self._clock = clock
        self.long_rtt = 0.0  # seconds; 0 until the first window
        self._long_count = 0
        self.last_rtt = 0.0
        self._window = _Window(started=clock())
        self._window_length = window_min
        #: Called after the limit was recomputed (once per window at most), for what
        #: shows it; None: nobody watches.
        self.on_update: Callable[[], None] | None = None

    def sample(self, rtt: float, in_flight: int, *, dropped: bool = False) -> None:
        """One verifier answer that took ``rtt`` seconds while ``in_flight`` calls (this
        one included) were outstanding; ``dropped`` for a timeout."""
        window = self._window
        window.samples += 1
        window.rtt_sum += rtt
        window.min_rtt = min(window.min_rtt, rtt)
        window.max_in_flight = max(window.max_in_flight, in_flight)
        window.dropped = window.dropped or dropped
        now = self._clock()
        if now - window.started < self._window_length:
            return
        self._window = _Window(started=now)
        # Netflix: the next window lasts twice the fastest answer seen, within bounds.
        self._window_length = min(max(2 * window.min_rtt, self.window_min), self.window_max)
        if window.samples >= self.window_samples or window.dropped:
            short_rtt = window.rtt_sum / window.samples
            answered = window.samples / max(now - window.started, 1e-6) * short_rtt
            self._update(short_rtt, window.max_in_flight, window.dropped, answered)

    def _update(self, short_rtt: float, in_flight: int, dropped: bool, answered: float) -> None:
        """One window's verdict: its mean latency, its peak of calls in flight, whether a
        call timed out, and the calls in flight its answers account for."""
        self.last_rtt = short_rtt
        short_rtt = max(short_rtt, 1e-6)
        if self.slow_start:
            # The verifier's unloaded latency is the fastest window so far, not a mean of
            # windows whose latency the doubling itself may have raised (a mean learnt
            # a saturated verifier's queueing as normal: limit 148-211 and p99 1.1 s at
            # 400/s against a capacity of 200/s). After slow start the long average
            # moves from it slowly, skipping the plain-mean warm-up.
            first = self._long_count == 0
            self.long_rtt = short_rtt if first else min(self.long_rtt, short_rtt)
            self._long_count = LONG_WARMUP
        else:
            # The long average: a plain mean over the first windows (Netflix's warm-up
            # of 10), then exponential over ``long_windows`` windows.
            self._long_count += 1
            if self._long_count <= LONG_WARMUP:
                weight = 1.0 / self._long_count
            else:
                weight = 2.0 / (self.long_windows + 1)
            self.long_rtt += (short_rtt - self.long_rtt) * weight
        if self.long_rtt / short_rtt > 2:
            # Latency is back well under its long average (after a long overload, or a
            # slow first answer): bring the average down now rather than over minutes.
            self.long_rtt *= 0.95
        if not dropped and in_flight < self.limit / 2:
            return  # app-limited: the limit is not what holds the calls back
        expected = max(self.long_rtt, self.latency_floor)
        gradient = max(0.5, min(1.0, self.tolerance * expected / short_rtt))
        if self.slow_start:
            if gradient < 1.0 or dropped:
                self.slow_start = False  # the verifier's load shows: Gradient2 from here
            elif in_flight > STALL_RATIO * answered:
                return  # latency climbing unseen (see STALL_RATIO): the next window shows
            else:
                self._set_limit(self.limit * 2)
                self.slow_start = self.limit < self.max_limit
                return
        new_limit = self.limit * gradient + self.queue_size(self.limit)
        smoothing = self.smoothing if new_limit >= self.limit else self.smoothing_down
        self._set_limit(self.limit * (1 - smoothing) + new_limit * smoothing)

    def _set_limit(self, limit: float) -> None:
        self.limit = max(self.min_limit, min(self.max_limit, limit))
        if self.on_update is not None:
            self.on_update()


class LimitReached(Exception):
    """No slot became free within ``max_wait``: answer the call without the verifier."""


class ConcurrencyLimiter:
    """At most ``int(algorithm.limit)`` calls at once; others wait up to ``max_wait`` s."""

    def __init__(self, algorithm: Gradient2, *, max_wait: float = 0.05) -> None:
        self.algorithm = algorithm
        self.max_wait = max_wait
        self.in_flight = 0
        self._waiters: collections.deque[asyncio.Future[None]] = collections.deque()
        #: Called after the number of waiting calls changed (only when the limit is
        #: full: never on the way of a call that finds a slot); None: nobody watches.
        self.on_waiting: Callable[[], None] | None = None

    @property
    def limit(self) -> int:
        return max(1, int(self.algorithm.limit))

    @property
    def waiting(self) -> int:
        return len(self._waiters)

    async def acquire(self) -> None:
        """Take a slot; LimitReached if none is free within ``max_wait``."""
        if self.in_flight < self.limit and not self._waiters:
            self.in_flight += 1
            return
        if self.max_wait <= 0:
            raise LimitReached(f"{self.in_flight} verifications in flight (limit {self.limit})")
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        if self.on_waiting is not None:
            self.on_waiting()
        try:
            async with asyncio.timeout(self.max_wait):
                await waiter  # release() counted us in before waking us
        except TimeoutError:
            if waiter.done() and not waiter.cancelled():
                return  # handed a slot just as the wait ran out: it is ours
            raise LimitReached(
                f"no verification slot within {self.max_wait * 1000:g} ms "
                f"({self.in_flight} in flight, limit {self.limit})"
            ) from None
        except asyncio.CancelledError:
            if waiter.done() and not waiter.cancelled():
                self._release_slot()  # handed a slot just as we were cancelled
            raise
        finally:
            if waiter in self._waiters:
                self._waiters.remove(waiter)
                if self.on_waiting is not None:
                    self.on_waiting()

    def release(self, rtt: float | None, *, dropped: bool = False) -> None:
        """Give the slot back. ``rtt``: the verifier's latency to learn from, or None for
        an answer that says nothing about its load (refused connection, crash answer)."""
        if rtt is not None:
            self.algorithm.sample(rtt, self.in_flight, dropped=dropped)
        self._release_slot()

    def _release_slot(self) -> None:
        self.in_flight -= 1
        # Hand freed slots to waiters in arrival order while the (new) limit allows.
        while self._waiters and self.in_flight < self.limit:
            waiter = self._waiters.popleft()
            if self.on_waiting is not None:
                self.on_waiting()
            if not waiter.done():
                self.in_flight += 1
                waiter.set_result(None)
