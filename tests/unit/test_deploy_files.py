"""The deployment files agree with the project: compose.yaml, docker/*.Dockerfile and deploy/.

The files are read by the real tools where they exist: compose.yaml through `docker
compose config` (interpolation, schema), the systemd units through `systemd-analyze
security --offline`, the shell scripts through `shellcheck`; a missing tool skips those
tests outside CI and fails them under CI=true. No engine is needed.

Across files: every file a Dockerfile copies or compose mounts must exist (and not be
hidden by .dockerignore), every port published or scraped must be the one the program
listens on, every environment variable set must be one the program reads, every
healthcheck must hit a route that exists, and the systemd units must only reference what
deploy/install-vm.sh creates. Each checker returns its problems; the ``*_catches_*`` tests
break a copy of the subject and show the checker notices.
"""

from __future__ import annotations

import ast
import copy
import fnmatch
import json
import os
import re
import shlex
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml

from tests.support.compose import find_compose
from vvp_helper.config import Settings

REPO = Path(__file__).resolve().parents[2]
COMPOSE = REPO / "compose.yaml"
DOCKERFILES = sorted((REPO / "docker").glob("*.Dockerfile"))
ENTRYPOINTS = REPO / "docker" / "entrypoints"
KAMAILIO_CFG = REPO / "kamailio" / "kamailio.cfg"
INSTALLER = REPO / "deploy" / "install-vm.sh"
HELPER_UNIT = REPO / "deploy" / "systemd" / "vvp-helper.service"
KAMAILIO_DROPIN = REPO / "deploy" / "systemd" / "kamailio.service.d" / "vvp-edge.conf"

#: The ports the README and the monitoring config promise.
SIP_PORT, HELPER_PORT, KAMAILIO_HTTP_PORT, PROMETHEUS_PORT, GRAFANA_PORT = (
    5060, 8480, 8060, 9090, 3000,
)  # fmt: skip
SIMULATOR_PORT = 8090
#: Variables Debian's kamailio.service expands in its ExecStart (-f $CFGFILE -m
#: $SHM_MEMORY -M $PKG_MEMORY); the container entrypoint reads the same two memory names.
DEBIAN_UNIT_VARS = {"CFGFILE", "SHM_MEMORY", "PKG_MEMORY"}
#: Process-level variables any Python image may set.
GENERIC_VARS = {"PATH", "PYTHONUNBUFFERED", "PYTHONDONTWRITEBYTECODE", "PIP_NO_CACHE_DIR",
                "PIP_DISABLE_PIP_VERSION_CHECK", "PIP_CERT", "DEBIAN_FRONTEND"}  # fmt: skip


IN_CI = os.environ.get("CI") == "true"


def tool_missing(what: str) -> None:
    """Outside CI a check that needs a missing tool is skipped; under CI=true it fails."""
    if IN_CI:
        pytest.fail(f"CI=true and {what} is missing (scripts/bootstrap installs it)")
    pytest.skip(f"{what} is not installed")


# ---------------------------------------------------------------------------------------
# What the programs read


def kamailio_env_names(cfg: Path = KAMAILIO_CFG) -> set[str]:
    return set(re.findall(r"^#!trydefenvs? (\w+)", cfg.read_text(), re.M))


def kamailio_cfg_default(name: str) -> str:
    match = re.search(rf"^#!trydef {name} (\S+)", KAMAILIO_CFG.read_text(), re.M)
    assert match, name
    return match.group(1).strip('"')


def helper_config_env_names() -> set[str]:
    """Every VVP_* string literal of helper/vvp_helper/config.py (what from_env reads)."""
    tree = ast.parse((REPO / "helper" / "vvp_helper" / "config.py").read_text())
    return {
        node.value
        for node in ast.walk(tree)
        if isinstance(node, ast.Constant)
        and isinstance(node.value, str)
        and re.fullmatch(r"VVP_[A-Z0-9_]+", node.value)
    }


def script_env_names(path: Path) -> set[str]:
    """Variables a shell or Python entrypoint reads (${NAME...}, $NAME, environ[...])."""
    text = path.read_text()
    names = set(re.findall(r"\$\{?([A-Z][A-Z0-9_]+)", text))
    names |= set(re.findall(r"environ(?:\.get)?[\[(]\s*[\"']([A-Z][A-Z0-9_]+)", text))
    return names


def entrypoint(name: str) -> Path:
    return ENTRYPOINTS / name


def program_env(service: str) -> set[str]:
    """The variables the program of a compose service (or image) reads."""
    if service in ("kamailio", "edge"):
        return (
            kamailio_env_names()
            | script_env_names(entrypoint("kamailio.sh"))
            | script_env_names(entrypoint("sip-options-check.py"))
        )
    if service == "helper":
        return helper_config_env_names() | script_env_names(entrypoint("helper.sh"))
    if service == "sipp":
        return script_env_names(entrypoint("sipp-load.sh"))
    return set()  # the simulator takes flags only; Prometheus takes flags


def route_exists(module: Path, path: str) -> bool:
    """The module's routes() table answers GET path."""
    return re.search(rf"\(\"GET\", \"{re.escape(path)}\"\)", module.read_text()) is not None


# ---------------------------------------------------------------------------------------
# Dockerfiles


