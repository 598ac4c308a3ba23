"""Unit tests for vvp_helper.sip.identity: decoding, extraction from SIP headers, pre-check."""

from __future__ import annotations

import base64
import contextlib
import json
from dataclasses import replace

import pytest
from hypothesis import given
from hypothesis import strategies as st

from vvp_helper.errors import IdentityDecodeError
from vvp_helper.sip.identity import (
    Found,
    Missing,
    PrecheckSettings,
    Undecodable,
    decode_passport,
    decode_vvp_identity,
    extract,
    precheck,
)

NOW = 1_773_560_788
KID = "https://witness.example/oobi/EAIDsigner/controller"
EVD = "https://dossier.example/dossier/ESAIDdossier"
ORIG = "+441923311001"
DEST = "+441923311006"
# CESR Ed25519 signature shape: '0B' + 86 base64url characters; never checked here.
SIG = "0B" + "A" * 86


def b64(data: object) -> str:
    raw = json.dumps(data, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def make_header(**changes: object) -> dict[str, object]:
    header: dict[str, object] = {"alg": "EdDSA", "ppt": "vvp", "kid": KID, "typ": "passport"}
    return _apply(header, changes)


def make_payload(**changes: object) -> dict[str, object]:
    payload: dict[str, object] = {
        "iat": NOW,
        "exp": NOW + 300,
        "orig": {"tn": [ORIG]},
        "dest": {"tn": [DEST]},
        "evd": EVD,
        "card": ["ORG:Acme"],
    }
    return _apply(payload, changes)


def _apply(base: dict[str, object], changes: dict[str, object]) -> dict[str, object]:
    # A change of None deletes the key, so tests can build "field absent" cases.
    for key, value in changes.items():
        if value is None:
            base.pop(key, None)
        else:
            base[key] = value
    return base


def make_jwt(
    header: dict[str, object] | None = None, payload: dict[str, object] | None = None
) -> str:
    return f"{b64(header or make_header())}.{b64(payload or make_payload())}.{SIG}"


def make_vvp_identity(**changes: object) -> str:
    data: dict[str, object] = {"ppt": "vvp", "kid": KID, "evd": EVD, "iat": NOW, "exp": NOW + 300}
    return b64(_apply(data, changes))


def identity_header(jwt: str, params: str = f";info=<{KID}>;alg=EdDSA;ppt=vvp") -> str:
    return f"{jwt}{params}"


# ----------------------------------------------------------------------------- VVP-Identity


def test_decode_vvp_identity_valid() -> None:
    value = decode_vvp_identity(make_vvp_identity())
    assert (value.ppt, value.kid, value.evd, value.iat, value.exp) == (
        "vvp",
        KID,
        EVD,
        NOW,
        NOW + 300,
    )
    assert value.exp_present


def test_decode_vvp_identity_accepts_padding_and_whitespace() -> None:
    raw = json.dumps({"ppt": "vvp", "kid": KID, "evd": EVD, "iat": NOW}).encode()
    padded = base64.urlsafe_b64encode(raw).decode()
    assert padded.endswith("=")
    assert decode_vvp_identity(f"  {padded} ").iat == NOW


def test_decode_vvp_identity_exp_defaults_to_iat_plus_300() -> None:
    value = decode_vvp_identity(make_vvp_identity(exp=None))
    assert value.exp == NOW + 300
    assert not value.exp_present


@pytest.mark.parametrize(
    "value",
    [
        "",
        "!!!notbase64",
        "a",  # a length no base64 can have
        b64([1, 2]),
        base64.urlsafe_b64encode(b"\xff\xfe").decode(),
        base64.urlsafe_b64encode(b"{not json").decode(),
        make_vvp_identity(ppt="shaken"),
        make_vvp_identity(ppt=None),
        make_vvp_identity(kid=None),
        make_vvp_identity(kid=""),
        make_vvp_identity(kid="   "),
        make_vvp_identity(evd=None),
        make_vvp_identity(evd=42),
        make_vvp_identity(kid="ftp://w.example/oobi"),
        make_vvp_identity(evd="https://"),
        make_vvp_identity(kid="https://w.example/a b"),
        make_vvp_identity(kid="http://[::1"),
        make_vvp_identity(iat=None),
        make_vvp_identity(iat=True),
        make_vvp_identity(iat="1773560788"),
        make_vvp_identity(iat=1.5),
        make_vvp_identity(iat=-1),
        make_vvp_identity(exp=False),
        make_vvp_identity(exp="soon"),
        base64.urlsafe_b64encode(b'{"ppt":"vvp","iat":NaN}').decode(),
        make_vvp_identity(pad="x" * 4000),
    ],
)
def test_decode_vvp_identity_rejects(value: str) -> None:
    with pytest.raises(IdentityDecodeError) as info:
        decode_vvp_identity(value)
    assert info.value.code == "VVP_IDENTITY_INVALID"
    assert info.value.message


def test_decode_vvp_identity_rejects_explicit_null_exp() -> None:
    raw = json.dumps({"ppt": "vvp", "kid": KID, "evd": EVD, "iat": NOW, "exp": None})
    with pytest.raises(IdentityDecodeError):
        decode_vvp_identity(base64.urlsafe_b64encode(raw.encode()).decode())


# ----------------------------------------------------------------------------- PASSporT


def test_decode_passport_valid() -> None:
    jwt = make_jwt()
    passport = decode_passport(jwt)
    assert passport.jwt == jwt
    assert passport.alg == "EdDSA"
    assert passport.kid == KID
    assert (passport.iat, passport.exp) == (NOW, NOW + 300)
    assert passport.orig == ORIG
    assert passport.dest == (DEST,)
    assert passport.evd == EVD
    assert passport.signature == SIG
    assert passport.header["typ"] == "passport"
    assert passport.payload["card"] == ["ORG:Acme"]


def test_decode_passport_optional_fields_absent() -> None:
    passport = decode_passport(make_jwt(make_header(typ=None), make_payload(exp=None, card=None)))
    assert passport.exp is None
    assert "typ" not in passport.header


# What the real verifier's parser refuses (verifier-api.md), one case per rule, with the
# code it gives. A PASSporT that reaches the verifier with one of these got an HTTP 500
# from it (the call fell to "error"): the pre-check must find every one of them itself.
VERIFIER_PARSER_REFUSES: list[tuple[str, str, str]] = [
    ("typ not passport/JWT", make_jwt(make_header(typ="jwt+passport")), "PASSPORT_PARSE_FAILED"),
    ("typ lower-case jwt", make_jwt(make_header(typ="jwt")), "PASSPORT_PARSE_FAILED"),
    ("header without kid", make_jwt(make_header(kid=None)), "PASSPORT_PARSE_FAILED"),
    ("kid not a string", make_jwt(make_header(kid=["x"])), "PASSPORT_PARSE_FAILED"),
    ("kid empty", make_jwt(make_header(kid="")), "PASSPORT_PARSE_FAILED"),
    ("ppt not vvp", make_jwt(make_header(ppt="VVP")), "PASSPORT_PARSE_FAILED"),
    ("alg missing", make_jwt(make_header(alg=None)), "PASSPORT_PARSE_FAILED"),
    ("alg none", make_jwt(make_header(alg="none")), "PASSPORT_FORBIDDEN_ALG"),
    ("alg ES256", make_jwt(make_header(alg="ES256")), "PASSPORT_FORBIDDEN_ALG"),
    ("iat missing", make_jwt(payload=make_payload(iat=None)), "PASSPORT_PARSE_FAILED"),
    ("iat a float", make_jwt(payload=make_payload(iat=float(NOW))), "PASSPORT_PARSE_FAILED"),
    ("orig not an object", make_jwt(payload=make_payload(orig=[ORIG])), "PASSPORT_PARSE_FAILED"),
    ("dest not an object", make_jwt(payload=make_payload(dest="x")), "PASSPORT_PARSE_FAILED"),
    ("no evd, no attest", make_jwt(payload=make_payload(evd=None)), "PASSPORT_PARSE_FAILED"),
    ("evd empty", make_jwt(payload=make_payload(evd="")), "PASSPORT_PARSE_FAILED"),
    ("evd blank", make_jwt(payload=make_payload(evd="  ")), "PASSPORT_PARSE_FAILED"),
    (
        "attest.creds[0] without evd: prefix",
        make_jwt(payload=make_payload(evd=None, attest={"creds": [EVD]})),
        "PASSPORT_PARSE_FAILED",
    ),
    (
        "evd: only in attest.creds[1]",
        make_jwt(payload=make_payload(evd=None, attest={"creds": ["x", "evd:" + EVD]})),
        "PASSPORT_PARSE_FAILED",
    ),
    (
        "attest not an object",
        make_jwt(payload=make_payload(evd=None, attest=["evd:" + EVD])),
        "PASSPORT_PARSE_FAILED",
    ),
    (
        "CESR signature with unknown code",
        make_jwt().replace(SIG, "1B" + "A" * 86),
        "PASSPORT_PARSE_FAILED",
    ),
    ("signature 87 characters", make_jwt().replace(SIG, "A" * 87), "PASSPORT_PARSE_FAILED"),
    ("signature 85 characters", make_jwt().replace(SIG, "A" * 85), "PASSPORT_PARSE_FAILED"),
    ("signature 64 characters", make_jwt().replace(SIG, "A" * 64), "PASSPORT_PARSE_FAILED"),
    ("signature with padding", make_jwt().replace(SIG, "A" * 86 + "=="), "PASSPORT_PARSE_FAILED"),
    ("signature not base64url", make_jwt().replace(SIG, "A" * 85 + "+"), "PASSPORT_PARSE_FAILED"),
]


@pytest.mark.parametrize(
    ("jwt", "code"),
    [pytest.param(jwt, code, id=name) for name, jwt, code in VERIFIER_PARSER_REFUSES],
)
def test_decode_passport_refuses_what_the_verifier_parser_refuses(jwt: str, code: str) -> None:
    with pytest.raises(IdentityDecodeError) as info:
        decode_passport(jwt)
    assert info.value.code == code


@pytest.mark.parametrize(
    ("jwt", "code"),
    [pytest.param(jwt, code, id=name) for name, jwt, code in VERIFIER_PARSER_REFUSES],
)
def test_extract_refuses_what_the_verifier_parser_refuses(jwt: str, code: str) -> None:
    # With a P-VVP-Identity that supplies the kid and evd, as a caller would send it.
    for fields in (
        ([identity_header(jwt)], [make_vvp_identity()], []),
        ([], [make_vvp_identity()], [jwt]),
    ):
        result = extract(*fields)
        assert isinstance(result, Undecodable), fields
        assert result.code == code


@pytest.mark.parametrize("typ", ["passport", "JWT", None, 7])
def test_decode_passport_typ_the_verifier_takes(typ: object) -> None:
    header = make_header(typ=typ) if typ is not None else make_header(typ=None)
    decode_passport(make_jwt(header))


@pytest.mark.parametrize("code", ["0A", "0B", "0C", "0D", "AA"])
def test_decode_passport_accepts_cesr_signature_codes(code: str) -> None:
    sig = code + "x" * 86
    assert decode_passport(make_jwt().replace(SIG, sig)).signature == sig


def test_decode_passport_accepts_plain_jws_signature() -> None:
    sig = base64.urlsafe_b64encode(bytes(range(64))).decode().rstrip("=")
    assert len(sig) == 86
    assert decode_passport(make_jwt().replace(SIG, sig)).signature == sig


def test_decode_passport_evidence_from_attest_creds() -> None:
    jwt = make_jwt(payload=make_payload(evd=None, attest={"creds": ["evd:" + EVD, "x"]}))
    assert decode_passport(jwt).evd == EVD


def test_extract_synthesis_uses_attest_creds_evidence() -> None:
    jwt = make_jwt(payload=make_payload(evd=None, attest={"creds": ["evd:" + EVD]}))
    result = extract([identity_header(jwt)], [], [])
    assert isinstance(result, Found)
    assert decode_vvp_identity(result.vvp_identity).evd == EVD


def test_extract_unreadable_identity_with_p_vvp_identity_is_a_parse_failure() -> None:
    # A PASSporT was sent, it cannot be read: not "missing".
    for garbage in ("complete garbage", "abc.def.ghi", "<>;ppt=vvp"):
        result = extract([garbage], [make_vvp_identity()], [])
        assert isinstance(result, Undecodable), garbage
        assert result.code == "PASSPORT_PARSE_FAILED", garbage


def test_decode_passport_several_destinations() -> None:
    passport = decode_passport(make_jwt(payload=make_payload(dest={"tn": [DEST, "+15550001"]})))
    assert passport.dest == (DEST, "+15550001")


@pytest.mark.parametrize("alg", ["ES256", "none", "RS256", "eddsa"])
def test_decode_passport_forbidden_alg(alg: str) -> None:
    with pytest.raises(IdentityDecodeError) as info:
        decode_passport(make_jwt(make_header(alg=alg)))
    assert info.value.code == "PASSPORT_FORBIDDEN_ALG"


@pytest.mark.parametrize(
    "jwt",
    [
        "",
        "a.b",
        "a.b.c.d",
        make_jwt() + ".x",
        make_jwt().rsplit(".", 1)[0] + ".",  # empty signature
        make_jwt().rsplit(".", 1)[0] + ".sig+/",
        make_jwt(make_header(alg=None)),
        make_jwt(make_header(alg=7)),
        make_jwt(make_header(ppt="shaken")),
        make_jwt(make_header(ppt=None)),
        make_jwt(make_header(kid=5)),
        make_jwt(payload=make_payload(iat=None)),
        make_jwt(payload=make_payload(iat=True)),
        make_jwt(payload=make_payload(iat="now")),
        make_jwt(payload=make_payload(exp=1.0)),
        make_jwt(payload=make_payload(orig=None)),
        make_jwt(payload=make_payload(orig={"tn": ORIG})),
        make_jwt(payload=make_payload(orig={"tn": [ORIG, DEST]})),
        make_jwt(payload=make_payload(orig={"tn": []})),
        make_jwt(payload=make_payload(orig={"tn": [1]})),
        make_jwt(payload=make_payload(dest={"tn": []})),
        make_jwt(payload=make_payload(dest={"tn": [DEST, 5]})),
        make_jwt(payload=make_payload(dest=[DEST])),
        make_jwt(payload=make_payload(evd=["x"])),
        make_jwt(payload=make_payload(card="ORG:Acme")),
        make_jwt(payload=make_payload(card=["ORG:Acme", 1])),
        f"{b64([1])}.{b64(make_payload())}.{SIG}",
        f"{b64(make_header())}.{b64('text')}.{SIG}",
        make_jwt(payload=make_payload(pad="x" * 20000)),
        f"{b64(make_header())}.{'W' * 3000}{']' * 3000}.{SIG}",
    ],
)
def test_decode_passport_parse_failed(jwt: str) -> None:
    with pytest.raises(IdentityDecodeError) as info:
        decode_passport(jwt)
    assert info.value.code == "PASSPORT_PARSE_FAILED"


def test_decode_passport_deep_nesting_is_a_parse_error() -> None:
    deep = base64.urlsafe_b64encode(b"[" * 12000).decode().rstrip("=")
    with pytest.raises(IdentityDecodeError) as info:
        decode_passport(f"{b64(make_header())}.{deep}.{SIG}")
    assert info.value.code == "PASSPORT_PARSE_FAILED"


def test_error_messages_do_not_echo_the_jwt() -> None:
    jwt = make_jwt(make_header(alg="ES256" + "x" * 200))
    with pytest.raises(IdentityDecodeError) as info:
        decode_passport(jwt)
    assert jwt not in str(info.value)
    assert len(info.value.message) < 100


JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=12,
)
FIELD_NAMES = st.sampled_from(
    ["alg", "ppt", "kid", "typ", "iat", "exp", "orig", "dest", "evd", "card", "tn"]
)
JSON_OBJECT = st.dictionaries(FIELD_NAMES | st.text(max_size=5), JSON, max_size=8)


