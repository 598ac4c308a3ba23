"""deploy/install-vm.sh on this machine, then the services started as their units say.

The installer changes the machine (a system user, /opt/vvp-edge, /etc/vvp-edge,
/etc/kamailio/kamailio.cfg, systemd units), so it runs only when asked:
VVP_TEST_VM_INSTALL=1, or CI=true as root. systemd may not run here (CI, containers), so
the test reads the installed unit files - ExecStart, Environment, EnvironmentFile, User,
Group - and starts each service with exactly those settings, overriding only ports and
socket paths so it never collides with a running edge. Then: the helper is ready,
Kamailio answers OPTIONS, an INVITE with a valid identity gets the policy's 302, and the
helper has pushed the fallback into Kamailio over /RPC.
"""

from __future__ import annotations

import glob
import grp
import os
import pwd
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.harness import REPO, Process, free_port, run_sipp, running, wait_http
from tests.support.sipp_scenarios import invite_expecting, request_expecting
from vvp_simulator.passport import mint

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(300)]

ENABLED = os.environ.get("VVP_TEST_VM_INSTALL") == "1" or (
    os.environ.get("CI") == "true" and os.geteuid() == 0
)
SYSTEM_UNITS = Path("/etc/systemd/system")
ORIG, DEST = "+441923311001", "+441923311006"


def unit_files(name: str) -> list[Path]:
    """The unit and its drop-ins, in systemd's order (vendor unit, then /etc overrides)."""
    base = next(
        (
            Path(d) / name
            for d in ("/etc/systemd/system", "/lib/systemd/system", "/usr/lib/systemd/system")
            if (Path(d) / name).is_file()
        ),
        None,
    )
    assert base is not None, f"{name} is not installed"
    dropins = sorted((SYSTEM_UNITS / f"{name}.d").glob("*.conf"))
    return [base, *dropins]


def read_env_file(path: Path) -> dict[str, str]:
    env = {}
    for line in path.read_text().splitlines():
        line = line.strip()
        if not line or line.startswith(("#", ";")) or "=" not in line:
            continue
        key, _, value = line.partition("=")
        env[key.strip()] = " ".join(shlex.split(value)) if value.strip() else ""
    return env


class Unit:
    """What systemd would run for a unit: command line, environment, user."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.exec_start: list[str] = []
        self.env: dict[str, str] = {}
        self.user = self.group = "root"
        self.type = "simple"
        self.runtime_dirs: list[str] = []
        env_files: list[str] = []
        for path in unit_files(name):
            for line in path.read_text().splitlines():
                line = line.strip()
                if not line or line.startswith(("#", ";", "[")) or "=" not in line:
                    continue
                key, _, value = (part.strip() for part in line.partition("="))
                if key == "ExecStart":
                    self.exec_start = shlex.split(value.lstrip("-@+!")) if value else []
                elif key == "Environment":
                    for assignment in shlex.split(value):
                        k, _, v = assignment.partition("=")
                        self.env[k] = v
                elif key == "EnvironmentFile":
                    env_files.append(value)
                elif key == "User":
                    self.user = value
                elif key == "Group":
                    self.group = value
                elif key == "Type":
                    self.type = value
                elif key == "RuntimeDirectory":
                    self.runtime_dirs += value.split()
        # systemd reads EnvironmentFile= after Environment=, in order; "-" = optional.
        for spec in env_files:
            optional = spec.startswith("-")
            matches = sorted(glob.glob(spec.lstrip("-")))
            assert matches or optional, f"{name}: EnvironmentFile {spec} missing"
            for match in matches:
                self.env.update(read_env_file(Path(match)))

    def argv(self, env: dict[str, str]) -> list[str]:
        """ExecStart with $VAR / ${VAR} expanded as systemd does (split on whitespace)."""
        words: list[str] = []
        for word in self.exec_start:
            if re.fullmatch(r"\$(\w+)", word):
                words += env.get(word[1:], "").split()
            else:
                words.append(re.sub(r"\$\{(\w+)\}", lambda m: env.get(m.group(1), ""), word))
        return words


@pytest.fixture(scope="module")
def installed() -> Iterator[None]:
    if not ENABLED:
        pytest.skip(
            "changes this machine (user, /opt, /etc): set VVP_TEST_VM_INSTALL=1 "
            "(runs by itself under CI=true as root)"
        )
    if os.geteuid() != 0:
        pytest.skip("deploy/install-vm.sh needs root")
    done = subprocess.run(
        ["bash", str(REPO / "deploy" / "install-vm.sh"), "--no-start"],
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    yield


def as_user(unit: Unit) -> dict[str, object]:
    return {"user": pwd.getpwnam(unit.user).pw_uid, "group": grp.getgrnam(unit.group).gr_gid}


class UnitProcess(Process):
    """A Process started as the unit's user (Popen user=/group=, no supplementary groups)."""

    user: int = 0
    group: int = 0

    def start(self) -> None:
        self.log = self.log_path.open("wb")
        self.proc = subprocess.Popen(
            self.argv,
            stdout=self.log,
            stderr=subprocess.STDOUT,
            env=self.env,
            cwd="/",
            start_new_session=True,
            user=self.user,
            group=self.group,
            extra_groups=[],
        )


