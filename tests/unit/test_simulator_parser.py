"""The VVP verifier SIMULATOR refuses PASSporTs exactly as the real verifier's parser does,
with its codes, and crashes where the real one crashes when asked to (no network)."""

from __future__ import annotations

import json
from typing import Any

import pytest

from tests.support.verifier_shapes import verify_body
from vvp_simulator.keys import b64url_decode, b64url_encode, trusted_keys
from vvp_simulator.passport import DEMO_ISSUER, MintedIdentity, mint, sign_jwt
from vvp_simulator.verdict import Options, ParserCrash, parse_passport, verify

ORIG = "+441923311001"
DEST = "+441923311006"
NOW = 1_773_560_788
TRUSTED = trusted_keys(["vvp-demo-issuer"])
GOOD = mint("valid", ORIG, DEST, now=NOW)
HEADER: dict[str, Any] = parse_passport(GOOD.passport_jwt).header
PAYLOAD: dict[str, Any] = parse_passport(GOOD.passport_jwt).payload
SIG = GOOD.passport_jwt.rsplit(".", 1)[1]
DROP = object()  # marks a field to remove


def b64(data: bytes | str) -> str:
    return b64url_encode(data.encode() if isinstance(data, str) else data)


def b64json(obj: object) -> str:
    return b64(json.dumps(obj))


