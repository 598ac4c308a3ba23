"""The VVP verifier SIMULATOR's signature encodings and signer identifiers, judged as the
real verifier judges them (no network)."""

from __future__ import annotations

import base64
from typing import Any

import pytest

from tests.support.verifier_shapes import verify_body
from vvp_simulator.keys import (
    AID_CODES,
    SIG_CODES,
    SigningKey,
    aid_for_public_key,
    b64url_encode,
    decode_signature,
    encode_signature,
    public_key_from_aid,
    trusted_keys,
)
from vvp_simulator.passport import DEMO_ISSUER, MintedIdentity, mint
from vvp_simulator.verdict import verify

ORIG = "+441923311001"
DEST = "+441923311006"
NOW = 1_773_560_788


def body_for(m: MintedIdentity, jwt: str | None = None) -> dict[str, Any]:
    return verify_body(m, NOW, jwt)


def judge(
    m: MintedIdentity, jwt: str | None = None, trusted: dict[str, bytes] | None = None
) -> tuple[str, list[str]]:
    trust = trusted_keys(["vvp-demo-issuer"]) if trusted is None else trusted
    resp = verify(m.vvp_identity, body_for(m, jwt), trust, float(NOW))
    return resp["overall_status"], [e["code"] for e in resp["errors"] or []]


def with_signature(jwt: str, sig: str) -> str:
    return jwt.rsplit(".", 1)[0] + "." + sig


# --- signature encodings ---------------------------------------------------------------


def test_cesr_form_is_the_issuers_code_plus_plain_base64url() -> None:
    sig = bytes(range(64))
    cesr, jws = encode_signature(sig, "cesr"), encode_signature(sig, "jws")
    assert len(cesr) == 88 and cesr == "0B" + jws
    assert len(jws) == 86 and jws == base64.urlsafe_b64encode(sig).decode().rstrip("=")
    assert decode_signature(cesr) == decode_signature(jws) == sig


@pytest.mark.parametrize("form", ["cesr", "jws"])
def test_each_signature_form_is_valid(form: str) -> None:
    m = mint("valid", ORIG, DEST, now=NOW, sig_form=form)
    assert len(m.passport_jwt.rsplit(".", 1)[1]) == {"cesr": 88, "jws": 86}[form]
    assert judge(m) == ("VALID", [])


# The codes the verifier's passport.py lists, written out (not SIG_CODES: a test of the
# constant must not shrink with it).
@pytest.mark.parametrize("code", ["0A", "0B", "0C", "0D", "AA"])
def test_every_known_cesr_code_carries_the_same_signature(code: str) -> None:
    # The verifier reads 0A, 0B, 0C, 0D and AA alike: the 86 characters after the code.
    assert code in SIG_CODES
    m = mint("valid", ORIG, DEST, now=NOW, sig_form="jws")
    plain = m.passport_jwt.rsplit(".", 1)[1]
    assert judge(m, with_signature(m.passport_jwt, code + plain)) == ("VALID", [])


def test_keripy_lead_byte_form_does_not_verify() -> None:
    # keripy's own qb64 aligns the 64 bytes behind two zero bytes; the verifier decodes the
    # 86 characters after the code without them, so that form reads as another signature.
    m = mint("valid", ORIG, DEST, now=NOW, sig_form="jws")
    raw = decode_signature(m.passport_jwt.rsplit(".", 1)[1])
    keripy = "0B" + b64url_encode(b"\x00\x00" + raw)[2:]
    assert len(keripy) == 88
    assert judge(m, with_signature(m.passport_jwt, keripy)) == (
        "INVALID",
        ["PASSPORT_SIG_INVALID"],
    )


@pytest.mark.parametrize("form", ["cesr", "jws"])
def test_tampered_payload_is_a_forgery_in_either_form(form: str) -> None:
    m = mint("forged", ORIG, DEST, now=NOW, sig_form=form)
    assert judge(m) == ("INVALID", ["PASSPORT_SIG_INVALID"])


