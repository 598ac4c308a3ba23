"""The VVP verifier SIMULATOR's keys, minting and verdict logic (no network)."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import pytest

from tests.support.verifier_shapes import claim
from vvp_simulator.keys import (
    SigningKey,
    aid_for_public_key,
    aid_from_oobi,
    b64url_decode,
    b64url_encode,
    decode_signature,
    public_key_from_aid,
    trusted_keys,
    verify_signature,
)
from vvp_simulator.passport import (
    DEMO_CARD,
    DEMO_ISSUER,
    DEMO_LOGO_HASH,
    KINDS,
    MintedIdentity,
    mint,
    sign_jwt,
)
from vvp_simulator.verdict import RESPONSE_KEYS, VerdictError, parse_passport, tn_digits, verify

ORIG = "+441923311001"
DEST = "+441923311006"
NOW = 1_773_560_788  # 2026-03-15T07:46:28Z
TRUSTED = trusted_keys(["vvp-demo-issuer"])


def body_for(m: MintedIdentity, *, now: int = NOW, sip: bool = True) -> dict[str, Any]:
    context: dict[str, Any] = {"call_id": "abc@host", "received_at": "2026-03-15T07:46:28+00:00"}
    if sip:
        context["sip"] = {
            "from_uri": f"sip:{m.orig}@carrier.example",
            "to_uri": f"sip:{m.dest}@carrier.example;user=phone",
            "invite_time": datetime.fromtimestamp(now, UTC).isoformat(),
        }
    return {"passport_jwt": m.passport_jwt, "context": context}


def run(kind: str, *, now: int = NOW) -> dict[str, Any]:
    m = mint(kind, ORIG, DEST, now=now)
    return verify(m.vvp_identity, body_for(m, now=now), TRUSTED, float(now))


def codes(resp: dict[str, Any]) -> list[str]:
    return [e["code"] for e in resp["errors"] or []]


# --- keys and CESR ---------------------------------------------------------------


def test_demo_key_is_deterministic_and_aid_round_trips() -> None:
    a, b = (
        SigningKey.from_seed_text("vvp-demo-issuer"),
        SigningKey.from_seed_text("vvp-demo-issuer"),
    )
    assert a.aid == b.aid and len(a.aid) == 44 and a.aid.startswith("D")
    assert public_key_from_aid(a.aid) == a.public_bytes
    assert aid_for_public_key(a.public_bytes) == a.aid
    assert SigningKey.from_seed_text("other").aid != a.aid
    assert a.oobi() == f"http://witness.demo.example:5642/oobi/{a.aid}/controller"
    assert aid_from_oobi(a.oobi()) == a.aid
    assert aid_from_oobi("http://x.example/no-oobi-here") is None


def test_signature_verifies_only_for_the_signed_message() -> None:
    key = SigningKey.from_seed_text("vvp-demo-issuer")
    sig = key.sign(b"hello")
    assert verify_signature(key.public_bytes, sig, b"hello")
    assert not verify_signature(key.public_bytes, sig, b"hellO")
    other = SigningKey.from_seed_text("x")
    assert not verify_signature(other.public_bytes, sig, b"hello")


@pytest.mark.parametrize("backend", ["libsodium", "openssl"])
def test_both_signature_backends_agree(backend: str, monkeypatch: pytest.MonkeyPatch) -> None:
    # libsodium (the "fast" extra) when installed, else OpenSSL through cryptography:
    # the simulator's verdicts must not depend on which one this machine has.
    from vvp_simulator import keys

    if backend == "openssl":
        monkeypatch.setattr(keys, "_nacl_verify", None)
    else:
        assert keys._nacl_verify is not None, "PyNaCl (the fast extra) is not installed"
    key = SigningKey.from_seed_text("vvp-demo-issuer")
    sig = key.sign(b"hello")
    assert keys.verify_signature(key.public_bytes, sig, b"hello")
    assert not keys.verify_signature(key.public_bytes, sig, b"hellO")
    assert not keys.verify_signature(key.public_bytes, sig[:-1] + bytes([sig[-1] ^ 1]), b"hello")
    assert not keys.verify_signature(SigningKey.from_seed_text("x").public_bytes, sig, b"hello")
    assert not keys.verify_signature(key.public_bytes[:31], sig, b"hello")
    assert not keys.verify_signature(key.public_bytes, sig[:63], b"hello")


# --- minting ---------------------------------------------------------------------


def test_minted_passport_has_contract_header_payload_and_signature() -> None:
    m = mint("brand", ORIG, DEST, now=NOW)
    head, payload, sig = m.passport_jwt.split(".")
    assert json.loads(b64url_decode(head)) == {
        "alg": "EdDSA",
        "ppt": "vvp",
        "kid": m.kid,
        "typ": "JWT",
    }
    body = json.loads(b64url_decode(payload))
    assert body["iat"] == NOW and body["exp"] == NOW + 300
    assert body["orig"] == {"tn": [ORIG]} and body["dest"] == {"tn": [DEST]}
    assert body["evd"].startswith("http://dossier.demo.example/dossier/D")
    assert body["card"][0] == "ORG:Acme Bank"
    assert len(sig) == 88 and sig.startswith("0B")
    key = SigningKey.from_seed_text("vvp-demo-issuer")
    assert verify_signature(key.public_bytes, decode_signature(sig), f"{head}.{payload}".encode())
    assert "=" not in m.passport_jwt and "=" not in m.vvp_identity
    ident = json.loads(b64url_decode(m.vvp_identity))
    assert ident == {"ppt": "vvp", "kid": m.kid, "evd": body["evd"], "iat": NOW, "exp": NOW + 300}
    assert m.identity_header() == f"{m.passport_jwt};info=<{m.kid}>;alg=EdDSA;ppt=vvp"


def test_mint_rejects_unknown_kind_and_separator_in_numbers() -> None:
    with pytest.raises(ValueError, match="unknown kind"):
        mint("nope", ORIG, DEST)
    with pytest.raises(ValueError):
        mint("valid", "+44;1", DEST)


def test_wrong_number_changes_only_the_passport_orig() -> None:
    m = mint("wrong-number", ORIG, DEST, now=NOW)
    assert m.orig == ORIG
    assert parse_passport(m.passport_jwt).payload["orig"]["tn"] == ["+441923311002"]


# --- verdicts per kind -----------------------------------------------------------

EXPECTED = {
    "valid": ("VALID", None),
    "brand": ("VALID", None),
    "forged": ("INVALID", "PASSPORT_SIG_INVALID"),
    "wrong-key": ("INVALID", "PASSPORT_SIG_INVALID"),
    "expired": ("INVALID", "PASSPORT_EXPIRED"),
    # The VVP-Identity carries the same future iat: refused before the PASSporT is read.
    "future": ("INVALID", "VVP_IDENTITY_INVALID"),
    "unknown-signer": ("INDETERMINATE", "KERI_RESOLUTION_FAILED"),
    "wrong-number": ("INVALID", "CONTEXT_MISMATCH"),
    "indeterminate": ("INDETERMINATE", "DOSSIER_FETCH_FAILED"),
    "warning": ("WARNING", None),
    "delegated": ("VALID", None),
}


def test_every_kind_has_an_expectation() -> None:
    assert set(EXPECTED) == set(KINDS)


@pytest.mark.parametrize("kind", sorted(EXPECTED))
def test_each_kind_gets_its_verdict(kind: str) -> None:
    status, code = EXPECTED[kind]
    resp = run(kind)
    assert tuple(resp) == RESPONSE_KEYS  # every contract key, nothing else
    assert resp["overall_status"] == status
    if code is None:
        assert resp["errors"] is None
    else:
        assert codes(resp)[0] == code
        err = resp["errors"][0]
        assert set(err) == {"code", "message", "recoverable"}
        assert err["recoverable"] is (status == "INDETERMINATE")
    assert resp["certainty"] == {"VALID": "full", "INDETERMINATE": "partial"}.get(status, "none")
    assert resp["revocation_pending"] is False and resp["cache_hit"] is False
    # As the verifier: signer_aid only once the signature verified against the signer's key.
    verified = kind in ("valid", "brand", "wrong-number", "indeterminate", "warning", "delegated")
    expected_signer = aid_from_oobi(mint(kind, ORIG, DEST, now=NOW).kid) if verified else None
    assert resp["signer_aid"] == expected_signer


def test_valid_verdict_claim_tree_matches_contract() -> None:
    resp = run("valid")
    root = resp["claims"][0]
    assert root["name"] == "caller_authorised" and root["status"] == "VALID"
    names = [(c["required"], c["node"]["name"]) for c in root["children"]]
    assert names == [
        (True, "passport_verified"),
        (True, "dossier_verified"),
        (True, "authorization_valid"),
        (False, "context_aligned"),
        (False, "vetter_constraints_valid"),
    ]
    assert [c["node"]["name"] for c in claim(resp, "dossier_verified")["children"]] == [
        "chain_verified",
        "revocation_clear",
    ]
    assert [c["node"]["name"] for c in claim(resp, "authorization_valid")["children"]] == [
        "party_authorized",
        "tn_rights_valid",
    ]
    for node in (root, claim(resp, "chain_verified")):
        assert set(node) == {"name", "status", "reasons", "evidence", "children"}
    assert resp["brand_name"] is None and resp["vetter_warning_reason"] is None
    (vc,) = resp["vetter_constraints"].values()
    assert vc["is_authorized"] is True


def test_brand_kind_fills_brand_fields_and_required_claim() -> None:
    resp = run("brand")
    assert resp["brand_name"] == "Acme Bank"
    assert resp["brand_logo_url"] == "https://brand.demo.example/acme.png"
    assert resp["brand_logo_hash"] == DEMO_LOGO_HASH
    (brand,) = [c for c in resp["claims"][0]["children"] if c["node"]["name"] == "brand_verified"]
    assert brand["required"] is True and brand["node"]["status"] == "VALID"


def test_warning_kind_sets_reason_and_unauthorised_vetter() -> None:
    resp = run("warning")
    assert resp["vetter_warning_reason"] == "vetter_not_authorised_for_jurisdiction"
    (vc,) = resp["vetter_constraints"].values()
    assert vc["is_authorized"] is False
    # The failed optional claim must not spoil the root.
    assert resp["claims"][0]["status"] == "VALID"


def test_invalid_required_child_propagates_to_parent_and_root() -> None:
    resp = run("forged")
    assert claim(resp, "passport_verified")["status"] == "INVALID"
    assert resp["claims"][0]["status"] == "INVALID"
    # As the verifier: a fatal PASSporT failure skips the dossier.
    assert claim(resp, "dossier_verified")["status"] == "INDETERMINATE"
    assert claim(resp, "dossier_verified")["reasons"] == [
        "Skipped due to passport verification failure"
    ]


def test_indeterminate_grandchild_propagates_through_dossier() -> None:
    resp = run("indeterminate")
    assert claim(resp, "chain_verified")["status"] == "INDETERMINATE"
    assert claim(resp, "dossier_verified")["status"] == "INDETERMINATE"
    assert claim(resp, "authorization_valid")["status"] == "INDETERMINATE"
    assert resp["claims"][0]["status"] == "INDETERMINATE"
    assert claim(resp, "passport_verified")["status"] == "VALID"


def test_card_with_unreachable_dossier_is_invalid_brand_failure() -> None:
    m = mint("indeterminate", ORIG, DEST, now=NOW)
    # The indeterminate dossier, but with a card, properly signed.
    pp = parse_passport(m.passport_jwt)
    jwt = sign_jwt(pp.header, {**pp.payload, "card": list(DEMO_CARD)}, DEMO_ISSUER)
    body = body_for(m)
    body["passport_jwt"] = jwt
    resp = verify(m.vvp_identity, body, TRUSTED, float(NOW))
    assert resp["overall_status"] == "INVALID"
    assert codes(resp) == ["DOSSIER_FETCH_FAILED", "BRAND_CREDENTIAL_INVALID"]
    assert resp["brand_name"] is None


def test_missing_sip_context_is_an_indeterminate_optional_claim() -> None:
    # context_aligned is optional (the verifier's CONTEXT_ALIGNMENT_REQUIRED defaults to
    # false): without a SIP context the claim is INDETERMINATE and the verdict stays VALID.
    m = mint("valid", ORIG, DEST, now=NOW)
    resp = verify(m.vvp_identity, body_for(m, sip=False), TRUSTED, float(NOW))
    assert resp["overall_status"] == "VALID"
    assert resp["errors"] is None
    assert claim(resp, "context_aligned")["status"] == "INDETERMINATE"
    assert claim(resp, "context_aligned")["reasons"] == ["SIP context not provided"]


def test_invite_time_too_far_from_iat_is_context_mismatch() -> None:
    m = mint("valid", ORIG, DEST, now=NOW)
    resp = verify(m.vvp_identity, body_for(m, now=NOW + 31), TRUSTED, float(NOW + 31))
    assert resp["overall_status"] == "INVALID" and codes(resp) == ["CONTEXT_MISMATCH"]
    ok = verify(m.vvp_identity, body_for(m, now=NOW + 30), TRUSTED, float(NOW + 30))
    assert ok["overall_status"] == "VALID"


def test_to_number_not_in_dest_is_context_mismatch() -> None:
    m = mint("valid", ORIG, DEST, now=NOW)
    body = body_for(m)
    body["context"]["sip"]["to_uri"] = "sip:+441923319999@carrier.example"
    assert codes(verify(m.vvp_identity, body, TRUSTED, float(NOW))) == ["CONTEXT_MISMATCH"]


def test_expiry_boundary_uses_exp_plus_skew() -> None:
    m = mint("valid", ORIG, DEST, now=NOW)
    late_ok = NOW + 600  # exp (NOW+300) + 300 s skew
    body = body_for(m, sip=False)
    assert "PASSPORT_EXPIRED" not in codes(verify(m.vvp_identity, body, TRUSTED, late_ok))
    assert "PASSPORT_EXPIRED" in codes(verify(m.vvp_identity, body, TRUSTED, late_ok + 1))


@pytest.mark.parametrize(
    ("header", "code"),
    [(None, "VVP_IDENTITY_MISSING"), ("", "VVP_IDENTITY_MISSING"), ("%%%", "VVP_IDENTITY_INVALID")],
)
def test_bad_vvp_identity_is_early_invalid(header: str | None, code: str) -> None:
    m = mint("valid", ORIG, DEST, now=NOW)
    resp = verify(header, body_for(m), TRUSTED, float(NOW))
    assert tuple(resp) == RESPONSE_KEYS
    assert resp["overall_status"] == "INVALID" and resp["claims"] is None
    assert codes(resp) == [code] and resp["certainty"] == "none"


def test_vvp_identity_without_required_field_is_invalid() -> None:
    m = mint("valid", ORIG, DEST, now=NOW)
    no_kid = b64url_encode(json.dumps({"ppt": "vvp", "evd": "http://e", "iat": NOW}).encode())
    assert codes(verify(no_kid, body_for(m), TRUSTED, float(NOW))) == ["VVP_IDENTITY_INVALID"]


@pytest.mark.parametrize("jwt", ["abc", "a.b", "a.b.c.d", "eyJ.eyJ.0B"])
def test_unparseable_passport(jwt: str) -> None:
    m = mint("valid", ORIG, DEST, now=NOW)
    body = body_for(m)
    body["passport_jwt"] = jwt
    resp = verify(m.vvp_identity, body, TRUSTED, float(NOW))
    assert codes(resp) == ["PASSPORT_PARSE_FAILED"] and resp["overall_status"] == "INVALID"


def test_forbidden_alg() -> None:
    m = mint("valid", ORIG, DEST, now=NOW)
    pp = parse_passport(m.passport_jwt)
    head = b64url_encode(json.dumps({**pp.header, "alg": "ES256"}).encode())
    with pytest.raises(VerdictError):
        parse_passport(head + m.passport_jwt[m.passport_jwt.index(".") :])
    body = body_for(m)
    body["passport_jwt"] = head + m.passport_jwt[m.passport_jwt.index(".") :]
    resp = verify(m.vvp_identity, body, TRUSTED, float(NOW))
    assert codes(resp)[0] == "PASSPORT_FORBIDDEN_ALG" and resp["overall_status"] == "INVALID"


def test_vvp_identity_iat_must_bind_to_passport_iat() -> None:
    m = mint("valid", ORIG, DEST, now=NOW)
    other = mint("valid", ORIG, DEST, now=NOW + 6)
    resp = verify(other.vvp_identity, body_for(m), TRUSTED, float(NOW))
    assert codes(resp) == ["PASSPORT_PARSE_FAILED"] and resp["overall_status"] == "INVALID"
    close = mint("valid", ORIG, DEST, now=NOW + 5)
    assert verify(close.vvp_identity, body_for(m), TRUSTED, float(NOW))["overall_status"] == "VALID"


def test_unknown_signer_becomes_valid_when_trusted() -> None:
    m = mint("unknown-signer", ORIG, DEST, now=NOW)
    trusted = trusted_keys(["vvp-demo-issuer", "vvp-demo-unknown-issuer"])
    assert verify(m.vvp_identity, body_for(m), trusted, float(NOW))["overall_status"] == "VALID"


@pytest.mark.parametrize(
    ("uri", "digits"),
    [
        ("sip:+44 (1923) 311-001@x.example", "441923311001"),
        ("tel:+1.202.555.0100;phone-context=x", "12025550100"),
        ('"Acme" <sip:+441923311001@x.example;user=phone>', "441923311001"),
        ("+441923311001", "441923311001"),
        ("sip:alice@x.example", None),
    ],
)
def test_tn_digits(uri: str, digits: str | None) -> None:
    assert tn_digits(uri) == digits
