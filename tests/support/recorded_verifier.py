"""The answers recorded from the real VVP verifier (tests/fixtures/real_verifier/) and how
to ask the simulator what each recorded case asked the real one."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.support.verifier_shapes import verify_body
from vvp_simulator.keys import b64url_decode
from vvp_simulator.passport import DEMO_ISSUER, MintedIdentity, sign_jwt

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "real_verifier"
ORIG = "+441923311001"
DEST = "+441923311011"


def load(case: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((FIXTURES / f"{case}.json").read_text(encoding="utf-8"))
    return data


def recorded_cases() -> list[str]:
    return sorted(p.stem for p in FIXTURES.glob("*.json"))


def request(m: MintedIdentity, *, jwt: str | None = None, sip: bool = True) -> dict[str, Any]:
    return verify_body(m, jwt=jwt, sip=sip, cseq=1, call_id="c@interop")


def changed_header(m: MintedIdentity, change: Callable[[dict[str, Any]], None]) -> str:
    head, payload, _ = m.passport_jwt.split(".")
    header = json.loads(b64url_decode(head))
    change(header)
    return sign_jwt(header, json.loads(b64url_decode(payload)), DEMO_ISSUER)


def changed_payload(m: MintedIdentity, change: Callable[[dict[str, Any]], None]) -> str:
    head, payload_part, _ = m.passport_jwt.split(".")
    payload = json.loads(b64url_decode(payload_part))
    change(payload)
    return sign_jwt(json.loads(b64url_decode(head)), payload, DEMO_ISSUER)


@dataclass(frozen=True)
class Case:
    """How to ask the simulator what the recorded case asked the real verifier."""

    kind: str = "brand"
    sig_form: str = "cesr"
    # The recording's circumstances (from the fixtures' README): the dossier was verified
    # by an earlier call; its revocation data was older than the re-check interval.
    cached: bool = False
    stale: bool = False
    sip: bool = True
    tamper: Callable[[MintedIdentity], str] | None = None
    from_number: str | None = None


def _flip_signature(m: MintedIdentity) -> str:
    head, payload, sig = m.passport_jwt.split(".")
    i = len(sig) // 2
    return f"{head}.{payload}.{sig[:i]}{'B' if sig[i] != 'B' else 'C'}{sig[i + 1 :]}"


def _typ_foo(m: MintedIdentity) -> str:
    return changed_header(m, lambda h: h.update(typ="foo"))


def _no_kid(m: MintedIdentity) -> str:
    return changed_header(m, lambda h: h.pop("kid"))


def _no_evd(m: MintedIdentity) -> str:
    return changed_payload(m, lambda p: p.pop("evd"))


CASES: dict[str, Case] = {
    "valid_first": Case(),
    "valid": Case(cached=True),
    "valid_jws_signature": Case(sig_form="jws", cached=True),
    "tampered_signature": Case(tamper=_flip_signature),
    "wrong_from": Case(cached=True, from_number="+441923311002"),
    "parse_typ_not_jwt_no_sip": Case(tamper=_typ_foo, sip=False),
    "warning_vetter_scope": Case(kind="warning"),
    "stale_revocation": Case(cached=True, stale=True),
    # The verifier crashes on these (HTTP 500): compared over HTTP below.
    "parse_typ_not_jwt": Case(tamper=_typ_foo),
    "parse_header_no_kid": Case(tamper=_no_kid),
    "parse_payload_no_evd": Case(tamper=_no_evd),
}
CRASHES = ("parse_typ_not_jwt", "parse_header_no_kid", "parse_payload_no_evd")
