"""End to end with the shipped default policy: what the callee's side sees of a verified
call. sipp -> real Kamailio -> helper (policy/default.yaml) -> simulator.

The verifier's brand_logo_hash is covered by tests/unit/test_verdict_facts.py with
recorded real answers (the real issuer writes no logo hash); here the simulator's own
answers and its faults are used.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.support.edge import Edge
from tests.support.harness import DEFAULT_POLICY, Simulator, SipMessage
from vvp_simulator.passport import MintedIdentity, mint

pytestmark = pytest.mark.e2e

ORIG = "+441923311001"
DEST = "+441923311006"
LOGO = "https://brand.demo.example/acme.png"


@pytest.fixture(scope="module")
def edge_policy() -> Path:
    return DEFAULT_POLICY


def answer(edge: Edge, code: int, minted: MintedIdentity, *, from_user: str = ORIG) -> SipMessage:
    """The one final answer to an INVITE carrying ``minted``, expected to be ``code``."""
    run = edge.call(code, [f"Identity: {minted.identity_header()}"], from_user=from_user)
    assert run.returncode == 0, run.stdout
    finals = run.finals()
    assert len(finals) == 1, f"expected exactly one final answer, got {finals}"
    return finals[0]


def test_pai_asserts_the_signed_number_with_plus_when_from_has_none(
    edge: Edge, sim: Simulator
) -> None:
    final = answer(edge, 302, mint("brand", ORIG, DEST), from_user=ORIG.removeprefix("+"))
    assert final.header("X-VVP-Status") == "VALID"
    assert final.header("P-Asserted-Identity") == f"<sip:{ORIG}@verified.carrier.example>"


def test_the_brand_logo_goes_downstream_as_call_info(edge: Edge, sim: Simulator) -> None:
    final = answer(edge, 302, mint("brand", ORIG, DEST))
    assert final.header("X-VVP-Brand-Name") == "Acme Bank"
    assert final.header("Call-Info") == f"<{LOGO}>;purpose=icon"


def test_a_warning_keeps_the_identity_and_the_brand(edge: Edge, sim: Simulator) -> None:
    sim.set_faults(force_status="WARNING")
    final = answer(edge, 302, mint("brand", ORIG, DEST))
    assert final.header("Contact") == f"<sip:{DEST}@verified.carrier.example>"
    assert final.header("X-VVP-Status") == "WARNING"
    assert final.header("X-VVP-Warning-Reason") == "vetter_not_authorised_for_jurisdiction"
    assert final.header("P-Asserted-Identity") == f"<sip:{ORIG}@verified.carrier.example>"
    assert final.header("X-VVP-Brand-Name") == "Acme Bank"
    assert final.header("Call-Info") == f"<{LOGO}>;purpose=icon"


def test_an_indeterminate_answer_says_why_and_asserts_nothing(edge: Edge, sim: Simulator) -> None:
    final = answer(edge, 302, mint("indeterminate", ORIG, DEST))
    assert final.header("Contact") == f"<sip:{DEST}@unverified.carrier.example>"
    assert final.header("X-VVP-Status") == "INDETERMINATE"
    assert final.header("X-VVP-Reason") == "Cannot validate chain: dossier validation failed"
    assert final.header("P-Asserted-Identity") is None


def test_stale_revocation_data_says_why_although_the_verifier_gives_no_error(
    edge: Edge, sim: Simulator
) -> None:
    # The real verifier's INDETERMINATE with errors null: the reason is only in the claim
    # tree (revocation_clear), and it must still reach the callee's side.
    sim.set_faults(stale_revocation_every_s=0.001)
    answer(edge, 302, mint("valid", ORIG, DEST))  # the dossier is in the verifier's cache now
    second = answer(edge, 302, mint("valid", ORIG, DEST))
    assert second.header("X-VVP-Status") == "INDETERMINATE"
    assert second.header("X-VVP-Reason") == (
        "Revocation data stale \u2014 background re-check pending"
    )
    assert second.header("X-VVP-Error") is None
    assert second.header("P-Asserted-Identity") is None


def test_a_forged_identity_is_refused_with_its_reason(edge: Edge, sim: Simulator) -> None:
    final = answer(edge, 403, mint("forged", ORIG, DEST))
    assert final.header("X-VVP-Error") == "PASSPORT_SIG_INVALID"
    assert final.header("X-VVP-Reason")
    assert final.header("P-Asserted-Identity") is None
    assert final.header("Call-Info") is None
