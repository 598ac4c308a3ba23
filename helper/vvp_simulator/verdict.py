"""Verdict logic of the VVP verifier SIMULATOR: pure functions, no I/O.

It checks what can be checked without a KERI network (VVP-Identity decoding,
PASSporT structure, EdDSA signature against locally trusted keys, timing, SIP
context) and fakes the rest from markers in the dossier URL (see passport.py).
The response has exactly the shape of the real verifier's `POST /verify` answer.
"""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from vvp_helper import jsonfast
from vvp_simulator.keys import (
    aid_from_oobi,
    b64url_decode,
    b64url_encode,
    decode_cesr_signature,
    verify_signature,
)
from vvp_simulator.passport import OUT_OF_JURISDICTION_MARKER, UNREACHABLE_MARKER

VALID = "VALID"
INVALID = "INVALID"
INDETERMINATE = "INDETERMINATE"
WARNING = "WARNING"
STATUSES: tuple[str, ...] = (VALID, INVALID, INDETERMINATE, WARNING)

CLOCK_SKEW_S = 300  # spec clock skew tolerance, seconds
MAX_VALIDITY_S = 300  # spec maximum exp - iat, seconds
BINDING_TOLERANCE_S = 5  # VVP-Identity vs PASSporT iat/exp agreement, seconds
CONTEXT_TOLERANCE_S = 30  # |PASSporT iat - INVITE time|, seconds

JURISDICTION_WARNING = "vetter_not_authorised_for_jurisdiction"

RECOVERABLE_CODES = frozenset(
    {
        "VVP_OOBI_FETCH_FAILED",
        "DOSSIER_FETCH_FAILED",
        "KERI_RESOLUTION_FAILED",
        "VETTER_CERTIFICATION_MISSING",
        "INTERNAL_ERROR",
    }
)

RESPONSE_KEYS: tuple[str, ...] = (
    "request_id",
    "overall_status",
    "claims",
    "errors",
    "brand_name",
    "brand_logo_url",
    "brand_logo_hash",
    "certainty",
    "signer_aid",
    "vetter_constraints",
    "vetter_warning_reason",
    "revocation_pending",
    "cache_hit",
)

_SEVERITY = {VALID: 0, INDETERMINATE: 1, INVALID: 2}
_VISUAL_SEPARATORS = str.maketrans("", "", "-.() ")


@dataclass(frozen=True, slots=True)
class Identity:
    kid: str
    evd: str
    iat: int
    exp: int | None


@dataclass(frozen=True, slots=True)
class Passport:
    header: dict[str, Any]
    payload: dict[str, Any]
    signing_input: bytes
    signature: str


@dataclass(slots=True)
class _Errors:
    items: list[dict[str, Any]] = field(default_factory=list)

    def add(self, code: str, message: str) -> None:
        self.items.append(
            {"code": code, "message": message, "recoverable": code in RECOVERABLE_CODES}
        )


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _json_object(text: str) -> dict[str, Any]:
    try:
        obj = jsonfast.loads(b64url_decode(text))
    except (ValueError, UnicodeDecodeError) as exc:
        raise ValueError(f"not base64url JSON: {exc}") from exc
    if not isinstance(obj, dict):
        raise ValueError("not a JSON object")
    return obj


def parse_vvp_identity(value: str) -> Identity:
    obj = _json_object(value.strip())
    if obj.get("ppt") != "vvp":
        raise ValueError("ppt must be 'vvp'")
    for name in ("kid", "evd"):
        if not isinstance(obj.get(name), str) or not obj[name]:
            raise ValueError(f"{name} must be a non-empty string")
    if not _is_int(obj.get("iat")):
        raise ValueError("iat must be an integer")
    exp = obj.get("exp")
    if exp is not None and not _is_int(exp):
        raise ValueError("exp must be an integer")
    return Identity(kid=obj["kid"], evd=obj["evd"], iat=obj["iat"], exp=exp)


