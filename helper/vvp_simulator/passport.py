"""Minting VVP PASSporTs and VVP-Identity values for the verifier SIMULATOR.

Each `kind` produces a PASSporT that the simulator (and, for the signature and
timing kinds, a real verifier) judges in a known way, so tests and sipp runs can
exercise every verdict an edge must handle.
"""

from __future__ import annotations

import json
import time
import uuid
from dataclasses import dataclass
from typing import Any

from vvp_simulator.keys import (
    DEFAULT_WITNESS,
    DEMO_ISSUER_SEED,
    SIG_FORMS,
    TRANSFERABLE,
    SigningKey,
    b64url_encode,
    encode_signature,
)

KINDS: tuple[str, ...] = (
    "valid",
    "brand",
    "expired",
    "future",
    "forged",
    "wrong-key",
    "unknown-signer",
    "wrong-number",
    "indeterminate",
    "warning",
    "delegated",
)

DEMO_ISSUER = SigningKey.from_seed_text(DEMO_ISSUER_SEED)
# Keys the simulator does not trust by default; public seeds, demo only.
ATTACKER_KEY = SigningKey.from_seed_text("vvp-demo-attacker")
UNKNOWN_KEY = SigningKey.from_seed_text("vvp-demo-unknown-issuer")

DOSSIER_BASE = "http://dossier.demo.example"
# Path markers the simulator's verdict logic recognises (see verdict.py).
UNREACHABLE_MARKER = "/unreachable/"
OUT_OF_JURISDICTION_MARKER = "/out-of-jurisdiction/"
DELEGATED_MARKER = "/delegated/"  # the signer is a delegate of the organisation's AID

# The logo's integrity hash as the VVP issuer writes it (a Blake3 SAID in the LOGO line's
# HASH parameter); the verifier answers it as brand_logo_hash. Demo value, not a real digest.
DEMO_LOGO_HASH = "EO_zHbyP7KiIf1Zfz04eEEbal89nbkA1pyfvNv09SqT3"
DEMO_LOGO_URL = "https://brand.demo.example/acme.png"
DEMO_CARD: tuple[str, ...] = (
    "ORG:Acme Bank",
    "NICKNAME:Acme",
    f"LOGO;HASH={DEMO_LOGO_HASH};VALUE=URI:{DEMO_LOGO_URL}",
)

VALIDITY_S = 300  # spec maximum for exp - iat, seconds
_SKEWED_S = 900  # well beyond the 300 s clock skew tolerance, seconds
# Added to dest by the `forged` kind: a tamper that leaves the SIP context consistent.
_FORGED_EXTRA_DEST = "+19005550100"


def compact_json(obj: Any) -> bytes:
    return json.dumps(obj, separators=(",", ":"), sort_keys=False).encode("utf-8")


@dataclass(frozen=True, slots=True)
class MintedIdentity:
    """A minted PASSporT and VVP-Identity; `orig` is the number to put in From."""

    passport_jwt: str
    vvp_identity: str
    kid: str
    orig: str
    dest: str
    kind: str

    def identity_header(self) -> str:
        """RFC 8224 Identity header value as VVP issuers write it."""
        return f"{self.passport_jwt};info=<{self.kid}>;alg=EdDSA;ppt=vvp"


def encode_vvp_identity(kid: str, evd: str, iat: int, exp: int | None) -> str:
    obj: dict[str, Any] = {"ppt": "vvp", "kid": kid, "evd": evd, "iat": iat}
    if exp is not None:
        obj["exp"] = exp
    return b64url_encode(compact_json(obj))


def sign_jwt(
    header: dict[str, Any], payload: dict[str, Any], key: SigningKey, sig_form: str = "cesr"
) -> str:
    """A compact JWT signed by `key`; sig_form "cesr" (as the VVP issuer writes) or "jws"."""
    signing_input = b64url_encode(compact_json(header)) + "." + b64url_encode(compact_json(payload))
    sig = encode_signature(key.sign(signing_input.encode("ascii")), sig_form)
    return signing_input + "." + sig


def _change_last_digit(number: str) -> str:
    if not number or not number[-1].isdigit():
        raise ValueError(f"cannot derive a wrong number from {number!r}")
    return number[:-1] + str((int(number[-1]) + 1) % 10)


def mint(
    kind: str,
    orig: str,
    dest: str,
    *,
    now: int | None = None,
    key: SigningKey = DEMO_ISSUER,
    witness: str = DEFAULT_WITNESS,
    sig_form: str = "cesr",
    aid_code: str = TRANSFERABLE,
) -> MintedIdentity:
    """Mint a PASSporT of the given kind (one of KINDS) for a call orig -> dest.

    sig_form: "cesr" (88 characters, as the VVP issuer writes) or "jws" (plain base64url);
    aid_code: "D" (transferable) or "B" (non-transferable) for the signer's AID in the kid.
    """
    if kind not in KINDS:
        raise ValueError(f"unknown kind {kind!r}; expected one of {', '.join(KINDS)}")
    if sig_form not in SIG_FORMS:
        raise ValueError(f"sig_form must be one of {', '.join(SIG_FORMS)}")
    for label, value in (("orig", orig), ("dest", dest)):
        if not value or ";" in value or "," in value:
            raise ValueError(f"{label} must be a non-empty number without ';' or ','")
    now = int(time.time()) if now is None else int(now)

    signer = key
    named = key  # the key the kid points at
    if kind == "wrong-key":
        signer = ATTACKER_KEY
    elif kind == "unknown-signer":
        signer = named = UNKNOWN_KEY
    kid = named.oobi(witness, aid_code)

    iat = now
    if kind == "expired":
        iat = now - _SKEWED_S
    elif kind == "future":
        iat = now + _SKEWED_S
    exp = iat + VALIDITY_S

    dossier_dir = "dossier"
    if kind == "indeterminate":
        dossier_dir = UNREACHABLE_MARKER.strip("/")
    elif kind == "warning":
        dossier_dir = OUT_OF_JURISDICTION_MARKER.strip("/")
    elif kind == "delegated":
        dossier_dir = DELEGATED_MARKER.strip("/")
    evd = f"{DOSSIER_BASE}/{dossier_dir}/{named.aid_for(aid_code)}"

    # typ "JWT" as the VVP issuer writes it (the verifier also accepts "passport").
    header = {"alg": "EdDSA", "ppt": "vvp", "kid": kid, "typ": "JWT"}
    payload: dict[str, Any] = {
        "iat": iat,
        "exp": exp,
        "orig": {"tn": [_change_last_digit(orig) if kind == "wrong-number" else orig]},
        "dest": {"tn": [dest]},
        "evd": evd,
        # A unique id per PASSporT, as issuers write them: two calls minted in the same
        # second are still two different PASSporTs (an edge's replay check tells them apart).
        "origid": str(uuid.uuid4()),
    }
    if kind in ("brand", "warning"):
        # The vetter warning is about the brand credential's jurisdiction: its PASSporT
        # carries the brand, as the real issuer's do.
        payload["card"] = list(DEMO_CARD)

    jwt = sign_jwt(header, payload, signer, sig_form)
    if kind == "forged":
        # Re-encode the payload after signing: the signature no longer covers it.
        payload["dest"] = {"tn": [dest, _FORGED_EXTRA_DEST]}
        head, _, sig = jwt.split(".")
        jwt = ".".join((head, b64url_encode(compact_json(payload)), sig))

    return MintedIdentity(
        passport_jwt=jwt,
        vvp_identity=encode_vvp_identity(kid, evd, iat, exp),
        kid=kid,
        orig=orig,
        dest=dest,
        kind=kind,
    )
