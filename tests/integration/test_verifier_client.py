"""The helper's verifier client over real HTTP: against the simulator_url (every fault mode)
and against a recording server that shows the exact request on the wire."""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import pytest
from aiohttp import web
from conftest import ServeApp

from vvp_helper.errors import (
    VerifierBadAnswer,
    VerifierError,
    VerifierHTTPError,
    VerifierTimeout,
    VerifierUnreachable,
)
from vvp_helper.verifier import VerifierClient, VerifyRequest
from vvp_simulator.passport import MintedIdentity, mint

ORIG = "+441923311001"
DEST = "+441923311006"


def request_for(minted: MintedIdentity, from_number: str = ORIG) -> VerifyRequest:
    now = datetime.now(UTC).isoformat()
    return VerifyRequest(
        vvp_identity=minted.vvp_identity,
        passport_jwt=minted.passport_jwt,
        call_id="call-1@edge",
        received_at=now,
        from_uri=f"sip:{from_number}@carrier.example",
        to_uri=f"sip:{DEST}@carrier.example",
        invite_time=now,
        cseq=1,
    )


async def set_faults(base: str, **faults: object) -> None:
    client = VerifierClient(f"{base}/_sim/faults", timeout=2)
    session = client._get_session()
    async with session.post(f"{base}/_sim/faults", json=faults) as response:
        assert response.status == 200, await response.text()
    await client.close()


@pytest.fixture
async def client(simulator_url: str) -> AsyncIterator[VerifierClient]:
    verifier = VerifierClient(f"{simulator_url}/verify", timeout=0.5)
    yield verifier
    await verifier.close()


@pytest.mark.parametrize(
    ("kind", "status", "first_error"),
    [
        ("valid", "VALID", None),
        ("forged", "INVALID", "PASSPORT_SIG_INVALID"),
        ("indeterminate", "INDETERMINATE", "DOSSIER_FETCH_FAILED"),
        ("warning", "WARNING", None),
    ],
)
async def test_verdicts_come_back_with_their_fields(
    client: VerifierClient, kind: str, status: str, first_error: str | None
) -> None:
    verdict = await client.verify(request_for(mint(kind, ORIG, DEST)))
    assert verdict.overall_status == status
    assert verdict.request_id
    assert (verdict.errors[0].code if verdict.errors else None) == first_error


async def test_brand_fields_are_read(client: VerifierClient) -> None:
    verdict = await client.verify(request_for(mint("brand", ORIG, DEST)))
    assert verdict.brand_name == "Acme Bank"
    assert verdict.brand_logo_url == "https://brand.demo.example/acme.png"
    assert verdict.claims and verdict.claims[0]["name"] == "caller_authorised"


async def test_context_is_sent_so_a_wrong_from_number_is_a_mismatch(
    client: VerifierClient,
) -> None:
    verdict = await client.verify(request_for(mint("valid", ORIG, DEST), from_number=DEST))
    assert verdict.overall_status == "INVALID"
    assert [e.code for e in verdict.errors] == ["CONTEXT_MISMATCH"]


@pytest.mark.parametrize(
    ("mode", "error", "code"),
    [
        ("http500", VerifierHTTPError, "EXT_VERIFIER_HTTP_STATUS"),
        ("http502", VerifierHTTPError, "EXT_VERIFIER_HTTP_STATUS"),
        ("http503", VerifierHTTPError, "EXT_VERIFIER_HTTP_STATUS"),
        ("malformed", VerifierBadAnswer, "EXT_VERIFIER_BAD_ANSWER"),
        ("wrong_shape", VerifierBadAnswer, "EXT_VERIFIER_BAD_ANSWER"),
        ("reset", VerifierUnreachable, "EXT_VERIFIER_UNREACHABLE"),
        ("hang", VerifierTimeout, "EXT_VERIFIER_TIMEOUT"),
    ],
)
async def test_every_failure_is_a_verifier_error_with_an_ext_code(
    simulator_url: str,
    client: VerifierClient,
    mode: str,
    error: type[VerifierError],
    code: str,
) -> None:
    await set_faults(simulator_url, mode=mode)
    with pytest.raises(error) as caught:
        await client.verify(request_for(mint("valid", ORIG, DEST)))
    assert caught.value.code == code


async def test_timeout_is_also_a_builtin_timeout_error(
    simulator_url: str, client: VerifierClient
) -> None:
    await set_faults(simulator_url, latency_ms=2000)
    started = time.monotonic()
    with pytest.raises(TimeoutError):
        await client.verify(request_for(mint("valid", ORIG, DEST)))
    # The configured 0.5 s, not the simulator's 2 s.
    assert time.monotonic() - started < 1.5


async def test_refused_connection_is_unreachable() -> None:
    client = VerifierClient("http://127.0.0.1:9/verify", timeout=1)
    with pytest.raises(VerifierUnreachable):
        await client.verify(request_for(mint("valid", ORIG, DEST)))
    await client.close()


async def test_request_on_the_wire_matches_the_contract(serve_app: ServeApp) -> None:
    seen: dict[str, Any] = {}

    async def record(request: web.Request) -> web.Response:
        seen["headers"] = dict(request.headers)
        seen["body"] = json.loads(await request.read())
        seen["path"] = request.path
        return web.json_response({"overall_status": "VALID", "request_id": "r-1"})

    app = web.Application()
    app.router.add_post("/verify", record)
    base = await serve_app(app)
    client = VerifierClient(f"{base}/verify", timeout=2, token="s3cret")
    minted = mint("valid", ORIG, DEST)
    verdict = await client.verify(request_for(minted))
    await client.close()

    assert verdict.request_id == "r-1"
    assert seen["path"] == "/verify"
    assert seen["headers"]["VVP-Identity"] == minted.vvp_identity
    assert seen["headers"]["Authorization"] == "Bearer s3cret"
    body = seen["body"]
    assert body["passport_jwt"] == minted.passport_jwt
    assert body["context"]["call_id"] == "call-1@edge"
    assert set(body["context"]) == {"call_id", "received_at", "sip"}
    assert body["context"]["sip"]["from_uri"] == f"sip:{ORIG}@carrier.example"
    assert body["context"]["sip"]["to_uri"] == f"sip:{DEST}@carrier.example"
    assert body["context"]["sip"]["cseq"] == 1
    datetime.fromisoformat(body["context"]["sip"]["invite_time"])  # RFC 3339


async def test_a_proxy_error_page_is_an_http_error(serve_app: ServeApp) -> None:
    async def proxy_page(request: web.Request) -> web.Response:
        return web.Response(status=502, text="<html>Bad Gateway</html>")

    app = web.Application()
    app.router.add_post("/verify", proxy_page)
    base = await serve_app(app)
    client = VerifierClient(f"{base}/verify", timeout=2)
    with pytest.raises(VerifierHTTPError) as caught:
        await client.verify(request_for(mint("valid", ORIG, DEST)))
    await client.close()
    assert caught.value.status == 502