@dataclass
class Dockerfile:
    path: Path
    instructions: list[tuple[str, str]] = field(default_factory=list)

    @classmethod
    def parse(cls, path: Path) -> Dockerfile:
        lines: list[tuple[str, str]] = []
        pending = ""
        for raw in path.read_text().splitlines():
            stripped = raw.strip()
            if not pending and (not stripped or stripped.startswith("#")):
                continue
            if pending and stripped.startswith("#"):
                continue  # comment lines inside a continued RUN
            if stripped.endswith("\\"):
                pending += stripped[:-1] + " "
                continue
            full = (pending + stripped).strip()
            pending = ""
            keyword, _, rest = full.partition(" ")
            lines.append((keyword.upper(), rest.strip()))
        return cls(path, lines)

    def args(self, keyword: str) -> list[str]:
        return [rest for kw, rest in self.instructions if kw == keyword]

    def copies(self) -> list[tuple[list[str], str]]:
        """(sources, destination) of every COPY/ADD from the build context."""
        result = []
        for kw, rest in self.instructions:
            if kw not in ("COPY", "ADD"):
                continue
            words = _json_or_words(rest)
            if any(w.startswith("--from") for w in words):
                continue
            words = [w for w in words if not w.startswith("--")]
            result.append((words[:-1], words[-1]))
        return result

    def env(self) -> dict[str, str]:
        env: dict[str, str] = {}
        for rest in self.args("ENV"):
            for word in shlex.split(rest):
                name, _, value = word.partition("=")
                env[name] = value
        return env

    def exposed(self) -> set[str]:
        return {p if "/" in p else f"{p}/tcp" for rest in self.args("EXPOSE") for p in rest.split()}

    def healthcheck(self) -> list[str]:
        for rest in self.args("HEALTHCHECK"):
            _, _, cmd = rest.partition("CMD ")
            return _json_or_words(cmd)
        return []

    def entrypoint(self) -> list[str]:
        found = self.args("ENTRYPOINT")
        return _json_or_words(found[-1]) if found else []


def _json_or_words(text: str) -> list[str]:
    text = text.strip()
    if text.startswith("["):
        value = yaml.safe_load(text)
        assert isinstance(value, list)
        return [str(v) for v in value]
    return shlex.split(text)


def dockerignore_patterns() -> list[str]:
    path = REPO / ".dockerignore"
    if not path.exists():
        return []
    return [
        line.strip()
        for line in path.read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]


def ignored(rel: str, patterns: list[str]) -> bool:
    """Docker's rule: the last matching pattern wins; '!' re-includes."""
    verdict = False
    parts = rel.split("/")
    prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    for pattern in patterns:
        negate = pattern.startswith("!")
        pat = pattern[1:] if negate else pattern
        pat = pat.strip("/")
        candidates = [pat, pat.replace("**/", "")] if pat.startswith("**/") else [pat]
        hit = any(
            fnmatch.fnmatchcase(prefix, c) or fnmatch.fnmatchcase(prefix.split("/")[-1], c)
            if c != pat
            else fnmatch.fnmatchcase(prefix, c)
            for prefix in prefixes
            for c in candidates
        )
        if hit:
            verdict = not negate
    return verdict


def check_dockerfile(df: Dockerfile, context: Path = REPO) -> list[str]:
    problems = []
    patterns = dockerignore_patterns()
    for sources, _dest in df.copies():
        for source in sources:
            rel = source.rstrip("/")
            target = context / rel
            matches = list(context.glob(rel)) if any(c in rel for c in "*?[") else [target]
            if not matches or not all(m.exists() for m in matches):
                problems.append(f"{df.path.name}: COPY {source}: not in the repository")
            elif ignored(rel, patterns):
                problems.append(f"{df.path.name}: COPY {source}: excluded by .dockerignore")
    return problems


def image_copies_to(df: Dockerfile, dest: str) -> str | None:
    for sources, target in df.copies():
        if target == dest:
            return sources[0]
    return None


# ---------------------------------------------------------------------------------------
# compose


def compose_cli() -> list[str]:
    """compose >= 2.20 (what compose.yaml needs); skip outside CI, fail under CI=true."""
    argv = find_compose()
    if argv is None:
        tool_missing("compose >= 2.20 (scripts/container-engine installs it)")
        raise AssertionError("unreachable")
    return argv


