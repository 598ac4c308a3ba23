"""The VVP verifier SIMULATOR against answers recorded from the real VVP verifier.

tests/fixtures/real_verifier/ holds real `POST /verify` answers (see its README). For each,
the simulator answers the same kind of request and the two must agree on everything but
identities and times: the same keys in the same order, the same type for every field
(null and a string alike where the verifier's model declares the field Optional), the same
claim tree (names, required flags, statuses, reasons, kinds of evidence), the same error
codes, recoverability and messages, the same ToIP warnings and vetter constraints, and
for the crashes the same HTTP status, content type, body and connection handling. So the
simulator cannot drift from the real verifier silently: a change on either side fails here.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from vvp_simulator.answer import DossierCache, simulated_verdict
from vvp_simulator.faults import Faults
from vvp_simulator.keys import b64url_decode, trusted_keys
from vvp_simulator.passport import DEMO_ISSUER, MintedIdentity, mint, sign_jwt
from vvp_simulator.server import SimulatorSettings, start

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "real_verifier"
ORIG = "+441923311001"
DEST = "+441923311011"
TRUSTED = trusted_keys(["vvp-demo-issuer"])

# Fields the verifier's VerifyResponse model (and its nested models) declares Optional[str]:
# a recorded null and a simulated string (or the reverse) are the same type there.
OPTIONAL_STRINGS = frozenset(
    {
        "signer_aid",
        "brand_name",
        "brand_logo_url",
        "brand_logo_hash",
        "vetter_warning_reason",
        "legal_name",
        "lei",
        "source_said",
        "credential_role",
        "said",
        "field_path",
        "vetter_certification_said",
        "display_name",
        "root_aid",
    }
)
# Compared by value (the rest by type): verdict, certainty, flags, the vetter's rule.
BY_VALUE = frozenset(
    {
        "overall_status",
        "certainty",
        "revocation_pending",
        "cache_hit",
        "has_variant_limitations",
        "vetter_warning_reason",
        "delegation_chain",
    }
)


def load(case: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((FIXTURES / f"{case}.json").read_text(encoding="utf-8"))
    return data


def recorded_cases() -> list[str]:
    return sorted(p.stem for p in FIXTURES.glob("*.json"))


# --- what "the same" means ---------------------------------------------------------------


def shape(value: Any, name: str = "") -> Any:
    """A value's type structure: dict keys (in order) with their shapes; one shape per list."""
    if isinstance(value, dict):
        if name in ("issuer_identities", "vetter_constraints"):  # keyed by AID / SAID
            return ["map", sorted({json.dumps(shape(v), sort_keys=True) for v in value.values()})]
        return [[k, shape(v, k)] for k, v in value.items()]
    if isinstance(value, list):
        return ["list", sorted({json.dumps(shape(v, name), sort_keys=True) for v in value})]
    if name in OPTIONAL_STRINGS and (value is None or isinstance(value, str)):
        return "str?"
    return type(value).__name__


def normal_text(text: str) -> str:
    """A message without its particulars: URLs, quoted values, digits, SAIDs."""
    text = re.sub(r"https?://\S+", "URL", text)
    text = re.sub(r"'[^']*'", "'_'", text)
    text = re.sub(r"\b[A-Z][A-Za-z0-9_-]{11,}", "SAID", text)
    return re.sub(r"\d+", "0", text)


def evidence_kinds(items: list[str]) -> list[str]:
    """Kinds of evidence in order, repeats folded: 'active:E..|..' x7 -> 'active'."""
    kinds: list[str] = []
    for item in items:
        kind = re.split(r"[:=]", item, maxsplit=1)[0]
        if not kinds or kinds[-1] != kind:
            kinds.append(kind)
    return kinds


def tree(node: dict[str, Any], required: bool = True) -> dict[str, Any]:
    return {
        "name": node["name"],
        "required": required,
        "status": node["status"],
        "reasons": [normal_text(r) for r in node["reasons"]],
        "evidence": evidence_kinds(node["evidence"]),
        "children": [tree(c["node"], c["required"]) for c in node["children"]],
    }


def comparable(body: dict[str, Any]) -> dict[str, Any]:
    """What must be equal between a recorded and a simulated answer."""
    out: dict[str, Any] = {
        "keys": list(body),
        "shape": shape(body),
        "values": {k: body[k] for k in BY_VALUE},
        "errors": [
            (e["code"], e["recoverable"], normal_text(e["message"])) for e in body["errors"] or []
        ],
        "claims": [tree(c) for c in body["claims"] or []],
        "toip_warnings": [
            (w["code"], w["message"], w["field_path"]) for w in body["toip_warnings"] or []
        ],
        "identities": len(body["issuer_identities"] or {}),
        "vetter_constraints": [
            {k: v for k, v in c.items() if not k.endswith("_said")}
            for c in (body["vetter_constraints"] or {}).values()
        ],
    }
    return out


