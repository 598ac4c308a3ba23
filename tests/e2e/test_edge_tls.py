"""End to end over TLS: sipp -> Kamailio -> helper -> the simulator served over https with
a certificate from a CA made at test time. What a peer sees when the helper trusts the
verifier, when it does not, and with mutual TLS."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.harness import (
    Helper,
    Kamailio,
    LocalPKI,
    Simulator,
    SipMessage,
    run_sipp,
    running,
)
from tests.support.sipp_scenarios import invite_expecting
from vvp_simulator.passport import mint

pytestmark = pytest.mark.e2e

ORIG = "+441923311001"
DEST = "+441923311006"


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> LocalPKI:
    return LocalPKI.create(tmp_path_factory.mktemp("pki"))


def call_through(
    workdir: Path, simulator: Simulator, **helper_env: str
) -> Iterator[tuple[SipMessage, Helper]]:
    helper = Helper.create(workdir, simulator.url, VVP_VERIFIER_TIMEOUT="1.0",
                           VVP_HELPER_DEADLINE="1.5", **helper_env)  # fmt: skip
    kamailio = Kamailio.create(
        workdir, helper.decide_url, VVP_HELPER_TIMEOUT_MS="2000", VVP_FR_TIMEOUT_MS="3000"
    )
    with running(helper, kamailio):
        identity = [f"Identity: {mint('valid', ORIG, DEST).identity_header()}"]
        scenario = invite_expecting(workdir / "tls-invite.xml", 302, headers=identity)
        run = run_sipp(scenario, kamailio.port, workdir)
        assert run.returncode == 0, run.stdout
        finals = run.finals()
        assert len(finals) == 1, finals
        yield finals[0], helper


@pytest.fixture(scope="module")
def https_simulator(pki: LocalPKI, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Simulator]:
    simulator = Simulator.create(tmp_path_factory.mktemp("sim"), tls=pki)
    with running(simulator):
        yield simulator


def test_a_trusted_verifier_over_https_gives_valid(
    tmp_path: Path, pki: LocalPKI, https_simulator: Simulator
) -> None:
    for final, _ in call_through(tmp_path, https_simulator, VVP_VERIFIER_CA_FILE=str(pki.ca)):
        assert final.header("X-VVP-Status") == "VALID"
        assert final.header("Contact") == f"<sip:{DEST}@verified.carrier.example>"
    assert https_simulator.verify_requests() >= 1


def test_an_untrusted_verifier_certificate_is_error_tls_and_logged(
    tmp_path: Path, https_simulator: Simulator
) -> None:
    for final, helper in call_through(tmp_path, https_simulator):  # system CAs only
        assert final.header("X-VVP-Status") == "ERROR"
        assert final.header("X-VVP-Error") == "EXT_VERIFIER_TLS"
        assert final.header("X-VVP-Edge-Fallback") is None  # the policy answered
        assert "certificate verify failed" in helper.output()


def test_mutual_tls_with_the_helper_s_client_certificate_gives_valid(
    tmp_path: Path, pki: LocalPKI
) -> None:
    simulator = Simulator.create(tmp_path, tls=pki, require_client_cert=True)
    with running(simulator):
        env = {
            "VVP_VERIFIER_CA_FILE": str(pki.ca),
            "VVP_VERIFIER_CLIENT_CERT": str(pki.client_cert),
            "VVP_VERIFIER_CLIENT_KEY": str(pki.client_key),
        }
        for final, _ in call_through(tmp_path, simulator, **env):
            assert final.header("X-VVP-Status") == "VALID"
        for final, _ in call_through(tmp_path, simulator, VVP_VERIFIER_CA_FILE=str(pki.ca)):
            # Without its certificate the helper gets no verdict: the error policy answers.
            assert final.header("X-VVP-Status") == "ERROR"
            assert final.header("X-VVP-Error") in ("EXT_VERIFIER_UNREACHABLE", "EXT_VERIFIER_TLS")