@given(st.text())
def test_decode_functions_raise_only_identity_decode_error_on_text(value: str) -> None:
    for decode in (decode_vvp_identity, decode_passport):
        with contextlib.suppress(IdentityDecodeError):
            decode(value)


@given(JSON_OBJECT, JSON_OBJECT)
def test_decode_functions_raise_only_identity_decode_error_on_json(
    header: dict[str, object], payload: dict[str, object]
) -> None:
    for value in (b64(header), b64(payload)):
        with contextlib.suppress(IdentityDecodeError):
            decode_vvp_identity(value)
    with contextlib.suppress(IdentityDecodeError):
        decode_passport(f"{b64(header)}.{b64(payload)}.{SIG}")


# ----------------------------------------------------------------------------- extract


def test_extract_nothing_is_missing() -> None:
    assert extract([], [], []) == Missing(shaken=False)
    assert extract(["  "], [""], []) == Missing(shaken=False)


@pytest.mark.parametrize(
    "params",
    [";info=<https://cert.example/x5u.pem>;alg=ES256;ppt=shaken", ";ppt=shaken", ";alg=ES256"],
)
def test_extract_shaken_is_missing_with_flag(params: str) -> None:
    shaken_jwt = make_jwt(make_header(alg="ES256", ppt="shaken"))
    assert extract([shaken_jwt + params], [], []) == Missing(shaken=True)


