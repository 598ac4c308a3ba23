"""Decisions against the verifier simulator running as a real HTTP server on loopback:
verdicts, verifier failures, the helper's own deadline and queue limits."""

from __future__ import annotations

import time

import pytest

from tests.support.decisions import DEFAULT_POLICY, DEST, ORIG, call, decider
from tests.support.simulator_api import set_faults_at, verify_requests_at
from vvp_helper.decision import Decider, Decision
from vvp_helper.metrics import Metrics
from vvp_helper.policy.load import Policy, load_policy
from vvp_helper.sip.identity import PrecheckSettings
from vvp_helper.verifier.client import VerifierClient
from vvp_helper.verifier.guard import GuardedVerifier
from vvp_simulator.passport import mint


@pytest.fixture
def policy() -> Policy:
    return load_policy(DEFAULT_POLICY)


async def test_valid_verdict_redirects_verified_with_request_id(
    policy: Policy, simulator_url: str
) -> None:
    client = VerifierClient(f"{simulator_url}/verify", timeout=2)
    minted = mint("brand", ORIG, DEST)
    try:
        decision = await decider(client).decide(call(identity=[minted.identity_header()]), policy)
    finally:
        await client.close()
    assert decision.outcome == "valid"
    assert decision.request_id
    assert decision.instruction.contact == f"sip:{DEST}@verified.carrier.example"
    assert ("X-VVP-Request-Id", decision.request_id) in decision.instruction.headers
    assert ("X-VVP-Brand-Name", "Acme Bank") in decision.instruction.headers
    assert await verify_requests_at(simulator_url) == 1


async def test_verifier_failure_is_an_error_with_its_code(
    policy: Policy, simulator_url: str
) -> None:
    await set_faults_at(simulator_url, mode="hang")
    client = VerifierClient(f"{simulator_url}/verify", timeout=0.2)
    minted = mint("valid", ORIG, DEST)
    try:
        decision = await decider(client).decide(call(identity=[minted.identity_header()]), policy)
    finally:
        await client.close()
    assert decision.outcome == "error"
    assert decision.error_kind == "timeout"
    assert ("X-VVP-Error", "EXT_VERIFIER_TIMEOUT") in decision.instruction.headers


async def test_verifier_slower_than_the_deadline_still_gets_an_answer(
    policy: Policy, simulator_url: str
) -> None:
    # A verifier timeout longer than the helper's deadline (a misconfiguration Settings
    # refuses, built here directly): the deadline still answers.
    await set_faults_at(simulator_url, mode="hang")
    client = VerifierClient(f"{simulator_url}/verify", timeout=30)
    minted = mint("valid", ORIG, DEST)
    try:
        decision = await decider(client, deadline=0.1).decide(
            call(identity=[minted.identity_header()]), policy
        )
    finally:
        await client.close()
    # "deadline", not "timeout": the helper's deadline answered, not the verifier's 30 s
    # timeout (how soon is tests/load/decision_bench.py's and the ramp's business).
    assert decision.outcome == "error"
    assert decision.error_kind == "deadline"
    assert decision.instruction.contact == f"sip:{DEST}@fallback.carrier.example"
    assert ("X-VVP-Error", "EXT_HELPER_DEADLINE") in decision.instruction.headers


async def decide_queued(
    simulator_url: str,
    policy: Policy,
    *,
    waited: float,
    deadline: float,
    max_queue_wait: float = 0.0,
    hang: bool = True,
    latency_ms: int = 0,
) -> Decision:
    """Decide a valid call Kamailio received ``waited`` seconds ago (its PASSporT signed
    then too). The simulator hangs, or answers after ``latency_ms``."""
    if hang:
        await set_faults_at(simulator_url, mode="hang")
    elif latency_ms:
        await set_faults_at(simulator_url, latency_ms=latency_ms)
    client = VerifierClient(f"{simulator_url}/verify", timeout=30)
    received_at = time.time() - waited
    minted = mint("valid", ORIG, DEST, now=int(received_at))
    try:
        decision = await decider(client, deadline=deadline, max_queue_wait=max_queue_wait).decide(
            call(identity=[minted.identity_header()], received_at=received_at), policy
        )
    finally:
        await client.close()
    return decision


