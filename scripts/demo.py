"""Run the edge on its defaults and show calls being routed (used by scripts/run).

Starts the bundled VVP verifier SIMULATOR (unless VVP_VERIFIER_URL names a real
verifier), the helper and Kamailio, then sends one sipp call per kind of identity and
prints the SIP answer each got. Keeps the edge running until Ctrl-C unless --once.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import time
from pathlib import Path

from tests.support.harness import REPO, Helper, Kamailio, Simulator, run_sipp
from tests.support.sipp_scenarios import invite_any_final
from vvp_simulator.passport import mint

ORIG, DEST = "+441923311001", "+441923311006"
CALLS = [
    ("valid", "signed by a trusted issuer"),
    ("brand", "valid, with a brand card"),
    ("forged", "PASSporT altered after signing"),
    ("expired", "PASSporT older than its validity"),
    ("wrong-number", "From is not the signed number"),
    ("indeterminate", "dossier cannot be fetched"),
    ("unknown-signer", "issuer the verifier cannot resolve"),
    ("none", "no identity at all"),
]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--once", action="store_true", help="exit after the demo calls")
    args = parser.parse_args()

    env = os.environ
    sip_port = int(env.get("VVP_SIP_PORT", "5060"))
    helper_port = int(env.get("VVP_HELPER_PORT", "8480"))
    http_port = int(env.get("VVP_HTTP_PORT", "8060"))
    policy = Path(env.get("VVP_POLICY", "policy/default.yaml"))
    workdir = REPO / "var" / time.strftime("run-%Y%m%d-%H%M%S")
    workdir.mkdir(parents=True, exist_ok=True)

    processes: list[Simulator | Helper | Kamailio] = []
    try:
        verifier = env.get("VVP_VERIFIER_URL")
        if not verifier:
            simulator = Simulator.create(workdir, port=int(env.get("VVP_SIMULATOR_PORT", "8090")))
            processes.append(simulator)
            verifier = simulator.url
            print(f"verifier: bundled SIMULATOR at {verifier} (VVP_VERIFIER_URL for a real one)")
        else:
            print(f"verifier: {verifier}")
        # The helper keeps Kamailio's fallback in step with the policy's on_error.
        rpc = f"http://127.0.0.1:{http_port}/RPC"
        helper = Helper.create(
            workdir, verifier, policy=policy, port=helper_port, VVP_KAMAILIO_RPC=rpc
        )
        processes.append(helper)
        print(f"helper:   {helper.url} (policy {policy}, metrics {helper.url}/metrics)")
        kamailio = Kamailio.create(
            workdir, helper.decide_url, port=sip_port, VVP_HTTP_PORT=str(http_port)
        )
        processes.append(kamailio)
        print(f"kamailio: SIP udp+tcp 127.0.0.1:{sip_port}, metrics {kamailio.metrics_url}")
        print()
        print(f"{'identity':<16}{'what it is':<38}{'SIP answer':<46}{'X-VVP-Status':<15}detail")
        failures = 0
        for kind, what in CALLS:
            headers = []
            if kind != "none":
                headers = [f"Identity: {mint(kind, ORIG, DEST).identity_header()}"]
            scenario = invite_any_final(workdir / f"demo-{kind}.xml", headers=headers)
            run = run_sipp(scenario, sip_port, workdir, timeout=15)
            finals = run.finals()
            if run.returncode != 0 or len(finals) != 1:
                failures += 1
                print(f"{kind:<16}{what:<38}NO ANSWER (sipp exit {run.returncode})")
                continue
            final = finals[0]
            answer = final.first_line.removeprefix("SIP/2.0 ")
            brand = final.header("X-VVP-Brand-Name")
            detail = final.header("X-VVP-Error") or final.header("Contact") or ""
            detail = f"{detail} brand={brand}" if brand else detail
            status = final.header("X-VVP-Status") or ""
            print(f"{kind:<16}{what:<38}{answer[:45]:<46}{status:<15}{detail}")
        print()
        print(f"logs: {workdir.relative_to(REPO)}/ (helper-*.log, kamailio-*/kamailio.log)")
        if failures:
            print(f"{failures} demo call(s) got no answer", file=sys.stderr)
            return 1
        if args.once:
            return 0
        print(f"edge running; send your own INVITEs to 127.0.0.1:{sip_port}. Ctrl-C stops it.")
        signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
        try:
            while all(p.alive() for p in processes):
                time.sleep(1)
        except KeyboardInterrupt:
            return 0
        print("a process of the edge exited; see its log", file=sys.stderr)
        return 1
    finally:
        for process in reversed(processes):
            process.stop()


if __name__ == "__main__":
    sys.exit(main())
