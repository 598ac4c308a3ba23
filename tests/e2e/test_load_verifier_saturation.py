"""tests/load/verifier_saturation.py runs end to end on a small load: the crafted-500
flood, whose figures (not timings) must hold on any machine."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.e2e

TOOL = Path(__file__).resolve().parents[1] / "load" / "verifier_saturation.py"


def test_crafted_flood_reports_no_lost_verdict_and_no_routed_forgery(tmp_path: Path) -> None:
    argv = [sys.executable, str(TOOL), "crafted", "--duration", "3", "--out", str(tmp_path)]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "genuine: 150 sent, 150 answered 302, 0 failed" in done.stdout, done.stdout
    assert "genuine calls that lost their verdict = 0 (target 0): met" in done.stdout
    assert "forged calls routed = 0 (target 0): met" in done.stdout
    assert "simulator answered HTTP 500 and closed the connection 150 times" in done.stdout
    assert "breaker opened" in done.stdout  # the refusing verifier does open it
