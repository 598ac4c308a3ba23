"""Verifier requests and answers as the simulator tests build and read them."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from vvp_simulator.passport import MintedIdentity


def verify_body(m: MintedIdentity, now: float, jwt: str | None = None) -> dict[str, Any]:
    """The /verify body the helper would send for ``m`` (its own PASSporT unless ``jwt``),
    with a SIP context received at ``now``."""
    when = datetime.fromtimestamp(now, UTC).isoformat()
    return {
        "passport_jwt": m.passport_jwt if jwt is None else jwt,
        "context": {
            "call_id": "c@h",
            "received_at": when,
            "sip": {
                "from_uri": f"sip:{m.orig}@carrier.example",
                "to_uri": f"sip:{m.dest}@carrier.example",
                "invite_time": when,
            },
        },
    }


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
