"""End to end: sipp -> real Kamailio (kamailio/kamailio.cfg) -> helper -> simulator.

Each test sends real SIP and asserts what a peer would see: the final code, the Contact,
the headers, and that every INVITE got exactly one final answer.
"""

from __future__ import annotations

import json
import socket
import threading
import time
from pathlib import Path

import pytest

from tests.support.edge import Edge
from tests.support.harness import Kamailio, Simulator, SippRun, free_port, run_sipp
from tests.support.sipp_scenarios import (
    invite_expecting,
    invite_then_cancel,
    literal_invite,
    request_expecting,
)
from tests.support.waiting import wait_until
from vvp_simulator.passport import MintedIdentity, mint

pytestmark = pytest.mark.e2e

ORIG = "+441923311001"
DEST = "+441923311006"


def identity_headers(minted: MintedIdentity, style: str = "identity") -> list[str]:
    if style == "identity":
        return [f"Identity: {minted.identity_header()}"]
    return [f"P-VVP-Identity: {minted.vvp_identity}", f"P-VVP-Passport: {minted.passport_jwt}"]


def only_final(run: SippRun) -> object:
    finals = run.finals()
    assert len(finals) == 1, f"expected exactly one final answer, got {finals}\n{run.stdout}"
    return finals[0]


def test_valid_identity_is_redirected_to_verified_route(edge: Edge, sim: Simulator) -> None:
    run = edge.call(302, identity_headers(mint("brand", ORIG, DEST)))
    assert run.returncode == 0, run.stdout
    final = only_final(run)
    assert final.header("Contact") == f"<sip:{DEST}@verified.carrier.example>"
    assert final.header("X-VVP-Status") == "VALID"
    assert final.header("X-VVP-Brand-Name") == "Acme Bank"
    assert final.header("P-Asserted-Identity") == f"<sip:{ORIG}@verified.carrier.example>"
    assert sim.verify_requests() == 1


def test_p_vvp_headers_are_verified_like_identity(edge: Edge, sim: Simulator) -> None:
    run = edge.call(302, identity_headers(mint("valid", ORIG, DEST), style="p-vvp"))
    assert run.returncode == 0, run.stdout
    assert only_final(run).header("X-VVP-Status") == "VALID"


def test_forged_signature_is_rejected_with_the_verifier_error(edge: Edge, sim: Simulator) -> None:
    run = edge.call(403, identity_headers(mint("forged", ORIG, DEST)))
    assert run.returncode == 0, run.stdout
    final = only_final(run)
    assert final.first_line == "SIP/2.0 403 Forbidden - VVP Verification Failed"
    assert final.header("X-VVP-Status") == "INVALID"
    assert final.header("X-VVP-Error") == "PASSPORT_SIG_INVALID"
    assert final.header("Contact") is None


def test_expired_identity_is_rejected_without_asking_the_verifier(
    edge: Edge, sim: Simulator
) -> None:
    run = edge.call(403, identity_headers(mint("expired", ORIG, DEST)))
    assert run.returncode == 0, run.stdout
    assert only_final(run).header("X-VVP-Error") == "PASSPORT_EXPIRED"
    assert sim.verify_requests() == 0


def test_verifier_indeterminate_follows_the_indeterminate_policy(
    edge: Edge, sim: Simulator
) -> None:
    run = edge.call(302, identity_headers(mint("indeterminate", ORIG, DEST)))
    assert run.returncode == 0, run.stdout
    final = only_final(run)
    assert final.header("Contact") == f"<sip:{DEST}@unverified.carrier.example>"
    assert final.header("X-VVP-Status") == "INDETERMINATE"
    assert final.header("X-VVP-Error") == "DOSSIER_FETCH_FAILED"


@pytest.mark.parametrize(
    ("faults", "code"),
    [
        ({"mode": "http503"}, "EXT_VERIFIER_HTTP_STATUS"),
        ({"mode": "malformed"}, "EXT_VERIFIER_BAD_ANSWER"),
        ({"mode": "hang"}, "EXT_VERIFIER_TIMEOUT"),
    ],
)
def test_verifier_failure_follows_the_error_policy(
    edge: Edge, sim: Simulator, faults: dict[str, object], code: str
) -> None:
    sim.set_faults(**faults)
    run = edge.call(302, identity_headers(mint("valid", ORIG, DEST)))
    assert run.returncode == 0, run.stdout
    final = only_final(run)
    assert final.header("Contact") == f"<sip:{DEST}@fallback.carrier.example>"
    assert final.header("X-VVP-Status") == "ERROR"
    assert final.header("X-VVP-Error") == code
    # The helper decided (not Kamailio's fallback).
    assert final.header("X-VVP-Edge-Fallback") is None


