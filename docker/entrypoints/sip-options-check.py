#!/usr/bin/env python3
"""Container healthcheck over SIP/UDP to the local Kamailio. Exit 0 healthy, 1 not.

    vvp-sip-check           OPTIONS must get 200: Kamailio answers OPTIONS itself, so this
                            proves the SIP socket is bound and a worker is serving it.
    vvp-sip-check --call    an INVITE without a VVP identity must get a final answer
                            decided by the helper (any code, but no X-VVP-Edge-Fallback
                            header): the path every call takes, Kamailio -> helper over
                            loopback, in the network namespace this check runs in. The
                            verifier is not asked (no identity: outcome "missing").

Target: VVP_SIP_ADDR (127.0.0.1 when it is 0.0.0.0) and VVP_SIP_PORT. Standard library
only (python3 comes with kamcli).
"""

import os
import socket
import sys
import time
import uuid


def first_line(data: bytes) -> str:
    return data.split(b"\r\n", 1)[0].decode(errors="replace")


def header(data: bytes, name: str) -> "str | None":
    head = data.split(b"\r\n\r\n", 1)[0].decode(errors="replace")
    for line in head.split("\r\n")[1:]:
        key, _, value = line.partition(":")
        if key.strip().lower() == name.lower():
            return value.strip()
    return None


def main() -> int:
    call = "--call" in sys.argv[1:]
    addr = os.environ.get("VVP_SIP_ADDR", "127.0.0.1")
    if addr in ("0.0.0.0", "::", ""):
        addr = "127.0.0.1"
    port = int(os.environ.get("VVP_SIP_PORT", "5060"))
    tag = uuid.uuid4().hex[:12]
    method = "INVITE" if call else "OPTIONS"
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        local_port = sock.getsockname()[1]
        via = f"SIP/2.0/UDP 127.0.0.1:{local_port};branch=z9hG4bK{tag};rport"
        request = (
            f"{method} sip:health@{addr}:{port} SIP/2.0\r\n"
            f"Via: {via}\r\n"
            "Max-Forwards: 70\r\n"
            f"From: <sip:healthcheck@127.0.0.1>;tag={tag}\r\n"
            f"To: <sip:health@{addr}>\r\n"
            f"Call-ID: health-{tag}\r\n"
            f"CSeq: 1 {method}\r\n"
            f"Contact: <sip:healthcheck@127.0.0.1:{local_port}>\r\n"
            "Content-Length: 0\r\n\r\n"
        )
        sock.sendto(request.encode(), (addr, port))
        deadline = time.monotonic() + 2.5
        while True:
            sock.settimeout(max(0.05, deadline - time.monotonic()))
            try:
                data, _ = sock.recvfrom(65535)
            except OSError as exc:
                print(f"no final answer to {method} from {addr}:{port}: {exc}", file=sys.stderr)
                return 1
            status = first_line(data)
            if not status.startswith("SIP/2.0 1"):
                break
        print(status)
        if not call:
            return 0 if status.startswith("SIP/2.0 200") else 1
        # ACK the final answer (hop by hop for a non-2xx), so the transaction ends now.
        ack = (
            f"ACK sip:health@{addr}:{port} SIP/2.0\r\n"
            f"Via: {via}\r\n"
            "Max-Forwards: 70\r\n"
            f"From: <sip:healthcheck@127.0.0.1>;tag={tag}\r\n"
            f"To: {header(data, 'To') or f'<sip:health@{addr}>'}\r\n"
            f"Call-ID: health-{tag}\r\n"
            "CSeq: 1 ACK\r\n"
            "Content-Length: 0\r\n\r\n"
        )
        sock.sendto(ack.encode(), (addr, port))
    fallback = header(data, "X-VVP-Edge-Fallback")
    if fallback is not None:
        print(f"Kamailio answered its own fallback ({fallback}): the helper is not reachable")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
