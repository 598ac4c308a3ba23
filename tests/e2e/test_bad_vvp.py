"""Malformed VVP identities, and hostile verifier answers, through the whole edge.

sipp -> real Kamailio -> helper -> verifier simulator. Each row of ``BAD_IDENTITIES`` is a
set of SIP headers and the answer the policy gives for it: ``invalid`` (403 + the error
code the edge's own pre-check finds, without asking the verifier), ``missing`` (302 +
MISSING), or ``valid`` where the input is odd but fine. Identities are built with the
simulator's own signing code, so signatures are real wherever the signature matters.

The second half turns the simulator's ``inject`` fault on (CR/LF in brand_name and error
messages, a javascript: logo URL) and sends CR/LF/NUL/non-ASCII in the From user part and
odd characters in the Call-ID: no header may be added, no value may carry CR or LF.
"""

from __future__ import annotations

import base64
import json
import re
import socket
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from tests.support.edge import Edge
from tests.support.harness import DEFAULT_POLICY, Simulator, SipMessage, SippRun
from vvp_simulator.keys import DEFAULT_WITNESS
from vvp_simulator.passport import (
    DEMO_ISSUER,
    DOSSIER_BASE,
    MintedIdentity,
    mint,
    sign_jwt,
)

pytestmark = pytest.mark.e2e

ORIG = "+441923311001"
DEST = "+441923311006"
KID = DEMO_ISSUER.oobi(DEFAULT_WITNESS)
EVD = f"{DOSSIER_BASE}/dossier/{DEMO_ISSUER.aid}"

# policy/default.yaml plus headers that echo verifier and caller text back to the peer.
EXTRA_HEADERS = {
    "on_valid": {"X-Logo": "{brand_logo_url}", "X-VVP-Call-Id": "{call_id}"},
    "on_invalid": {"X-VVP-Error-Message": "{errors[0].message}"},
    "on_indeterminate": {"X-VVP-Error-Message": "{errors[0].message}"},
    "on_missing": {
        "X-VVP-Caller": "{from_name}",
        "X-VVP-Orig": "{orig}",
        "X-VVP-From": "{from_uri}",
        "X-VVP-Call-Id": "{call_id}",
    },
}


def write_policy(path: Path) -> Path:
    text = DEFAULT_POLICY.read_text()
    for section, headers in EXTRA_HEADERS.items():
        # Each section's "headers:" mapping is indented by 4; add ours at its end.
        block = re.search(rf"\n  {section}:\n(?:    .*\n|\s*#.*\n|\s*\n)*?    headers:\n"
                          r"(?:      .*\n)+", text)  # fmt: skip
        assert block, section
        added = "".join(f'      {name}: "{value}"\n' for name, value in headers.items())
        text = text[: block.end()] + added + text[block.end() :]
    path.write_text(text)
    return path