def changed(base: dict[str, Any], changes: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for name, value in changes.items():
        if value is DROP:
            out.pop(name, None)
        else:
            out[name] = value
    return out


def signed(header: dict[str, Any] | None = None, payload: dict[str, Any] | None = None) -> str:
    """A properly signed PASSporT with these header/payload changes."""
    return sign_jwt(changed(HEADER, header or {}), changed(PAYLOAD, payload or {}), DEMO_ISSUER)


def body(jwt: str, *, sip: bool = True) -> dict[str, Any]:
    return verify_body(None, NOW, jwt, sip=sip, numbers=(ORIG, DEST))


def judge(jwt: str, *, sip: bool = True, crash: bool = False, m: MintedIdentity = GOOD) -> Any:
    return verify(
        m.vvp_identity, body(jwt, sip=sip), TRUSTED, float(NOW), Options(parser_crash=crash)
    )


def codes(resp: dict[str, Any]) -> list[str]:
    return [e["code"] for e in resp["errors"] or []]


NOT_UTF8 = b64(b'{"alg":"\xff"}')

# (what, PASSporT, the verifier's code) for every rule of its parse_passport.
REFUSED: list[tuple[str, str, str]] = [
    ("empty", "", "PASSPORT_MISSING"),
    ("blank", "   ", "PASSPORT_MISSING"),
    ("one part", "abc", "PASSPORT_PARSE_FAILED"),
    ("two parts", "a.b", "PASSPORT_PARSE_FAILED"),
    ("four parts", GOOD.passport_jwt + ".x", "PASSPORT_PARSE_FAILED"),
    ("header bad padding", f"AAAAA.{b64json(PAYLOAD)}.{SIG}", "PASSPORT_PARSE_FAILED"),
    ("header not JSON", f"{b64('hello')}.{b64json(PAYLOAD)}.{SIG}", "PASSPORT_PARSE_FAILED"),
    ("header not UTF-8", f"{NOT_UTF8}.{b64json(PAYLOAD)}.{SIG}", "PASSPORT_PARSE_FAILED"),
    ("header a JSON array", f"{b64json([1])}.{b64json(PAYLOAD)}.{SIG}", "PASSPORT_PARSE_FAILED"),
    ("header without alg", signed(header={"alg": DROP}), "PASSPORT_PARSE_FAILED"),
    ("header alg a number", signed(header={"alg": 1}), "PASSPORT_PARSE_FAILED"),
    ("header alg none", signed(header={"alg": "none"}), "PASSPORT_FORBIDDEN_ALG"),
    ("header alg ES256", signed(header={"alg": "ES256"}), "PASSPORT_FORBIDDEN_ALG"),
    ("header without ppt", signed(header={"ppt": DROP}), "PASSPORT_PARSE_FAILED"),
    ("header ppt shaken", signed(header={"ppt": "shaken"}), "PASSPORT_PARSE_FAILED"),
    ("header without kid", signed(header={"kid": DROP}), "PASSPORT_PARSE_FAILED"),
    ("header kid blank", signed(header={"kid": " "}), "PASSPORT_PARSE_FAILED"),
    ("header typ JOSE", signed(header={"typ": "JOSE"}), "PASSPORT_PARSE_FAILED"),
    ("payload not JSON", f"{b64json(HEADER)}.{b64('x')}.{SIG}", "PASSPORT_PARSE_FAILED"),
    ("payload a JSON array", f"{b64json(HEADER)}.{b64json([])}.{SIG}", "PASSPORT_PARSE_FAILED"),
    ("payload without iat", signed(payload={"iat": DROP}), "PASSPORT_PARSE_FAILED"),
    ("payload iat a string", signed(payload={"iat": str(NOW)}), "PASSPORT_PARSE_FAILED"),
    ("payload iat a fraction", signed(payload={"iat": NOW + 0.5}), "PASSPORT_PARSE_FAILED"),
    ("payload iat true", signed(payload={"iat": True}), "PASSPORT_PARSE_FAILED"),
    ("payload orig a list", signed(payload={"orig": [ORIG]}), "PASSPORT_PARSE_FAILED"),
    ("payload dest missing", signed(payload={"dest": DROP}), "PASSPORT_PARSE_FAILED"),
    ("payload without evd", signed(payload={"evd": DROP}), "PASSPORT_PARSE_FAILED"),
    ("payload evd empty", signed(payload={"evd": ""}), "PASSPORT_PARSE_FAILED"),
    ("payload evd a number", signed(payload={"evd": 5}), "PASSPORT_PARSE_FAILED"),
    (
        "attest.creds[0] without evd: prefix",
        signed(payload={"evd": DROP, "attest": {"creds": ["http://d.example/x"]}}),
        "PASSPORT_PARSE_FAILED",
    ),
    ("orig.tn two numbers", signed(payload={"orig": {"tn": [ORIG, DEST]}}),
     "PASSPORT_PARSE_FAILED"),
    ("orig without tn", signed(payload={"orig": {}}), "PASSPORT_PARSE_FAILED"),
    ("dest.tn a string", signed(payload={"dest": {"tn": DEST}}), "PASSPORT_PARSE_FAILED"),
    ("dest.tn empty", signed(payload={"dest": {"tn": []}}), "PASSPORT_PARSE_FAILED"),
    ("dest.tn a number entry", signed(payload={"dest": {"tn": [1]}}), "PASSPORT_PARSE_FAILED"),
    ("exp a string", signed(payload={"exp": "soon"}), "PASSPORT_PARSE_FAILED"),
    ("cseq a string", signed(payload={"cseq": "1"}), "PASSPORT_PARSE_FAILED"),
    ("signature not base64url", f"{GOOD.passport_jwt.rsplit('.', 1)[0]}.0B{'!' * 86}",
     "PASSPORT_PARSE_FAILED"),
]  # fmt: skip

# Shapes the verifier's parser lets through (each then VALID, signed properly).
ACCEPTED: list[tuple[str, str]] = [
    ("typ JWT", signed(header={"typ": "JWT"})),
    ("typ absent", signed(header={"typ": DROP})),
    ("typ not a string (ignored)", signed(header={"typ": 5})),
    ("iat a whole float", signed(payload={"iat": float(NOW)})),
    ("evd only in attest.creds[0]",
     signed(payload={"evd": DROP, "attest": {"creds": ["evd:" + str(PAYLOAD["evd"])]}})),
    ("a number not in E.164 (a warning, not a refusal)",
     signed(payload={"dest": {"tn": [DEST, "01923311006"]}})),
]  # fmt: skip


@pytest.mark.parametrize(("what", "jwt", "code"), REFUSED, ids=[r[0] for r in REFUSED])
def test_each_parser_rule_gives_the_verifiers_code(what: str, jwt: str, code: str) -> None:
    # Without a SIP context the real verifier answers these with the code (no crash).
    resp = judge(jwt, sip=False)
    assert resp["overall_status"] == "INVALID"
    assert codes(resp) == [code]
    # As the verifier: a claim tree all the same, the PASSporT INVALID, the dossier skipped.
    (root,) = resp["claims"]
    passport, dossier = (c["node"] for c in root["children"][:2])
    assert passport["name"] == "passport_verified" and passport["status"] == "INVALID"
    assert passport["reasons"] == [resp["errors"][0]["message"]]
    assert dossier["reasons"] == ["Skipped due to passport verification failure"]
    assert resp["signer_aid"] is None and resp["toip_warnings"] is None


@pytest.mark.parametrize(("what", "jwt"), ACCEPTED, ids=[a[0] for a in ACCEPTED])
def test_shapes_the_parser_accepts(what: str, jwt: str) -> None:
    resp = judge(jwt)
    assert (resp["overall_status"], codes(resp)) == ("VALID", [])


@pytest.mark.parametrize(("what", "jwt", "code"), REFUSED, ids=[r[0] for r in REFUSED])
def test_parser_refusal_with_sip_context_crashes_when_asked(what: str, jwt: str, code: str) -> None:
    # The verifier's SIP-context step reads the PASSporT its parser refused: every parser
    # refusal crashes it when the request has a SIP context (observed: typ, kid, evd).
    with pytest.raises(ParserCrash):
        judge(jwt, crash=True)
    # Fault off: the code the parser meant.
    assert codes(judge(jwt)) == [code]


def test_no_crash_without_sip_context_or_after_the_parser() -> None:
    no_kid = signed(header={"kid": DROP})
    assert codes(judge(no_kid, sip=False, crash=True)) == ["PASSPORT_PARSE_FAILED"]
    # A binding failure comes after the parser: the PASSporT exists, no crash.
    other = mint("valid", ORIG, DEST, now=NOW + 10)
    resp = judge(other.passport_jwt, crash=True)
    assert codes(resp) == ["PASSPORT_PARSE_FAILED"]
    # And a good PASSporT is untouched by the switch.
    assert judge(GOOD.passport_jwt, crash=True)["overall_status"] == "VALID"


@pytest.mark.parametrize(
    ("what", "payload", "code"),
    [
        ("exp not after iat", {"exp": NOW}, "PASSPORT_PARSE_FAILED"),
        ("exp 6 s from the VVP-Identity's", {"exp": NOW + 306}, "PASSPORT_PARSE_FAILED"),
        ("exp absent, VVP-Identity exp given", {"exp": DROP}, "PASSPORT_EXPIRED"),
    ],
)
def test_binding_rules(what: str, payload: dict[str, Any], code: str) -> None:
    assert codes(judge(signed(payload=payload))) == [code]


def test_vvp_identity_ppt_must_equal_the_passports() -> None:
    ident = json.loads(b64url_decode(GOOD.vvp_identity))
    other = b64json({**ident, "ppt": "shaken"})
    resp = verify(other, body(GOOD.passport_jwt), TRUSTED, float(NOW))
    assert codes(resp) == ["PASSPORT_PARSE_FAILED"]