def test_extract_shaken_recognised_from_jwt_header_without_params() -> None:
    shaken_jwt = make_jwt(make_header(alg="ES256", ppt="shaken"))
    assert extract([shaken_jwt], [], []) == Missing(shaken=True)


def test_extract_other_passport_types_are_not_vvp() -> None:
    div = make_jwt(make_header(ppt="div"))
    assert extract([f"{div};ppt=div"], [], []) == Missing(shaken=False)


def test_extract_rfc8224_identity_only_synthesises_vvp_identity() -> None:
    jwt = make_jwt()
    result = extract([identity_header(jwt)], [], [])
    assert isinstance(result, Found)
    assert result.source == "identity"
    assert result.passport.jwt == jwt
    assert "=" not in result.vvp_identity
    decoded = json.loads(base64.urlsafe_b64decode(result.vvp_identity + "=="))
    assert decoded == {"ppt": "vvp", "kid": KID, "evd": EVD, "iat": NOW, "exp": NOW + 300}
    assert list(decoded) == ["ppt", "kid", "evd", "iat", "exp"]


def test_extract_synthesis_omits_exp_when_passport_has_none() -> None:
    result = extract([identity_header(make_jwt(payload=make_payload(exp=None)))], [], [])
    assert isinstance(result, Found)
    assert not decode_vvp_identity(result.vvp_identity).exp_present


