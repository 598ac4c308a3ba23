"""Types of the server fixtures in tests/conftest.py, for the tests that use them."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from aiohttp import web

from vvp_helper.config import Settings

#: Starts an aiohttp application on a free loopback port; returns its base URL.
ServeApp = Callable[[web.Application], Awaitable[str]]
#: Starts a helper app with these settings on a free loopback port; returns its base URL.
ServeHelper = Callable[[Settings], Awaitable[str]]
