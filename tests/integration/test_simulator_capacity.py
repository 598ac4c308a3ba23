"""The simulator's load behaviour (vvp_simulator.capacity) over real HTTP: cold dossiers
paid by every concurrent first call, the run-time settings and their validation."""

from __future__ import annotations

import asyncio

import httpx
import pytest

from tests.support.simulator_api import post_verify, set_faults
from vvp_simulator.capacity import Load
from vvp_simulator.faults import Faults


async def test_concurrent_first_calls_for_a_dossier_each_pay_the_cold_time(
    client: httpx.AsyncClient,
) -> None:
    await set_faults(client, cold_ms=300, capacity=1000)
    first = await asyncio.gather(*(post_verify(client) for _ in range(5)))
    assert [r.status_code for r in first] == [200] * 5
    stats = (await client.get("/_sim/stats")).json()
    assert stats["faults"]["cold"] == 5  # no single-flight: each fetched the dossier
    assert (await post_verify(client)).status_code == 200
    stats = (await client.get("/_sim/stats")).json()
    assert stats["faults"]["cold"] == 5  # warm now


async def test_a_marked_call_id_gets_the_crash_answer_others_their_verdict(
    client: httpx.AsyncClient,
) -> None:
    await set_faults(client, crash_call_id_prefix="call-")  # request_for uses call-1@edge
    crashed = await post_verify(client)
    assert crashed.status_code == 500
    assert crashed.headers["content-type"].startswith("text/plain")
    await set_faults(client, crash_call_id_prefix="other-")
    assert (await post_verify(client)).status_code == 200


def test_workers_give_exactly_the_capacity() -> None:
    load = Load()
    assert load.workers(200) == (4, 0.02)
    slots, service = load.workers(25)
    assert slots / service == pytest.approx(25)


@pytest.mark.parametrize(
    "changes",
    [
        {"capacity": 0},
        {"capacity": True},
        {"cold_ms": -1},
        {"latency_factor": 0},
        {"crash_call_id_prefix": ""},
        {"crash_call_id_prefix": 5},
    ],
)
def test_bad_load_settings_are_refused(changes: dict[str, object]) -> None:
    with pytest.raises(ValueError):
        Faults().updated(changes)
