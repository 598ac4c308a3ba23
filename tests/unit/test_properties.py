"""Property tests missing from test_identity / test_template / test_sipfields.

policy.parse_policy on arbitrary YAML-ish text raises PolicyError and nothing else, and
the remaining sipfields helpers never raise on caller-controlled text.
"""

from __future__ import annotations

import contextlib
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from vvp_helper.errors import IdentityDecodeError, PolicyError
from vvp_helper.policy.load import parse_policy
from vvp_helper.sip import fields as sipfields

DEFAULT_POLICY = (Path(__file__).resolve().parents[2] / "policy" / "default.yaml").read_text()

# Pieces of real policy files plus YAML punctuation, so generated text gets past the YAML
# parser often enough to reach the policy validation itself.
YAML_PIECES = st.sampled_from(
    [
        "policies:", "on_valid:", "on_invalid:", "on_missing:", "on_error:", "on_warning:",
        "on_indeterminate:", "rules:", "trunks:", "action:", "redirect", "reject",
        "destination_template:", "reason_code:", "reason_phrase:", "headers:", "X-A:",
        "Reason:", "match:", "outcome:", "source:", "\"{dest}\"", "\"{errors[0].code}\"",
        "'{brand_name", "sip:{dest}@x", "403", "302", "-1", "1e9", "null", "~", "true",
        "[", "]", "{", "}", "- ", ": ", "&a", "*a", "!!python/object:os.system", "!!binary",
        "%YAML 1.2", "---", "...", "#", "\t", "  ", "    ", "\n", "\r\n", "\x00", "\ufeff",
        "é", "<<: *a",
    ]
)  # fmt: skip
YAMLISH = st.lists(YAML_PIECES, max_size=40).map("".join)


def _assert_only_policy_error(text: str) -> None:
    try:
        parse_policy(text)
    except PolicyError as exc:
        assert exc.problems, "a PolicyError always says what is wrong"


@given(st.text(max_size=400))
def test_parse_policy_raises_only_policy_error_on_text(text: str) -> None:
    _assert_only_policy_error(text)


@settings(max_examples=300)
@given(YAMLISH)
def test_parse_policy_raises_only_policy_error_on_yamlish_text(text: str) -> None:
    _assert_only_policy_error(text)


@given(st.integers(0, len(DEFAULT_POLICY)), st.integers(0, 200), st.text(max_size=20))
def test_parse_policy_raises_only_policy_error_on_a_damaged_real_policy(
    at: int, cut: int, insert: str
) -> None:
    _assert_only_policy_error(DEFAULT_POLICY[:at] + insert + DEFAULT_POLICY[at + cut :])


def test_the_undamaged_default_policy_loads() -> None:
    assert parse_policy(DEFAULT_POLICY) is not None


@given(st.lists(st.text(max_size=80), max_size=6))
def test_split_header_values_never_raises(values: list[str]) -> None:
    for value in sipfields.split_header_values(values):
        assert isinstance(value, str)


@given(st.text(max_size=40), st.text(max_size=40))
def test_same_number_never_raises(a: str, b: str) -> None:
    assert isinstance(sipfields.same_number(a, b), bool)


@given(st.text(max_size=300))
def test_parse_identity_header_with_vvp_params_raises_only_decode_error(token: str) -> None:
    with contextlib.suppress(IdentityDecodeError):
        sipfields.parse_identity_header(
            f"{token};info=<https://w.example/oobi/E/controller>;ppt=vvp"
        )