def test_extract_without_kid_or_evd_is_a_parse_failure() -> None:
    # The verifier's parser refuses both, whatever the Identity's info parameter says.
    no_kid = make_jwt(make_header(kid=None))
    no_evd = make_jwt(payload=make_payload(evd=None))
    for jwt in (no_kid, no_evd):
        result = extract([f"<{jwt}>;info=<{KID}>;ppt=vvp"], [], [])
        assert isinstance(result, Undecodable)
        assert result.code == "PASSPORT_PARSE_FAILED"


def test_extract_synthesis_validates_kid_url() -> None:
    jwt = make_jwt(make_header(kid="not-a-url"))
    result = extract([identity_header(jwt)], [], [])
    assert isinstance(result, Undecodable)
    assert result.code == "VVP_IDENTITY_INVALID"


def test_extract_identity_without_ppt_param_uses_jwt_header() -> None:
    result = extract([f"<{make_jwt()}>"], [], [])
    assert isinstance(result, Found)
    assert result.source == "identity"


def test_extract_p_vvp_headers() -> None:
    jwt = make_jwt()
    vvp_identity = make_vvp_identity()
    result = extract([], [f"  {vvp_identity}  "], [f" {jwt} "])
    assert result == Found(
        passport=decode_passport(jwt), vvp_identity=vvp_identity, source="p-vvp-passport"
    )


