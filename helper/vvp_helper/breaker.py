"""Protecting calls from a failing or saturated verifier.

A circuit breaker (closed -> open -> half-open, as in Nygard's *Release It!*): after
``failure_threshold`` verifier failures in a row, calls stop waiting for a verifier that
is not answering and get the policy's ``error`` answer at once; after ``reset_timeout``
one probe is let through, and its result closes or reopens the breaker.

Load shedding: past ``max_in_flight`` verifications at once, a call gets the ``error``
answer immediately (EXT_VERIFIER_OVERLOADED) instead of queueing into a timeout, so a
slow verifier cannot make the edge miss every call's time budget.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from enum import IntEnum

from .errors import VerifierBreakerOpen, VerifierError, VerifierOverloaded
from .metrics import Metrics
from .verifier import Verdict, VerifierClient, VerifyRequest

log = logging.getLogger("vvp_helper.breaker")


class State(IntEnum):
    # Values are what the metric shows.
    CLOSED = 0
    OPEN = 1
    HALF_OPEN = 2


class GuardedVerifier:
    """A ``VerifierClient`` behind a circuit breaker and a concurrency limit."""

    def __init__(
        self,
        client: VerifierClient,
        *,
        failure_threshold: int = 5,
        reset_timeout: float = 5.0,
        max_in_flight: int = 256,
        metrics: Metrics | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.client = client
        self.failure_threshold = failure_threshold
        self.reset_timeout = reset_timeout
        self.max_in_flight = max_in_flight
        self.metrics = metrics
        self._clock = clock
        self.state = State.CLOSED
        self._failures = 0
        self._opened_at = 0.0
        self._probing = False
        self.in_flight = 0
        self._show_state()

    async def close(self) -> None:
        await self.client.close()

    async def verify(self, request: VerifyRequest) -> Verdict:
        probe = self._admit()
        self.in_flight += 1
        try:
            verdict = await self.client.verify(request)
        except VerifierError:
            self._failed(probe)
            raise
        finally:
            self.in_flight -= 1
        self._succeeded(probe)
        return verdict

    def _admit(self) -> bool:
        """Raise if the call may not ask the verifier; True if it is the half-open probe."""
        if self.state is State.OPEN:
            if self._clock() - self._opened_at < self.reset_timeout:
                raise VerifierBreakerOpen("verifier failing: circuit breaker open")
            self._move(State.HALF_OPEN)
        if self.state is State.HALF_OPEN:
            if self._probing:
                raise VerifierBreakerOpen("verifier failing: circuit breaker half-open")
            self._probing = True
            return True
        if self.in_flight >= self.max_in_flight:
            raise VerifierOverloaded(f"{self.in_flight} verifications in flight")
        return False

    def _failed(self, probe: bool) -> None:
        if probe:
            self._probing = False
            self._open()
            return
        self._failures += 1
        if self.state is State.CLOSED and self._failures >= self.failure_threshold:
            self._open()

    def _succeeded(self, probe: bool) -> None:
        self._failures = 0
        if probe:
            self._probing = False
            self._move(State.CLOSED)

    def _open(self) -> None:
        self._opened_at = self._clock()
        self._move(State.OPEN)

    def _move(self, state: State) -> None:
        if state is self.state:
            return
        log.warning(
            "verifier circuit breaker %s -> %s",
            self.state.name.lower(),
            state.name.lower(),
            extra={"fields": {"breaker": state.name.lower(), "failures": self._failures}},
        )
        self.state = state
        if state is State.CLOSED:
            self._failures = 0
        self._show_state()

    def _show_state(self) -> None:
        if self.metrics is not None:
            self.metrics.breaker_state.set(int(self.state))
