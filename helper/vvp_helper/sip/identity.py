"""The VVP identity of an INVITE: decoding, extraction from SIP headers, and a local pre-check.

``extract`` turns the raw Identity / P-VVP-Identity / P-VVP-Passport fields into one of
``Missing``, ``Undecodable`` or ``Found``; ``precheck`` repeats the verifier's cheap checks
(timing, binding, numbers) so an obviously bad call is answered without a round trip.
Nothing here verifies a signature: that is the verifier's job.
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import TypeAlias
from urllib.parse import urlsplit

from vvp_helper import jsonfast
from vvp_helper.errors import IdentityDecodeError
from vvp_helper.sip import fields

__all__ = [
    "Extraction",
    "Found",
    "Missing",
    "Passport",
    "PrecheckFailure",
    "PrecheckSettings",
    "Undecodable",
    "VvpIdentityValue",
    "decode_passport",
    "decode_vvp_identity",
    "extract",
    "precheck",
]

# Bounds on caller-supplied sizes (docs/design.md "Bounded everything"), in characters.
MAX_VVP_IDENTITY_LEN = 4096
MAX_JWT_LEN = 16384
# More header values than any honest INVITE carries; beyond it we refuse to decode.
MAX_HEADER_VALUES = 16
# Spec: a PASSporT without exp is valid for iat + 300 s.
DEFAULT_VALIDITY_S = 300
# Timestamps are Unix seconds; anything outside this range cannot be a real call and would
# overflow datetime conversions downstream.
_MAX_TIMESTAMP = 2**53

_B64URL = re.compile(r"[A-Za-z0-9_\-]*={0,2}")
# The JWT header typ values the verifier's parser takes (any other string is refused).
_TYP_ALLOWED = frozenset({"passport", "JWT"})
# Signature forms the verifier's parser takes: CESR-qualified (a two-character derivation
# code, then 86 base64url characters: 88 in all) with one of the codes it knows, or plain
# base64url of the 64 Ed25519 signature bytes (the ordinary JWS form: 86 characters).
_CESR_SIG_LEN = 88
_CESR_SIG_CODES = frozenset({"0A", "0B", "0C", "0D", "AA"})
_JWS_SIG_LEN = 86
_B64URL_CHARS = re.compile(r"[A-Za-z0-9_\-]+")
# attest.creds[0] names the dossier as "evd:<url>" when the payload has no evd.
_EVD_PREFIX = "evd:"


# Builds the error a decoder raises, so one decoder serves several error codes.
_FailFactory: TypeAlias = Callable[[str], IdentityDecodeError]


@dataclass(frozen=True, slots=True)
class VvpIdentityValue:
    """A decoded VVP-Identity value. ``exp`` defaults to iat + 300 when absent."""

    ppt: str
    kid: str
    evd: str
    iat: int
    exp: int
    # The verifier treats an explicit exp differently from the default (binding rules).
    exp_present: bool


@dataclass(frozen=True, slots=True)
class Passport:
    """A decoded, structurally checked, NOT signature-verified VVP PASSporT."""

    jwt: str
    header: Mapping[str, object]
    payload: Mapping[str, object]
    signature: str
    alg: str
    kid: str
    iat: int
    exp: int | None
    orig: str
    dest: tuple[str, ...]
    #: The dossier URL: ``evd``, or ``attest.creds[0]`` without its ``evd:`` prefix.
    evd: str


@dataclass(frozen=True, slots=True)
class Missing:
    """No VVP identity at all. ``shaken``: a SHAKEN Identity was present (not for the verifier)."""

    shaken: bool = False


@dataclass(frozen=True, slots=True)
class Undecodable:
    """VVP material present but broken; ``code`` is the verifier error code it maps to."""

    code: str
    message: str


@dataclass(frozen=True, slots=True)
class Found:
    """A decodable VVP identity, ready for the verifier.

    ``vvp_identity`` goes in the verifier's ``VVP-Identity`` HTTP header; ``source`` names the
    SIP header the PASSporT came from (``identity`` or ``p-vvp-passport``).
    """

    passport: Passport
    vvp_identity: str
    source: str
    #: ``vvp_identity`` decoded, when extract() already did it: the pre-check reads it
    #: instead of decoding the same value a second time (~6 us a call).
    decoded: VvpIdentityValue | None = field(default=None, compare=False, repr=False)


Extraction: TypeAlias = Missing | Undecodable | Found


@dataclass(frozen=True, slots=True)
class PrecheckSettings:
    """Which of the verifier's checks the edge repeats locally, with the verifier's limits."""

    check_expiry: bool = True
    max_skew_s: int = 300
    max_iat_drift_s: int = 5
    max_validity_s: int = 300
    check_numbers: bool = False

    def __post_init__(self) -> None:
        for name in ("max_skew_s", "max_iat_drift_s", "max_validity_s"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must not be negative")


@dataclass(frozen=True, slots=True)
class PrecheckFailure:
    code: str
    message: str


# ---------------------------------------------------------------------------------------
# Decoding


def decode_vvp_identity(value: str) -> VvpIdentityValue:
    """Decode a VVP-Identity value (base64url JSON). Raises IdentityDecodeError."""
    if len(value) > MAX_VVP_IDENTITY_LEN:
        raise _vvp_identity_invalid("VVP-Identity too long")
    data = _decode_json_object(value.strip(), "VVP-Identity", _vvp_identity_invalid)
    return _vvp_identity_fields(data)


def _vvp_identity_invalid(message: str) -> IdentityDecodeError:
    return IdentityDecodeError("VVP_IDENTITY_INVALID", message)


def _vvp_identity_fields(data: Mapping[str, object]) -> VvpIdentityValue:
    """The checked fields of a VVP-Identity's JSON object. Raises IdentityDecodeError."""
    fail = _vvp_identity_invalid
    strings: dict[str, str] = {}
    for key in ("ppt", "kid", "evd"):
        item = data.get(key)
        if not isinstance(item, str) or not item.strip():
            raise fail(f"VVP-Identity {key} must be a non-empty string")
        strings[key] = item
    if strings["ppt"] != "vvp":
        raise fail("VVP-Identity ppt must be 'vvp'")
    for key in ("kid", "evd"):
        if not _is_http_url(strings[key]):
            raise fail(f"VVP-Identity {key} must be an http(s) URL")
    iat = _timestamp(data, "iat", required=True, fail=fail)
    assert iat is not None  # required=True never returns None
    exp = _timestamp(data, "exp", required=False, fail=fail)
    return VvpIdentityValue(
        ppt=strings["ppt"],
        kid=strings["kid"],
        evd=strings["evd"],
        iat=iat,
        exp=iat + DEFAULT_VALIDITY_S if exp is None else exp,
        exp_present=exp is not None,
    )


