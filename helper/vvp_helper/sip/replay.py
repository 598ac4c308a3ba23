"""PASSporT replay detection: the same PASSporT on a different call within its validity.

No VVP verifier does this today (the spec recommends it; the verifier checks each call on
its own), so a PASSporT captured from one call could be replayed on any number of other
calls while it is fresh. The edge remembers which Call-ID first presented each PASSporT for as long
as a copy could still pass the verifier's 30 s context-alignment check (decision.py,
REPLAY_WINDOW_S); the same PASSporT on another Call-ID is a replay (EXT_PASSPORT_REPLAY,
outcome ``invalid``; a policy rule matching that error code can choose otherwise). The
same Call-ID again (a second helper asked after a failover) is not a replay.

Two stores: in-process (bounded, the default; one edge node) and Redis (several edge
nodes share what they have seen), following the design's rule that shared state goes
into an existing store, never a home-made one.
"""

from __future__ import annotations

import hashlib
import heapq
import logging
import time
from typing import Protocol

log = logging.getLogger("vvp_helper.sip.replay")

#: Most PASSporTs remembered in process; past it the oldest are forgotten first.
DEFAULT_CAPACITY = 200_000


class ReplayStore(Protocol):
    async def first_seen(self, key: str, call_id: str, ttl: float) -> str:
        """Record ``call_id`` for ``key`` unless known; return the Call-ID seen first."""
        ...

    async def close(self) -> None: ...


def passport_key(passport_jwt: str) -> str:
    # A digest: the store never holds the PASSporT itself.
    return hashlib.sha256(passport_jwt.encode("ascii", "replace")).hexdigest()


class MemoryReplayStore:
    """A bounded dict with expiry, for one helper process."""

    def __init__(self, capacity: int = DEFAULT_CAPACITY) -> None:
        self.capacity = capacity
        self._seen: dict[str, tuple[str, float]] = {}
        self._expiry: list[tuple[float, str]] = []

    async def first_seen(self, key: str, call_id: str, ttl: float) -> str:
        now = time.monotonic()
        self._expire(now)
        known = self._seen.get(key)
        if known is not None and known[1] > now:
            return known[0]
        if len(self._seen) >= self.capacity:
            self._evict_oldest()
        deadline = now + ttl
        self._seen[key] = (call_id, deadline)
        heapq.heappush(self._expiry, (deadline, key))
        return call_id

    def __len__(self) -> int:
        return len(self._seen)

    def _expire(self, now: float) -> None:
        while self._expiry and self._expiry[0][0] <= now:
            deadline, key = heapq.heappop(self._expiry)
            entry = self._seen.get(key)
            if entry is not None and entry[1] == deadline:
                del self._seen[key]

    def _evict_oldest(self) -> None:
        while self._expiry:
            deadline, key = heapq.heappop(self._expiry)
            entry = self._seen.get(key)
            if entry is not None and entry[1] == deadline:
                del self._seen[key]
                return

    async def close(self) -> None:
        return None


class RedisReplayStore:
    """Shared between edge nodes: ``SET key call_id NX PX ttl``, else ``GET key``."""

    def __init__(self, url: str, *, prefix: str = "vvp:replay:", timeout: float = 0.2) -> None:
        import redis.asyncio as redis  # optional dependency: only when configured

        self._redis = redis.Redis.from_url(
            url, socket_timeout=timeout, socket_connect_timeout=timeout
        )
        self.prefix = prefix

    async def first_seen(self, key: str, call_id: str, ttl: float) -> str:
        name = self.prefix + key
        milliseconds = max(1, int(ttl * 1000))
        if await self._redis.set(name, call_id, nx=True, px=milliseconds):
            return call_id
        seen = await self._redis.get(name)
        # Expired between the two commands: then this call is the first one after all.
        if seen is None:
            return call_id
        return seen.decode() if isinstance(seen, bytes) else str(seen)

    async def close(self) -> None:
        await self._redis.aclose()


class ReplayGuard:
    """Asks a store; a store that fails never fails the call (detection is skipped)."""

    def __init__(self, store: ReplayStore, *, on_store_error: object = None) -> None:
        self.store = store
        self._on_store_error = on_store_error

    async def is_replay(self, passport_jwt: str, call_id: str, ttl: float) -> bool:
        try:
            first = await self.store.first_seen(passport_key(passport_jwt), call_id, ttl)
        except Exception as exc:  # a down Redis must not take calls down with it
            log.warning("replay store unavailable: %s", type(exc).__name__)
            if callable(self._on_store_error):
                self._on_store_error()
            return False
        return first != call_id

    async def close(self) -> None:
        await self.store.close()
