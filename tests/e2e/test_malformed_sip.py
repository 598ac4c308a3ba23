"""Malformed SIP over raw UDP/TCP sockets to a real Kamailio (helper + simulator behind it).

Every case is one row of ``CORPUS``: the bytes sent, the transport, and the answer a peer
must get (a code and reason, or ``None`` where SIP leaves no way to answer). For every case
the helper must not have been asked for a decision (its ``vvp_helper_decisions_total``),
the verifier must not have been asked, and afterwards Kamailio and the helper are alive and
a well-formed INVITE still gets its 302.

Where no answer is asserted, the reason is in the row: without a Via there is nowhere to
send a response, and a response without From/To/Call-ID/CSeq (mandatory in every response,
RFC 3261 section 20) is itself malformed; Kamailio's core drops those requests before the
script runs ("required headers not found in request").
"""

from __future__ import annotations

import socket
import time
from collections.abc import Callable
from dataclasses import dataclass

import pytest

from tests.support.edge import Edge
from tests.support.harness import run_sipp
from tests.support.sipp_scenarios import invite_expecting

pytestmark = pytest.mark.e2e

ORIG = "+441923311001"
DEST = "+441923311006"
# How long to listen before concluding that no answer is coming (Kamailio answers
# malformed requests within milliseconds on loopback).
SILENCE_S = 0.6


# ---------------------------------------------------------------------------------------
# Building raw requests


def request(
    port: int,
    lport: int,
    transport: str = "UDP",
    *,
    first: str | None = None,
    drop: tuple[str, ...] = (),
    replace: dict[str, str] | None = None,
    extra: tuple[bytes, ...] = (),
    body: bytes = b"",
    content_length: str | None = None,
) -> bytes:
    """A well-formed INVITE from 127.0.0.1:lport, then broken as the arguments say."""
    headers = {
        "Via": f"SIP/2.0/{transport} 127.0.0.1:{lport};branch=z9hG4bK-{time.time_ns()}",
        "From": f"<sip:{ORIG}@127.0.0.1:{lport}>;tag=mal-{lport}",
        "To": f"<sip:{DEST}@127.0.0.1:{port}>",
        "Call-ID": f"malformed-{time.time_ns()}@127.0.0.1",
        "CSeq": "1 INVITE",
        "Max-Forwards": "70",
        "Contact": f"<sip:probe@127.0.0.1:{lport}>",
    }
    headers.update(replace or {})
    lines = [(first or f"INVITE sip:{DEST}@127.0.0.1:{port} SIP/2.0").encode()]
    lines += [f"{n}: {v}".encode() for n, v in headers.items() if n not in drop]
    lines += list(extra)
    length = str(len(body)) if content_length is None else content_length
    lines.append(f"Content-Length: {length}".encode())
    return b"\r\n".join(lines) + b"\r\n\r\n" + body


Build = Callable[[int, int, str], bytes]


def r(**kwargs: object) -> Build:
    """A request() with these changes, built once the ports are known."""

    def build(port: int, lport: int, transport: str) -> bytes:
        return request(port, lport, transport, **kwargs)  # type: ignore[arg-type]

    return build


def raw(data: bytes) -> Build:
    return lambda port, lport, transport: data


@dataclass(frozen=True)
class Case:
    name: str
    build: Build
    # The answer a peer must get: (code, reason), code only (reason not checked), or None.
    expect: tuple[int, str | None] | None
    transport: str = "UDP"
    why: str = ""  # for expect=None: why SIP gives no way to answer
    xfail: str | None = None  # the edge does not do what SIP asks: see the reason


NOT_UTF8_FROM = '"\xff\xfe caf\xe9" '.encode("latin-1")
PAD_20K = b"X-Pad: " + b"a" * 20_000
RUN_TOGETHER = b"garbage-with-no-colon"
GARBAGE_LINE_XFAIL = (
    "Kamailio's core parser fails on the whole message, so sanity cannot build the 400 "
    "it tries to send ('check_required_headers(): failed to send 400 reply'): the peer "
    "gets no answer although Via/From/To/Call-ID/CSeq are readable (RFC 3261 16.3/8.2: "
    "400 Bad Request)"
)