def compose_config(
    path: Path = COMPOSE, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """`docker compose config` of ``path``: interpolated, merged and checked against the
    compose schema by compose itself, with only ``env`` set (defaults otherwise)."""
    clean = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": "/nonexistent"}
    argv = [*compose_cli(), "-f", str(path), "--profile", "demo", "--profile", "load"]
    return subprocess.run(
        [*argv, "config", "--format", "json"],
        capture_output=True, text=True, env={**clean, **(env or {})}, cwd=path.parent,
    )  # fmt: skip


def load_compose(env: dict[str, str] | None = None) -> dict[str, Any]:
    done = compose_config(env=env)
    assert done.returncode == 0, done.stderr
    data: dict[str, Any] = json.loads(done.stdout)
    return data


def service_env(service: dict[str, Any]) -> dict[str, str]:
    env = service.get("environment") or {}
    return {k: "" if v is None else str(v) for k, v in env.items()}


def image_for(service: dict[str, Any]) -> Dockerfile | None:
    build = service.get("build")
    if not build:
        return None
    return Dockerfile.parse(REPO / build.get("context", ".") / build["dockerfile"])


def effective_env(service: dict[str, Any]) -> dict[str, str]:
    image = image_for(service)
    return {**(image.env() if image else {}), **service_env(service)}


def program_of(name: str, service: dict[str, Any]) -> str:
    """Which program a compose service runs (by what it executes, not by its name)."""
    image = image_for(service)
    entry = service.get("entrypoint") or (image.entrypoint() if image else [])
    entry = [entry] if isinstance(entry, str) else entry
    joined = " ".join(entry)
    if "sleep" in joined:
        return "edge"
    if "vvp_simulator" in joined or "vvp-simulator" in joined:
        return "simulator"
    if "vvp-kamailio" in joined:
        return "kamailio"
    if "vvp-helper" in joined:
        return "helper"
    if "vvp-load" in joined:
        return "sipp"
    return name


def netns_owner(compose: dict[str, Any], name: str) -> str:
    mode = compose["services"][name].get("network_mode", "")
    return mode.split(":", 1)[1] if mode.startswith("service:") else name


def dns_names(compose: dict[str, Any], name: str) -> set[str]:
    service = compose["services"][name]
    names = {name}
    networks = service.get("networks") or {}
    if isinstance(networks, dict):
        for net in networks.values():
            names |= set((net or {}).get("aliases", []))
    return names


def who_answers(compose: dict[str, Any], host: str, from_service: str) -> set[str]:
    """Services reachable as ``host`` from ``from_service`` (loopback = same namespace)."""
    services = compose["services"]
    if host in ("127.0.0.1", "localhost", "::1"):
        owner = netns_owner(compose, from_service)
        return {s for s in services if netns_owner(compose, s) == owner}
    owners = {s for s in services if host in dns_names(compose, s)}
    return {s for s in services if netns_owner(compose, s) in owners}


def listens(compose: dict[str, Any], service: str, port: int) -> bool:
    """Does the program of ``service`` listen on ``port`` (per its settings)?"""
    svc = compose["services"][service]
    program = program_of(service, svc)
    env = effective_env(svc)
    if program == "kamailio":
        sip = int(env.get("VVP_SIP_PORT", kamailio_cfg_default("VVP_SIP_PORT")))
        http = int(env.get("VVP_HTTP_PORT", kamailio_cfg_default("VVP_HTTP_PORT")))
        return port in (sip, http)
    if program == "helper":
        return port == int(env.get("VVP_HELPER_PORT", Settings().port))
    if program == "simulator":
        command = svc.get("command") or []
        return (
            port == int(command[command.index("--port") + 1])
            if "--port" in command
            else (port == SIMULATOR_PORT)
        )
    if program == "prometheus" or service == "prometheus":
        return port == PROMETHEUS_PORT
    if service == "grafana":
        return port == GRAFANA_PORT
    return False


def listen_addr_open(compose: dict[str, Any], service: str) -> bool:
    """Listens beyond loopback (needed for anything outside its namespace)."""
    svc = compose["services"][service]
    env = effective_env(svc)
    program = program_of(service, svc)
    if program == "kamailio":
        return env.get("VVP_HTTP_ADDR", kamailio_cfg_default("VVP_HTTP_ADDR")) not in (
            "127.0.0.1",
            "::1",
        )
    if program == "helper":
        return env.get("VVP_HELPER_HOST", Settings().host) not in ("127.0.0.1", "::1")
    return True


def reachable(compose: dict[str, Any], url: str, from_service: str, program: str) -> str | None:
    """None when ``program`` answers ``url`` from ``from_service``; else the problem."""
    parts = urlsplit(url if "://" in url else f"http://{url}")
    host, port = parts.hostname or "", parts.port or 80
    targets = [
        s
        for s in who_answers(compose, host, from_service)
        if program_of(s, compose["services"][s]) == program
    ]
    if not targets:
        return f"{from_service} -> {url}: no {program} service answers as {host!r}"
    target = targets[0]
    if not listens(compose, target, port):
        return f"{from_service} -> {url}: {target} does not listen on {port}"
    same_ns = netns_owner(compose, target) == netns_owner(compose, from_service)
    if not same_ns and not listen_addr_open(compose, target):
        return f"{from_service} -> {url}: {target} listens on loopback only"
    return None


def check_compose_files(compose: dict[str, Any]) -> list[str]:
    problems = []
    for name, svc in compose["services"].items():
        build = svc.get("build")
        if build:
            context = REPO / build.get("context", ".")
            if not (context / build["dockerfile"]).is_file():
                problems.append(f"{name}: dockerfile {build['dockerfile']} missing")
        for volume in svc.get("volumes", []):
            if volume["type"] == "bind" and not Path(volume["source"]).exists():
                problems.append(f"{name}: bind mount {volume['source']} missing")
        for env_file in (
            [svc.get("env_file")]
            if isinstance(svc.get("env_file"), str)
            else (svc.get("env_file") or [])
        ):
            if not (REPO / env_file).exists():
                problems.append(f"{name}: env_file {env_file} missing")
    for kind in ("configs", "secrets"):
        for name, item in (compose.get(kind) or {}).items():
            if "file" in item and not (REPO / item["file"]).exists():
                problems.append(f"{kind} {name}: {item['file']} missing")
    return problems


def check_compose_env(compose: dict[str, Any]) -> list[str]:
    problems = []
    for name, svc in compose["services"].items():
        program = program_of(name, svc)
        readable = program_env(program)
        for var in service_env(svc):
            if name == "grafana" and re.fullmatch(r"GF_[A-Z0-9]+_[A-Z0-9_]+", var):
                continue  # Grafana reads every GF_<SECTION>_<KEY>
            if var not in readable:
                problems.append(f"{name}: sets {var}, which {program} does not read")
    return problems


def check_compose_ports(compose: dict[str, Any]) -> list[str]:
    problems = []
    services = compose["services"]
    for name, svc in services.items():
        for spec in svc.get("ports", []):
            proto, container_port = spec.get("protocol", "tcp"), int(spec["target"])
            in_ns = [s for s in services if netns_owner(compose, s) == name]
            if not any(listens(compose, s, container_port) for s in in_ns):
                problems.append(f"{name}: publishes {container_port}/{proto}: nothing listens")
    # Published SIP port is 5060 on UDP and TCP.
    published = {
        f"{p['published']}:{p['target']}/{p.get('protocol', 'tcp')}"
        for svc in services.values()
        for p in svc.get("ports", [])
    }
    for expected in (f"{SIP_PORT}:{SIP_PORT}/udp", f"{SIP_PORT}:{SIP_PORT}/tcp"):
        if expected not in published:
            problems.append(f"SIP {expected} is not published")
    for port in (PROMETHEUS_PORT, GRAFANA_PORT):
        if f"{port}:{port}/tcp" not in published:
            problems.append(f"{port} is not published")
    # Prometheus scrape targets (docker/monitoring/prometheus.yml).
    prom = yaml.safe_load((REPO / "docker" / "monitoring" / "prometheus.yml").read_text())
    for job in prom["scrape_configs"]:
        for target in job["static_configs"][0]["targets"]:
            program = {"vvp-helper": "helper", "kamailio": "kamailio"}.get(job["job_name"])
            if program is None:
                continue
            problem = reachable(compose, target, "prometheus", program)
            if problem:
                problems.append(f"prometheus.yml job {job['job_name']}: {problem}")
    # Kamailio -> helper, helper -> Kamailio /RPC (loopback-only in kamailio.cfg).
    kam_env, helper_env = effective_env(services["kamailio"]), effective_env(services["helper"])
    helper_url = kam_env.get("VVP_HELPER_URL", kamailio_cfg_default("VVP_HELPER_URL"))
    if problem := reachable(compose, helper_url, "kamailio", "helper"):
        problems.append(problem)
    for rpc in helper_env.get("VVP_KAMAILIO_RPC", "").split(","):
        if not rpc:
            problems.append("helper: VVP_KAMAILIO_RPC not set: the fallback push is off")
            continue
        if problem := reachable(compose, rpc, "helper", "kamailio"):
            problems.append(problem)
        elif urlsplit(rpc).hostname not in ("127.0.0.1", "::1", "localhost"):
            problems.append(f"helper -> {rpc}: kamailio.cfg answers /RPC from loopback only")
    # The demo: the helper's entrypoint falls back to the simulator's URL.
    demo_url = re.search(r"VVP_VERIFIER_URL=(http\S+)", entrypoint("helper.sh").read_text())
    if demo_url is None:
        problems.append("helper.sh: no demo verifier URL")
    elif problem := reachable(compose, demo_url.group(1), "helper", "simulator"):
        problems.append(problem)
    return problems


def healthcheck_problem(where: str, test: list[str], program: str) -> str | None:
    """A healthcheck must reach an existing endpoint of its own program."""
    joined = " ".join(test)
    url = re.search(r"http://127\.0\.0\.1:(?:%s|(\d+))(/[\w/.-]*)", joined)
    if url:
        port, path = url.group(1), url.group(2)
        if program == "helper":
            ok = route_exists(REPO / "helper" / "vvp_helper" / "handlers.py", path)
            ok = ok and (port is None or int(port) == HELPER_PORT)
        elif program == "simulator":
            ok = route_exists(REPO / "helper" / "vvp_simulator" / "server.py", path)
            ok = ok and port is not None and int(port) == SIMULATOR_PORT
        elif program == "prometheus":
            ok = path == "/-/ready" and int(port or 0) == PROMETHEUS_PORT
        elif program == "grafana":
            ok = path == "/api/health" and int(port or 0) == GRAFANA_PORT
        else:
            ok = False
        return None if ok else f"{where}: healthcheck {path} on {port} is not a {program} route"
    if "vvp-sip-check" in joined:
        kam = Dockerfile.parse(REPO / "docker" / "kamailio.Dockerfile")
        source = image_copies_to(kam, "/usr/local/bin/vvp-sip-check")
        if source is None or not (REPO / source).is_file():
            return f"{where}: vvp-sip-check is not in the Kamailio image"
        if "route(OPTIONS)" not in KAMAILIO_CFG.read_text():
            return f"{where}: kamailio.cfg does not answer OPTIONS"
        return None
    return f"{where}: healthcheck {joined!r} checks nothing known"


def check_healthchecks(compose: dict[str, Any]) -> list[str]:
    problems = []
    for name, svc in compose["services"].items():
        health = svc.get("healthcheck")
        if health is None:
            if name not in ("sipp",):
                problems.append(f"{name}: no healthcheck")
            continue
        if health.get("disable"):
            continue
        program = program_of(name, svc)
        if problem := healthcheck_problem(f"compose {name}", list(health["test"]), program):
            problems.append(problem)
    return problems


# ---------------------------------------------------------------------------------------
# The VM install


def systemd_settings(path: Path) -> dict[str, list[str]]:
    settings: dict[str, list[str]] = {}
    for line in path.read_text().splitlines():
        line = line.strip()
        if not line or line.startswith(("#", ";", "[")):
            continue
        key, _, value = line.partition("=")
        settings.setdefault(key.strip(), []).append(value.strip())
    return settings


def env_file(path: Path) -> dict[str, str]:
    """NAME=value lines, commented-out ones included (they document settings too)."""
    return dict(re.findall(r"^#?\s*([A-Z][A-Z0-9_]*)=(.*)$", path.read_text(), re.M))


@dataclass
class Installer:
    """What deploy/install-vm.sh creates, read from its text."""

    files: set[str] = field(default_factory=set)
    dirs: set[str] = field(default_factory=set)
    venvs: set[str] = field(default_factory=set)
    users: set[str] = field(default_factory=set)
    sources: set[str] = field(default_factory=set)

    @classmethod
    def parse(cls, text: str) -> Installer:
        variables = dict(re.findall(r"^([A-Z_]+)=(/[^\s$]*|[a-z][\w-]*)$", text, re.M))

        def expand(s: str) -> str:
            return re.sub(r"\$\{?([A-Z_]+)\}?", lambda m: variables.get(m.group(1), m.group(0)), s)

        result = cls()
        joined = re.sub(r"\\\n\s*", " ", text)
        for raw in joined.splitlines():
            line = raw.strip()
            if line.startswith("#"):
                continue
            try:
                words = [expand(w) for w in shlex.split(line, comments=True)]
            except ValueError:
                continue
            # Lines of shell functions (install_once's own body) name their arguments.
            if not words or any(re.search(r"\$(?!REPO/)", w) for w in words[1:]):
                continue
            if words[0] == "install":
                args = [w for i, w in enumerate(words[1:], 1) if not _option_or_value(words, i)]
                if "-d" in words:
                    result.dirs.update(args)
                elif len(args) >= 2:
                    result.files.add(args[-1])
                    result.sources.update(args[:-1])
            elif words[0] == "install_once" and len(words) >= 3:
                result.sources.add(words[1])
                result.files.add(words[2])
            elif "venv" in words and "-m" in words:
                result.venvs.add(words[-1])
            elif words[0] == "useradd":
                result.users.add(words[-1])
        return result

    def creates(self, path: str) -> bool:
        if path in self.files or path in self.dirs:
            return True
        return any(path.startswith(venv.rstrip("/") + "/bin/") for venv in self.venvs)


def _option_or_value(words: list[str], i: int) -> bool:
    word = words[i]
    if word.startswith("-"):
        return True
    return words[i - 1] in ("-m", "-o", "-g", "--mode", "--owner", "--group")


def check_units(installer: Installer, helper_unit: Path, dropin: Path) -> list[str]:
    problems = []
    unit = systemd_settings(helper_unit)
    for exec_start in unit.get("ExecStart", []):
        binary = shlex.split(exec_start.lstrip("-@+!"))[0]
        if not installer.creates(binary):
            problems.append(f"{helper_unit.name}: ExecStart {binary} is not installed")
        script = Path(binary).name
        pyproject = (REPO / "pyproject.toml").read_text()
        if binary.startswith("/opt") and f"\n{script} = " not in pyproject:
            problems.append(f"{helper_unit.name}: {script} is not a console script")
    for unit_path, settings in ((helper_unit, unit), (dropin, systemd_settings(dropin))):
        for value in settings.get("EnvironmentFile", []):
            path = value.lstrip("-")
            if not installer.creates(path):
                problems.append(f"{unit_path.name}: EnvironmentFile {path} is not installed")
        for value in settings.get("Environment", []):
            for assignment in shlex.split(value):
                _, _, path = assignment.partition("=")
                if path.startswith("/") and not installer.creates(path):
                    problems.append(f"{unit_path.name}: {assignment}: not installed")
        for user in settings.get("User", []):
            if user not in installer.users:
                problems.append(f"{unit_path.name}: User={user} is not created")
    return problems


# ---------------------------------------------------------------------------------------
# Tests: the real files


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return load_compose()


def test_dockerfiles_exist() -> None:
    names = {df.name for df in DOCKERFILES}
    assert {"kamailio.Dockerfile", "helper.Dockerfile"} <= names


@pytest.mark.parametrize("path", DOCKERFILES, ids=lambda p: p.name)
def test_dockerfile_copies_exist(path: Path) -> None:
    assert check_dockerfile(Dockerfile.parse(path)) == []


@pytest.mark.parametrize("path", DOCKERFILES, ids=lambda p: p.name)
def test_dockerfile_entrypoints_are_executable(path: Path) -> None:
    df = Dockerfile.parse(path)
    for sources, dest in df.copies():
        if dest.startswith("/usr/local/bin/"):
            source = REPO / sources[0]
            assert source.stat().st_mode & 0o111, f"{source} is not executable"
    entry = df.entrypoint()
    if entry and entry[0].startswith("vvp-"):
        assert image_copies_to(df, f"/usr/local/bin/{entry[0]}"), entry


def test_kamailio_image_runs_the_ci_install_script() -> None:
    df = Dockerfile.parse(REPO / "docker" / "kamailio.Dockerfile")
    assert df.instructions[0] == ("ARG", "KAMAILIO_BASE_IMAGE=debian:12-slim")
    assert df.args("FROM") == ["${KAMAILIO_BASE_IMAGE}"]
    assert ["kamailio/install.sh"] in [s for s, _ in df.copies()]
    assert any("kamailio/install.sh" in run for run in df.args("RUN"))
    assert "KAMAILIO_SKIP_TOOLS" not in path_text(df.path), "kamcli must be in the image"
    assert image_copies_to(df, "/etc/kamailio/kamailio.cfg") == "kamailio/kamailio.cfg"
    assert image_copies_to(df, "/etc/kamcli/kamcli.ini") == "kamailio/kamcli.ini"
    # Every line of the CI script the image relies on is the same script CI runs.
    assert (REPO / ".ci" / "run").is_file()


def path_text(path: Path) -> str:
    return "\n".join(
        line for line in path.read_text().splitlines() if not line.lstrip().startswith("#")
    )


def test_helper_image_is_slim_non_root_and_runtime_only() -> None:
    df = Dockerfile.parse(REPO / "docker" / "helper.Dockerfile")
    assert df.instructions[0] == ("ARG", "PYTHON_BASE_IMAGE=python:3.11-slim")
    assert all(f.startswith("${PYTHON_BASE_IMAGE}") for f in df.args("FROM"))
    users = df.args("USER")
    assert users and users[-1] not in ("root", "0")
    install = " ".join(df.args("RUN"))
    assert "[fast" in install and "test" not in re.findall(r"\[([\w,]+)\]", install)[0]
    assert df.env()["VVP_HELPER_HOST"] == "0.0.0.0"


@pytest.mark.parametrize("path", DOCKERFILES, ids=lambda p: p.name)
def test_dockerfile_env_is_read_by_the_program(path: Path) -> None:
    df = Dockerfile.parse(path)
    program = {"kamailio": "kamailio", "helper": "helper", "sipp": "sipp"}.get(
        path.name.split(".")[0], ""
    )
    unread = set(df.env()) - program_env(program) - GENERIC_VARS
    assert unread == set()


@pytest.mark.parametrize("path", DOCKERFILES, ids=lambda p: p.name)
def test_dockerfile_exposes_what_the_program_listens_on(path: Path) -> None:
    df = Dockerfile.parse(path)
    env = df.env()
    if path.name == "kamailio.Dockerfile":
        assert env["VVP_SIP_PORT"] == str(SIP_PORT)
        assert env["VVP_HTTP_PORT"] == str(KAMAILIO_HTTP_PORT)
        assert df.exposed() == {f"{SIP_PORT}/udp", f"{SIP_PORT}/tcp", f"{KAMAILIO_HTTP_PORT}/tcp"}
    elif path.name == "helper.Dockerfile":
        assert env["VVP_HELPER_PORT"] == str(HELPER_PORT) == str(Settings().port)
        assert df.exposed() == {f"{HELPER_PORT}/tcp"}


@pytest.mark.parametrize("path", DOCKERFILES, ids=lambda p: p.name)
def test_dockerfile_healthcheck_hits_a_real_endpoint(path: Path) -> None:
    df = Dockerfile.parse(path)
    test = df.healthcheck()
    if path.name == "sipp.Dockerfile":
        return
    program = path.name.split(".")[0]
    assert test, f"{path.name}: no HEALTHCHECK"
    assert healthcheck_problem(path.name, test, program) is None


def test_kamailio_ports_match_the_cfg_defaults() -> None:
    assert kamailio_cfg_default("VVP_SIP_PORT") == str(SIP_PORT)
    assert kamailio_cfg_default("VVP_HTTP_PORT") == str(KAMAILIO_HTTP_PORT)
    assert Settings().port == HELPER_PORT


def test_compose_referenced_files_exist(compose: dict[str, Any]) -> None:
    assert check_compose_files(compose) == []


def test_compose_environment_is_read_by_each_program(compose: dict[str, Any]) -> None:
    assert check_compose_env(compose) == []


def test_compose_ports_and_urls_line_up(compose: dict[str, Any]) -> None:
    assert check_compose_ports(compose) == []


def test_compose_healthchecks_hit_real_endpoints(compose: dict[str, Any]) -> None:
    assert check_healthchecks(compose) == []


def test_compose_simulator_command_is_valid_cli(compose: dict[str, Any]) -> None:
    from vvp_simulator.__main__ import _parser

    command = compose["services"]["simulator"]["command"]
    args = _parser().parse_args(command)
    assert args.command == "serve" and args.host == "0.0.0.0"


def test_compose_production_rules(compose: dict[str, Any]) -> None:
    services = compose["services"]
    assert services["simulator"]["profiles"] == ["demo"]
    assert services["sipp"]["profiles"] == ["load"]
    for name, svc in services.items():
        if "profiles" not in svc or name == "simulator":
            assert svc.get("restart") in ("unless-stopped", "always"), name
        assert svc.get("deploy", {}).get("resources", {}).get("limits"), name
    helper = services["helper"]
    # No verifier URL baked in: only the environment, or the explicit demo.
    assert helper["environment"]["VVP_VERIFIER_URL"] == ""
    mounts = [(v["type"], v["source"], v["target"], v.get("read_only")) for v in helper["volumes"]]
    assert ("bind", str(REPO / "policy"), "/etc/vvp-edge/policy", True) in mounts
    policy = service_env(helper)["VVP_POLICY"]
    assert (REPO / "policy" / Path(policy).name).is_file()
    assert policy.startswith("/etc/vvp-edge/policy/")
    assert float(service_env(helper)["VVP_POLICY_WATCH_INTERVAL"]) > 0


# ---------------------------------------------------------------------------------------
# Tests: deploy/


def test_installer_sources_exist() -> None:
    installer = Installer.parse(INSTALLER.read_text())
    assert installer.files and installer.users == {"vvp-edge"}
    for source in installer.sources:
        rel = source.replace('"', "").replace("$REPO/", "")
        if rel.startswith("/"):
            continue
        assert list(REPO.glob(rel)), f"install-vm.sh installs {source}, not in the repo"


def test_installer_installs_every_deploy_file() -> None:
    installer = Installer.parse(INSTALLER.read_text())
    shipped = {str(p.relative_to(REPO)) for p in (REPO / "deploy").rglob("*") if p.is_file()} - {
        "deploy/install-vm.sh"
    }
    used = {s.replace("$REPO/", "") for s in installer.sources}
    assert shipped - used == set()


def test_units_reference_what_the_installer_creates() -> None:
    installer = Installer.parse(INSTALLER.read_text())
    assert check_units(installer, HELPER_UNIT, KAMAILIO_DROPIN) == []


def test_helper_unit_is_hardened() -> None:
    unit = systemd_settings(HELPER_UNIT)
    for key, value in {
        "NoNewPrivileges": "yes",
        "ProtectSystem": "strict",
        "PrivateTmp": "yes",
        "Restart": "on-failure",
        "EnvironmentFile": "/etc/vvp-edge/helper.env",
        "User": "vvp-edge",
    }.items():
        assert unit.get(key) == [value], key
    assert "ReadWritePaths" not in unit, "the helper writes nothing"


def test_env_templates_set_only_what_programs_read() -> None:
    helper = env_file(REPO / "deploy" / "env" / "helper.env")
    kamailio = env_file(REPO / "deploy" / "env" / "kamailio.env")
    assert set(helper) - program_env("helper") == set()
    assert set(kamailio) - kamailio_env_names() - DEBIAN_UNIT_VARS == set()
    installer = Installer.parse(INSTALLER.read_text())
    assert installer.creates(helper["VVP_POLICY"])
    assert urlsplit(helper["VVP_KAMAILIO_RPC"]).port == int(kamailio["VVP_HTTP_PORT"])
    helper_url = urlsplit(kamailio["VVP_HELPER_URL"])
    assert helper_url.port == int(helper["VVP_HELPER_PORT"])
    assert helper_url.hostname == helper["VVP_HELPER_HOST"]
    assert int(kamailio["VVP_SIP_PORT"]) == SIP_PORT


def test_dropin_config_path_is_the_installed_cfg() -> None:
    installer = Installer.parse(INSTALLER.read_text())
    env = systemd_settings(KAMAILIO_DROPIN)["Environment"]
    assert any("CFGFILE=/etc/kamailio/kamailio.cfg" in e for e in env)
    assert installer.creates("/etc/kamailio/kamailio.cfg")
    assert installer.creates("/etc/kamcli/kamcli.ini")


# ---------------------------------------------------------------------------------------
# Each checker notices when its subject breaks


def test_copy_check_catches_a_missing_file(tmp_path: Path) -> None:
    broken = tmp_path / "x.Dockerfile"
    broken.write_text("FROM debian:12-slim\nCOPY kamailio/no-such.sh /x\nCOPY var/ /v\n")
    problems = check_dockerfile(Dockerfile.parse(broken))
    assert any("no-such.sh" in p for p in problems)


def test_copy_check_catches_a_dockerignored_file() -> None:
    assert ignored("tests/e2e/test_demo.py", dockerignore_patterns())
    assert not ignored("tests/support/sipp_scenarios.py", dockerignore_patterns())
    assert ignored("helper/vvp_helper/__pycache__", dockerignore_patterns())


def test_file_check_catches_a_missing_mount(compose: dict[str, Any]) -> None:
    broken = copy.deepcopy(compose)
    broken["services"]["prometheus"]["volumes"][0]["source"] = str(
        REPO / "docker/monitoring/nope.yml"
    )
    assert check_compose_files(broken)


def test_env_check_catches_an_unread_variable(compose: dict[str, Any]) -> None:
    broken = copy.deepcopy(compose)
    broken["services"]["helper"]["environment"]["VVP_HELPER_PORTT"] = "8480"
    broken["services"]["kamailio"]["environment"]["VVP_HELPER_DEADLINE"] = "5"
    assert len(check_compose_env(broken)) == 2


@pytest.mark.parametrize(
    ("service", "key", "value"),
    [
        ("kamailio", "VVP_SIP_PORT", "5070"),  # published 5060 no longer listened on
        ("kamailio", "VVP_HTTP_ADDR", "127.0.0.1"),  # Prometheus cannot scrape
        ("kamailio", "VVP_HTTP_PORT", "8061"),  # scrape target and /RPC URL wrong
        ("helper", "VVP_HELPER_PORT", "8481"),  # Kamailio's helper URL wrong
        ("helper", "VVP_HELPER_HOST", "127.0.0.1"),  # Prometheus cannot scrape
        ("helper", "VVP_KAMAILIO_RPC", "http://kamailio:8060/RPC"),  # /RPC is loopback-only
    ],
)
def test_port_check_catches_a_mismatch(
    compose: dict[str, Any], service: str, key: str, value: str
) -> None:
    broken = copy.deepcopy(compose)
    broken["services"][service]["environment"][key] = value
    assert check_compose_ports(broken)


def test_port_check_catches_a_split_namespace(compose: dict[str, Any]) -> None:
    broken = copy.deepcopy(compose)
    del broken["services"]["helper"]["network_mode"]
    assert check_compose_ports(broken)


def test_healthcheck_check_catches_a_wrong_endpoint(compose: dict[str, Any]) -> None:
    broken = copy.deepcopy(compose)
    test = broken["services"]["helper"]["healthcheck"]["test"]
    test[-1] = test[-1].replace("/healthz", "/health")
    broken["services"]["simulator"]["healthcheck"]["test"][-1] = test[-1].replace("8480", "8090")
    assert len(check_healthchecks(broken)) == 2


def test_unit_check_catches_what_the_installer_does_not_create(tmp_path: Path) -> None:
    installer = Installer.parse(INSTALLER.read_text())
    unit = tmp_path / "vvp-helper.service"
    unit.write_text(
        HELPER_UNIT.read_text()
        .replace("/etc/vvp-edge/helper.env", "/etc/vvp-edge/other.env")
        .replace("User=vvp-edge", "User=vvp")
        .replace("/opt/vvp-edge/venv/bin", "/opt/vvp/venv/bin")
    )
    assert len(check_units(installer, unit, KAMAILIO_DROPIN)) == 3
    no_user = Installer.parse(INSTALLER.read_text().replace("useradd", "true"))
    assert check_units(no_user, HELPER_UNIT, KAMAILIO_DROPIN)


def test_kamailio_memory_is_the_same_wherever_kamailio_starts(compose: dict[str, Any]) -> None:
    """Shared memory must cover calls/s x tm's 5 s wait timer x ~6.5 KB a call (README,
    "Kamailio's shared memory"). The deployment files once passed -m 256 over the cfg's
    512, and Kamailio answered 500 "out of mem" near 4,000 calls/s; the test harness,
    which measures capacity, must run with what is deployed."""
    from tests.support import harness

    cfg_default = kamailio_cfg_default("VVP_SHM_MB")
    dockerfile = (REPO / "docker" / "kamailio.Dockerfile").read_text()
    entrypoint = (ENTRYPOINTS / "kamailio.sh").read_text()
    compose_env = compose["services"]["kamailio"]["environment"]
    # Each place must name the size exactly once (a list of two would read "512,512").
    found = {
        "kamailio.cfg VVP_SHM_MB": cfg_default,
        "deploy/env/kamailio.env": env_file(REPO / "deploy" / "env" / "kamailio.env")["SHM_MEMORY"],
        "compose.yaml": str(compose_env["SHM_MEMORY"]),
        "kamailio.Dockerfile": ",".join(re.findall(r"\bSHM_MEMORY=(\d+)", dockerfile)),
        "entrypoint default": ",".join(re.findall(r"SHM_MEMORY:-(\d+)", entrypoint)),
        "tests/support/harness.py": str(harness.KAMAILIO_SHM_MB),
    }
    assert set(found.values()) == {cfg_default}, found
    # The 6.5 KB a call holds only with one branch (the default 12 doubles it).
    assert re.search(r"^max_branches=1$", KAMAILIO_CFG.read_text(), re.M)


# ---------------------------------------------------------------------------------------
# The real tools: compose, systemd-analyze, shellcheck (CI has each; see tool_missing)

NETNS_HOLDER = "edge"


def check_compose_lifecycle(compose: dict[str, Any]) -> list[str]:
    """What `up --wait` and recreating the namespace holder need, and the hardening."""
    problems = []
    services = compose["services"]
    builders: dict[str, list[str]] = {}
    for name, svc in services.items():
        if svc.get("build"):
            builders.setdefault(svc["image"], []).append(name)
        if svc.get("network_mode") == f"service:{NETNS_HOLDER}":
            dep = svc.get("depends_on", {}).get(NETNS_HOLDER, {})
            if not dep.get("restart"):
                problems.append(f"{name}: shares {NETNS_HOLDER}'s namespace without restart: true")
        if name in ("edge", "kamailio", "helper", "simulator"):
            if not svc.get("read_only"):
                problems.append(f"{name}: root file system is writable")
            if svc.get("cap_drop") != ["ALL"]:
                problems.append(f"{name}: keeps capabilities")
            if "no-new-privileges:true" not in svc.get("security_opt", []):
                problems.append(f"{name}: may gain privileges")
    problems += [
        f"{image} is built by {names}" for image, names in builders.items() if len(names) > 1
    ]
    test = " ".join(services[NETNS_HOLDER].get("healthcheck", {}).get("test", []))
    if "vvp-sip-check --path" not in test:
        problems.append(f"{NETNS_HOLDER}: its healthcheck does not prove the call path")
    return problems


def test_compose_lifecycle_and_hardening(compose: dict[str, Any]) -> None:
    assert check_compose_lifecycle(compose) == []


def test_lifecycle_check_catches_each_break(compose: dict[str, Any]) -> None:
    broken = copy.deepcopy(compose)
    broken["services"]["kamailio"]["depends_on"]["edge"]["restart"] = False
    broken["services"]["simulator"]["build"] = broken["services"]["helper"]["build"]
    broken["services"]["edge"]["healthcheck"] = {"disable": True}
    del broken["services"]["kamailio"]["read_only"]
    broken["services"]["kamailio"]["cap_drop"] = []
    broken["services"]["helper"]["security_opt"] = []
    assert len(check_compose_lifecycle(broken)) == 6


def test_every_long_running_service_has_a_healthcheck_for_up_wait(
    compose: dict[str, Any],
) -> None:
    """`docker compose up --wait` refuses a service whose healthcheck is disabled."""
    for name, svc in compose["services"].items():
        if name != "sipp":
            assert not svc.get("healthcheck", {}).get("disable"), name
            assert svc.get("healthcheck", {}).get("test"), name


def test_open_files_limit_is_a_setting_defaulting_to_65536() -> None:
    nofile = load_compose()["services"]["kamailio"]["ulimits"]["nofile"]
    assert nofile == {"soft": 65536, "hard": 65536}
    lower = load_compose({"VVP_NOFILE": "20000"})["services"]["kamailio"]["ulimits"]["nofile"]
    assert lower == {"soft": 20000, "hard": 20000}


def test_compose_checks_its_own_file(tmp_path: Path) -> None:
    """compose itself rejects what its schema does not allow (the tool, not a parser)."""
    broken = tmp_path / "compose.yaml"
    broken.write_text(
        COMPOSE.read_text().replace("    read_only: true\n", "    read_only: yes please\n", 1)
    )
    done = compose_config(broken)
    assert done.returncode != 0 and "read_only" in done.stderr


def test_compose_file_says_which_compose_it_needs() -> None:
    assert "Docker Compose 2.20 or later" in COMPOSE.read_text()


def test_env_file_is_ignored_by_git() -> None:
    if shutil.which("git") is None or not (REPO / ".git").exists():
        tool_missing("git and a clone")
    done = subprocess.run(["git", "-C", str(REPO), "check-ignore", "-q", ".env"])
    assert done.returncode == 0, ".env (the verifier URL and token) is not git-ignored"


def systemd_security(unit: str, files: dict[str, Path], tmp_path: Path) -> tuple[float, str]:
    """`systemd-analyze security --offline` of ``unit`` in a root made of ``files``."""
    if shutil.which("systemd-analyze") is None:
        tool_missing("systemd-analyze (package systemd)")
    root = tmp_path / "root"
    for dest, source in files.items():
        target = root / dest.lstrip("/")
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(source, target)
    done = subprocess.run(
        ["systemd-analyze", "security", "--offline=true", f"--root={root}", "--no-pager", unit],
        capture_output=True, text=True,
    )  # fmt: skip
    match = re.search(r"Overall exposure level for \S+: ([\d.]+)", done.stdout)
    assert match, done.stdout + done.stderr
    return float(match[1]), done.stderr


def debian_kamailio_unit() -> Path:
    unit = Path("/lib/systemd/system/kamailio.service")
    if not unit.is_file():
        tool_missing("Debian's kamailio.service (kamailio/install.sh)")
    return unit


def kamailio_units(dropin: Path) -> dict[str, Path]:
    return {
        "/lib/systemd/system/kamailio.service": debian_kamailio_unit(),
        "/etc/systemd/system/kamailio.service.d/vvp-edge.conf": dropin,
    }


#: systemd-analyze security's scale: 0 safe ... 10 unsafe; "OK" is below 4.0... 4.9.
MAX_EXPOSURE = 4.0


@pytest.mark.parametrize("unit", ["kamailio.service", "vvp-helper.service"])
def test_units_are_hardened_by_systemds_own_measure(unit: str, tmp_path: Path) -> None:
    files = (
        kamailio_units(KAMAILIO_DROPIN)
        if unit == "kamailio.service"
        else {"/etc/systemd/system/vvp-helper.service": HELPER_UNIT}
    )
    score, warnings = systemd_security(unit, files, tmp_path)
    assert score <= MAX_EXPOSURE, score
    # systemd read every line: no unknown keys, no values it could not parse.
    assert not re.search(r"Unknown|Failed to parse|Invalid", warnings), warnings


def test_security_check_catches_an_unhardened_or_misspelt_unit(tmp_path: Path) -> None:
    bare = tmp_path / "bare.conf"
    bare.write_text(KAMAILIO_DROPIN.read_text().split("# Hardening:")[0])
    score, _ = systemd_security("kamailio.service", kamailio_units(bare), tmp_path / "a")
    assert score > MAX_EXPOSURE
    typo = tmp_path / "typo.service"
    typo.write_text(HELPER_UNIT.read_text().replace("NoNewPrivileges=", "NoNewPrivilege="))
    _, warnings = systemd_security(
        "vvp-helper.service", {"/etc/systemd/system/vvp-helper.service": typo}, tmp_path / "b"
    )
    assert "Unknown key" in warnings


SHELL_SCRIPTS = [
    INSTALLER, REPO / "kamailio/install.sh", REPO / "scripts/bootstrap", REPO / "scripts/test",
    REPO / "scripts/container-engine", REPO / ".ci/run", REPO / ".ci/base-images",
    *sorted(ENTRYPOINTS.glob("*.sh")),
]  # fmt: skip


def shellcheck(*paths: Path) -> subprocess.CompletedProcess[str]:
    if shutil.which("shellcheck") is None:
        tool_missing("shellcheck")
    return subprocess.run(
        ["shellcheck", "--format=gcc", *map(str, paths)], capture_output=True, text=True
    )


def test_shell_scripts_pass_shellcheck() -> None:
    done = shellcheck(*SHELL_SCRIPTS)
    assert done.returncode == 0, done.stdout


def test_shellcheck_catches_a_broken_copy(tmp_path: Path) -> None:
    broken = tmp_path / "install-vm.sh"
    broken.write_text(
        INSTALLER.read_text().replace('"$VENV/bin/python" -m venv', "$VENV/bin/python -m venv")
    )
    broken.write_text(broken.read_text() + "\nif [ $verifier_url = x ]; then echo; fi\n")
    done = shellcheck(broken)
    assert done.returncode != 0 and "SC2086" in done.stdout
