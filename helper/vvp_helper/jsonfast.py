"""JSON in and out of the hot path: orjson when installed (the ``fast`` extra), else the
standard library. Profiling put the standard encoder and decoder at ~10% of a call."""

from __future__ import annotations

import json
from typing import Any

try:
    import orjson

    def dumps(value: Any) -> bytes:
        return orjson.dumps(value)

    def loads(data: bytes | str) -> Any:
        return orjson.loads(data)

    def loads_strict(data: bytes) -> Any:
        """Caller-supplied JSON: orjson refuses NaN/Infinity and bad UTF-8 itself."""
        return orjson.loads(data)

except ImportError:  # pragma: no cover - the fast extra is optional

    def dumps(value: Any) -> bytes:
        return json.dumps(value, separators=(",", ":")).encode()

    def loads(data: bytes | str) -> Any:
        return json.loads(data)

    def loads_strict(data: bytes) -> Any:
        """Caller-supplied JSON: NaN/Infinity are not JSON; bad UTF-8 raises ValueError."""
        return json.loads(data.decode("utf-8"), parse_constant=_reject_constant)

    def _reject_constant(name: str) -> object:
        raise ValueError(f"non-JSON constant {name}")