def test_no_identity_follows_the_missing_policy(edge: Edge, sim: Simulator) -> None:
    run = edge.call(302, [])
    assert run.returncode == 0, run.stdout
    final = only_final(run)
    assert final.header("X-VVP-Status") == "MISSING"
    assert final.header("Contact") == f"<sip:{DEST}@unverified.carrier.example>"
    assert sim.verify_requests() == 0


def test_shaken_identity_is_not_sent_to_the_vvp_verifier(edge: Edge, sim: Simulator) -> None:
    shaken = (
        "Identity: eyJhbGciOiJFUzI1NiIsInBwdCI6InNoYWtlbiIsInR5cCI6InBhc3Nwb3J0In0"
        ".eyJpYXQiOjF9.c2ln;info=<https://cert.example/x.pem>;alg=ES256;ppt=shaken"
    )
    run = edge.call(302, [shaken])
    assert run.returncode == 0, run.stdout
    assert only_final(run).header("X-VVP-Status") == "MISSING"
    assert sim.verify_requests() == 0


def test_cancel_during_slow_verification_gives_487(edge: Edge, sim: Simulator) -> None:
    sim.set_faults(latency_ms=800)
    scenario = invite_then_cancel(
        edge.workdir / "cancel.xml",
        cancel_after_ms=200,
        headers=identity_headers(mint("valid", ORIG, DEST)),
    )
    run = run_sipp(scenario, edge.kamailio.port, edge.workdir)
    assert run.returncode == 0, run.stdout
    finals = run.finals("INVITE")
    assert [m.code for m in finals] == [487]
    assert [m.code for m in run.finals("CANCEL")] == [200]
    # The late instruction is dropped: nothing else arrives for this INVITE.
    assert sim.verify_requests() == 1
    # ... and the call left Kamailio's admission count when the helper's answer came.
    wait_until(lambda: edge.kamailio.in_decision() == 0, 5, "cancelled call still in decision")


def test_retransmitted_cancel_counts_the_call_out_of_decision_once(
    edge: Edge, sim: Simulator
) -> None:
    # Two calls wait 1.5 s for the verifier; one is cancelled and its CANCEL arrives
    # twice (a UDP retransmission). The other must still be counted in decision.
    sim.set_faults(latency_ms=1500)
    other = threading.Thread(
        target=edge.call, args=(302, identity_headers(mint("valid", ORIG, DEST)))
    )
    other.start()
    wait_until(lambda: edge.kamailio.in_decision() == 1, 5, "first call not in decision")
    scenario = invite_then_cancel(
        edge.workdir / "cancel-twice.xml",
        cancel_after_ms=100,
        headers=identity_headers(mint("valid", ORIG, DEST)),
        cancel_copies=2,
    )
    run = run_sipp(scenario, edge.kamailio.port, edge.workdir)
    assert run.returncode == 0, run.stdout
    assert [m.code for m in run.finals("CANCEL")] == [200, 200]
    assert edge.kamailio.in_decision() == 1  # the other call, still waiting
    other.join()
    assert edge.kamailio.in_decision() == 0


def test_retransmitted_invite_is_verified_once(edge: Edge, sim: Simulator) -> None:
    # sipp places the call; once it is in decision, while the verifier is still busy
    # (500 ms), a copy of its INVITE (same Via branch and sent-by) arrives from another
    # socket, as a UDP retransmission would. The transaction absorbs it: one
    # verification, one answer.
    sim.set_faults(latency_ms=500)
    headers = identity_headers(mint("valid", ORIG, DEST))
    sipp_port, branch, call_id = free_port(), f"z9hG4bK-retrans-{time.time_ns()}", "retrans-1"
    scenario = invite_expecting(edge.workdir / "retrans.xml", 302, headers=headers, branch=branch)
    copy = literal_invite(sipp_port=sipp_port, edge_port=edge.kamailio.port, branch=branch,
                          call_id=call_id, headers=headers)  # fmt: skip

    in_decision_after_copy: list[int] = []

    def retransmit() -> None:
        wait_until(lambda: edge.kamailio.in_decision() == 1, 5, "the INVITE never arrived")
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
            udp.sendto(copy, ("127.0.0.1", edge.kamailio.port))
        in_decision_after_copy.append(edge.kamailio.in_decision())

    sender = threading.Thread(target=retransmit)
    sender.start()
    # -nr: sipp must not answer the second 100 by resending (its retransmission logic).
    run = run_sipp(scenario, edge.kamailio.port, edge.workdir, local_port=sipp_port,
                   extra=["-nr", "-cid_str", "retrans-%u"])  # fmt: skip
    sender.join()
    assert in_decision_after_copy == [1], "the copy did not arrive during the verification"
    assert run.returncode == 0, run.stdout
    assert [m.code for m in run.finals()] == [302]
    assert sim.verify_requests() == 1


