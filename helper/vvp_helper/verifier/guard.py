"""Protecting calls from a failing or saturated verifier: breaker + adaptive limit.

``GuardedVerifier`` puts two things in front of the ``VerifierClient``:

- An adaptive **concurrency limit** (``limiter.Gradient2``): the verifications in flight
  follow the verifier's latency; a call that finds the limit full waits at most
  ``VVP_VERIFIER_MAX_WAIT`` and then gets ``error`` at once (EXT_VERIFIER_OVERLOADED)
  instead of queueing into the timeout. Saturation is the limiter's job, not the breaker's.
- A **circuit breaker** built as resilience4j's is: a failure *rate* over the last
  ``window`` answers, judged only once ``min_calls`` are in it, counting the causes that
  say the verifier is sick (refused or reset connections, timeouts, 502/503/504 and other
  unusable answers). Open, it answers ``error`` at once (EXT_VERIFIER_BREAKER_OPEN) for
  ``open_seconds``; then half-open it admits a share of calls (10 %) and doubles the share
  every ``ramp_step`` seconds while the probes succeed (10, 20, 40, 80 %, then closed), so
  a recovering verifier gets its load back gradually, not one probe then the full flood.

**HTTP 500 for one request.** The real verifier answers 500 (text/plain, then closes the
connection) for PASSporTs its parser chokes on: a caller can provoke it. Under the edge's
rule - a caller decides what it sends, never which branch of the policy answers it - such
a 500 must not reach the fail-open ``error`` route, and must not open the breaker for
everyone. So a 500 is attributed to *the request* when the verifier is otherwise healthy
(breaker not open and a verdict arrived within ``healthy_seconds``): the call is ``invalid``
(``VerifierRefusedRequest``, code PASSPORT_PARSE_FAILED, the parser failure the verifier
would have reported) and the breaker does not count it. With no recent verdict, the 500
is the verifier's (a verifier answering 500 to everyone): ``error``, counted as a failure.

Why not a library (pybreaker, aiobreaker, purgatory, circuitbreaker): see
docs/adr/0005-verifier-circuit-breaker.md.
"""

from __future__ import annotations

import collections
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from enum import IntEnum
from typing import TYPE_CHECKING

from vvp_helper.errors import (
    VerifierBreakerOpen,
    VerifierError,
    VerifierHTTPError,
    VerifierOverloaded,
    VerifierRefusedRequest,
    VerifierTimeout,
)
from vvp_helper.metrics import Metrics
from vvp_helper.verifier.client import Verdict, VerifierClient, VerifyRequest
from vvp_helper.verifier.limiter import ConcurrencyLimiter, Gradient2, LimitReached

if TYPE_CHECKING:
    from vvp_helper.config import Settings

log = logging.getLogger("vvp_helper.verifier.guard")


class State(IntEnum):
    # Values are what the metric shows.
    CLOSED = 0
    OPEN = 1
    HALF_OPEN = 2


@dataclass(frozen=True, slots=True)
class BreakerSettings:
    #: Answers remembered (count-based sliding window, resilience4j's default kind).
    window: int = 50
    #: Answers needed in the window before its failure rate is judged.
    min_calls: int = 20
    #: Failure share of the window that opens the breaker.
    failure_rate: float = 0.5
    #: Seconds open before half-open admission starts.
    open_seconds: float = 5.0
    #: Share of calls admitted when half-open starts; doubled every ``ramp_step``.
    ramp_start: float = 0.1
    ramp_step: float = 1.0
    #: Probe answers needed in a half-open step before it can be judged early.
    probe_min: int = 3
    #: A 500 counts as the request's fault if a verdict arrived within this many seconds.
    healthy_seconds: float = 2.0