def test_extract_p_vvp_identity_is_sent_as_given_with_identity_header() -> None:
    vvp_identity = make_vvp_identity(exp=None)
    result = extract([identity_header(make_jwt())], [vvp_identity], [])
    assert isinstance(result, Found)
    assert result.vvp_identity == vvp_identity
    assert result.source == "identity"


def test_extract_identical_duplicates_are_fine() -> None:
    jwt = make_jwt()
    result = extract([identity_header(jwt), f"<{jwt}>;ppt=vvp"], [], [jwt, jwt])
    assert isinstance(result, Found)
    assert result.source == "identity"


def test_extract_conflicting_passports() -> None:
    a = make_jwt()
    b = make_jwt(payload=make_payload(iat=NOW + 1))
    cases: list[tuple[list[str], list[str], list[str]]] = [
        ([identity_header(a)], [], [b]),
        ([], [make_vvp_identity()], [a, b]),
    ]
    for fields in cases:
        assert extract(*fields) == Undecodable("PASSPORT_PARSE_FAILED", "conflicting PASSporTs")


def test_extract_conflicting_p_vvp_identity() -> None:
    result = extract([], [make_vvp_identity(), make_vvp_identity(iat=NOW + 1)], [make_jwt()])
    assert isinstance(result, Undecodable)
    assert result.code == "VVP_IDENTITY_INVALID"