CORPUS: list[Case] = [
    # --- broken header lines: Via/From/To/Call-ID/CSeq readable, so 400 is possible
    Case("header line without colon", r(extra=(b"this is not a header",)), (400, None),
         xfail=GARBAGE_LINE_XFAIL),
    Case("header line with empty name", r(extra=(b": no name",)), (400, None),
         xfail=GARBAGE_LINE_XFAIL),
    Case("header name with spaces", r(extra=(b"X Bad Name: y",)), (400, None),
         xfail=GARBAGE_LINE_XFAIL),
    Case("control bytes as a header line", r(extra=(b"\x01\x02\x03\x7f",)), (400, None),
         xfail=GARBAGE_LINE_XFAIL),
    Case("non-numeric Content-Length", r(content_length="abc"), (400, None),
         xfail=GARBAGE_LINE_XFAIL),
    Case("negative Content-Length", r(content_length="-5"), (400, None),
         xfail=GARBAGE_LINE_XFAIL),
    # --- a mandatory header missing: no well-formed response can be built
    Case("missing Call-ID", r(drop=("Call-ID",)), None,
         why="a response must carry the request's Call-ID"),
    Case("missing CSeq", r(drop=("CSeq",)), None,
         why="a response must carry the CSeq (the client matches on its method)"),
    Case("missing From", r(drop=("From",)), None, why="a response must carry From"),
    Case("missing To", r(drop=("To",)), None, why="a response must carry To"),
    Case("missing Via", r(drop=("Via",)), None, why="no Via: nowhere to send a response"),
    Case("unparseable Via", r(replace={"Via": "garbage"}), None,
         why="no readable Via: nowhere to send a response"),
    # --- what sanity, maxfwd and the script answer
    Case("CSeq method mismatch", r(replace={"CSeq": "1 BYE"}),
         (400, "CSeq method does not match request method")),
    Case("CSeq number not a number", r(replace={"CSeq": "abc INVITE"}),
         (400, "CSeq number is illegal")),
    Case("CSeq number beyond 2**32", r(replace={"CSeq": "99999999999 INVITE"}),
         (400, "CSeq number is illegal")),
    Case("From that does not parse", r(replace={"From": "<<<>>>"}),
         (400, "Invalid From Header")),
    Case("From without a URI", r(replace={"From": "nothing;tag=1"}),
         (400, "Invalid From Header")),
    Case("Max-Forwards 0", r(replace={"Max-Forwards": "0"}), (483, "Too Many Hops")),
    Case("Max-Forwards -1", r(replace={"Max-Forwards": "-1"}),
         (400, "Bad Request - Invalid Max-Forwards")),
    Case("Max-Forwards 2**32", r(replace={"Max-Forwards": "4294967296"}),
         (400, "Bad Request - Invalid Max-Forwards")),
    Case("Max-Forwards not a number", r(replace={"Max-Forwards": "many"}),
         (400, "Bad Request - Invalid Max-Forwards")),
    Case("request URI not a URI", r(first="INVITE not-a-uri SIP/2.0"),
         (400, "Bad Request URI")),
    Case("request URI sip: without host", r(first="INVITE sip: SIP/2.0"),
         (400, "Bad Request URI")),
    Case("Content-Length larger than the body", r(body=b"v=0\r\n", content_length="500"),
         (400, "Content-Length mis-match")),
    Case("Content-Length smaller than the body", r(body=b"v=0\r\no=x\r\n", content_length="2"),
         (400, "Content-Length mis-match")),
    Case("huge header over UDP (20 KB)", r(extra=(PAD_20K,)), (513, "Message Too Large")),
    Case("non-UTF-8 From display name",
         lambda p, lp, t: request(p, lp, t).replace(b"From: <", b"From: " + NOT_UTF8_FROM + b"<"),
         (400, "Bad Request - Undecodable Header")),
    Case("non-UTF-8 Identity header", r(extra=(b"Identity: \xff\xfe.abc.d\xe9f;ppt=vvp",)),
         (400, "Bad Request - Undecodable Header")),
    Case("non-UTF-8 P-VVP-Identity header", r(extra=(b"P-VVP-Identity: eyJ\xc3\x28",)),
         (400, "Bad Request - Undecodable Header")),
    Case("SIP version 3.0", r(first=f"INVITE sip:{DEST}@127.0.0.1 SIP/3.0"),
         (505, None),
         xfail="Kamailio drops a request whose version is not SIP/2.0 before request_route "
               "runs (no log line at level info), so sanity's 505 Version Not Supported "
               "is never sent"),
    Case("request line without version", r(first=f"INVITE sip:{DEST}@127.0.0.1"), None,
         why="not a SIP request line: nothing identifies it as SIP"),
    Case("empty datagram", raw(b""), None, why="nothing to answer"),
    Case("CRLF keepalive", raw(b"\r\n\r\n"), None, why="RFC 5626 keepalive, not a request"),
    Case("binary junk", raw(bytes(range(256))), None, why="not SIP"),
    Case("NUL byte in Call-ID",
         lambda p, lp, t: request(p, lp, t).replace(b"Call-ID: mal", b"Call-ID: mal\x00"),
         (400, None)),
    Case("NUL byte in From display name",
         lambda p, lp, t: request(p, lp, t).replace(b"From: <", b'From: "Ev\x00il" <'),
         (400, None)),
    # --- TCP
    Case("huge header over TCP (20 KB)", r(extra=(PAD_20K,)), (513, "Message Too Large"),
         transport="TCP"),
    Case("CSeq method mismatch over TCP", r(replace={"CSeq": "1 BYE"}),
         (400, "CSeq method does not match request method"), transport="TCP"),
    Case("non-UTF-8 From display name over TCP",
         lambda p, lp, t: request(p, lp, t).replace(b"From: <", b"From: " + NOT_UTF8_FROM + b"<"),
         (400, "Bad Request - Undecodable Header"), transport="TCP"),
    Case("missing Call-ID over TCP", r(drop=("Call-ID",)), None, transport="TCP",
         why="a response must carry the request's Call-ID"),
    Case("binary junk over TCP", raw(bytes(range(256)) * 4), None, transport="TCP",
         why="not SIP"),
]  # fmt: skip


