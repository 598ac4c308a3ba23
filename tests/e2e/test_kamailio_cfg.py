"""kamailio.cfg parses with every feature flag and setting we ship (kamailio -c)."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from tests.support.harness import KAMAILIO_CFG, kamailio_binary

pytestmark = pytest.mark.e2e


def check(
    tmp_path: Path, *defines: str, cfg: Path = KAMAILIO_CFG, **env: str
) -> subprocess.CompletedProcess[str]:
    argv = [kamailio_binary(), "-c", "-f", str(cfg)]
    for define in defines:
        argv += ["-A", define]
    settings = {
        "VVP_CTL_SOCKET": f"unix:{tmp_path}/ctl",
        "VVP_RPC_SOCKET": f"{tmp_path}/rpc.sock",
        **env,
    }
    return subprocess.run(
        argv, capture_output=True, text=True, env={**os.environ, **settings}, timeout=30
    )


@pytest.mark.parametrize(
    "defines",
    [(), ("WITH_DEBUG",), ("WITH_STATIC_302",), ("WITH_DEBUG", "WITH_STATIC_302")],
    ids=["default", "debug", "static-302", "debug-static-302"],
)
def test_config_is_valid_with_each_flag(tmp_path: Path, defines: tuple[str, ...]) -> None:
    result = check(tmp_path, *defines)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "config file ok" in result.stderr + result.stdout


@pytest.mark.parametrize(
    "env",
    [
        {"VVP_HELPER_URL2": "http://127.0.0.1:8481/v1/decide"},
        {"VVP_HELPER_SECRET": "s3cret"},
        {"VVP_FLOOD_LIMIT": "0", "VVP_MAX_MESSAGE_BYTES": "4096"},
        {"VVP_FALLBACK_CODE": "503", "VVP_FALLBACK_REASON": "Unavailable"},
    ],
    ids=["second-helper", "secret", "no-flood-limit", "fail-closed-fallback"],
)
def test_config_is_valid_with_each_optional_setting(tmp_path: Path, env: dict[str, str]) -> None:
    result = check(tmp_path, **env)
    assert result.returncode == 0, result.stderr[-2000:]


def test_listen_address_and_port_come_from_the_environment(tmp_path: Path) -> None:
    result = check(tmp_path, VVP_SIP_ADDR="127.0.0.2", VVP_SIP_PORT="5099")
    assert result.returncode == 0, result.stderr[-2000:]
    out = result.stdout + result.stderr
    assert "udp: 127.0.0.2 [127.0.0.2]:5099" in out
    assert "tcp: 127.0.0.2 [127.0.0.2]:5099" in out


def test_a_broken_setting_is_refused(tmp_path: Path) -> None:
    result = check(tmp_path, VVP_SIP_PORT="not-a-port")
    assert result.returncode != 0


def test_a_site_override_in_local_cfg_takes_effect(tmp_path: Path) -> None:
    # local.cfg beside kamailio.cfg is read first: its #!define wins over the default.
    site = tmp_path / "site"
    site.mkdir()
    cfg = site / "kamailio.cfg"
    cfg.write_text(KAMAILIO_CFG.read_text(encoding="utf-8"), encoding="utf-8")
    (site / "local.cfg").write_text("#!define VVP_SIP_PORT 5099\n", encoding="utf-8")
    result = check(tmp_path, cfg=cfg)
    assert result.returncode == 0, result.stderr[-2000:]
    out = result.stdout + result.stderr
    assert "udp: 127.0.0.1 [127.0.0.1]:5099" in out
    assert ":5060" not in out
    # The same setting also in the environment is a conflict Kamailio refuses to start
    # with, rather than one of them silently losing.
    assert check(tmp_path, cfg=cfg, VVP_SIP_PORT="5098").returncode != 0