def test_extract_p_vvp_identity_without_passport() -> None:
    result = extract([], [make_vvp_identity()], [])
    assert isinstance(result, Undecodable)
    assert result.code == "PASSPORT_MISSING"


def test_extract_p_vvp_identity_without_passport_but_with_shaken() -> None:
    shaken = make_jwt(make_header(alg="ES256", ppt="shaken")) + ";ppt=shaken"
    result = extract([shaken], [make_vvp_identity()], [])
    assert isinstance(result, Undecodable)
    assert result.code == "PASSPORT_MISSING"


def test_extract_broken_p_vvp_identity() -> None:
    result = extract([], ["garbage"], [make_jwt()])
    assert isinstance(result, Undecodable)
    assert result.code == "VVP_IDENTITY_INVALID"


def test_extract_identity_alg_param_not_eddsa_on_vvp() -> None:
    result = extract([f"{make_jwt()};alg=ES256;ppt=vvp"], [], [])
    assert isinstance(result, Undecodable)
    assert result.code == "PASSPORT_FORBIDDEN_ALG"


def test_extract_vvp_identity_with_es256_jwt_header() -> None:
    result = extract([f"{make_jwt(make_header(alg='ES256'))};ppt=vvp"], [], [])
    assert isinstance(result, Undecodable)
    assert result.code == "PASSPORT_FORBIDDEN_ALG"


def test_extract_broken_vvp_identity_passport() -> None:
    broken = make_jwt(payload=make_payload(orig={"tn": []}))
    result = extract([identity_header(broken)], [], [])
    assert isinstance(result, Undecodable)
    assert result.code == "PASSPORT_PARSE_FAILED"
    assert broken not in result.message


def test_extract_broken_p_vvp_passport() -> None:
    result = extract([], [make_vvp_identity()], ["not.a.jwt"])
    assert isinstance(result, Undecodable)
    assert result.code == "PASSPORT_PARSE_FAILED"


def test_extract_unreadable_identity_alone_is_undecodable() -> None:
    result = extract(["complete garbage"], [], [])
    assert isinstance(result, Undecodable)
    assert result.code == "PASSPORT_PARSE_FAILED"
    result = extract(["abc.def.ghi"], [], [])  # no ppt param and an unreadable JWT header
    assert isinstance(result, Undecodable)


