"""``vvp-helper serve --workers N``: N processes sharing the helper's port, under a parent
that restarts a worker that dies. Stopped or killed under traffic, no call is lost."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import time
from collections import Counter
from pathlib import Path

import httpx
import pytest
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.parser import text_string_to_metric_families

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


def parent_of_workers(helper: Helper, workers: int) -> int:
    """The started helper's parent PID, once its ``workers`` worker processes run."""
    assert helper.proc is not None
    parent = helper.proc.pid
    wait_until(lambda: len(workers_of(parent)) == workers, timeout=20)
    return parent


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
        parent = parent_of_workers(helper, 2)
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
        parent = parent_of_workers(helper, 3)
        workers = workers_of(parent)
        os.kill(parent, signal.SIGHUP)  # a policy reload, as systemd's ExecReload sends
        wait_until(lambda: helper.output().count("policy reload (sighup)") == 3, 20)
        assert workers_of(parent) == workers  # reloaded in place, not restarted
        helper.proc.send_signal(signal.SIGTERM)
        assert helper.proc.wait(timeout=15) == 0
        assert not any(Path(f"/proc/{pid}").exists() for pid in workers)
        assert "starting another" not in helper.output()


# -- metrics of the whole node ----------------------------------------------------------


def call_body(number: int) -> dict[str, object]:
    """A decision request as kamailio.cfg route[ASK_HELPER] builds it: no Identity, so
    the answer ("missing") needs no verifier and each one is counted at once."""
    return {
        "method": "INVITE",
        "request_uri": f"sip:{DEST}@edge.example",
        "from_uri": "sip:+441923311001@peer.example",
        "to_uri": f"sip:{DEST}@edge.example",
        "call_id": f"workers-{number}@peer",
        "cseq": 1,
        "source_ip": "192.0.2.10",
        "source_port": 5060,
        "transport": "udp",
        "received_at": time.time(),
        "identity": [],
        "p_vvp_identity": [],
        "p_vvp_passport": [],
    }


def decide(helper: Helper, numbers: range) -> None:
    for number in numbers:
        # A new connection per request: the kernel picks the worker per connection.
        answer = httpx.post(helper.decide_url, json=call_body(number), timeout=5)
        assert answer.status_code == 200 and answer.json()["outcome"] == "missing"


def scrape(helper: Helper) -> dict[str, float]:
    """The helper's /metrics, summed by metric name (one new connection: any worker)."""
    text = httpx.get(f"{helper.url}/metrics", timeout=5).text
    totals: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            totals[sample.name] = totals.get(sample.name, 0) + sample.value
    return totals


def metrics_dir(helper: Helper) -> Path:
    """The directory where the parent said its workers keep their metrics."""
    match = re.search(r"their metrics in ([^\"\s]+)", helper.output())
    assert match, helper.output()
    return Path(match.group(1))


def worker_value(directory: Path, kind: str, pid: int, name: str) -> float | None:
    """One worker's own value of ``name``, from its file (prometheus_client's reader)."""
    path = directory / f"{kind}_{pid}.db"
    if not path.exists():
        return None
    families = MultiProcessCollector.merge([str(path)])  # type: ignore[no-untyped-call]
    return sum(s.value for f in families for s in f.samples if s.name == name)


DECISIONS = "vvp_helper_decisions_total"
LIMIT = "vvp_helper_verifier_concurrency_limit"


def test_metrics_count_every_worker_and_a_dead_one_s_counters_stay(tmp_path: Path) -> None:
    simulator = Simulator.create(tmp_path)
    helper = Helper.create(tmp_path, simulator.url, VVP_HELPER_PROCESSES="2")
    with running(simulator, helper):
        parent = parent_of_workers(helper, 2)
        workers = workers_of(parent)
        directory = metrics_dir(helper)

        sent = 60
        decide(helper, range(sent))
        # Both workers answered (each one's own file says how many it decided) ...
        per_worker = {pid: worker_value(directory, "counter", pid, DECISIONS) for pid in workers}
        assert all(per_worker.values()), per_worker
        assert sum(v or 0 for v in per_worker.values()) == sent
        # ... and whichever worker answers the scrape counts them all.
        for _ in range(10):
            page = scrape(helper)
            assert page[DECISIONS] == sent, page[DECISIONS]
            assert page["vvp_helper_requests_in_flight"] == 0

        def limits() -> dict[int, float | None]:
            return {
                pid: worker_value(directory, "gauge_livesum", pid, LIMIT)
                for pid in workers_of(parent)
            }

        # The node's verifier limit is the workers' limits added up.
        assert scrape(helper)[LIMIT] == sum(v or 0 for v in limits().values())

        # A worker dies: what it counted still counts, its gauges do not linger.
        victim = min(workers)
        os.kill(victim, signal.SIGKILL)
        wait_until(
            lambda: len(workers_of(parent)) == 2 and victim not in workers_of(parent), timeout=20
        )
        # The new worker is up.
        wait_until(lambda: all(v is not None for v in limits().values()), timeout=20)
        page = scrape(helper)
        assert page[DECISIONS] == sent
        assert page[LIMIT] == sum(v or 0 for v in limits().values())
        assert not list(directory.glob(f"gauge_live*_{victim}.db"))

        decide(helper, range(sent, sent + 20))
        for _ in range(5):
            assert scrape(helper)[DECISIONS] == sent + 20

        helper.stop()
        assert not directory.exists()  # removed by the parent when it ends
