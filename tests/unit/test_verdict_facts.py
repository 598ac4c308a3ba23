"""Every fact of the verifier's answer, downstream: the recorded real answers
(tests/fixtures/real_verifier) through the same ``conclude`` the server runs, with the
default policy and with rules on the new conditions."""

from __future__ import annotations

import base64
import json
import time
from pathlib import Path
from typing import Any

import pytest

from vvp_helper.decision import CallRequest, Decision, conclude, template_context
from vvp_helper.errors import PolicyError
from vvp_helper.policy.load import load_policy, parse_policy
from vvp_helper.policy.template import compile_template
from vvp_helper.verifier.client import Verdict
from vvp_helper.verifier.facts import failed_claims, verified_number, why_not_valid

ROOT = Path(__file__).resolve().parents[2]
RECORDED = ROOT / "tests" / "fixtures" / "real_verifier"
DEFAULT_POLICY = ROOT / "policy" / "default.yaml"


def recorded(case: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((RECORDED / f"{case}.json").read_text(encoding="utf-8"))
    return data


def _payload(passport: str) -> dict[str, Any]:
    part = passport.split(".")[1]
    data: dict[str, Any] = json.loads(base64.urlsafe_b64decode(part + "=" * (-len(part) % 4)))
    return data


def decide_recorded(case: str, policy_text: str | None = None) -> Decision:
    """The edge's decision for a recorded call and the verifier's recorded answer."""
    record = recorded(case)
    body = record["request"]["body"]
    sip = body["context"]["sip"]
    verdict = Verdict.from_json(record["body"])
    policy = parse_policy(policy_text) if policy_text else load_policy(DEFAULT_POLICY)
    call = CallRequest(
        call_id=body["context"]["call_id"],
        from_uri=sip["from_uri"],
        to_uri=sip["to_uri"],
        received_at=time.time(),
    )
    errors = tuple({"code": e.code, "message": e.message} for e in verdict.errors)
    return conclude(
        call,
        policy,
        verdict.overall_status.lower(),
        errors,
        verdict=verdict,
        signed_orig=_payload(body["passport_jwt"])["orig"]["tn"][0],
    )


def headers(decision: Decision) -> dict[str, str]:
    return dict(decision.instruction.headers)


# -- the recorded answers read as the verifier wrote them -----------------------------------


@pytest.mark.parametrize(
    "case",
    sorted(p.stem for p in RECORDED.glob("*.json") if recorded(p.stem)["http_status"] == 200),
)
def test_every_recorded_200_answer_is_a_verdict(case: str) -> None:
    verdict = Verdict.from_json(recorded(case)["body"])
    assert verdict.overall_status == recorded(case)["body"]["overall_status"]


def test_a_valid_answer_gives_the_signer_organisation_and_toip_warnings() -> None:
    verdict = Verdict.from_json(recorded("valid")["body"])
    assert verdict.signer_identity["lei"] == "5493CD2D2D00B0B13F52"
    assert verdict.signer_identity["legal_name"] is None  # as the real verifier sends it
    assert [w["code"] for w in verdict.toip_warnings] == ["DOSSIER_HAS_ISSUEE"] * 2
    assert verdict.delegation_depth == 0
    assert verdict.revocation_pending is False
    assert verdict.brand_logo_hash is None
    context = decide_recorded("valid").context
    assert context["signer_lei"] == "5493CD2D2D00B0B13F52"
    assert context["signer_legal_name"] is None
    assert context["reason"] == ""
    assert context["failed_claims"] == []


def test_malformed_informational_fields_are_dropped_not_fatal() -> None:
    body = dict(recorded("valid")["body"])
    body.update(
        toip_warnings="not a list",
        issuer_identities=["not", "a", "map"],
        delegation_chain=7,
        revocation_pending="yes",
    )
    verdict = Verdict.from_json(body)
    assert verdict.overall_status == "VALID"
    assert verdict.toip_warnings == ()
    assert verdict.signer_identity == {}
    assert verdict.delegation_depth == 0
    assert verdict.revocation_pending is False


@pytest.mark.parametrize(
    ("chain", "depth"),
    [
        ({"depth": 2, "chain": [{}, {}, {}]}, 2),
        ({"chain": [{}, {}]}, 1),
        ({"depth": -1, "chain": []}, 0),
        ({"depth": True}, 0),
    ],
)
def test_delegation_depth_comes_from_the_chain(chain: dict[str, Any], depth: int) -> None:
    body = dict(recorded("valid")["body"], delegation_chain=chain)
    assert Verdict.from_json(body).delegation_depth == depth


# -- {reason}: why not VALID, even without errors --------------------------------------------


def test_stale_revocation_indeterminate_says_why_although_errors_is_null() -> None:
    assert recorded("stale_revocation")["body"]["errors"] is None
    decision = decide_recorded("stale_revocation")
    assert decision.outcome == "indeterminate"
    assert decision.context["reason_claim"] == "revocation_clear"
    assert headers(decision)["X-VVP-Reason"] == (
        "Revocation data stale — background re-check pending"
    )
    assert "X-VVP-Error" not in headers(decision)


def test_the_reason_of_a_forged_signature_is_the_failing_required_claim() -> None:
    decision = decide_recorded("tampered_signature")
    assert decision.context["reason_claim"] == "passport_verified"
    assert headers(decision)["X-VVP-Reason"].startswith("Ed25519 signature verification failed")


def test_a_wrong_from_is_explained_by_the_verifier_error() -> None:
    # The verdict is INVALID through its error; context_aligned is an optional claim.
    decision = decide_recorded("wrong_from")
    assert headers(decision)["X-VVP-Error"] == "CONTEXT_MISMATCH"
    assert headers(decision)["X-VVP-Reason"] == (
        "orig.tn '+441923311001' != From URI '+441923311002'"
    )
    assert decision.context["reason_claim"] == ""


def test_why_not_valid_order_of_sources() -> None:
    optional = {
        "name": "caller_authorised",
        "status": "VALID",
        "reasons": [],
        "children": [
            {
                "required": False,
                "node": {"name": "brand_verified", "status": "INVALID", "reasons": ["no brand"]},
            }
        ],
    }
    errors = [{"code": "X_CODE", "message": ""}]
    assert why_not_valid("valid", [optional], errors).text == ""
    assert why_not_valid("invalid", [optional], errors).text == "X_CODE"
    assert why_not_valid("warning", [optional], []).text == "no brand"
    assert why_not_valid("warning", [], [], "vetter_not_authorised").text == (
        "vetter_not_authorised"
    )
    assert why_not_valid("indeterminate", [{"children": "x"}, 5], []).text == ""  # type: ignore[list-item]


def test_failed_claims_render_with_their_reasons() -> None:
    claims = recorded("stale_revocation")["body"]["claims"]
    template = compile_template("{failed_claims}", {"failed_claims"})
    assert template.render({"failed_claims": failed_claims(claims)}) == (
        "caller_authorised=INDETERMINATE,dossier_verified=INDETERMINATE,"
        "revocation_clear=INDETERMINATE (Revocation data stale — background re-check pending)"
    )
    claims_template = compile_template("{claims}", {"claims"})
    assert claims_template.render({"claims": claims}) == "caller_authorised=INDETERMINATE"


# -- P-Asserted-Identity: the number that was verified ---------------------------------------


@pytest.mark.parametrize(
    ("orig", "number"),
    [
        ("+15550100001", "+15550100001"),
        ("15550100001", "+15550100001"),
        ("+1-555-010-0001", "+15550100001"),
        ("+1555010000199999", ""),  # 16 digits: not E.164
        ("alice", ""),
        ("+1555>0100001", ""),
        ("", ""),
        (None, ""),
    ],
)
def test_verified_number_is_e164_with_plus_or_nothing(orig: str | None, number: str) -> None:
    assert verified_number(orig) == number


def test_pai_asserts_the_signed_number_when_from_lacks_the_plus() -> None:
    record = recorded("valid")
    verdict = Verdict.from_json(record["body"])
    call = CallRequest(
        call_id="x",
        from_uri="sip:441923311001@carrier.example",
        to_uri="sip:+441923311006@carrier.example",
        received_at=time.time(),
    )
    decision = conclude(
        call, load_policy(DEFAULT_POLICY), "valid", (), verdict=verdict, signed_orig="+441923311001"
    )
    pai = headers(decision)["P-Asserted-Identity"]
    assert pai == "<sip:+441923311001@verified.carrier.example>"
    assert decision.context["orig"] == "441923311001"  # {orig} stays the From as written


@pytest.mark.parametrize("outcome", ["invalid", "indeterminate", "error", "missing"])
def test_orig_tn_is_empty_unless_the_verifier_vouched(outcome: str) -> None:
    call = CallRequest(call_id="x", from_uri="sip:+1555@h", to_uri="sip:+1666@h", received_at=0)
    context = template_context(call, outcome, outcome.upper(), (), None, signed_orig="+1555")
    assert context["orig_tn"] == ""


def test_a_warning_keeps_brand_and_identity_downstream() -> None:
    decision = decide_recorded("warning_vetter_scope")
    got = headers(decision)
    assert decision.outcome == "warning"
    assert got["X-VVP-Status"] == "WARNING"
    assert got["X-VVP-Warning-Reason"] == "vetter_not_authorised_for_jurisdiction"
    assert got["P-Asserted-Identity"] == "<sip:+15551001050@verified.carrier.example>"
    assert got["X-VVP-Brand-Name"] == "Out Of Scope"
    assert got["Call-Info"] == "<http://127.0.0.1:8001/static/brand-logo.png>;purpose=icon"


# -- rules on the new conditions -------------------------------------------------------------

RULES = """
rules:
  - name: pending revocation
    match: {revocation_pending: true}
    action: reject
    reason_code: 503
  - name: delegated
    match: {delegation_depth: {min: 1}}
    action: reject
    reason_code: 403
  - name: unhashed logo from acme
    match: {brand_logo_hash: false, signer_lei: "5493CD2D2D00B0B13F52", outcome: valid}
    action: redirect
    destination_template: "sip:{dest}@acme.example"
  - name: toip
    match: {toip_warning: DOSSIER_HAS_ISSUEE, outcome: warning}
    action: redirect
    destination_template: "sip:{dest}@toip.example"
policies:
  on_valid: {action: redirect, destination_template: "sip:{dest}@verified.example"}
  on_invalid: {action: reject}
  on_indeterminate: {action: redirect, destination_template: "sip:{dest}@unverified.example"}
  on_error: {action: redirect, destination_template: "sip:{dest}@fallback.example"}
"""


def test_rules_match_the_signer_organisation_and_the_logo_hash() -> None:
    decision = decide_recorded("valid", RULES)
    assert decision.instruction.rule == "rule unhashed logo from acme"


def test_rules_match_toip_warning_codes() -> None:
    decision = decide_recorded("warning_vetter_scope", RULES)
    assert decision.instruction.rule == "rule toip"
    body = dict(recorded("warning_vetter_scope")["body"], toip_warnings=None)
    call = CallRequest(call_id="x", from_uri="sip:+1@h", to_uri="sip:+2@h", received_at=0)
    verdict = Verdict.from_json(body)
    decision = conclude(call, parse_policy(RULES), "warning", (), verdict=verdict)
    assert decision.instruction.rule == "on_valid"  # on_warning borrows on_valid's action


def test_rules_match_revocation_pending_and_delegation_depth() -> None:
    body = dict(recorded("valid")["body"], revocation_pending=True)
    verdict = Verdict.from_json(body)
    call = CallRequest(call_id="x", from_uri="sip:+1@h", to_uri="sip:+2@h", received_at=0)
    policy = parse_policy(RULES)
    assert conclude(call, policy, "valid", (), verdict=verdict).instruction.code == 503
    body = dict(recorded("valid")["body"], delegation_chain={"depth": 1, "chain": []})
    verdict = Verdict.from_json(body)
    decision = conclude(call, policy, "valid", (), verdict=verdict)
    assert decision.instruction.rule == "rule delegated"


def test_a_call_without_a_verdict_matches_no_verdict_condition() -> None:
    policy = parse_policy(RULES.replace("revocation_pending: true", "revocation_pending: false"))
    call = CallRequest(call_id="x", from_uri="sip:+1@h", to_uri="sip:+2@h", received_at=0)
    errors = ({"code": "EXT_VERIFIER_TIMEOUT", "message": "late"},)
    decision = conclude(call, policy, "error", errors)
    assert decision.instruction.rule == "on_error"


@pytest.mark.parametrize(
    ("condition", "code"),
    [
        ('revocation_pending: "yes"', "not-a-boolean"),
        ("brand_logo_hash: 1", "not-a-boolean"),
        ("delegation_depth: -1", "bad-depth"),
        ("delegation_depth: {min: 3, max: 1}", "bad-depth"),
        ("delegation_depth: {}", "bad-depth"),
        ("delegation_depth: {least: 1}", "unknown-key"),
        ("toip_warning: []", "empty-list"),
    ],
)
def test_bad_conditions_on_verdict_facts_are_errors(condition: str, code: str) -> None:
    text = RULES.replace("revocation_pending: true", condition)
    with pytest.raises(PolicyError) as caught:
        parse_policy(text)
    assert code in {problem.code for problem in caught.value.errors}


def test_a_policy_that_reads_failed_claims_gets_them_with_reasons() -> None:
    section = (
        "on_indeterminate: {action: redirect, "
        'destination_template: "sip:{dest}@unverified.example"}'
    )
    text = RULES.replace(
        section,
        "on_indeterminate:\n"
        "    action: redirect\n"
        '    destination_template: "sip:{dest}@unverified.example"\n'
        '    headers: {X-Claims: "{failed_claims}", X-Why: "{reason_claim}: {reason}"}',
    )
    decision = decide_recorded("stale_revocation", text)
    assert headers(decision)["X-Claims"].endswith(
        "revocation_clear=INDETERMINATE (Revocation data stale — background re-check pending)"
    )
    assert headers(decision)["X-Why"] == (
        "revocation_clear: Revocation data stale — background re-check pending"
    )
