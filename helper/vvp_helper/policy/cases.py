"""Proving a policy before it goes live: ``explain`` one described call, ``test`` a file
of cases (``promtool test rules`` / ``opa test`` for call routing). No network: the
described call goes through the same ``decision.conclude`` the server uses.

A described call (all keys optional but ``outcome``)::

    outcome: invalid                 # valid warning invalid indeterminate error missing
    errors: [PASSPORT_SIG_INVALID]   # error codes, first is {errors[0].code}; an item may
                                     # also be {code: ..., message: ...}
    orig: "+441923311001"            # calling number (From)
    signed_orig: "+441923311001"     # the PASSporT's orig (default: orig)
    dest: "+441923311006"            # called number (To)
    source: 192.0.2.10               # source address (for trunks / source rules)
    brand_name: Acme Bank
    brand_logo_url: https://brand.example/logo.png
    claims: {brand_verified: VALID}  # claim name -> status, or -> {status: ..., reason: ...}
    vetter_status: PASS              # or FAIL-ECC, FAIL-JURISDICTION, ...
    vetter_warning_reason: vetter_not_authorised_for_jurisdiction
    signer_aid: D...                 # certainty: full | partial | none
    signer_lei: 5493...              # signer_legal_name: ACME Inc (the signer's dossier)
    brand_logo_hash: E...            # revocation_pending: true
    toip_warnings: [DOSSIER_HAS_ISSUEE]
    delegation_depth: 1
    from_name: Alice

A test file::

    policy: default.yaml             # relative to the test file
    cases:
      - name: forged calls are refused
        call: {outcome: invalid, errors: [PASSPORT_SIG_INVALID]}
        expect:
          code: 403
          reason: Forbidden - VVP Verification Failed
          contact: null              # no Contact
          headers: {X-VVP-Error: PASSPORT_SIG_INVALID}
          absent: [X-VVP-Brand-Name]
          rule: on_invalid
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from vvp_helper.decision import CallRequest, Decision, conclude
from vvp_helper.policy.load import load_policy
from vvp_helper.policy.model import OUTCOMES, Instruction, Policy
from vvp_helper.verifier.client import Verdict

CALL_KEYS = frozenset(
    {
        "outcome", "errors", "orig", "dest", "source", "brand_name", "brand_logo_url",
        "claims", "vetter_status", "vetter_warning_reason", "signer_aid", "certainty",
        "from_name", "request_id", "call_id", "signed_orig", "signer_lei",
        "signer_legal_name", "brand_logo_hash", "revocation_pending", "toip_warnings",
        "delegation_depth",
    }
)  # fmt: skip
EXPECT_KEYS = frozenset({"code", "reason", "contact", "headers", "absent", "rule"})
_VERDICT_OUTCOMES = {"valid", "warning", "invalid", "indeterminate"}


class CaseError(ValueError):
    """A described call or test file that cannot be run."""


def describe(policy: Policy, call: Mapping[str, Any]) -> Decision:
    """The decision the edge would make for a described call."""
    unknown = set(call) - CALL_KEYS
    if unknown:
        raise CaseError(f"unknown call keys: {', '.join(sorted(unknown))}")
    outcome = call.get("outcome")
    if outcome not in OUTCOMES:
        raise CaseError(f"outcome must be one of {', '.join(OUTCOMES)}, not {outcome!r}")
    errors = _errors(call.get("errors") or [])
    request = CallRequest(
        call_id=str(call.get("call_id", "explain@vvp-edge")),
        from_uri=f"sip:{call.get('orig', '+15550000001')}@caller.invalid",
        to_uri=f"sip:{call.get('dest', '+15550000002')}@edge.invalid",
        received_at=time.time(),
        source_ip=str(call.get("source", "")),
        from_name=str(call.get("from_name", "")),
    )
    verdict = None
    if outcome in _VERDICT_OUTCOMES:
        claims = call.get("claims") or {}
        if not isinstance(claims, dict):
            raise CaseError("claims maps a claim name to a status")
        constraints = None
        vetter = call.get("vetter_status")
        if vetter is not None:
            constraints = _constraints_for(str(vetter))
        signer_aid = call.get("signer_aid")
        identities = None
        if "signer_lei" in call or "signer_legal_name" in call:
            signer_aid = signer_aid or "EExplainSigner"
            identities = {
                signer_aid: {
                    "aid": signer_aid,
                    "lei": call.get("signer_lei"),
                    "legal_name": call.get("signer_legal_name"),
                }
            }
        depth = call.get("delegation_depth")
        toip = call.get("toip_warnings") or []
        if not isinstance(toip, list):
            raise CaseError("toip_warnings must be a list of warning codes")
        verdict = Verdict.from_json(
            {
                "overall_status": outcome.upper(),
                "request_id": call.get("request_id", "explain-request"),
                "errors": [dict(e, recoverable=False) for e in errors] or None,
                "claims": [_claim(name, value) for name, value in claims.items()],
                "brand_name": call.get("brand_name"),
                "brand_logo_url": call.get("brand_logo_url"),
                "vetter_constraints": constraints,
                "vetter_warning_reason": call.get("vetter_warning_reason"),
                "signer_aid": signer_aid,
                "certainty": call.get("certainty"),
                "brand_logo_hash": call.get("brand_logo_hash"),
                "revocation_pending": call.get("revocation_pending") is True,
                "toip_warnings": [{"code": str(code), "message": ""} for code in toip],
                "issuer_identities": identities,
                "delegation_chain": None if depth is None else {"depth": depth, "chain": []},
            }
        )
    signed_orig = str(call.get("signed_orig", call.get("orig", "+15550000001")))
    return conclude(request, policy, outcome, errors, verdict=verdict, signed_orig=signed_orig)


def _errors(items: object) -> list[dict[str, str]]:
    if not isinstance(items, list):
        raise CaseError("errors must be a list of error codes")
    errors = []
    for item in items:
        if isinstance(item, str):
            errors.append({"code": item, "message": ""})
        elif isinstance(item, dict) and isinstance(item.get("code"), str):
            errors.append({"code": item["code"], "message": str(item.get("message") or "")})
        else:
            raise CaseError("an error is a code or {code: ..., message: ...}")
    return errors


def _claim(name: str, value: object) -> dict[str, Any]:
    """A described claim (at the root of the tree): ``STATUS`` or ``{status, reason}``."""
    if isinstance(value, str):
        return {"name": name, "status": value, "reasons": [], "children": []}
    if isinstance(value, dict) and isinstance(value.get("status"), str):
        reason = value.get("reason")
        return {
            "name": name,
            "status": value["status"],
            "reasons": [str(reason)] if reason else [],
            "children": [],
        }
    raise CaseError(f"claim {name!r}: a status, or {{status: ..., reason: ...}}")


def _constraints_for(vetter_status: str) -> dict[str, Any]:
    """Vetter constraints that the verifier would send for a given X-VVP-Vetter-Status."""
    status = vetter_status.upper()
    cert = None if status == "INDETERMINATE" else "EVetterCert"
    return {
        "ECredTN": {
            "constraint_type": "ecc",
            "is_authorized": "ECC" not in status and status != "INDETERMINATE",
            "vetter_certification_said": cert,
        },
        "ECredBrand": {
            "constraint_type": "jurisdiction",
            "is_authorized": "JURISDICTION" not in status,
            "vetter_certification_said": cert,
        },
    }


def format_answer(instruction: Instruction) -> str:
    """The SIP answer as it would appear on the wire (edge-added headers elided)."""
    lines = [f"SIP/2.0 {instruction.code} {instruction.reason}"]
    if instruction.contact:
        lines.append(f"Contact: <{instruction.contact}>")
    lines += [f"{name}: {value}" for name, value in instruction.headers]
    return "\n".join(lines)


@dataclass(frozen=True, slots=True)
class CaseResult:
    name: str
    failures: tuple[str, ...]

    @property
    def ok(self) -> bool:
        return not self.failures


def check_expectations(instruction: Instruction, expect: Mapping[str, Any]) -> list[str]:
    unknown = set(expect) - EXPECT_KEYS
    if unknown:
        raise CaseError(f"unknown expect keys: {', '.join(sorted(unknown))}")
    failures = []
    if "code" in expect and expect["code"] != instruction.code:
        failures.append(f"code: expected {expect['code']}, got {instruction.code}")
    if "reason" in expect and expect["reason"] != instruction.reason:
        failures.append(f"reason: expected {expect['reason']!r}, got {instruction.reason!r}")
    if "contact" in expect and expect["contact"] != instruction.contact:
        failures.append(f"contact: expected {expect['contact']!r}, got {instruction.contact!r}")
    if "rule" in expect and expect["rule"] != instruction.rule:
        failures.append(f"rule: expected {expect['rule']!r}, got {instruction.rule!r}")
    got = {name.lower(): value for name, value in instruction.headers}
    for name, value in (expect.get("headers") or {}).items():
        actual = got.get(str(name).lower())
        if actual != str(value):
            failures.append(f"header {name}: expected {value!r}, got {actual!r}")
    for name in expect.get("absent") or []:
        if str(name).lower() in got:
            failures.append(f"header {name}: expected absent, got {got[str(name).lower()]!r}")
    return failures


def run_test_file(path: Path) -> tuple[Path, list[CaseResult]]:
    """Load a test file and its policy; run every case."""
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as exc:
        raise CaseError(f"{path}: {exc}") from None
    if not isinstance(data, dict) or "policy" not in data or "cases" not in data:
        raise CaseError(f"{path}: a test file has 'policy' and 'cases'")
    policy_path = (path.parent / str(data["policy"])).resolve()
    policy = load_policy(policy_path)
    results = []
    for index, case in enumerate(data["cases"] or []):
        if not isinstance(case, dict) or "call" not in case or "expect" not in case:
            raise CaseError(f"{path}: case {index} needs 'call' and 'expect'")
        name = str(case.get("name", f"case {index}"))
        try:
            decision = describe(policy, case["call"])
            failures = check_expectations(decision.instruction, case["expect"])
        except CaseError as exc:
            raise CaseError(f"{path}: case {name!r}: {exc}") from None
        results.append(CaseResult(name, tuple(failures)))
    return policy_path, results
