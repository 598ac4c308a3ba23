"""``vvp-helper serve --workers N``: N processes sharing the helper's port, under a parent
that restarts a worker that dies. Stopped or killed under traffic, no call is lost."""

from __future__ import annotations

import os
import signal
import subprocess
from collections import Counter
from pathlib import Path

import pytest

from tests.support.harness import (
    Helper,
    Kamailio,
    Simulator,
    SippRun,
    _parse_messages,
    free_port,
    identity_csv,
    running,
)
from tests.support.sipp_scenarios import invite_any_final
from tests.support.waiting import wait_until

pytestmark = pytest.mark.e2e

DEST = "+441923311006"
VERIFIED = f"<sip:{DEST}@verified.carrier.example>"


def workers_of(parent: int) -> set[int]:
    children = Path(f"/proc/{parent}/task/{parent}/children").read_text().split()
    return {int(pid) for pid in children}


@pytest.mark.parametrize(
    ("sig", "ended"),
    [(signal.SIGTERM, "exit 0"), (signal.SIGKILL, "signal 9")],
    ids=["stopped", "killed"],
)
def test_a_worker_ended_under_traffic_loses_no_call_and_is_replaced(
    tmp_path: Path, sig: signal.Signals, ended: str
) -> None:
    # 30 ms per verification: at 100 calls/s each worker has a call or so in flight
    # when it is killed.
    simulator = Simulator.create(tmp_path, latency_ms=30)
    helper = Helper.create(tmp_path, simulator.url, VVP_HELPER_PROCESSES="2")
    # The helper's URL twice: a query whose worker died unanswered is asked again on a
    # new connection, which the kernel gives to a live worker (as the README says).
    kamailio = Kamailio.create(tmp_path, helper.decide_url, VVP_HELPER_URL2=helper.decide_url)
    with running(simulator, helper, kamailio):
        assert helper.proc is not None
        parent = helper.proc.pid
        wait_until(lambda: len(workers_of(parent)) == 2, 20)
        before = workers_of(parent)

        calls = 600
        csv = identity_csv(tmp_path / "ids.csv", ["valid"], calls)
        scenario = invite_any_final(tmp_path / "any.xml", csv=True)
        messages = tmp_path / "workers.msg"
        sipp = subprocess.Popen(
            ["sipp", f"127.0.0.1:{kamailio.port}", "-sf", str(scenario), "-inf", str(csv),
             "-m", str(calls), "-r", "100", "-i", "127.0.0.1", "-p", str(free_port()),
             "-nostdin", "-trace_msg", "-message_file", str(messages),
             "-timeout", "60s", "-timeout_error"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=tmp_path,
        )  # fmt: skip
        # Under traffic (after ~200 calls), one worker dies without a goodbye.
        wait_until(lambda: messages.exists() and messages.stat().st_size > 200 * 1500, 20)
        victim = min(before)
        os.kill(victim, sig)
        assert sipp.wait(timeout=90) == 0

        received, _ = _parse_messages(messages.read_text(errors="replace"))
        finals = SippRun(0, received, [], "", {}).finals()
        per_call = Counter(m.header("Call-ID") for m in finals)
        assert len(per_call) == calls, f"{calls - len(per_call)} calls without a final answer"
        assert max(per_call.values()) == 1, "a call got two final answers"
        answers = Counter((m.code, m.header("Contact")) for m in finals)
        if sig == signal.SIGTERM:
            # A worker told to stop finishes what it has in hand: every call verified.
            assert answers == Counter({(302, VERIFIED): calls}), answers
        else:
            # A worker killed takes the queries it had in hand with it: those calls (at
            # most the ones in flight on it) get Kamailio's fallback, the rest are
            # verified by the other worker; every call gets its answer.
            fallbacks = [m for m in finals if m.header("Contact") != VERIFIED]
            assert all(m.header("X-VVP-Edge-Fallback") for m in fallbacks), fallbacks[:1]
            assert answers[(302, VERIFIED)] + len(fallbacks) == calls

        # The parent started another worker in the dead one's place.
        wait_until(lambda: len(workers_of(parent)) == 2 and victim not in workers_of(parent), 20)
        assert f"ended ({ended}); starting another" in helper.output()


def test_the_parent_passes_sighup_and_sigterm_to_every_worker(tmp_path: Path) -> None:
    simulator = Simulator.create(tmp_path)
    helper = Helper.create(tmp_path, simulator.url, VVP_HELPER_PROCESSES="3")
    with running(simulator, helper):
        assert helper.proc is not None
        parent = helper.proc.pid
        wait_until(lambda: len(workers_of(parent)) == 3, 20)
        workers = workers_of(parent)
        os.kill(parent, signal.SIGHUP)  # a policy reload, as systemd's ExecReload sends
        wait_until(lambda: helper.output().count("policy reload (sighup)") == 3, 20)
        assert workers_of(parent) == workers  # reloaded in place, not restarted
        helper.proc.send_signal(signal.SIGTERM)
        assert helper.proc.wait(timeout=15) == 0
        assert not any(Path(f"/proc/{pid}").exists() for pid in workers)
        assert "starting another" not in helper.output()
