"""Verdict logic of the VVP verifier SIMULATOR: pure functions, no I/O.

It checks what can be checked without a KERI network (VVP-Identity decoding, the
PASSporT parser's rules, binding and expiry, the EdDSA signature against locally
trusted keys, SIP context) and fakes the rest from markers in the dossier URL (see
passport.py) and demo dossier facts (dossier.py). It follows the real verifier's order
of checks (services/verifier verify_vvp, read in its source): a VVP-Identity failure is
an early answer without claims; a PASSporT parse, binding, expiry or signature failure
skips the dossier; the answer has exactly the real VerifyResponse's keys, in its order.
"""

from __future__ import annotations

import base64
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from vvp_helper import jsonfast
from vvp_simulator import dossier
from vvp_simulator.keys import aid_from_oobi, decode_signature, verify_signature
from vvp_simulator.passport import (
    DELEGATED_MARKER,
    OUT_OF_JURISDICTION_MARKER,
    UNREACHABLE_MARKER,
)

VALID = "VALID"
INVALID = "INVALID"
INDETERMINATE = "INDETERMINATE"
WARNING = "WARNING"
STATUSES: tuple[str, ...] = (VALID, INVALID, INDETERMINATE, WARNING)

CLOCK_SKEW_S = 300  # spec clock skew tolerance, seconds
MAX_VALIDITY_S = 300  # spec maximum exp - iat; also the max age without exp, seconds
BINDING_TOLERANCE_S = 5  # VVP-Identity vs PASSporT iat/exp agreement, seconds
CONTEXT_TOLERANCE_S = 30  # |PASSporT iat - INVITE time|, seconds
DOSSIER_FETCH_TIMEOUT_S = 5  # the verifier's dossier fetch timeout, seconds

JURISDICTION_WARNING = "vetter_not_authorised_for_jurisdiction"
# The real verifier's text, em dash included (verify.py, cached-revocation branch).
STALE_REVOCATION_REASON = "Revocation data stale \u2014 background re-check pending"

RECOVERABLE_CODES = frozenset(
    {
        "VVP_OOBI_FETCH_FAILED",
        "DOSSIER_FETCH_FAILED",
        "KERI_RESOLUTION_FAILED",
        "VETTER_CERTIFICATION_MISSING",
        "INTERNAL_ERROR",
    }
)

# The real VerifyResponse's fields, in its order (pydantic serialises every one).
RESPONSE_KEYS: tuple[str, ...] = (
    "request_id",
    "overall_status",
    "claims",
    "errors",
    "has_variant_limitations",
    "delegation_chain",
    "signer_aid",
    "toip_warnings",
    "issuer_identities",
    "vetter_constraints",
    "brand_name",
    "brand_logo_url",
    "brand_logo_hash",
    "certainty",
    "revocation_pending",
    "cache_hit",
    "vetter_warning_reason",
)

_ALLOWED_ALGS = frozenset({"EdDSA"})
_ALLOWED_TYPS = ("passport", "JWT")
_SEVERITY = {VALID: 0, INDETERMINATE: 1, INVALID: 2}
_VISUAL_SEPARATORS = str.maketrans("", "", "-.() ")


# The verifier's error messages per code (its exceptions.py), around the detail.
_MESSAGES = {
    "VVP_IDENTITY_MISSING": "VVP-Identity header is missing or empty",
    "VVP_IDENTITY_INVALID": "VVP-Identity header is invalid: {}",
    "PASSPORT_MISSING": "PASSporT JWT is missing or empty",
    "PASSPORT_PARSE_FAILED": "PASSporT parse failed: {}",
    "PASSPORT_FORBIDDEN_ALG": "PASSporT uses forbidden algorithm: {}",
    "PASSPORT_EXPIRED": "PASSporT expired: {}",
}


class VerdictError(ValueError):
    """A failure with the verifier's error code (parser, binding, expiry) and message."""

    def __init__(self, code: str, detail: str = "") -> None:
        self.code = code
        self.message = _MESSAGES.get(code, "{}").format(detail)
        super().__init__(self.message)


class ParserCrash(Exception):
    """The real verifier would crash here (HTTP 500): its PASSporT parser refused the
    PASSporT and its SIP-context step then reads the missing PASSporT (AttributeError).
    Raised only when the caller asked for that behaviour (the `parser_crash` fault)."""


