"""TLS to the verifier, for real: a certificate authority made at test time (trustme), the
simulator served over https with a certificate it issued, the helper's verifier client
(VVP_VERIFIER_CA_FILE, VVP_VERIFIER_CLIENT_CERT / _KEY) and a real forward proxy
(tinyproxy, started here on a free loopback port) for HTTPS_PROXY."""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from tests.support.harness import LocalPKI, free_port
from tests.support.verifier_requests import valid_request
from tests.support.waiting import wait_until
from vvp_helper.config import Settings
from vvp_helper.errors import VerifierTLSError, VerifierUnreachable
from vvp_helper.verifier.client import VerifierClient, proxy_from_env
from vvp_simulator.faults import Faults
from vvp_simulator.server import SimulatorSettings, start

ORIG = "+441923311001"
DEST = "+441923311006"


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> LocalPKI:
    return LocalPKI.create(tmp_path_factory.mktemp("pki"))


async def https_simulator(
    pki: LocalPKI, *, require_client_cert: bool = False
) -> tuple[object, str]:
    settings = SimulatorSettings(
        port=0,
        faults=Faults(),
        tls_cert=pki.server_cert,
        tls_key=pki.server_key,
        tls_client_ca=pki.ca if require_client_cert else None,
    )
    server, port = await start(settings)
    return server, f"https://127.0.0.1:{port}/verify"


@pytest.fixture
async def verify_url(pki: LocalPKI) -> AsyncIterator[str]:
    server, url = await https_simulator(pki)
    yield url
    await server.close()  # type: ignore[attr-defined]


@pytest.fixture
async def mtls_url(pki: LocalPKI) -> AsyncIterator[str]:
    server, url = await https_simulator(pki, require_client_cert=True)
    yield url
    await server.close()  # type: ignore[attr-defined]


async def test_a_verifier_whose_certificate_is_trusted_answers(
    pki: LocalPKI, verify_url: str
) -> None:
    client = VerifierClient(verify_url, timeout=5, ca_file=pki.ca)
    try:
        assert (await client.verify(valid_request("tls-1@edge"))).overall_status == "VALID"
    finally:
        await client.close()


