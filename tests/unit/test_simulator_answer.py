"""The VVP verifier SIMULATOR's answer fields and the failure modes the real verifier has:
stale-revocation INDETERMINATE, WARNING, and the facts it reports (no network)."""

from __future__ import annotations

from typing import Any

import pytest

from tests.support.verifier_shapes import claim, verify_body
from vvp_simulator.answer import DossierCache, simulated_verdict
from vvp_simulator.dossier import DEMO_LEGAL_NAME, DEMO_LEI, DEMO_QVI_AID, DEMO_ROOT
from vvp_simulator.faults import Faults
from vvp_simulator.keys import trusted_keys
from vvp_simulator.passport import DEMO_ISSUER, DEMO_LOGO_HASH, MintedIdentity, mint
from vvp_simulator.verdict import (
    RESPONSE_KEYS,
    STALE_REVOCATION_REASON,
    Options,
    parse_vvp_identity,
    verify,
)

ORIG = "+441923311001"
DEST = "+441923311006"
NOW = 1_773_560_788
TRUSTED = trusted_keys(["vvp-demo-issuer"])


def body_for(m: MintedIdentity, now: float = NOW) -> dict[str, Any]:
    return verify_body(m, now)


def run(kind: str, options: Options | None = None) -> dict[str, Any]:
    m = mint(kind, ORIG, DEST, now=NOW)
    return verify(m.vvp_identity, body_for(m), TRUSTED, float(NOW), options)


def all_nodes(node: dict[str, Any]) -> list[dict[str, Any]]:
    return [node, *(n for c in node["children"] for n in all_nodes(c["node"]))]


# --- the fields the real verifier fills ------------------------------------------------


def test_valid_answer_has_every_field_in_the_real_shape() -> None:
    resp = run("brand")
    assert tuple(resp) == RESPONSE_KEYS
    assert resp["overall_status"] == "VALID" and resp["errors"] is None
    assert resp["has_variant_limitations"] is False and resp["revocation_pending"] is False
    assert resp["brand_logo_hash"] == DEMO_LOGO_HASH

    # Two DOSSIER_HAS_ISSUEE ToIP warnings on every answer that read the dossier.
    warnings = resp["toip_warnings"]
    assert [w["code"] for w in warnings] == ["DOSSIER_HAS_ISSUEE"] * 2
    for w in warnings:
        assert set(w) == {"code", "message", "said", "field_path"}
    assert [w["field_path"] for w in warnings] == ["a.i", "ri"]
    assert all(isinstance(w["said"], str) and len(w["said"]) == 44 for w in warnings)

    signer = DEMO_ISSUER.aid
    identities = resp["issuer_identities"]
    assert list(identities) == [DEMO_QVI_AID, signer]
    for aid, identity in identities.items():
        assert list(identity) == [
            "aid",
            "legal_name",
            "lei",
            "source_said",
            "identity_source",
            "credential_role",
        ]
        assert identity["aid"] == aid and len(identity["source_said"]) == 44
        assert (identity["identity_source"], identity["credential_role"]) == ("dossier", "issuee")
    assert (identities[signer]["legal_name"], identities[signer]["lei"]) == (
        DEMO_LEGAL_NAME,
        DEMO_LEI,
    )
    # A signer that is not delegated has no delegation chain (as the real VVP stack's).
    assert resp["delegation_chain"] is None

    (vc,) = resp["vetter_constraints"].values()
    assert list(vc) == [
        "credential_said",
        "credential_type",
        "vetter_certification_said",
        "constraint_type",
        "target_value",
        "allowed_values",
        "is_authorized",
        "reason",
    ]

    # Every claim carries reasons and evidence lists; VALID claims explain with evidence.
    for node in all_nodes(resp["claims"][0]):
        assert isinstance(node["reasons"], list) and isinstance(node["evidence"], list)
        assert all(isinstance(x, str) for x in node["reasons"] + node["evidence"])
    assert "signature_valid,tier2" in claim(resp, "passport_verified")["evidence"]
    # A first call checks each credential; a cached one reports the cached check.
    evidence = claim(resp, "revocation_clear")["evidence"]
    assert evidence[-1] == "checked:5,inline:5,queried:0"
    assert all(e.startswith("active:") for e in evidence[:-1]) and len(evidence) == 6
    cached = run("brand", Options(cache_hit=True))
    assert claim(cached, "revocation_clear")["evidence"] == ["all_credentials_unrevoked"]
    assert claim(cached, "dossier_verified")["evidence"][-1] == "cache_hit:dossier_verification"


def test_delegated_signer_has_its_delegation_chain() -> None:
    resp = run("delegated")
    assert resp["overall_status"] == "VALID"
    signer = DEMO_ISSUER.aid
    chain = resp["delegation_chain"]
    assert set(chain) == {"chain", "depth", "root_aid", "is_valid", "errors"}
    assert chain["depth"] == 1 and chain["root_aid"] == DEMO_ROOT.aid
    assert chain["is_valid"] is True and chain["errors"] == []
    assert [n["aid"] for n in chain["chain"]] == [signer, DEMO_ROOT.aid]
    for node in chain["chain"]:
        assert list(node) == ["aid", "aid_short", "display_name", "is_root", "authorization_status"]
        assert node["aid_short"] == node["aid"][:16] + "..."
        assert node["authorization_status"] == "VALID"
    assert [n["is_root"] for n in chain["chain"]] == [False, True]


