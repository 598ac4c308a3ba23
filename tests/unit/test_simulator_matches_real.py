"""The VVP verifier SIMULATOR against answers recorded from the real VVP verifier.

tests/fixtures/real_verifier/ holds real `POST /verify` answers (see its README). For each,
the simulator answers the same kind of request and the two must agree on everything but
identities and times: the same keys in the same order, the same type for every field
(null and a string alike where the verifier's model declares the field Optional), the same
claim tree (names, required flags, statuses, reasons, kinds of evidence), the same error
codes, recoverability and messages, the same ToIP warnings and vetter constraints (for
the crashes, the same HTTP status, content type, body and connection handling, over HTTP:
tests/integration/test_simulator_crashes_as_real.py). So the simulator cannot drift from
the real verifier silently: a change on either side fails here.
"""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime
from typing import Any

import pytest

from tests.support.recorded_verifier import (
    CASES,
    CRASHES,
    DEST,
    FIXTURES,
    ORIG,
    Case,
    load,
    recorded_cases,
    request,
)
from vvp_simulator.answer import DossierCache, simulated_verdict
from vvp_simulator.faults import Faults
from vvp_simulator.keys import trusted_keys
from vvp_simulator.passport import MintedIdentity, mint

TRUSTED = trusted_keys(["vvp-demo-issuer"])

# Fields the verifier's VerifyResponse model (and its nested models) declares Optional[str]:
# a recorded null and a simulated string (or the reverse) are the same type there.
OPTIONAL_STRINGS = frozenset(
    {
        "signer_aid",
        "brand_name",
        "brand_logo_url",
        "brand_logo_hash",
        "vetter_warning_reason",
        "legal_name",
        "lei",
        "source_said",
        "credential_role",
        "said",
        "field_path",
        "vetter_certification_said",
        "display_name",
        "root_aid",
    }
)
# Compared by value (the rest by type): verdict, certainty, flags, the vetter's rule.
BY_VALUE = frozenset(
    {
        "overall_status",
        "certainty",
        "revocation_pending",
        "cache_hit",
        "has_variant_limitations",
        "vetter_warning_reason",
        "delegation_chain",
    }
)


# --- what "the same" means ---------------------------------------------------------------


def shape(value: Any, name: str = "") -> Any:
    """A value's type structure: dict keys (in order) with their shapes; one shape per list."""
    if isinstance(value, dict):
        if name in ("issuer_identities", "vetter_constraints"):  # keyed by AID / SAID
            return ["map", sorted({json.dumps(shape(v), sort_keys=True) for v in value.values()})]
        return [[k, shape(v, k)] for k, v in value.items()]
    if isinstance(value, list):
        return ["list", sorted({json.dumps(shape(v, name), sort_keys=True) for v in value})]
    if name in OPTIONAL_STRINGS and (value is None or isinstance(value, str)):
        return "str?"
    return type(value).__name__


def normal_text(text: str) -> str:
    """A message without its particulars: URLs, quoted values, digits, SAIDs."""
    text = re.sub(r"https?://\S+", "URL", text)
    text = re.sub(r"'[^']*'", "'_'", text)
    text = re.sub(r"\b[A-Z][A-Za-z0-9_-]{11,}", "SAID", text)
    return re.sub(r"\d+", "0", text)


def evidence_kinds(items: list[str]) -> list[str]:
    """Kinds of evidence in order, repeats folded: 'active:E..|..' x7 -> 'active'."""
    kinds: list[str] = []
    for item in items:
        kind = re.split(r"[:=]", item, maxsplit=1)[0]
        if not kinds or kinds[-1] != kind:
            kinds.append(kind)
    return kinds


def tree(node: dict[str, Any], required: bool = True) -> dict[str, Any]:
    return {
        "name": node["name"],
        "required": required,
        "status": node["status"],
        "reasons": [normal_text(r) for r in node["reasons"]],
        "evidence": evidence_kinds(node["evidence"]),
        "children": [tree(c["node"], c["required"]) for c in node["children"]],
    }


def comparable(body: dict[str, Any]) -> dict[str, Any]:
    """What must be equal between a recorded and a simulated answer."""
    out: dict[str, Any] = {
        "keys": list(body),
        "shape": shape(body),
        "values": {k: body[k] for k in BY_VALUE},
        "errors": [
            (e["code"], e["recoverable"], normal_text(e["message"])) for e in body["errors"] or []
        ],
        "claims": [tree(c) for c in body["claims"] or []],
        "toip_warnings": [
            (w["code"], w["message"], w["field_path"]) for w in body["toip_warnings"] or []
        ],
        "identities": len(body["issuer_identities"] or {}),
        "vetter_constraints": [
            {k: v for k, v in c.items() if not k.endswith("_said")}
            for c in (body["vetter_constraints"] or {}).values()
        ],
    }
    return out


def simulate(case: Case) -> dict[str, Any]:
    m = mint(case.kind, ORIG, DEST, sig_form=case.sig_form)
    if case.from_number is not None:
        m = MintedIdentity(m.passport_jwt, m.vvp_identity, m.kid, case.from_number, m.dest, m.kind)
    body = request(m, jwt=case.tamper(m) if case.tamper else None, sip=case.sip)
    cache = DossierCache()
    now = datetime.now(UTC).timestamp()
    if case.cached:  # an earlier call on the same dossier, with a fresh identity
        earlier = mint(case.kind, ORIG, DEST)
        simulated_verdict(cache, TRUSTED, Faults(), earlier.vvp_identity, request(earlier), now)
    faults = Faults(stale_revocation_every_s=1.0 if case.stale else 0.0)
    later = now + 2.0 if case.stale else now
    return simulated_verdict(cache, TRUSTED, faults, m.vvp_identity, body, later)


# --- the tests -----------------------------------------------------------------------------


def test_every_recorded_case_is_compared() -> None:
    assert recorded_cases(), f"no recorded answers in {FIXTURES}"
    assert set(recorded_cases()) == set(CASES)


def test_recorded_answers_are_real_verifier_answers() -> None:
    # Guard against a fixture edited by hand into agreement: each keeps its provenance.
    for case in recorded_cases():
        data = load(case)
        assert data["case"] == case
        assert data["headers"]["server"] == "uvicorn"
        assert set(data) >= {"request", "http_status", "content_type", "headers", "body"}


@pytest.mark.parametrize("case", sorted(set(CASES) - set(CRASHES)))
def test_simulator_answers_as_the_real_verifier(case: str) -> None:
    real = load(case)
    assert real["http_status"] == 200 and real["content_type"] == "application/json"
    sim = simulate(CASES[case])
    expected, got = comparable(real["body"]), comparable(sim)
    for part in expected:
        assert got[part] == expected[part], f"{case}: {part} differs from the real verifier"
