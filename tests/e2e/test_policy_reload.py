"""Operators edit the policy on a live edge: the next call follows the edit, a broken file
changes nothing, no call fails or is routed by a half-loaded policy, and Kamailio's own
fallback follows the policy's on_error."""

from __future__ import annotations

import os
import re
import signal
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.edge import Edge
from tests.support.harness import (
    DEFAULT_POLICY,
    Helper,
    free_port,
    http_json,
    identity_csv,
    run_sipp,
)
from tests.support.sipp_scenarios import invite_any_final, invite_expecting
from tests.support.waiting import wait_until
from vvp_simulator.passport import mint

pytestmark = pytest.mark.e2e

ORIG = "+441923311001"
DEST = "+441923311006"


def versioned_policy(version: str, *, on_error: str | None = None) -> str:
    """The default policy with its valid route and a header naming the version."""
    text = DEFAULT_POLICY.read_text()
    text = text.replace("verified.carrier.example", f"verified-{version}.carrier.example")
    text = text.replace(
        '      X-VVP-Status: "VALID"\n',
        f'      X-VVP-Status: "VALID"\n      X-Policy-Version: "{version}"\n',
    )
    if on_error is not None:
        start = text.index("  on_error:")
        end = text.index("  on_missing:")
        text = text[:start] + on_error + "\n" + text[end:]
    return text