def test_from_display_name_with_quotes_and_backslashes_reaches_policy_intact(
    edge: Edge, sim: Simulator
) -> None:
    # The test policy echoes the display name in X-VVP-Caller: Kamailio's jansson-built
    # JSON must carry the escaped quote and backslash through unchanged.
    run = edge.call(302, [], from_display='"Evil \\" \\\\ Co" ')
    assert run.returncode == 0, run.stdout
    final = only_final(run)
    assert final.header("X-VVP-Caller") == 'Evil " \\ Co'
    assert final.header("X-VVP-Status") == "MISSING"


def test_crlf_in_from_display_name_cannot_add_a_header(edge: Edge, sim: Simulator) -> None:
    # A folded line (CRLF + space) inside the quoted display name. Kamailio refuses the
    # From outright; either way no "X-Injected" header may reach the caller.
    run = edge.call(400, [], from_display='"Evil\r\n X-Injected: yes" ')
    assert run.returncode == 0, run.stdout
    final = only_final(run)
    assert final.header("X-Injected") is None
    assert sim.verify_requests() == 0


def test_tcp_invite_is_decided_too(edge: Edge, sim: Simulator) -> None:
    scenario = invite_expecting(
        edge.workdir / "tcp.xml", 302, headers=identity_headers(mint("valid", ORIG, DEST))
    )
    run = run_sipp(scenario, edge.kamailio.port, edge.workdir, transport="t1")
    assert run.returncode == 0, run.stdout
    assert only_final(run).header("X-VVP-Status") == "VALID"


def test_options_keepalive_gets_200(edge: Edge) -> None:
    run = run_sipp(request_expecting(edge.workdir / "opt.xml", "OPTIONS", 200),
                   edge.kamailio.port, edge.workdir)  # fmt: skip
    assert run.returncode == 0, run.stdout


def test_other_methods_get_405_with_allow(edge: Edge) -> None:
    run = run_sipp(request_expecting(edge.workdir / "msg.xml", "MESSAGE", 405),
                   edge.kamailio.port, edge.workdir)  # fmt: skip
    assert run.returncode == 0, run.stdout
    assert run.received[-1].header("Allow") == "INVITE, ACK, CANCEL, OPTIONS"


def test_max_forwards_zero_gets_483(edge: Edge, sim: Simulator) -> None:
    scenario = invite_expecting(edge.workdir / "mf.xml", 483, max_forwards=0)
    run = run_sipp(scenario, edge.kamailio.port, edge.workdir)
    assert run.returncode == 0, run.stdout
    assert sim.verify_requests() == 0


def test_helper_down_gives_kamailio_fallback(tmp_path: Path) -> None:
    workdir = tmp_path
    dead_helper = f"http://127.0.0.1:{free_port()}/v1/decide"
    kamailio = Kamailio.create(workdir, dead_helper)
    try:
        scenario = invite_expecting(workdir / "down.xml", 302)
        run = run_sipp(scenario, kamailio.port, workdir)
        assert run.returncode == 0, run.stdout
        final = only_final(run)
        assert final.header("Contact") == f"<sip:{DEST}@fallback.carrier.example>"
        assert final.header("X-VVP-Status") == "ERROR"
        assert final.header("X-VVP-Edge-Fallback") == "helper-unavailable"
    finally:
        kamailio.stop()


def test_logs_are_json_lines_joined_by_call_id_without_the_jwt(edge: Edge, sim: Simulator) -> None:
    # Kamailio's own line per helper decision is at debug level (the helper's summary
    # line is the per-call log); an operator raises the level at runtime to see it.
    edge.kamailio.rpc("corex.debug", 3)
    minted = mint("valid", ORIG, DEST)
    run = edge.call(302, identity_headers(minted))
    assert run.returncode == 0, run.stdout
    call_id = run.sent[0].header("Call-ID")
    assert call_id
    records = [json.loads(line) for line in edge.helper.output().splitlines() if line.strip()]
    decision = [r for r in records if r["msg"] == "decision" and r.get("call_id") == call_id]
    assert len(decision) == 1
    assert decision[0]["outcome"] == "valid" and decision[0]["code"] == 302
    assert decision[0]["request_id"]  # the verifier's id, to find its side of the story
    # The signature part of the JWT, or the JWT itself, never reaches a log.
    signature = minted.passport_jwt.rsplit(".", 1)[1]
    assert signature not in edge.helper.output()
    assert signature not in edge.kamailio.output()
    # Kamailio's lines about the call carry the same Call-ID in their prefix.
    assert any(call_id in line and "helper instruction" in line
               for line in edge.kamailio.output().splitlines())  # fmt: skip
