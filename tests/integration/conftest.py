"""Fixtures the integration modules share: the simulator on loopback with a client."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest

from vvp_simulator.faults import Faults
from vvp_simulator.server import SimulatorSettings, start


@pytest.fixture
async def base_url() -> AsyncIterator[str]:
    """The simulator on a free loopback port, its random choices seeded (reproducible)."""
    server, port = await start(SimulatorSettings(port=0, faults=Faults(), rng_seed=7))
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        await server.close()


@pytest.fixture
async def client(base_url: str) -> AsyncIterator[httpx.AsyncClient]:
    """An httpx client on the seeded simulator (test_verifier_client has its own
    ``client``, the helper's verifier client)."""
    async with httpx.AsyncClient(base_url=base_url, timeout=5.0) as c:
        yield c