def replace_file(path: Path, text: str) -> None:
    # As editors and config management do: write aside, then rename over.
    tmp = path.with_suffix(".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def policy_sha(helper: Helper) -> str:
    ready = http_json(f"{helper.url}/readyz")
    assert isinstance(ready, dict)
    return str(ready["policy_sha256"])


def metric(helper: Helper, name: str) -> float:
    text = urllib.request.urlopen(f"{helper.url}/metrics", timeout=5).read().decode()
    match = re.search(rf"^{name} (\S+)$", text, re.M)
    assert match, f"{name} not in /metrics"
    return float(match.group(1))


class LiveEdge(Edge):
    """An edge whose helper watches ``policy`` and pushes its fallback to Kamailio."""

    @property
    def policy(self) -> Path:
        return self.workdir / "policy.yaml"

    def valid_call(self) -> dict[str, str | None]:
        headers = [f"Identity: {mint('valid', ORIG, DEST).identity_header()}"]
        scenario = invite_any_final(self.workdir / "valid.xml", headers=headers)
        run = run_sipp(scenario, self.kamailio.port, self.workdir)
        assert run.returncode == 0, run.stdout
        (final,) = run.finals()
        return {
            "code": str(final.code),
            "contact": final.header("Contact"),
            "version": final.header("X-Policy-Version"),
        }


@pytest.fixture
def edge(tmp_path: Path) -> Iterator[LiveEdge]:
    policy = tmp_path / "policy.yaml"
    policy.write_text(versioned_policy("v1"))
    http_port = free_port()
    # The helper pushes its on_error fallback to Kamailio's JSON-RPC port; it retries
    # every 0.5 s, so it does not matter that Kamailio starts after it.
    helper_env = {
        "VVP_POLICY_WATCH_INTERVAL": "0.2",
        "VVP_KAMAILIO_RPC": f"http://127.0.0.1:{http_port}/RPC",
        "VVP_FALLBACK_PUSH_INTERVAL": "0.5",
    }
    started = LiveEdge.start(
        tmp_path, policy, helper_env=helper_env, kamailio_env={"VVP_HTTP_PORT": str(http_port)}
    )
    try:
        yield started
    finally:
        started.stop()


def test_policy_edit_changes_the_next_call_without_restart(edge: LiveEdge) -> None:
    assert edge.valid_call()["version"] == "v1"
    before = policy_sha(edge.helper)
    replace_file(edge.policy, versioned_policy("v2"))
    wait_until(lambda: policy_sha(edge.helper) != before)
    answer = edge.valid_call()
    assert answer["version"] == "v2"
    assert answer["contact"] == f"<sip:{DEST}@verified-v2.carrier.example>"


def test_broken_policy_keeps_the_last_good_one_and_says_so(edge: LiveEdge) -> None:
    good = policy_sha(edge.helper)
    replace_file(edge.policy, "policies:\n  on_valid:\n    action: teleport\n")
    wait_until(lambda: metric(edge.helper, "vvp_helper_policy_last_reload_successful") == 0)
    assert policy_sha(edge.helper) == good
    assert edge.valid_call()["version"] == "v1"
    assert "policy.yaml:3:13: bad-action" in edge.helper.output()
    # The HTTP reload endpoint reports the problems, with their position.
    request = urllib.request.Request(f"{edge.helper.url}/-/reload", method="POST", data=b"")
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(request, timeout=5)
    assert refused.value.code == 422
    problems = refused.value.read().decode()
    assert "policy.yaml:3:13: bad-action" in problems
    assert "missing-section" in problems
    replace_file(edge.policy, versioned_policy("v3"))
    wait_until(lambda: metric(edge.helper, "vvp_helper_policy_last_reload_successful") == 1)
    assert edge.valid_call()["version"] == "v3"


def test_sighup_reloads(edge: LiveEdge) -> None:
    before = policy_sha(edge.helper)
    edge.policy.write_text(versioned_policy("v4"))
    assert edge.helper.proc is not None
    os.kill(edge.helper.proc.pid, signal.SIGHUP)
    wait_until(lambda: policy_sha(edge.helper) != before)
    assert edge.valid_call()["version"] == "v4"


def test_reload_under_traffic_loses_no_call_and_mixes_no_policy(edge: LiveEdge) -> None:
    csv = identity_csv(edge.workdir / "traffic.csv", ["valid"], 300)
    scenario = invite_any_final(edge.workdir / "traffic.xml", csv=True)
    stop = threading.Event()

    def edit_policies() -> None:
        versions = ["v2", "garbage", "v3", "garbage", "v4"]
        while not stop.is_set():
            for version in versions:
                text = (
                    "policies: {on_valid: " if version == "garbage" else versioned_policy(version)
                )
                replace_file(edge.policy, text)
                if stop.wait(0.4):
                    return

    editor = threading.Thread(target=edit_policies)
    editor.start()
    try:
        run = run_sipp(scenario, edge.kamailio.port, edge.workdir, calls=300, rate=60, csv=csv)
    finally:
        stop.set()
        editor.join()
    assert run.returncode == 0, run.stdout
    finals = run.finals()
    assert len(finals) == 300
    versions = set()
    for final in finals:
        assert final.code == 302
        version = final.header("X-Policy-Version")
        # Contact and header always from the same policy version: no half-loaded policy.
        assert final.header("Contact") == f"<sip:{DEST}@verified-{version}.carrier.example>"
        versions.add(version)
    assert len(versions) >= 2, f"traffic saw only {versions}: the edits did not land"


def test_kamailio_fallback_follows_the_policy_on_error(edge: LiveEdge) -> None:
    fail_closed = (
        "  on_error:\n"
        "    action: reject\n"
        "    reason_code: 503\n"
        '    reason_phrase: "Verification Unavailable"\n'
        "    headers:\n"
        '      X-VVP-Status: "ERROR"\n'
        '      X-VVP-Error: "{errors[0].code}"\n'
        '      X-Called: "{dest}"\n'
    )
    replace_file(edge.policy, versioned_policy("v5", on_error=fail_closed))

    def kamailio_has_it() -> bool:
        try:
            item = edge.kamailio.rpc("htable.get", "vvp", "fb_code")
        except urllib.error.HTTPError as exc:  # not pushed yet: the key does not exist
            exc.close()
            return False
        return isinstance(item, dict) and item.get("item", {}).get("value") == "503"

    wait_until(kamailio_has_it)
    edge.helper.stop()  # the helper dies; Kamailio must answer from what it was given

    scenario = invite_expecting(
        edge.workdir / "helper-dead.xml",
        503,
        headers=[f"Identity: {mint('valid', ORIG, DEST).identity_header()}"],
    )
    run = run_sipp(scenario, edge.kamailio.port, edge.workdir)
    assert run.returncode == 0, run.stdout
    (final,) = run.finals()
    assert final.first_line == "SIP/2.0 503 Verification Unavailable"
    assert final.header("X-VVP-Edge-Fallback") == "helper-unavailable"
    assert final.header("X-VVP-Error") == "EXT_HELPER_UNAVAILABLE"
    assert final.header("X-Called") == DEST  # {dest} expanded by Kamailio per call
