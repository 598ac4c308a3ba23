"""Operator templates rendered into SIP header values and URIs.

Safety-critical (docs/design.md "Safety rules"): templates render caller-controlled data (From/To,
brand names, verifier error messages) into SIP headers, so

* ``str.format`` is never used: it would let a template reach Python attributes
  (``{x.__class__}``); placeholders here walk dict keys and list indexes of plain JSON-like
  data only, and names starting with ``_`` are refused when the template is compiled;
* every rendered value goes through ``sanitize_header_value``, which removes CR, LF and every
  other control character, so no caller can inject a header line.

Syntax: ``{name}``, ``{name.field}``, ``{name[0]}``, ``{name[0].field}``; ``{{``/``}}`` are
literal braces.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Collection, Mapping
from dataclasses import dataclass

__all__ = [
    "Template",
    "TemplateError",
    "compile_template",
    "is_header_name",
    "sanitize_header_value",
]

# Default bound on one rendered header value, in characters; SIP has no limit, but proxies
# and Kamailio's pkg memory do.
DEFAULT_MAX_LEN = 1024
# Longer list indexes are operator mistakes (and int() of huge digit strings can raise).
_MAX_INDEX_DIGITS = 6

_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_INDEX = re.compile(r"\[([0-9]+)\]")
# RFC 3261 token; the 64-character cap is ours (no real header name comes close).
_HEADER_NAME = re.compile(r"[A-Za-z0-9\-.!%*_+`'~]{1,64}")


def _control_table() -> dict[int, str | None]:
    table: dict[int, str | None] = {code: None for code in range(0x20)}
    table[0x09] = " "  # a TAB is harmless whitespace; keep the words apart
    table[0x7F] = None
    table.update({code: None for code in range(0x80, 0xA0)})  # C1 controls (incl. NEL)
    # LINE/PARAGRAPH SEPARATOR: some parsers and log viewers break lines on them.
    table.update({0x2028: None, 0x2029: None})
    # Lone surrogates (possible in JSON "\ud800") cannot be encoded as UTF-8 on the wire.
    table.update({code: None for code in range(0xD800, 0xE000)})
    return table


_CONTROL = _control_table()


class TemplateError(ValueError):
    """A template that cannot be compiled; ``column`` is 1-based within the template text."""

    def __init__(self, message: str, column: int) -> None:
        super().__init__(message)
        self.message = message
        self.column = column


@dataclass(frozen=True, slots=True)
class _Field:
    root: str
    path: tuple[str | int, ...]


@dataclass(frozen=True, slots=True)
class Template:
    """A compiled template; build it with ``compile_template``."""

    text: str
    parts: tuple[str | _Field, ...]
    variables: frozenset[str]
    #: The rendered text of a template without placeholders (e.g. "VALID"): worked out
    #: once, when the policy is loaded, instead of on every call.
    static: str | None = None

    def render(self, context: Mapping[str, object], *, max_len: int = DEFAULT_MAX_LEN) -> str:
        """Render with ``context``; missing data renders empty. Never raises on any data."""
        return self.render_unless_empty(context, max_len=max_len, keep_empty=True) or ""

    def render_unless_empty(
        self,
        context: Mapping[str, object],
        *,
        max_len: int = DEFAULT_MAX_LEN,
        keep_empty: bool = False,
    ) -> str | None:
        """Like ``render``, but None when the template has placeholders and every one of
        them rendered empty: "<{brand_logo_url}>;purpose=icon" without a logo is no
        header at all, rather than a broken one."""
        if self.static is not None and max_len == DEFAULT_MAX_LEN:
            return self.static
        out: list[str] = []
        filled = keep_empty or not self.variables
        for part in self.parts:
            if isinstance(part, str):
                out.append(part)
            else:
                value = _render_value(_lookup(context, part))
                filled = filled or value != ""
                out.append(value)
        if not filled:
            return None
        return sanitize_header_value("".join(out), max_len)


def compile_template(text: str, variables: Collection[str]) -> Template:
    """Parse ``text`` once; placeholders may only start with a name from ``variables``."""
    parts: list[str | _Field] = []
    literal: list[str] = []
    used: set[str] = set()
    i = 0
    n = len(text)
    while i < n:
        ch = text[i]
        if ch == "{" and text.startswith("{{", i):
            literal.append("{")
            i += 2
        elif ch == "}" and text.startswith("}}", i):
            literal.append("}")
            i += 2
        elif ch == "}":
            raise TemplateError("single '}' (write '}}' for a literal brace)", i + 1)
        elif ch == "{":
            end = text.find("}", i + 1)
            if end < 0:
                raise TemplateError("unclosed '{' (write '{{' for a literal brace)", i + 1)
            field = _parse_field(text, i + 1, end, variables)
            used.add(field.root)
            if literal:
                parts.append("".join(literal))
                literal = []
            parts.append(field)
            i = end + 1
        else:
            literal.append(ch)
            i += 1
    if literal:
        parts.append("".join(literal))
    # Without placeholders every part is literal text: rendered once, here.
    static = None if used else sanitize_header_value("".join(str(part) for part in parts))
    return Template(text=text, parts=tuple(parts), variables=frozenset(used), static=static)


def sanitize_header_value(value: str, max_len: int = DEFAULT_MAX_LEN) -> str:
    """``value`` made safe for a SIP header: no control characters, stripped, bounded."""
    if max_len < 0:
        raise ValueError("max_len must not be negative")
    cleaned = value.translate(_CONTROL).strip()
    return cleaned[:max_len].rstrip()


def is_header_name(name: str) -> bool:
    """Whether ``name`` is a valid SIP header name (RFC 3261 token, 1-64 characters)."""
    return isinstance(name, str) and _HEADER_NAME.fullmatch(name) is not None


def _parse_field(text: str, start: int, end: int, variables: Collection[str]) -> _Field:
    """Parse the placeholder ``text[start:end]`` (between the braces)."""
    if start == end:
        raise TemplateError("empty placeholder '{}'", start)
    name_match = _NAME.match(text, start, end)
    if name_match is None:
        raise TemplateError(_unexpected(text[start]), start + 1)
    root = name_match.group()
    _check_name(root, start)
    if root not in variables:
        raise TemplateError(_unknown_variable(root, variables), start + 1)
    path: list[str | int] = []
    pos = name_match.end()
    while pos < end:
        ch = text[pos]
        if ch == ".":
            key = _NAME.match(text, pos + 1, end)
            if key is None:
                raise TemplateError("expected a field name after '.'", pos + 2)
            _check_name(key.group(), pos + 1)
            path.append(key.group())
            pos = key.end()
        elif ch == "[":
            index = _INDEX.match(text, pos, end)
            if index is None:
                raise TemplateError("expected a list index like [0]", pos + 1)
            digits = index.group(1)
            if len(digits) > _MAX_INDEX_DIGITS:
                raise TemplateError("list index too large", pos + 2)
            path.append(int(digits))
            pos = index.end()
        else:
            raise TemplateError(_unexpected(ch), pos + 1)
    return _Field(root=root, path=tuple(path))


def _check_name(name: str, index: int) -> None:
    # Underscore names are Python internals in str.format's world; no documented field
    # starts with one, so refuse them loudly instead of rendering them empty.
    if name.startswith("_"):
        raise TemplateError(f"names starting with '_' are not allowed: {name!r}", index + 1)


def _unexpected(ch: str) -> str:
    if ch in "!:":
        return "format specs and conversions ('!', ':') are not supported"
    if ch == "{":
        return "'{' inside a placeholder (write '{{' for a literal brace)"
    if ch.isspace():
        return "whitespace inside a placeholder"
    return f"unexpected character {ch!r} in placeholder"


def _unknown_variable(name: str, variables: Collection[str]) -> str:
    allowed = sorted(variables)
    close = difflib.get_close_matches(name, allowed, n=1)
    if close:
        return f"unknown variable {name!r}; did you mean {close[0]!r}?"
    known = ", ".join(allowed) if allowed else "none"
    return f"unknown variable {name!r} (known: {known})"


def _lookup(context: Mapping[str, object], field: _Field) -> object:
    """Follow ``field`` through dict keys and list indexes; anything else yields None."""
    current: object = context.get(field.root)
    for step in field.path:
        if isinstance(step, int):
            if isinstance(current, list | tuple) and step < len(current):
                current = current[step]
            else:
                return None
        elif isinstance(current, Mapping):
            current = current.get(step)
        else:
            return None
    return current


def _render_scalar(value: object) -> str | None:
    """A JSON scalar as text, or None for anything that is not one."""
    if isinstance(value, bool):  # before int: bool is an int subclass
        return "true" if value else "false"
    if isinstance(value, str):
        return value
    if isinstance(value, int | float):
        try:
            # The base-class methods: a subclass's own __repr__/__str__ is not ours to run.
            return float.__repr__(value) if isinstance(value, float) else int.__repr__(value)
        except ValueError:  # an int too long for str() (sys.set_int_max_str_digits)
            return None
    return None


def _render_mapping(value: Mapping[object, object]) -> str:
    # The shapes templates list: verifier errors ({code, ...}) and claims ({name, status},
    # with their reasons when they have any).
    if "code" in value:
        return _render_scalar(value["code"]) or ""
    if "name" in value and "status" in value:
        name = _render_scalar(value["name"])
        status = _render_scalar(value["status"])
        if name is not None and status is not None:
            reasons = _render_reasons(value.get("reasons"))
            return f"{name}={status} ({reasons})" if reasons else f"{name}={status}"
    return ""


def _render_reasons(value: object) -> str:
    # A claim's reasons, as the verifier words them: "name=STATUS (reason; reason)".
    if not isinstance(value, list | tuple):
        return ""
    texts = (_render_scalar(item) for item in value[:8])
    return "; ".join(text for text in texts if text)


def _render_value(value: object) -> str:
    if type(value) is str:  # most placeholders name a string variable
        return value
    if value is None:
        return ""
    if isinstance(value, list | tuple):
        items: list[str] = []
        for item in value:
            if isinstance(item, Mapping):
                text = _render_mapping(item)
            else:
                text = _render_scalar(item) or ""
            if text:
                items.append(text)
        return ",".join(items)
    if isinstance(value, Mapping):
        return _render_mapping(value)
    # Other objects render empty: never call an arbitrary object's __str__/__format__.
    return _render_scalar(value) or ""