@pytest.mark.parametrize("kind", ["forged", "unknown-signer", "indeterminate"])
def test_facts_only_from_what_was_verified(kind: str) -> None:
    resp = run(kind)
    # Without a verified signature: no signer, no delegation chain.
    if kind != "indeterminate":
        assert resp["signer_aid"] is None and resp["delegation_chain"] is None
    # Without a dossier read: no ToIP warnings, no identities, no vetter constraints.
    if kind != "unknown-signer":
        assert resp["toip_warnings"] is None and resp["issuer_identities"] is None
        assert resp["vetter_constraints"] is None


def test_warning_kind() -> None:
    resp = run("warning")
    assert resp["overall_status"] == "WARNING" and resp["errors"] is None
    assert resp["vetter_warning_reason"] == "vetter_not_authorised_for_jurisdiction"
    assert resp["certainty"] == "none"
    vetter = claim(resp, "vetter_constraints_valid")
    assert vetter["status"] == "INVALID"
    assert vetter["reasons"] == [
        "Vetter constraint violation: credential issuer not authorized for region"
    ]
    assert vetter["evidence"][0].startswith("unauthorized:")
    (vc,) = resp["vetter_constraints"].values()
    assert vc["is_authorized"] is False


def test_warning_reason_only_with_warning() -> None:
    for kind in ("valid", "forged", "indeterminate"):
        assert run(kind)["vetter_warning_reason"] is None


# --- stale revocation --------------------------------------------------------------------


def test_stale_revocation_is_indeterminate_with_no_errors() -> None:
    resp = run("valid", Options(cache_hit=True, revocation_stale=True))
    assert resp["overall_status"] == "INDETERMINATE"
    assert resp["errors"] is None
    assert resp["certainty"] == "partial" and resp["revocation_pending"] is False
    assert resp["cache_hit"] is True
    revocation = claim(resp, "revocation_clear")
    assert revocation["status"] == "INDETERMINATE"
    assert revocation["reasons"] == [STALE_REVOCATION_REASON]
    assert revocation["evidence"] == ["revocation_data_stale"]
    assert claim(resp, "dossier_verified")["status"] == "INDETERMINATE"
    assert resp["claims"][0]["status"] == "INDETERMINATE"


def test_stale_needs_a_cache_hit() -> None:
    assert run("valid", Options(revocation_stale=True))["overall_status"] == "VALID"


def test_stale_revocation_once_per_period_per_dossier() -> None:
    cache = DossierCache()
    faults = Faults(stale_revocation_every_s=300)
    a = mint("valid", ORIG, DEST, now=NOW)
    b = mint("valid", ORIG, DEST, now=NOW, aid_code="B")  # another dossier URL
    assert (
        parse_vvp_identity(a.vvp_identity, NOW).evd != parse_vvp_identity(b.vvp_identity, NOW).evd
    )

    def call(m: MintedIdentity, at: float) -> tuple[str, bool]:
        resp = simulated_verdict(cache, TRUSTED, faults, m.vvp_identity, body_for(m), at)
        return resp["overall_status"], resp["cache_hit"]

    assert call(a, NOW) == ("VALID", False)  # first call: fetched, fresh
    assert call(a, NOW + 100) == ("VALID", True)
    assert call(b, NOW + 150) == ("VALID", False)
    assert call(a, NOW + 299) == ("VALID", True)
    assert call(a, NOW + 300) == ("INDETERMINATE", True)  # one stale answer...
    assert call(a, NOW + 300) == ("VALID", True)  # ...then the re-check is done
    assert call(b, NOW + 449) == ("VALID", True)
    assert call(b, NOW + 450) == ("INDETERMINATE", True)
    assert call(a, NOW + 599) == ("VALID", True)
    assert call(a, NOW + 600) == ("INDETERMINATE", True)


def test_stale_revocation_off_by_default() -> None:
    cache = DossierCache()
    m = mint("valid", ORIG, DEST, now=NOW)
    for at in (NOW, NOW + 300, NOW + 600):
        resp = simulated_verdict(cache, TRUSTED, Faults(), m.vvp_identity, body_for(m), at)
        assert resp["overall_status"] == "VALID", at


def test_cache_hit_as_the_verifiers_verification_cache() -> None:
    cache = DossierCache()

    def call(m: MintedIdentity) -> tuple[str, bool]:
        resp = simulated_verdict(cache, TRUSTED, Faults(), m.vvp_identity, body_for(m), NOW)
        return resp["overall_status"], resp["cache_hit"]

    # A call that never read the dossier does not fill the cache.
    assert call(mint("indeterminate", ORIG, DEST, now=NOW)) == ("INDETERMINATE", False)
    assert call(mint("indeterminate", ORIG, DEST, now=NOW)) == ("INDETERMINATE", False)
    assert call(mint("valid", ORIG, DEST, now=NOW)) == ("VALID", False)
    assert call(mint("valid", ORIG, DEST, now=NOW)) == ("VALID", True)
    # Same dossier, but a PASSporT that fails: the cache is not consulted.
    assert call(mint("forged", ORIG, DEST, now=NOW)) == ("INVALID", False)
    # Keyed by dossier and kid: the same key's B AID is another entry.
    assert call(mint("valid", ORIG, DEST, now=NOW, aid_code="B")) == ("VALID", False)
