"""tests/load/ramp.py, the capacity benchmark, runs end to end on a small load: Kamailio
alone and the full path, each step after its warm-up, with every call accounted for."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.e2e

RAMP = Path(__file__).resolve().parents[1] / "load" / "ramp.py"


def test_ramp_reports_each_step_and_the_ratio(tmp_path: Path) -> None:
    out = tmp_path / "ramp"
    argv = [
        sys.executable, str(RAMP), "--baseline", "--baseline-rates", "300",
        "--rates", "100,150", "--duration", "4", "--warmup", "2",
        "--mix", "valid=3,forged=1,none=1", "--helpers", "1", "--out", str(out),
    ]  # fmt: skip
    done = subprocess.run(argv, capture_output=True, text=True, timeout=180)
    assert done.returncode == 0, done.stdout + done.stderr

    summary = json.loads((out / "results.json").read_text())
    (baseline,) = summary["results"]["kamailio-only"]
    assert baseline["failed"] == 0 and baseline["answered"] == 300 * 4
    steps = summary["results"]["full-path"]
    assert [s["offered"] for s in steps] == [100, 150]
    for step in steps:
        calls = int(step["offered"] * 4)
        assert step["calls"] == calls
        assert (step["answered"], step["failed"], step["unexpected"], step["shed"]) == (
            calls, 0, 0, 0,
        )  # fmt: skip
        # Each kind got its own outcome, as many times as it was sent (3:1:1).
        outcomes = {k: v for k, v in step["outcomes"].items() if v}
        assert outcomes == {"valid": calls * 3 // 5, "invalid": calls // 5, "missing": calls // 5}
        # The warm-up ran at the step's rate (its 2 s of calls, each answered) and is not
        # counted in the step.
        warmup = step["warmup"]
        assert warmup["duration"] == 2 and warmup["failed"] == 0
        assert warmup["calls"] == warmup["answered"] == int(step["offered"] * 2)
        # Response times are the benchmark's figures to report, not this test's to bound.
        assert 0 <= step["p50_ms"] <= step["p99_ms"]
        assert step["cpu_percent"]["helper1"] > 0 and step["pss_mb"]["kamailio"] > 0
    full = max(s["achieved"] for s in steps)
    assert summary["ratio"] == pytest.approx(full / baseline["achieved"], abs=0.001)
    assert "ratio" in done.stdout and (out / "ramp.png").stat().st_size > 0


def test_ramp_with_helper_workers_accounts_for_every_call(tmp_path: Path) -> None:
    # Two workers share the calls; the outcome check reads one /metrics for both.
    out = tmp_path / "ramp"
    argv = [
        sys.executable, str(RAMP), "--rates", "100", "--duration", "4", "--warmup", "2",
        "--mix", "valid=3,forged=1,none=1", "--helper-workers", "2", "--out", str(out),
    ]  # fmt: skip
    done = subprocess.run(argv, capture_output=True, text=True, timeout=180)
    assert done.returncode == 0, done.stdout + done.stderr

    summary = json.loads((out / "results.json").read_text())
    assert summary["helper_workers"] == 2
    (step,) = summary["results"]["full-path"]
    assert (step["answered"], step["failed"], step["unexpected"]) == (400, 0, 0)
    outcomes = {k: v for k, v in step["outcomes"].items() if v}
    assert outcomes == {"valid": 240, "invalid": 80, "missing": 80}
    assert "cpu% helper1" in done.stdout