@pytest.mark.parametrize(
    ("sig", "code"),
    [
        # known code, but the 86 characters are not base64url of 64 bytes
        ("0B" + "!" * 86, "PASSPORT_PARSE_FAILED"),
        ("0B" + "A" * 40 + "!" * 46, "PASSPORT_PARSE_FAILED"),
        # not a CESR form: base64url of any length parses; a wrong length cannot verify
        ("A" * 85, "PASSPORT_PARSE_FAILED"),  # 1 more than a multiple of 4: bad padding
        ("1B" + "A" * 86, "PASSPORT_SIG_INVALID"),  # unknown code: plain base64url, 66 bytes
        ("A" * 86, "PASSPORT_SIG_INVALID"),
        ("AAAA", "PASSPORT_SIG_INVALID"),
        ("", "PASSPORT_SIG_INVALID"),  # an empty third part decodes to nothing
    ],
)
def test_signature_part_parse_and_verify_failures(sig: str, code: str) -> None:
    m = mint("valid", ORIG, DEST, now=NOW)
    assert judge(m, with_signature(m.passport_jwt, sig)) == ("INVALID", [code])


def test_decode_signature_refuses_what_the_verifier_refuses() -> None:
    with pytest.raises(ValueError):
        decode_signature("0B" + "!" * 86)
    with pytest.raises(ValueError):
        decode_signature("A" * 85)
    assert decode_signature("") == b""


def test_encode_signature_rejects_bad_input() -> None:
    with pytest.raises(ValueError):
        encode_signature(b"\x00" * 63)
    with pytest.raises(ValueError):
        encode_signature(b"\x00" * 64, "der")
    with pytest.raises(ValueError):
        mint("valid", ORIG, DEST, sig_form="der")


# --- signer identifiers ----------------------------------------------------------------


def test_b_and_d_aids_share_the_keripy_key_encoding() -> None:
    d, b = DEMO_ISSUER.aid_for("D"), DEMO_ISSUER.aid_for("B")
    assert d.startswith("D") and b.startswith("B") and len(d) == len(b) == 44
    assert d[1:] == b[1:] == b64url_encode(b"\x00" + DEMO_ISSUER.public_bytes)[1:]
    for aid in (d, b):
        assert public_key_from_aid(aid) == DEMO_ISSUER.public_bytes
    assert aid_for_public_key(DEMO_ISSUER.public_bytes, "B") == b


@pytest.mark.parametrize(
    "bad",
    ["", "E" + "A" * 43, "D" + "A" * 42, "B" + "A" * 44, "D" + "_" * 43, "1AAA" + "A" * 40],
)
def test_public_key_from_aid_refuses_other_identifiers(bad: str) -> None:
    with pytest.raises(ValueError):
        public_key_from_aid(bad)
    with pytest.raises(ValueError):
        trusted_keys(aids=[bad])


def test_aid_code_must_be_d_or_b() -> None:
    assert AID_CODES == ("D", "B")
    with pytest.raises(ValueError):
        aid_for_public_key(DEMO_ISSUER.public_bytes, "E")


@pytest.mark.parametrize("code", ["D", "B"])
def test_each_aid_form_is_valid_for_a_trusted_seed(code: str) -> None:
    m = mint("valid", ORIG, DEST, now=NOW, aid_code=code)
    assert f"/oobi/{code}" in m.kid
    assert judge(m) == ("VALID", [])
    resp = verify(m.vvp_identity, body_for(m), trusted_keys(["vvp-demo-issuer"]), float(NOW))
    assert resp["signer_aid"] == DEMO_ISSUER.aid_for(code)


@pytest.mark.parametrize("code", ["D", "B"])
def test_trusting_an_aid_trusts_that_identifier_only(code: str) -> None:
    other = "B" if code == "D" else "D"
    trusted = trusted_keys(aids=[DEMO_ISSUER.aid_for(code)])
    assert set(trusted) == {DEMO_ISSUER.aid_for(code)}
    assert judge(mint("valid", ORIG, DEST, now=NOW, aid_code=code), trusted=trusted) == (
        "VALID",
        [],
    )
    assert judge(mint("valid", ORIG, DEST, now=NOW, aid_code=other), trusted=trusted) == (
        "INDETERMINATE",
        ["KERI_RESOLUTION_FAILED"],
    )


def test_a_seed_is_trusted_under_both_aids() -> None:
    key = SigningKey.from_seed_text("vvp-demo-issuer")
    assert trusted_keys(["vvp-demo-issuer"]) == {
        key.aid_for("D"): key.public_bytes,
        key.aid_for("B"): key.public_bytes,
    }