# --- the simulator's side of each recorded case ------------------------------------------


def request(m: MintedIdentity, *, jwt: str | None = None, sip: bool = True) -> dict[str, Any]:
    now = datetime.now(UTC).isoformat()
    context: dict[str, Any] = {"call_id": "c@interop", "received_at": now}
    if sip:
        context["sip"] = {
            "from_uri": f"sip:{m.orig}@carrier.example",
            "to_uri": f"sip:{m.dest}@carrier.example",
            "invite_time": now,
            "cseq": 1,
        }
    return {"passport_jwt": m.passport_jwt if jwt is None else jwt, "context": context}


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


def simulate(case: Case) -> dict[str, Any]:
    m = mint(case.kind, ORIG, DEST, sig_form=case.sig_form)
    if case.from_number is not None:
        m = MintedIdentity(m.passport_jwt, m.vvp_identity, m.kid, case.from_number, m.dest, m.kind)
    body = request(m, jwt=case.tamper(m) if case.tamper else None, sip=case.sip)
    cache = DossierCache()
    now = datetime.now(UTC).timestamp()
    if case.cached:  # an earlier call on the same dossier, with a fresh identity
        earlier = mint(case.kind, ORIG, DEST)
        simulated_verdict(cache, TRUSTED, Faults(), earlier.vvp_identity, request(earlier), now)
    faults = Faults(stale_revocation_every_s=1.0 if case.stale else 0.0)
    later = now + 2.0 if case.stale else now
    return simulated_verdict(cache, TRUSTED, faults, m.vvp_identity, body, later)


# --- the tests -----------------------------------------------------------------------------


def test_every_recorded_case_is_compared() -> None:
    assert recorded_cases(), f"no recorded answers in {FIXTURES}"
    assert set(recorded_cases()) == set(CASES)


def test_recorded_answers_are_real_verifier_answers() -> None:
    # Guard against a fixture edited by hand into agreement: each keeps its provenance.
    for case in recorded_cases():
        data = load(case)
        assert data["case"] == case
        assert data["headers"]["server"] == "uvicorn"
        assert set(data) >= {"request", "http_status", "content_type", "headers", "body"}


@pytest.mark.parametrize("case", sorted(set(CASES) - set(CRASHES)))
def test_simulator_answers_as_the_real_verifier(case: str) -> None:
    real = load(case)
    assert real["http_status"] == 200 and real["content_type"] == "application/json"
    sim = simulate(CASES[case])
    expected, got = comparable(real["body"]), comparable(sim)
    for part in expected:
        assert got[part] == expected[part], f"{case}: {part} differs from the real verifier"


@pytest.fixture
async def crashing_simulator() -> AsyncIterator[int]:
    server, port = await start(SimulatorSettings(port=0, faults=Faults(parser_crash=True)))
    try:
        yield port
    finally:
        await server.close()


async def _exchange(port: int, body: dict[str, Any], vvp_identity: str) -> tuple[str, bytes]:
    """One keep-alive request; (status line and headers, body), then whether it closed."""
    payload = json.dumps(body).encode()
    head = (
        f"POST /verify HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(payload)}\r\nVVP-Identity: {vvp_identity}\r\n\r\n"
    ).encode()
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(head + payload)
        raw_head = (await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)).decode("latin-1")
        length = int(re.search(r"(?im)^content-length:\s*(\d+)", raw_head).group(1))  # type: ignore[union-attr]
        raw_body = await asyncio.wait_for(reader.readexactly(length), 5)
        # The next request on this keep-alive connection: closed or reset, as recorded.
        with contextlib.suppress(ConnectionError):
            writer.write(head + payload)
            await writer.drain()
        with contextlib.suppress(ConnectionError):
            assert await asyncio.wait_for(reader.read(), 5) == b"", "connection left open"
    finally:
        writer.close()
        with contextlib.suppress(ConnectionError):
            await writer.wait_closed()
    return raw_head, raw_body


@pytest.mark.parametrize("case", CRASHES)
async def test_simulator_crashes_as_the_real_verifier(case: str, crashing_simulator: int) -> None:
    real = load(case)
    assert real["http_status"] == 500 and "closed" in real["connection_after"]
    m = mint("brand", ORIG, DEST)
    tamper = CASES[case].tamper
    assert tamper is not None
    raw_head, raw_body = await _exchange(
        crashing_simulator, request(m, jwt=tamper(m)), m.vvp_identity
    )
    status = int(raw_head.split()[1])
    fields = {
        line.split(":", 1)[0].strip().lower(): line.split(":", 1)[1].strip()
        for line in raw_head.split("\r\n")[1:]
        if ":" in line
    }
    assert status == real["http_status"]
    assert fields["content-type"] == real["content_type"]
    assert raw_body.decode() == real["body"]
    # The real answer has no Connection header: neither keep-alive nor close.
    assert "connection" not in real["headers"] and "connection" not in fields
