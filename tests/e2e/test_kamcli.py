"""The kamcli commands the README gives operators work against the shipped settings."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from tests.support.harness import REPO, Kamailio

pytestmark = pytest.mark.e2e


def kamcli(ini: Path, *args: str) -> str:
    done = subprocess.run(
        ["kamcli", "--no-default-configs", "-c", str(ini), *args],
        capture_output=True, text=True, timeout=30,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_operator_can_inspect_the_pushed_fallback_and_transactions(tmp_path: Path) -> None:
    kamailio = Kamailio.create(tmp_path, "http://127.0.0.1:9/v1/decide")
    try:
        # What the helper pushes when a policy loads (see vvp_helper/policy/kamailio_push.py).
        kamailio.rpc("htable.sets", "vvp", "fb_code", "503")
        kamailio.rpc("htable.sets", "vvp", "fb_reason", "Verification Unavailable")
        # The shipped kamcli.ini, pointed at this test's socket instead of /run/kamailio.
        ini = tmp_path / "kamcli.ini"
        ini.write_text(
            (REPO / "kamailio" / "kamcli.ini")
            .read_text()
            .replace("/run/kamailio/kamailio_rpc.sock", kamailio.env["VVP_RPC_SOCKET"])
            .replace("/run/kamailio/kamailio_rpc_reply.sock", str(tmp_path / "reply.sock"))
        )
        dump = kamcli(ini, "rpc", "htable.dump", "vvp")
        assert "fb_code" in dump and "'503'" in dump
        assert "Verification Unavailable" in dump
        assert "tmx:inuse_transactions = 0" in kamcli(ini, "stats", "tmx")
    finally:
        kamailio.stop()
