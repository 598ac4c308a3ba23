"""The helper's HTTP boundary, on a real running helper: what a client that misbehaves at
the HTTP level (a partial request, endless chunk extensions, oversized heads) can hold, and
what the verifier client does with interim 1xx answers. Written at the HTTP level so they
hold whatever serves HTTP inside the helper.

A caller decides what it sends, never which branch of the policy answers it: a client
that could keep the helper's connections (file descriptors) would make every call fall
back, and a client that took an interim answer as the verdict would make a call ``error``.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.support.scripted import ScriptedVerifier, ok
from tests.support.servers import ServeHelper
from vvp_helper.config import Settings
from vvp_simulator.passport import mint

REPO = Path(__file__).resolve().parents[2]
ORIG = "+441923311001"
DEST = "+441923311006"
#: Upper bound for the helper to close a connection in these tests; the helper's own
#: bounds below are a fraction of it, so a pass never depends on the machine's speed.
GIVE_UP_S = 8.0


def settings(verifier_url: str = "http://127.0.0.1:9", **changes: Any) -> Settings:
    base = Settings(
        verifier_url=verifier_url,
        policy_path=REPO / "policy" / "default.yaml",
        idle_timeout=0.5,  # scaled down from 75 s
        verifier_timeout=0.5,
        deadline=1.0,  # a stalled body is cut at the deadline
    )
    return base.with_overrides(**changes)


@pytest.fixture
async def helper_port(serve_helper: ServeHelper) -> int:
    base = await serve_helper(settings())
    return int(base.rsplit(":", 1)[1])


async def closed_by_server(reader: asyncio.StreamReader) -> bytes:
    """Everything the helper sends until it closes the connection (fails if it never does)."""
    received = b""
    async with asyncio.timeout(GIVE_UP_S):
        while True:
            try:
                chunk = await reader.read(65536)
            except ConnectionResetError:
                return received
            if not chunk:
                return received
            received += chunk


async def send(port: int, data: bytes) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(data)
    await writer.drain()
    return reader, writer


def status_of(answer: bytes) -> int | None:
    if not answer.startswith(b"HTTP/1."):
        return None
    return int(answer.split(b" ", 2)[1])


async def helper_still_answers(port: int) -> None:
    async with httpx.AsyncClient(timeout=5) as client:
        response = await client.get(f"http://127.0.0.1:{port}/healthz")
    assert response.status_code == 200


async def test_one_byte_of_a_request_then_nothing_is_closed(helper_port: int) -> None:
    reader, writer = await send(helper_port, b"P")
    assert await closed_by_server(reader) == b""  # closed, nothing to answer
    writer.close()
    await helper_still_answers(helper_port)


async def test_a_request_head_dripped_a_byte_at_a_time_is_closed(helper_port: int) -> None:
    # Bytes keep arriving, but the head never ends: the bound is on the whole head,
    # not on the gap between bytes.
    reader, writer = await send(helper_port, b"POST /v1/decide HTTP/1.1\r\n")
    closed = asyncio.ensure_future(closed_by_server(reader))
    while not closed.done():
        try:
            writer.write(b"X")
            await writer.drain()
        except ConnectionError:
            break
        await asyncio.sleep(0.05)
    await closed
    writer.close()


async def test_a_body_that_stops_half_way_is_answered_408_and_closed(helper_port: int) -> None:
    head = b"POST /v1/decide HTTP/1.1\r\nHost: helper\r\nContent-Type: application/json\r\n"
    reader, writer = await send(helper_port, head + b"Content-Length: 400\r\n\r\n{")
    answer = await closed_by_server(reader)
    assert status_of(answer) == 408
    writer.close()


async def test_endless_chunk_extensions_are_cut_and_closed(helper_port: int) -> None:
    head = b"POST /v1/decide HTTP/1.1\r\nHost: helper\r\nTransfer-Encoding: chunked\r\n\r\n1"
    reader, writer = await send(helper_port, head)
    closed = asyncio.ensure_future(closed_by_server(reader))
    # The parser skips extensions without keeping them (no memory grows); what bounds
    # the connection is the deadline on the request body.
    while not closed.done():
        try:
            writer.write(b";ext=value" * 100)
            await writer.drain()
        except ConnectionError:
            break
        await asyncio.sleep(0.01)
    answer = await closed
    assert status_of(answer) in (None, 400, 408)
    writer.close()
    await helper_still_answers(helper_port)


@pytest.mark.parametrize(
    "request_bytes",
    [
        b"GET /healthz?" + b"a" * 20_000 + b" HTTP/1.1\r\nHost: helper\r\n\r\n",
        b"GET /healthz HTTP/1.1\r\nHost: helper\r\nX-Long: " + b"a" * 20_000 + b"\r\n\r\n",
        b"GET /healthz HTTP/1.1\r\nHost: helper\r\n"
        + b"".join(b"X-H%d: a\r\n" % i for i in range(1000))
        + b"\r\n",
    ],
    ids=["request-line", "header-field", "header-count"],
)
async def test_oversized_heads_get_400_and_the_connection_closed(
    helper_port: int, request_bytes: bytes
) -> None:
    reader, writer = await send(helper_port, request_bytes)
    answer = await closed_by_server(reader)
    assert status_of(answer) == 400
    writer.close()


async def test_a_flood_of_partial_requests_holds_no_connection(helper_port: int) -> None:
    # 200 connections, each a request that never completes: all closed by the helper,
    # and the helper answers a real request afterwards (file descriptors came back).
    partials = [
        b"P",
        b"POST /v1/decide HTTP/1.1\r\nHost: helper\r\nContent-Length: 100\r\n\r\n{",
        b"POST /v1/decide HTTP/1.1\r\nHost: helper\r\nTransfer-Encoding: chunked\r\n\r\n1;a=b",
    ]
    connections = [await send(helper_port, partials[i % 3]) for i in range(200)]
    await asyncio.gather(*(closed_by_server(reader) for reader, _ in connections))
    for _, writer in connections:
        writer.close()
    await helper_still_answers(helper_port)


def call_body(identity: list[str]) -> dict[str, Any]:
    """A decision request as kamailio.cfg route[ASK_HELPER] builds it."""
    return {
        "method": "INVITE",
        "request_uri": f"sip:{DEST}@edge.example",
        "from_uri": f"sip:{ORIG}@peer.example",
        "to_uri": f"sip:{DEST}@edge.example",
        "call_id": f"interim-{time.monotonic_ns()}@peer",
        "cseq": 1,
        "source_ip": "192.0.2.10",
        "source_port": 5060,
        "transport": "udp",
        "received_at": time.time(),
        "identity": identity,
        "p_vvp_identity": [],
        "p_vvp_passport": [],
    }


@pytest.fixture
async def early_hints_verifier() -> AsyncIterator[ScriptedVerifier]:
    """A verifier that sends `103 Early Hints` before each answer (INVALID, then VALID)."""
    hints = b"HTTP/1.1 103 Early Hints\r\nLink: </x>; rel=preload\r\n\r\n"
    invalid = ok(
        b'{"overall_status": "INVALID", "request_id": "r-2", "errors": '
        b'[{"code": "PASSPORT_SIG_INVALID", "message": "bad signature"}]}'
    )
    server = ScriptedVerifier(hints + invalid, hints + ok())
    await server.start()
    yield server
    await server.close()


async def test_an_interim_1xx_from_the_verifier_is_not_the_verdict(
    serve_helper: ServeHelper, early_hints_verifier: ScriptedVerifier
) -> None:
    # The verifier's final answer decides: INVALID gets the 403, not an "error" that
    # the default (fail-open) policy would route.
    assert early_hints_verifier.server is not None
    port = early_hints_verifier.server.sockets[0].getsockname()[1]
    base = await serve_helper(settings(f"http://127.0.0.1:{port}", replay_check=False))
    async with httpx.AsyncClient(base_url=base, timeout=5) as client:
        first = await client.post(
            "/v1/decide", json=call_body([mint("valid", ORIG, DEST).identity_header()])
        )
        second = await client.post(
            "/v1/decide", json=call_body([mint("valid", ORIG, DEST).identity_header()])
        )
    assert (first.json()["outcome"], first.json()["code"]) == ("invalid", 403)
    assert "X-VVP-Error: PASSPORT_SIG_INVALID" in first.json()["headers"]
    assert second.json()["outcome"] == "valid"
