#!/usr/bin/env python3
"""Container healthcheck of the edge, from the network namespace it runs in. Exit 0
healthy, 1 not.

    vvp-sip-check           a SIP OPTIONS over UDP to Kamailio must get 200: Kamailio
                            answers OPTIONS itself, so this proves the SIP socket is bound
                            and a worker is serving it.
    vvp-sip-check --path    that, and the helper must answer GET /readyz on loopback: both
                            ends of a call's path (SIP in, Kamailio -> helper over
                            127.0.0.1) serve THIS namespace. A Kamailio or helper left in
                            an old namespace (the "edge" service restarted without them)
                            fails it. No INVITE is sent: a check every few seconds would
                            count as traffic (metrics, the NoTraffic alert).

Targets: VVP_SIP_ADDR (127.0.0.1 when it is 0.0.0.0) and VVP_SIP_PORT; the helper at
VVP_HELPER_CHECK_URL (http://127.0.0.1:8480/readyz). Standard library only (python3 comes
with kamcli).
"""

import os
import socket
import sys
import urllib.request
import uuid


def options() -> bool:
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
            return False
    first = data.split(b"\r\n", 1)[0].decode(errors="replace")
    print(first)
    return first.startswith("SIP/2.0 200")


def helper_ready() -> bool:
    url = os.environ.get("VVP_HELPER_CHECK_URL", "http://127.0.0.1:8480/readyz")
    try:
        with urllib.request.urlopen(url, timeout=2) as answer:
            print(f"helper {url}: {answer.status}")
            return bool(answer.status == 200)
    except OSError as exc:
        print(f"helper {url}: {exc}", file=sys.stderr)
        return False


def main() -> int:
    healthy = options()
    if "--path" in sys.argv[1:]:
        healthy = helper_ready() and healthy
    return 0 if healthy else 1


if __name__ == "__main__":
    sys.exit(main())
