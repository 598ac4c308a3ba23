"""One-line JSON logs: what a log pipeline (journald, Loki, Elastic) can index as is.

Every record is one JSON object on one line. Lines about a call carry its ``call_id``
and the verifier's ``request_id`` as fields (pass them with ``extra={"fields": {...}}``),
so the helper's lines join up with Kamailio's, whose log prefix carries the Call-ID.
Nothing here logs a JWT, a key or a secret: callers pass only what is safe.
"""

from __future__ import annotations

import json
import logging
import sys
from datetime import UTC, datetime
from typing import Any


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        fields = getattr(record, "fields", None)
        if isinstance(fields, dict):
            entry.update(fields)
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, separators=(",", ":"), default=str)


def configure(level: str, *, json_lines: bool = True) -> None:
    """Log to stderr (systemd and containers collect it), JSON unless asked otherwise."""
    handler = logging.StreamHandler(sys.stderr)
    if json_lines:
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
