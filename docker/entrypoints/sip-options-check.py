#!/usr/bin/env python3
"""Container healthcheck: one SIP OPTIONS over UDP to the local Kamailio must get 200.

Kamailio answers OPTIONS itself (kamailio.cfg), so this proves the SIP socket is bound
and a worker is serving it. Target: VVP_SIP_ADDR (127.0.0.1 when it is 0.0.0.0) and
VVP_SIP_PORT. Exit 0 healthy, 1 not. Standard library only (python3 comes with kamcli).
"""

import os
import socket
import sys
import uuid


def main() -> int:
    addr = os.environ.get("VVP_SIP_ADDR", "127.0.0.1")
    if addr in ("0.0.0.0", "::", ""):
        addr = "127.0.0.1"
    port = int(os.environ.get("VVP_SIP_PORT", "5060"))
    tag = uuid.uuid4().hex[:12]
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.settimeout(2.0)
        sock.bind(("127.0.0.1", 0))
        local_port = sock.getsockname()[1]
        request = (
            f"OPTIONS sip:health@{addr}:{port} SIP/2.0\r\n"
            f"Via: SIP/2.0/UDP 127.0.0.1:{local_port};branch=z9hG4bK{tag};rport\r\n"
            "Max-Forwards: 70\r\n"
            f"From: <sip:healthcheck@127.0.0.1>;tag={tag}\r\n"
            f"To: <sip:health@{addr}>\r\n"
            f"Call-ID: health-{tag}\r\n"
            "CSeq: 1 OPTIONS\r\n"
            "Content-Length: 0\r\n\r\n"
        )
        sock.sendto(request.encode(), (addr, port))
        try:
            data, _ = sock.recvfrom(65535)
        except OSError as exc:
            print(f"no answer to OPTIONS from {addr}:{port}: {exc}", file=sys.stderr)
            return 1
    first = data.split(b"\r\n", 1)[0].decode(errors="replace")
    print(first)
    return 0 if first.startswith("SIP/2.0 200") else 1


if __name__ == "__main__":
    sys.exit(main())
