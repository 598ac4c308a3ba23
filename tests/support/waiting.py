"""Polling for a condition instead of sleeping a fixed time before an assertion."""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

T = TypeVar("T")

#: Seconds between two looks at the condition: short next to anything a test waits for
#: (a process starting, a metric scraped, a SIP answer), long enough not to spin.
INTERVAL_S = 0.05


def wait_until(
    condition: Callable[[], T], timeout: float = 15.0, message: str = "condition not reached"
) -> T:
    """Call ``condition`` until it returns something true and return that; fail the
    test with ``message`` when ``timeout`` seconds pass first. The timeout is a bound on
    a broken run, never the figure under test: a passing run returns as soon as it can."""
    deadline = time.monotonic() + timeout
    while True:
        result = condition()
        if result:
            return result
        if time.monotonic() >= deadline:
            raise AssertionError(f"{message} (waited {timeout:g} s)")
        time.sleep(INTERVAL_S)


async def wait_until_async(
    condition: Callable[[], T | Awaitable[T]],
    timeout: float = 15.0,
    message: str = "condition not reached",
) -> T:
    """wait_until for a test running in an event loop: ``condition`` may be a coroutine
    function (asking a server, say), and the loop keeps running between two looks, so
    servers in the same loop make progress."""
    deadline = time.monotonic() + timeout
    while True:
        looked = condition()
        result = await looked if inspect.isawaitable(looked) else looked
        if result:
            return result
        if time.monotonic() >= deadline:
            raise AssertionError(f"{message} (waited {timeout:g} s)")
        await asyncio.sleep(INTERVAL_S)