async def test_an_untrusted_certificate_is_a_tls_error_that_says_why(
    verify_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    client = VerifierClient(verify_url, timeout=5)  # the system's CAs only
    try:
        with caplog.at_level(logging.ERROR, "vvp_helper.verifier.client"):
            with pytest.raises(VerifierTLSError) as caught:
                await client.verify(valid_request("tls-1@edge"))
            with pytest.raises(VerifierTLSError):  # said once, not once per call
                await client.verify(valid_request("tls-1@edge"))
    finally:
        await client.close()
    assert caught.value.code == "EXT_VERIFIER_TLS"
    assert isinstance(caught.value, VerifierUnreachable)  # the breaker counts it so
    assert "certificate verify failed" in str(caught.value)
    assert "unable to get local issuer certificate" in str(caught.value)
    logged = [r.getMessage() for r in caplog.records]
    assert len(logged) == 1
    assert verify_url in logged[0] and "certificate verify failed" in logged[0]


async def test_a_certificate_for_another_name_is_a_tls_error(tmp_path: Path) -> None:
    import trustme

    # A certificate from a trusted CA, but for another host than the one dialled.
    authority = trustme.CA()
    issued = authority.issue_cert("verifier.other.example")
    authority.cert_pem.write_to_path(str(tmp_path / "ca.pem"))
    issued.cert_chain_pems[0].write_to_path(str(tmp_path / "cert.pem"))
    issued.private_key_pem.write_to_path(str(tmp_path / "key.pem"))
    settings = SimulatorSettings(
        port=0, tls_cert=tmp_path / "cert.pem", tls_key=tmp_path / "key.pem"
    )
    server, port = await start(settings)
    client = VerifierClient(
        f"https://127.0.0.1:{port}/verify", timeout=5, ca_file=tmp_path / "ca.pem"
    )
    try:
        with pytest.raises(
            VerifierTLSError, match="certificate verify failed: IP address mismatch"
        ):
            await client.verify(valid_request("tls-1@edge"))
    finally:
        await client.close()
        await server.close()


async def test_mutual_tls_with_the_client_certificate_answers(pki: LocalPKI, mtls_url: str) -> None:
    client = VerifierClient(
        mtls_url, timeout=5, ca_file=pki.ca, client_cert=pki.client_cert, client_key=pki.client_key
    )
    try:
        assert (await client.verify(valid_request("tls-1@edge"))).overall_status == "VALID"
    finally:
        await client.close()


async def test_mutual_tls_without_a_client_certificate_is_a_tls_error(
    pki: LocalPKI, mtls_url: str
) -> None:
    client = VerifierClient(mtls_url, timeout=5, ca_file=pki.ca)
    try:
        # In TLS 1.3 the client's handshake ends before the server checks for a client
        # certificate; the server then aborts the connection, which the client sees as a
        # reset (or, if the alert arrives first, "certificate required"). Either way the
        # call gets no verdict, once: a fresh connection is not retried.
        with pytest.raises(VerifierUnreachable, match=r"certificate required|reset by peer"):
            await client.verify(valid_request("tls-1@edge"))
    finally:
        await client.close()


def test_settings_name_the_tls_files(pki: LocalPKI, tmp_path: Path) -> None:
    env = {
        "VVP_VERIFIER_URL": "https://verifier.example",
        "VVP_VERIFIER_CA_FILE": str(pki.ca),
        "VVP_VERIFIER_CLIENT_CERT": str(pki.client_cert),
        "VVP_VERIFIER_CLIENT_KEY": str(pki.client_key),
    }
    settings = Settings.from_env(env)
    client = VerifierClient.from_settings(settings)
    assert (settings.verifier_ca_file, settings.verifier_client_key) == (pki.ca, pki.client_key)
    assert client.endpoint == "https://verifier.example/verify"
    from vvp_helper.errors import ConfigError

    with pytest.raises(ConfigError, match="does not exist"):
        Settings.from_env({**env, "VVP_VERIFIER_CA_FILE": str(tmp_path / "missing.pem")})


# --- a real forward proxy


@pytest.fixture
def tinyproxy(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """tinyproxy on a free loopback port, with its own config; yields (URL, log file)."""
    binary = shutil.which("tinyproxy")
    if binary is None:
        pytest.fail("tinyproxy is not installed (scripts/bootstrap installs it)")
    port = free_port()
    log = tmp_path / "tinyproxy.log"
    config = tmp_path / "tinyproxy.conf"
    config.write_text(
        f"Port {port}\nListen 127.0.0.1\nAllow 127.0.0.1\nTimeout 30\nMaxClients 20\n"
        f'LogFile "{log}"\nLogLevel Connect\n'
        # No ConnectPort line: CONNECT to any port (the simulator's is a free one).
    )
    proc = subprocess.Popen([binary, "-d", "-c", str(config)], stdout=subprocess.DEVNULL,
                            stderr=subprocess.STDOUT)  # fmt: skip
    try:
        import socket

        def listening() -> bool:
            assert proc.poll() is None, "tinyproxy exited"
            with socket.socket() as probe:
                return probe.connect_ex(("127.0.0.1", port)) == 0

        wait_until(listening, 10, "tinyproxy did not listen")
        yield f"http://127.0.0.1:{port}", log
    finally:
        proc.terminate()
        proc.wait(timeout=10)


async def test_https_through_a_forward_proxy(
    pki: LocalPKI,
    verify_url: str,
    tinyproxy: tuple[str, Path],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    proxy_url, proxy_log = tinyproxy
    # The standard variables, as an operator sets them (no_proxy would exempt loopback).
    monkeypatch.setenv("HTTPS_PROXY", proxy_url)
    monkeypatch.delenv("NO_PROXY", raising=False)
    monkeypatch.delenv("no_proxy", raising=False)
    client = VerifierClient(verify_url, timeout=5, ca_file=pki.ca)
    assert client.proxy == proxy_url
    try:
        for _ in range(3):
            assert (await client.verify(valid_request("tls-1@edge"))).overall_status == "VALID"
    finally:
        await client.close()
    port = verify_url.split(":")[2].split("/")[0]
    # The proxy saw one CONNECT tunnel to the verifier, reused for the three calls.
    tunnels = [line for line in proxy_log.read_text().splitlines() if "CONNECT" in line]
    assert len([t for t in tunnels if f"127.0.0.1:{port}" in t]) == 1, tunnels


def test_no_proxy_exempts_a_verifier(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HTTPS_PROXY", "http://proxy.example:3128")
    monkeypatch.setenv("NO_PROXY", "localhost,.internal.example")
    assert proxy_from_env("https://verifier.carrier.example/verify") == "http://proxy.example:3128"
    assert proxy_from_env("https://vvp.internal.example/verify") is None
    assert proxy_from_env("http://verifier.carrier.example/verify") is None  # no HTTP_PROXY
    assert os.environ["HTTPS_PROXY"]