@dataclass(frozen=True, slots=True)
class Identity:
    ppt: str
    kid: str
    evd: str
    iat: int
    exp: int  # iat + 300 when the header had none, as the verifier computes it
    exp_provided: bool


@dataclass(frozen=True, slots=True)
class Passport:
    header: dict[str, Any]
    payload: dict[str, Any]
    signing_input: bytes
    signature: bytes
    evd: str


@dataclass(frozen=True, slots=True)
class Options:
    """Per-request switches from the server: cache state and the faults in force."""

    cache_hit: bool = False
    # The cached revocation data is older than the re-check interval (stale_revocation fault).
    revocation_stale: bool = False
    # Raise ParserCrash where the real verifier crashes (parser_crash fault).
    parser_crash: bool = False


@dataclass(slots=True)
class _Errors:
    items: list[dict[str, Any]] = field(default_factory=list)

    def add(self, code: str, message: str) -> None:
        self.items.append(
            {"code": code, "message": message, "recoverable": code in RECOVERABLE_CODES}
        )


@dataclass(slots=True)
class _Claim:
    """One claim being built: INVALID always wins over INDETERMINATE (as ClaimBuilder)."""

    name: str
    status: str = VALID
    reasons: list[str] = field(default_factory=list)
    evidence: list[str] = field(default_factory=list)

    def fail(self, status: str, reason: str) -> None:
        if _SEVERITY[status] > _SEVERITY[self.status]:
            self.status = status
        self.reasons.append(reason)

    def node(self, children: list[tuple[bool, dict[str, Any]]] | None = None) -> dict[str, Any]:
        """The claim node; its status is the worst of its own and its REQUIRED children's."""
        kids = children or []
        status = self.status
        for required, child in kids:
            if required and _SEVERITY[child["status"]] > _SEVERITY[status]:
                status = child["status"]
        return {
            "name": self.name,
            "status": status,
            "reasons": self.reasons,
            "evidence": self.evidence,
            "children": [{"required": r, "node": c} for r, c in kids],
        }


# --- decoding, as the verifier decodes ----------------------------------------------


def _b64_lenient(text: str) -> bytes:
    # The verifier pads and calls the stdlib's non-validating decoder: characters outside
    # the alphabet are skipped, so only bad padding fails. The same call is used here.
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _json_part(text: str, part: str, code: str) -> dict[str, Any]:
    where = f"{part} " if part else ""
    try:
        raw = _b64_lenient(text)
    except (ValueError, UnicodeEncodeError) as exc:
        raise VerdictError(code, f"{where}base64url decode failed: {exc}") from exc
    try:
        obj = jsonfast.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise VerdictError(code, f"{where}JSON parse failed: {exc}") from exc
    if not isinstance(obj, dict):
        raise VerdictError(code, f"{where}JSON root must be an object")
    return obj


def _integer(value: object) -> int | None:
    """An integer as the verifier accepts one (a whole float too, never a bool); else None."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return None


def _required_string(data: dict[str, Any], name: str, part: str, code: str) -> str:
    value = data.get(name)
    where = f"{part} " if part else ""
    if name not in data:
        raise VerdictError(code, f"{where}missing required field: {name}")
    if not isinstance(value, str):
        raise VerdictError(code, f"{where}field {name} must be a string")
    if not value.strip():
        raise VerdictError(code, f"{where}field {name} must not be empty")
    return value


def parse_vvp_identity(value: str | None, now: float | None) -> Identity:
    """The VVP-Identity header; VerdictError VVP_IDENTITY_MISSING or VVP_IDENTITY_INVALID.

    `now` None skips the verifier's "iat not in the future" check (for a dossier URL)."""
    if not value or not value.strip():
        raise VerdictError("VVP_IDENTITY_MISSING")
    code = "VVP_IDENTITY_INVALID"
    obj = _json_part(value.strip(), "", code)
    ppt = _required_string(obj, "ppt", "", code)
    kid = _required_string(obj, "kid", "", code)
    evd = _required_string(obj, "evd", "", code)
    iat = _integer(obj.get("iat"))
    if iat is None:
        raise VerdictError(code, "field iat must be an integer")
    if now is not None and iat > int(now) + CLOCK_SKEW_S:
        raise VerdictError(code, f"iat {iat} is in the future beyond clock skew")
    if "exp" not in obj:
        return Identity(ppt, kid, evd, iat, iat + MAX_VALIDITY_S, exp_provided=False)
    exp = _integer(obj["exp"])
    if exp is None:
        raise VerdictError(code, "field exp must be an integer")
    return Identity(ppt, kid, evd, iat, exp, exp_provided=True)