def _tn_list(payload: dict[str, Any], name: str) -> list[str]:
    part = payload.get(name)
    tns = part.get("tn") if isinstance(part, dict) else None
    if not isinstance(tns, list) or not tns or not all(isinstance(t, str) for t in tns):
        raise ValueError(f"{name}.tn must be a non-empty list of strings")
    return tns


def parse_passport(jwt: str) -> Passport:
    parts = jwt.strip().split(".")
    if len(parts) != 3 or not all(parts):
        raise ValueError("PASSporT must have three non-empty parts")
    header = _json_object(parts[0])
    payload = _json_object(parts[1])
    if not isinstance(header.get("kid"), str) or not header["kid"]:
        raise ValueError("header kid must be a non-empty string")
    if not _is_int(payload.get("iat")):
        raise ValueError("payload iat must be an integer")
    if payload.get("exp") is not None and not _is_int(payload["exp"]):
        raise ValueError("payload exp must be an integer")
    if len(_tn_list(payload, "orig")) != 1:
        raise ValueError("orig.tn must hold exactly one number")
    _tn_list(payload, "dest")
    return Passport(
        header=header,
        payload=payload,
        signing_input=f"{parts[0]}.{parts[1]}".encode("ascii"),
        signature=parts[2],
    )


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


def _node(
    name: str,
    own: str,
    reasons: list[str] | None = None,
    evidence: list[str] | None = None,
    children: list[tuple[bool, dict[str, Any]]] | None = None,
) -> dict[str, Any]:
    """A claim node; its status is the worst of its own and its REQUIRED children's."""
    kids = children or []
    status = own
    for required, child in kids:
        if required and _SEVERITY[child["status"]] > _SEVERITY[status]:
            status = child["status"]
    return {
        "name": name,
        "status": status,
        "reasons": reasons or [],
        "evidence": evidence or [],
        "children": [{"required": r, "node": c} for r, c in kids],
    }


def _fake_said(*parts: str) -> str:
    # Shaped like a CESR Blake3 SAID ("E" + 43 chars); only stable, not content-derived.
    digest = hashlib.sha256("|".join(parts).encode("utf-8")).digest()
    return "E" + b64url_encode(b"\x00" + digest)[1:]


def _card_brand(card: list[str]) -> tuple[str | None, str | None]:
    name = logo = None
    for line in card:
        key, _, value = line.partition(":")
        if key.upper() == "ORG" and value:
            name = value
        elif key.upper().startswith("LOGO") and value.startswith(("http://", "https://")):
            # partition() split at the first ':', after the parameters: LOGO;VALUE=URI:https://..
            logo = value
    return name, logo


def _response(request_id: str, cache_hit: bool) -> dict[str, Any]:
    return {
        "request_id": request_id,
        "overall_status": INVALID,
        "claims": None,
        "errors": None,
        "brand_name": None,
        "brand_logo_url": None,
        "brand_logo_hash": None,
        "certainty": "none",
        "signer_aid": None,
        "vetter_constraints": None,
        "vetter_warning_reason": None,
        "revocation_pending": False,
        "cache_hit": cache_hit,
    }


def certainty_for(status: str) -> str:
    return {VALID: "full", INDETERMINATE: "partial"}.get(status, "none")


def _early_failure(resp: dict[str, Any], errors: _Errors) -> dict[str, Any]:
    resp["errors"] = errors.items
    return resp