def start_unit(
    unit: Unit, argv: list[str], env: dict[str, str], log: Path, name: str
) -> UnitProcess:
    ids = as_user(unit)
    proc = UnitProcess(name, argv, log, env={"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", **env})
    proc.user, proc.group = int(ids["user"]), int(ids["group"])  # type: ignore[call-overload]
    proc.start()
    return proc


def test_installer_is_idempotent_and_keeps_operator_files(installed: None) -> None:
    policy = Path("/etc/vvp-edge/policy.yaml")
    before = policy.stat().st_mtime_ns
    done = subprocess.run(
        ["bash", str(REPO / "deploy" / "install-vm.sh"), "--no-start"],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert policy.stat().st_mtime_ns == before
    assert (
        Path("/etc/kamailio/kamailio.cfg").read_bytes()
        == (REPO / "kamailio" / "kamailio.cfg").read_bytes()
    )
    assert Path("/etc/kamcli/kamcli.ini").is_file()
    assert pwd.getpwnam("vvp-edge").pw_shell.endswith("nologin")
    assert oct(Path("/etc/vvp-edge/helper.env").stat().st_mode & 0o777) == "0o640"


def test_rerun_with_the_same_verifier_url_leaves_no_template_copy(installed: None) -> None:
    """--verifier-url edits helper.env; that edit alone is not a changed template."""
    env = Path("/etc/vvp-edge/helper.env")
    dist = Path("/etc/vvp-edge/helper.env.dist")
    saved = env.read_bytes()
    try:
        env.unlink()
        dist.unlink(missing_ok=True)
        for _ in range(2):
            done = subprocess.run(
                ["bash", str(REPO / "deploy" / "install-vm.sh"), "--no-start",
                 "--verifier-url", "https://verifier.example"],
                capture_output=True, text=True, timeout=300,
            )  # fmt: skip
            assert done.returncode == 0, done.stderr
        assert "VVP_VERIFIER_URL=https://verifier.example" in env.read_text()
        assert not dist.exists(), "helper.env.dist written for the installer's own edit"
    finally:
        env.write_bytes(saved)
        dist.unlink(missing_ok=True)


def test_services_start_as_their_units_say(installed: None) -> None:
    workdir = Path(tempfile.mkdtemp(prefix="vvp-vm-", dir="/tmp"))
    os.chmod(workdir, 0o755)
    helper_unit, kamailio_unit = Unit("vvp-helper.service"), Unit("kamailio.service")
    assert helper_unit.user == "vvp-edge" and kamailio_unit.user == "kamailio"
    assert helper_unit.env["VVP_POLICY"] == "/etc/vvp-edge/policy.yaml"

    sip_port, http_port, helper_port, sim_port = (free_port() for _ in range(4))
    venv_bin = Path(helper_unit.exec_start[0]).parent
    simulator = start_unit(
        helper_unit,
        [str(venv_bin / "vvp-simulator"), "serve", "--port", str(sim_port)],
        {},
        workdir / "simulator.log",
        "simulator",
    )
    # RuntimeDirectory=kamailio: systemd would create /run/kamailio for the unit's user;
    # a private one here, so a Kamailio already running on this machine is not touched.
    rundir = workdir / "run-kamailio"
    rundir.mkdir()
    shutil.chown(rundir, kamailio_unit.user, kamailio_unit.group)
    kam_env = {
        **kamailio_unit.env,
        "VVP_SIP_PORT": str(sip_port),
        "VVP_HTTP_PORT": str(http_port),
        "VVP_SIP_WORKERS": "2",
        "VVP_HELPER_URL": f"http://127.0.0.1:{helper_port}/v1/decide",
        "VVP_CTL_SOCKET": f"unix:{rundir}/kamailio_ctl",
        "VVP_RPC_SOCKET": f"{rundir}/kamailio_rpc.sock",
    }
    kam_argv = [arg.replace("/run/kamailio", str(rundir)) for arg in kamailio_unit.argv(kam_env)]
    assert kam_argv[0] == "/usr/sbin/kamailio" and "/etc/kamailio/kamailio.cfg" in kam_argv
    # Type=forking: systemd lets it daemonize; here it stays in the foreground (-DD) and
    # logs to stderr (-E) so the log is in the test's output.
    kamailio = start_unit(
        kamailio_unit, [*kam_argv, "-DD", "-E"], kam_env, workdir / "kamailio.log", "kamailio"
    )
    helper_env = {
        **helper_unit.env,
        "VVP_HELPER_PORT": str(helper_port),
        "VVP_VERIFIER_URL": f"http://127.0.0.1:{sim_port}",
        "VVP_KAMAILIO_RPC": f"http://127.0.0.1:{http_port}/RPC",
        "VVP_FALLBACK_PUSH_INTERVAL": "1",
    }
    helper = start_unit(
        helper_unit, helper_unit.argv(helper_env), helper_env, workdir / "helper.log", "helper"
    )
    try:
        with running(simulator, kamailio, helper):
            for proc, url in (
                (simulator, f"http://127.0.0.1:{sim_port}/healthz"),
                (helper, f"http://127.0.0.1:{helper_port}/readyz"),
                (kamailio, f"http://127.0.0.1:{http_port}/metrics"),
            ):
                try:
                    wait_http(url, timeout=20)
                except RuntimeError:
                    pytest.fail(f"{proc.name} not up: {url}\n{proc.output()[-3000:]}")

            options = run_sipp(
                request_expecting(workdir / "options.xml", "OPTIONS", 200), sip_port, workdir
            )
            assert options.returncode == 0, options.stdout + kamailio.output()[-2000:]

            identity = mint("valid", ORIG, DEST).identity_header()
            invite = run_sipp(
                invite_expecting(workdir / "invite.xml", 302, headers=[f"Identity: {identity}"]),
                sip_port,
                workdir,
            )
            assert invite.returncode == 0, invite.stdout + helper.output()[-2000:]
            final = invite.finals()[0]
            assert final.header("X-VVP-Status") == "VALID", final
            assert "verified.carrier.example" in (final.header("Contact") or "")

            # The helper pushed the policy's fallback into Kamailio over /RPC (loopback).
            dump = subprocess.run(
                [sys.executable, "-c", _RPC_DUMP, str(http_port)],
                capture_output=True, text=True, timeout=10,
            )  # fmt: skip
            assert "fb_policy" in dump.stdout, dump.stdout + dump.stderr + helper.output()

            # kamcli as root, with the installed settings (socket paths moved to this
            # test's runtime directory): Kamailio, another user, must reach its reply socket.
            ini = workdir / "kamcli.ini"
            ini.write_text(
                Path("/etc/kamcli/kamcli.ini").read_text().replace("/run/kamailio", str(rundir))
            )
            kamcli = subprocess.run(
                ["kamcli", "-c", str(ini), "rpc", "core.uptime"],
                capture_output=True, text=True, timeout=30,
            )  # fmt: skip
            assert kamcli.returncode == 0 and "uptime" in kamcli.stdout, (
                kamcli.stdout + kamcli.stderr
            )
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


_RPC_DUMP = """
import json, sys, time, urllib.request
url = f"http://127.0.0.1:{sys.argv[1]}/RPC"
body = json.dumps({"jsonrpc": "2.0", "method": "htable.dump", "params": ["vvp"], "id": 1})
for _ in range(50):
    req = urllib.request.Request(url, body.encode(), {"Content-Type": "application/json"})
    text = urllib.request.urlopen(req, timeout=2).read().decode()
    if "fb_policy" in text:
        break
    time.sleep(0.1)
print(text)
"""