def test_extract_unreadable_identity_ignored_when_vvp_found() -> None:
    result = extract(["complete garbage", identity_header(make_jwt())], [], [])
    assert isinstance(result, Found)


def test_extract_several_values_in_one_field() -> None:
    shaken = make_jwt(make_header(alg="ES256", ppt="shaken"))
    field = f"{shaken};info=<https://cert.example/a,b>;ppt=shaken , {identity_header(make_jwt())}"
    result = extract([field], [], [])
    assert isinstance(result, Found)
    assert result.passport.alg == "EdDSA"


def test_extract_bounds_the_number_of_values() -> None:
    result = extract([identity_header(make_jwt())] * 20, [], [])
    assert isinstance(result, Undecodable)


def test_extract_wrapped_p_vvp_passport() -> None:
    result = extract([], [make_vvp_identity()], [f"<{make_jwt()}>"])
    assert isinstance(result, Found)


TEXTS = st.lists(st.text(max_size=200), max_size=3)
PIECES = st.lists(
    st.sampled_from(
        [
            make_jwt(),
            identity_header(make_jwt()),
            make_vvp_identity(),
            ";ppt=vvp",
            ";alg=ES256",
            "<",
            ">",
            ",",
            '"',
            " ",
            "garbage",
        ]
    ),
    max_size=4,
).map("".join)


@given(TEXTS, TEXTS, TEXTS)
def test_extract_never_raises_on_arbitrary_text(
    identity: list[str], p_vvp_identity: list[str], p_vvp_passport: list[str]
) -> None:
    result = extract(identity, p_vvp_identity, p_vvp_passport)
    assert isinstance(result, Missing | Undecodable | Found)


@given(st.lists(PIECES, max_size=3), st.lists(PIECES, max_size=2), st.lists(PIECES, max_size=2))
def test_extract_never_raises_on_mixed_valid_pieces(
    identity: list[str], p_vvp_identity: list[str], p_vvp_passport: list[str]
) -> None:
    result = extract(identity, p_vvp_identity, p_vvp_passport)
    assert isinstance(result, Missing | Undecodable | Found)


# ----------------------------------------------------------------------------- precheck

FROM = f"<sip:{ORIG}@carrier.example>;tag=1"
TO = f"sip:{DEST}@carrier.example"
DEFAULTS = PrecheckSettings()


def found(
    header: dict[str, object] | None = None,
    payload: dict[str, object] | None = None,
    vvp_identity: str | None = None,
) -> Found:
    return Found(
        passport=decode_passport(make_jwt(header, payload)),
        vvp_identity=make_vvp_identity() if vvp_identity is None else vvp_identity,
        source="identity",
    )


def codes(
    item: Found,
    now: float = NOW + 1,
    settings: PrecheckSettings = DEFAULTS,
    from_uri: str = FROM,
    to_uri: str = TO,
) -> list[str]:
    failures = precheck(item, now=now, from_uri=from_uri, to_uri=to_uri, settings=settings)
    for failure in failures:
        assert item.passport.jwt not in failure.message
    return [failure.code for failure in failures]


def test_precheck_good() -> None:
    assert codes(found()) == []
    assert codes(found(), settings=replace(DEFAULTS, check_numbers=True)) == []


def test_precheck_iat_in_future() -> None:
    item = found()
    assert codes(item, now=NOW - 300) == []
    assert codes(item, now=NOW - 301) == ["PASSPORT_EXPIRED"]


def test_precheck_expired_after_exp_plus_skew() -> None:
    item = found()
    assert codes(item, now=NOW + 600) == []
    assert codes(item, now=NOW + 600.5) == ["PASSPORT_EXPIRED"]


def test_precheck_expired_without_exp_uses_iat_plus_300() -> None:
    item = found(payload=make_payload(exp=None), vvp_identity=make_vvp_identity(exp=None))
    assert codes(item, now=NOW + 600) == []
    assert codes(item, now=NOW + 601) == ["PASSPORT_EXPIRED"]


