"""Unit tests for vvp_helper.sip.fields: From/To numbers and RFC 8224 Identity headers."""

from __future__ import annotations

import contextlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from vvp_helper.errors import IdentityDecodeError
from vvp_helper.sip.fields import (
    IdentityHeader,
    _split_outside,
    parse_identity_header,
    same_number,
    split_header_values,
    telephone_number,
)

JWT = "eyJhbGciOiJFZERTQSJ9.eyJpYXQiOjF9." + "0B" + "A" * 86


@pytest.mark.parametrize(
    ("uri", "number"),
    [
        ("sip:+15551234567@h", "+15551234567"),
        ("sip:15551234567@h;user=phone", "15551234567"),
        ("tel:+1-555-123-4567", "+15551234567"),
        ("tel:+1.555.(123) 4567", "+15551234567"),
        ("tel:+15551234567;phone-context=example.com", "+15551234567"),
        ("<sip:+15551234567@carrier.example>", "+15551234567"),
        ("<sip:+15551234567@carrier.example>;tag=abc", "+15551234567"),
        ('"Alice <boss>" <sip:+15551234567@h>;tag=1', "+15551234567"),
        ("Alice <sips:+441923311001@h:5061;transport=tls>", "+441923311001"),
        ("SIP:+15551234567@H", "+15551234567"),
        ("sip:+15551234567;npdi@h", "+15551234567"),
        ("sip:%2B15551234567@h", "+15551234567"),
        ("sip:+15551234567:secret@h", "+15551234567"),
        ("  sip:+15551234567@h  ", "+15551234567"),
    ],
)
def test_telephone_number_extracts_the_number(uri: str, number: str) -> None:
    assert telephone_number(uri) == number


@pytest.mark.parametrize(
    "uri",
    [
        "sip:alice@h",
        "sip:h.example",  # no user part
        "http://+15551234567@h",
        "mailto:+15551234567@h",
        "",
        "sip:@h",
        "tel:",
        "sip:+1555+1234@h",
        "sip:+١٢٣@h",  # non-ASCII digits are not dialable
        '"unterminated <sip:+15551234567@h>',
        "sip:+" + "1" * 40 + "@h",
    ],
)
def test_telephone_number_rejects_non_numbers(uri: str) -> None:
    assert telephone_number(uri) is None


@given(st.text())
def test_telephone_number_never_raises(uri: str) -> None:
    result = telephone_number(uri)
    assert result is None or result.lstrip("+").isdigit()


def test_same_number_ignores_leading_plus() -> None:
    assert same_number("+15551234567", "15551234567")
    assert same_number("15551234567", "+15551234567")
    assert not same_number("+15551234567", "+15551234568")
    assert not same_number("", "+")


def test_parse_identity_header_rfc8224_form() -> None:
    header = parse_identity_header(
        f"{JWT};info=<https://w.example/oobi/EAID/controller>;alg=EdDSA;ppt=vvp"
    )
    assert header == IdentityHeader(
        token=JWT,
        params={"info": "https://w.example/oobi/EAID/controller", "alg": "EdDSA", "ppt": "vvp"},
    )
    assert header.ppt == "vvp"
    assert header.alg == "EdDSA"
    assert header.info == "https://w.example/oobi/EAID/controller"


def test_parse_identity_header_wrapped_token_quotes_case_and_whitespace() -> None:
    header = parse_identity_header(
        f'  <{JWT}> ; INFO = "https://w.example/oobi" ; Alg = EdDSA ;PPT=vvp;  '
    )
    assert header.token == JWT
    assert header.info == "https://w.example/oobi"
    assert header.alg == "EdDSA"
    assert header.ppt == "vvp"


def test_parse_identity_header_bare_token_has_no_params() -> None:
    header = parse_identity_header(JWT)
    assert header.token == JWT
    assert header.ppt is None and header.alg is None and header.info is None


def test_parse_identity_header_first_duplicate_param_wins() -> None:
    assert parse_identity_header(f"{JWT};ppt=vvp;ppt=shaken").ppt == "vvp"


def test_parse_identity_header_info_with_semicolon_inside_brackets() -> None:
    header = parse_identity_header(f"{JWT};info=<https://x.example/a;b=c>;ppt=vvp")
    assert header.info == "https://x.example/a;b=c"
    assert header.ppt == "vvp"


@pytest.mark.parametrize(
    "value",
    [
        "",
        "   ",
        "hello world",
        "nodots",
        f"<{JWT}",
        f"<{JWT}> trailing",
        f"{JWT};bad name=1",
        f"{JWT};=x",
        "x" * 30000,
    ],
)
def test_parse_identity_header_rejects_garbage(value: str) -> None:
    with pytest.raises(IdentityDecodeError) as info:
        parse_identity_header(value)
    assert info.value.code == "PASSPORT_PARSE_FAILED"


@given(st.text())
def test_parse_identity_header_raises_only_identity_decode_error(value: str) -> None:
    with contextlib.suppress(IdentityDecodeError):
        parse_identity_header(value)


def test_split_header_values_splits_outside_brackets_and_quotes() -> None:
    fields = [
        f' <{JWT}>;info=<https://a.example/x,y>;ppt=vvp , {JWT};info="a,b" ',
        "  ",
        "second",
    ]
    assert split_header_values(fields) == [
        f"<{JWT}>;info=<https://a.example/x,y>;ppt=vvp",
        f'{JWT};info="a,b"',
        "second",
    ]


def test_split_header_values_escaped_quote_stays_inside_string() -> None:
    assert split_header_values(['a;x="q\\",r",b']) == ['a;x="q\\",r"', "b"]


def test_split_header_values_escaped_non_special_character_ends_the_escape() -> None:
    # A backslash escapes the next character whatever it is: the quote after "\\a" closes.
    assert split_header_values(['x="\\a",y']) == ['x="\\a"', "y"]
    assert split_header_values(['x="\\\\",y']) == ['x="\\\\"', "y"]


def _split_char_by_char(text: str, sep: str) -> list[str]:
    """The obvious one-character-at-a-time splitter: what the fast one must agree with."""
    parts, start, depth, in_quote, escaped = [], 0, 0, False, False
    for i, ch in enumerate(text):
        if in_quote:
            if escaped:
                escaped = False
            elif ch == "\\":
                escaped = True
            elif ch == '"':
                in_quote = False
        elif ch == '"':
            in_quote = True
        elif ch == "<":
            depth += 1
        elif ch == ">":
            depth = max(0, depth - 1)
        elif ch == sep and depth == 0:
            parts.append(text[start:i])
            start = i + 1
    parts.append(text[start:])
    return parts


@given(st.text(alphabet='ab\\"<>;, ', max_size=40), st.sampled_from(";,"))
def test_split_outside_agrees_with_a_char_by_char_scan(text: str, sep: str) -> None:
    assert _split_outside(text, sep) == _split_char_by_char(text, sep)


def test_split_header_values_empty() -> None:
    assert split_header_values([]) == []
    assert split_header_values([",, ,"]) == []
