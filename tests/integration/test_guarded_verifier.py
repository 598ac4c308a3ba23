"""GuardedVerifier with the real VerifierClient against the real simulator on loopback:
who is blamed for an HTTP 500, and the connection the verifier closes after it."""

from __future__ import annotations

import asyncio
import dataclasses
import json
from collections.abc import AsyncIterator

import pytest

from tests.support.simulator_api import set_faults_at
from tests.support.verifier_requests import valid_request
from vvp_helper.errors import VerifierHTTPError, VerifierRefusedRequest
from vvp_helper.metrics import Metrics
from vvp_helper.verifier.client import VerifierClient, VerifyRequest
from vvp_helper.verifier.guard import GuardedVerifier

CRASH = "crash-"


def marked(request: VerifyRequest) -> VerifyRequest:
    return dataclasses.replace(request, call_id=f"{CRASH}1@edge")


@pytest.fixture
async def guarded(simulator_url: str) -> AsyncIterator[GuardedVerifier]:
    await set_faults_at(simulator_url, crash_call_id_prefix=CRASH)
    verifier = GuardedVerifier(
        VerifierClient(f"{simulator_url}/verify", timeout=2.0), metrics=Metrics()
    )
    yield verifier
    await verifier.close()


async def test_a_500_for_one_request_of_a_healthy_verifier_is_that_request_s(
    guarded: GuardedVerifier,
) -> None:
    assert (await guarded.verify(valid_request())).overall_status == "VALID"
    for _ in range(30):
        with pytest.raises(VerifierRefusedRequest) as caught:
            await guarded.verify(marked(valid_request()))
        assert caught.value.outcome == "invalid"
        assert caught.value.code == "PASSPORT_PARSE_FAILED"
        # The simulator closed the keep-alive connection after its 500, as the real
        # verifier does: the next request still gets its verdict.
        assert (await guarded.verify(valid_request())).overall_status == "VALID"
    assert guarded.breaker.state == 0


async def test_a_500_with_no_verdict_seen_is_the_verifier_s(guarded: GuardedVerifier) -> None:
    with pytest.raises(VerifierHTTPError) as caught:
        await guarded.verify(marked(valid_request()))
    assert not isinstance(caught.value, VerifierRefusedRequest)
    assert caught.value.outcome == "error"


async def test_the_simulator_crash_answer_is_the_real_verifier_s(simulator_url: str) -> None:
    # HTTP 500, text/plain, no "Connection: close", and then the connection is closed.
    await set_faults_at(simulator_url, crash_call_id_prefix=CRASH)
    host, port = simulator_url.removeprefix("http://").split(":")
    body = json.dumps(marked(valid_request()).body()).encode()
    reader, writer = await asyncio.open_connection(host, int(port))
    writer.write(
        b"POST /verify HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        b"Content-Length: %d\r\n\r\n%s" % (len(body), body)
    )
    answer = await asyncio.wait_for(reader.read(), 5)  # read() returns at EOF: closed
    writer.close()
    head, _, text = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 500 ")
    assert b"content-type: text/plain" in head.lower()
    assert b"connection: close" not in head.lower()
    assert text == b"Internal Server Error"