def identity_or_error(value: str | None, now: float) -> Identity | VerdictError:
    """parse_vvp_identity's answer, its refusal returned rather than raised."""
    try:
        return parse_vvp_identity(value, now)
    except VerdictError as exc:
        return exc


def _tn_list(tns: object, name: str, exactly_one: bool) -> list[str]:
    code = "PASSPORT_PARSE_FAILED"
    if not isinstance(tns, list):
        raise VerdictError(code, f"{name}.tn must be an array")
    if exactly_one and len(tns) != 1:
        raise VerdictError(code, f"{name}.tn must contain exactly one phone number")
    if not tns:
        raise VerdictError(code, f"{name}.tn array must not be empty")
    if not all(isinstance(t, str) for t in tns):
        raise VerdictError(code, f"{name}.tn entries must be strings")
    return tns


def _evidence_url(payload: dict[str, Any]) -> str:
    evd = payload.get("evd")
    if evd is None:
        attest = payload.get("attest")
        creds = attest.get("creds") if isinstance(attest, dict) else None
        if isinstance(creds, list) and creds:
            first = creds[0]
            if isinstance(first, str) and first.startswith("evd:"):
                evd = first[4:]
    if not isinstance(evd, str) or not evd:
        raise VerdictError(
            "PASSPORT_PARSE_FAILED", "payload missing required field: evd (or attest.creds)"
        )
    return evd


def parse_passport(jwt: str | None) -> Passport:
    """The PASSporT, by the real verifier's parser rules, in its order; VerdictError with
    PASSPORT_MISSING, PASSPORT_FORBIDDEN_ALG or PASSPORT_PARSE_FAILED on failure."""
    code = "PASSPORT_PARSE_FAILED"
    if not jwt or not jwt.strip():
        raise VerdictError("PASSPORT_MISSING")
    parts = jwt.strip().split(".")
    if len(parts) != 3:
        raise VerdictError(
            code, f"JWT must have 3 parts (header.payload.signature), got {len(parts)}"
        )
    raw_header, raw_payload, raw_signature = parts

    header = _json_part(raw_header, "header", code)
    alg = _required_string(header, "alg", "header", code)
    ppt = _required_string(header, "ppt", "header", code)
    _required_string(header, "kid", "header", code)
    typ = header.get("typ")
    if isinstance(typ, str) and typ not in _ALLOWED_TYPS:
        raise VerdictError(code, f"typ must be 'passport' or 'JWT' when present, got '{typ}'")
    if alg not in _ALLOWED_ALGS:
        raise VerdictError("PASSPORT_FORBIDDEN_ALG", alg)
    if ppt != "vvp":
        raise VerdictError(code, f"ppt must be 'vvp' for VVP PASSporTs, got '{ppt}'")

    payload = _json_part(raw_payload, "payload", code)
    if "iat" not in payload or _integer(payload["iat"]) is None:
        raise VerdictError(code, "payload field iat must be an integer")
    for name in ("orig", "dest"):
        if not isinstance(payload.get(name), dict):
            raise VerdictError(code, f"payload field {name} must be an object")
    evd = _evidence_url(payload)
    orig, dest = payload["orig"], payload["dest"]
    if "tn" not in orig:
        raise VerdictError(code, "payload orig.tn is required")
    _tn_list(orig["tn"], "orig", exactly_one=True)
    if "tn" not in dest:
        raise VerdictError(code, "payload dest.tn is required")
    _tn_list(dest["tn"], "dest", exactly_one=False)
    for name in ("exp", "cseq"):
        if name in payload and _integer(payload[name]) is None:
            raise VerdictError(code, f"payload field {name} must be an integer")

    try:
        signature = decode_signature(raw_signature)
    except ValueError as exc:
        raise VerdictError(code, str(exc)) from exc
    return Passport(
        header=header,
        payload=payload,
        signing_input=f"{raw_header}.{raw_payload}".encode("ascii"),
        signature=signature,
        evd=evd,
    )


