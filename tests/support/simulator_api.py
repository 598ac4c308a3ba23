"""The verifier simulator's HTTP API as tests drive it: its /verify with a minted
identity, and its control endpoints (/_sim/faults, /_sim/stats)."""

from __future__ import annotations

from typing import Any

import aiohttp
import httpx

from tests.support.verifier_shapes import verify_body as verify_body_of
from vvp_simulator.passport import MintedIdentity, mint

ORIG = "+441923311001"
DEST = "+441923311006"


def verify_body(m: MintedIdentity) -> tuple[dict[str, str], dict[str, Any]]:
    """Headers and JSON body of a /verify request for ``m``, as the helper sends it."""
    return {"VVP-Identity": m.vvp_identity}, verify_body_of(m, cseq=1, call_id="call-1@edge")


async def post_verify(client: httpx.AsyncClient, kind: str = "valid") -> httpx.Response:
    """POST /verify for a freshly minted identity of ``kind``."""
    headers, body = verify_body(mint(kind, ORIG, DEST))
    return await client.post("/verify", headers=headers, json=body)


async def set_faults(client: httpx.AsyncClient, **changes: Any) -> dict[str, Any]:
    """Change the simulator's faults; returns all of them as they now are."""
    resp = await client.post("/_sim/faults", json=changes)
    assert resp.status_code == 200, resp.text
    result: dict[str, Any] = resp.json()
    return result


async def set_faults_at(base: str, **faults: object) -> None:
    """set_faults for a test that holds the simulator's base URL, not a client."""
    async with (
        aiohttp.ClientSession() as session,
        session.post(f"{base}/_sim/faults", json=faults) as response,
    ):
        assert response.status == 200, await response.text()


async def verify_requests_at(base: str) -> int:
    """How many /verify requests the simulator at ``base`` has received."""
    async with (
        aiohttp.ClientSession() as session,
        session.get(f"{base}/_sim/stats") as response,
    ):
        return int((await response.json())["verify_requests"])
