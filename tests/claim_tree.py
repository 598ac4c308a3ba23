"""The verifier's claim tree, as tests read it (simulator and recorded real answers)."""

from __future__ import annotations

from typing import Any


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
