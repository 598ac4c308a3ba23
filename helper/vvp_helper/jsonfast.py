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

except ImportError:  # pragma: no cover - the fast extra is optional

    def dumps(value: Any) -> bytes:
        return json.dumps(value, separators=(",", ":")).encode()

    def loads(data: bytes | str) -> Any:
        return json.loads(data)
