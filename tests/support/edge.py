"""One edge under test: the verifier simulator, the helper and Kamailio on loopback, each
a real process, started with settings a test chooses and stopped together."""

from __future__ import annotations

import contextlib
import re
import time
import urllib.request
from collections import Counter
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Self

from tests.support.harness import (
    DEFAULT_POLICY,
    Helper,
    Kamailio,
    Simulator,
    SippRun,
    identity_csv,
    run_sipp,
)
from tests.support.sipp_scenarios import invite_any_final, invite_expecting

#: Test-sized timeouts that keep the design's order: verifier 1 s < helper deadline
#: 1.5 s < Kamailio's wait for the helper 2 s < tm's final-response timer 3 s.
TEST_HELPER_ENV: Mapping[str, str] = {"VVP_VERIFIER_TIMEOUT": "1.0", "VVP_HELPER_DEADLINE": "1.5"}
TEST_KAMAILIO_ENV: Mapping[str, str] = {
    "VVP_HELPER_TIMEOUT_MS": "2000",
    "VVP_FR_TIMEOUT_MS": "3000",
}


def metric(url: str, name: str, **labels: str) -> float:
    """Sum of the series ``name`` at a Prometheus endpoint whose labels include
    ``labels`` (Kamailio writes a timestamp after the value: it is not read)."""
    with urllib.request.urlopen(url, timeout=5) as response:
        return metric_in(response.read().decode(), name, **labels)


def metric_in(text: str, name: str, **labels: str) -> float:
    """Sum of the series ``name`` on a /metrics page whose labels include ``labels``."""
    total = 0.0
    for found, value in re.findall(rf"^{name}(?:{{([^}}]*)}})? (\S+)", text, re.M):
        have = dict(re.findall(r'(\w+)="([^"]*)"', found))
        if all(have.get(key) == wanted for key, wanted in labels.items()):
            total += float(value)
    return total


def one_final_each(run: SippRun, calls: int) -> Counter[tuple[int | None, str | None]]:
    """Assert every call got exactly one final answer; count answers by (code, error)."""
    finals = run.finals()
    per_call = Counter(m.header("Call-ID") for m in finals)
    assert len(per_call) == calls, f"{calls - len(per_call)} calls without a final answer"
    assert max(per_call.values()) == 1, "a call got two final answers"
    return Counter((m.code, m.header("X-VVP-Error")) for m in finals)


@dataclass
class Edge:
    workdir: Path
    simulator: Simulator
    helper: Helper
    kamailio: Kamailio
    _scenarios: Iterator[int] = field(default_factory=lambda: iter(range(1, 1 << 30)))

    @classmethod
    def start(
        cls,
        workdir: Path,
        policy: Path = DEFAULT_POLICY,
        *,
        helper_env: Mapping[str, str] = TEST_HELPER_ENV,
        kamailio_env: Mapping[str, str] = TEST_KAMAILIO_ENV,
        faults: Mapping[str, object] | None = None,
    ) -> Self:
        """Start the three processes; ``faults`` are set on the simulator before the
        helper's first call. What is started is stopped again if a later one fails."""
        started: list[Simulator | Helper | Kamailio] = []
        try:
            simulator = Simulator.create(
                workdir, port=None, tls=None, require_client_cert=False, **(faults or {})
            )
            started.append(simulator)
            helper = Helper.create(workdir, simulator.url, policy=policy, port=None, **helper_env)
            started.append(helper)
            kamailio = Kamailio.create(
                workdir, helper.decide_url, port=None, defines=(), **kamailio_env
            )
        except BaseException:
            for process in reversed(started):
                process.stop()
            raise
        return cls(workdir, simulator, helper, kamailio)

    def stop(self) -> None:
        # What the edge holds now: a test may have replaced a process (a restart).
        for process in (self.kamailio, self.helper, self.simulator):
            process.stop()

    def alive(self) -> bool:
        return bool(self.kamailio.alive()) and self.helper.alive() and self.simulator.alive()

    def call(
        self,
        code: int,
        headers: list[str],
        *,
        replace: Mapping[str, str] | None = None,
        **scenario: object,
    ) -> SippRun:
        """One INVITE with ``headers`` expecting ``code`` (sipp_scenarios.invite_expecting
        takes ``scenario``); ``replace`` edits the scenario's text before it is sent."""
        path = self.workdir / f"invite-{next(self._scenarios)}-{code}.xml"
        invite_expecting(path, code, headers=headers, **scenario)  # type: ignore[arg-type]
        if replace:
            text = path.read_text()
            for old, new in replace.items():
                assert old in text, old
                text = text.replace(old, new)
            path.write_text(text)
        return run_sipp(path, self.kamailio.port, self.workdir)

    def calls(
        self,
        count: int,
        rate: float = 50,
        kinds: tuple[str, ...] = ("valid",),
        call_id_prefix: str = "",
    ) -> SippRun:
        """``count`` calls at ``rate``/s, each with a fresh identity of one of ``kinds``;
        asserts sipp itself ran through (answers are the caller's to check)."""
        csv = identity_csv(self.workdir / f"ids-{time.monotonic_ns()}.csv", kinds, count)
        scenario = invite_any_final(self.workdir / "any.xml", csv=True)
        extra = ["-cid_str", f"{call_id_prefix}%u-%p@%s"] if call_id_prefix else []
        run = run_sipp(scenario, self.kamailio.port, self.workdir, calls=count, rate=rate,
                       csv=csv, timeout=60, extra=extra)  # fmt: skip
        assert run.returncode == 0, run.stdout[-3000:]
        return run

    def metric(self, name: str, **labels: str) -> float:
        """A series of the helper's /metrics, summed over the series matching ``labels``."""
        return metric(f"{self.helper.url}/metrics", name, **labels)

    def decisions(self) -> float:
        """Decisions the helper made, whatever their outcome."""
        return self.metric("vvp_helper_decisions_total")


@contextlib.contextmanager
def running_edge(
    workdir: Path,
    policy: Path = DEFAULT_POLICY,
    *,
    helper_env: Mapping[str, str] = TEST_HELPER_ENV,
    kamailio_env: Mapping[str, str] = TEST_KAMAILIO_ENV,
    faults: Mapping[str, object] | None = None,
) -> Iterator[Edge]:
    """Edge.start for a ``with`` block: stopped at its end, whatever happened."""
    edge = Edge.start(
        workdir, policy, helper_env=helper_env, kamailio_env=kamailio_env, faults=faults
    )
    try:
        yield edge
    finally:
        edge.stop()
