"""The helper's HTTP service (HelperService) against the simulator, both real servers on
loopback: Kamailio's decision request in, the instruction Kamailio applies out."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.support.decisions import DEST, ORIG, kamailio_body
from tests.support.edge import metric_in
from tests.support.servers import ServeHelper
from tests.support.simulator_api import set_faults_at
from vvp_helper.config import Settings
from vvp_simulator.passport import mint

REPO = Path(__file__).resolve().parents[2]


def call(**overrides: Any) -> dict[str, Any]:
    """A decision request as kamailio.cfg route[ASK_HELPER] builds it, received now."""
    return kamailio_body(**{"received_at": time.time(), **overrides})


async def client_for(serve_helper: ServeHelper, settings: Settings) -> httpx.AsyncClient:
    base = await serve_helper(settings)
    return httpx.AsyncClient(base_url=base, timeout=5)


@pytest.fixture
async def helper(serve_helper: ServeHelper, simulator_url: str) -> AsyncIterator[httpx.AsyncClient]:
    settings = Settings(
        verifier_url=simulator_url,
        policy_path=REPO / "policy" / "default.yaml",
        verifier_timeout=1.0,
        deadline=1.5,
    )
    async with await client_for(serve_helper, settings) as client:
        yield client


async def decide(helper: httpx.AsyncClient, body: dict[str, Any]) -> dict[str, Any]:
    response = await helper.post("/v1/decide", json=body)
    assert response.status_code == 200, response.text
    result: dict[str, Any] = response.json()
    return result


async def test_valid_rfc8224_identity_gets_the_verified_redirect(helper: httpx.AsyncClient) -> None:
    minted = mint("brand", ORIG, DEST)
    result = await decide(helper, call(identity=[minted.identity_header()]))
    assert result["outcome"] == "valid"
    assert result["code"] == 302
    assert result["contact"] == f"sip:{DEST}@verified.carrier.example"
    lines = result["headers"].split("\r\n")
    assert "X-VVP-Status: VALID" in lines
    assert "X-VVP-Brand-Name: Acme Bank" in lines
    assert result["headers"].endswith("\r\n")


async def test_p_vvp_headers_are_equivalent(helper: httpx.AsyncClient) -> None:
    minted = mint("valid", ORIG, DEST)
    body = call(p_vvp_identity=[minted.vvp_identity], p_vvp_passport=[minted.passport_jwt])
    assert (await decide(helper, body))["outcome"] == "valid"


async def test_forged_identity_is_rejected_with_the_error_code(helper: httpx.AsyncClient) -> None:
    minted = mint("forged", ORIG, DEST)
    result = await decide(helper, call(identity=[minted.identity_header()]))
    assert (result["code"], result["outcome"]) == (403, "invalid")
    assert result["reason"] == "Forbidden - VVP Verification Failed"
    assert "X-VVP-Error: PASSPORT_SIG_INVALID\r\n" in result["headers"]
    assert result["contact"] == ""


async def test_no_identity_is_missing(helper: httpx.AsyncClient) -> None:
    result = await decide(helper, call())
    assert result["outcome"] == "missing"
    assert "X-VVP-Status: MISSING" in result["headers"]


async def test_verifier_down_is_error_with_ext_code(serve_helper: ServeHelper) -> None:
    settings = Settings(verifier_url="http://127.0.0.1:9", verifier_timeout=1.0, deadline=1.5)
    minted = mint("valid", ORIG, DEST)
    async with await client_for(serve_helper, settings) as helper:
        result = await decide(helper, call(identity=[minted.identity_header()]))
    assert result["outcome"] == "error"
    assert result["contact"] == f"sip:{DEST}@fallback.carrier.example"
    assert "X-VVP-Error: EXT_VERIFIER_UNREACHABLE\r\n" in result["headers"]


@pytest.mark.parametrize(
    "body",
    [
        b"not json",
        b"[1, 2]",
        b'{"call_id": 5, "from_uri": "sip:a@b", "to_uri": "sip:c@d", "received_at": 1}',
        b'{"from_uri": "sip:a@b", "to_uri": "sip:c@d", "received_at": 1}',
        # Numbers that are no time (a datetime of them raised: HTTP 500 with a traceback).
        b'{"call_id": "a", "from_uri": "sip:a@b", "to_uri": "sip:c@d", "received_at": "nan"}',
        b'{"call_id": "a", "from_uri": "sip:a@b", "to_uri": "sip:c@d", "received_at": "inf"}',
        b'{"call_id": "a", "from_uri": "sip:a@b", "to_uri": "sip:c@d", "received_at": 1e20}',
        b'{"call_id": "a", "from_uri": "sip:a@b", "to_uri": "sip:c@d", "received_at": "1e20"}',
    ],
)
async def test_bad_decision_requests_get_400(helper: httpx.AsyncClient, body: bytes) -> None:
    response = await helper.post(
        "/v1/decide", content=body, headers={"Content-Type": "application/json"}
    )
    assert response.status_code == 400


async def test_oversized_decision_request_is_refused(helper: httpx.AsyncClient) -> None:
    huge = call(identity=["x" * 70_000])
    response = await helper.post("/v1/decide", json=huge)
    assert response.status_code == 413


async def test_metrics_show_decisions_in_flight_and_done(
    helper: httpx.AsyncClient, simulator_url: str
) -> None:
    await set_faults_at(simulator_url, latency_ms=400)
    minted = mint("valid", ORIG, DEST)
    pending = asyncio.create_task(decide(helper, call(identity=[minted.identity_header()])))
    await asyncio.sleep(0.2)  # the decision now waits for the verifier
    during = (await helper.get("/metrics")).text
    assert metric_in(during, "vvp_helper_requests_in_flight") == 1
    assert (await pending)["outcome"] == "valid"
    after = (await helper.get("/metrics")).text
    assert metric_in(after, "vvp_helper_requests_in_flight") == 0
    done = {"outcome": "valid", "action": "redirect", "code": "302"}
    assert metric_in(after, "vvp_helper_decisions_total", **done) == 1
    # The same kind of decision again counts on the same series.
    await decide(helper, call(identity=[mint("valid", ORIG, DEST).identity_header()]))
    page = (await helper.get("/metrics")).text
    assert metric_in(page, "vvp_helper_decisions_total", **done) == 2


async def test_health_and_readiness(helper: httpx.AsyncClient) -> None:
    alive = await helper.get("/healthz")
    assert alive.status_code == 200
    ready = await helper.get("/readyz")
    assert ready.status_code == 200
    body = ready.json()
    assert body["ready"] is True
    assert len(body["policy_sha256"]) == 64


async def test_not_ready_without_a_verifier(serve_helper: ServeHelper) -> None:
    async with await client_for(serve_helper, Settings()) as helper:
        ready = await helper.get("/readyz")
    assert ready.status_code == 503
    assert ready.json()["ready"] is False
