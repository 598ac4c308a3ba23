"""Scoped rules, trunks and the other extensions beyond the minimal format: one test per
validation rule (exact position and message), and how a described call is routed."""

from __future__ import annotations

from pathlib import Path

import pytest

from vvp_helper.errors import PolicyError
from vvp_helper.policy.cases import describe
from vvp_helper.policy.load import load_policy, read_policy

FIXTURES = Path(__file__).parent / "fixtures" / "scoped"


@pytest.mark.parametrize(
    ("fixture", "expected"),
    [
        ("unknown-trunk", "4:20: unknown-trunk: no trunk named 'carrier-b' (did you mean"),
        ("bad-address", "2:29: bad-address: '192.0.2.300' is not an IP address or CIDR"),
        ("unknown-outcome", "2:30: unknown-outcome: no outcome 'invalidd' (did you mean 'inv"),
        ("bad-prefix", "2:28: bad-prefix: '+44-900' is not a number prefix"),
        ("bad-claim-status", "2:37: bad-claim-status: claim status 'FAILED' is not one of"),
        ("unknown-condition", "2:13: unknown-key: unknown condition 'calld_prefix' (did you"),
        ("rules-not-a-list", "2:3: not-a-list: rules is a list, tried in order"),
        ("rule-without-match", "2:5: missing-key: rule 'no conditions' needs a 'match'"),
        ("bad-named-code", "4:18: bad-code: reason_code must be a SIP code 300-699 or a name"),
        ("reason-header-not-boolean", "4:20: not-a-boolean: reason_header is true or false"),
        ("reserved-header", "4:15: reserved-header: Via is set by the edge itself"),
    ],
)  # fmt: skip
def test_each_rule_violation_is_reported_at_its_position(fixture: str, expected: str) -> None:
    path = FIXTURES / f"{fixture}.bad.yaml"
    with pytest.raises(PolicyError) as caught:
        load_policy(path)
    errors = [str(p) for p in caught.value.errors]
    assert len(errors) == 1, errors
    assert errors[0].startswith(f"{path}:{expected}")


@pytest.mark.parametrize(
    ("fixture", "expected"),
    [
        ("matches-everything", "3:12: warning: matches-everything: rule 'catch all'"),
        ("silent-fail-closed", "6:5: warning: silent-fail-closed: calls are rejected"),
    ],
)
def test_warnings_load_but_are_reported(fixture: str, expected: str) -> None:
    path = FIXTURES / f"{fixture}.warn.yaml"
    loaded = read_policy(path)
    assert len(loaded.warnings) == 1
    assert str(loaded.warnings[0]).startswith(f"{path}:{expected}")


@pytest.fixture(scope="module")
def scoped() -> object:
    return load_policy(FIXTURES / "base.good.yaml")


def answer(policy: object, **call: object) -> tuple[int, str, str | None, dict[str, str]]:
    decision = describe(policy, {"orig": "+441923311001", "dest": "+441923311006", **call})  # type: ignore[arg-type]
    i = decision.instruction
    return i.code, i.rule, i.contact, dict(i.headers)


def test_trunk_rule_applies_to_its_source_addresses_only(scoped: object) -> None:
    code, rule, _, headers = answer(scoped, outcome="error", source="192.0.2.77")
    assert (code, rule) == (503, "rule carrier-a fails closed")
    assert headers["Reason"] == 'SIP ;cause=503 ;text="Service Unavailable"'
    assert headers["X-VVP-Status"] == "ERROR"
    # IPv6 member of the same trunk.
    assert answer(scoped, outcome="error", source="2001:db8::5")[0] == 503
    # Another trunk, or no trunk: the default section (fail-open).
    assert answer(scoped, outcome="error", source="198.51.100.7")[1] == "on_error"
    assert answer(scoped, outcome="error", source="10.1.1.1")[1] == "on_error"
    # The trunk's valid calls are not touched by its error rule.
    assert answer(scoped, outcome="valid", source="192.0.2.77")[1] == "on_valid"


def test_called_prefix_and_claim_must_both_hold(scoped: object) -> None:
    premium = {"dest": "+449001234567", "outcome": "valid"}
    failed_brand = answer(scoped, **premium, claims={"brand_verified": "INVALID"})
    assert failed_brand[:2] == (438, "rule premium numbers need a brand")
    assert answer(scoped, **premium, claims={"brand_verified": "VALID"})[1] == "on_valid"
    assert answer(scoped, outcome="valid", claims={"brand_verified": "INVALID"})[1] == "on_valid"


def test_error_code_rule(scoped: object) -> None:
    code, rule, contact, _ = answer(scoped, outcome="invalid", errors=["PASSPORT_EXPIRED"])
    assert (code, rule) == (302, "rule expired goes to the retry route")
    assert contact == "sip:+441923311006@retry.carrier.example"
    assert answer(scoped, outcome="invalid", errors=["PASSPORT_SIG_INVALID"])[0] == 403


def test_first_matching_rule_wins(scoped: object) -> None:
    # carrier-a + error + expired: the trunk rule comes first in the file.
    first = answer(scoped, outcome="error", source="192.0.2.1", errors=["PASSPORT_EXPIRED"])
    assert first[1] == "rule carrier-a fails closed"


def test_calling_prefix_and_source_cidr(scoped: object) -> None:
    us = answer(scoped, outcome="valid", orig="+15551234567", source="203.0.113.9")
    assert us[1] == "rule calls from +1 are checked by the US route"
    assert answer(scoped, outcome="valid", orig="+15551234567", source="192.0.2.9")[1] == "on_valid"


def test_verstat_and_brand_call_info(scoped: object) -> None:
    _, _, _, valid = answer(scoped, outcome="valid", brand_logo_url="https://logo.example/a.png")
    assert valid["P-Asserted-Identity"] == (
        "<sip:+441923311001@verified.carrier.example;verstat=TN-Validation-Passed>"
    )
    assert valid["Call-Info"] == "<https://logo.example/a.png>;purpose=icon"
    # No logo: the Call-Info header is left out, not sent as "<>;purpose=icon".
    assert "Call-Info" not in answer(scoped, outcome="valid")[3]
    # A logo that is not http(s) never reaches downstream.
    assert "Call-Info" not in answer(scoped, outcome="valid", brand_logo_url="javascript:x")[3]
