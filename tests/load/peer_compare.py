"""The edge and the VVP project's own SIP proxy (sip-verify, "the peer"), same load, same sitting.

    .venv/bin/python tests/load/peer_compare.py --peer-src /path/to/vvp/services/sip-verify \\
        --peer-python /path/to/venv/bin/python --rates 400,800,1000,1200,1600 --pairs 3

Both targets verify against the SAME simulator process, with the same sipp scenario: one
INVITE per call carrying a fresh valid identity in both ``Identity`` and
``P-VVP-Identity`` (the peer answers 400 without the latter), expecting a 302 with
``X-VVP-Status: VALID``. For each offered rate it measures edge, peer, edge, peer ...
(``--pairs`` times each), every step after ``--warmup`` seconds of the same traffic, as
tests/load/ramp.py does, and reports per step: answered/s, VALID answers (seen by sipp,
and the simulator's own VALID count), failed calls (no final answer), unexpected answers
(anything but a 302 VALID; for the edge, calls it shed are shown apart), INVITE
retransmissions, INVITE-to-final p50/p95/p99, and CPU (% and µs per answered call) of
each process: Kamailio and the helper for the edge, the peer's one process, the
simulator. A step is CLEAN when every call got its 302 VALID (0 failed, 0 unexpected,
0 shed), with 0 retransmissions and p99 within ``--p99-bound-ms``; each target's
zero-failure rate is its highest clean step, and the edge/peer ratio of those is printed
per pair. JSON goes to var/load/<time>-peer/results.json.

The edge runs on its defaults (Kamailio and one helper, kamailio.cfg's worker counts, as
deploy/ runs it); both SIP fronts (Kamailio, the peer) get the same nice value
(``--sip-nice``), and both verifying processes log at WARNING.

Getting the peer (it is not part of this project and is never copied into it)::

    # the public repository github.com/Rich-Connexions-Ltd/VVP
    git clone --depth 1 https://github.com/Rich-Connexions-Ltd/VVP /tmp/vvp-src
    mkdir -p /opt/vvp-peer
    git -C /tmp/vvp-src archive HEAD services/sip-verify common | tar -x -C /opt/vvp-peer
    python3 -m venv /opt/vvp-peer/venv
    /opt/vvp-peer/venv/bin/pip install aiohttp httpx

then ``--peer-src /opt/vvp-peer/services/sip-verify --peer-python
/opt/vvp-peer/venv/bin/python`` (or VVP_PEER_SRC / VVP_PEER_PYTHON; the peer's
PYTHONPATH defaults to <root>/common:<root>, <root> being two levels above --peer-src,
override with --peer-pythonpath or VVP_PEER_PYTHONPATH). The peer may crash with a
TypeError in stop_servers when stopped: harmless, it is stopped anyway.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from tests.load.ramp import (
    CLK_TCK,
    REPO,
    cpu_ticks,
    group_pids,
    last_stats,
    load_scenario,
    measure,
    prioritise,
)
from tests.support.harness import Helper, Kamailio, Process, Simulator, free_port, http_json

#: What both targets must answer each call: a 302 carrying this header and value.
VALID_ANSWER = ("X-VVP-Status", "^[[:space:]]*VALID[[:space:]]*$")
#: Both headers the peer needs (CSV fields of vvp_simulator.mint.write_csv).
SCENARIO_HEADERS = ("P-VVP-Identity: [field4]",)
#: sipp's counters of calls that got a final answer, but not the one wanted.
UNEXPECTED_COUNTERS = ("FailedUnexpectedMessage(C)", "FailedRegexpDoesntMatch(C)")
#: Where the edge sends a verified call (policy/default.yaml), so the peer does alike.
REDIRECT_TARGET = "verified.carrier.example"


@dataclass
class Result:
    """One target at one offered rate (one pair)."""

    target: str
    pair: int
    offered: float
    calls: int
    answered_per_s: float
    valid: int  # 302 with X-VVP-Status VALID, as sipp saw them
    simulator_valid: int  # VALID verdicts the simulator gave during the step
    failed: int  # no final answer
    unexpected: int  # a final answer other than 302 VALID, not shed
    shed: int  # the edge's own shedding (503, or the helper's unverified answer)
    retransmissions: int
    p50_ms: float
    p95_ms: float
    p99_ms: float
    cpu_percent: dict[str, float] = field(default_factory=dict)
    cpu_us_per_call: dict[str, float] = field(default_factory=dict)
    clean: bool = False
    step: dict[str, object] = field(default_factory=dict)


@dataclass
class Peer(Process):
    """sip-verify on loopback UDP, verifying against ``verifier_url``."""

    port: int = 0

    @classmethod
    def create(
        cls, workdir: Path, src: Path, python: str, pythonpath: str, verifier_url: str
    ) -> Peer:
        port = free_port()
        env = {
            "VVP_SIP_VERIFY_HOST": "127.0.0.1",
            "VVP_SIP_VERIFY_PORT": str(port),
            "VVP_SIP_VERIFY_TRANSPORT": "udp",
            "VVP_VERIFIER_URL": verifier_url,
            "VVP_REDIRECT_TARGET": REDIRECT_TARGET,
            "VVP_STATUS_ENABLED": "false",
            "VVP_MONITOR_ENABLED": "false",
            "VVP_LOG_LEVEL": "WARNING",
            "VVP_LOGO_CACHE_DIR": str(workdir / "peer-logos"),
            "PYTHONPATH": f"{src}:{pythonpath}",
        }
        argv = [python, "-m", "app.main"]
        peer = cls("peer", argv, workdir / f"peer-{port}.log", env=env, port=port)
        peer.start()
        deadline = time.monotonic() + 30
        while not _udp_bound(port):
            if not peer.alive() or time.monotonic() > deadline:
                peer.stop()
                raise RuntimeError(f"the peer did not listen on {port}:\n{peer.output()}")
            time.sleep(0.05)
        return peer


def _udp_bound(port: int) -> bool:
    """Whether something listens on UDP 127.0.0.1:port (the peer has no health URL)."""
    wanted = f"0100007F:{port:04X}"
    lines = Path("/proc/net/udp").read_text().splitlines()[1:]
    return any(line.split()[1] == wanted for line in lines)


def simulator_valid(simulator: Simulator) -> int:
    stats = http_json(f"{simulator.url}/_sim/stats")
    assert isinstance(stats, dict)
    return int(stats.get("by_status", {}).get("VALID", 0))


def run_target(
    target: str,
    pair: int,
    workdir: Path,
    port: int,
    rate: float,
    args: argparse.Namespace,
    processes: dict[str, Process],
    helpers: list[Helper],
    simulator: Simulator,
    scenario: Path,
) -> Result:
    tag = f"{target}-{int(rate)}-p{pair}"
    before: dict[str, object] = {}

    def snapshot() -> None:  # between the warm-up and the step
        before["sim"] = simulator_valid(simulator)
        before["pids"] = pids = {name: group_pids(p) for name, p in processes.items()}
        before["ticks"] = {name: cpu_ticks(p) for name, p in pids.items()}

    outcome_of = {"valid": "valid"}
    step = measure(workdir, port, rate, args.duration, {"valid": 1}, processes, helpers,
                   outcome_of, finals=(302,), warmup=args.warmup, tag=tag, scenario=scenario,
                   before_step=snapshot)  # fmt: skip
    sim_valid = simulator_valid(simulator) - int(before["sim"])  # type: ignore[call-overload]
    pids: dict[str, list[int]] = before["pids"]  # type: ignore[assignment]
    ticks: dict[str, int] = before["ticks"]  # type: ignore[assignment]
    stats = last_stats(workdir / f"step-{tag}")
    valid = int(stats.get("SuccessfulCall(C)", 0))
    not_valid = sum(int(stats.get(name, 0)) for name in UNEXPECTED_COUNTERS)
    answered = valid + not_valid
    # Shed calls are answered, not VALID: Kamailio's 503 or the helper's error answer.
    shed = min(step.shed, not_valid)
    result = Result(
        target=target, pair=pair, offered=rate, calls=step.calls,
        answered_per_s=round(answered / args.duration, 1), valid=valid,
        simulator_valid=sim_valid, failed=step.calls - answered,
        # The helper's outcomes (step.unexpected) and sipp see the same wrong answers.
        unexpected=max(not_valid - shed, step.unexpected), shed=shed,
        retransmissions=step.retransmissions,
        p50_ms=step.p50_ms, p95_ms=step.p95_ms, p99_ms=step.p99_ms,
        cpu_percent=dict(step.cpu_percent), step=asdict(step),
    )  # fmt: skip
    for name, used in ticks.items():
        seconds = (cpu_ticks(pids[name]) - used) / CLK_TCK
        result.cpu_us_per_call[name] = round(1e6 * seconds / max(answered, 1))
    result.clean = (
        result.failed == 0 and result.unexpected == 0 and result.shed == 0
        and result.retransmissions == 0 and valid == step.calls
        and result.p99_ms <= args.p99_bound_ms
    )  # fmt: skip
    return result


COLUMNS = (
    ("target", "target", 6), ("pair", "pair", 4), ("offered", "offered/s", 9),
    ("answered_per_s", "answered/s", 10), ("valid", "VALID", 7),
    ("simulator_valid", "sim VALID", 9), ("failed", "failed", 6),
    ("unexpected", "unexpect", 8), ("shed", "shed", 6), ("retransmissions", "retrans", 7),
    ("p50_ms", "p50 ms", 8), ("p95_ms", "p95 ms", 8), ("p99_ms", "p99 ms", 8),
)  # fmt: skip


def header() -> str:
    cells = [f"{title:>{width}}" for _, title, width in COLUMNS]
    return " ".join(cells) + "  clean  cpu% (µs/call) per process"


def row(result: Result) -> str:
    cells = [f"{getattr(result, key):>{width}}" for key, _, width in COLUMNS]
    cpu = ", ".join(f"{name} {result.cpu_percent.get(name, 0):g}% "
                    f"({result.cpu_us_per_call.get(name, 0)})"
                    for name in result.cpu_us_per_call if name != "sipp")  # fmt: skip
    return " ".join(cells) + f"  {'yes' if result.clean else 'NO ':>5}  {cpu}"


def clean_rate(results: list[Result], target: str, pair: int) -> float:
    return max((r.offered for r in results if r.target == target and r.pair == pair
                and r.clean), default=0.0)  # fmt: skip


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rates", default="400,800,1000,1200,1600", help="offered calls/s")
    parser.add_argument("--duration", type=float, default=60, help="seconds per step")
    parser.add_argument("--warmup", type=float, default=10,
                        help="unreported seconds at each step's rate, before it")  # fmt: skip
    parser.add_argument("--pairs", type=int, default=1,
                        help="times to measure edge then peer at each rate")  # fmt: skip
    parser.add_argument("--p99-bound-ms", type=float, default=500,
                        help="a clean step's p99 INVITE-to-final bound")  # fmt: skip
    parser.add_argument("--targets", default="edge,peer", help="edge, peer or both")
    parser.add_argument("--peer-src", type=Path, default=os.environ.get("VVP_PEER_SRC"),
                        help="the peer's services/sip-verify folder (VVP_PEER_SRC)")  # fmt: skip
    parser.add_argument("--peer-python", default=os.environ.get("VVP_PEER_PYTHON"),
                        help="a python with aiohttp and httpx (VVP_PEER_PYTHON)")  # fmt: skip
    parser.add_argument("--peer-pythonpath", default=os.environ.get("VVP_PEER_PYTHONPATH"),
                        help="the peer's PYTHONPATH (default <root>/common:<root>)")  # fmt: skip
    parser.add_argument("--sip-nice", type=int, default=-5,
                        help="nice value of Kamailio and of the peer alike")  # fmt: skip
    parser.add_argument("--kamailio-set", action="append", default=[], metavar="VVP_NAME=VALUE",
                        help="a kamailio.cfg setting (repeatable); the default only turns "
                             "the per-address flood limit off: sipp is one address")  # fmt: skip
    parser.add_argument("--out", type=Path, default=None, help="results folder")
    args = parser.parse_args()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))

    targets = [t for t in args.targets.split(",") if t]
    if not targets or set(targets) - {"edge", "peer"}:
        parser.error("--targets: edge, peer or edge,peer")
    peer_src = python = pythonpath = None
    if "peer" in targets:
        if args.peer_src is None:
            parser.error("the peer's sources: --peer-src or VVP_PEER_SRC (see --help)")
        peer_src = args.peer_src.resolve()
        if not (peer_src / "app" / "main.py").is_file():
            parser.error(f"{peer_src} is not sip-verify's folder (no app/main.py)")
        python = args.peer_python or str(peer_src.parents[1] / "venv" / "bin" / "python")
        root = peer_src.parents[1]
        pythonpath = args.peer_pythonpath or f"{root / 'common'}:{root}"
    kamailio_env = {"VVP_FLOOD_LIMIT": "0"}
    for setting in args.kamailio_set:
        name, equals, value = setting.partition("=")
        if not equals or not name.startswith("VVP_"):
            parser.error(f"--kamailio-set wants VVP_NAME=VALUE, not {setting!r}")
        kamailio_env[name] = value
    rates = [float(r) for r in args.rates.split(",")]
    out = (args.out or REPO / "var" / "load" / time.strftime("%Y%m%d-%H%M%S-peer")).resolve()
    out.mkdir(parents=True, exist_ok=True)
    print(f"results in {out}; {os.cpu_count()} cores; load average {os.getloadavg()[0]:.2f}")
    print(f"clean = every call 302 VALID, 0 retransmissions, p99 <= {args.p99_bound_ms:g} ms")

    started: list[Process] = []
    results: list[Result] = []
    try:
        simulator = Simulator.create(out)
        started.append(simulator)
        scenario = load_scenario(out / "peer-compare.xml", (302,), SCENARIO_HEADERS,
                                 VALID_ANSWER)  # fmt: skip
        edge: tuple[int, dict[str, Process], list[Helper]] | None = None
        if "edge" in targets:
            helper = Helper.create(out, simulator.url, VVP_LOG_LEVEL="WARNING")
            started.append(helper)
            kamailio = Kamailio.create(out, helper.decide_url, **kamailio_env)
            started.append(kamailio)
            prioritise(kamailio, args.sip_nice)
            edge = (kamailio.port, {"kamailio": kamailio, "helper": helper,
                                    "simulator": simulator}, [helper])  # fmt: skip
        peer: tuple[int, dict[str, Process], list[Helper]] | None = None
        if "peer" in targets:
            assert peer_src is not None and python is not None and pythonpath is not None
            process = Peer.create(out, peer_src, python, pythonpath, simulator.url)
            started.append(process)
            prioritise(process, args.sip_nice)
            peer = (process.port, {"peer": process, "simulator": simulator}, [])
        print(header(), flush=True)
        for rate in rates:
            for pair in range(1, args.pairs + 1):
                for name, target in (("edge", edge), ("peer", peer)):
                    if target is None:
                        continue
                    port, processes, helpers = target
                    result = run_target(name, pair, out, port, rate, args, processes,
                                        helpers, simulator, scenario)  # fmt: skip
                    results.append(result)
                    print("\r\033[K" + row(result), flush=True)
    finally:
        for process in reversed(started):
            process.stop()

    summary: dict[str, object] = {
        "rates": rates, "duration_s": args.duration, "warmup_s": args.warmup,
        "pairs": args.pairs, "p99_bound_ms": args.p99_bound_ms, "cores": os.cpu_count(),
        "peer_src": str(peer_src) if peer_src else None,
        "results": [asdict(r) for r in results], "clean_rates": [],
    }  # fmt: skip
    print(f"\nzero-failure (clean) rate, calls/s (p99 <= {args.p99_bound_ms:g} ms):")
    clean_rates: list[dict[str, object]] = []
    for pair in range(1, args.pairs + 1):
        rates_of = {t: clean_rate(results, t, pair) for t in targets}
        entry: dict[str, object] = {"pair": pair, **rates_of}
        line = f"  pair {pair}: " + ", ".join(f"{t} {v:g}" for t, v in rates_of.items())
        if len(targets) == 2:
            ratio = rates_of["edge"] / rates_of["peer"] if rates_of["peer"] else None
            entry["edge_over_peer"] = round(ratio, 2) if ratio is not None else None
            line += f" -> edge/peer {ratio:.2f}" if ratio is not None else " -> edge/peer n/a"
        clean_rates.append(entry)
        print(line + ("" if all(rates_of.values()) else "  (0: no step ran clean)"))
    summary["clean_rates"] = clean_rates
    (out / "results.json").write_text(json.dumps(summary, indent=2))
    print(f"wrote {out / 'results.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
