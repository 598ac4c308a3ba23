"""Real processes for integration and end-to-end tests: Kamailio, the helper, the
verifier simulator and sipp, each started on free loopback ports and stopped after.

Nothing here is a stand-in: Kamailio runs the repo's kamailio.cfg, sipp sends real SIP
over UDP/TCP, the helper and simulator are the shipped CLIs.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
KAMAILIO_CFG = REPO / "kamailio" / "kamailio.cfg"
KAMAILIO_SHM_MB = 512  # shared memory, as deployed (SHM_MEMORY)
KAMAILIO_PKG_MB = 16  # private memory per process (PKG_MEMORY)
DEFAULT_POLICY = REPO / "policy" / "default.yaml"


def free_port() -> int:
    """A port free for both UDP and TCP on 127.0.0.1 (SIP listens on both)."""
    for _ in range(50):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as tcp:
            tcp.bind(("127.0.0.1", 0))
            port = int(tcp.getsockname()[1])
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
            try:
                udp.bind(("127.0.0.1", port))
            except OSError:
                continue
        return port
    raise RuntimeError("no free port")


def wait_http(
    url: str,
    timeout: float = 15.0,
    ok: tuple[int, ...] = (200,),
    context: ssl.SSLContext | None = None,
) -> None:
    deadline = time.monotonic() + timeout
    last: Exception | None = None
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=1, context=context) as response:
                if response.status in ok:
                    return
        except urllib.error.HTTPError as exc:  # up, not ready yet (Prometheus: 503)
            exc.close()  # it holds the response's socket: closed now, not whenever GC runs
            last = exc
        except Exception as exc:  # connection refused while starting
            last = exc
        time.sleep(0.05)
    raise RuntimeError(f"{url} did not come up: {last}")


def http_json(
    url: str, body: Mapping[str, object] | None = None, context: ssl.SSLContext | None = None
) -> object:
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=5, context=context) as response:
        return json.loads(response.read())


@dataclass
class Process:
    """A child process whose output goes to a log file shown when a test fails."""

    name: str
    argv: list[str]
    log_path: Path
    env: dict[str, str] = field(default_factory=dict)
    proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        env = {**os.environ, **self.env}
        self.log = self.log_path.open("wb")
        # Own process group: stop() can then reach Kamailio's children too.
        self.proc = subprocess.Popen(
            self.argv,
            stdout=self.log,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=REPO,
            start_new_session=True,
        )

    def stop(self) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        # Kamailio's children exit after its main process: wait for the whole group, so
        # the next process can bind the same ports.
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and _group_alive(self.proc.pid):
            time.sleep(0.05)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)  # stragglers of the group
        self.log.close()
        self.proc = None

    def output(self) -> str:
        return self.log_path.read_text(errors="replace")

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None


@dataclass(frozen=True)
class LocalPKI:
    """A certificate authority made at test time (trustme) and what it issued, as files:
    the simulator's server certificate (127.0.0.1, localhost) and a client certificate
    for the helper (mutual TLS)."""

    ca: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path

    @classmethod
    def create(cls, directory: Path) -> LocalPKI:
        import trustme  # the test extra; only TLS tests need it

        directory.mkdir(parents=True, exist_ok=True)
        authority = trustme.CA(organization_name="vvp-edge test CA")
        server = authority.issue_cert("127.0.0.1", "localhost")
        client = authority.issue_cert("helper.edge.test")
        pki = cls(*(directory / name for name in (
            "ca.pem", "server.pem", "server.key", "client.pem", "client.key",
        )))  # fmt: skip
        authority.cert_pem.write_to_path(str(pki.ca))
        pki.server_cert.write_bytes(b"".join(blob.bytes() for blob in server.cert_chain_pems))
        server.private_key_pem.write_to_path(str(pki.server_key))
        pki.client_cert.write_bytes(b"".join(blob.bytes() for blob in client.cert_chain_pems))
        client.private_key_pem.write_to_path(str(pki.client_key))
        return pki

    def simulator_args(self, *, require_client_cert: bool = False) -> list[str]:
        args = ["--tls-cert", str(self.server_cert), "--tls-key", str(self.server_key)]
        return args + (["--tls-client-ca", str(self.ca)] if require_client_cert else [])

    def client_context(self) -> ssl.SSLContext:
        """What the tests themselves use to reach an https simulator."""
        context = ssl.create_default_context(cafile=str(self.ca))
        context.load_cert_chain(self.client_cert, self.client_key)
        return context


@dataclass
class Simulator(Process):
    port: int = 0
    #: Set when the simulator serves https: how the harness reaches it.
    context: ssl.SSLContext | None = None

    @classmethod
    def create(
        cls,
        workdir: Path,
        port: int | None = None,
        *,
        tls: LocalPKI | None = None,
        require_client_cert: bool = False,
        **faults: object,
    ) -> Simulator:
        port = port or free_port()
        argv = [sys.executable, "-m", "vvp_simulator", "serve", "--port", str(port)]
        context = None
        if tls is not None:
            argv += tls.simulator_args(require_client_cert=require_client_cert)
            context = tls.client_context()
        sim = cls("simulator", argv, workdir / f"simulator-{port}.log", port=port, context=context)
        sim.start()
        wait_http(f"{sim.url}/healthz", context=context)
        if faults:
            sim.set_faults(**faults)
        return sim

    @property
    def url(self) -> str:
        scheme = "https" if self.context is not None else "http"
        return f"{scheme}://127.0.0.1:{self.port}"

    def set_faults(self, **faults: object) -> None:
        http_json(f"{self.url}/_sim/faults", faults, context=self.context)

    def reset(self) -> None:
        """Back to a healthy simulator with zeroed counters."""
        self.set_faults(
            mode="normal",
            latency_ms=0,
            error_rate=0,
            force_status=None,
            inject=False,
            parser_crash=False,
            stale_revocation_every_s=0,
            latency_factor=1,
            crash_call_id_prefix=None,
        )
        http_json(f"{self.url}/_sim/reset-stats", {}, context=self.context)

    def verify_requests(self) -> int:
        stats = http_json(f"{self.url}/_sim/stats", context=self.context)
        assert isinstance(stats, dict)
        return int(stats["verify_requests"])


@dataclass
class Helper(Process):
    port: int = 0

    @classmethod
    def create(
        cls,
        workdir: Path,
        verifier_url: str,
        policy: Path = DEFAULT_POLICY,
        port: int | None = None,
        **env: str,
    ) -> Helper:
        port = port or free_port()
        argv = [
            sys.executable, "-m", "vvp_helper", "serve",
            "--port", str(port),
            "--policy", str(policy),
            "--verifier-url", verifier_url,
        ]  # fmt: skip
        helper = cls("helper", argv, workdir / f"helper-{port}.log", env=dict(env), port=port)
        helper.start()
        wait_http(f"{helper.url}/healthz")
        return helper

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def decide_url(self) -> str:
        return f"{self.url}/v1/decide"


@dataclass
class Kamailio(Process):
    port: int = 0
    http_port: int = 0

    @classmethod
    def create(
        cls,
        workdir: Path,
        helper_url: str,
        port: int | None = None,
        defines: Sequence[str] = (),
        **env: str,
    ) -> Kamailio:
        port = port or free_port()
        http_port = int(env.pop("VVP_HTTP_PORT", 0)) or free_port()
        rundir = workdir / f"kamailio-{port}"
        rundir.mkdir(parents=True, exist_ok=True)
        settings = {
            "VVP_SIP_PORT": str(port),
            "VVP_HTTP_PORT": str(http_port),
            "VVP_SIP_WORKERS": "2",
            "VVP_HELPER_URL": helper_url,
            "VVP_CTL_SOCKET": f"unix:{rundir}/ctl",
            "VVP_RPC_SOCKET": f"{rundir}/rpc.sock",
            **env,
        }
        argv = [
            # TLSF, as deployed (docker/entrypoints/kamailio.sh, the systemd drop-in).
            kamailio_binary(), "-x", "tlsf", "-f", str(KAMAILIO_CFG), "-DD", "-E",
            # Memory as deployed too (deploy/env/kamailio.env, compose.yaml): -m overrides
            # kamailio.cfg's shm_mem_size there, so capacity is measured with what runs.
            "-m", str(KAMAILIO_SHM_MB), "-M", str(KAMAILIO_PKG_MB),
            "-P", str(rundir / "kamailio.pid"), "-w", str(rundir),
            *(arg for define in defines for arg in ("-A", define)),
        ]  # fmt: skip
        kam = cls(
            "kamailio", argv, rundir / "kamailio.log", env=settings, port=port,
            http_port=http_port,
        )  # fmt: skip
        kam.start()
        try:
            kam.wait_listening()
        except RuntimeError:
            kam.stop()
            raise
        return kam

    @property
    def rpc_url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}/RPC"

    @property
    def metrics_url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}/metrics"

    def rpc(self, method: str, *params: object) -> object:
        """One JSON-RPC call over Kamailio's HTTP port (what kamcli does over its socket)."""
        answer = http_json(
            self.rpc_url, {"jsonrpc": "2.0", "method": method, "params": list(params), "id": 1}
        )
        assert isinstance(answer, dict), answer
        return answer.get("result", answer.get("error"))

    def in_decision(self) -> int:
        """Calls waiting for the helper now: the admission count (route[ADMIT])."""
        item = self.rpc("htable.get", "vvpload", "in_decision")
        assert isinstance(item, dict), item
        return int(item["item"]["value"])

    def wait_listening(self, timeout: float = 15.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self.alive():
                raise RuntimeError(f"kamailio exited:\n{self.output()[-3000:]}")
            # Workers are up once the log says so; the socket is bound before that.
            if "started worker process" in self.output() and _udp_bound(self.port):
                time.sleep(0.2)
                return
            time.sleep(0.05)
        raise RuntimeError(f"kamailio did not start:\n{self.output()[-3000:]}")


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except (ProcessLookupError, PermissionError):
        return False
    return True


def _udp_bound(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
        try:
            udp.bind(("127.0.0.1", port))
        except OSError:
            return True
    return False


def kamailio_binary() -> str:
    return shutil.which("kamailio") or "/usr/sbin/kamailio"


# ---------------------------------------------------------------------------------------
# sipp


@dataclass(frozen=True)
class SipMessage:
    first_line: str
    headers: list[tuple[str, str]]

    @property
    def code(self) -> int | None:
        match = re.match(r"SIP/2\.0 (\d{3})", self.first_line)
        return int(match.group(1)) if match else None

    @property
    def method(self) -> str | None:
        return None if self.code is not None else self.first_line.split(" ", 1)[0]

    def header(self, name: str) -> str | None:
        values = self.all(name)
        return values[0] if values else None

    def all(self, name: str) -> list[str]:
        return [v for n, v in self.headers if n.lower() == name.lower()]


@dataclass
class SippRun:
    returncode: int
    received: list[SipMessage]
    sent: list[SipMessage]
    stdout: str
    stats: dict[str, str]

    def finals(self, method: str = "INVITE") -> list[SipMessage]:
        return [
            m
            for m in self.received
            if (m.code or 0) >= 200 and (m.header("CSeq") or "").endswith(method)
        ]


def _parse_messages(text: str) -> tuple[list[SipMessage], list[SipMessage]]:
    received: list[SipMessage] = []
    sent: list[SipMessage] = []
    blocks = re.split(r"^-{10,} [^\n]*\n", text, flags=re.M)
    for block in blocks:
        match = re.match(r"(UDP|TCP) message (received|sent)[^\n]*\n\n?", block)
        if not match:
            continue
        body = block[match.end() :]
        head = body.replace("\r\n", "\n").split("\n\n", 1)[0]
        lines = [line for line in head.split("\n") if line]
        if not lines:
            continue
        headers = []
        for line in lines[1:]:
            name, _, value = line.partition(":")
            headers.append((name.strip(), value.strip()))
        message = SipMessage(lines[0].strip(), headers)
        (received if match.group(2) == "received" else sent).append(message)
    return received, sent


def run_sipp(
    scenario: Path,
    target_port: int,
    workdir: Path,
    *,
    calls: int = 1,
    rate: float = 10,
    transport: str = "u1",
    csv: Path | None = None,
    timeout: float = 30,
    extra: list[str] | None = None,
    trace: bool = True,
    local_port: int | None = None,
) -> SippRun:
    """Run sipp to completion; returns its exit code, messages and final statistics."""
    tag = f"{scenario.stem}-{time.monotonic_ns()}"
    message_file = workdir / f"{tag}.msg"
    stat_file = workdir / f"{tag}.csv"
    argv = [
        "sipp", f"127.0.0.1:{target_port}",
        "-sf", str(scenario),
        "-m", str(calls), "-r", str(rate),
        "-t", transport,
        "-i", "127.0.0.1", "-p", str(local_port or free_port()),
        "-nostdin", "-timeout", f"{timeout}s", "-timeout_error",
        "-max_recv_loops", "1000",
        "-trace_stat", "-stf", str(stat_file),
    ]  # fmt: skip
    if trace:
        argv += ["-trace_msg", "-message_file", str(message_file)]
    if csv is not None:
        argv += ["-inf", str(csv)]
    argv += extra or []
    done = subprocess.run(argv, capture_output=True, text=True, timeout=timeout + 30, cwd=workdir)
    received: list[SipMessage] = []
    sent: list[SipMessage] = []
    if message_file.exists():
        received, sent = _parse_messages(message_file.read_text(errors="replace"))
    stats: dict[str, str] = {}
    if stat_file.exists():
        rows = [r.split(";") for r in stat_file.read_text().splitlines() if r]
        if len(rows) >= 2:
            stats = dict(zip(rows[0], rows[-1], strict=False))
    return SippRun(done.returncode, received, sent, done.stdout + done.stderr, stats)


@contextlib.contextmanager
def running(*processes: Process) -> Iterator[None]:
    try:
        yield
    finally:
        for process in reversed(processes):
            process.stop()


@dataclass
class Prometheus(Process):
    """A real Prometheus server (Debian's package) scraping the given targets every 1 s."""

    port: int = 0

    @classmethod
    def create(cls, workdir: Path, jobs: Mapping[str, str]) -> Prometheus:
        port = free_port()
        home = workdir / f"prometheus-{port}"
        home.mkdir(parents=True, exist_ok=True)
        scrape = "\n".join(
            f"  - job_name: {job}\n    static_configs:\n      - targets: ['{target}']"
            for job, target in jobs.items()
        )
        config = home / "prometheus.yml"
        config.write_text(
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n"
            f"scrape_configs:\n{scrape}\n"
        )
        argv = [
            shutil.which("prometheus") or "/usr/bin/prometheus",
            f"--config.file={config}",
            f"--storage.tsdb.path={home / 'data'}",
            f"--web.listen-address=127.0.0.1:{port}",
        ]
        prom = cls("prometheus", argv, home / "prometheus.log", port=port)
        prom.start()
        wait_http(f"{prom.url}/-/ready", timeout=30)
        return prom

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def query(self, promql: str) -> list[dict[str, object]]:
        """An instant query through the HTTP API: the result vector."""
        from urllib.parse import urlencode

        answer = http_json(f"{self.url}/api/v1/query?{urlencode({'query': promql})}")
        assert isinstance(answer, dict) and answer["status"] == "success", answer
        data = answer["data"]
        assert isinstance(data, dict)
        result = data["result"]
        assert isinstance(result, list)
        return result

    def value(self, promql: str) -> float | None:
        result = self.query(promql)
        if not result:
            return None
        sample = result[0]["value"]
        assert isinstance(sample, list)
        return float(sample[1])

    def wait_value(self, promql: str, expected: float, timeout: float = 20.0) -> float | None:
        """Poll until the query returns ``expected`` (scrapes are 1 s apart)."""
        deadline = time.monotonic() + timeout
        value = None
        while time.monotonic() < deadline:
            value = self.value(promql)
            if value == expected:
                return value
            time.sleep(0.25)
        return value


def identity_csv(path: Path, kinds: Sequence[str], count: int) -> Path:
    """A sipp injection file with a fresh identity per call (vvp-simulator mint-csv)."""
    from vvp_simulator.mint import mint_rows, write_csv

    with path.open("w") as out:
        write_csv(out, mint_rows(list(kinds), count, "+441923311001", "+441923311006"))
    return path