def _check_binding(ident: Identity, pp: Passport, now: float) -> None:
    """PASSporT against VVP-Identity, then expiry; VerdictError on the first failure."""
    parse, expired = "PASSPORT_PARSE_FAILED", "PASSPORT_EXPIRED"
    if pp.header["ppt"] != ident.ppt:
        raise VerdictError(parse, "ppt mismatch between PASSporT and VVP-Identity")
    if pp.header["kid"] != ident.kid:
        raise VerdictError(parse, "kid mismatch between PASSporT and VVP-Identity")
    iat = _integer(pp.payload["iat"])
    assert iat is not None  # parse_passport checked it
    if abs(iat - ident.iat) > BINDING_TOLERANCE_S:
        raise VerdictError(parse, f"iat drift exceeds {BINDING_TOLERANCE_S}s")
    exp = _integer(pp.payload.get("exp"))
    if exp is not None:
        if exp <= iat:
            raise VerdictError(parse, "exp must be greater than iat")
        if abs(exp - ident.exp) > BINDING_TOLERANCE_S:
            raise VerdictError(parse, f"exp drift exceeds {BINDING_TOLERANCE_S}s")
        if exp - iat > MAX_VALIDITY_S:
            raise VerdictError(expired, f"validity window exceeds {MAX_VALIDITY_S}s")
        if now > exp + CLOCK_SKEW_S:
            raise VerdictError(expired, f"token expired: exp={exp}")
    else:
        if ident.exp_provided:
            raise VerdictError(expired, "PASSporT exp absent but VVP-Identity exp provided")
        if now > iat + MAX_VALIDITY_S + CLOCK_SKEW_S:
            raise VerdictError(expired, f"max-age exceeded: iat={iat}")


# --- SIP context ---------------------------------------------------------------------


def tn_digits(uri_or_tn: str) -> str | None:
    """Digits of the number in a sip:/sips:/tel: URI or bare TN; None if there are none."""
    text = uri_or_tn.strip()
    if "<" in text and ">" in text:
        text = text[text.index("<") + 1 : text.index(">")]
    scheme, sep, rest = text.partition(":")
    if sep and scheme.lower() in ("sip", "sips", "tel"):
        text = rest
    user = text.split("@", 1)[0].split(";", 1)[0].translate(_VISUAL_SEPARATORS)
    user = user.removeprefix("+")
    return user if user.isdigit() else None


def _parse_time(value: str) -> float:
    moment = datetime.fromisoformat(value)
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.timestamp()


def _sip_context(body: Mapping[str, Any]) -> dict[str, Any] | None:
    context = body.get("context")
    sip = context.get("sip") if isinstance(context, dict) else None
    return sip if isinstance(sip, dict) else None


def _e164(text: str) -> str | None:
    digits = tn_digits(text)
    return None if digits is None else "+" + digits


def _check_context(pp: Passport | None, sip: dict[str, Any] | None) -> _Claim:
    """context_aligned as the verifier checks it: From, then To, then timing; it stops at
    the first mismatch (one reason, one CONTEXT_MISMATCH), with its messages."""
    claim = _Claim("context_aligned")
    if sip is None or pp is None:
        claim.fail(INDETERMINATE, "SIP context not provided")
        claim.evidence.append("sip_context:absent")
        return claim
    claim.evidence.append("sip_context:present")
    from_uri, to_uri = str(sip.get("from_uri", "")), str(sip.get("to_uri", ""))
    orig = _e164(pp.payload["orig"]["tn"][0])
    from_tn = _e164(from_uri)
    if from_tn is None:
        claim.fail(INVALID, f"Could not extract phone from SIP From URI: {from_uri[:50]}")
        return claim
    if from_tn != orig:
        claim.fail(INVALID, f"orig.tn '{orig}' != From URI '{from_tn}'")
        return claim
    claim.evidence.append(f"orig_aligned:{orig}")
    dests = [_e164(t) for t in pp.payload["dest"]["tn"]]
    to_tn = _e164(to_uri)
    if to_tn is None:
        claim.fail(INVALID, f"Could not extract phone from SIP To URI: {to_uri[:50]}")
        return claim
    if to_tn not in dests:
        claim.fail(INVALID, f"To URI '{to_tn}' not in dest.tn {dests}")
        return claim
    claim.evidence.append(f"dest_aligned:{to_tn}")
    invite_time = sip.get("invite_time")
    try:
        invite = _parse_time(str(invite_time))
    except ValueError:
        claim.fail(INDETERMINATE, f"Could not parse invite_time: {invite_time}")
        return claim
    drift = int(abs(pp.payload["iat"] - invite))
    if drift > CONTEXT_TOLERANCE_S:
        claim.fail(INVALID, f"iat drift {drift}s exceeds {CONTEXT_TOLERANCE_S}s tolerance")
        return claim
    claim.evidence.append(f"timing_aligned:drift={drift}s")
    return claim


