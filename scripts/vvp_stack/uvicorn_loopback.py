"""Run a VVP service (the verifier) of a checkout with its URL guard relaxed for loopback.

The verifier refuses OOBI and dossier URLs that point at loopback addresses or use plain
http (``common.vvp.url_validation.validate_url_target``), so against a stack running on
127.0.0.1 it could only ever answer INVALID or INDETERMINATE. Its own tests patch that same
function; this wrapper does the same before starting uvicorn: a URL whose host is a
loopback address (or ``localhost``) passes, every other URL goes through the original
check unchanged. Run from ``services/verifier`` (it loads schemas relative to it) with the
VVP stack's Python:

    python uvicorn_loopback.py PORT
"""

from __future__ import annotations

import ipaddress
import os
import sys
from urllib.parse import urlparse

import common.vvp.url_validation as url_validation
import uvicorn

_original_check = url_validation.validate_url_target


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


async def _loopback_or_original(url: str, *, allow_http: bool = False) -> None:
    parsed = urlparse(url)
    if parsed.scheme in ("http", "https") and _is_loopback(parsed.hostname or ""):
        return
    await _original_check(url, allow_http=allow_http)


def main() -> None:
    port = int(sys.argv[1])
    url_validation.validate_url_target = _loopback_or_original
    # Run as a script, Python puts this file's directory first on the path, not the
    # service directory whose ``app`` package uvicorn must import.
    sys.path.insert(0, os.getcwd())
    uvicorn.run("app.main:app", host="127.0.0.1", port=port, log_level="info")


if __name__ == "__main__":
    main()
