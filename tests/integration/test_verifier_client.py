"""The helper's verifier client (aiohttp.ClientSession) over real HTTP: against the
simulator (every fault mode), a recording server that shows the exact request on the wire,
and a scripted raw-socket verifier for what the edge relies on in HTTP itself."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from datetime import datetime
from typing import Any

import pytest
from aiohttp import web

from tests.support.scripted import VALID_ANSWER, ScriptedVerifier, ok
from tests.support.servers import ServeApp
from tests.support.simulator_api import set_faults_at
from tests.support.verifier_requests import DEST, ORIG, request_for, valid_request
from tests.support.waiting import wait_until_async
from vvp_helper.errors import (
    VerifierBadAnswer,
    VerifierError,
    VerifierHTTPError,
    VerifierTimeout,
    VerifierUnreachable,
)
from vvp_helper.verifier.client import VerifierClient
from vvp_simulator.passport import mint


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
    await set_faults_at(simulator_url, mode=mode)
    with pytest.raises(error) as caught:
        await client.verify(valid_request())
    assert caught.value.code == code


async def test_timeout_is_also_a_builtin_timeout_error(
    simulator_url: str, client: VerifierClient
) -> None:
    # The simulator answers after 2 s: that the call times out at all is the client's
    # configured 0.5 s at work (had it waited, the answer would have been VALID).
    await set_faults_at(simulator_url, latency_ms=2000)
    with pytest.raises(TimeoutError):
        await client.verify(valid_request())


async def test_refused_connection_is_unreachable() -> None:
    client = VerifierClient("http://127.0.0.1:9/verify", timeout=1)
    with pytest.raises(VerifierUnreachable):
        await client.verify(valid_request())
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
        await client.verify(valid_request())
    await client.close()
    assert caught.value.status == 502


# --- the connection pool and HTTP framing (aiohttp's), against a scripted fake verifier


async def test_calls_reuse_one_keep_alive_connection() -> None:
    server = ScriptedVerifier(ok())
    client = VerifierClient(await server.start(), timeout=2)
    for _ in range(5):
        verdict = await client.verify(valid_request())
        assert verdict.overall_status == "VALID"
    await client.close()
    await server.close()
    assert (server.requests, server.connections) == (5, 1)


async def test_a_connection_the_verifier_closed_while_idle_is_replaced() -> None:
    async def answer_then_hang_up(writer: asyncio.StreamWriter) -> None:
        writer.write(ok())  # keep-alive promised, then the server drops it anyway
        await writer.drain()
        writer.close()

    server = ScriptedVerifier(answer_then_hang_up)
    client = VerifierClient(await server.start(), timeout=2)
    for done in range(3):
        # The verifier is done with every connection it hung up on before the next call.
        await wait_until_async(lambda done=done: server.closed == done)
        assert (await client.verify(valid_request())).request_id == "r-1"
    await client.close()
    await server.close()
    assert server.connections == 3


async def test_a_reused_connection_closed_before_any_answer_is_retried_once() -> None:
    async def hang_up(writer: asyncio.StreamWriter) -> None:
        writer.close()  # the race: the verifier closed an idle connection as we sent on it

    server = ScriptedVerifier(ok(), hang_up, ok())
    client = VerifierClient(await server.start(), timeout=2)
    await client.verify(valid_request())
    assert (await client.verify(valid_request())).request_id == "r-1"
    await client.close()
    await server.close()
    assert (server.requests, server.connections) == (3, 2)


@pytest.mark.parametrize(
    "answer",
    [
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
        + b"%x\r\n%s\r\n0\r\n\r\n" % (len(VALID_ANSWER), VALID_ANSWER),
        b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n" + VALID_ANSWER,  # ends at close
    ],
    ids=["chunked", "close-delimited"],
)
async def test_chunked_and_close_delimited_answers_are_read_whole(answer: bytes) -> None:
    async def send_and_close(writer: asyncio.StreamWriter) -> None:
        writer.write(answer)
        await writer.drain()
        writer.close()

    server = ScriptedVerifier(send_and_close)
    client = VerifierClient(await server.start(), timeout=2)
    verdict = await client.verify(valid_request())
    assert verdict.request_id == "r-1"
    await client.close()
    await server.close()


@pytest.mark.parametrize(
    "answer",
    [
        b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % (2 * 1024 * 1024),
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
        + b"100000\r\n"
        + b" " * 0x100000
        + b"\r\n"
        + b"10\r\n"
        + b" " * 16
        + b"\r\n0\r\n\r\n",
    ],
    ids=["announced", "chunked"],
)
async def test_an_answer_over_1_mib_is_a_bad_answer(answer: bytes) -> None:
    server = ScriptedVerifier(answer)
    client = VerifierClient(await server.start(), timeout=2)
    with pytest.raises(VerifierBadAnswer, match="1 MiB"):
        await client.verify(valid_request())
    await client.close()
    await server.close()


async def test_an_answer_cut_mid_body_is_unreachable_and_not_retried() -> None:
    async def half(writer: asyncio.StreamWriter) -> None:
        writer.write(b'HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n{"overall')
        await writer.drain()
        writer.close()

    server = ScriptedVerifier(ok(), half)
    client = VerifierClient(await server.start(), timeout=2)
    await client.verify(valid_request())  # a pooled connection
    with pytest.raises(VerifierUnreachable):
        await client.verify(valid_request())
    await client.close()
    await server.close()
    assert server.requests == 2  # the verifier answered in part: no second copy


async def test_after_a_timeout_the_next_call_gets_a_clean_connection() -> None:
    async def late(writer: asyncio.StreamWriter) -> None:
        await asyncio.sleep(0.5)
        writer.write(ok(b'{"overall_status": "INVALID"}'))

    server = ScriptedVerifier(late, ok())
    client = VerifierClient(await server.start(), timeout=0.2)
    with pytest.raises(VerifierTimeout):
        await client.verify(valid_request())
    # The late answer is sent (and that connection done with): it must not be read as
    # the answer to the next call.
    await wait_until_async(lambda: server.closed == 1)
    verdict = await client.verify(valid_request())
    assert verdict.overall_status == "VALID"
    await client.close()
    await server.close()
    assert server.connections == 2


async def test_garbage_instead_of_http_is_unreachable() -> None:
    server = ScriptedVerifier(b"SSH-2.0-OpenSSH_9.2\r\n\r\n")
    client = VerifierClient(await server.start(), timeout=2)
    with pytest.raises(VerifierUnreachable, match="bad HTTP answer"):
        await client.verify(valid_request())
    await client.close()
    await server.close()


async def test_a_fresh_connection_closed_before_any_answer_is_not_retried() -> None:
    async def hang_up(writer: asyncio.StreamWriter) -> None:
        writer.close()

    server = ScriptedVerifier(hang_up)
    client = VerifierClient(await server.start(), timeout=2)
    with pytest.raises(VerifierUnreachable):
        await client.verify(valid_request())
    await client.close()
    await server.close()
    # A verifier that drops fresh connections is failing: one request per call, not two.
    assert (server.requests, server.connections) == (1, 1)


@pytest.mark.parametrize(
    "interim",
    [
        b"HTTP/1.1 100 Continue\r\n\r\n",
        b"HTTP/1.1 103 Early Hints\r\nLink: </style.css>; rel=preload\r\n\r\n",
        b"HTTP/1.1 102 Processing\r\n\r\nHTTP/1.1 103 Early Hints\r\n\r\n",
    ],
    ids=["100", "103", "102+103"],
)
async def test_interim_1xx_answers_are_skipped_for_the_final_one(interim: bytes) -> None:
    # An interim answer is not the verifier's answer: taking it as one made a call
    # "error" (and under the default policy, an unverified fail-open redirect).
    server = ScriptedVerifier(interim + ok(b'{"overall_status": "INVALID"}'), ok())
    client = VerifierClient(await server.start(), timeout=2)
    assert (await client.verify(valid_request())).overall_status == "INVALID"
    # and the connection is still in step: the next answer is the next request's
    assert (await client.verify(valid_request())).overall_status == "VALID"
    await client.close()
    await server.close()
    assert server.connections == 1


async def test_one_session_serves_every_call_concurrently() -> None:
    server = ScriptedVerifier(ok())
    client = VerifierClient(await server.start(), timeout=2, max_connections=4)
    verdicts = await asyncio.gather(*(client.verify(valid_request()) for _ in range(20)))
    assert {v.overall_status for v in verdicts} == {"VALID"}
    await client.close()
    await server.close()
    # the pool is sized to the concurrency setting, and its connections are reused
    assert server.requests == 20
    assert server.connections <= 4


async def test_an_answer_within_1_mib_sent_in_pieces_is_read_whole() -> None:
    body = b'{"overall_status": "VALID", "request_id": "r-1", "pad": "' + b"x" * 900_000 + b'"}'

    async def slowly(writer: asyncio.StreamWriter) -> None:
        answer = ok(body)
        for start in range(0, len(answer), 65536):
            writer.write(answer[start : start + 65536])
            await writer.drain()
            await asyncio.sleep(0)

    server = ScriptedVerifier(slowly)
    client = VerifierClient(await server.start(), timeout=5)
    assert (await client.verify(valid_request())).request_id == "r-1"
    await client.close()
    await server.close()
