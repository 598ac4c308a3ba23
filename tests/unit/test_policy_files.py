"""The shipped policy files: every example in policy/ loads warning-free, passes its own
test file (policy/tests/), and policy/schema.json stays in step with the loader."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from vvp_helper.errors import PolicyError
from vvp_helper.policy import load as loader
from vvp_helper.policy.cases import run_test_file
from vvp_helper.policy.kamailio_push import htable_entries
from vvp_helper.policy.model import OUTCOMES

POLICY_DIR = Path(__file__).resolve().parents[2] / "policy"
TESTS_DIR = POLICY_DIR / "tests"
SCHEMA_PATH = POLICY_DIR / "schema.json"
POLICIES = sorted(POLICY_DIR.glob("*.yaml"))
TEST_FILES = sorted(TESTS_DIR.glob("*.test.yaml"))
#: The minimal format's policy as written: kept under tests/ because it carries one warning.
MINIMAL = TESTS_DIR / "minimal-format.yaml"
EXAMPLES = {"default", "fail-closed", "strict", "per-trunk", "sip-verify"}


def _ids(paths: list[Path]) -> list[str]:
    return [p.name for p in paths]


def test_the_examples_are_all_there() -> None:
    assert {p.stem for p in POLICIES} >= EXAMPLES
    assert MINIMAL.is_file()


# -- (a) every policy passes `check --strict` ---------------------------------------------


@pytest.mark.parametrize("path", POLICIES, ids=_ids(POLICIES))
def test_policy_loads_without_warnings(path: Path) -> None:
    loaded = loader.read_policy(path)  # raises PolicyError on any error
    assert [str(w) for w in loaded.warnings] == []


def test_minimal_format_policy_still_loads_with_only_its_known_warning() -> None:
    loaded = loader.read_policy(MINIMAL)
    assert [w.code for w in loaded.warnings] == ["reason-code-unused"]
    assert loaded.policy.action_for("indeterminate").kind == "redirect"


# -- (b) every policy passes its test file, which covers every outcome and rule -----------


@pytest.mark.parametrize("path", TEST_FILES, ids=_ids(TEST_FILES))
def test_policy_test_file_passes(path: Path) -> None:
    _, results = run_test_file(path)
    assert results, f"{path.name} has no cases"
    failures = {r.name: r.failures for r in results if not r.ok}
    assert failures == {}


def _test_file_data(path: Path) -> dict[str, Any]:
    data = yaml.safe_load(path.read_text(encoding="utf-8"))
    assert isinstance(data, dict)
    return data


def _tested_policies() -> dict[Path, Path]:
    """Policy file -> the test file that runs it."""
    return {
        (path.parent / str(_test_file_data(path)["policy"])).resolve(): path for path in TEST_FILES
    }


@pytest.mark.parametrize("path", [*POLICIES, MINIMAL], ids=_ids([*POLICIES, MINIMAL]))
def test_each_policy_has_a_test_file_covering_every_outcome_and_rule(path: Path) -> None:
    tested = _tested_policies()
    assert path.resolve() in tested, f"no policy/tests/*.test.yaml runs {path.name}"
    cases = _test_file_data(tested[path.resolve()])["cases"]
    outcomes = {case["call"]["outcome"] for case in cases}
    assert sorted(set(OUTCOMES) - outcomes) == []
    expected_rules = {case["expect"].get("rule") for case in cases}
    policy = loader.load_policy(path)
    untested = [r.name for r in policy.rules if r.action.section not in expected_rules]
    assert untested == []


def test_fail_closed_stays_closed_in_kamailios_fallback() -> None:
    # fail-closed.yaml promises the same 503 when the helper itself is down.
    entries = htable_entries(loader.load_policy(POLICY_DIR / "fail-closed.yaml"))
    assert entries["fb_code"] == "503"
    assert entries["fb_contact"] == ""
    assert "X-VVP-Error: EXT_HELPER_UNAVAILABLE\r\n" in entries["fb_headers"]
    assert "Reason: SIP ;cause=503 " in entries["fb_headers"]


# -- (c) the schema stays in step with the loader ------------------------------------------


@pytest.fixture(scope="module")
def schema() -> dict[str, Any]:
    data: dict[str, Any] = json.loads(SCHEMA_PATH.read_text(encoding="utf-8"))
    return data


@pytest.fixture(scope="module")
def validator(schema: dict[str, Any]) -> jsonschema.Draft202012Validator:
    jsonschema.Draft202012Validator.check_schema(schema)
    return jsonschema.Draft202012Validator(schema)


def test_schema_is_draft_2020_12(schema: dict[str, Any]) -> None:
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"


def test_schema_keys_match_the_loader(schema: dict[str, Any]) -> None:
    defs = schema["$defs"]
    assert set(schema["properties"]) == set(loader.TOP_KEYS)
    assert set(defs["action"]["properties"]) == set(loader.ACTION_KEYS)
    assert set(defs["rule"]["properties"]) == set(loader.RULE_KEYS)
    assert set(defs["match"]["properties"]) == set(loader.MATCH_KEYS)
    assert set(defs["sections"]["properties"]) == {f"on_{o}" for o in OUTCOMES}
    assert set(defs["sections"]["required"]) == set(loader.REQUIRED_SECTIONS)
    assert set(schema["required"]) == {"policies"}
    assert set(defs["rule"]["required"]) == {"match", "action"}


def test_schema_enums_match_the_loader(schema: dict[str, Any]) -> None:
    defs = schema["$defs"]
    assert set(defs["namedCode"]["enum"]) == set(loader.NAMED_CODES)
    outcome_item = defs["match"]["properties"]["outcome"]["anyOf"][0]
    assert outcome_item["enum"] == list(OUTCOMES)
    claim_item = defs["match"]["properties"]["claim"]["additionalProperties"]["anyOf"][0]
    assert set(claim_item["enum"]) == set(loader.CLAIM_STATUSES)
    assert set(defs["actionKind"]["enum"]) == {"redirect", "reject"}


def test_schema_rejects_unknown_keys_where_the_loader_does(schema: dict[str, Any]) -> None:
    defs = schema["$defs"]
    for where in (schema, defs["sections"], defs["action"], defs["rule"], defs["match"]):
        assert where["additionalProperties"] is False, where.get("description")


@pytest.mark.parametrize("path", [*POLICIES, MINIMAL], ids=_ids([*POLICIES, MINIMAL]))
def test_policy_validates_against_the_schema(
    path: Path, validator: jsonschema.Draft202012Validator
) -> None:
    document = yaml.safe_load(path.read_text(encoding="utf-8"))
    assert [e.message for e in validator.iter_errors(document)] == []


@pytest.mark.parametrize("header", sorted(loader.RESERVED_HEADERS))
def test_schema_refuses_the_headers_the_edge_sets(
    header: str, validator: jsonschema.Draft202012Validator
) -> None:
    for spelling in (header, header.upper(), header.title()):
        document = _document(on_invalid={"action": "reject", "headers": {spelling: "x"}})
        assert not validator.is_valid(document), spelling
        with pytest.raises(PolicyError) as caught:
            loader.parse_policy(yaml.safe_dump(document))
        assert [p.code for p in caught.value.errors] == ["reserved-header"]


def _document(**sections: Any) -> dict[str, Any]:
    redirect = {"action": "redirect", "destination_template": "sip:{dest}@x.carrier.example"}
    base: dict[str, Any] = {
        "on_valid": redirect,
        "on_invalid": {"action": "reject", "reason_code": "invalid-identity-header"},
        "on_indeterminate": redirect,
        "on_error": redirect,
    }
    base.update(sections)
    return {"policies": base}


def _with(document: dict[str, Any], **top: Any) -> dict[str, Any]:
    return {**document, **top}


_REDIRECT = {"action": "redirect", "destination_template": "sip:{dest}@x.carrier.example"}
_RULE = {"name": "r", "match": {"outcome": "error"}, "action": "reject", "reason_header": True}

#: Documents the loader refuses, with the problem code it must report.
INVALID_DOCUMENTS = {
    "unknown top-level key": (_with(_document(), polices={}), "unknown-key"),
    "unknown section": (_document(on_valdi=_REDIRECT), "unknown-section"),
    "missing section": (
        {"policies": {k: v for k, v in _document()["policies"].items() if k != "on_error"}},
        "missing-section",
    ),
    "unknown action key": (
        _document(on_valid={**_REDIRECT, "reason_cod": 302}),
        "unknown-key",
    ),
    "bad action": (_document(on_valid={"action": "forward"}), "bad-action"),
    "no action": (_document(on_valid={"headers": {"X-A": "b"}}), "missing-key"),
    "redirect without destination": (_document(on_valid={"action": "redirect"}), "missing-key"),
    "reject with a 3xx": (
        _document(on_invalid={"action": "reject", "reason_code": 302}),
        "bad-code",
    ),
    "misspelt code name": (
        _document(on_invalid={"action": "reject", "reason_code": "invalid-identity"}),
        "bad-code",
    ),
    "code out of range": (
        _document(on_invalid={"action": "reject", "reason_code": 700}),
        "bad-code",
    ),
    "reason_header as text": (
        _document(on_invalid={"action": "reject", "reason_header": "true"}),
        "not-a-boolean",
    ),
    "bad header name": (
        _document(on_invalid={"action": "reject", "headers": {"X VVP": "a"}}),
        "bad-header-name",
    ),
    "rule with unknown key": (_with(_document(), rules=[{**_RULE, "when": 1}]), "unknown-key"),
    "rule without match": (
        _with(_document(), rules=[{"name": "r", "action": "reject"}]),
        "missing-key",
    ),
    "rule with bad action": (_with(_document(), rules=[{**_RULE, "action": "drop"}]), "bad-action"),
    "unknown condition": (
        _with(_document(), rules=[{**_RULE, "match": {"calld_prefix": "44"}}]),
        "unknown-key",
    ),
    "unknown outcome": (
        _with(_document(), rules=[{**_RULE, "match": {"outcome": "invalidd"}}]),
        "unknown-outcome",
    ),
    "bad prefix": (
        _with(_document(), rules=[{**_RULE, "match": {"called_prefix": "+44-900"}}]),
        "bad-prefix",
    ),
    "bad claim status": (
        _with(_document(), rules=[{**_RULE, "match": {"claim": {"brand_verified": "FAILED"}}}]),
        "bad-claim-status",
    ),
    "rules not a list": (_with(_document(), rules={"r": _RULE}), "not-a-list"),
    "bad trunk address": (_with(_document(), trunks={"t": "192.0.2.300"}), "bad-address"),
}


@pytest.mark.parametrize(("document", "code"), INVALID_DOCUMENTS.values(), ids=INVALID_DOCUMENTS)
def test_invalid_documents_are_rejected_by_schema_and_loader(
    document: dict[str, Any], code: str, validator: jsonschema.Draft202012Validator
) -> None:
    assert not validator.is_valid(document)
    with pytest.raises(PolicyError) as caught:
        loader.parse_policy(yaml.safe_dump(document, sort_keys=False))
    assert code in [p.code for p in caught.value.errors]


def test_the_base_of_the_invalid_documents_is_valid_for_both(
    validator: jsonschema.Draft202012Validator,
) -> None:
    # Without this, "rejected by both" could be true of every document.
    document = _with(_document(), rules=[_RULE], trunks={"t": ["192.0.2.0/24", "2001:db8::/32"]})
    assert [e.message for e in validator.iter_errors(document)] == []
    loaded = loader.parse_policy(yaml.safe_dump(document, sort_keys=False))
    assert len(loaded.rules) == 1
