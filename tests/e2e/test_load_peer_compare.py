"""tests/load/peer_compare.py runs end to end on a small load: the edge and the VVP
project's sip-verify (the peer) each answer every call 302 VALID, as sipp and the shared
simulator both count. The peer is not part of this project: the test runs only when its
sources are given (VVP_PEER_SRC, and VVP_PEER_PYTHON unless <root>/venv/bin/python has
aiohttp and httpx; see the tool's docstring for how to get them)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(
        not os.environ.get("VVP_PEER_SRC"),
        reason="no peer checkout: set VVP_PEER_SRC to sip-verify's folder (services/sip-verify "
        "of github.com/Rich-Connexions-Ltd/VVP) and VVP_PEER_PYTHON to a python with aiohttp "
        "and httpx",
    ),
]

TOOL = Path(__file__).resolve().parents[1] / "load" / "peer_compare.py"
RATE, SECONDS = 40, 3


def test_edge_and_peer_answer_every_call_valid(tmp_path: Path) -> None:
    argv = [
        sys.executable, str(TOOL), "--rates", str(RATE), "--duration", str(SECONDS),
        "--warmup", "1", "--pairs", "1", "--out", str(tmp_path),
    ]  # fmt: skip
    done = subprocess.run(argv, capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stdout + done.stderr

    summary = json.loads((tmp_path / "results.json").read_text())
    results = {r["target"]: r for r in summary["results"]}
    assert set(results) == {"edge", "peer"}
    calls = RATE * SECONDS
    for target, result in results.items():
        counts = (result["calls"], result["valid"], result["simulator_valid"])
        assert counts == (calls, calls, calls), (target, counts, done.stdout)
        assert (result["failed"], result["unexpected"], result["shed"]) == (0, 0, 0), target
        assert 0 <= result["p50_ms"] <= result["p99_ms"]
    # Each target's own processes were measured, and only those.
    assert set(results["edge"]["cpu_percent"]) >= {"kamailio", "helper", "simulator"}
    assert "peer" in results["peer"]["cpu_percent"]
    assert "kamailio" not in results["peer"]["cpu_percent"]
    assert "edge/peer" in done.stdout
