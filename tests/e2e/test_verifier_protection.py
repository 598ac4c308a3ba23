"""The verifier's protection end to end (real Kamailio, helper, sipp, simulator): the
overload answer, the adaptive limit following latency, the breaker's gradual
re-admission, and crafted requests that make the verifier fail getting 403, not the
fail-open route. No timing assertions: each test polls for the state it expects."""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.edge import Edge, one_final_each
from tests.support.harness import SippRun
from tests.support.waiting import wait_until

pytestmark = pytest.mark.e2e

CRASH = "crash-"


def start(workdir: Path, sim: dict[str, object] | None = None, **helper_env: str) -> Edge:
    """An edge on the helper's and Kamailio's own defaults but for ``helper_env``, the
    simulator with the faults ``sim``."""
    return Edge.start(workdir, helper_env=helper_env, kamailio_env={}, faults=sim)


@pytest.fixture
def edges(tmp_path: Path) -> Iterator[list[Edge]]:
    made: list[Edge] = []
    try:
        yield made
    finally:
        for edge in made:
            edge.stop()


def test_a_full_limit_answers_overloaded_at_once(tmp_path: Path, edges: list[Edge]) -> None:
    # A verifier doing 20 verifications/s against a burst: the calls past the limit get
    # the error policy at once with EXT_VERIFIER_OVERLOADED, never a timeout.
    edge = start(tmp_path, {"capacity": 20}, VVP_VERIFIER_CONCURRENCY="8")
    edges.append(edge)
    answers = one_final_each(edge.calls(120, rate=200), 120)
    assert set(answers) <= {(302, None), (302, "EXT_VERIFIER_OVERLOADED")}, answers
    assert answers[(302, "EXT_VERIFIER_OVERLOADED")] >= 20, answers
    assert answers[(302, None)] >= 8
    assert (
        edge.metric("vvp_helper_verifier_overloaded_total")
        == answers[(302, "EXT_VERIFIER_OVERLOADED")]
    )
    assert edge.metric("vvp_helper_verifier_failures_total", kind="timeout") == 0


def test_the_limit_falls_when_the_verifier_slows_down(tmp_path: Path, edges: list[Edge]) -> None:
    edge = start(tmp_path, {"capacity": 100})
    edges.append(edge)
    stop = threading.Event()

    def load() -> None:
        while not stop.is_set():
            edge.calls(100, rate=80)

    sender = threading.Thread(target=load, daemon=True)
    sender.start()
    try:
        # While the verifier keeps up, the limit has no reason to move from its start.
        # Enough answers first for the limiter's long-run latency to be learnt (its first
        # 10 windows are a plain mean: a slowdown inside them would be learnt as normal).
        wait_until(lambda: edge.metric("vvp_helper_decisions_total", outcome="valid") > 400, 30)
        before = edge.metric("vvp_helper_verifier_concurrency_limit")
        assert before >= 16
        edge.simulator.set_faults(latency_factor=10)  # now 10 verifications/s, 200 ms each
        wait_until(lambda: edge.metric("vvp_helper_verifier_concurrency_limit") < before / 2, 60)
        assert edge.metric("vvp_helper_verifier_breaker_state") == 0  # the limiter's job
    finally:
        stop.set()
        sender.join()


def test_the_breaker_re_admits_gradually(tmp_path: Path, edges: list[Edge]) -> None:
    edge = start(tmp_path, VVP_BREAKER_RESET="1", VVP_BREAKER_MIN_CALLS="5",
                 VVP_BREAKER_WINDOW="10")  # fmt: skip
    edges.append(edge)
    edge.simulator.set_faults(mode="http503")
    sick = one_final_each(edge.calls(20, rate=40), 20)
    assert sick[(302, "EXT_VERIFIER_BREAKER_OPEN")] >= 1, sick
    assert edge.metric("vvp_helper_verifier_http_errors_total", status="503") >= 5
    edge.simulator.set_faults(mode="normal")

    # Half-open: a share of the calls is verified, the rest still get the breaker's
    # answer; the share grows until it closes.
    seen: Counter[tuple[int | None, str | None]] = Counter()
    states = set()
    for _ in range(40):
        seen += one_final_each(edge.calls(40, rate=40), 40)
        states.add(edge.metric("vvp_helper_verifier_breaker_state"))
        if 0 in states:
            break
    assert 2 in states and 0 in states, states
    assert seen[(302, None)] >= 1 and seen[(302, "EXT_VERIFIER_BREAKER_OPEN")] >= 1, seen
    assert "admitting 20% of calls" in edge.helper.output()
    assert "admitting 40% of calls" in edge.helper.output()
    after = one_final_each(edge.calls(20, rate=40), 20)
    assert after == Counter({(302, None): 20})


def test_crafted_verifier_500s_get_403_and_genuine_calls_keep_valid(
    tmp_path: Path, edges: list[Edge]
) -> None:
    edge = start(tmp_path, {"crash_call_id_prefix": CRASH})
    edges.append(edge)
    edge.calls(5, rate=20)  # the verifier has answered: it is known healthy
    results: dict[str, SippRun] = {}

    def send(name: str, kind: str, prefix: str) -> None:
        results[name] = edge.calls(100, rate=50, kinds=(kind,), call_id_prefix=prefix)

    threads = [
        threading.Thread(target=send, args=("genuine", "valid", "")),
        threading.Thread(target=send, args=("crafted", "valid", CRASH)),
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    genuine = one_final_each(results["genuine"], 100)
    crafted = one_final_each(results["crafted"], 100)
    assert genuine == Counter({(302, None): 100}), genuine
    assert crafted == Counter({(403, "PASSPORT_PARSE_FAILED"): 100}), crafted
    for message in results["crafted"].finals():
        assert message.header("X-VVP-Edge-Fallback") is None
    assert edge.metric("vvp_helper_verifier_breaker_state") == 0
    assert edge.metric("vvp_helper_verifier_http_errors_total", status="500",
                       outcome="invalid") == 100  # fmt: skip
