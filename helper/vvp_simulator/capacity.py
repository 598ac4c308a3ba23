"""Load behaviour of the VVP verifier SIMULATOR: a verifier with a capacity.

The real verifier is not instant (about 25 verifications/s on a 2-core box,
10-100 ms a call, 1.4-3 s for the first call on a new dossier). Left alone the simulator
answers in a fraction of a millisecond at any rate, which hides every saturation
behaviour of the edge. ``Load.gate`` runs before each ``/verify`` answer and adds:

- **capacity** (verifications/s): a fixed number of "workers" (``slots``), each taking a
  service time of ``slots / capacity`` seconds per verification, served first come first
  served (scheduled in virtual time, so the throughput is exact). Below capacity a call
  takes the service time; above it requests queue for a worker, so latency grows without
  bound the way a saturated server's does, and the throughput stays at ``capacity``.
- **cold_ms**: the first verification of each dossier (the VVP-Identity ``evd``) waits this
  long before it is served (the dossier fetch, an I/O wait that does not hold a worker).
  Every call that arrives before the first one finished pays it too: the real verifier
  has no single-flight for dossier fetches.
- **latency_factor**: multiplies the service time, the cold time and ``latency_ms`` (a
  verifier that slowed down; its throughput falls by the same factor).
- **crash_call_id_prefix**: a request whose ``context.call_id`` starts with it gets HTTP 500
  ``text/plain`` with no ``Connection: close``, then the connection is closed, exactly as
  the real verifier answers a PASSporT its parser chokes on.

The HTTP server calls ``gate`` once per ``/verify`` (one line in server.py); everything
else lives here, so the hook is easy to carry to another HTTP framework.
"""

from __future__ import annotations

import asyncio
import heapq
import math
from collections import Counter
from typing import Any

from aiohttp import web

from vvp_helper import jsonfast
from vvp_simulator.answer import crash_then_close
from vvp_simulator.faults import Faults
from vvp_simulator.verdict import parse_vvp_identity

#: Unloaded service time of one verification under --capacity, milliseconds (the real
#: verifier's cached calls take 10-100 ms, median 27-45 ms).
SERVICE_MS = 20.0
#: Bound on the dossiers remembered as warm (a restart forgets them all, as the real one).
MAX_WARM = 10_000


class Load:
    """Per-simulator load state: the workers and the warm dossiers."""

    def __init__(self) -> None:
        self._free_at: list[float] | None = None  # a heap: when each worker is next free
        self._slots_for: float | None = None
        self.warm: set[str] = set()
        #: Requests waiting for or holding a worker (what the queue looks like).
        self.queued = 0

    def workers(self, capacity: float) -> tuple[int, float]:
        """(number of workers, seconds each verification holds one) for ``capacity``/s."""
        slots = max(1, math.ceil(capacity * SERVICE_MS / 1000))
        return slots, slots / capacity

    async def gate(
        self, request: web.BaseRequest, faults: Faults, counts: Counter[str]
    ) -> web.StreamResponse | None:
        """Delay the request as the configured load behaviour says; a Response to send
        instead of the verdict (the crash answer), or None to go on verifying."""
        if faults.crash_call_id_prefix is not None and _crashes(await request.read(), faults):
            counts["crash_call_id"] += 1
            return await crash_then_close(request)
        factor = faults.latency_factor
        if faults.latency_ms and factor != 1.0:
            # server.py already sleeps latency_ms once; the factor adds the rest.
            await asyncio.sleep(faults.latency_ms * (factor - 1.0) / 1000.0)
        evd = None
        if faults.cold_ms:
            evd = _evd_of(request.headers.get("vvp-identity"))
            if evd is not None and evd not in self.warm:
                counts["cold"] += 1
                await asyncio.sleep(faults.cold_ms * factor / 1000.0)
        if faults.capacity is not None:
            await self._serve(faults.capacity, factor)
        if evd is not None:
            if len(self.warm) >= MAX_WARM:
                self.warm.clear()
            self.warm.add(evd)
        return None

    async def _serve(self, capacity: float, factor: float) -> None:
        # Each worker's schedule is kept in virtual time (when it will next be free), so
        # the throughput is exactly ``capacity`` whatever the event loop's sleep overshoot:
        # a request takes the worker free soonest, starts when it frees, holds it for the
        # service time. A request whose client gave up still takes its turn, as on a real
        # server that does not notice.
        slots, service = self.workers(capacity)
        if self._free_at is None or self._slots_for != capacity:
            self._free_at, self._slots_for = [0.0] * slots, capacity  # a new capacity
        now = asyncio.get_running_loop().time()
        free = heapq.heappop(self._free_at)
        done = max(now, free) + service * factor
        heapq.heappush(self._free_at, done)
        self.queued += 1
        try:
            await asyncio.sleep(done - now)
        finally:
            self.queued -= 1


def _crashes(raw: bytes, faults: Faults) -> bool:
    prefix = faults.crash_call_id_prefix
    assert prefix is not None
    if prefix.encode("utf-8", "replace") not in raw:
        return False  # the cheap test first: most requests are not marked
    try:
        body: Any = jsonfast.loads(raw)
    except ValueError:
        return False
    context = body.get("context") if isinstance(body, dict) else None
    call_id = context.get("call_id") if isinstance(context, dict) else None
    return isinstance(call_id, str) and call_id.startswith(prefix)


def _evd_of(header: str | None) -> str | None:
    if not header:
        return None
    try:
        return parse_vvp_identity(header, None).evd
    except ValueError:
        return None