def decode_passport(jwt: str) -> Passport:
    """Decode a VVP PASSporT's header and payload (signature not verified).

    Raises IdentityDecodeError with PASSPORT_PARSE_FAILED, or PASSPORT_FORBIDDEN_ALG when
    the header's alg is not EdDSA.
    """

    def fail(message: str) -> IdentityDecodeError:
        return IdentityDecodeError("PASSPORT_PARSE_FAILED", message)

    if len(jwt) > MAX_JWT_LEN:
        raise fail("PASSporT too long")
    jwt = jwt.strip()
    parts = jwt.split(".")
    if len(parts) != 3:
        raise fail("PASSporT must have 3 dot-separated parts")
    raw_header, raw_payload, signature = parts
    if not _is_signature(signature):
        raise fail("PASSporT signature is neither CESR nor a base64url Ed25519 signature")
    header = _decode_json_object(raw_header, "PASSporT header", fail)
    alg = header.get("alg")
    if not isinstance(alg, str) or not alg:
        raise fail("PASSporT header has no alg")
    if alg != "EdDSA":
        # Never echo the caller's alg verbatim beyond a short, printable excerpt.
        raise IdentityDecodeError(
            "PASSPORT_FORBIDDEN_ALG", f"PASSporT alg {_excerpt(alg)!r} is not EdDSA"
        )
    if header.get("ppt") != "vvp":
        raise fail("PASSporT header ppt must be 'vvp'")
    typ = header.get("typ")
    if isinstance(typ, str) and typ not in _TYP_ALLOWED:
        raise fail("PASSporT header typ must be 'passport' or 'JWT'")
    kid = header.get("kid")
    # Required in the PASSporT itself, even when a P-VVP-Identity or the Identity info
    # parameter names the signer: the verifier's parser refuses a header without one.
    if not isinstance(kid, str) or not kid:
        raise fail("PASSporT header kid must be a non-empty string")

    payload = _decode_json_object(raw_payload, "PASSporT payload", fail)
    iat = _timestamp(payload, "iat", required=True, fail=fail)
    assert iat is not None
    exp = _timestamp(payload, "exp", required=False, fail=fail)
    orig = _numbers(payload, "orig", fail)
    if len(orig) != 1:
        raise fail("PASSporT orig.tn must hold exactly one number")
    dest = _numbers(payload, "dest", fail)
    if not dest:
        raise fail("PASSporT dest.tn must not be empty")
    evd = _evidence_url(payload, fail)
    card = payload.get("card")
    if card is not None and (
        not isinstance(card, list) or not all(isinstance(line, str) for line in card)
    ):
        raise fail("PASSporT card must be a list of strings")
    return Passport(
        jwt=jwt,
        header=MappingProxyType(header),
        payload=MappingProxyType(payload),
        signature=signature,
        alg=alg,
        kid=kid,
        iat=iat,
        exp=exp,
        orig=orig[0],
        dest=tuple(dest),
        evd=evd,
    )


