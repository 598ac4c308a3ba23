"""Unit tests for vvp_helper.decision: Kamailio's request -> outcome -> instruction."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any, cast

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.support.decisions import DEFAULT_POLICY, DEST, ORIG, call, decider, kamailio_body
from vvp_helper.decision import (
    CALLER_FIELDS,
    MAX_FIELD_LEN,
    MAX_HEADER_FIELDS,
    REFUSAL_CAUSES,
    BadCallRequest,
    CallRequest,
    display_name,
    template_context,
    uri_user,
)
from vvp_helper.metrics import Metrics
from vvp_helper.policy.load import TEMPLATE_VARIABLES, Policy, load_policy, parse_policy
from vvp_helper.verifier.client import Verdict
from vvp_simulator.passport import mint

MINIMAL = Path(__file__).parent / "fixtures" / "minimal.good.yaml"


@pytest.fixture
def policy() -> Policy:
    return load_policy(DEFAULT_POLICY)


# -- CallRequest.from_json -----------------------------------------------------------------


def test_from_json_accepts_kamailios_shape() -> None:
    minted = mint("valid", ORIG, DEST)
    body = kamailio_body(
        identity=[minted.identity_header()],
        p_vvp_identity=[minted.vvp_identity],
        p_vvp_passport=[minted.passport_jwt],
    )
    request = CallRequest.from_json(body)
    assert request.method == "INVITE"
    assert request.request_uri == f"sip:{DEST}@edge.example"
    assert request.from_uri == f"sip:{ORIG}@caller.example"
    assert request.to_uri == f"sip:{DEST}@edge.example"
    assert request.call_id == "a84b4c76e66710@pc33.example"
    assert request.cseq == 314159
    assert request.source_ip == "192.0.2.10"
    assert request.source_port == 5060
    assert request.transport == "udp"
    assert request.received_at == 1_700_000_000.123456
    assert request.from_name == "Acme Bank"
    assert request.identity == (minted.identity_header(),)
    assert request.p_vvp_identity == (minted.vvp_identity,)
    assert request.p_vvp_passport == (minted.passport_jwt,)


def test_from_json_without_optional_fields_uses_defaults() -> None:
    body = {"call_id": "c1", "from_uri": "sip:a@h", "to_uri": "sip:b@h", "received_at": 1}
    request = CallRequest.from_json(body)
    assert request.method == "INVITE"
    assert request.received_at == 1.0
    assert request.cseq is None
    assert request.from_name == ""
    assert (request.identity, request.p_vvp_identity, request.p_vvp_passport) == ((), (), ())


@pytest.mark.parametrize("data", [[], "INVITE", None, 42])
def test_from_json_refuses_a_non_object(data: object) -> None:
    with pytest.raises(BadCallRequest, match="JSON object"):
        CallRequest.from_json(data)


@pytest.mark.parametrize("key", ["call_id", "from_uri", "to_uri"])
def test_from_json_refuses_a_missing_required_field(key: str) -> None:
    body = kamailio_body()
    del body[key]
    with pytest.raises(BadCallRequest, match=key):
        CallRequest.from_json(body)


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("call_id", 12345),
        ("from_uri", ["sip:a@h"]),
        ("method", 1),
        ("cseq", "314159"),
        ("cseq", True),
        ("source_port", "5060"),
        ("source_port", 5060.0),
        ("received_at", "yesterday"),
        ("received_at", True),
        ("received_at", None),
        ("identity", ["ok", 7]),
    ],
)
def test_from_json_refuses_wrong_types(key: str, value: object) -> None:
    with pytest.raises(BadCallRequest, match=key):
        CallRequest.from_json(kamailio_body(**{key: value}))


@pytest.mark.parametrize("key", ["identity", "p_vvp_identity", "p_vvp_passport"])
@pytest.mark.parametrize("value", [42, {"a": "b"}, ["ok", 7], True])
def test_from_json_refuses_header_fields_that_are_not_strings(key: str, value: object) -> None:
    with pytest.raises(BadCallRequest, match=key):
        CallRequest.from_json(kamailio_body(**{key: value}))


@pytest.mark.parametrize("key", ["identity", "p_vvp_identity", "p_vvp_passport"])
def test_a_lone_header_may_come_as_a_string(key: str) -> None:
    # Kamailio sends the common single header as a string (one JSON pass), several as a list.
    lone = CallRequest.from_json(kamailio_body(**{key: "eyJhbGciOiJFZERTQSJ9.e30.sig"}))
    listed = CallRequest.from_json(kamailio_body(**{key: ["eyJhbGciOiJFZERTQSJ9.e30.sig"]}))
    assert getattr(lone, key) == getattr(listed, key) == ("eyJhbGciOiJFZERTQSJ9.e30.sig",)


def test_too_many_identity_fields_are_marked_not_refused() -> None:
    # Refusing (HTTP 400) would hand the call to Kamailio's fail-open fallback: a caller
    # could pad an invalid identity into an "error" answer. The decision rejects it.
    assert not CallRequest.from_json(
        kamailio_body(identity=["x"] * MAX_HEADER_FIELDS)
    ).oversized_identity
    padded = CallRequest.from_json(kamailio_body(identity=["x"] * (MAX_HEADER_FIELDS + 1)))
    assert padded.oversized_identity == ("identity",)
    assert padded.identity == ()


@pytest.mark.parametrize("key", CALLER_FIELDS)
def test_an_oversize_caller_field_is_marked_not_refused(key: str) -> None:
    # Legal SIP within the 16 KiB message limit: a 400 here would hand the call to
    # Kamailio's fail-open fallback, so the decision answers it "invalid".
    assert not CallRequest.from_json(kamailio_body(**{key: "a" * MAX_FIELD_LEN})).oversized_fields
    long = CallRequest.from_json(kamailio_body(**{key: "a" * (MAX_FIELD_LEN + 1)}))
    assert long.oversized_fields == (key,)
    assert len(getattr(long, key)) <= MAX_FIELD_LEN


@pytest.mark.parametrize("key", ["method", "source_ip", "transport"])
def test_from_json_refuses_an_oversize_kamailio_field(key: str) -> None:
    with pytest.raises(BadCallRequest, match=key):
        CallRequest.from_json(kamailio_body(**{key: "a" * (MAX_FIELD_LEN + 1)}))


@pytest.mark.parametrize("key", CALLER_FIELDS)
async def test_oversize_caller_field_is_invalid_not_an_error(key: str, policy: Policy) -> None:
    metrics = Metrics()
    call = CallRequest.from_json(
        kamailio_body(received_at=time.time(), **{key: "a" * (MAX_FIELD_LEN + 1)})
    )
    judge = decider()
    judge.metrics = metrics
    decision = await judge.decide(call, policy)
    assert decision.outcome == "invalid"
    assert decision.instruction.code == 403
    assert ("X-VVP-Error", "EXT_SIP_FIELD_TOO_LONG") in decision.instruction.headers
    assert (
        metrics.registry.get_sample_value(
            "vvp_helper_caller_refusals_total", {"cause": "sip_field_too_long"}
        )
        == 1
    )


@pytest.mark.parametrize(
    "value", [float("nan"), float("inf"), float("-inf"), 1e20, -1.0, "nan", "inf", "1e20"]
)
def test_from_json_refuses_a_received_at_that_is_no_time(value: object) -> None:
    with pytest.raises(BadCallRequest, match="received_at"):
        CallRequest.from_json(kamailio_body(received_at=value))


@pytest.mark.parametrize(
    "to_uri", ["sip:127.0.0.1", "<sip:127.0.0.1>", "<urn:service:sos>", "tel:"]
)
async def test_redirect_to_a_called_party_without_user_is_484(to_uri: str, policy: Policy) -> None:
    decision = await decider().decide(call(to_uri=to_uri), policy)
    assert decision.outcome == "missing"
    assert (decision.instruction.code, decision.instruction.reason) == (484, "Address Incomplete")
    assert decision.instruction.contact is None
    assert ("X-VVP-Status", "MISSING") in decision.instruction.headers


async def test_reject_to_a_called_party_without_user_stays_a_reject(policy: Policy) -> None:
    decision = await decider().decide(
        call(to_uri="<sip:127.0.0.1>", p_vvp_identity=["garbage"]), policy
    )
    assert decision.instruction.code == 403


def test_an_oversize_identity_field_is_marked_not_refused() -> None:
    call = CallRequest.from_json(kamailio_body(p_vvp_passport=["a" * (MAX_FIELD_LEN + 1)]))
    assert call.oversized_identity == ("p_vvp_passport",)


async def test_padded_identity_is_invalid_not_an_error(policy: Policy) -> None:
    call = CallRequest.from_json(kamailio_body(identity=["x"] * (MAX_HEADER_FIELDS + 1)))
    decision = await decider().decide(call, policy)
    assert decision.outcome == "invalid"
    assert decision.instruction.code == 403
    assert ("X-VVP-Error", "PASSPORT_PARSE_FAILED") in decision.instruction.headers


# -- display names and URI users -----------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ('"Evil \\" Co"', 'Evil " Co'),
        ('"Back\\\\slash"', "Back\\slash"),
        ('  "Acme Bank"  ', "Acme Bank"),
        ("Alice", "Alice"),
        ('"unterminated', '"unterminated'),
        ("", ""),
    ],
)
def test_display_name_unquotes_and_unescapes(raw: str, expected: str) -> None:
    assert display_name(raw) == expected


def test_from_json_unescapes_the_from_display_name() -> None:
    assert call(from_name='"Evil \\" Co"').from_name == 'Evil " Co'


@pytest.mark.parametrize(
    ("uri", "user"),
    [
        ("sip:+15551234567@h", "+15551234567"),
        ("sip:15551234567@h;user=phone", "15551234567"),
        ("tel:+1-555-123-4567", "+15551234567"),
        ('"Bob" <sip:+15551234567@h>;tag=1', "+15551234567"),
        ("sips:alice@h", "alice"),
        ('sip:a>b"c@h', "abc"),
        ("sip:a b\tc@h", "abc"),
        ("sip:+1555\r\nX-Injected: 1@h", "+1555X-Injected1"),
        ("sip:h.example", ""),
        ("http://x@h", ""),
        ("", ""),
    ],
)
def test_uri_user_gives_numbers_and_safe_user_parts(uri: str, user: str) -> None:
    assert uri_user(uri) == user


# -- template context ----------------------------------------------------------------------


def test_template_context_exposes_exactly_the_documented_variables() -> None:
    context = template_context(call(), "missing", "MISSING", [], None)
    assert set(context) == set(TEMPLATE_VARIABLES)
    assert context["orig"] == ORIG
    assert context["dest"] == DEST
    assert context["verstat"] == "No-TN-Validation"


def test_template_context_with_a_verdict_exposes_exactly_the_documented_variables() -> None:
    verdict = Verdict.from_json({"overall_status": "VALID", "request_id": "r1"})
    context = template_context(call(), "valid", "VALID", [], verdict)
    assert set(context) == set(TEMPLATE_VARIABLES)
    assert context["request_id"] == "r1"
    assert context["verstat"] == "TN-Validation-Passed"


@pytest.mark.parametrize(
    "url",
    ["javascript:alert(1)", "JavaScript:alert(document.cookie)", "data:image/png;base64,AA"],
)
def test_brand_logo_url_that_is_not_http_is_dropped(url: str) -> None:
    verdict = Verdict.from_json(
        {"overall_status": "VALID", "brand_name": "Acme", "brand_logo_url": url}
    )
    context = template_context(call(), "valid", "VALID", [], verdict)
    assert context["brand_logo_url"] is None
    assert context["brand_name"] == "Acme"


@pytest.mark.parametrize("url", ["https://brand.example/logo.png", "HTTP://brand.example/logo.png"])
def test_brand_logo_url_over_http_is_kept(url: str) -> None:
    verdict = Verdict.from_json({"overall_status": "VALID", "brand_logo_url": url})
    assert template_context(call(), "valid", "VALID", [], verdict)["brand_logo_url"] == url


# -- Decider.decide ------------------------------------------------------------------------


async def test_call_without_identity_is_missing(policy: Policy) -> None:
    decision = await decider().decide(call(), policy)
    assert decision.outcome == "missing"
    assert decision.status == "MISSING"
    assert decision.instruction.code == 302
    assert decision.instruction.contact == f"sip:{DEST}@unverified.carrier.example"
    assert decision.instruction.headers == (("X-VVP-Status", "MISSING"),)


async def test_missing_with_the_seed_policy_uses_on_indeterminate() -> None:
    decision = await decider().decide(call(), load_policy(MINIMAL))
    assert decision.outcome == "missing"
    assert decision.instruction.contact == f"sip:{DEST}@unverified.carrier.example.com"
    assert decision.instruction.headers == (("X-VVP-Status", "INDETERMINATE"),)


async def test_undecodable_p_vvp_identity_is_invalid_without_a_verifier(policy: Policy) -> None:
    decision = await decider().decide(call(p_vvp_identity=["not base64!!"]), policy)
    assert decision.outcome == "invalid"
    assert decision.error_kind == "precheck"
    assert [e["code"] for e in decision.errors] == ["VVP_IDENTITY_INVALID"]
    assert decision.instruction.code == 403
    assert decision.instruction.headers == (
        ("X-VVP-Status", "INVALID"),
        ("X-VVP-Error", "VVP_IDENTITY_INVALID"),
        ("X-VVP-Reason", "VVP-Identity is not base64url"),
    )


async def test_valid_identity_without_a_verifier_is_an_error(policy: Policy) -> None:
    minted = mint("valid", ORIG, DEST)
    request = call(identity=[minted.identity_header()])
    decision = await decider(verifier=None).decide(request, policy)
    assert decision.outcome == "error"
    assert decision.error_kind == "not_configured"
    assert [e["code"] for e in decision.errors] == ["EXT_VERIFIER_NOT_CONFIGURED"]
    assert decision.instruction.code == 302
    assert decision.instruction.contact == f"sip:{DEST}@fallback.carrier.example"
    assert ("X-VVP-Error", "EXT_VERIFIER_NOT_CONFIGURED") in decision.instruction.headers


async def test_expired_identity_is_invalid_without_asking_the_verifier(policy: Policy) -> None:
    minted = mint("expired", ORIG, DEST)
    request = call(identity=[minted.identity_header()])
    decision = await decider(verifier=None).decide(request, policy)
    assert decision.outcome == "invalid"
    assert decision.error_kind == "precheck"
    assert decision.errors[0]["code"] == "PASSPORT_EXPIRED"
    assert decision.instruction.code == 403
    assert ("X-VVP-Error", "PASSPORT_EXPIRED") in decision.instruction.headers


async def test_caller_display_name_cannot_inject_through_a_decision() -> None:
    minimal = MINIMAL.read_text(encoding="utf-8")
    assert minimal.count('X-VVP-Status: "INDETERMINATE"') == 1
    policy_text = minimal.replace(
        '      X-VVP-Status: "INDETERMINATE"',
        '      X-VVP-Status: "INDETERMINATE"\n      X-Caller: "{from_name} {orig}"',
    )
    policy = parse_policy(policy_text)
    request = call(
        from_name='"x\r\nX-Injected: 1"',
        from_uri="sip:+1555\r\nX-Injected: 1@h",
    )
    decision = await decider().decide(request, policy)
    block = decision.instruction.header_block()
    assert block.count("\r\n") == len(decision.instruction.headers) == 2
    assert "\nX-Injected" not in block
    assert cast(dict[str, Any], decision.context)["from_name"] == "x\r\nX-Injected: 1"


def test_received_at_as_kamailio_writes_it() -> None:
    # $TV(Sn) reaches the helper as a string: "seconds.microseconds".
    call = CallRequest.from_json(kamailio_body(received_at="1795526493.341266"))
    assert call.received_at == 1795526493.341266


def test_nul_byte_in_a_sip_field_is_refused_with_400() -> None:
    call = CallRequest.from_json(kamailio_body(call_id="abc\x00def"))
    assert call.has_nul


# -- nothing a caller sends makes the decision fail ------------------------------------------

CALLER_TEXT = st.text(max_size=60) | st.sampled_from(
    ["", "sip:", "<sip:@>", "tel:+", "urn:service:sos", "sip:127.0.0.1", '"\\', "\x00", "\u2028"]
)


@settings(max_examples=200, deadline=None)
@given(
    call_id=CALLER_TEXT,
    from_uri=CALLER_TEXT,
    to_uri=CALLER_TEXT,
    from_name=CALLER_TEXT,
    request_uri=CALLER_TEXT,
    identity=st.lists(CALLER_TEXT, max_size=3),
    p_vvp_identity=st.lists(CALLER_TEXT, max_size=2),
)
def test_no_caller_content_makes_the_decision_raise(
    call_id: str,
    from_uri: str,
    to_uri: str,
    from_name: str,
    request_uri: str,
    identity: list[str],
    p_vvp_identity: list[str],
) -> None:
    # What Kamailio can send for any INVITE: caller text in the caller fields, the rest
    # its own. The helper must answer all of it with an instruction (never HTTP 400/500,
    # which would be Kamailio's fail-open fallback), and never "error" without a verifier
    # having been asked.
    body = kamailio_body(
        received_at=time.time(),
        call_id=call_id,
        from_uri=from_uri,
        to_uri=to_uri,
        from_name=from_name,
        request_uri=request_uri,
        identity=identity,
        p_vvp_identity=p_vvp_identity,
    )
    request = CallRequest.from_json(body)
    decision = asyncio.run(decider().decide(request, load_policy(DEFAULT_POLICY)))
    assert 300 <= decision.instruction.code <= 699
    if decision.outcome == "error":
        assert decision.errors[0]["code"] == "EXT_VERIFIER_NOT_CONFIGURED"
    contact = decision.instruction.contact
    assert contact is None or "sip:@" not in contact


@pytest.mark.parametrize(
    ("cause", "overrides"),
    [
        ("nul_byte", {"call_id": "a\x00b"}),
        ("sip_field_too_long", {"to_uri": "sip:" + "x" * MAX_FIELD_LEN}),
        ("identity_too_long", {"identity": ["x"] * (MAX_HEADER_FIELDS + 1)}),
        ("identity_undecodable", {"p_vvp_identity": ["garbage"]}),
        (
            "identity_precheck",
            {"identity": [mint("expired", ORIG, DEST).identity_header()]},
        ),
    ],
)
async def test_caller_refusals_are_counted_by_cause(
    cause: str, overrides: dict[str, object], policy: Policy
) -> None:
    assert cause in REFUSAL_CAUSES
    metrics = Metrics()
    judge = decider()
    judge.metrics = metrics
    decision = await judge.decide(call(**overrides), policy)
    assert decision.instruction.code in (400, 403)
    samples = {
        s.labels["cause"]: s.value
        for metric in metrics.registry.collect()
        if metric.name == "vvp_helper_caller_refusals"
        for s in metric.samples
        if s.name.endswith("_total")
    }
    assert samples == {cause: 1.0}