# ---------------------------------------------------------------------------------------
# Sending and listening


def _status_lines(data: bytes) -> list[str]:
    return [
        line.decode("utf-8", "replace")
        for line in data.split(b"\r\n")
        if line.startswith(b"SIP/2.0 ")
    ]


def _final(lines: list[str]) -> str | None:
    finals = [line for line in lines if not line.startswith("SIP/2.0 1")]
    return finals[0] if finals else None


def _ack_for(response: bytes) -> bytes:
    """ACK of a non-2xx final (same transaction): stops UDP retransmissions of it."""
    head = response.split(b"\r\n\r\n", 1)[0].split(b"\r\n")
    wanted = (b"via", b"from", b"to", b"call-id")
    keep = [h for h in head[1:] if h.split(b":", 1)[0].strip().lower() in wanted]
    lines = [f"ACK sip:{DEST}@127.0.0.1 SIP/2.0".encode(), *keep]
    lines += [b"CSeq: 1 ACK", b"Max-Forwards: 70", b"Content-Length: 0"]
    return b"\r\n".join(lines) + b"\r\n\r\n"


def send_udp(port: int, build: Build) -> list[str]:
    """Send one datagram; the status lines that came back until a final or silence."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
        udp.bind(("127.0.0.1", 0))
        udp.settimeout(SILENCE_S)
        udp.sendto(build(port, udp.getsockname()[1], "UDP"), ("127.0.0.1", port))
        lines: list[str] = []
        try:
            while _final(lines) is None:
                data, _ = udp.recvfrom(65535)
                lines += _status_lines(data)
                if _final(lines) is not None:
                    udp.sendto(_ack_for(data), ("127.0.0.1", port))
        except TimeoutError:
            pass
        return lines


def send_tcp(port: int, build: Build) -> list[str]:
    with socket.create_connection(("127.0.0.1", port), timeout=5) as tcp:
        tcp.settimeout(SILENCE_S)
        tcp.sendall(build(port, tcp.getsockname()[1], "TCP"))
        data = b""
        try:
            while _final(_status_lines(data)) is None:
                chunk = tcp.recv(65535)
                if not chunk:
                    break
                data += chunk
        except (TimeoutError, ConnectionResetError):
            pass
        if _final(_status_lines(data)) is not None:
            tcp.sendall(_ack_for(data))
        return _status_lines(data)


def send(port: int, case: Case) -> list[str]:
    return (send_tcp if case.transport == "TCP" else send_udp)(port, case.build)


def valid_call_gets_302(edge: Edge) -> None:
    lines = send_udp(edge.kamailio.port, r())
    assert _final(lines) == "SIP/2.0 302 Moved Temporarily", lines


# ---------------------------------------------------------------------------------------
# Tests


def _param(case: Case) -> object:
    marks = [pytest.mark.xfail(strict=True, reason=case.xfail)] if case.xfail else []
    return pytest.param(case, id=case.name, marks=marks)


@pytest.mark.parametrize("case", [_param(c) for c in CORPUS])
def test_malformed_request_gets_the_right_answer_and_no_decision(edge: Edge, case: Case) -> None:
    decisions = edge.decisions()
    verifications = edge.simulator.verify_requests()
    lines = send(edge.kamailio.port, case)
    # A well-formed call right after still gets its 302 (no identity: decided, not
    # verified). The helper counts a decision before answering it, so once that call is
    # answered, a decision the case had asked for is counted too: exactly one more
    # decision means the case asked for none, with no time to wait for.
    valid_call_gets_302(edge)

    # The edge survived and was not asked anything.
    assert edge.alive(), edge.kamailio.output()[-3000:]
    assert edge.decisions() == decisions + 1, f"{case.name}: the helper was asked: {lines}"
    assert edge.simulator.verify_requests() == verifications

    if case.expect is None:
        assert lines == [], f"{case.name}: expected no answer ({case.why}), got {lines}"
    else:
        code, reason = case.expect
        final = _final(lines)
        assert final is not None, f"{case.name}: no final answer, expected {code}: {lines}"
        assert final.split(" ", 2)[1] == str(code), f"{case.name}: {lines}"
        if reason is not None:
            assert final == f"SIP/2.0 {code} {reason}", f"{case.name}: {lines}"
        # Provisional answers only for what reached the script (100 Trying), never a 2xx.
        assert all(line.startswith(("SIP/2.0 1", "SIP/2.0 4", "SIP/2.0 5")) for line in lines)


def test_the_corpus_is_what_this_file_claims() -> None:
    assert len(CORPUS) == 41
    assert len({case.name for case in CORPUS}) == len(CORPUS)
    assert sum(case.transport == "TCP" for case in CORPUS) == 5


def test_edge_survives_the_whole_corpus_and_still_answers_valid_calls(edge: Edge) -> None:
    # Everything once more, back to back, then a real sipp call over UDP and TCP.
    for case in CORPUS:
        send(edge.kamailio.port, case)
    assert edge.alive(), edge.kamailio.output()[-3000:]
    for transport in ("u1", "t1"):
        scenario = invite_expecting(edge.workdir / f"after-{transport}.xml", 302)
        run = run_sipp(scenario, edge.kamailio.port, edge.workdir, transport=transport)
        assert run.returncode == 0, run.stdout
        finals = run.finals()
        assert [m.code for m in finals] == [302]
        assert finals[0].header("X-VVP-Status") == "MISSING"
    assert edge.alive()
