"""Keeping Kamailio's "helper down" answer in step with the policy's ``on_error``.

When the helper cannot answer, Kamailio decides alone (kamailio.cfg route[FALLBACK]).
So that the policy file stays the single source of truth, the helper renders the
policy's ``on_error`` action for Kamailio and pushes it into Kamailio's ``vvp`` htable
over JSON-RPC (``htable.sets``) whenever a policy loads, and again every few seconds so
a restarted Kamailio gets it back. Kamailio keeps the last pushed value if the helper
dies, which is exactly when it is needed.

Caller data cannot be known in advance, so the templates are rendered with Kamailio
pseudo-variables in their place ({dest} -> $tU, {orig} -> $fU, ...), and Kamailio
expands them per call (pv_evalx). Inspect what Kamailio holds with
``kamcli rpc htable.dump vvp`` (settings: kamailio/kamcli.ini).
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable, Sequence
from typing import Any

import aiohttp

from vvp_helper.metrics import Metrics
from vvp_helper.policy.model import VERSTAT, Instruction, Policy

log = logging.getLogger("vvp_helper.policy.kamailio_push")

HTABLE = "vvp"
#: Seconds between re-pushes (a Kamailio restart loses its htable).
DEFAULT_INTERVAL = 10.0
FALLBACK_ERROR = {"code": "EXT_HELPER_UNAVAILABLE", "message": "routing helper unavailable"}

#: Template variables Kamailio can fill itself, as the pseudo-variables that hold them.
_KAMAILIO_CONTEXT: dict[str, Any] = {
    "dest": "$tU",
    "orig": "$fU",
    "call_id": "$ci",
    "from_uri": "$fu",
    "to_uri": "$tu",
    "source_ip": "$si",
    "status": "ERROR",
    "outcome": "error",
    "verstat": VERSTAT["error"],
    "errors": [FALLBACK_ERROR],
    "claims": [],
    "rule": "on_error (kamailio fallback)",
}


def fallback_instruction(policy: Policy) -> Instruction:
    """The policy's ``on_error`` answer with Kamailio pseudo-variables for caller data."""
    return policy.action_for("error").render(_KAMAILIO_CONTEXT)


def htable_entries(policy: Policy) -> dict[str, str]:
    instruction = fallback_instruction(policy)
    return {
        "fb_code": str(instruction.code),
        "fb_reason": instruction.reason,
        "fb_contact": instruction.contact or "",
        "fb_headers": instruction.header_block(),
        "fb_policy": policy.sha256[:16],
    }


class FallbackPusher:
    """Pushes the fallback to every configured Kamailio JSON-RPC endpoint."""

    def __init__(self, rpc_urls: Sequence[str], metrics: Metrics, timeout: float = 2.0) -> None:
        self.rpc_urls = tuple(rpc_urls)
        self.metrics = metrics
        self.timeout = timeout
        self._session: aiohttp.ClientSession | None = None

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def push(self, policy: Policy) -> bool:
        if not self.rpc_urls:
            return True
        if self._session is None:
            self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=self.timeout))
        entries = htable_entries(policy)
        results = await asyncio.gather(*(self._push_one(url, entries) for url in self.rpc_urls))
        ok = all(results)
        self.metrics.fallback_push_success.set(1 if ok else 0)
        return ok

    async def _push_one(self, url: str, entries: dict[str, str]) -> bool:
        assert self._session is not None
        # The code goes last: Kamailio uses the fallback only once fb_code is set, so a
        # half-pushed set is never used.
        ordered = sorted(entries.items(), key=lambda item: item[0] == "fb_code")
        try:
            for number, (key, value) in enumerate(ordered, 1):
                request = {
                    "jsonrpc": "2.0",
                    "method": "htable.sets",
                    "params": [HTABLE, key, value],
                    "id": number,
                }
                async with self._session.post(url, data=json.dumps(request)) as response:
                    body = await response.json(content_type=None)
                    if response.status != 200 or "error" in body:
                        raise RuntimeError(f"HTTP {response.status}: {str(body)[:200]}")
        except (aiohttp.ClientError, TimeoutError, RuntimeError, ValueError) as exc:
            log.warning("could not push the fallback to %s: %s", url, exc)
            return False
        return True

    async def keep_pushing(
        self, current: Callable[[], Policy], interval: float = DEFAULT_INTERVAL
    ) -> None:
        """Re-push ``current()``'s policy forever (a Kamailio restart empties its htable)."""
        while True:
            await self.push(current())
            await asyncio.sleep(interval)
