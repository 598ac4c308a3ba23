"""The edge's worst minutes: the verifier failing every way it can, the breaker, load
shedding, a helper killed under load, Kamailio restarted, replays, floods.

Every test counts what sipp saw: each INVITE must get exactly one final answer, and the
answer must be the one the policy (or Kamailio's fallback) gives for that failure.
"""

from __future__ import annotations

import os
import signal
import subprocess
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.edge import TEST_HELPER_ENV, Edge, metric, one_final_each, running_edge
from tests.support.harness import (
    Helper,
    Kamailio,
    Simulator,
    SippRun,
    free_port,
    identity_csv,
    run_sipp,
)
from tests.support.sipp_scenarios import invite_any_final, invite_expecting
from tests.support.waiting import wait_until
from vvp_simulator.passport import mint

pytestmark = pytest.mark.e2e

ORIG = "+441923311001"
DEST = "+441923311006"
FALLBACK = f"<sip:{DEST}@fallback.carrier.example>"
VERIFIED = f"<sip:{DEST}@verified.carrier.example>"


#: Settings that make each verifier failure and the breaker show within a few calls.
FAULT_HELPER_ENV = {
    "VVP_VERIFIER_TIMEOUT": "0.5",
    "VVP_HELPER_DEADLINE": "0.8",
    "VVP_BREAKER_MIN_CALLS": "5",
    "VVP_BREAKER_WINDOW": "10",
    "VVP_BREAKER_RESET": "1.0",
}
FAULT_KAMAILIO_ENV = {"VVP_HELPER_TIMEOUT_MS": "1500", "VVP_FR_TIMEOUT_MS": "3000"}


@pytest.fixture
def edge(tmp_path: Path) -> Iterator[Edge]:
    """A fresh edge per test (tests break and restart its processes)."""
    with running_edge(
        tmp_path, helper_env=FAULT_HELPER_ENV, kamailio_env=FAULT_KAMAILIO_ENV
    ) as started:
        yield started


@pytest.mark.parametrize(
    ("faults", "code"),
    [
        ({"latency_ms": 900}, "EXT_VERIFIER_TIMEOUT"),  # slower than the 0.5 s timeout
        ({"mode": "hang"}, "EXT_VERIFIER_TIMEOUT"),
        ({"mode": "http500"}, "EXT_VERIFIER_HTTP_STATUS"),
        ({"mode": "http502"}, "EXT_VERIFIER_HTTP_STATUS"),
        ({"mode": "http503"}, "EXT_VERIFIER_HTTP_STATUS"),
        ({"mode": "malformed"}, "EXT_VERIFIER_BAD_ANSWER"),
        ({"mode": "wrong_shape"}, "EXT_VERIFIER_BAD_ANSWER"),
        ({"mode": "reset"}, "EXT_VERIFIER_UNREACHABLE"),
    ],
    ids=["slow", "hang", "500", "502", "503", "malformed", "wrong-shape", "reset"],
)
def test_each_verifier_failure_gets_the_error_policy_then_the_breaker(
    edge: Edge, faults: dict[str, object], code: str
) -> None:
    edge.simulator.set_faults(**faults)
    answers = one_final_each(edge.calls(20, rate=20), 20)
    # The first failures are the failure itself; once the breaker opens, the rest are
    # answered at once without asking the verifier. Every answer is the error policy.
    assert set(answers) <= {(302, code), (302, "EXT_VERIFIER_BREAKER_OPEN")}, answers
    assert answers[(302, code)] >= 5
    assert answers[(302, "EXT_VERIFIER_BREAKER_OPEN")] >= 1
    assert metric(f"{edge.helper.url}/metrics", "vvp_helper_verifier_breaker_state") == 1