# ---------------------------------------------------------------------------------------
# Extraction from SIP headers


def extract(
    identity: Sequence[str],
    p_vvp_identity: Sequence[str],
    p_vvp_passport: Sequence[str],
) -> Extraction:
    """Find the INVITE's VVP identity in its raw header fields. Never raises."""
    identities = fields.split_header_values(identity)
    vvp_identities = fields.split_header_values(p_vvp_identity)
    passport_values = fields.split_header_values(p_vvp_passport)
    if len(identities) + len(vvp_identities) + len(passport_values) > MAX_HEADER_VALUES:
        return Undecodable("PASSPORT_PARSE_FAILED", "too many identity header values")

    # The verifier reads VVP-Identity before the PASSporT, so its errors come first.
    vvp_identity: str | None = None
    decoded: VvpIdentityValue | None = None
    distinct = list(dict.fromkeys(vvp_identities))
    if len(distinct) > 1:
        return Undecodable("VVP_IDENTITY_INVALID", "conflicting P-VVP-Identity values")
    if distinct:
        try:
            decoded = decode_vvp_identity(distinct[0])
        except IdentityDecodeError as exc:
            return Undecodable(exc.code, exc.message)
        vvp_identity = distinct[0]

    # (passport, source, Identity info param) for every VVP PASSporT, in header order.
    candidates: list[tuple[Passport, str, str | None]] = []
    shaken = False
    unreadable = False
    for value in identities:
        try:
            header = fields.parse_identity_header(value)
        except IdentityDecodeError:
            unreadable = True
            continue
        kind = _identity_kind(header)
        if kind == "shaken":
            shaken = True
            continue
        if kind == "unreadable":
            unreadable = True
            continue
        if kind != "vvp":
            continue  # another PASSporT type (div, rcd, ...): not ours to judge
        if header.alg is not None and header.alg != "EdDSA":
            return Undecodable(
                "PASSPORT_FORBIDDEN_ALG",
                f"Identity alg {_excerpt(header.alg)!r} is not EdDSA",
            )
        try:
            candidates.append((decode_passport(header.token), "identity", header.info))
        except IdentityDecodeError as exc:
            return Undecodable(exc.code, exc.message)
    for value in passport_values:
        token = value[1:-1].strip() if value.startswith("<") and value.endswith(">") else value
        try:
            candidates.append((decode_passport(token), "p-vvp-passport", None))
        except IdentityDecodeError as exc:
            return Undecodable(exc.code, exc.message)

    if len({passport.jwt for passport, _, _ in candidates}) > 1:
        return Undecodable("PASSPORT_PARSE_FAILED", "conflicting PASSporTs")
    if not candidates:
        if unreadable:
            # An Identity header we cannot even classify: treat it as broken, not absent, so
            # garbage cannot be used to slip a call through the "missing" branch. Checked
            # before the P-VVP-Identity: a PASSporT was sent, it just cannot be read.
            return Undecodable("PASSPORT_PARSE_FAILED", "unreadable Identity header")
        if vvp_identity is not None:
            return Undecodable("PASSPORT_MISSING", "P-VVP-Identity without a PASSporT")
        return Missing(shaken=shaken)

    passport, source, _ = candidates[0]
    if vvp_identity is None:
        synthesised = _synthesise_vvp_identity(passport)
        if isinstance(synthesised, Undecodable):
            return synthesised
        vvp_identity, decoded = synthesised
    return Found(passport=passport, vvp_identity=vvp_identity, source=source, decoded=decoded)