def _check_passport(
    ident: Identity, pp: Passport, trusted: Mapping[str, bytes], now: float, errors: _Errors
) -> dict[str, Any]:
    kid = pp.header["kid"]
    aid = aid_from_oobi(kid)
    alg = pp.header.get("alg")
    reasons: list[str] = []
    status = VALID
    if alg != "EdDSA":
        errors.add("PASSPORT_FORBIDDEN_ALG", f"alg {alg!r} is forbidden; only EdDSA")
        reasons.append("forbidden alg")
        status = INVALID
    elif aid is None or aid not in trusted:
        errors.add("KERI_RESOLUTION_FAILED", f"cannot resolve key state for kid {kid}")
        reasons.append("signer key state unresolved")
        status = INDETERMINATE
    else:
        try:
            sig = decode_cesr_signature(pp.signature)
        except ValueError as exc:
            ok = False
            reasons.append(str(exc))
        else:
            ok = verify_signature(trusted[aid], sig, pp.signing_input)
        if not ok:
            errors.add("PASSPORT_SIG_INVALID", "PASSporT signature does not verify")
            reasons.append("signature invalid")
            status = INVALID

    iat: int = pp.payload["iat"]
    exp: int = pp.payload.get("exp") or iat + MAX_VALIDITY_S
    timing: str | None = None
    if iat > now + CLOCK_SKEW_S:
        timing = f"iat {iat} is more than {CLOCK_SKEW_S} s in the future"
    elif exp - iat > MAX_VALIDITY_S:
        timing = f"exp - iat is {exp - iat} s, more than {MAX_VALIDITY_S} s"
    elif now > exp + CLOCK_SKEW_S:
        timing = f"PASSporT expired at {exp}"
    if timing:
        errors.add("PASSPORT_EXPIRED", timing)
        reasons.append(timing)
        status = INVALID

    binding: str | None = None
    # Same tolerance for exp as for iat (spec), when both carry one.
    if abs(ident.iat - iat) > BINDING_TOLERANCE_S:
        binding = "VVP-Identity iat and PASSporT iat differ"
    elif (
        ident.exp is not None and "exp" in pp.payload and abs(ident.exp - exp) > BINDING_TOLERANCE_S
    ):
        binding = "VVP-Identity exp and PASSporT exp differ"
    elif ident.kid != kid:
        binding = "VVP-Identity kid and PASSporT kid differ"
    elif pp.payload.get("evd") not in (None, ident.evd):
        binding = "VVP-Identity evd and PASSporT evd differ"
    if binding:
        errors.add("PASSPORT_PARSE_FAILED", binding)
        reasons.append(binding)
        status = INVALID
    return _node("passport_verified", status, reasons, [kid])


def _check_context(pp: Passport, body: Mapping[str, Any], errors: _Errors) -> dict[str, Any]:
    context = body.get("context")
    sip = context.get("sip") if isinstance(context, dict) else None
    if not isinstance(sip, dict):
        return _node("context_aligned", INDETERMINATE, ["no SIP context supplied"])
    orig_tn = tn_digits(_tn_list(pp.payload, "orig")[0])
    dest_tns = {tn_digits(t) for t in _tn_list(pp.payload, "dest")}
    problems: list[str] = []
    from_uri, to_uri = sip.get("from_uri"), sip.get("to_uri")
    if not isinstance(from_uri, str) or tn_digits(from_uri) != orig_tn or orig_tn is None:
        problems.append(f"From {from_uri!r} does not match orig.tn")
    to_tn = tn_digits(to_uri) if isinstance(to_uri, str) else None
    if to_tn is None or to_tn not in dest_tns:
        problems.append(f"To {to_uri!r} is not in dest.tn")
    invite_time = sip.get("invite_time")
    if invite_time is not None:
        try:
            delta = abs(pp.payload["iat"] - _parse_time(str(invite_time)))
        except ValueError:
            problems.append(f"invite_time {invite_time!r} is not RFC 3339")
        else:
            if delta > CONTEXT_TOLERANCE_S:
                problems.append(f"iat is {delta:.0f} s from the INVITE time")
    for problem in problems:
        errors.add("CONTEXT_MISMATCH", problem)
    return _node("context_aligned", INVALID if problems else VALID, problems)


def _vetter_constraints(evd: str, orig: str, out_of_area: bool) -> dict[str, Any]:
    digits = tn_digits(orig) or ""
    target = digits[:2]
    said = _fake_said(evd, "TN")
    return {
        said: {
            "credential_said": said,
            "credential_type": "TN",
            "constraint_type": "jurisdiction",
            "target_value": target,
            "allowed_values": ["ZZ"] if out_of_area else [target],
            "is_authorized": not out_of_area,
            "reason": "vetter not certified for this jurisdiction (simulated)"
            if out_of_area
            else "vetter certified for this jurisdiction (simulated)",
        }
    }


