"""Decoding of the SIP header fields the helper reads: From/To numbers and RFC 8224 Identity.

Everything here is pure and tolerant: callers control these headers, so bad input yields
``None`` or an ``IdentityDecodeError``, never any other exception.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType
from typing import NoReturn
from urllib.parse import unquote

from vvp_helper.errors import IdentityDecodeError

__all__ = [
    "IdentityHeader",
    "parse_identity_header",
    "same_number",
    "split_header_values",
    "telephone_number",
]

# Longer than any real SIP URI; a bound so a hostile From cannot make us scan megabytes.
MAX_URI_LEN = 2048
# The PASSporT bound (16384, identity.MAX_JWT_LEN) plus room for info/alg/ppt params.
MAX_IDENTITY_HEADER_LEN = 20480

# RFC 3966 visual separators, which carry no meaning in a number.
_VISUAL_SEPARATORS = str.maketrans("", "", "-.() ")
# E.164 allows 15 digits; private dial plans may use more, so be generous but bounded.
_NUMBER = re.compile(r"\+?[0-9]{1,32}")
_SCHEMES = ("sip:", "sips:", "tel:")
# A JWS compact serialisation (base64url parts joined by dots); '=' tolerated as some
# issuers pad.
_TOKEN_CHARS = re.compile(r"[A-Za-z0-9_\-=]+(?:\.[A-Za-z0-9_\-=]*)+")
# RFC 3261 token: the characters allowed in a header parameter name.
_PARAM_NAME = re.compile(r"[A-Za-z0-9\-.!%*_+`'~]+")
# What _split_outside stops at, per separator: quotes, backslashes, angle brackets, sep.
_SPLIT_STOPS = {sep: re.compile(r'[\\"<>' + sep + "]") for sep in ";,"}


# Cached: one call asks for its From and To numbers three times over (precheck, the
# policy's facts, the template variables), and there are never many calls between them.
@functools.lru_cache(maxsize=256)
def telephone_number(uri: str) -> str | None:
    """The telephone number in a From/To value, or None when its user part is not a number.

    Accepts a bare URI or a name-addr (``"Alice" <sip:+1555...@h;user=phone>;tag=x``).
    """
    if len(uri) > MAX_URI_LEN:
        return None
    text = uri.strip()
    if text.startswith('"'):
        # Skip a quoted display name first: it may itself contain '<' or '@'.
        end = _closing_quote(text, 0)
        if end < 0:
            return None
        text = text[end + 1 :]
    open_at = text.find("<")
    if open_at >= 0:
        close_at = text.find(">", open_at)
        text = text[open_at + 1 : close_at if close_at >= 0 else len(text)]
    text = text.strip()
    lowered = text.lower()
    scheme = next((s for s in _SCHEMES if lowered.startswith(s)), None)
    if scheme is None:
        return None
    rest = text[len(scheme) :]
    if scheme == "tel:":
        user = rest
    else:
        at = rest.find("@")
        if at < 0:
            # sip:host has no user part, hence no number.
            return None
        # Drop a password (user:pass@host) before unescaping.
        user = rest[:at].split(":", 1)[0]
    # Parameters (';phone-context=', ';isub=', tel URI params) are not part of the number.
    user = unquote(user.split(";", 1)[0])
    number = user.translate(_VISUAL_SEPARATORS)
    return number if _NUMBER.fullmatch(number) else None


def same_number(a: str, b: str) -> bool:
    """Whether two numbers are equal ignoring a leading '+', as the verifier compares them."""
    left = a.strip().removeprefix("+")
    right = b.strip().removeprefix("+")
    # Two empty numbers are not "the same caller".
    return bool(left) and left == right


@dataclass(frozen=True, slots=True)
class IdentityHeader:
    """One RFC 8224 Identity header value: the PASSporT and its parameters."""

    token: str
    params: Mapping[str, str]

    @property
    def ppt(self) -> str | None:
        return self.params.get("ppt")

    @property
    def alg(self) -> str | None:
        return self.params.get("alg")

    @property
    def info(self) -> str | None:
        return self.params.get("info")


def parse_identity_header(value: str) -> IdentityHeader:
    """Parse ``<jwt>;info=<url>;alg=EdDSA;ppt=vvp`` (or ``jwt;...``).

    Raises ``IdentityDecodeError`` (code PASSPORT_PARSE_FAILED) on anything else.
    """
    if len(value) > MAX_IDENTITY_HEADER_LEN:
        _fail("Identity header too long")
    text = value.strip()
    if not text:
        _fail("empty Identity header")
    if text.startswith("<"):
        close_at = text.find(">")
        if close_at < 0:
            _fail("Identity header has an unclosed '<'")
        token = text[1:close_at].strip()
        rest = text[close_at + 1 :].strip()
    else:
        semi = text.find(";")
        token = (text if semi < 0 else text[:semi]).strip()
        rest = "" if semi < 0 else text[semi:]
    if not _TOKEN_CHARS.fullmatch(token):
        _fail("Identity header does not start with a PASSporT")
    if rest and not rest.startswith(";"):
        _fail("unexpected text after the PASSporT in the Identity header")
    params: dict[str, str] = {}
    for raw in _split_outside(rest, ";")[1:] if rest else []:
        item = raw.strip()
        if not item:
            continue  # tolerate ';;' and a trailing ';'
        name, eq, raw_value = item.partition("=")
        name = name.strip().lower()
        if not _PARAM_NAME.fullmatch(name):
            _fail("malformed Identity header parameter")
        param_value = _unwrap(raw_value.strip()) if eq else ""
        # First occurrence wins, so a later duplicate cannot override what was checked.
        params.setdefault(name, param_value)
    return IdentityHeader(token=token, params=MappingProxyType(params))


def split_header_values(values: Sequence[str]) -> list[str]:
    """Split header fields into values at commas outside ``<...>`` and quotes.

    Surrounding whitespace is stripped and empty values dropped.
    """
    out: list[str] = []
    for field in values:
        if "," not in field:  # the usual case: one value per field, no scan needed
            field = field.strip()
            if field:
                out.append(field)
            continue
        for part in _split_outside(field, ","):
            part = part.strip()
            if part:
                out.append(part)
    return out


def _split_outside(text: str, sep: str) -> list[str]:
    """Split at ``sep`` except inside a quoted string or angle brackets."""
    parts: list[str] = []
    start = 0
    depth = 0
    in_quote = False
    escaped_at = -1  # inside quotes: the index of the character a backslash escapes
    # Only the characters that can change the state are visited, found by the regex
    # engine: an Identity header is a kilobyte of base64url with a handful of them, and a
    # Python loop over every character cost a fifth of the helper's decoding time.
    for found in _SPLIT_STOPS[sep].finditer(text):
        i = found.start()
        ch = text[i]
        if in_quote:
            if i == escaped_at:
                continue
            if ch == "\\":
                escaped_at = i + 1
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


def _closing_quote(text: str, open_at: int) -> int:
    """Index of the quote closing the one at ``open_at`` (backslash escapes), or -1."""
    escaped = False
    for i in range(open_at + 1, len(text)):
        ch = text[i]
        if escaped:
            escaped = False
        elif ch == "\\":
            escaped = True
        elif ch == '"':
            return i
    return -1


def _unwrap(value: str) -> str:
    """Strip one pair of surrounding quotes or angle brackets (issuers write both forms)."""
    if len(value) >= 2 and (
        (value[0] == '"' and value[-1] == '"') or (value[0] == "<" and value[-1] == ">")
    ):
        return value[1:-1].strip()
    return value


def _fail(message: str) -> NoReturn:
    raise IdentityDecodeError("PASSPORT_PARSE_FAILED", message)
