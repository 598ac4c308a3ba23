"""Facts worked out of a verifier answer for templates and rules, beyond its plain fields.

* ``why_not_valid``: the reason a verdict is not VALID, even when the verifier's ``errors``
  is empty (the real verifier answers a stale revocation check with INDETERMINATE,
  ``errors: null``, and the reason only in its claim tree);
* ``failed_claims``: the claims that are not VALID, flat, each with its reasons;
* ``verified_number``: the calling number the PASSporT signed, as E.164 with ``+``, for
  P-Asserted-Identity.

Everything here reads someone else's data (the verifier's answer, the caller's PASSporT):
bounded walks, no exceptions, strings only where strings are expected.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

#: Most claim nodes looked at in one answer (the real tree has about a dozen).
MAX_NODES = 256

_E164 = re.compile(r"\+?[0-9]{1,15}")
# Visual separators RFC 3966 allows in a telephone-subscriber, dropped before checking.
_SEPARATORS = str.maketrans("", "", "-.() ")


@dataclass(frozen=True, slots=True)
class Reason:
    """Why a verdict is not VALID: the claim that says so (if any) and its text."""

    claim: str = ""
    text: str = ""


def why_not_valid(
    outcome: str,
    claims: Sequence[Mapping[str, Any]],
    errors: Sequence[Mapping[str, str]],
    warning_reason: str | None = None,
) -> Reason:
    """The first reason found, in this order (empty for a VALID call):

    1. the deepest non-VALID claim on the path of first non-VALID *required* children from
       the root that carries a reason (what made the verdict what it is);
    2. the first error's message (or its code when it has none);
    3. the first non-VALID claim anywhere, optional ones included, that has a reason (a
       WARNING's root is VALID: its reason sits in the optional vetter claim);
    4. the WARNING's ``vetter_warning_reason``.
    """
    if outcome == "valid":
        return Reason()
    found = _required_path_reason(claims)
    if found is not None:
        return found
    for error in errors:
        text = _text(error.get("message")) or _text(error.get("code"))
        if text:
            return Reason("", text)
    for node in failed_claims(claims):
        reasons = node["reasons"]
        if reasons:
            return Reason(node["name"], reasons[0])
    return Reason("", _text(warning_reason))


def failed_claims(claims: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Every non-VALID claim, depth first, as ``{name, status, reasons, required}``.

    On every call's path: plain ``dict`` checks first (what JSON gives; the ``Mapping``
    ABC check costs several times more), and nothing is built for a VALID claim.
    """
    found: list[dict[str, Any]] = []
    stack: list[tuple[object, bool]] = [(node, True) for node in reversed(claims)]
    seen = 0
    while stack and seen < MAX_NODES:
        node, required = stack.pop()
        seen += 1
        if not isinstance(node, dict | Mapping):
            continue
        status = node.get("status")
        if status != "VALID" and isinstance(status, str) and status:
            name = _text(node.get("name"))
            if name:
                entry = {"name": name, "status": status, "reasons": _reasons(node)}
                found.append(dict(entry, required=required))
        children = node.get("children")
        if isinstance(children, list) and children:
            for child in reversed(children[:MAX_NODES]):
                if isinstance(child, dict | Mapping):
                    stack.append((child.get("node"), child.get("required") is not False))
    return found


def verified_number(orig: str | None) -> str:
    """The PASSporT's ``orig`` as E.164 with ``+`` ("" when it is not a telephone number).

    Only digits come out: the value goes into P-Asserted-Identity, and although the
    PASSporT was signed, the edge asserts a number, nothing else.
    """
    if not orig:
        return ""
    number = orig.strip().translate(_SEPARATORS)
    if not _E164.fullmatch(number):
        return ""
    return "+" + number.removeprefix("+")


def _required_path_reason(claims: Sequence[Mapping[str, Any]]) -> Reason | None:
    best: Reason | None = None
    node: object = next(
        (c for c in claims if isinstance(c, Mapping) and c.get("status") != "VALID"), None
    )
    for _ in range(MAX_NODES):
        if not isinstance(node, Mapping):
            break
        reasons = _reasons(node)
        if reasons:
            best = Reason(_text(node.get("name")), reasons[0])
        node = next(
            (
                child
                for child, required in _children(node)
                if required and isinstance(child, Mapping) and child.get("status") != "VALID"
            ),
            None,
        )
    return best


def _children(node: Mapping[str, Any]) -> list[tuple[object, bool]]:
    children = node.get("children")
    if not isinstance(children, list):
        return []
    return [
        (child.get("node"), child.get("required") is not False)
        for child in children[:MAX_NODES]
        if isinstance(child, Mapping)
    ]


def _reasons(node: Mapping[str, Any]) -> list[str]:
    reasons = node.get("reasons")
    if not isinstance(reasons, list):
        return []
    return [text for text in (_text(r) for r in reasons[:16]) if text]


def _text(value: object) -> str:
    return value.strip() if isinstance(value, str) else ""
