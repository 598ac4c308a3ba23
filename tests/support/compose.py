"""Finding a compose command that can run compose.yaml."""

from __future__ import annotations

import os
import re
import shutil
import subprocess

from tests.support.harness import REPO

#: compose.yaml needs compose 2.20 (its demo-profile `required: false`).
MIN_VERSION = (2, 20)


def find_compose() -> list[str] | None:
    """A compose v2 command line (``$VVP_COMPOSE``, the docker plugin, the one
    scripts/container-engine puts in .venv, a standalone docker-compose) of at least
    MIN_VERSION, or None."""
    candidates = [[os.environ["VVP_COMPOSE"]]] if os.environ.get("VVP_COMPOSE") else []
    candidates += [["docker", "compose"], [str(REPO / ".venv/bin/docker-compose")]]
    candidates += [["docker-compose"]]
    for argv in candidates:
        if shutil.which(argv[0]) is None:
            continue
        done = subprocess.run([*argv, "version", "--short"], capture_output=True, text=True)
        match = re.match(r"v?(\d+)\.(\d+)", done.stdout.strip())
        if done.returncode == 0 and match and (int(match[1]), int(match[2])) >= MIN_VERSION:
            return argv
    return None