# --- the answer ----------------------------------------------------------------------


def _card_brand(card: list[str]) -> tuple[str | None, str | None, str | None]:
    """Brand name (ORG), logo URL and logo hash (LOGO's HASH parameter) from vCard lines."""
    name = logo = logo_hash = None
    for line in card:
        key, _, value = line.partition(":")
        # partition() split at the first ':', after the parameters: LOGO;HASH=..;VALUE=URI:https..
        prop, *params = key.split(";")
        if prop.upper() == "ORG" and value:
            name = value
        elif prop.upper() == "LOGO" and value.startswith(("http://", "https://")):
            logo = value
            for param in params:
                pname, _, pvalue = param.partition("=")
                if pname.upper() == "HASH" and pvalue:
                    logo_hash = pvalue
    return name, logo, logo_hash


def _response(request_id: str) -> dict[str, Any]:
    return {
        "request_id": request_id,
        "overall_status": INVALID,
        "claims": None,
        "errors": None,
        "has_variant_limitations": False,
        "delegation_chain": None,
        "signer_aid": None,
        "toip_warnings": None,
        "issuer_identities": None,
        "vetter_constraints": None,
        "brand_name": None,
        "brand_logo_url": None,
        "brand_logo_hash": None,
        "certainty": "none",
        "revocation_pending": False,
        "cache_hit": False,
        "vetter_warning_reason": None,
    }


def certainty_for(status: str) -> str:
    return {VALID: "full", INDETERMINATE: "partial"}.get(status, "none")


def _check_signature(
    pp: Passport, trusted: Mapping[str, bytes], claim: _Claim, errors: _Errors
) -> str | None:
    """The signer's AID when the signature verifies; None otherwise (claim and errors set)."""
    kid = pp.header["kid"]
    if not kid.startswith(("http://", "https://")):
        # The verifier requires an OOBI URL: a bare AID is a spec violation (INVALID).
        errors.add("KERI_RESOLUTION_FAILED", f"kid must be an OOBI URL, got {kid[:20]}...")
        claim.fail(INVALID, "kid must be an OOBI URL")
        return None
    aid = aid_from_oobi(kid)
    if aid is None or aid not in trusted:
        errors.add("KERI_RESOLUTION_FAILED", f"cannot resolve key state for kid {kid}")
        claim.fail(INDETERMINATE, "signer key state unresolved")
        return None
    if not verify_signature(trusted[aid], pp.signature, pp.signing_input):
        at = datetime.fromtimestamp(pp.payload["iat"], UTC).isoformat(timespec="seconds")
        message = (
            f"Ed25519 signature verification failed for kid={kid[:20]}... "
            f"at reference time {at} (key state seq=0)"
        )
        errors.add("PASSPORT_SIG_INVALID", message)
        claim.fail(INVALID, message)
        return None
    claim.evidence.append("signature_valid,tier2")
    return aid