async def test_call_that_queued_past_the_queue_limit_is_answered_at_once_by_error_action(
    policy: Policy, simulator_url: str
) -> None:
    # The helper is the bottleneck: this call waited 1.2 s before its decision started,
    # past the 1 s limit. The verifier (hanging) is not asked; the error action answers.
    decision = await decide_queued(
        simulator_url, policy, waited=1.2, deadline=5.5, max_queue_wait=1.0
    )
    assert await verify_requests_at(simulator_url) == 0
    assert decision.outcome == "error"
    assert decision.error_kind == "overload"
    assert ("X-VVP-Error", "EXT_HELPER_OVERLOADED") in decision.instruction.headers
    assert decision.instruction.contact == f"sip:{DEST}@fallback.carrier.example"


async def test_call_within_the_queue_limit_is_verified(policy: Policy, simulator_url: str) -> None:
    decision = await decide_queued(
        simulator_url, policy, waited=0.8, deadline=5.5, max_queue_wait=1.0, hang=False
    )
    assert decision.outcome == "valid"


async def test_call_that_queued_past_its_deadline_is_answered_at_once_without_verifying(
    policy: Policy, simulator_url: str
) -> None:
    # Overload: the request waited in queues for longer than a decision may take, so
    # Kamailio is about to give up on it. The verifier (hanging here) is not asked.
    decision = await decide_queued(simulator_url, policy, waited=2.5, deadline=2.0)
    assert await verify_requests_at(simulator_url) == 0
    assert decision.outcome == "error"
    assert decision.error_kind == "overload"
    assert ("X-VVP-Error", "EXT_HELPER_OVERLOADED") in decision.instruction.headers


async def test_time_already_spent_in_queues_shortens_the_decision(
    policy: Policy, simulator_url: str
) -> None:
    # 1.5 s of a 2 s budget spent before the helper saw the call: the verifier gets the
    # 0.5 s left, not 2 s, so the answer still beats Kamailio's own timeout. It answers
    # after 1 s: inside a full budget that would be "valid"; in what is left, the
    # deadline answers (how soon: tests/load/decision_bench.py and the ramp measure it).
    decision = await decide_queued(
        simulator_url, policy, waited=1.5, deadline=2.0, hang=False, latency_ms=1000
    )
    assert decision.error_kind == "deadline"
    assert await verify_requests_at(simulator_url) == 1


async def test_received_at_from_a_clock_far_behind_does_not_cut_the_budget(
    policy: Policy, simulator_url: str
) -> None:
    # Kamailio on another host whose clock is 45 s behind: the budget starts when
    # the helper sees the call, and a normal verification goes through.
    decision = await decide_queued(simulator_url, policy, waited=45, deadline=2.0, hang=False)
    assert decision.outcome == "valid"


async def test_an_upstream_http_status_is_named_in_the_log_and_metrics(
    policy: Policy, simulator_url: str
) -> None:
    await set_faults_at(simulator_url, mode="http503")
    metrics = Metrics()
    client = GuardedVerifier(VerifierClient(f"{simulator_url}/verify", timeout=2))
    minted = mint("valid", ORIG, DEST)
    try:
        decision = await Decider(client, PrecheckSettings(), 2.0, metrics).decide(
            call(identity=[minted.identity_header()]), policy
        )
    finally:
        await client.close()
    assert decision.outcome == "error"
    assert decision.error_kind == "http_503"
    assert ("X-VVP-Error", "EXT_VERIFIER_HTTP_STATUS") in decision.instruction.headers
    counted = metrics.registry.get_sample_value(
        "vvp_helper_verifier_http_errors_total", {"status": "503", "outcome": "error"}
    )
    assert counted == 1


async def test_a_verifier_500_for_one_request_of_a_healthy_verifier_is_invalid(
    policy: Policy, simulator_url: str
) -> None:
    await set_faults_at(simulator_url, crash_call_id_prefix="crafted-")
    metrics = Metrics()
    client = GuardedVerifier(VerifierClient(f"{simulator_url}/verify", timeout=2))
    decide = Decider(client, PrecheckSettings(), 2.0, metrics).decide
    try:
        genuine = call(identity=[mint("valid", ORIG, DEST).identity_header()])
        assert (await decide(genuine, policy)).outcome == "valid"
        crafted = call(identity=[mint("valid", ORIG, DEST).identity_header()],
                       call_id="crafted-1@caller")  # fmt: skip
        decision = await decide(crafted, policy)
    finally:
        await client.close()
    assert decision.outcome == "invalid"
    assert decision.error_kind == "refused_request"
    assert decision.instruction.code == 403
    assert ("X-VVP-Error", "PASSPORT_PARSE_FAILED") in decision.instruction.headers
    counted = metrics.registry.get_sample_value(
        "vvp_helper_verifier_http_errors_total", {"status": "500", "outcome": "invalid"}
    )
    assert counted == 1
