"""One `/verify` answer of the VVP verifier SIMULATOR, with the real verifier's habits.

Between the HTTP front (server.py) and the pure verdict (verdict.py): the fake dossier
cache (cache_hit, and when cached revocation data goes stale), and the crash the real
verifier has on some PASSporTs. Kept out of server.py so the HTTP layer can change
without touching this behaviour: the server calls `simulated_verdict()` and, on ParserCrash,
returns `crash_then_close()`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from vvp_simulator.faults import Faults
from vvp_simulator.verdict import (
    Options,
    VerdictError,
    identity_or_error,
    verify,
)

MAX_DOSSIERS = 10_000  # bound on the fake dossier cache
# What the real verifier (uvicorn + Starlette) sends for an unhandled exception.
CRASH_BODY = b"Internal Server Error"
CRASH_CONTENT_TYPE = "text/plain; charset=utf-8"


@dataclass(slots=True)
class DossierCache:
    """Dossiers verified before, with when their revocation state was last checked.

    As the real verifier's verification cache: keyed by dossier URL and signer kid, filled
    when a call read the dossier, looked up only by calls whose PASSporT passed. With the
    stale_revocation fault on, a hit on an entry whose last check is older than the fault's
    period is answered stale; the background re-check then counts as done at that moment,
    so the dossier's next calls are fresh again until the next period.
    """

    checked: dict[tuple[str, str], float] = field(default_factory=dict)

    def lookup(self, key: tuple[str, str] | None, now: float, every_s: float) -> tuple[bool, bool]:
        """(cached, revocation_stale) for a call on this (dossier, kid) at `now`."""
        if key is None or key not in self.checked:
            return False, False
        return True, every_s > 0 and now - self.checked[key] >= every_s

    def checked_at(self, key: tuple[str, str], now: float) -> None:
        if key not in self.checked and len(self.checked) >= MAX_DOSSIERS:
            self.checked.clear()
        self.checked[key] = now


def simulated_verdict(
    cache: DossierCache,
    trusted: Mapping[str, bytes],
    faults: Faults,
    vvp_identity: str | None,
    body: Mapping[str, Any],
    now: float,
) -> dict[str, Any]:
    """The verdict for one call; raises verdict.ParserCrash where the real verifier crashes
    (only with the parser_crash fault on)."""
    # Parsed once, for the cache key and the verdict. A VVP-Identity refused here (also an
    # iat in the future) ends the verdict before the cache would be looked at.
    identity = identity_or_error(vvp_identity, now)
    key = None if isinstance(identity, VerdictError) else (identity.evd, identity.kid)
    cached, stale = cache.lookup(key, now, faults.stale_revocation_every_s)
    options = Options(cache_hit=cached, revocation_stale=stale, parser_crash=faults.parser_crash)
    result = verify(vvp_identity, body, trusted, now, options, identity=identity)
    if key is not None:
        if result["cache_hit"]:
            if stale:  # the re-check the stale answer queued is done now
                cache.checked_at(key, now)
        elif result["toip_warnings"] is not None:  # the call read the dossier: cache it
            cache.checked_at(key, now)
    return result


async def crash_then_close(request: web.BaseRequest) -> web.StreamResponse:
    """HTTP 500 text/plain as the real verifier's crash, then the connection is closed.

    SERVER-LEVEL HOOK. The real verifier answers the crash without `Connection: close` and
    then closes the keep-alive connection, so a client's next request on it is reset. The
    answer is written as an ordinary keep-alive response (aiohttp's force_close() would add
    `Connection: close`), flushed to the transport, and then the transport is closed, which
    sends what was written first.
    """
    response = web.Response(
        status=500,
        body=CRASH_BODY,
        headers={"Content-Type": CRASH_CONTENT_TYPE, "Server": "uvicorn"},
    )
    await response.prepare(request)
    await response.write_eof()
    if request.transport is not None:
        request.transport.close()
    return response