def _identity_kind(header: fields.IdentityHeader) -> str:
    """'vvp', 'shaken', 'other' or 'unreadable' for one Identity header value."""
    ppt = header.ppt
    alg = header.alg
    if ppt is None:
        # RFC 8224: without a ppt parameter, the PASSporT header says what it is.
        jwt_header = _peek_jwt_header(header.token)
        if jwt_header is None:
            return "unreadable"
        jwt_ppt = jwt_header.get("ppt")
        ppt = jwt_ppt if isinstance(jwt_ppt, str) else None
        if alg is None:
            jwt_alg = jwt_header.get("alg")
            alg = jwt_alg if isinstance(jwt_alg, str) else None
    ppt_folded = ppt.lower() if ppt is not None else None
    if ppt_folded == "vvp":
        return "vvp"
    if ppt_folded == "shaken" or (alg is not None and alg.upper() == "ES256"):
        return "shaken"
    return "other"


def _peek_jwt_header(token: str) -> dict[str, object] | None:
    """The JWT header as a dict, or None when it cannot be decoded."""
    if len(token) > MAX_JWT_LEN:
        return None
    try:
        return _decode_json_object(
            token.split(".", 1)[0], "JWT header", lambda m: IdentityDecodeError("", m)
        )
    except IdentityDecodeError:
        return None


def _synthesise_vvp_identity(
    passport: Passport,
) -> tuple[str, VvpIdentityValue] | Undecodable:
    """Build the VVP-Identity value the verifier needs from a PASSporT (RFC 8224-only INVITE)."""
    # decode_passport has made sure kid and evd are there (the verifier refuses a
    # PASSporT without them), so the Identity's info parameter is not needed.
    data: dict[str, object] = {
        "ppt": "vvp",
        "kid": passport.kid,
        "evd": passport.evd,
        "iat": passport.iat,
    }
    # Only copy an explicit exp: the verifier rejects a VVP-Identity exp when the PASSporT
    # has none, so inventing iat+300 here would make a valid call fail.
    if passport.exp is not None:
        data["exp"] = passport.exp
    value = base64.urlsafe_b64encode(jsonfast.dumps(data)).decode("ascii").rstrip("=")
    if len(value) > MAX_VVP_IDENTITY_LEN:
        return Undecodable("VVP_IDENTITY_INVALID", "VVP-Identity too long")
    try:
        # decode_vvp_identity's checks on the object the value was just encoded from,
        # rather than decoding it back (~5 us a call).
        decoded = _vvp_identity_fields(data)
    except IdentityDecodeError as exc:
        return Undecodable(exc.code, exc.message)
    return value, decoded


# ---------------------------------------------------------------------------------------
# Pre-check


def precheck(
    found: Found,
    *,
    now: float,
    from_uri: str,
    to_uri: str,
    settings: PrecheckSettings,
) -> list[PrecheckFailure]:
    """The verifier's failures this request would certainly get, found locally.

    An empty list means "ask the verifier", not "valid".
    """
    failures: list[PrecheckFailure] = []
    passport = found.passport
    iat = passport.iat
    exp = passport.exp

    if settings.check_expiry:
        if iat > now + settings.max_skew_s:
            failures.append(PrecheckFailure("PASSPORT_EXPIRED", "PASSporT iat is in the future"))
        deadline = (iat + DEFAULT_VALIDITY_S if exp is None else exp) + settings.max_skew_s
        if now > deadline:
            failures.append(PrecheckFailure("PASSPORT_EXPIRED", "PASSporT has expired"))
    if exp is not None:
        if exp <= iat:
            failures.append(
                PrecheckFailure("PASSPORT_PARSE_FAILED", "PASSporT exp is not after iat")
            )
        elif exp - iat > settings.max_validity_s:
            failures.append(
                PrecheckFailure(
                    "PASSPORT_EXPIRED",
                    f"PASSporT validity exceeds {settings.max_validity_s}s",
                )
            )

    try:
        vi = found.decoded or decode_vvp_identity(found.vvp_identity)
    except IdentityDecodeError as exc:
        failures.append(PrecheckFailure(exc.code, exc.message))
    else:
        if abs(vi.iat - iat) > settings.max_iat_drift_s:
            failures.append(
                PrecheckFailure("PASSPORT_PARSE_FAILED", "VVP-Identity and PASSporT iat differ")
            )
        if vi.exp_present and exp is not None and abs(vi.exp - exp) > settings.max_iat_drift_s:
            failures.append(
                PrecheckFailure("PASSPORT_PARSE_FAILED", "VVP-Identity and PASSporT exp differ")
            )
        if vi.exp_present and exp is None:
            # Verifier default (ALLOW_PASSPORT_EXP_OMISSION off): treated as expired.
            failures.append(
                PrecheckFailure("PASSPORT_EXPIRED", "VVP-Identity has exp but PASSporT has none")
            )
        if passport.kid != vi.kid:
            failures.append(
                PrecheckFailure("PASSPORT_PARSE_FAILED", "VVP-Identity and PASSporT kid differ")
            )

    if settings.check_numbers:
        caller = fields.telephone_number(from_uri)
        if caller is None or not fields.same_number(caller, passport.orig):
            failures.append(
                PrecheckFailure("CONTEXT_MISMATCH", "From number does not match PASSporT orig")
            )
        callee = fields.telephone_number(to_uri)
        if callee is None or not any(fields.same_number(callee, d) for d in passport.dest):
            failures.append(
                PrecheckFailure("CONTEXT_MISMATCH", "To number is not in PASSporT dest")
            )
    return failures


