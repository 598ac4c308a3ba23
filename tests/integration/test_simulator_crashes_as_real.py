"""The verifier simulator crashes as the real VVP verifier does (HTTP 500 and the
connection closed) on the recorded cases that crash it, compared over HTTP on loopback
(the other recorded cases: tests/unit/test_simulator_matches_real.py)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
from collections.abc import AsyncIterator
from typing import Any

import pytest

from tests.support.recorded_verifier import CASES, CRASHES, DEST, ORIG, load, request
from vvp_simulator.faults import Faults
from vvp_simulator.passport import mint
from vvp_simulator.server import SimulatorSettings, start


@pytest.fixture
async def crashing_simulator() -> AsyncIterator[int]:
    server, port = await start(SimulatorSettings(port=0, faults=Faults(parser_crash=True)))
    try:
        yield port
    finally:
        await server.close()


async def _exchange(port: int, body: dict[str, Any], vvp_identity: str) -> tuple[str, bytes]:
    """One keep-alive request; (status line and headers, body), then whether it closed."""
    payload = json.dumps(body).encode()
    head = (
        f"POST /verify HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(payload)}\r\nVVP-Identity: {vvp_identity}\r\n\r\n"
    ).encode()
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(head + payload)
        raw_head = (await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)).decode("latin-1")
        length = int(re.search(r"(?im)^content-length:\s*(\d+)", raw_head).group(1))  # type: ignore[union-attr]
        raw_body = await asyncio.wait_for(reader.readexactly(length), 5)
        # The next request on this keep-alive connection: closed or reset, as recorded.
        with contextlib.suppress(ConnectionError):
            writer.write(head + payload)
            await writer.drain()
        with contextlib.suppress(ConnectionError):
            assert await asyncio.wait_for(reader.read(), 5) == b"", "connection left open"
    finally:
        writer.close()
        with contextlib.suppress(ConnectionError):
            await writer.wait_closed()
    return raw_head, raw_body


@pytest.mark.parametrize("case", CRASHES)
async def test_simulator_crashes_as_the_real_verifier(case: str, crashing_simulator: int) -> None:
    real = load(case)
    assert real["http_status"] == 500 and "closed" in real["connection_after"]
    m = mint("brand", ORIG, DEST)
    tamper = CASES[case].tamper
    assert tamper is not None
    raw_head, raw_body = await _exchange(
        crashing_simulator, request(m, jwt=tamper(m)), m.vvp_identity
    )
    status = int(raw_head.split()[1])
    fields = {
        line.split(":", 1)[0].strip().lower(): line.split(":", 1)[1].strip()
        for line in raw_head.split("\r\n")[1:]
        if ":" in line
    }
    assert status == real["http_status"]
    assert fields["content-type"] == real["content_type"]
    assert raw_body.decode() == real["body"]
    # The real answer has no Connection header: neither keep-alive nor close.
    assert "connection" not in real["headers"] and "connection" not in fields
