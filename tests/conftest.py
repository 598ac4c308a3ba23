"""Shared pytest fixtures: real aiohttp servers on loopback ports (no test transport)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable

import pytest
from aiohttp import web

from vvp_simulator.faults import Faults
from vvp_simulator.server import SimulatorSettings, start

ServeApp = Callable[[web.Application], Awaitable[str]]


@pytest.fixture
async def serve_app() -> AsyncIterator[ServeApp]:
    """Start an aiohttp application on 127.0.0.1 (free port); returns its base URL."""
    runners: list[web.AppRunner] = []

    async def serve(app: web.Application) -> str:
        runner = web.AppRunner(app, shutdown_timeout=1.0)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        runners.append(runner)
        return f"http://127.0.0.1:{runner.addresses[0][1]}"

    yield serve
    for runner in reversed(runners):
        await runner.cleanup()


@pytest.fixture
async def simulator_url() -> AsyncIterator[str]:
    """The verifier simulator as a real HTTP server on a free loopback port."""
    runner, port = await start(SimulatorSettings(port=0, faults=Faults()))
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        await runner.cleanup()