def verify(
    vvp_identity_header: str | None,
    body: Mapping[str, Any],
    trusted: Mapping[str, bytes],
    now: float,
    options: Options | None = None,
    *,
    identity: Identity | VerdictError | None = None,
) -> dict[str, Any]:
    """Simulated verdict for one `/verify` request; `trusted` maps AID -> raw public key.

    `identity`: what parse_vvp_identity(vvp_identity_header, now) gave (or raised), when
    the caller has it already. Raises ParserCrash only when options.parser_crash is set
    (see ParserCrash).
    """
    options = options or Options()
    resp = _response(str(uuid.uuid4()))
    errors = _Errors()
    if identity is None:
        identity = identity_or_error(vvp_identity_header, now)
    if isinstance(identity, VerdictError):
        errors.add(identity.code, identity.message)
        resp["errors"] = errors.items
        return resp
    ident = identity

    passport = _Claim("passport_verified")
    pp: Passport | None = None
    try:
        pp = parse_passport(body.get("passport_jwt"))
        passport.evidence.append(f"kid={pp.header['kid'][:20]}...")
        _check_binding(ident, pp, now)
        passport.evidence.append("binding_valid")
    except VerdictError as exc:
        errors.add(exc.code, exc.message)
        passport.fail(INVALID, exc.message)
    fatal = passport.status == INVALID
    sip = _sip_context(body)
    if pp is None and sip is not None and options.parser_crash:
        raise ParserCrash("PASSporT refused by the parser, with a SIP context")

    signer: str | None = None
    if pp is not None and not fatal:
        signer = _check_signature(pp, trusted, passport, errors)
        fatal = passport.status == INVALID
    if signer is not None:
        resp["signer_aid"] = signer
        if DELEGATED_MARKER in ident.evd:
            resp["delegation_chain"] = dossier.delegation_chain(signer)

    # The dossier: fetched (faked) only when the PASSporT has no fatal failure; the
    # verification cache is looked up only then too.
    cache_hit = options.cache_hit and not fatal
    evd = ident.evd
    dossier_claim = _Claim("dossier_verified")
    fetched = False
    if fatal:
        dossier_claim.fail(INDETERMINATE, "Skipped due to passport verification failure")
    elif UNREACHABLE_MARKER in evd:  # as the verifier's fetch timing out
        message = f"Timeout after {DOSSIER_FETCH_TIMEOUT_S}s fetching {evd}"
        errors.add("DOSSIER_FETCH_FAILED", message)
        dossier_claim.fail(INDETERMINATE, message)
    else:
        fetched = True
        dossier_claim.evidence.extend(dossier.dossier_evidence(evd))
        if cache_hit:
            dossier_claim.evidence.append("cache_hit:dossier_verification")

    chain = _Claim("chain_verified")
    revocation = _Claim("revocation_clear")
    if not fetched:
        chain.fail(INDETERMINATE, "Cannot validate chain: dossier validation failed")
        revocation.fail(INDETERMINATE, "Cannot check revocation: dossier validation failed")
    else:
        chain.evidence.extend(dossier.chain_evidence(evd))
        if not cache_hit:  # checked now, credential by credential
            revocation.evidence.extend(dossier.revocation_evidence(evd))
        elif options.revocation_stale:
            revocation.fail(INDETERMINATE, STALE_REVOCATION_REASON)
            revocation.evidence.append("revocation_data_stale")
        else:  # the cached check is fresh
            revocation.evidence.append("all_credentials_unrevoked")
        resp["toip_warnings"] = dossier.toip_warnings(evd)

    party, tn_rights = _Claim("party_authorized"), _Claim("tn_rights_valid")
    if fetched and pp is not None:
        kid_aid = aid_from_oobi(pp.header["kid"]) or pp.header["kid"]
        resp["issuer_identities"] = dossier.issuer_identities(evd, kid_aid)
        if kid_aid in trusted:
            party.evidence.extend(dossier.party_evidence(evd, kid_aid))
            tn_rights.evidence.extend(
                dossier.tn_rights_evidence(evd, kid_aid, pp.payload["orig"]["tn"][0])
            )
        else:  # no key state for the signer: its authority cannot be tied to the dossier
            party.fail(INDETERMINATE, "signer key state unresolved")
            tn_rights.fail(INDETERMINATE, "Cannot validate: signer unresolved")
    else:  # the verifier names the dossier even when the PASSporT's failure skipped it
        party.fail(INDETERMINATE, "Cannot validate: dossier failed")
        tn_rights.fail(INDETERMINATE, "Cannot validate: dossier failed")

    if pp is not None or sip is None:
        context = _check_context(pp, sip)
    else:  # where the real verifier crashes (ParserCrash) when the fault is off
        context = _Claim("context_aligned")
        context.fail(INDETERMINATE, "Cannot validate: passport failed")
    if context.status == INVALID:
        errors.add("CONTEXT_MISMATCH", context.reasons[0])

    authorization = _Claim("authorization_valid")
    children = [
        (True, passport.node()),
        (True, dossier_claim.node([(True, chain.node()), (True, revocation.node())])),
        (True, authorization.node([(True, party.node()), (True, tn_rights.node())])),
        # Optional: the verifier's CONTEXT_ALIGNMENT_REQUIRED defaults to false.
        (False, context.node()),
    ]

    card = pp.payload.get("card") if pp is not None else None
    brand: _Claim | None = None
    if isinstance(card, list) and card:
        brand = _Claim("brand_verified")
        name, logo, logo_hash = _card_brand([str(line) for line in card])
        brand.evidence.append("card:present")
        brand.evidence.extend(
            f"{what}:{value[:40]}..." if len(value) > 40 else f"{what}:{value}"
            for what, value in (("brand_name", name), ("brand_logo_url", logo))
            if value is not None
        )
        if not fetched:
            brand.fail(INVALID, "No brand credential found in dossier")
            errors.add("BRAND_CREDENTIAL_INVALID", brand.reasons[0])
        else:
            brand.evidence.extend(dossier.brand_evidence(evd))
        children.append((True, brand.node()))
        if brand.status in (VALID, INDETERMINATE):
            resp["brand_name"], resp["brand_logo_url"], resp["brand_logo_hash"] = (
                name,
                logo,
                logo_hash,
            )
    if pp is not None and isinstance(pp.payload.get("goal"), str):
        goal = _Claim("business_logic_verified")
        goal.evidence.append(f"goal={pp.payload['goal']}")
        children.append((True, goal.node()))

    vetter = _Claim("vetter_constraints_valid")
    out_of_area = False
    if fetched and pp is not None:
        out_of_area = OUT_OF_JURISDICTION_MARKER in evd
        constraints = dossier.vetter_constraints(evd, out_of_area)
        resp["vetter_constraints"] = constraints
        for said, info in constraints.items():
            state = "authorized" if info["is_authorized"] else "unauthorized"
            vetter.evidence.append(f"{state}:{said[:12]}...|jurisdiction:{info['target_value']}")
        if out_of_area:
            vetter.fail(
                INVALID, "Vetter constraint violation: credential issuer not authorized for region"
            )
    else:
        vetter.fail(INDETERMINATE, "Cannot validate vetter constraints: dossier failed")
    # Optional: the verifier's ENFORCE_VETTER_CONSTRAINTS defaults to false.
    children.append((False, vetter.node()))

    root = _Claim("caller_authorised").node(children)
    if any(not e["recoverable"] for e in errors.items) or root["status"] == INVALID:
        overall = INVALID
    elif errors.items or root["status"] == INDETERMINATE:
        overall = INDETERMINATE
    else:
        overall = VALID
    # WARNING ranks below INVALID only (verifier Sprint 75 rule).
    if out_of_area and overall != INVALID:
        overall = WARNING
        resp["vetter_warning_reason"] = JURISDICTION_WARNING

    resp["overall_status"] = overall
    resp["certainty"] = certainty_for(overall)
    resp["claims"] = [root]
    resp["errors"] = errors.items or None
    resp["cache_hit"] = cache_hit
    return resp


# What the `inject` fault puts in a verdict: text a verifier should never send, which an
# edge must not let through into SIP headers.
INJECTED_BRAND_NAME = "Acme\r\nX-Injected: 1"
INJECTED_LOGO_URL = "javascript:alert(1)"
INJECTED_MESSAGE_SUFFIX = "\r\nX-Injected: 1\r\n\r\nINVITE sip:evil SIP/2.0"


def inject_hostile_fields(result: dict[str, Any]) -> None:
    """Make ``result`` carry header-injection attempts (the simulator's `inject` fault).

    VALID and WARNING answers get a CR/LF brand name and a javascript: logo URL; every
    error message (INVALID, INDETERMINATE) gets CR/LF and a fake header appended.
    """
    if result.get("overall_status") in (VALID, WARNING):
        result["brand_name"] = INJECTED_BRAND_NAME
        result["brand_logo_url"] = INJECTED_LOGO_URL
    for error in result.get("errors") or []:
        error["message"] = f"{error.get('message', '')}{INJECTED_MESSAGE_SUFFIX}"
