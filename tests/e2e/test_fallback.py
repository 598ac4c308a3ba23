"""Kamailio's fallback and the helper's `error` policy when something behind the edge
fails: every INVITE still gets exactly one final answer, and the answer says why."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from tests.support.harness import Helper, Kamailio, Simulator, free_port, run_sipp
from tests.support.sipp_scenarios import invite_expecting
from vvp_simulator.passport import mint

pytestmark = pytest.mark.e2e

ORIG = "+441923311001"
DEST = "+441923311006"
FALLBACK_CONTACT = f"<sip:{DEST}@fallback.carrier.example>"


def identity() -> list[str]:
    return [f"Identity: {mint('valid', ORIG, DEST).identity_header()}"]


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    return tmp_path


@pytest.fixture
def broken_helper() -> Iterator[dict[str, object]]:
    """A real HTTP server posing as the helper; the test sets what it answers."""
    answer: dict[str, object] = {"status": 200, "body": b"{}"}

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            self.rfile.read(int(self.headers.get("Content-Length", "0")))
            body = answer["body"]
            assert isinstance(body, bytes)
            self.send_response(int(str(answer["status"])))
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    answer["url"] = f"http://127.0.0.1:{server.server_address[1]}/v1/decide"
    try:
        yield answer
    finally:
        server.shutdown()
        server.server_close()


def call_expecting_fallback(workdir: Path, kamailio: Kamailio, cause: str) -> None:
    scenario = invite_expecting(workdir / f"fallback-{cause}.xml", 302, headers=identity())
    run = run_sipp(scenario, kamailio.port, workdir)
    assert run.returncode == 0, run.stdout
    finals = run.finals()
    assert len(finals) == 1
    assert finals[0].header("Contact") == FALLBACK_CONTACT
    assert finals[0].header("X-VVP-Status") == "ERROR"
    assert finals[0].header("X-VVP-Edge-Fallback") == cause


@pytest.mark.parametrize(
    ("status", "body", "cause"),
    [
        (500, b'{"error": "boom"}', "helper-error"),
        (200, b"this is not json", "helper-garbage"),
        (200, b'{"code": 200, "reason": "OK"}', "helper-garbage"),
        (200, b'{"code": 302}', "helper-garbage"),
    ],
    ids=["http-500", "not-json", "not-a-final-code", "no-reason"],
)
def test_helper_misbehaving_gives_the_fallback(
    workdir: Path, broken_helper: dict[str, object], status: int, body: bytes, cause: str
) -> None:
    broken_helper.update(status=status, body=body)
    kamailio = Kamailio.create(workdir, str(broken_helper["url"]))
    try:
        call_expecting_fallback(workdir, kamailio, cause)
    finally:
        kamailio.stop()


def test_helper_too_late_gives_the_fallback(workdir: Path) -> None:
    # The helper waits up to 1 s for a verifier that takes 0.9 s, but Kamailio gives the
    # helper only 0.4 s: Kamailio's fallback answers, once.
    simulator = Simulator.create(workdir, latency_ms=900)
    helper = Helper.create(workdir, simulator.url, VVP_VERIFIER_TIMEOUT="1.0")
    kamailio = Kamailio.create(workdir, helper.decide_url, VVP_HELPER_TIMEOUT_MS="400")
    try:
        call_expecting_fallback(workdir, kamailio, "helper-unavailable")
    finally:
        for process in (kamailio, helper, simulator):
            process.stop()


def test_fallback_answer_is_configurable(workdir: Path) -> None:
    dead_helper = f"http://127.0.0.1:{free_port()}/v1/decide"
    kamailio = Kamailio.create(
        workdir,
        dead_helper,
        VVP_FALLBACK_CODE="503",
        VVP_FALLBACK_REASON="Verification Unavailable",
    )
    try:
        scenario = invite_expecting(workdir / "fallback-503.xml", 503, headers=identity())
        run = run_sipp(scenario, kamailio.port, workdir)
        assert run.returncode == 0, run.stdout
        final = run.finals()[0]
        assert final.first_line == "SIP/2.0 503 Verification Unavailable"
        assert final.header("Contact") is None
    finally:
        kamailio.stop()


def test_verifier_down_gives_the_error_policy_not_the_fallback(workdir: Path) -> None:
    helper = Helper.create(workdir, f"http://127.0.0.1:{free_port()}")
    kamailio = Kamailio.create(workdir, helper.decide_url)
    try:
        scenario = invite_expecting(workdir / "verifier-down.xml", 302, headers=identity())
        run = run_sipp(scenario, kamailio.port, workdir)
        assert run.returncode == 0, run.stdout
        final = run.finals()[0]
        assert final.header("X-VVP-Error") == "EXT_VERIFIER_UNREACHABLE"
        assert final.header("X-VVP-Edge-Fallback") is None
        assert final.header("Contact") == FALLBACK_CONTACT
    finally:
        kamailio.stop()
        helper.stop()
