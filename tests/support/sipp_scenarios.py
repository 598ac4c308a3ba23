"""sipp scenarios built for one test: an INVITE with chosen headers, expecting one code.

Generated rather than static so each test states exactly what it sends and what it
expects; the XML is written next to the test's logs so a failure can be replayed by hand
with the same sipp command line.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from xml.sax.saxutils import escape

HEAD = '<?xml version="1.0" encoding="ISO-8859-1" ?>\n'


def _invite(
    from_user: str,
    to_user: str,
    headers: Sequence[str],
    *,
    branch: str = "[branch]",
    from_display: str = "",
) -> str:
    lines = [
        f"INVITE sip:{to_user}@[remote_ip]:[remote_port] SIP/2.0",
        f"Via: SIP/2.0/[transport] [local_ip]:[local_port];branch={branch}",
        f"From: {from_display}<sip:{from_user}@[local_ip]:[local_port]>;tag=[call_number]",
        f"To: <sip:{to_user}@[remote_ip]:[remote_port]>",
        "Call-ID: [call_id]",
        "CSeq: 1 INVITE",
        "Contact: <sip:sipp@[local_ip]:[local_port]>",
        "Max-Forwards: 70",
        *headers,
        "Content-Length: 0",
    ]
    return "\r\n".join(lines) + "\r\n\r\n"


def _send(message: str, retrans: bool = True) -> str:
    attr = ' retrans="500"' if retrans else ""
    # CDATA keeps the SIP text byte for byte (quotes, backslashes, angle brackets).
    return f"  <send{attr}><![CDATA[\n{message}]]></send>\n"


ACK = (
    "ACK sip:[service]@[remote_ip]:[remote_port] SIP/2.0\r\n"
    "[last_Via:]\r\n[last_From:]\r\n[last_To:]\r\n[last_Call-ID:]\r\n"
    "CSeq: 1 ACK\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n"
)


def invite_expecting(
    path: Path,
    code: int,
    *,
    from_user: str = "+441923311001",
    to_user: str = "+441923311006",
    headers: Sequence[str] = (),
    from_display: str = "",
    max_forwards: int = 70,
    branch: str = "[branch]",
) -> Path:
    """One INVITE, an optional 100, then ``code``, then ACK.

    A fixed ``branch`` (with sipp's ``-cid_str`` fixing the Call-ID) lets a test send a
    copy of the INVITE - a retransmission - itself: see ``literal_invite``.
    """
    invite = _invite(from_user, to_user, headers, branch=branch, from_display=from_display)
    invite = invite.replace("Max-Forwards: 70", f"Max-Forwards: {max_forwards}")
    body = _send(invite)
    if branch == "[branch]":
        body += '  <recv response="100" optional="true"/>\n'
    else:
        # The test sends a copy, which tm answers with a second 100. Both are mandatory
        # steps: sipp would treat a 100 matching an earlier step as unexpected.
        body += '  <recv response="100"/>\n  <recv response="100"/>\n'
    body += f'  <recv response="{code}"/>\n'
    body += _send(ACK.replace("[service]", escape(to_user)), retrans=False)
    body += '  <pause milliseconds="50"/>\n'
    path.write_text(f'{HEAD}<scenario name="invite expecting {code}">\n{body}</scenario>\n')
    return path


def literal_invite(
    *,
    sipp_port: int,
    edge_port: int,
    branch: str,
    call_id: str,
    from_user: str = "+441923311001",
    to_user: str = "+441923311006",
    headers: Sequence[str] = (),
) -> bytes:
    """The INVITE ``invite_expecting`` makes sipp send, as bytes another socket can send.

    sipp's own keyword substitution done by hand: a copy sent from elsewhere with sipp's
    Via (same branch and sent-by) is, for Kamailio, a retransmission of sipp's INVITE.
    """
    text = _invite(from_user, to_user, headers, branch=branch).replace(
        "Call-ID: [call_id]", f"Call-ID: {call_id}"
    )
    for keyword, value in {
        "[remote_ip]": "127.0.0.1",
        "[remote_port]": str(edge_port),
        "[local_ip]": "127.0.0.1",
        "[local_port]": str(sipp_port),
        "[transport]": "UDP",
        "[call_number]": "1",
    }.items():
        text = text.replace(keyword, value)
    return text.encode()


def invite_then_cancel(
    path: Path,
    *,
    cancel_after_ms: int,
    from_user: str = "+441923311001",
    to_user: str = "+441923311006",
    headers: Sequence[str] = (),
    cancel_copies: int = 1,
) -> Path:
    """INVITE, 100, CANCEL (same branch) -> 200 for the CANCEL, 487 for the INVITE.

    ``cancel_copies`` > 1 sends the CANCEL again afterwards, as a UDP retransmission
    would; each copy gets the CANCEL's 200 again.
    """
    branch = "z9hG4bK-cancel-[call_number]-[pid]"
    invite = _invite(from_user, to_user, headers, branch=branch)
    cancel = (
        f"CANCEL sip:{to_user}@[remote_ip]:[remote_port] SIP/2.0\r\n"
        f"Via: SIP/2.0/[transport] [local_ip]:[local_port];branch={branch}\r\n"
        f"From: <sip:{from_user}@[local_ip]:[local_port]>;tag=[call_number]\r\n"
        f"To: <sip:{to_user}@[remote_ip]:[remote_port]>\r\n"
        "Call-ID: [call_id]\r\nCSeq: 1 CANCEL\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n"
    )
    ack = (
        f"ACK sip:{to_user}@[remote_ip]:[remote_port] SIP/2.0\r\n"
        f"Via: SIP/2.0/[transport] [local_ip]:[local_port];branch={branch}\r\n"
        "[last_From:]\r\n[last_To:]\r\n[last_Call-ID:]\r\n"
        "CSeq: 1 ACK\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n"
    )
    body = _send(invite)
    body += '  <recv response="100"/>\n'
    body += f'  <pause milliseconds="{cancel_after_ms}"/>\n'
    body += _send(cancel)
    # tm answers a CANCEL of a suspended INVITE by faking the 487 first (t_cancel.c,
    # cancel_branch on the blind UAC), then the CANCEL's 200.
    body += '  <recv response="487"/>\n'
    body += '  <recv response="200"/>\n'
    body += _send(ack, retrans=False)
    for _ in range(cancel_copies - 1):
        body += _send(cancel, retrans=False)
        body += '  <recv response="200"/>\n'
    body += '  <pause milliseconds="50"/>\n'
    path.write_text(f'{HEAD}<scenario name="invite then cancel">\n{body}</scenario>\n')
    return path


def request_expecting(path: Path, method: str, code: int, headers: Sequence[str] = ()) -> Path:
    """An out-of-dialog request other than INVITE (OPTIONS, MESSAGE, ...)."""
    lines = [
        f"{method} sip:edge@[remote_ip]:[remote_port] SIP/2.0",
        "Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]",
        "From: <sip:probe@[local_ip]:[local_port]>;tag=[call_number]",
        "To: <sip:edge@[remote_ip]:[remote_port]>",
        "Call-ID: [call_id]",
        f"CSeq: 1 {method}",
        "Max-Forwards: 70",
        *headers,
        "Content-Length: 0",
    ]
    body = _send("\r\n".join(lines) + "\r\n\r\n")
    body += f'  <recv response="{code}"/>\n'
    path.write_text(f'{HEAD}<scenario name="{method} expecting {code}">\n{body}</scenario>\n')
    return path


#: Final codes a policy can produce that the demo recognises (RFC 3261, RFC 8224).
KNOWN_FINALS = (
    300, 301, 302, 305, 380, 400, 403, 404, 408, 428, 436, 437, 438, 480, 486, 488,
    500, 502, 503, 504, 603, 607, 608,
)  # fmt: skip


#: An identity per call from a ``vvp-simulator mint-csv`` file (orig;dest;jwt;kid;...).
CSV_IDENTITY = "Identity: [field2];info=<[field3]>;alg=EdDSA;ppt=vvp"


def invite_any_final(
    path: Path,
    *,
    from_user: str = "+441923311001",
    to_user: str = "+441923311006",
    headers: Sequence[str] = (),
    csv: bool = False,
    finals: Sequence[int] = KNOWN_FINALS,
) -> Path:
    """One INVITE accepting whichever final answer the policy gives (demo and load).

    ``csv``: numbers and identity come from the injection file, a fresh one per call.
    ``finals``: the answers that count; any other final fails the call (sipp's
    unexpected message), as a 500 must when only the 302 is right.
    """
    if csv:
        from_user, to_user, headers = "[field0]", "[field1]", (CSV_IDENTITY, *headers)
    body = _send(_invite(from_user, to_user, headers))
    body += '  <recv response="100" optional="true"/>\n'
    for code in finals[:-1]:
        body += f'  <recv response="{code}" optional="true" next="ack"/>\n'
    body += f'  <recv response="{finals[-1]}" next="ack"/>\n'
    body += '  <label id="ack"/>\n'
    body += _send(ACK.replace("[service]", to_user), retrans=False)
    body += '  <pause milliseconds="20"/>\n'
    path.write_text(f'{HEAD}<scenario name="invite, any final answer">\n{body}</scenario>\n')
    return path
