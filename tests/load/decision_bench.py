"""CPU cost of each step of one decision, in-process: where the helper's time goes.

    .venv/bin/python tests/load/decision_bench.py [--calls N] [--multiprocess]

No sockets: each step of ``HelperService.decide`` runs N times on a realistic valid call
(a freshly minted identity, the simulator's real answer for it, policy/default.yaml) and
the mean is printed in microseconds. The load benchmark (ramp.py) says how many calls per
second the whole edge takes; this says which Python step to look at when that moves.

``--multiprocess``: the metrics as a worker of ``serve --workers N`` keeps them (in files
shared with the other workers, prometheus_client's multiprocess mode, in a temporary
directory), to see what that mode costs per call.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import tempfile
import time
import timeit
from collections.abc import Callable
from pathlib import Path

from vvp_helper import jsonfast
from vvp_helper.decision import CallRequest, _verify_request, conclude
from vvp_helper.handlers import instruction_json
from vvp_helper.metrics import Metrics
from vvp_helper.policy.store import PolicyStore
from vvp_helper.sip import identity
from vvp_helper.sip.identity import PrecheckSettings
from vvp_helper.verifier.client import Verdict, VerifierClient
from vvp_helper.verifier.guard import GuardedVerifier
from vvp_simulator.keys import DEMO_ISSUER_SEED, trusted_keys
from vvp_simulator.passport import mint
from vvp_simulator.verdict import Options, verify

REPO = Path(__file__).resolve().parents[2]
ORIG, DEST = "+441923311001", "+441923311006"


def decision_request() -> bytes:
    """What Kamailio's route[ASK_HELPER] sends for a valid call."""
    return jsonfast.dumps(
        {
            "method": "INVITE",
            "request_uri": f"sip:{DEST}@edge.example",
            "from_uri": f"sip:{ORIG}@peer.example",
            "to_uri": f"sip:{DEST}@edge.example",
            "call_id": "bench-1",
            "cseq": 1,
            "source_ip": "192.0.2.10",
            "source_port": 5060,
            "transport": "udp",
            "received_at": f"{time.time():.6f}",
            "identity": mint("valid", ORIG, DEST).identity_header(),
        }
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", type=int, default=20000, help="repetitions per step")
    parser.add_argument(
        "--multiprocess", action="store_true", help="metrics as a worker of several keeps them"
    )
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="decision-bench-") as directory:
        run(args.calls, directory if args.multiprocess else None)


def run(calls: int, multiprocess_dir: str | None) -> None:

    body = decision_request()
    call = CallRequest.from_json(jsonfast.loads(body))
    found = identity.extract(call.identity, call.p_vvp_identity, call.p_vvp_passport)
    assert isinstance(found, identity.Found), found
    request = _verify_request(call, found)
    answer = jsonfast.dumps(
        verify(
            found.vvp_identity,
            request.body(),
            trusted_keys((DEMO_ISSUER_SEED,)),
            time.time(),
            Options(cache_hit=True),
        )
    )
    verdict = Verdict.from_json(jsonfast.loads(answer))
    assert verdict.overall_status == "VALID", verdict
    metrics = Metrics(None, multiprocess_dir=multiprocess_dir)
    # The limiter as the app wires it, with its gauges (no request is sent).
    guarded = GuardedVerifier(VerifierClient("http://127.0.0.1:9/", timeout=1), metrics=metrics)
    limiter = guarded.limiter

    def take_and_give_back_a_slot() -> None:
        # acquire() with a slot free returns without suspending: one send() runs it.
        taking = limiter.acquire()
        with contextlib.suppress(StopIteration):
            taking.send(None)
        limiter.release(0.001)

    policy = PolicyStore.open(str(REPO / "policy" / "default.yaml"), metrics).current
    decision = conclude(call, policy, "valid", (), verdict=verdict, verifier_ms=1.0)
    precheck = PrecheckSettings()

    steps: list[tuple[str, Callable[[], object]]] = [
        ("decode Kamailio's request", lambda: CallRequest.from_json(jsonfast.loads(body))),
        (
            "extract the identity",
            lambda: identity.extract(call.identity, call.p_vvp_identity, call.p_vvp_passport),
        ),
        (
            "pre-check it",
            lambda: identity.precheck(
                found,
                now=time.time(),
                from_uri=call.from_uri,
                to_uri=call.to_uri,
                settings=precheck,
            ),
        ),
        (
            "build the verifier request",
            lambda: jsonfast.dumps(_verify_request(call, found).body()),
        ),
        ("decode the verifier's answer", lambda: Verdict.from_json(jsonfast.loads(answer))),
        (
            "apply the policy",
            lambda: conclude(call, policy, "valid", (), verdict=verdict, verifier_ms=1.0),
        ),
        ("encode the instruction", lambda: jsonfast.dumps(instruction_json(decision))),
        (
            "update the metrics",
            lambda: (
                metrics.decisions.labels("valid", "redirect", "302").inc(),
                metrics.decision_seconds.observe(0.001),
                metrics.verifier_seconds.observe(0.001),
                metrics.in_flight.inc(),
                metrics.in_flight.dec(),
            ),
        ),
        ("take and give back a verifier slot", take_and_give_back_a_slot),
    ]
    total = 0.0
    print(f"{'step':45} {'us/call':>8}")
    for name, step in steps:
        # The fastest of five rounds: what the step costs, not what a busy machine adds.
        rounds = timeit.repeat(step, number=max(calls // 5, 1), repeat=5)
        micros = min(rounds) / max(calls // 5, 1) * 1e6
        total += micros
        print(f"{name:45} {micros:8.1f}")
    print(f"{'total':45} {total:8.1f}")
    # Decider.decide and VerifierClient.verify each bound the call with a timeout.
    print(f"{'(two nested asyncio.timeout, not in total)':45} {_timeouts(calls):8.1f}")


def _timeouts(calls: int) -> float:
    async def measure() -> float:
        started = time.perf_counter()
        for _ in range(calls):
            async with asyncio.timeout(5.5), asyncio.timeout(5):
                pass
        return (time.perf_counter() - started) / calls * 1e6

    return asyncio.run(measure())


if __name__ == "__main__":
    main()
