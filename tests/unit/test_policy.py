"""Unit tests for vvp_helper.policy.load: loading, validating and rendering policy files."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from vvp_helper.errors import PolicyError, PolicyProblem
from vvp_helper.policy.load import (
    TEMPLATE_VARIABLES,
    Instruction,
    Policy,
    load_policy,
    parse_policy,
    read_policy,
)

FIXTURES = Path(__file__).parent / "fixtures"
MINIMAL = FIXTURES / "minimal.good.yaml"
DEFAULT_POLICY = Path(__file__).resolve().parents[2] / "policy" / "default.yaml"

ORIG = "+441923311001"
DEST = "+441923311006"


def context(**overrides: object) -> dict[str, object]:
    """A full template context (every documented variable), as decision.py builds it."""
    base: dict[str, object] = {
        "orig": ORIG,
        "orig_tn": ORIG,
        "dest": DEST,
        "call_id": "a84b4c76e66710@pc33.example",
        "request_id": "req-123",
        "status": "VALID",
        "outcome": "valid",
        "verstat": "TN-Validation-Passed",
        "errors": [],
        "claims": [],
        "failed_claims": [],
        "reason": "",
        "reason_claim": "",
        "brand_name": None,
        "brand_logo_url": None,
        "brand_logo_hash": None,
        "revocation_pending": False,
        "signer_legal_name": None,
        "signer_lei": None,
        "toip_warnings": [],
        "delegation_depth": 0,
        "signer_aid": None,
        "certainty": None,
        "vetter_status": None,
        "vetter_warning_reason": None,
        "from_uri": f"sip:{ORIG}@caller.example",
        "to_uri": f"sip:{DEST}@callee.example",
        "from_name": "Alice",
        "source_ip": "192.0.2.10",
        "trunk": "",
        "rule": "",
    }
    assert set(base) == set(TEMPLATE_VARIABLES)
    base.update(overrides)
    return base


def errors_of(path: Path) -> list[PolicyProblem]:
    with pytest.raises(PolicyError) as caught:
        load_policy(path)
    return caught.value.errors


def problem(name: str, line: int, column: int, code: str, message: str) -> PolicyProblem:
    return PolicyProblem(str(FIXTURES / name), line, column, code, message)


# -- the minimal policy format (minimal.good.yaml keeps the original file verbatim) -----------


def test_minimal_policy_loads_without_errors() -> None:
    loaded = read_policy(MINIMAL)
    assert loaded.policy.source == str(MINIMAL)
    # The 503 next to "action: redirect" is legal; it is only flagged as unused.
    assert [p.code for p in loaded.warnings] == ["reason-code-unused"]
    assert all(p.severity == "warning" for p in loaded.warnings)


def test_minimal_valid_redirects_to_verified_route_with_status_and_pai() -> None:
    policy = load_policy(MINIMAL)
    instruction = policy.action_for("valid").render(context())
    assert instruction.code == 302
    assert instruction.contact == f"sip:{DEST}@verified.carrier.example.com"
    assert instruction.headers == (
        ("X-VVP-Status", "VALID"),
        ("P-Asserted-Identity", f"<sip:{ORIG}@verified.carrier.example.com>"),
    )


def test_minimal_invalid_rejects_403_with_its_phrase_and_first_error_code() -> None:
    policy = load_policy(MINIMAL)
    errors = [
        {"code": "PASSPORT_SIG_INVALID", "message": "bad signature"},
        {"code": "CONTEXT_MISMATCH", "message": "From does not match orig"},
    ]
    instruction = policy.action_for("invalid").render(context(status="INVALID", errors=errors))
    assert instruction.code == 403
    assert instruction.reason == "Forbidden - VVP Verification Failed"
    assert instruction.contact is None
    assert instruction.headers == (
        ("X-VVP-Status", "INVALID"),
        ("X-VVP-Error", "PASSPORT_SIG_INVALID"),
    )


def test_minimal_indeterminate_redirects_and_ignores_the_503_meant_for_reject() -> None:
    policy = load_policy(MINIMAL)
    instruction = policy.action_for("indeterminate").render(context(status="INDETERMINATE"))
    assert instruction.code == 302
    # The phrase belongs to the unused 503, not to a redirect.
    assert instruction.reason != "Service Unavailable - Verification Pending"
    assert instruction.contact == f"sip:{DEST}@unverified.carrier.example.com"
    assert instruction.headers == (("X-VVP-Status", "INDETERMINATE"),)


def test_minimal_error_redirects_to_fallback_route() -> None:
    policy = load_policy(MINIMAL)
    instruction = policy.action_for("error").render(context(status="ERROR"))
    assert instruction.code == 302
    assert instruction.contact == f"sip:{DEST}@fallback.carrier.example.com"
    assert instruction.headers == (("X-VVP-Status", "ERROR"),)


def test_minimal_without_on_warning_answers_warning_like_valid() -> None:
    policy = load_policy(MINIMAL)
    ctx = context(status="WARNING")
    assert policy.action_for("warning").render(ctx) == policy.action_for("valid").render(ctx)
    assert policy.action_for("warning").render(ctx).contact == (
        f"sip:{DEST}@verified.carrier.example.com"
    )


def test_minimal_without_on_missing_answers_missing_like_indeterminate() -> None:
    policy = load_policy(MINIMAL)
    ctx = context(status="MISSING")
    missing = policy.action_for("missing").render(ctx)
    assert missing == policy.action_for("indeterminate").render(ctx)
    assert missing.contact == f"sip:{DEST}@unverified.carrier.example.com"


# -- the shipped default policy ------------------------------------------------------------


def test_default_policy_loads_without_errors_or_warnings() -> None:
    loaded = read_policy(DEFAULT_POLICY)
    assert loaded.warnings == ()
    assert set(loaded.policy.actions) == {
        "valid",
        "warning",
        "invalid",
        "indeterminate",
        "error",
        "missing",
    }


def test_default_valid_redirects_verified_with_brand_and_request_id() -> None:
    policy = load_policy(DEFAULT_POLICY)
    instruction = policy.action_for("valid").render(context(brand_name="Acme Bank"))
    assert instruction.code == 302
    assert instruction.contact == f"sip:{DEST}@verified.carrier.example"
    assert instruction.headers == (
        ("X-VVP-Status", "VALID"),
        ("P-Asserted-Identity", f"<sip:{ORIG}@verified.carrier.example>"),
        ("X-VVP-Brand-Name", "Acme Bank"),
        ("X-VVP-Request-Id", "req-123"),
    )


def test_default_warning_has_its_own_section_with_the_warning_reason() -> None:
    policy = load_policy(DEFAULT_POLICY)
    instruction = policy.action_for("warning").render(
        context(
            status="WARNING",
            vetter_warning_reason="jurisdiction not covered",
            brand_name="Acme Bank",
        )
    )
    assert instruction.code == 302
    assert instruction.contact == f"sip:{DEST}@verified.carrier.example"
    # A WARNING keeps the caller's verified number and brand.
    assert instruction.headers == (
        ("X-VVP-Status", "WARNING"),
        ("X-VVP-Warning-Reason", "jurisdiction not covered"),
        ("P-Asserted-Identity", f"<sip:{ORIG}@verified.carrier.example>"),
        ("X-VVP-Brand-Name", "Acme Bank"),
        ("X-VVP-Request-Id", "req-123"),
    )


def test_default_invalid_rejects_403_with_error_code() -> None:
    policy = load_policy(DEFAULT_POLICY)
    errors = [{"code": "PASSPORT_EXPIRED", "message": "expired"}]
    instruction = policy.action_for("invalid").render(context(status="INVALID", errors=errors))
    assert (instruction.code, instruction.reason) == (403, "Forbidden - VVP Verification Failed")
    assert instruction.contact is None
    assert instruction.headers == (("X-VVP-Status", "INVALID"), ("X-VVP-Error", "PASSPORT_EXPIRED"))


def test_default_indeterminate_fails_open_to_unverified_route() -> None:
    policy = load_policy(DEFAULT_POLICY)
    errors = [{"code": "DOSSIER_FETCH_FAILED", "message": "timeout"}]
    instruction = policy.action_for("indeterminate").render(
        context(status="INDETERMINATE", errors=errors)
    )
    assert instruction.code == 302
    assert instruction.contact == f"sip:{DEST}@unverified.carrier.example"
    assert instruction.headers == (
        ("X-VVP-Status", "INDETERMINATE"),
        ("X-VVP-Error", "DOSSIER_FETCH_FAILED"),
    )


def test_default_error_fails_open_to_fallback_route_with_reason() -> None:
    policy = load_policy(DEFAULT_POLICY)
    errors = [{"code": "EXT_VERIFIER_TIMEOUT", "message": "slow"}]
    instruction = policy.action_for("error").render(context(status="ERROR", errors=errors))
    assert instruction.code == 302
    assert instruction.contact == f"sip:{DEST}@fallback.carrier.example"
    assert instruction.headers == (
        ("X-VVP-Status", "ERROR"),
        ("X-VVP-Error", "EXT_VERIFIER_TIMEOUT"),
    )


def test_default_missing_uses_its_own_section() -> None:
    policy = load_policy(DEFAULT_POLICY)
    instruction = policy.action_for("missing").render(context(status="MISSING"))
    assert instruction.code == 302
    assert instruction.contact == f"sip:{DEST}@unverified.carrier.example"
    assert instruction.headers == (("X-VVP-Status", "MISSING"),)


# -- rendering rules -----------------------------------------------------------------------


def test_header_whose_template_renders_empty_is_omitted() -> None:
    policy = load_policy(MINIMAL)
    instruction = policy.action_for("invalid").render(context(status="INVALID", errors=[]))
    assert instruction.headers == (("X-VVP-Status", "INVALID"),)
    assert "X-VVP-Error" not in instruction.header_block()


def test_default_valid_omits_brand_header_when_there_is_no_brand() -> None:
    policy = load_policy(DEFAULT_POLICY)
    instruction = policy.action_for("valid").render(context(brand_name=None))
    names = [name for name, _ in instruction.headers]
    assert "X-VVP-Brand-Name" not in names
    assert "X-VVP-Status" in names


INJECTION_POLICY = """\
policies:
  on_valid:
    action: redirect
    destination_template: "sip:{orig}@{from_name}.example"
    headers:
      X-VVP-Status: "VALID"
      P-Asserted-Identity: "<sip:{orig}@verified.example>"
      X-Caller-Name: "{from_name}"
  on_invalid: {action: reject}
  on_indeterminate: {action: reject}
  on_error: {action: reject, headers: {X-VVP-Status: ERROR}}