def test_precheck_skew_setting_is_used() -> None:
    settings = replace(DEFAULTS, max_skew_s=10)
    assert codes(found(), now=NOW + 311, settings=settings) == ["PASSPORT_EXPIRED"]
    assert codes(found(), now=NOW - 11, settings=settings) == ["PASSPORT_EXPIRED"]


def test_precheck_check_expiry_off() -> None:
    settings = replace(DEFAULTS, check_expiry=False)
    assert codes(found(), now=NOW + 10_000, settings=settings) == []
    assert codes(found(), now=NOW - 10_000, settings=settings) == []


def test_precheck_validity_window() -> None:
    item = found(payload=make_payload(exp=NOW + 301), vvp_identity=make_vvp_identity(exp=NOW + 301))
    assert codes(item) == ["PASSPORT_EXPIRED"]
    assert codes(item, settings=replace(DEFAULTS, max_validity_s=301)) == []


def test_precheck_exp_not_after_iat() -> None:
    item = found(payload=make_payload(exp=NOW), vvp_identity=make_vvp_identity(exp=NOW))
    assert codes(item) == ["PASSPORT_PARSE_FAILED"]


def test_precheck_iat_drift() -> None:
    assert codes(found(vvp_identity=make_vvp_identity(iat=NOW + 5))) == []
    assert codes(found(vvp_identity=make_vvp_identity(iat=NOW - 6))) == ["PASSPORT_PARSE_FAILED"]
    relaxed = replace(DEFAULTS, max_iat_drift_s=6)
    assert codes(found(vvp_identity=make_vvp_identity(iat=NOW - 6)), settings=relaxed) == []


def test_precheck_exp_drift() -> None:
    assert codes(found(vvp_identity=make_vvp_identity(exp=NOW + 295))) == []
    assert codes(found(vvp_identity=make_vvp_identity(exp=NOW + 294))) == ["PASSPORT_PARSE_FAILED"]


def test_precheck_exp_only_in_vvp_identity() -> None:
    item = found(payload=make_payload(exp=None))
    assert codes(item) == ["PASSPORT_EXPIRED"]


def test_precheck_exp_only_in_passport_is_fine() -> None:
    assert codes(found(vvp_identity=make_vvp_identity(exp=None))) == []


def test_precheck_kid_binding() -> None:
    other = "https://witness.example/oobi/EOTHER/controller"
    assert codes(found(vvp_identity=make_vvp_identity(kid=other))) == ["PASSPORT_PARSE_FAILED"]


def test_precheck_bad_vvp_identity_value() -> None:
    assert codes(found(vvp_identity="garbage")) == ["VVP_IDENTITY_INVALID"]


def test_precheck_numbers() -> None:
    on = replace(DEFAULTS, check_numbers=True)
    item = found(payload=make_payload(dest={"tn": ["+15550001", DEST]}))
    assert codes(item, settings=on, from_uri="tel:+44-1923-311001", to_uri=TO) == []
    assert codes(item, settings=on, from_uri="sip:441923311001@h;user=phone") == []
    assert codes(item, settings=on, from_uri="sip:+441923311002@h") == ["CONTEXT_MISMATCH"]
    assert codes(item, settings=on, from_uri="sip:anonymous@h") == ["CONTEXT_MISMATCH"]
    assert codes(item, settings=on, to_uri="sip:15550001@h") == []
    assert codes(item, settings=on, to_uri="sip:+15550002@h") == ["CONTEXT_MISMATCH"]
    assert codes(item, settings=on, from_uri="sip:a@h", to_uri="sip:b@h") == [
        "CONTEXT_MISMATCH",
        "CONTEXT_MISMATCH",
    ]
    assert codes(item, from_uri="sip:+1999@h", to_uri="sip:+1888@h") == []


def test_precheck_settings_reject_negative_limits() -> None:
    with pytest.raises(ValueError):
        PrecheckSettings(max_skew_s=-1)
