"""CPU cost and size of the verifier simulator's answer, in-process.

    .venv/bin/python tests/load/simulator_bench.py [--calls N] [--runs R]

No sockets: the simulator's verdict function runs N times per kind of call (a freshly
minted identity with a SIP context, a cached dossier as in steady state), R runs each,
and the median CPU time per verdict (process time, so other processes on a shared
machine count less) and the answer's size in compact JSON are printed.
"""

from __future__ import annotations

import argparse
import statistics
import time
from datetime import UTC, datetime
from typing import Any

from vvp_helper import jsonfast
from vvp_simulator.keys import DEMO_ISSUER_SEED, trusted_keys
from vvp_simulator.passport import mint
from vvp_simulator.verdict import Options, verify

ORIG, DEST = "+441923311001", "+441923311006"
KINDS = ("valid", "brand", "warning", "forged")


def request(kind: str, now: int) -> tuple[str, dict[str, Any]]:
    m = mint(kind, ORIG, DEST, now=now)
    when = datetime.fromtimestamp(now, UTC).isoformat()
    sip = {"from_uri": f"sip:{ORIG}@x", "to_uri": f"sip:{DEST}@x", "invite_time": when}
    context = {"call_id": "c", "received_at": when, "sip": sip}
    return m.vvp_identity, {"passport_jwt": m.passport_jwt, "context": context}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=5000)
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    now = int(time.time())
    trusted = trusted_keys((DEMO_ISSUER_SEED,))
    options = Options(cache_hit=True)
    print(f"{'kind':10s} {'us/verdict':>10s} {'bytes':>6s}")
    for kind in KINDS:
        header, body = request(kind, now)
        runs = []
        for _ in range(args.runs):
            start = time.process_time()
            for _ in range(args.calls):
                verify(header, body, trusted, float(now), options)
            runs.append((time.process_time() - start) / args.calls * 1e6)
        size = len(jsonfast.dumps(verify(header, body, trusted, float(now), options)))
        print(f"{kind:10s} {statistics.median(runs):10.1f} {size:6d}")


if __name__ == "__main__":
    main()