@pytest.fixture(scope="module")
def edge_policy(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_policy(tmp_path_factory.mktemp("bad-vvp") / "echo-policy.yaml")


def only_final(run: SippRun) -> SipMessage:
    finals = run.finals()
    assert len(finals) == 1, f"expected exactly one final answer, got {finals}\n{run.stdout}"
    return finals[0]


# ---------------------------------------------------------------------------------------
# Building identities


def b64(data: bytes | str) -> str:
    raw = data.encode() if isinstance(data, str) else data
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def b64json(obj: object) -> str:
    return b64(json.dumps(obj, separators=(",", ":")))


def jwt_parts(
    header: dict[str, Any] | None = None, payload: dict[str, Any] | None = None, now: int = 0
) -> tuple[dict[str, Any], dict[str, Any]]:
    iat = now or int(time.time())
    base_header: dict[str, Any] = {"alg": "EdDSA", "ppt": "vvp", "kid": KID, "typ": "passport"}
    base_payload: dict[str, Any] = {
        "iat": iat,
        "exp": iat + 300,
        "orig": {"tn": [ORIG]},
        "dest": {"tn": [DEST]},
        "evd": EVD,
        "origid": str(uuid.uuid4()),
    }
    return {**base_header, **(header or {})}, {**base_payload, **(payload or {})}


def signed(header: dict[str, Any] | None = None, payload: dict[str, Any] | None = None) -> str:
    """A PASSporT really signed by the demo issuer, with these changes to header/payload."""
    h, p = jwt_parts(header, payload)
    return sign_jwt(h, p, DEMO_ISSUER)


def identity(jwt: str, params: str = ";info=<{kid}>;alg=EdDSA;ppt=vvp") -> str:
    return f"Identity: {jwt}{params.format(kid=KID)}"


def p_vvp(vvp_identity: str, jwt: str) -> list[str]:
    return [f"P-VVP-Identity: {vvp_identity}", f"P-VVP-Passport: {jwt}"]


def vi(iat: int | None = None, **changes: Any) -> str:
    """A VVP-Identity value (base64url JSON) with these changes."""
    iat = int(time.time()) if iat is None else iat
    obj: dict[str, Any] = {"ppt": "vvp", "kid": KID, "evd": EVD, "iat": iat, "exp": iat + 300}
    obj.update(changes)
    return b64json({k: v for k, v in obj.items() if v is not None})


def vi_raw(**fields: Any) -> str:
    """A VVP-Identity value with exactly ppt/kid/evd plus these fields (no exp)."""
    return b64json({"ppt": "vvp", "kid": KID, "evd": EVD, **fields})


def fresh() -> MintedIdentity:
    return mint("valid", ORIG, DEST)


# ---------------------------------------------------------------------------------------
# The corpus


@dataclass(frozen=True)
class Bad:
    name: str
    headers: list[str]
    outcome: str  # invalid | missing | valid
    error: str | None = None  # X-VVP-Error for invalid
    sipp: dict[str, Any] = field(default_factory=dict)  # extra invite_expecting arguments
    xfail: str | None = None  # the edge does not give the policy's answer: see the reason


def _corpus() -> list[Bad]:
    now = int(time.time())
    good = fresh()
    other = fresh()  # same call, a second (different) PASSporT
    long_kid = f"{DEFAULT_WITNESS}/oobi/{'E' * 3000}/controller"
    drift = sign_jwt(*jwt_parts(now=now), DEMO_ISSUER)
    return [
        # --- P-VVP-Identity that does not decode
        Bad("P-VVP-Identity not base64url", p_vvp("!!not*base64url!!", good.passport_jwt),
            "invalid", "VVP_IDENTITY_INVALID"),
        Bad("P-VVP-Identity JSON array", p_vvp(b64json([1, 2, 3]), good.passport_jwt),
            "invalid", "VVP_IDENTITY_INVALID"),
        Bad("P-VVP-Identity JSON string", p_vvp(b64json("vvp"), good.passport_jwt),
            "invalid", "VVP_IDENTITY_INVALID"),
        Bad("P-VVP-Identity not JSON", p_vvp(b64("{ppt: vvp"), good.passport_jwt),
            "invalid", "VVP_IDENTITY_INVALID"),
        Bad("P-VVP-Identity iat as string", p_vvp(vi_raw(iat=str(now)), good.passport_jwt),
            "invalid", "VVP_IDENTITY_INVALID"),
        Bad("P-VVP-Identity iat as float", p_vvp(vi_raw(iat=now + 0.5), good.passport_jwt),
            "invalid", "VVP_IDENTITY_INVALID"),
        Bad("P-VVP-Identity iat boolean", p_vvp(vi_raw(iat=True), good.passport_jwt),
            "invalid", "VVP_IDENTITY_INVALID"),
        Bad("P-VVP-Identity iat 2**64", p_vvp(vi(iat=2**64), good.passport_jwt),
            "invalid", "VVP_IDENTITY_INVALID"),
        Bad("P-VVP-Identity kid 3000 characters", p_vvp(vi(kid=long_kid), good.passport_jwt),
            "invalid", "VVP_IDENTITY_INVALID"),
        Bad("P-VVP-Identity kid javascript:", p_vvp(vi(kid="javascript:alert(1)"),
                                                    good.passport_jwt),
            "invalid", "VVP_IDENTITY_INVALID"),
        Bad("P-VVP-Identity kid with NUL", p_vvp(vi(kid=KID + "\x00x"), good.passport_jwt),
            "invalid", "VVP_IDENTITY_INVALID"),
        Bad("P-VVP-Identity ppt shaken", p_vvp(vi(ppt="shaken"), good.passport_jwt),
            "invalid", "VVP_IDENTITY_INVALID"),
        Bad("P-VVP-Identity evd missing", p_vvp(vi(evd=None), good.passport_jwt),
            "invalid", "VVP_IDENTITY_INVALID"),
        Bad("two different P-VVP-Identity values",
            [f"P-VVP-Identity: {good.vvp_identity}", f"P-VVP-Identity: {vi(iat=now - 1)}",
             f"P-VVP-Passport: {good.passport_jwt}"],
            "invalid", "VVP_IDENTITY_INVALID"),
        Bad("P-VVP-Identity without a PASSporT", [f"P-VVP-Identity: {good.vvp_identity}"],
            "invalid", "PASSPORT_MISSING"),
        # --- PASSporTs that do not decode
        Bad("truncated JWT", [identity(good.passport_jwt[: len(good.passport_jwt) // 2])],
            "invalid", "PASSPORT_PARSE_FAILED"),
        Bad("JWT without its signature", [identity(good.passport_jwt.rsplit(".", 1)[0] + ".")],
            "invalid", "PASSPORT_PARSE_FAILED"),
        Bad("three-part string that is not a JWT", [identity("abc.def.ghi")],
            "invalid", "PASSPORT_PARSE_FAILED"),
        Bad("four-part JWT", [identity(good.passport_jwt + ".extra")],
            "invalid", "PASSPORT_PARSE_FAILED"),
        Bad("payload iat as string (signed)", [identity(signed(payload={"iat": str(now)}))],
            "invalid", "PASSPORT_PARSE_FAILED"),
        Bad("payload iat as float (signed)", [identity(signed(payload={"iat": now + 0.25}))],
            "invalid", "PASSPORT_PARSE_FAILED"),
        Bad("payload iat negative (signed)", [identity(signed(payload={"iat": -1}))],
            "invalid", "PASSPORT_PARSE_FAILED"),
        Bad("payload orig with two numbers (signed)",
            [identity(signed(payload={"orig": {"tn": [ORIG, DEST]}}))],
            "invalid", "PASSPORT_PARSE_FAILED"),
        Bad("payload dest tn a string (signed)",
            [identity(signed(payload={"dest": {"tn": DEST}}))],
            "invalid", "PASSPORT_PARSE_FAILED"),
        Bad("payload a JSON array",
            [identity(f"{b64json(jwt_parts()[0])}.{b64json([1])}.{good.passport_jwt.split('.')[2]}")],
            "invalid", "PASSPORT_PARSE_FAILED"),
        Bad("header kid 3000 characters (signed)", [identity(signed(header={"kid": long_kid}))],
            "invalid", "VVP_IDENTITY_INVALID"),
        Bad("P-VVP-Passport wrapped garbage", p_vvp(good.vvp_identity, "<not.a.jwt!>"),
            "invalid", "PASSPORT_PARSE_FAILED"),
        Bad("Identity with no ppt and an undecodable token", ["Identity: garbage"],
            "invalid", "PASSPORT_PARSE_FAILED"),
        # --- algorithms
        Bad("alg none in the JWT header (signed)", [identity(signed(header={"alg": "none"}))],
            "invalid", "PASSPORT_FORBIDDEN_ALG"),
        Bad("alg=none Identity parameter",
            [identity(good.passport_jwt, ";info=<{kid}>;alg=none;ppt=vvp")],
            "invalid", "PASSPORT_FORBIDDEN_ALG"),
        Bad("alg ES256 with ppt vvp in the JWT (signed)",
            [identity(signed(header={"alg": "ES256"}))], "invalid", "PASSPORT_FORBIDDEN_ALG"),
        Bad("alg=ES256 Identity parameter with ppt=vvp",
            [identity(good.passport_jwt, ";info=<{kid}>;alg=ES256;ppt=vvp")],
            "invalid", "PASSPORT_FORBIDDEN_ALG"),
        # --- several headers
        Bad("duplicated identical Identity headers",
            [identity(good.passport_jwt), identity(good.passport_jwt)], "valid"),
        Bad("conflicting Identity headers (two real PASSporTs)",
            [identity(good.passport_jwt), identity(other.passport_jwt)],
            "invalid", "PASSPORT_PARSE_FAILED"),
        Bad("Identity and P-VVP-Passport disagreeing",
            [identity(good.passport_jwt), f"P-VVP-Passport: {other.passport_jwt}"],
            "invalid", "PASSPORT_PARSE_FAILED"),
        Bad("17 Identity headers", [identity(good.passport_jwt)] * 17,
            "invalid", "PASSPORT_PARSE_FAILED"),
        Bad("Identity header of 9 KB (kid 6000 characters, signed)",
            [identity(signed(header={"kid": f"{DEFAULT_WITNESS}/oobi/{'E' * 6000}/controller"}))],
            # Longer than a header value the helper decodes (8 KiB): refused unread.
            "invalid", "PASSPORT_PARSE_FAILED"),
        # --- timing and binding
        Bad("P-VVP-Identity iat 10 s after the PASSporT's",
            p_vvp(vi(iat=now + 10), drift), "invalid", "PASSPORT_PARSE_FAILED"),
        Bad("P-VVP-Identity kid differs from the PASSporT's",
            p_vvp(vi(iat=now, kid=f"{DEFAULT_WITNESS}/oobi/EOther/controller"), drift),
            "invalid", "PASSPORT_PARSE_FAILED"),
        Bad("validity of one hour (signed)", [identity(signed(payload={"exp": now + 3600}))],
            "invalid", "PASSPORT_EXPIRED"),
        Bad("exp before iat (signed)", [identity(signed(payload={"exp": now - 10}))],
            "invalid", "PASSPORT_PARSE_FAILED"),
        Bad("iat a day ago (signed)",
            [identity(signed(payload={"iat": now - 86400, "exp": now - 86100}))],
            "invalid", "PASSPORT_EXPIRED"),
        # --- not VVP at all
        Bad("Identity of another PASSporT type", [identity("a.b.c", ";info=<https://x.example/c>;ppt=div")],
            "missing"),
        Bad("SHAKEN identity with an unreadable token",
            ["Identity: x.y.z;info=<https://cert.example/x.pem>;alg=ES256;ppt=shaken"], "missing"),
        # --- numbers in odd formats, valid identity
        Bad("From with visual separators", [identity(fresh().passport_jwt)], "valid",
            sipp={"from_user": "+44-1923-311-001"}),
        Bad("From as a tel: URI with visual separators", [identity(fresh().passport_jwt)],
            "valid", sipp={"replace": {
                f"<sip:{ORIG}@[local_ip]:[local_port]>;tag=": "<tel:+44-1923-(311)-001>;tag="}}),
    ]  # fmt: skip


BAD_IDENTITIES = _corpus()
CASE_COUNT = len(BAD_IDENTITIES)


@pytest.mark.parametrize(
    "index",
    [
        pytest.param(
            i,
            id=b.name,
            marks=[pytest.mark.xfail(strict=True, reason=b.xfail)] if b.xfail else [],
        )
        for i, b in enumerate(BAD_IDENTITIES)
    ],
)
def test_bad_identity_gets_the_policy_answer(edge: Edge, sim: Simulator, index: int) -> None:
    # Rebuilt per test: iat values must be fresh when the call is placed.
    case = _corpus()[index]
    code = {"invalid": 403, "missing": 302, "valid": 302}[case.outcome]
    run = edge.call(code, case.headers, **case.sipp)
    assert run.returncode == 0, run.stdout
    final = only_final(run)
    if case.outcome == "invalid":
        assert final.first_line == "SIP/2.0 403 Forbidden - VVP Verification Failed"
        assert final.header("X-VVP-Status") == "INVALID"
        assert final.header("X-VVP-Error") == case.error
        assert sim.verify_requests() == 0
    elif case.outcome == "missing":
        assert final.header("X-VVP-Status") == "MISSING"
        assert final.header("Contact") == f"<sip:{DEST}@unverified.carrier.example>"
        assert sim.verify_requests() == 0
    else:
        assert final.header("X-VVP-Status") == "VALID", final
        assert final.header("Contact") == f"<sip:{DEST}@verified.carrier.example>"
        assert sim.verify_requests() == 1
    assert edge.alive()


def test_corpus_size() -> None:
    assert CASE_COUNT == 46
    assert sum(b.outcome == "invalid" for b in BAD_IDENTITIES) == 41
    assert sum(b.xfail is not None for b in BAD_IDENTITIES) == 0


# ---------------------------------------------------------------------------------------
# Header injection


def assert_no_injection(message: SipMessage) -> None:
    assert message.header("X-Injected") is None, message
    for name, value in message.headers:
        assert not re.search(r"[\x00-\x1f\x7f]", value), (name, value)
        assert "x-injected" not in name.lower()


def test_verifier_brand_and_logo_cannot_add_headers(edge: Edge, sim: Simulator) -> None:
    sim.set_faults(inject=True)
    run = edge.call(302, [identity(fresh().passport_jwt)])
    assert run.returncode == 0, run.stdout
    final = only_final(run)
    assert final.header("X-VVP-Status") == "VALID"
    assert_no_injection(final)
    brand = final.header("X-VVP-Brand-Name")
    assert brand is not None and brand.startswith("Acme")
    assert "\r" not in brand and "\n" not in brand
    # A javascript: logo is dropped (only http(s) passes); the header renders empty and
    # is left out.
    assert final.header("X-Logo") is None
    assert sim.verify_requests() == 1


def test_verifier_error_message_cannot_add_headers(edge: Edge, sim: Simulator) -> None:
    sim.set_faults(inject=True)
    run = edge.call(403, [identity(mint("forged", ORIG, DEST).passport_jwt)])
    assert run.returncode == 0, run.stdout
    final = only_final(run)
    assert final.header("X-VVP-Error") == "PASSPORT_SIG_INVALID"
    assert_no_injection(final)
    message = final.header("X-VVP-Error-Message")
    assert message is not None and "signature" in message
    # No smuggled request line either: exactly the one answer.
    assert not any((m.method or "") == "INVITE" for m in run.received)


def test_verifier_indeterminate_message_cannot_add_headers(edge: Edge, sim: Simulator) -> None:
    sim.set_faults(inject=True)
    run = edge.call(302, [identity(mint("indeterminate", ORIG, DEST).passport_jwt)])
    assert run.returncode == 0, run.stdout
    final = only_final(run)
    assert final.header("X-VVP-Status") == "INDETERMINATE"
    assert_no_injection(final)


@pytest.mark.parametrize(
    ("from_user", "expected_orig"),
    [
        # Escaped CR/LF in the user part (the only way SIP allows them there).
        ("+441923311001%0D%0AX-Injected%3A%201", None),
        ("+441923311001%0AX-Injected%3A%201", None),
        ("+441923311001%00X-Injected", None),
        ("%C3%A9milie%0D%0A", None),
        ("+441923311001", ORIG),  # the control row: the echo works
    ],
    ids=["escaped CRLF", "escaped LF", "escaped NUL", "escaped non-ASCII", "plain"],
)
def test_from_user_part_cannot_add_headers(
    edge: Edge, sim: Simulator, from_user: str, expected_orig: str | None
) -> None:
    run = edge.call(302, [], from_user=from_user)
    assert run.returncode == 0, run.stdout
    final = only_final(run)
    assert final.header("X-VVP-Status") == "MISSING"
    assert_no_injection(final)
    if expected_orig is not None:
        assert final.header("X-VVP-Orig") == expected_orig
    assert sim.verify_requests() == 0


def test_non_ascii_display_name_is_passed_whole(edge: Edge, sim: Simulator) -> None:
    run = edge.call(302, [], from_display='"Zoë Café 日本" ')
    assert run.returncode == 0, run.stdout
    final = only_final(run)
    assert_no_injection(final)
    assert final.header("X-VVP-Caller") == "Zoë Café 日本"


def udp_invite(edge: Edge, call_id: bytes) -> SipMessage:
    """One INVITE over a raw UDP socket (sipp cannot match some legal Call-IDs); the final."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
        udp.bind(("127.0.0.1", 0))
        udp.settimeout(3)
        lport, port = udp.getsockname()[1], edge.kamailio.port
        lines = [
            f"INVITE sip:{DEST}@127.0.0.1:{port} SIP/2.0".encode(),
            f"Via: SIP/2.0/UDP 127.0.0.1:{lport};branch=z9hG4bK-{time.time_ns()}".encode(),
            f"From: <sip:{ORIG}@127.0.0.1:{lport}>;tag=odd".encode(),
            f"To: <sip:{DEST}@127.0.0.1:{port}>".encode(),
            b"Call-ID: " + call_id,
            b"CSeq: 1 INVITE",
            b"Max-Forwards: 70",
            b"Content-Length: 0",
        ]
        udp.sendto(b"\r\n".join(lines) + b"\r\n\r\n", ("127.0.0.1", port))
        while True:
            data = udp.recv(65535)
            if not data.startswith(b"SIP/2.0 1"):
                break
        head = data.split(b"\r\n\r\n", 1)[0].decode("utf-8", "replace").split("\r\n")
        # ACK the final so Kamailio stops retransmitting it.
        ack = [line.encode() for line in head[1:] if line.split(":", 1)[0] in
               ("Via", "From", "To", "Call-ID")]  # fmt: skip
        ack = [f"ACK sip:{DEST}@127.0.0.1 SIP/2.0".encode(), *ack, b"CSeq: 1 ACK",
               b"Max-Forwards: 70", b"Content-Length: 0"]  # fmt: skip
        udp.sendto(b"\r\n".join(ack) + b"\r\n\r\n", ("127.0.0.1", port))
    headers = []
    for line in head[1:]:
        name, _, value = line.partition(":")
        headers.append((name.strip(), value.strip()))
    return SipMessage(head[0], headers)


def test_odd_but_legal_call_id_is_echoed_unchanged(edge: Edge, sim: Simulator) -> None:
    # RFC 3261 Call-ID "word" characters, and percent escapes that must NOT be decoded.
    call_id = f"odd-!%*_+`'~()<>:\\\"/?{{}}[]-%0D%0AX-Injected%3A1-{time.time_ns()}@edge.example"
    final = udp_invite(edge, call_id.encode())
    assert final.code == 302, final
    assert_no_injection(final)
    assert final.header("Call-ID") == call_id
    assert final.header("X-VVP-Call-Id") == call_id
    assert final.header("X-VVP-Status") == "MISSING"


def test_non_ascii_call_id_is_echoed_unchanged(edge: Edge, sim: Simulator) -> None:
    # Not in the Call-ID grammar, but valid UTF-8: Kamailio accepts it; the helper sees
    # it whole and no header is added.
    call_id = f"appel-é-日本-{time.time_ns()}@edge.example"
    final = udp_invite(edge, call_id.encode())
    assert final.code == 302, final
    assert_no_injection(final)
    assert final.header("Call-ID") == call_id
    assert final.header("X-VVP-Call-Id") == call_id


def test_edge_still_answers_after_the_corpus(edge: Edge, sim: Simulator) -> None:
    run = edge.call(302, [identity(fresh().passport_jwt)])
    assert run.returncode == 0, run.stdout
    final = only_final(run)
    assert final.header("X-VVP-Status") == "VALID"
    assert final.header("X-VVP-Call-Id") == run.sent[0].header("Call-ID")
    assert edge.alive()
