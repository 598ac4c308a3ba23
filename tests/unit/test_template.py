"""Unit tests for vvp_helper.policy.template: safe operator templates for SIP header values."""

from __future__ import annotations

import unicodedata

import pytest
from hypothesis import given
from hypothesis import strategies as st

from vvp_helper.policy.template import (
    TemplateError,
    compile_template,
    is_header_name,
    sanitize_header_value,
)

VARIABLES = frozenset(
    {"orig", "dest", "errors", "claims", "brand_name", "status", "request_id", "flags", "n"}
)
CONTEXT: dict[str, object] = {
    "orig": "+441923311001",
    "dest": "+441923311006",
    "status": "VALID",
    "brand_name": "Acme",
    "errors": [
        {"code": "PASSPORT_SIG_INVALID", "message": "bad sig", "recoverable": False},
        {"code": "CONTEXT_MISMATCH", "message": "from", "recoverable": False},
    ],
    "claims": [
        {"name": "passport_verified", "status": "VALID"},
        {"name": "dossier_verified", "status": "INDETERMINATE"},
    ],
    "flags": {"cache_hit": True, "revocation_pending": False, "score": 0.5, "count": 3},
    "n": None,
}


def render(text: str, context: dict[str, object] | None = None) -> str:
    return compile_template(text, VARIABLES).render(CONTEXT if context is None else context)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("sip:{dest}@verified.carrier.example", "sip:+441923311006@verified.carrier.example"),
        ("<sip:{orig}@h>", "<sip:+441923311001@h>"),
        ("{errors[0].code}", "PASSPORT_SIG_INVALID"),
        ("{errors[1].message}", "from"),
        ("{errors}", "PASSPORT_SIG_INVALID,CONTEXT_MISMATCH"),
        ("{claims}", "passport_verified=VALID,dossier_verified=INDETERMINATE"),
        ("{claims[1].status}", "INDETERMINATE"),
        ("{flags.cache_hit}/{flags.revocation_pending}", "true/false"),
        ("{flags.score} {flags.count}", "0.5 3"),
        ("{{literal}} {status} }}{{", "{literal} VALID }{"),
        ("no placeholders", "no placeholders"),
        ("", ""),
    ],
)
def test_render(text: str, expected: str) -> None:
    assert render(text) == expected


@pytest.mark.parametrize(
    "text",
    [
        "{n}",
        "{n.x}",
        "{errors[5].code}",
        "{errors[0].missing}",
        "{errors.code}",  # a list has no keys
        "{orig[0]}",  # a string is not indexable here
        "{orig.upper}",  # no attribute access, ever
        "{flags[0]}",
        "{claims[0].name.x}",
        "{request_id}",  # absent from the context
    ],
)
def test_missing_data_renders_empty(text: str) -> None:
    assert render(text) == ""


def test_list_rendering_skips_unrenderable_elements() -> None:
    context: dict[str, object] = {
        "errors": ["a", 1, True, None, [1], {"other": 1}, {"code": "X"}, {"name": "n", "status": 2}]
    }
    assert render("{errors}", context) == "a,1,true,X,n=2"


def test_dict_value_renders_like_a_list_element() -> None:
    assert render("{errors[0]}") == "PASSPORT_SIG_INVALID"
    assert render("{flags}") == ""


def test_arbitrary_objects_render_empty() -> None:
    class Sneaky:
        code = "leak"

        def __str__(self) -> str:
            return "leak"

        def __format__(self, spec: str) -> str:
            return "leak"

    assert render("{orig}", {"orig": Sneaky()}) == ""
    assert render("{orig.code}", {"orig": Sneaky()}) == ""
    assert render("{errors}", {"errors": [Sneaky()]}) == ""


def test_subclass_dunder_methods_are_not_called() -> None:
    class Loud(int):
        def __str__(self) -> str:
            return "leak"

        def __repr__(self) -> str:
            return "leak"

    assert render("{orig}", {"orig": Loud(7)}) == "7"


def test_huge_int_renders_empty_instead_of_raising() -> None:
    assert render("{orig}", {"orig": 10**5000}) == ""


def test_variables_lists_roots_used() -> None:
    template = compile_template("{errors[0].code}:{orig}:{orig}{{dest}}", VARIABLES)
    assert template.variables == frozenset({"errors", "orig"})


# ----------------------------------------------------------------------------- injection


def test_crlf_injection_is_neutralised() -> None:
    assert render("{brand_name}", {"brand_name": "Acme\r\nX-Injected: 1"}) == "AcmeX-Injected: 1"
    out = render("Brand {brand_name};x", {"brand_name": "\r\n\x00Acme\x85\u2028\x7f"})
    assert out == "Brand Acme;x"


def test_control_chars_in_literal_text_are_removed_too() -> None:
    assert render("a\r\nb\tc") == "ab c"


@pytest.mark.parametrize(
    ("text", "column"),
    [
        ("{__class__}", 2),
        ("x{orig.__class__}", 8),
        ("{errors[0].__dict__}", 12),
        ("{orig._x}", 7),
    ],
)
def test_private_names_are_rejected(text: str, column: int) -> None:
    with pytest.raises(TemplateError) as info:
        compile_template(text, VARIABLES | {"__class__"})
    assert info.value.column == column
    assert "'_'" in info.value.message


