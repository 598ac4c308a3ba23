"""Replay detection shared between edge nodes through a real Redis server (Debian's
redis-server, started on a free loopback port): a PASSporT seen by one helper is a
replay when it reaches another helper on another call."""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.support.servers import ServeHelper
from tests.support.waiting import wait_until, wait_until_async
from vvp_helper.config import Settings
from vvp_helper.sip.replay import RedisReplayStore
from vvp_simulator.passport import mint

pytestmark = pytest.mark.skipif(shutil.which("redis-server") is None, reason="needs redis-server")

ORIG, DEST = "+441923311001", "+441923311006"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def redis_url(tmp_path: Path) -> Iterator[str]:
    port = free_port()
    server = subprocess.Popen(
        ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "",
         "--appendonly", "no", "--dir", str(tmp_path)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip

    def listening() -> bool:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
        except OSError:
            return False
        return True

    try:
        wait_until(listening, 10, "redis-server did not listen")
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        server.terminate()
        server.wait(timeout=10)


def call(call_id: str, identity: str) -> dict[str, Any]:
    return {
        "call_id": call_id,
        "from_uri": f"sip:{ORIG}@peer.example",
        "to_uri": f"sip:{DEST}@edge.example",
        "received_at": time.time(),
        "identity": [identity],
    }


async def decide(base: str, body: dict[str, Any]) -> dict[str, Any]:
    async with httpx.AsyncClient(base_url=base) as client:
        response = await client.post("/v1/decide", json=body)
    assert response.status_code == 200, response.text
    result: dict[str, Any] = response.json()
    return result


async def test_two_helpers_share_what_they_have_seen(
    serve_helper: ServeHelper, simulator_url: str, redis_url: str
) -> None:
    settings = Settings(verifier_url=simulator_url, replay_redis_url=redis_url)
    node_a = await serve_helper(settings)
    node_b = await serve_helper(settings)
    identity = mint("valid", ORIG, DEST).identity_header()

    first = await decide(node_a, call("call-1", identity))
    assert first["outcome"] == "valid"
    # The same call again (a failover to the other helper): not a replay.
    assert (await decide(node_b, call("call-1", identity)))["outcome"] == "valid"
    # The same PASSporT on another call, at the other node: a replay.
    replayed = await decide(node_b, call("call-2", identity))
    assert replayed["outcome"] == "invalid"
    assert "X-VVP-Error: EXT_PASSPORT_REPLAY\r\n" in replayed["headers"]


async def test_entries_expire_with_the_passport(redis_url: str) -> None:
    store = RedisReplayStore(redis_url)
    try:
        assert await store.first_seen("k1", "call-1", ttl=0.2) == "call-1"
        assert await store.first_seen("k1", "call-2", ttl=0.2) == "call-1"

        # Redis expires the entry after its 0.2 s: a later call is then the first seen.
        # Polled (each look, before expiry, only finds call-1 again); never expiring
        # fails the wait.
        async def first_seen_anew() -> bool:
            return await store.first_seen("k1", "call-3", ttl=0.2) == "call-3"

        await wait_until_async(first_seen_anew, 5, "the entry did not expire")
    finally:
        await store.close()


async def test_a_down_redis_does_not_fail_calls(
    serve_helper: ServeHelper, simulator_url: str
) -> None:
    dead = f"redis://127.0.0.1:{free_port()}/0"
    base = await serve_helper(Settings(verifier_url=simulator_url, replay_redis_url=dead))
    identity = mint("valid", ORIG, DEST).identity_header()
    assert (await decide(base, call("call-1", identity)))["outcome"] == "valid"
    assert (await decide(base, call("call-2", identity)))["outcome"] == "valid"  # undetected
    async with httpx.AsyncClient(base_url=base) as client:
        metrics = (await client.get("/metrics")).text
    assert "vvp_helper_replay_store_errors_total 2.0" in metrics
