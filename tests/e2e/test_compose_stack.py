"""The compose stack for real: build, start with the demo profile, one sipp call, 302.

Needs a Docker engine (found with the docker SDK: docker.from_env().ping()) and the
`docker compose` plugin; without either the test is skipped, with the reason. The stack
runs as its own compose project with SIP published on a free port, and is torn down
(volumes included) whatever happens.
"""

from __future__ import annotations

import gc
import os
import shutil
import subprocess
import time
import uuid
import warnings
from collections.abc import Iterator
from pathlib import Path

import pytest
from harness import REPO, free_port, run_sipp
from sipp_scenarios import invite_expecting, request_expecting

from vvp_simulator.passport import mint

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(1800)]


def docker_engine() -> str | None:
    """None when an engine answers; else why not."""
    try:
        import docker  # type: ignore[import-untyped]
    except ImportError:
        return "the docker SDK is not installed (pip install docker)"
    # A failed connection leaves the SDK's socket to the garbage collector: collect it
    # here, where its ResourceWarning is expected, not in some later test.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ResourceWarning)
        client = None
        try:
            client = docker.from_env()
            client.ping()
        except Exception as exc:
            return f"{type(exc).__name__}: {exc}"
        finally:
            if client is not None:
                client.close()
            gc.collect()
    return None


def compose_cli() -> list[str] | None:
    for argv in (["docker", "compose"], ["docker-compose"]):
        if shutil.which(argv[0]) is None:
            continue
        done = subprocess.run([*argv, "version"], capture_output=True, text=True)
        if done.returncode == 0:
            return argv
    return None


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[int, Path]]:
    reason = docker_engine()
    if reason is not None:
        pytest.skip(f"no Docker engine reachable: {reason}")
    cli = compose_cli()
    if cli is None:
        pytest.skip("Docker engine reachable, but no `docker compose` plugin")
    if shutil.which("sipp") is None:
        pytest.skip("sipp is not installed (scripts/bootstrap)")
    workdir = tmp_path_factory.mktemp("compose")
    sip_port = free_port()
    env = {
        **os.environ,
        "COMPOSE_PROFILES": "demo",
        "COMPOSE_PROJECT_NAME": f"vvp-edge-test-{uuid.uuid4().hex[:8]}",
        "VVP_SIP_PUBLISH_PORT": str(sip_port),
    }
    env.pop("VVP_VERIFIER_URL", None)
    base = [*cli, "-f", str(REPO / "compose.yaml")]
    # The call path only: Prometheus and Grafana publish fixed host ports (9090, 3000)
    # that may be taken on a test machine; their files are checked by the unit tests.
    services = ["edge", "kamailio", "helper", "simulator"]

    def compose(*args: str, timeout: float = 900) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*base, *args], env=env, cwd=REPO, capture_output=True, text=True, timeout=timeout
        )

    try:
        built = compose("build", *services)
        assert built.returncode == 0, built.stdout[-4000:] + built.stderr[-4000:]
        up = compose("up", "-d", "--wait", "--wait-timeout", "120", *services)
        assert up.returncode == 0, up.stdout + up.stderr + compose("logs").stdout[-6000:]
        yield sip_port, workdir
    finally:
        logs = compose("logs", "--no-color", timeout=60)
        (workdir / "compose.log").write_text(logs.stdout + logs.stderr)
        compose("down", "--volumes", "--remove-orphans", timeout=300)


def test_stack_answers_options_and_redirects_a_valid_call(stack: tuple[int, Path]) -> None:
    sip_port, workdir = stack
    deadline = time.monotonic() + 30
    while True:
        options = run_sipp(
            request_expecting(workdir / "options.xml", "OPTIONS", 200), sip_port, workdir
        )
        if options.returncode == 0 or time.monotonic() > deadline:
            break
        time.sleep(1)
    assert options.returncode == 0, options.stdout

    identity = mint("valid", "+441923311001", "+441923311006").identity_header()
    scenario = invite_expecting(workdir / "invite.xml", 302, headers=[f"Identity: {identity}"])
    run = run_sipp(scenario, sip_port, workdir)
    logs = (workdir / "compose.log").read_text() if (workdir / "compose.log").exists() else ""
    assert run.returncode == 0, run.stdout + logs
    final = run.finals()[0]
    assert final.header("X-VVP-Status") == "VALID"
    assert "verified.carrier.example" in (final.header("Contact") or "")