class CircuitBreaker:
    """The state machine; ``allow()`` before a call, ``record()`` after its answer."""

    def __init__(
        self,
        settings: BreakerSettings | None = None,
        *,
        on_change: Callable[[State], None] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.settings = settings or BreakerSettings()
        self._on_change = on_change
        self._clock = clock
        self.state = State.CLOSED
        #: The last ``window`` answers: None for success, else the failure cause.
        self._window: collections.deque[str | None] = collections.deque(maxlen=self.settings.window)
        self._failures = 0  # failures in the window, kept in step with it
        self._opened_at = 0.0
        self._last_verdict = -1e18
        self.admitted = 1.0  # share of calls admitted (1 when closed)
        self._credit = 0.0
        self._step_started = 0.0
        self._step_calls = self._step_failures = 0

    # -- what the guard asks

    def allow(self) -> bool:
        """May this call ask the verifier? (Half-open: a share of calls may.)"""
        if self.state is State.CLOSED:
            return True
        now = self._clock()
        if self.state is State.OPEN:
            if now - self._opened_at < self.settings.open_seconds:
                return False
            self._half_open(now)
        self._credit += self.admitted
        if self._credit >= 1.0 - 1e-9:  # shares such as 0.1 do not add up exactly
            self._credit -= 1.0
            return True
        return False

    def healthy(self) -> bool:
        """Does the verifier look healthy apart from this request? (See the module doc.)"""
        recent = self._clock() - self._last_verdict <= self.settings.healthy_seconds
        # Half-open counts too when probes are getting verdicts: otherwise crafted 500s
        # among the probes could keep the breaker from closing, for everyone.
        return self.state is not State.OPEN and recent

    def record(self, cause: str | None) -> None:
        """An answer: ``None`` a verdict, else the failure cause (a bounded label)."""
        now = self._clock()
        if cause is None:
            self._last_verdict = now
        if self.state is State.HALF_OPEN:
            self._probe_result(cause, now)
            return
        if self.state is State.OPEN:
            return  # an answer to a call admitted before it opened
        window = self._window
        if len(window) == window.maxlen and window[0] is not None:
            self._failures -= 1
        window.append(cause)
        if cause is not None:
            self._failures += 1
            s = self.settings
            if len(window) >= s.min_calls and self._failures >= s.failure_rate * len(window):
                self._open(now, f"{self._failures} of the last {len(window)} answers failed")

    def causes(self) -> dict[str, int]:
        """Failures in the window by cause (for the log line when it opens)."""
        return dict(collections.Counter(c for c in self._window if c is not None))

    # -- transitions

    def _probe_result(self, cause: str | None, now: float) -> None:
        self._step_calls += 1
        if cause is not None:
            self._step_failures += 1
        s = self.settings
        rate = self._step_failures / self._step_calls
        if rate >= s.failure_rate and (
            self._step_calls >= s.probe_min or now - self._step_started >= s.ramp_step
        ):
            self._open(now, f"{self._step_failures} of {self._step_calls} half-open probes failed")
            return
        if now - self._step_started < s.ramp_step or self._step_calls == self._step_failures:
            return
        if self.admitted * 2 >= 1.0:
            self._move(State.CLOSED, "the verifier answered every half-open step")
            self._window.clear()
            self._failures = 0
            self.admitted = 1.0
            return
        self.admitted *= 2
        self._step_started, self._step_calls, self._step_failures = now, 0, 0
        log.info("verifier circuit breaker half-open: admitting %d%% of calls", self.admitted * 100)

    def _half_open(self, now: float) -> None:
        self.admitted = self.settings.ramp_start
        self._credit = 1.0 - self.admitted  # the first call after the pause is a probe
        self._step_started, self._step_calls, self._step_failures = now, 0, 0
        self._move(State.HALF_OPEN, f"admitting {self.admitted * 100:g}% of calls")

    def _open(self, now: float, why: str) -> None:
        self._opened_at = now
        causes = self.causes()
        self._window.clear()
        self._failures = 0
        self._move(State.OPEN, why, causes)

    def _move(self, state: State, why: str, causes: dict[str, int] | None = None) -> None:
        if state is self.state:
            return
        log.warning(
            "verifier circuit breaker %s -> %s: %s",
            self.state.name.lower(),
            state.name.lower(),
            why,
            extra={"fields": {"breaker": state.name.lower(), "causes": causes or {}}},
        )
        self.state = state
        if self._on_change is not None:
            self._on_change(state)


def failure_cause(exc: VerifierError) -> str:
    """The bounded label of a failure: its kind, or ``http_<status>`` for HTTP answers."""
    if isinstance(exc, VerifierHTTPError):
        return f"http_{exc.status}" if 100 <= exc.status <= 599 else "http_other"
    return exc.kind


class GuardedVerifier:
    """A ``VerifierClient`` behind the adaptive limit and the circuit breaker."""

    def __init__(
        self,
        client: VerifierClient,
        *,
        breaker: BreakerSettings | None = None,
        limiter: ConcurrencyLimiter | None = None,
        metrics: Metrics | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.client = client
        self.metrics = metrics
        self._clock = clock
        self.breaker = CircuitBreaker(breaker, on_change=self._show_state, clock=clock)
        self.limiter = limiter or ConcurrencyLimiter(Gradient2(clock=clock))
        self._show_state(State.CLOSED)
        if metrics is not None:
            if metrics.multiprocess:
                self._show_limiter(metrics)
            else:
                # Read when scraped: nothing to update on every call.
                limiter = self.limiter
                metrics.verifier_limit.set_function(lambda: limiter.limit)
                metrics.verifier_limit_waiting.set_function(lambda: limiter.waiting)

    @classmethod
    def from_settings(
        cls, client: VerifierClient, settings: Settings, metrics: Metrics | None = None
    ) -> GuardedVerifier:
        limit = Gradient2(
            initial=min(20, settings.verifier_concurrency),
            min_limit=min(4, settings.verifier_concurrency),
            max_limit=settings.verifier_concurrency,
        )
        return cls(
            client,
            breaker=BreakerSettings(
                window=settings.breaker_window,
                min_calls=settings.breaker_min_calls,
                failure_rate=settings.breaker_failure_rate,
                open_seconds=settings.breaker_reset,
            ),
            limiter=ConcurrencyLimiter(limit, max_wait=settings.verifier_max_wait),
            metrics=metrics,
        )

    @property
    def state(self) -> State:
        return self.breaker.state

    async def close(self) -> None:
        await self.client.close()

    async def verify(self, request: VerifyRequest) -> Verdict:
        breaker, limiter = self.breaker, self.limiter
        if breaker.state is not State.CLOSED and not breaker.allow():
            what = "open" if breaker.state is State.OPEN else "half-open, call not admitted"
            raise VerifierBreakerOpen(f"verifier failing: circuit breaker {what}")
        try:
            await limiter.acquire()
        except LimitReached as exc:
            if self.metrics is not None:
                self.metrics.verifier_limit_rejections.inc()
            raise VerifierOverloaded(str(exc)) from None
        started = self._clock()
        try:
            verdict = await self.client.verify(request)
        except VerifierTimeout:
            limiter.release(self._clock() - started, dropped=True)
            breaker.record("timeout")
            raise
        except VerifierHTTPError as exc:
            if exc.status == 500:
                # Says nothing about load: not a latency sample.
                limiter.release(None)
                if breaker.healthy():
                    raise VerifierRefusedRequest(
                        "verifier answered HTTP 500 to this request while answering others"
                    ) from exc
            else:
                limiter.release(self._clock() - started)
            breaker.record(failure_cause(exc))
            raise
        except VerifierError as exc:
            limiter.release(None)
            if type(exc) is VerifierError:
                # Raised before sending: the request itself cannot be sent (its content).
                raise VerifierRefusedRequest(str(exc)) from exc
            breaker.record(failure_cause(exc))
            raise
        except BaseException:  # cancelled (the helper's deadline): give the slot back
            limiter.release(None)
            raise
        limiter.release(self._clock() - started)
        breaker.record(None)
        return verdict

    # -- metrics

    def _show_limiter(self, metrics: Metrics) -> None:
        """The limit gauges of a worker of several: the scrape reads the workers' files,
        where no function can be called (prometheus_client's multiprocess mode has no
        ``set_function``), so each value is written when it changes. The limit changes
        at most once per window of answers and the waiting count only while the limit
        is full: a call that finds a free slot writes nothing."""
        limiter = self.limiter
        metrics.verifier_limit.set(limiter.limit)
        metrics.verifier_limit_waiting.set(limiter.waiting)
        limiter.algorithm.on_update = lambda: metrics.verifier_limit.set(limiter.limit)
        limiter.on_waiting = lambda: metrics.verifier_limit_waiting.set(limiter.waiting)

    def _show_state(self, state: State) -> None:
        if self.metrics is not None:
            self.metrics.breaker_state.set(int(state))