def test_format_spec_and_conversion_are_rejected() -> None:
    for text in ("{orig!r}", "{orig:>10}", "{orig!s:{dest}}"):
        with pytest.raises(TemplateError) as info:
            compile_template(text, VARIABLES)
        assert "not supported" in info.value.message
        assert info.value.column == 6


# ----------------------------------------------------------------------------- compile errors


def test_unknown_variable_suggests_closest() -> None:
    with pytest.raises(TemplateError) as info:
        compile_template("sip:{dets}@h", VARIABLES)
    assert info.value.column == 6
    assert "'dets'" in info.value.message
    assert "did you mean 'dest'?" in info.value.message
    assert str(info.value) == info.value.message


def test_unknown_variable_without_close_match_lists_known() -> None:
    with pytest.raises(TemplateError) as info:
        compile_template("{zzzzzz}", {"orig", "dest"})
    assert "known: dest, orig" in info.value.message


@pytest.mark.parametrize(
    ("text", "column"),
    [
        ("abc{orig", 4),
        ("abc}", 4),
        ("{}", 1),
        ("{ orig}", 2),
        ("{orig }", 6),
        ("{1abc}", 2),
        ("{orig.}", 7),
        ("{orig[}", 6),
        ("{orig[x]}", 6),
        ("{orig[-1]}", 6),
        ("{orig[1234567]}", 7),
        ("{orig..x}", 7),
        ("{orig{dest}}", 6),
        ("{orig-x}", 6),
        ("{orig}}}x}", 10),
    ],
)
def test_syntax_errors_have_columns(text: str, column: int) -> None:
    with pytest.raises(TemplateError) as info:
        compile_template(text, VARIABLES)
    assert info.value.column == column


# ----------------------------------------------------------------------------- sanitize / names


def test_sanitize_header_value() -> None:
    assert sanitize_header_value("  a\tb\r\nc\x00d\x1b[31m\x7f\x9f  ") == "a bcd[31m"
    assert sanitize_header_value("x" * 2000) == "x" * 1024
    assert sanitize_header_value("abcdef", max_len=3) == "abc"
    assert sanitize_header_value("ab cdef", max_len=3) == "ab"
    assert sanitize_header_value("\ud800ok") == "ok"
    assert sanitize_header_value("Café 😀") == "Café 😀"


def test_render_truncates() -> None:
    template = compile_template("{orig}", VARIABLES)
    assert template.render({"orig": "y" * 5000}) == "y" * 1024
    assert template.render({"orig": "y" * 5000}, max_len=10) == "y" * 10


@pytest.mark.parametrize("name", ["X-VVP-Status", "P-Asserted-Identity", "a", "x.y!%*_+`'~", "9"])
def test_is_header_name_accepts_tokens(name: str) -> None:
    assert is_header_name(name)


@pytest.mark.parametrize(
    "name", ["", "X VVP", "X:Y", "X-A\r\nX-B", "Ünicode", "x" * 65, "X-A\n", "a/b", "a@b"]
)
def test_is_header_name_rejects_others(name: str) -> None:
    assert not is_header_name(name)


def _has_control(text: str) -> bool:
    return any(unicodedata.category(ch) in ("Cc", "Cs") or ch in "\u2028\u2029" for ch in text)


TEMPLATES = st.sampled_from(
    ["{brand_name}", "<sip:{orig}@h>;x={dest}", "{errors}", "{errors[0].code} {claims}", "{flags}"]
)
SCALAR = st.text() | st.integers() | st.booleans() | st.none() | st.floats()
CONTEXTS = st.fixed_dictionaries(
    {
        "brand_name": st.text(),
        "orig": st.text(),
        "dest": SCALAR,
        "errors": st.lists(
            st.text() | st.fixed_dictionaries({"code": st.text(), "message": st.text()}),
            max_size=3,
        ),
        "claims": st.lists(
            st.fixed_dictionaries({"name": st.text(), "status": SCALAR}), max_size=3
        ),
        "flags": st.dictionaries(st.text(max_size=5), SCALAR, max_size=3),
    }
)


@given(TEMPLATES, CONTEXTS)
def test_rendered_values_never_contain_control_chars(text: str, context: dict[str, object]) -> None:
    out = compile_template(text, VARIABLES).render(context)
    assert not _has_control(out)
    assert out == out.strip()
    assert len(out) <= 1024


@given(st.text())
def test_sanitize_never_leaves_control_chars(value: str) -> None:
    out = sanitize_header_value(value)
    assert not _has_control(out)
    assert len(out) <= 1024


@given(st.text(max_size=60))
def test_compile_raises_only_template_error(text: str) -> None:
    try:
        template = compile_template(text, VARIABLES)
    except TemplateError as exc:
        assert 1 <= exc.column <= max(1, len(text))
    else:
        assert not _has_control(template.render(CONTEXT))
