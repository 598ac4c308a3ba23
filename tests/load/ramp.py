"""Load ramp and benchmark of the whole edge with sipp: what carriers size an edge by.

    .venv/bin/python tests/load/ramp.py --rates 250,500,1000,1500 --duration 30
    .venv/bin/python tests/load/ramp.py --baseline --rates 500,1000 --duration 20

For each step (an offered rate held for --duration seconds) it sends a realistic mix of
calls, each with a fresh identity minted just before the step, and reports: offered and
achieved calls/s, failed calls, unexpected answers, response time p50/p95/p99 (INVITE to
final answer, from sipp's own timing), and CPU and memory (PSS) of Kamailio, the helper
and the simulator. It prints a table as it goes, writes JSON, and renders a PNG. The
figures are for steady state: each step is preceded by --warmup seconds of the same
traffic that are not in its figures (connection pools grow to the rate, first-call paths
run); what that warm-up went through, the jump from idle to the rate, is printed under the
step when it was not clean, and kept in the JSON.

``--baseline`` also measures, in the same run on the same machine, Kamailio alone
answering the same INVITEs with a stateful 302 (kamailio.cfg WITH_STATIC_302) and prints
the full path's ceiling as a share of it: the number that moves least between machines.

Unexpected answers are counted from the edge's own counters: the helper's decisions by
outcome must equal the mix that was sent (each kind has a known outcome), and every
call must get exactly one final answer (sipp's failed-call counter).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import resource
import signal
import statistics
import subprocess
import sys
import time
import urllib.request
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

from tests.support.harness import Helper, Kamailio, Process, Simulator, free_port
from tests.support.sipp_scenarios import KNOWN_FINALS, invite_any_final
from vvp_simulator.mint import write_csv
from vvp_simulator.passport import mint

REPO = Path(__file__).resolve().parents[2]

#: The outcome each minted kind must get (the simulator's documented behaviour).
OUTCOME_OF = {
    "valid": "valid",
    "brand": "valid",
    "forged": "invalid",
    "expired": "invalid",
    "wrong-number": "invalid",
    "indeterminate": "indeterminate",
    "none": "missing",
}
DEFAULT_MIX = "valid=80,brand=5,forged=5,expired=3,indeterminate=2,none=5"
CLK_TCK = os.sysconf("SC_CLK_TCK")
SIPP_SOCKET_BUFFER = 4 * 1024 * 1024  # bytes, sipp -buff_size
MINT_SECONDS = 0.0002  # about the time to mint one identity (write_identities)


@dataclass
class Step:
    offered: float
    duration: float
    calls: int
    achieved: float = 0.0
    failed: int = 0
    unexpected: int = 0
    answered: int = 0
    #: Calls shed: 503 from Kamailio's admission control, or the helper's unverified
    #: error answer for a call that queued past VVP_HELPER_MAX_QUEUE_WAIT.
    shed: int = 0
    #: Calls answered by a real decision (verified, or Kamailio's fallback), per second.
    decided: float = 0.0
    p50_ms: float = 0.0
    p95_ms: float = 0.0
    p99_ms: float = 0.0
    retransmissions: int = 0
    cpu_percent: dict[str, float] = field(default_factory=dict)
    pss_mb: dict[str, float] = field(default_factory=dict)
    outcomes: dict[str, int] = field(default_factory=dict)
    #: (seconds into the step, {process: PSS MB}) every --memory-every seconds.
    pss_series: list[tuple[float, dict[str, float]]] = field(default_factory=list)
    #: The unreported warm-up just before the step, at the same rate (--warmup).
    warmup: Step | None = None


def parse_mix(text: str) -> dict[str, int]:
    mix = {}
    for part in text.split(","):
        kind, _, weight = part.partition("=")
        if kind not in OUTCOME_OF:
            raise SystemExit(f"ramp: unknown kind {kind!r}; known: {', '.join(OUTCOME_OF)}")
        mix[kind] = int(weight or 1)
    return mix


def kinds_for(mix: dict[str, int], calls: int) -> list[str]:
    """Calls interleaved by weight (not in blocks), so every moment sees the whole mix."""
    pattern = [kind for kind, weight in mix.items() for _ in range(weight)]
    spread = sorted(range(len(pattern)), key=lambda i: (i * 7919) % len(pattern))
    pattern = [pattern[i] for i in spread]
    return [pattern[i % len(pattern)] for i in range(calls)]


def write_identities(path: Path, kinds: list[str], rate: float, start_at: float) -> None:
    """The sipp injection file: one fresh identity per call, each signed for the moment it
    will be sent (call i at ``start_at + i / rate``): the verifier wants a PASSporT's iat
    within 30 s of the INVITE, so identities minted all at once would go stale in a long
    step. "none" rows carry a dummy identity that the scenario does not send."""
    rows = []
    for index, kind in enumerate(kinds):
        when = int(start_at + index / rate)
        rows.append(mint(kind if kind != "none" else "valid", "+441923311001",
                         "+441923311006", now=when))  # fmt: skip
    with path.open("w") as out:
        write_csv(out, rows)


# -- process accounting ----------------------------------------------------------------


def group_pids(process: Process) -> list[int]:
    """Every process of ``process``'s group: Kamailio and its children, the helper's
    parent and its workers (``--helper-workers``; forked, they stay in its group)."""
    assert process.proc is not None
    pgid = process.proc.pid
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if os.getpgid(int(entry.name)) == pgid:
                    pids.append(int(entry.name))
            except ProcessLookupError:
                continue
    return pids


def cpu_ticks(pids: list[int]) -> int:
    total = 0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        # utime + stime, and cutime + cstime: a child that ended and was reaped (a helper
        # worker replaced during a step) leaves its time to its parent, not to nobody.
        total += int(fields[11]) + int(fields[12]) + int(fields[13]) + int(fields[14])
    return total


def pss_mb(pids: list[int]) -> float:
    # PSS, not RSS: Kamailio's workers share its memory; RSS would count it per worker.
    total = 0
    for pid in pids:
        try:
            text = Path(f"/proc/{pid}/smaps_rollup").read_text()
        except OSError:
            continue
        match = re.search(r"^Pss:\s+(\d+) kB", text, re.M)
        total += int(match.group(1)) if match else 0
    return round(total / 1024, 1)


def kamailio_shed(kamailio: Process | None) -> int:
    if not isinstance(kamailio, Kamailio):
        return 0
    text = urllib.request.urlopen(kamailio.metrics_url, timeout=5).read().decode()
    match = re.search(r"^kamailio_script_vvp_shed(?:\{[^}]*\})? (\S+)", text, re.M)
    return int(float(match.group(1))) if match else 0


def helper_outcomes(helpers: list[Helper]) -> Counter[str]:
    """Decisions by outcome, and under "overloaded" the error answers given unverified
    because the call queued too long (VVP_HELPER_MAX_QUEUE_WAIT): shed by the helper."""
    counts: Counter[str] = Counter()
    for helper in helpers:
        text = urllib.request.urlopen(f"{helper.url}/metrics", timeout=5).read().decode()
        for outcome, value in re.findall(
            r'^vvp_helper_decisions_total\{[^}]*outcome="(\w+)"[^}]*\} (\S+)', text, re.M
        ):
            counts[outcome] += int(float(value))
        for value in re.findall(r"^vvp_helper_overloaded_total (\S+)", text, re.M):
            counts["overloaded"] += int(float(value))
    return counts


def prioritise(process: Process, nice: int) -> None:
    """Give Kamailio the CPU first, as the deployment does: SIP packets must be read
    before the helpers' backlog is worked on, or the socket overflows and callers
    retransmit into an already saturated machine."""
    for pid in group_pids(process):
        try:
            os.setpriority(os.PRIO_PROCESS, pid, nice)
        except PermissionError:
            print(f"ramp: cannot set Kamailio's priority to {nice} (not root)", file=sys.stderr)
            return


# -- one step ----------------------------------------------------------------------------


def load_scenario(
    path: Path,
    finals: Sequence[int] = KNOWN_FINALS,
    headers: Sequence[str] = (),
    require: tuple[str, str] | None = None,
) -> Path:
    """One INVITE per call from the CSV, timed by sipp (rtd 1): any of ``finals`` counts
    (any other final answer fails the call, as sipp's FailedUnexpectedMessage).

    ``headers``: more lines for the INVITE (CSV fields allowed, e.g. "P-VVP-Identity:
    [field4]"). ``require``: (header, regexp) the last of ``finals`` must carry, or the
    call fails as sipp's FailedRegexpDoesntMatch (e.g. ("X-VVP-Status", "^VALID$"))."""
    scenario = invite_any_final(path, csv=True, finals=finals, headers=headers)
    text = scenario.read_text().replace(
        "Identity: [field2];info=<[field3]>;alg=EdDSA;ppt=vvp",
        "[field6]: [field2];info=<[field3]>;alg=EdDSA;ppt=vvp",
    )
    text = text.replace('<send retrans="500">', '<send retrans="500" start_rtd="1">', 1)
    text = re.sub(
        r'(<recv response="\d+"(?: optional="true")? next="ack")/>', r'\1 rtd="1"/>', text
    )
    if require is not None:
        name, regexp = require
        check = (f'<action><ereg regexp="{regexp}" search_in="hdr" header="{name}:" '
                 f'check_it="true" assign_to="required"/></action></recv>')  # fmt: skip
        last = f'<recv response="{finals[-1]}" next="ack" rtd="1"/>'
        assert last in text, text
        text = text.replace(last, last[:-2] + ">" + check)
        # sipp refuses a variable that is set and never read.
        text = text.replace("</scenario>", '  <Reference variables="required"/>\n</scenario>')
    path.write_text(text)
    return path


def mint_step(
    workdir: Path, rate: float, seconds: float, mix: dict[str, int], tag: str, start_at: float
) -> tuple[Path, list[str]]:
    """The injection file for ``seconds`` of calls at ``rate`` sent from ``start_at`` on."""
    kinds = kinds_for(mix, int(rate * seconds))
    csv = workdir / f"ids-{tag}.csv"
    write_identities(csv, kinds, rate, start_at)
    # Field 6 names the identity header: "Identity", or for calls that carry none, a
    # header the edge ignores (sipp's CSV separator is ";", so the line itself cannot
    # be a field: Identity parameters are ";"-separated too).
    lines = csv.read_text().splitlines()
    rows = [lines[0]]
    for line, kind in zip(lines[1:], kinds, strict=True):
        rows.append(f"{line};{'X-Load-Unsigned' if kind == 'none' else 'Identity'}")
    csv.write_text("\n".join(rows) + "\n")
    return csv, kinds


def run_step(
    workdir: Path,
    target_port: int,
    rate: float,
    duration: float,
    injection: tuple[Path, list[str]],
    processes: dict[str, Process],
    helpers: list[Helper],
    outcome_of: dict[str, str] = OUTCOME_OF,
    memory_every: float = 0,
    finals: Sequence[int] = KNOWN_FINALS,
    tag: str = "",
    scenario: Path | None = None,
) -> Step:
    """One step; ``scenario``: a load_scenario() of the caller's instead of ``finals``'."""
    csv, kinds = injection
    calls = len(kinds)
    step = Step(offered=rate, duration=duration, calls=calls)
    tag = tag or str(int(rate))  # names the step's files: step-<tag>/
    if scenario is None:
        only = "-".join(map(str, finals))
        scenario_file = "ramp.xml" if finals == KNOWN_FINALS else f"ramp-only-{only}.xml"
        scenario = load_scenario(workdir / scenario_file, finals)

    before_outcomes = helper_outcomes(helpers)
    before_shed = kamailio_shed(processes.get("kamailio"))
    pids = {name: group_pids(p) for name, p in processes.items()}
    ticks = {name: cpu_ticks(p) for name, p in pids.items()}
    rtt_dir = workdir / f"step-{tag}"
    rtt_dir.mkdir(exist_ok=True)
    for stale in rtt_dir.glob("*.csv"):  # an earlier run into the same --out
        stale.unlink()
    started = time.monotonic()
    argv = [
        "sipp", f"127.0.0.1:{target_port}", "-sf", str(scenario), "-inf", str(csv),
        "-m", str(calls), "-r", str(rate), "-rp", "1000", "-l", str(max(100, int(rate * 4))),
        "-i", "127.0.0.1", "-p", str(free_port()), "-t", "u1",
        "-nostdin", "-timeout", f"{duration + 60:.0f}s",
        "-trace_rtt", "-rtt_freq", "100", "-trace_stat", "-fd", "1",
        "-max_socket", "2000", "-bind_local",
        # sipp's 64 KB default socket buffer overflows at 8,000 answers/s: the kernel
        # drops answers (UdpRcvbufErrors) and the load generator, not the edge, makes
        # callers retransmit. 4 MB is net.core.rmem_max on Debian 12.
        "-buff_size", str(SIPP_SOCKET_BUFFER),
    ]  # fmt: skip
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    sipp = subprocess.Popen(argv, cwd=rtt_dir, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)  # fmt: skip
    # sipp's own -timeout does not always stop it when calls are stuck: a hard limit.
    hard_stop = started + duration + 90
    while sipp.poll() is None and time.monotonic() < hard_stop:
        try:
            sipp.wait(timeout=memory_every or 1)
        except subprocess.TimeoutExpired:
            if memory_every:
                sample = {name: pss_mb(p) for name, p in pids.items()}
                step.pss_series.append((round(time.monotonic() - started, 1), sample))
    if sipp.poll() is None:
        sipp.terminate()
    stdout, stderr = sipp.communicate()
    done = subprocess.CompletedProcess(argv, sipp.returncode, stdout, stderr)
    elapsed = time.monotonic() - started
    used = resource.getrusage(resource.RUSAGE_CHILDREN)
    sipp_seconds = (used.ru_utime - children.ru_utime) + (used.ru_stime - children.ru_stime)
    step.cpu_percent["sipp"] = round(100 * sipp_seconds / elapsed, 1)
    for name, before in ticks.items():
        # The group as it is now: a helper worker started during the step counts too.
        ticks_used = cpu_ticks(group_pids(processes[name])) - before
        step.cpu_percent[name] = round(100 * ticks_used / CLK_TCK / elapsed, 1)
        step.pss_mb[name] = pss_mb(pids[name])

    stats = last_stats(rtt_dir)
    step.answered = int(stats.get("SuccessfulCall(C)", 0))
    step.failed = int(stats.get("FailedCall(C)", calls))
    step.retransmissions = int(stats.get("Retransmissions(C)", 0))
    step.achieved = round(step.answered / elapsed, 1)
    step.shed = kamailio_shed(processes.get("kamailio")) - before_shed
    times = _response_times(rtt_dir)
    if times:
        quantiles = statistics.quantiles(times, n=100, method="inclusive")
        step.p50_ms, step.p95_ms, step.p99_ms = (round(quantiles[i], 2) for i in (49, 94, 98))
    if helpers:  # the Kamailio-only baseline has no outcomes to check
        after = helper_outcomes(helpers)
        got = Counter({k: after[k] - before_outcomes[k] for k in after})
        step.outcomes = dict(got)
        # Shed calls (503 from Kamailio, or the helper's unverified "error" for a call
        # that queued too long): which kinds they were is not known, only how many, so
        # they are taken off the outcomes missing.
        overloaded = got.pop("overloaded", 0)
        got["error"] -= overloaded
        step.shed += overloaded
        expected = Counter(outcome_of[k] for k in kinds)
        missing = max(0, sum((expected - got).values()) - step.shed)
        step.unexpected = max(missing, sum((got - expected).values()))
    step.decided = round((step.answered - step.shed) / elapsed, 1)
    if done.returncode not in (0, 1):
        print(f"  sipp exited {done.returncode}: {done.stderr[-500:]}", file=sys.stderr)
    return step


def last_stats(directory: Path) -> dict[str, str]:
    """sipp's last statistics line of a step (-trace_stat), by column name."""
    for path in directory.glob("*_.csv"):
        rows = [r.split(";") for r in path.read_text().splitlines() if r]
        if len(rows) >= 2:
            return dict(zip(rows[0], rows[-1], strict=False))
    return {}


def _response_times(directory: Path) -> list[float]:
    times = []
    for path in directory.glob("*_rtt.csv"):
        for line in path.read_text().splitlines()[1:]:
            parts = line.split(";")
            if len(parts) >= 2:
                try:
                    times.append(float(parts[1]))
                except ValueError:
                    continue
    return times


# -- the run -----------------------------------------------------------------------------

COLUMNS = (
    ("offered", "offered/s", 9), ("achieved", "answered/s", 10), ("decided", "decided/s", 9),
    ("shed", "shed", 6), ("failed", "failed", 7),
    ("unexpected", "unexpect", 8), ("p50_ms", "p50 ms", 8), ("p95_ms", "p95 ms", 8),
    ("p99_ms", "p99 ms", 8), ("retransmissions", "retrans", 8),
)  # fmt: skip


def header(names: list[str]) -> str:
    cells = [f"{title:>{width}}" for _, title, width in COLUMNS]
    cells += [f"{'cpu% ' + n:>14}" for n in names] + [f"{'MB ' + n:>12}" for n in names]
    return " ".join(cells)


def row(step: Step, names: list[str]) -> str:
    cells = [f"{getattr(step, key):>{width}}" for key, _, width in COLUMNS]
    cells += [f"{step.cpu_percent.get(n, 0):>14}" for n in names]
    cells += [f"{step.pss_mb.get(n, 0):>12}" for n in names]
    return " ".join(cells)


def measure(
    workdir: Path,
    target_port: int,
    rate: float,
    duration: float,
    mix: dict[str, int],
    processes: dict[str, Process],
    helpers: list[Helper],
    outcome_of: dict[str, str] = OUTCOME_OF,
    memory_every: float = 0,
    finals: Sequence[int] = KNOWN_FINALS,
    warmup: float = 0,
    tag: str = "",
    scenario: Path | None = None,
    before_step: Callable[[], object] | None = None,
) -> Step:
    """One step after its warm-up. ``tag`` names its files (default: the rate);
    ``before_step`` runs between the warm-up and the step (e.g. to read counters)."""
    tag = tag or str(int(rate))
    # The figures are for steady state: each step is preceded by ``warmup`` seconds of
    # the same traffic, not reported, so that connection pools (Kamailio to the
    # helpers, the helpers to the verifier) have grown to the rate. What the warm-up
    # itself went through (the jump from idle to the rate) is kept in Step.warmup.
    warm_calls, calls = int(rate * warmup), int(rate * duration)
    print(f"   ... {rate:g} calls/s: minting {warm_calls + calls} identities", end="\r",
          flush=True)  # fmt: skip
    minted = time.time() + (warm_calls + calls) * MINT_SECONDS
    injection = mint_step(workdir, rate, duration, mix, tag, start_at=minted + warmup + 1)
    warm = None
    if warm_calls:
        warm_tag = f"{tag}-warmup"
        warm_start = time.time() + warm_calls * MINT_SECONDS + 1
        warm_injection = mint_step(workdir, rate, warmup, mix, warm_tag, warm_start)
        print(f"\r\033[K   ... {rate:g} calls/s: warming up for {warmup:g} s", end="\r",
              flush=True)  # fmt: skip
        warm = run_step(workdir, target_port, rate, warmup, warm_injection, processes,
                        helpers, outcome_of, finals=finals, tag=warm_tag,
                        scenario=scenario)  # fmt: skip
    if before_step is not None:
        before_step()
    print(f"\r\033[K   ... {rate:g} calls/s for {duration:g} s", end="\r", flush=True)
    step = run_step(workdir, target_port, rate, duration, injection, processes, helpers,
                    outcome_of, memory_every, finals, tag=tag,
                    scenario=scenario)  # fmt: skip
    step.warmup = warm
    return step


def ramp(
    label: str,
    workdir: Path,
    target_port: int,
    rates: list[float],
    duration: float,
    mix: dict[str, int],
    processes: dict[str, Process],
    helpers: list[Helper],
    stop_after_failure: bool,
    outcome_of: dict[str, str] = OUTCOME_OF,
    memory_every: float = 0,
    finals: Sequence[int] = KNOWN_FINALS,
    warmup: float = 0,
) -> list[Step]:
    names = list(processes)
    print(f"\n== {label}")
    print(header(names), flush=True)
    steps = []
    for rate in rates:
        step = measure(workdir, target_port, rate, duration, mix, processes, helpers,
                       outcome_of, memory_every, finals, warmup)  # fmt: skip
        steps.append(step)
        print("\r\033[K" + row(step, names), flush=True)
        warm = step.warmup
        if warm and (warm.failed or warm.shed or warm.unexpected):
            print(f"{'':>10}(its {warmup:g} s warm-up, from idle to {rate:g}/s: {warm.shed} "
                  f"shed, {warm.failed} failed, {warm.unexpected} unexpected, p99 "
                  f"{warm.p99_ms:g} ms)", flush=True)  # fmt: skip
        if stop_after_failure and (step.failed or step.shed or step.achieved < 0.9 * rate):
            break
    return steps


def plot(results: dict[str, list[Step]], out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, (left, right) = plt.subplots(1, 2, figsize=(12, 4.5))
    for label, steps in results.items():
        offered = [s.offered for s in steps]
        left.plot(offered, [s.achieved for s in steps], marker="o", label=f"{label} answered")
        if any(s.shed for s in steps):
            left.plot(offered, [s.decided for s in steps], marker="x",
                      label=f"{label} decided (not shed)")  # fmt: skip
        if label != "kamailio-only":
            for key, style in (("p50_ms", ":"), ("p95_ms", "--"), ("p99_ms", "-")):
                right.plot(offered, [getattr(s, key) for s in steps], style, marker=".",
                           label=f"{label} {key.removesuffix('_ms')}")  # fmt: skip
    top = max(s.offered for steps in results.values() for s in steps)
    left.plot([0, top], [0, top], color="grey", linewidth=0.8, label="offered")
    left.set(xlabel="offered calls/s", ylabel="answered calls/s", title="Throughput")
    right.set(xlabel="offered calls/s", ylabel="ms", title="INVITE to final answer",
              yscale="log")  # fmt: skip
    for axis in (left, right):
        axis.grid(alpha=0.3)
        axis.legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(out, dpi=110)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rates", default="250,500,1000,1500,2000", help="offered calls/s")
    parser.add_argument("--duration", type=float, default=30, help="seconds per step")
    parser.add_argument("--mix", default=DEFAULT_MIX, help="kind=weight,...")
    # One helper, as deploy/ and compose.yaml run it: on 2 cores a second one costs more
    # (more processes to wake, less batching) than it adds; see the README.
    parser.add_argument("--helpers", type=int, default=1, choices=(1, 2), help="helper processes")
    parser.add_argument("--helper-workers", type=int, default=1, metavar="N",
                        help="each helper's --workers (VVP_HELPER_PROCESSES); its cpu%% and "
                             "MB columns cover the parent and all its workers")  # fmt: skip
    parser.add_argument("--latency-ms", type=int, default=0, help="simulator added latency")
    parser.add_argument("--verifier-down", action="store_true", help="no verifier at all")
    parser.add_argument("--memory-every", type=float, default=0,
                        help="sample memory every N seconds during a step")  # fmt: skip
    parser.add_argument("--baseline", action="store_true", help="also Kamailio alone")
    parser.add_argument("--baseline-rates", default=None,
                        help="offered calls/s for Kamailio alone (default: --rates)")  # fmt: skip
    parser.add_argument("--kamailio-nice", type=int, default=-5,
                        help="Kamailio's nice value (deploy/systemd gives it -5 too)")  # fmt: skip
    parser.add_argument("--warmup", type=float, default=10,
                        help="unreported seconds at each step's rate, before it")  # fmt: skip
    parser.add_argument("--keep-going", action="store_true", help="do not stop at the knee")
    parser.add_argument("--kamailio-set", action="append", default=[], metavar="VVP_NAME=VALUE",
                        help="a kamailio.cfg setting for both paths (repeatable), e.g. "
                             "VVP_HELPER_WORKERS=1")  # fmt: skip
    parser.add_argument("--out", type=Path, default=None, help="results folder")
    args = parser.parse_args()
    # Stopped from outside (timeout, kill): still stop the edge processes it started.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))

    rates = [float(r) for r in args.rates.split(",")]
    mix = parse_mix(args.mix)
    out = (args.out or REPO / "var" / "load" / time.strftime("%Y%m%d-%H%M%S")).resolve()
    out.mkdir(parents=True, exist_ok=True)
    print(f"results in {out}; {os.cpu_count()} cores; load average {os.getloadavg()[0]:.2f}")

    results: dict[str, list[Step]] = {}
    kamailio_env = {"VVP_FLOOD_LIMIT": "0", "VVP_SIP_WORKERS": "2", "VVP_HELPER_WORKERS": "2"}
    for setting in args.kamailio_set:
        name, equals, value = setting.partition("=")
        if not equals or not name.startswith("VVP_"):
            parser.error(f"--kamailio-set wants VVP_NAME=VALUE, not {setting!r}")
        kamailio_env[name] = value
    if args.baseline:
        kamailio = Kamailio.create(out, "http://127.0.0.1:9/unused", defines=["WITH_STATIC_302"],
                                   **kamailio_env)  # fmt: skip
        try:
            baseline_mix = {"valid": 1}
            baseline_rates = [float(r) for r in (args.baseline_rates or args.rates).split(",")]
            # Only the 302 counts: a 500 for want of memory is not Kamailio coping.
            steps = ramp("kamailio-only (static 302)", out, kamailio.port, baseline_rates,
                         args.duration, baseline_mix, {"kamailio": kamailio}, [],
                         not args.keep_going, finals=(302,), warmup=args.warmup)  # fmt: skip
            results["kamailio-only"] = steps
        finally:
            kamailio.stop()

    simulator = None
    if args.verifier_down:
        verifier_url = f"http://127.0.0.1:{free_port()}"
    else:
        simulator = Simulator.create(out, latency_ms=args.latency_ms)
        verifier_url = simulator.url
    # Each helper on its own port, so each is scraped on its own (Kamailio spreads calls
    # over two helpers, kamailio.cfg VVP_HELPER_URL2).
    # With --helper-workers N, a helper's /metrics sums its workers (the outcome check
    # needs that); the cpu% column of a helper is its parent and all its workers.
    helpers = [
        Helper.create(out, verifier_url, VVP_LOG_LEVEL="WARNING",
                      VVP_HELPER_PROCESSES=str(args.helper_workers))
        for _ in range(args.helpers)
    ]  # fmt: skip
    if len(helpers) == 2:
        kamailio_env["VVP_HELPER_URL2"] = helpers[1].decide_url
    try:
        kamailio = Kamailio.create(out, helpers[0].decide_url, **kamailio_env)
    except BaseException:  # nothing of this run may outlive it
        for process in (*helpers, *([simulator] if simulator else [])):
            process.stop()
        raise
    prioritise(kamailio, args.kamailio_nice)
    processes: dict[str, Process] = {"kamailio": kamailio}
    for index, helper in enumerate(helpers):
        processes[f"helper{index + 1}"] = helper
    if simulator is not None:
        processes["simulator"] = simulator
    try:
        label = "full path" + (f" (verifier +{args.latency_ms} ms)" if args.latency_ms else "")
        if args.verifier_down:
            label += " (verifier down)"
        outcome_of = dict(OUTCOME_OF)
        if args.verifier_down:  # everything the verifier would judge becomes "error"
            outcome_of.update({k: "error" for k, v in OUTCOME_OF.items() if k != "expired"
                               and v != "missing"})  # fmt: skip
        results["full-path"] = ramp(label, out, kamailio.port, rates, args.duration, mix,
                                    processes, helpers, not args.keep_going, outcome_of,
                                    args.memory_every, warmup=args.warmup)  # fmt: skip
    finally:
        for process in (kamailio, *helpers, *([simulator] if simulator else [])):
            process.stop()

    summary: dict[str, object] = {
        "rates": rates, "duration_s": args.duration, "mix": mix, "helpers": args.helpers,
        "helper_workers": args.helper_workers,
        "latency_ms": args.latency_ms, "cores": os.cpu_count(),
        "results": {k: [asdict(s) for s in v] for k, v in results.items()},
    }  # fmt: skip
    if "kamailio-only" in results:
        ceiling = max((s.achieved for s in results["kamailio-only"] if not s.failed), default=0)
        full = max((s.achieved for s in results["full-path"]
                    if not s.failed and not s.unexpected and not s.shed), default=0)  # fmt: skip
        ratio = full / ceiling if ceiling else 0
        summary.update(kamailio_ceiling=ceiling, full_path_ceiling=full, ratio=round(ratio, 3))
        print(f"\nceiling at 0 failures: full path {full:.0f} calls/s, Kamailio alone "
              f"{ceiling:.0f} calls/s -> ratio {ratio:.2f}")  # fmt: skip
        if not full or not ceiling:
            # A 0 here is not a measurement: no step of that path ran clean.
            path = "the full path" if not full else "Kamailio alone"
            print(f"no step of {path} ran without failures: offer lower rates to measure it")
    (out / "results.json").write_text(json.dumps(summary, indent=2))
    plot(results, out / "ramp.png")
    print(f"wrote {out / 'results.json'} and {out / 'ramp.png'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