"""

INJECTIONS = [
    "\r\nX-Injected: 1",
    "+1555\r\nX-Injected: 1",
    "evil\nX-Injected: 1\r\n\r\nINVITE sip:x@y SIP/2.0",
    'a"b<c>d e\tf',
    "\rX-Injected: 1\x00\x0b\x0c\x85\u2028\u2029",
]


@pytest.mark.parametrize("payload", INJECTIONS)
def test_caller_data_cannot_inject_header_lines_or_break_the_contact(payload: str) -> None:
    policy = parse_policy(INJECTION_POLICY)
    instruction = policy.action_for("valid").render(context(orig=payload, from_name=payload))
    for name, value in instruction.headers:
        assert "\r" not in value and "\n" not in value, (name, value)
    block = instruction.header_block()
    # Exactly one line per header: nothing a caller sent added a line.
    assert block.count("\r\n") == len(instruction.headers) == 3
    assert "\nX-Injected" not in block
    assert instruction.contact is not None
    assert not set(instruction.contact) & set('<>"')
    assert not any(ch.isspace() for ch in instruction.contact)


def test_unicode_whitespace_from_caller_data_does_not_reach_the_contact() -> None:
    policy = parse_policy(INJECTION_POLICY)
    payload = "Evil\u00a0Co\u3000X"
    instruction = policy.action_for("valid").render(context(orig=payload, from_name=payload))
    assert instruction.contact is not None
    assert not any(ch.isspace() for ch in instruction.contact)


# -- validation: one bad file per rule, each problem at its exact position ------------------


def test_unknown_key_is_reported_with_did_you_mean() -> None:
    name = "unknown-key.bad.yaml"
    problems = errors_of(FIXTURES / name)
    assert problems == [
        problem(name, 3, 5, "missing-key", "on_valid: a redirect needs a destination_template"),
        problem(
            name,
            4,
            5,
            "unknown-key",
            "unknown key 'destinaton_template' (did you mean 'destination_template'?)",
        ),
    ]
    assert str(problems[1]) == (
        f"{FIXTURES / name}:4:5: unknown-key: unknown key 'destinaton_template' "
        "(did you mean 'destination_template'?)"
    )


def test_unknown_section_is_reported_with_did_you_mean() -> None:
    name = "unknown-section.bad.yaml"
    problems = errors_of(FIXTURES / name)
    assert problems == [
        problem(
            name, 13, 3, "unknown-section", "unknown section 'on_vaild' (did you mean 'on_valid'?)"
        )
    ]
    assert str(problems[0]).startswith(f"{FIXTURES / name}:13:3: unknown-section: ")


def test_missing_required_section_is_reported() -> None:
    name = "missing-section.bad.yaml"
    assert errors_of(FIXTURES / name) == [
        problem(name, 2, 3, "missing-section", "section 'on_error' is required")
    ]


def test_action_other_than_redirect_or_reject_is_reported_at_its_value() -> None:
    name = "bad-action.bad.yaml"
    problems = errors_of(FIXTURES / name)
    assert problems == [
        problem(name, 6, 13, "bad-action", "action must be redirect or reject, not 'forward'")
    ]
    assert str(problems[0]) == (
        f"{FIXTURES / name}:6:13: bad-action: action must be redirect or reject, not 'forward'"
    )


def test_redirect_without_destination_template_is_reported() -> None:
    name = "redirect-without-destination.bad.yaml"
    assert errors_of(FIXTURES / name) == [
        problem(
            name,
            8,
            5,
            "missing-key",
            "on_indeterminate: a redirect needs a destination_template",
        )
    ]


def test_reject_with_a_3xx_reason_code_is_reported() -> None:
    name = "reject-with-3xx-code.bad.yaml"
    assert errors_of(FIXTURES / name) == [
        problem(name, 7, 18, "bad-code", "a reject needs a 4xx-6xx code, not 302")
    ]


def test_reason_code_out_of_range_is_reported() -> None:
    name = "reason-code-out-of-range.bad.yaml"
    problems = errors_of(FIXTURES / name)
    assert [(p.line, p.column, p.code) for p in problems] == [(7, 18, "bad-code")]
    assert "300-699" in problems[0].message and "'999'" in problems[0].message


def test_reason_code_that_is_not_an_integer_is_reported() -> None:
    name = "reason-code-not-int.bad.yaml"
    problems = errors_of(FIXTURES / name)
    assert [(p.line, p.column, p.code) for p in problems] == [(7, 18, "bad-code")]
    assert "'403.5'" in problems[0].message


def test_header_name_that_is_not_a_sip_token_is_reported() -> None:
    name = "bad-header-name.bad.yaml"
    assert errors_of(FIXTURES / name) == [
        problem(name, 7, 7, "bad-header-name", "'X Bad' is not a SIP header name")
    ]


def test_header_the_edge_sets_itself_is_reserved() -> None:
    name = "reserved-header.bad.yaml"
    assert errors_of(FIXTURES / name) == [
        problem(
            name,
            6,
            7,
            "reserved-header",
            "Contact is set by the edge itself and cannot be added by a policy",
        )
    ]


def test_unknown_template_variable_points_at_the_variable_inside_the_quotes() -> None:
    name = "unknown-variable.bad.yaml"
    problems = errors_of(FIXTURES / name)
    assert problems == [
        problem(name, 6, 35, "bad-template", "unknown variable 'origin'; did you mean 'orig'?")
    ]
    # The reported column is where the variable name starts in the file.
    line = (FIXTURES / name).read_text(encoding="utf-8").splitlines()[problems[0].line - 1]
    assert line[problems[0].column - 1 :].startswith("origin}")


def test_yaml_syntax_error_is_reported_with_its_position() -> None:
    name = "yaml-syntax.bad.yaml"
    problems = errors_of(FIXTURES / name)
    assert problems == [problem(name, 6, 19, "yaml-syntax", "mapping values are not allowed here")]
    assert str(problems[0]) == (
        f"{FIXTURES / name}:6:19: yaml-syntax: mapping values are not allowed here"
    )


def test_duplicate_key_is_reported_at_its_second_occurrence() -> None:
    name = "duplicate-key.bad.yaml"
    assert errors_of(FIXTURES / name) == [
        problem(name, 8, 5, "duplicate-key", "'action' is given twice")
    ]


def test_several_errors_are_all_reported_sorted_by_position() -> None:
    name = "several-errors.bad.yaml"
    with pytest.raises(PolicyError) as caught:
        load_policy(FIXTURES / name)
    problems = caught.value.errors
    assert [(p.line, p.column, p.code) for p in problems] == [
        (3, 13, "bad-action"),
        (6, 18, "bad-code"),
        (14, 7, "reserved-header"),
        (15, 1, "unknown-key"),
    ]
    # The exception text is one "file:line:col: code: message" line per problem, in order.
    assert str(caught.value).splitlines() == [str(p) for p in caught.value.problems]
    assert str(caught.value).splitlines()[0].startswith(f"{FIXTURES / name}:3:13: bad-action: ")


def test_unreadable_policy_file_is_a_policy_error(tmp_path: Path) -> None:
    missing = tmp_path / "nope.yaml"
    problems = errors_of(missing)
    assert [(p.file, p.code) for p in problems] == [(str(missing), "unreadable")]


def test_every_good_fixture_loads_and_every_bad_fixture_fails() -> None:
    good = sorted(FIXTURES.glob("*.good.yaml"))
    bad = sorted(FIXTURES.glob("*.bad.yaml"))
    assert good and len(bad) >= 14
    for path in good:
        assert isinstance(load_policy(path), Policy)
    for path in bad:
        with pytest.raises(PolicyError) as caught:
            load_policy(path)
        assert caught.value.errors, path


# -- identity of a policy, and the block Kamailio appends -----------------------------------


def test_sha256_is_the_digest_of_the_file_and_changes_with_its_text() -> None:
    text = MINIMAL.read_text(encoding="utf-8")
    policy = load_policy(MINIMAL)
    assert policy.sha256 == hashlib.sha256(text.encode("utf-8")).hexdigest()
    assert parse_policy(text).sha256 == policy.sha256
    edited = text.replace("verified.carrier.example.com", "verified2.carrier.example.com", 1)
    assert parse_policy(edited).sha256 != policy.sha256
    # Even a comment-only change is a different policy text, hence a different digest.
    assert parse_policy(text + "# reviewed\n").sha256 != policy.sha256


def test_header_block_is_crlf_terminated_lines() -> None:
    policy = load_policy(MINIMAL)
    instruction = policy.action_for("valid").render(context())
    assert instruction.header_block() == (
        f"X-VVP-Status: VALID\r\nP-Asserted-Identity: <sip:{ORIG}@verified.carrier.example.com>\r\n"
    )


def test_header_block_of_an_instruction_without_headers_is_empty() -> None:
    assert Instruction(403, "Forbidden", None, ()).header_block() == ""