def verify(
    vvp_identity_header: str | None,
    body: Mapping[str, Any],
    trusted: Mapping[str, bytes],
    now: float,
    *,
    cache_hit: bool = False,
) -> dict[str, Any]:
    """Simulated verdict for one `/verify` request; `trusted` maps AID -> raw public key."""
    resp = _response(str(uuid.uuid4()), cache_hit)
    errors = _Errors()
    if not vvp_identity_header or not vvp_identity_header.strip():
        errors.add("VVP_IDENTITY_MISSING", "VVP-Identity header is missing")
        return _early_failure(resp, errors)
    try:
        ident = parse_vvp_identity(vvp_identity_header)
    except ValueError as exc:
        errors.add("VVP_IDENTITY_INVALID", f"VVP-Identity: {exc}")
        return _early_failure(resp, errors)
    resp["signer_aid"] = aid_from_oobi(ident.kid)
    jwt = body.get("passport_jwt")
    if not isinstance(jwt, str) or not jwt:
        errors.add("PASSPORT_MISSING", "passport_jwt is empty")
        return _early_failure(resp, errors)
    try:
        pp = parse_passport(jwt)
    except (ValueError, UnicodeEncodeError) as exc:
        errors.add("PASSPORT_PARSE_FAILED", f"PASSporT: {exc}")
        return _early_failure(resp, errors)
    resp["signer_aid"] = aid_from_oobi(pp.header["kid"]) or resp["signer_aid"]

    passport = _check_passport(ident, pp, trusted, now, errors)
    evd = str(pp.payload.get("evd") or ident.evd)
    card = pp.payload.get("card")
    has_card = isinstance(card, list) and bool(card)
    unreachable = UNREACHABLE_MARKER in evd
    out_of_area = OUT_OF_JURISDICTION_MARKER in evd
    dossier_state = INDETERMINATE if unreachable else VALID
    if unreachable and not has_card:
        errors.add("DOSSIER_FETCH_FAILED", f"cannot fetch dossier {evd}")
    fetch_reason = ["dossier unreachable"] if unreachable else []
    dossier = _node(
        "dossier_verified",
        VALID,
        evidence=[evd],
        children=[
            (True, _node("chain_verified", dossier_state, fetch_reason)),
            (True, _node("revocation_clear", dossier_state, fetch_reason)),
        ],
    )
    signer_known = resp["signer_aid"] in trusted
    party = dossier_state if signer_known else INDETERMINATE
    authorization = _node(
        "authorization_valid",
        VALID,
        children=[
            (True, _node("party_authorized", party, [] if party == VALID else ["not checked"])),
            (True, _node("tn_rights_valid", dossier_state, fetch_reason)),
        ],
    )
    context = _check_context(pp, body, errors)
    children = [(True, passport), (True, dossier), (True, authorization), (True, context)]

    brand_name = brand_logo = None
    brand_status: str | None = None
    if has_card:
        assert isinstance(card, list)
        if unreachable:
            errors.add("BRAND_CREDENTIAL_INVALID", "brand credential cannot be verified")
            brand_status = INVALID
        else:
            brand_status = VALID if passport["status"] == VALID else INDETERMINATE
        brand_name, brand_logo = _card_brand([str(line) for line in card])
        children.append((False, _node("brand_verified", brand_status, evidence=[evd])))
    if not unreachable:
        resp["vetter_constraints"] = _vetter_constraints(
            evd, _tn_list(pp.payload, "orig")[0], out_of_area
        )
    if out_of_area:
        children.append((False, _node("vetter_constraints_valid", INVALID, [JURISDICTION_WARNING])))

    root = _node("caller_authorised", VALID, children=children)
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
    if brand_status == VALID:
        resp["brand_name"], resp["brand_logo_url"] = brand_name, brand_logo
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
