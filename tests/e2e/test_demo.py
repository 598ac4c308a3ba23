"""The README's first command: the demo routes every kind of call and exits cleanly."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from tests.support.harness import REPO, free_port

pytestmark = pytest.mark.e2e


def test_demo_routes_each_kind_of_call() -> None:
    env = {
        **os.environ,
        "VVP_SIP_PORT": str(free_port()),
        "VVP_HELPER_PORT": str(free_port()),
        "VVP_SIMULATOR_PORT": str(free_port()),
        "VVP_HTTP_PORT": str(free_port()),
    }
    env.pop("VVP_VERIFIER_URL", None)
    done = subprocess.run(
        [sys.executable, str(REPO / "scripts" / "demo.py"), "--once"],
        capture_output=True, text=True, env=env, timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    rows = {line.split()[0]: line for line in done.stdout.splitlines() if line.strip()}
    assert "bundled SIMULATOR" in rows["verifier:"]
    assert "302 Moved Temporarily" in rows["valid"] and "VALID" in rows["valid"]
    assert "brand=Acme Bank" in rows["brand"]
    assert "403 Forbidden" in rows["forged"] and "PASSPORT_SIG_INVALID" in rows["forged"]
    assert "PASSPORT_EXPIRED" in rows["expired"]
    assert "INDETERMINATE" in rows["indeterminate"]
    assert "MISSING" in rows["none"]
