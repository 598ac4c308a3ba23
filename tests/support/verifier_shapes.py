"""Verifier requests and answers as the simulator tests build and read them."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Any

from vvp_simulator.passport import MintedIdentity


def verify_body(
    m: MintedIdentity | None = None,
    now: float | None = None,
    jwt: str | None = None,
    *,
    sip: bool = True,
    cseq: int | None = None,
    call_id: str = "c@h",
    numbers: tuple[str, str] | None = None,
) -> dict[str, Any]:
    """The /verify body the helper would send: ``m``'s PASSporT unless ``jwt``, a context
    received at ``now`` (default: the current time), with the SIP part (From/To numbers:
    ``m``'s unless ``numbers``) unless ``sip`` is False."""
    when = datetime.fromtimestamp(time.time() if now is None else now, UTC).isoformat()
    if numbers is not None:
        orig, dest = numbers
    else:
        orig, dest = (m.orig, m.dest) if m else ("", "")
    context: dict[str, Any] = {"call_id": call_id, "received_at": when}
    if sip:
        context["sip"] = {
            "from_uri": f"sip:{orig}@carrier.example",
            "to_uri": f"sip:{dest}@carrier.example",
            "invite_time": when,
        }
        if cseq is not None:
            context["sip"]["cseq"] = cseq
    passport = jwt if jwt is not None else m.passport_jwt if m else ""
    return {"passport_jwt": passport, "context": context}


def claim(answer: dict[str, Any], name: str) -> dict[str, Any]:
    """The first claim node called ``name`` in a /verify answer (AssertionError if none)."""

    def walk(node: dict[str, Any]) -> dict[str, Any] | None:
        if node["name"] == name:
            return node
        for child in node["children"]:
            found = walk(child["node"])
            if found:
                return found
        return None

    found = walk(answer["claims"][0])
    assert found is not None, name
    return found