# ---------------------------------------------------------------------------------------
# Helpers


def _decode_json_object(
    encoded: str,
    what: str,
    fail: _FailFactory,
) -> dict[str, object]:
    if not encoded or not _B64URL.fullmatch(encoded):
        raise fail(f"{what} is not base64url")
    body = encoded.rstrip("=")
    try:
        raw = base64.urlsafe_b64decode(body + "=" * (-len(body) % 4))
        data = jsonfast.loads_strict(raw)
    except (binascii.Error, ValueError, RecursionError):
        # ValueError covers bad UTF-8, bad JSON and ints too long to convert.
        raise fail(f"{what} is not valid base64url JSON") from None
    if not isinstance(data, dict):
        raise fail(f"{what} is not a JSON object")
    return data


def _timestamp(
    data: Mapping[str, object], key: str, *, required: bool, fail: _FailFactory
) -> int | None:
    value = data.get(key)
    if value is None and key not in data and not required:
        return None
    # bool is an int subclass in Python but not a number in JSON.
    if isinstance(value, bool) or not isinstance(value, int):
        raise fail(f"{key} must be an integer")
    if not 0 <= value < _MAX_TIMESTAMP:
        raise fail(f"{key} is out of range")
    return value


def _numbers(payload: Mapping[str, object], key: str, fail: _FailFactory) -> list[str]:
    claim = payload.get(key)
    tn = claim.get("tn") if isinstance(claim, dict) else None
    if not isinstance(tn, list) or not all(isinstance(n, str) and n for n in tn):
        raise fail(f"PASSporT {key}.tn must be a list of non-empty strings")
    return [n for n in tn if isinstance(n, str)]


def _evidence_url(payload: Mapping[str, object], fail: _FailFactory) -> str:
    """The dossier URL as the verifier's parser finds it, or PASSPORT_PARSE_FAILED."""
    evd = payload.get("evd")
    if isinstance(evd, str) and evd.strip():
        return evd
    attest = payload.get("attest")
    creds = attest.get("creds") if isinstance(attest, dict) else None
    first = creds[0] if isinstance(creds, list) and creds else None
    if isinstance(first, str) and first.startswith(_EVD_PREFIX):
        return first[len(_EVD_PREFIX) :]
    raise fail("PASSporT has no evidence URL (evd, or attest.creds[0] 'evd:...')")


def _is_signature(signature: str) -> bool:
    """Whether the verifier's parser takes this signature part (not whether it verifies)."""
    if not _B64URL_CHARS.fullmatch(signature):
        return False
    if len(signature) == _CESR_SIG_LEN:
        return signature[:2] in _CESR_SIG_CODES
    if len(signature) != _JWS_SIG_LEN:
        return False
    try:
        raw = base64.urlsafe_b64decode(signature + "==")
    except binascii.Error:
        return False
    # Canonical only: 86 characters carry 516 bits, the last 4 of them must be zero.
    return len(raw) == 64 and base64.urlsafe_b64encode(raw).decode().rstrip("=") == signature


def _is_http_url(value: str) -> bool:
    # No whitespace, no control or other unprintable characters: of the whitespace,
    # str.isprintable() lets only " " through.
    if " " in value or not value.isprintable():
        return False
    try:
        parts = urlsplit(value)
    except ValueError:  # e.g. an unbalanced IPv6 bracket
        return False
    return parts.scheme in ("http", "https") and bool(parts.netloc)


def _excerpt(value: str, limit: int = 16) -> str:
    """A short printable excerpt of a caller-supplied string for an error message."""
    cleaned = "".join(ch for ch in value[:limit] if ch.isprintable())
    return cleaned + ("..." if len(value) > limit else "")
