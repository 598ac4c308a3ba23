"""Shared pytest fixtures: real HTTP servers on loopback ports (no test transport)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from aiohttp import web

from tests.support.servers import ServeApp, ServeHelper
from vvp_helper.app import create_app, serve
from vvp_helper.config import Settings
from vvp_simulator.faults import Faults
from vvp_simulator.server import SimulatorSettings, start


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
async def serve_helper() -> AsyncIterator[ServeHelper]:
    """Start helper apps on 127.0.0.1 (free ports); each call returns a base URL."""
    runners: list[web.AppRunner] = []

    async def serve_one(settings: Settings) -> str:
        runner = await serve(create_app(settings), "127.0.0.1", 0)
        runners.append(runner)
        return f"http://127.0.0.1:{runner.addresses[0][1]}"

    yield serve_one
    for runner in reversed(runners):
        await runner.cleanup()


@pytest.fixture
async def simulator_url() -> AsyncIterator[str]:
    """The verifier simulator as a real HTTP server on a free loopback port."""
    server, port = await start(SimulatorSettings(port=0, faults=Faults()))
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        await server.close()