def test_verifier_refusing_connections_then_coming_back(edge: Edge) -> None:
    edge.simulator.stop()  # refused: nothing listens there any more
    down = one_final_each(edge.calls(15, rate=30), 15)
    assert set(down) <= {(302, "EXT_VERIFIER_UNREACHABLE"), (302, "EXT_VERIFIER_BREAKER_OPEN")}
    assert down[(302, "EXT_VERIFIER_BREAKER_OPEN")] >= 1

    # The verifier comes back on the same port: after the reset time half-open admits a
    # growing share of the calls (tests/e2e/test_verifier_protection.py), until it closes
    # and calls are verified again.
    edge.simulator = Simulator.create(edge.workdir, port=edge.simulator.port)
    for _ in range(30):
        one_final_each(edge.calls(20, rate=40), 20)
        if metric(f"{edge.helper.url}/metrics", "vvp_helper_verifier_breaker_state") == 0:
            break
    back = one_final_each(edge.calls(10, rate=20), 10)
    assert back[(302, None)] == 10, back
    assert metric(f"{edge.helper.url}/metrics", "vvp_helper_verifier_breaker_state") == 0
    assert "verifier circuit breaker half_open -> closed" in edge.helper.output()


def test_breaker_answers_fast_while_open(edge: Edge) -> None:
    edge.simulator.set_faults(mode="hang")
    one_final_each(edge.calls(6, rate=20), 6)  # opens the breaker
    asked = edge.simulator.verify_requests()
    timeouts = edge.metric("vvp_helper_verifier_failures_total", kind="timeout")
    answers = one_final_each(edge.calls(20, rate=200), 20)
    assert answers == Counter({(302, "EXT_VERIFIER_BREAKER_OPEN"): 20})
    # No call waited for the 0.5 s verifier timeout: none was sent to the verifier, and
    # no verifier timeout was counted (how fast the open breaker answers is a figure for
    # tests/load/verifier_saturation.py, not a test).
    assert edge.simulator.verify_requests() == asked
    assert edge.metric("vvp_helper_verifier_failures_total", kind="timeout") == timeouts


def test_slow_verifier_past_the_concurrency_limit_sheds_load(tmp_path: Path) -> None:
    helper_env = {"VVP_VERIFIER_CONCURRENCY": "4", **TEST_HELPER_ENV}
    with running_edge(
        tmp_path, helper_env=helper_env, kamailio_env={}, faults={"latency_ms": 400}
    ) as edge:
        answers = one_final_each(edge.calls(60, rate=100), 60)
        # At most 4 verifications at once: the others are shed at once, never queued.
        assert answers[(302, None)] >= 4
        assert answers[(302, "EXT_VERIFIER_OVERLOADED")] >= 20, answers
        assert set(answers) <= {(302, None), (302, "EXT_VERIFIER_OVERLOADED")}


def test_a_burst_against_a_slow_verifier_gets_fast_answers_past_the_limit(
    tmp_path: Path,
) -> None:
    # 300 calls in half a second against a verifier taking 1.5 s: all 300 are in decision
    # at once, under Kamailio's admission cap (400), so Kamailio sheds none. The helper
    # verifies as many as its adaptive limit allows (it starts at 20 and learns from
    # answers, none of which is back within the burst) and answers the rest at once with
    # the error policy (EXT_VERIFIER_OVERLOADED): a verifier of unknown capacity is not
    # sent a burst it may not drain.
    with running_edge(
        tmp_path, helper_env={}, kamailio_env={}, faults={"latency_ms": 1500}
    ) as edge:
        answers = one_final_each(edge.calls(300, rate=600), 300)
        assert set(answers) <= {(302, None), (302, "EXT_VERIFIER_OVERLOADED")}, answers
        assert answers[(302, None)] >= 20
        assert metric(edge.kamailio.metrics_url, "kamailio_script_vvp_shed") == 0
        assert edge.simulator.verify_requests() == answers[(302, None)]


def test_helper_killed_under_load_second_helper_takes_over(tmp_path: Path) -> None:
    simulator = Simulator.create(tmp_path)
    first = Helper.create(tmp_path, simulator.url)
    second = Helper.create(tmp_path, simulator.url)
    kamailio = Kamailio.create(tmp_path, first.decide_url, VVP_HELPER_URL2=second.decide_url)
    try:
        csv = identity_csv(tmp_path / "ids.csv", ["valid"], 400)
        scenario = invite_any_final(tmp_path / "any.xml", csv=True)
        sipp = subprocess.Popen(
            ["sipp", f"127.0.0.1:{kamailio.port}", "-sf", str(scenario), "-inf", str(csv),
             "-m", "400", "-r", "100", "-i", "127.0.0.1", "-p", str(free_port()),
             "-nostdin", "-trace_msg", "-message_file", str(tmp_path / "kill.msg"),
             "-timeout", "60s", "-timeout_error"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=tmp_path,
        )  # fmt: skip
        # Killed once it is busy deciding, with most of the 400 calls still to come.
        first_decisions = f"{first.url}/metrics"
        wait_until(lambda: metric(first_decisions, "vvp_helper_decisions_total") >= 50, 30)
        assert first.proc is not None
        os.kill(first.proc.pid, signal.SIGKILL)  # no goodbye
        assert sipp.wait(timeout=90) == 0
        from tests.support.harness import _parse_messages

        received, _ = _parse_messages((tmp_path / "kill.msg").read_text(errors="replace"))
        run = SippRun(0, received, [], "", {})
        answers = one_final_each(run, 400)
        # Every call verified by one helper or the other: none fell back, none lost.
        assert answers == Counter({(302, None): 400}), answers
        assert "asking the second helper" in kamailio.output()
        assert metric(f"{second.url}/metrics", "vvp_helper_decisions_total") > 0
        # Taken over by the second helper, not answered by Kamailio's fallback (whose
        # 302 has no X-VVP-Error either).
        assert not any(m.header("X-VVP-Edge-Fallback") for m in run.finals())
    finally:
        for process in (kamailio, second, first, simulator):
            process.stop()


def test_kamailio_restart_keeps_the_helper_serving(edge: Edge) -> None:
    one_final_each(edge.calls(10), 10)
    edge.kamailio.stop()
    edge.kamailio = Kamailio.create(
        edge.workdir, edge.helper.decide_url, port=edge.kamailio.port,
        VVP_HTTP_PORT=str(edge.kamailio.http_port),
    )  # fmt: skip
    answers = one_final_each(edge.calls(10), 10)
    assert answers == Counter({(302, None): 10})


def test_replayed_passport_is_flagged(edge: Edge) -> None:
    minted = mint("valid", ORIG, DEST)
    headers = [f"Identity: {minted.identity_header()}"]
    first = run_sipp(invite_expecting(edge.workdir / "first.xml", 302, headers=headers),
                     edge.kamailio.port, edge.workdir)  # fmt: skip
    assert first.returncode == 0, first.stdout
    assert first.finals()[0].header("Contact") == VERIFIED
    # The same PASSporT on a new call (new Call-ID): a replay.
    again = run_sipp(invite_expecting(edge.workdir / "again.xml", 403, headers=headers),
                     edge.kamailio.port, edge.workdir)  # fmt: skip
    assert again.returncode == 0, again.stdout
    assert again.finals()[0].header("X-VVP-Error") == "EXT_PASSPORT_REPLAY"
    assert edge.simulator.verify_requests() == 1
    assert metric(f"{edge.helper.url}/metrics", "vvp_helper_replays_total") == 1


def test_flooding_source_gets_503_with_retry_after(tmp_path: Path) -> None:
    kamailio = Kamailio.create(tmp_path, "http://127.0.0.1:9/v1/decide", VVP_FLOOD_LIMIT="20")
    try:
        scenario = invite_any_final(tmp_path / "flood.xml")
        run = run_sipp(scenario, kamailio.port, tmp_path, calls=200, rate=400)
        finals = run.finals()
        assert len({m.header("Call-ID") for m in finals}) == 200  # still one answer each
        limited = [m for m in finals if m.code == 503]
        assert len(limited) >= 100
        assert all(m.header("Retry-After") == "5" for m in limited)
    finally:
        kamailio.stop()


def test_calls_past_the_admission_cap_get_an_immediate_503_with_retry_after(
    tmp_path: Path,
) -> None:
    # Every verification takes 0.6 s and Kamailio admits 5 calls into decision at once:
    # of 40 calls sent in 0.4 s, those beyond the 5 are overload, answered at once.
    with running_edge(
        tmp_path,
        helper_env={"VVP_VERIFIER_TIMEOUT": "2.0", "VVP_HELPER_DEADLINE": "2.5"},
        kamailio_env={"VVP_MAX_IN_DECISION": "5", "VVP_SHED_RETRY_AFTER": "3"},
        faults={"latency_ms": 600},
    ) as edge:
        kamailio = edge.kamailio
        run = edge.calls(40, rate=100)
        answers = one_final_each(run, 40)
        assert set(answers) <= {(302, None), (503, None)}, answers
        assert 5 <= answers[(302, None)] <= 10, answers  # admitted and verified
        assert answers[(503, None)] >= 30, answers
        shed = [m for m in run.finals() if m.code == 503]
        assert all(m.header("Retry-After") == "3" for m in shed)
        assert all("Edge Overloaded" in m.first_line for m in shed)
        # Nobody waited in a queue: the shed calls never reached the helper, which
        # decided (and verified) exactly the admitted ones (how soon the shed answer
        # comes is measured by tests/load/ramp.py past the knee, not asserted here).
        assert edge.decisions() == answers[(302, None)]
        assert edge.simulator.verify_requests() == answers[(302, None)]
        # Every admitted call left decision again (no count leaks), so calls are admitted
        # once the overload is over.
        assert kamailio.in_decision() == 0
        later = one_final_each(edge.calls(4, rate=2), 4)
        assert later == Counter({(302, None): 4})
        assert metric(kamailio.metrics_url, "kamailio_script_vvp_shed") == answers[(503, None)]
        shed_replies = metric(
            kamailio.metrics_url, "kamailio_vvp_replies_total", code="503", source="shed"
        )
        assert shed_replies == answers[(503, None)]


def test_admission_count_returns_to_zero_whatever_ends_the_decision(tmp_path: Path) -> None:
    # Calls leave decision by a helper answer, a helper timeout, an unreachable helper
    # (with and without a second helper to try) and a CANCEL: the count must come back to
    # 0 after each, or Kamailio would end up shedding every call.
    dead_url = f"http://127.0.0.1:{free_port()}/v1/decide"
    with running_edge(
        tmp_path,
        helper_env={"VVP_VERIFIER_TIMEOUT": "2.0", "VVP_HELPER_DEADLINE": "2.5"},
        kamailio_env={"VVP_HELPER_URL2": dead_url, "VVP_HELPER_TIMEOUT_MS": "1000",
                      "VVP_FR_TIMEOUT_MS": "3000"},
    ) as edge:  # fmt: skip
        simulator, helper, kamailio = edge.simulator, edge.helper, edge.kamailio
        # Answered, half of them after the dead second helper was tried first.
        assert one_final_each(edge.calls(20, rate=50), 20) == Counter({(302, None): 20})
        assert kamailio.in_decision() == 0
        # The helper late: Kamailio's 1 s wait runs out, the fallback answers.
        simulator.set_faults(mode="hang")
        late = edge.calls(4, rate=20)
        assert all(m.header("X-VVP-Edge-Fallback") for m in late.finals())
        one_final_each(late, 4)
        assert kamailio.in_decision() == 0
        # Neither helper reachable.
        helper.stop()
        down = edge.calls(6, rate=20)
        assert {m.header("X-VVP-Edge-Fallback") for m in down.finals()} == {"helper-unavailable"}
        assert kamailio.in_decision() == 0


def test_helper_requires_the_shared_secret_when_configured(tmp_path: Path) -> None:
    simulator = Simulator.create(tmp_path)
    helper = Helper.create(tmp_path, simulator.url, VVP_HELPER_SECRET="s3cret-value")
    with_secret = Kamailio.create(tmp_path, helper.decide_url, VVP_HELPER_SECRET="s3cret-value")
    without = Kamailio.create(tmp_path, helper.decide_url)
    try:
        headers = [f"Identity: {mint('valid', ORIG, DEST).identity_header()}"]
        ok = run_sipp(invite_expecting(tmp_path / "ok.xml", 302, headers=headers),
                      with_secret.port, tmp_path)  # fmt: skip
        assert ok.returncode == 0 and ok.finals()[0].header("Contact") == VERIFIED
        headers = [f"Identity: {mint('valid', ORIG, DEST).identity_header()}"]
        refused = run_sipp(invite_expecting(tmp_path / "no.xml", 302, headers=headers),
                           without.port, tmp_path)  # fmt: skip
        assert refused.returncode == 0
        assert refused.finals()[0].header("X-VVP-Edge-Fallback") == "helper-error"
        # The secret never reaches a log.
        for process in (helper, with_secret, without):
            assert "s3cret-value" not in process.output()
    finally:
        for process in (with_secret, without, helper, simulator):
            process.stop()
