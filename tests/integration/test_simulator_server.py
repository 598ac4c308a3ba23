"""The VVP verifier SIMULATOR as a real HTTP server on loopback, and its CLI."""

from __future__ import annotations

import asyncio
import contextlib
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.support.harness import Process, free_port, wait_http
from tests.support.simulator_api import DEST, ORIG, post_verify, set_faults, verify_body
from tests.support.waiting import wait_until_async
from vvp_simulator.keys import SigningKey, b64url_decode, decode_signature
from vvp_simulator.passport import DEMO_ISSUER, MintedIdentity, mint, sign_jwt
from vvp_simulator.server import SimulatorSettings, start
from vvp_simulator.verdict import RESPONSE_KEYS


async def verify_requests_seen(client: httpx.AsyncClient, count: int) -> bool:
    """Whether the simulator has received ``count`` /verify requests by now."""
    stats = (await client.get("/_sim/stats")).json()
    return bool(stats["verify_requests"] == count)


@pytest.mark.parametrize(
    ("kind", "status"),
    [("valid", "VALID"), ("forged", "INVALID"), ("unknown-signer", "INDETERMINATE")],
)
async def test_verify_answers_200_in_contract_shape(
    client: httpx.AsyncClient, kind: str, status: str
) -> None:
    resp = await post_verify(client, kind)
    assert resp.status_code == 200
    assert resp.headers["server"] == "vvp-verifier-simulator"
    assert resp.headers["content-type"].startswith("application/json")
    data = resp.json()
    assert tuple(data) == RESPONSE_KEYS
    assert data["overall_status"] == status


async def test_brand_and_cache_hit_on_second_call(client: httpx.AsyncClient) -> None:
    first = (await post_verify(client, "brand")).json()
    second = (await post_verify(client, "brand")).json()
    assert first["brand_name"] == "Acme Bank"
    assert (first["cache_hit"], second["cache_hit"]) == (False, True)
    assert first["request_id"] != second["request_id"]


async def test_missing_vvp_identity_header_is_a_verdict_not_an_http_error(
    client: httpx.AsyncClient,
) -> None:
    _, body = verify_body(mint("valid", ORIG, DEST))
    resp = await client.post("/verify", json=body)
    assert resp.status_code == 200
    assert resp.json()["errors"][0]["code"] == "VVP_IDENTITY_MISSING"


@pytest.mark.parametrize(
    ("drop", "loc"),
    [
        ("passport_jwt", ["body", "passport_jwt"]),
        ("call_id", ["body", "context", "call_id"]),
        ("received_at", ["body", "context", "received_at"]),
    ],
)
async def test_missing_required_field_is_422_fastapi_shape(
    client: httpx.AsyncClient, drop: str, loc: list[str]
) -> None:
    headers, body = verify_body(mint("valid", ORIG, DEST))
    if drop == "passport_jwt":
        del body["passport_jwt"]
    else:
        del body["context"][drop]
    resp = await client.post("/verify", headers=headers, json=body)
    assert resp.status_code == 422
    assert resp.json() == {
        "detail": [{"loc": loc, "msg": "field required", "type": "value_error.missing"}]
    }


async def test_non_json_body_is_422(client: httpx.AsyncClient) -> None:
    resp = await client.post("/verify", content=b"not json")
    assert resp.status_code == 422
    assert resp.json()["detail"][0]["type"] == "value_error.jsondecode"


@pytest.mark.parametrize("status", [500, 502, 503])
async def test_http_error_modes(client: httpx.AsyncClient, status: int) -> None:
    await set_faults(client, mode=f"http{status}")
    assert (await post_verify(client)).status_code == status
    await set_faults(client, mode="normal")
    assert (await post_verify(client)).status_code == 200


async def test_malformed_mode_sends_truncated_json(client: httpx.AsyncClient) -> None:
    await set_faults(client, mode="malformed")
    resp = await post_verify(client)
    assert resp.status_code == 200
    assert resp.headers["content-type"].startswith("application/json")
    assert resp.text == '{"overall_status": '
    with pytest.raises(json.JSONDecodeError):
        resp.json()


async def test_wrong_shape_mode(client: httpx.AsyncClient) -> None:
    await set_faults(client, mode="wrong_shape")
    resp = await post_verify(client)
    assert resp.status_code == 200 and resp.json() == {"status": "ok"}


async def test_hang_mode_times_the_client_out_and_server_survives(
    client: httpx.AsyncClient,
) -> None:
    await set_faults(client, mode="hang")
    # A read timeout: connected and sent, and no answer came (not refused, not reset).
    with pytest.raises(httpx.ReadTimeout):
        headers, body = verify_body(mint("valid", ORIG, DEST))
        await client.post("/verify", headers=headers, json=body, timeout=0.3)
    await set_faults(client, mode="normal")
    assert (await post_verify(client)).status_code == 200


async def test_reset_mode_drops_the_connection(client: httpx.AsyncClient) -> None:
    await set_faults(client, mode="reset")
    with pytest.raises((httpx.RemoteProtocolError, httpx.ReadError)):
        await post_verify(client)
    await set_faults(client, mode="normal")
    assert (await post_verify(client)).status_code == 200


async def test_latency_delays_the_answer(client: httpx.AsyncClient) -> None:
    # Shown by order, not by a stopwatch: a call sent while the latency is set is still
    # unanswered after a call sent once it is cleared has been answered (the simulator
    # takes each call's faults when the call arrives).
    await set_faults(client, latency_ms=1000)
    slow = asyncio.ensure_future(post_verify(client))
    await wait_until_async(lambda: verify_requests_seen(client, 1))
    await set_faults(client, latency_ms=0)
    assert (await post_verify(client)).status_code == 200
    assert not slow.done()
    assert (await slow).status_code == 200


async def test_error_rate_fails_that_fraction_reproducibly(client: httpx.AsyncClient) -> None:
    await set_faults(client, error_rate=0.5)
    codes = [(await post_verify(client)).status_code for _ in range(40)]
    assert set(codes) == {200, 500}
    assert 8 <= codes.count(500) <= 32
    await set_faults(client, error_rate=1.0)
    assert (await post_verify(client)).status_code == 500
    await set_faults(client, error_rate=0.0)
    assert (await post_verify(client)).status_code == 200


async def test_force_status_overrides_the_verdict(client: httpx.AsyncClient) -> None:
    await set_faults(client, force_status="INVALID")
    data = (await post_verify(client, "valid")).json()
    assert data["overall_status"] == "INVALID" and data["certainty"] == "none"
    await set_faults(client, force_status="WARNING")
    data = (await post_verify(client, "valid")).json()
    assert data["overall_status"] == "WARNING"
    assert data["vetter_warning_reason"] == "vetter_not_authorised_for_jurisdiction"
    await set_faults(client, force_status=None)
    assert (await post_verify(client, "valid")).json()["overall_status"] == "VALID"


async def test_inject_puts_hostile_text_in_the_verdict(client: httpx.AsyncClient) -> None:
    await set_faults(client, inject=True)
    valid = (await post_verify(client, "valid")).json()
    assert valid["overall_status"] == "VALID"
    assert valid["brand_name"] == "Acme\r\nX-Injected: 1"
    assert valid["brand_logo_url"] == "javascript:alert(1)"
    invalid = (await post_verify(client, "forged")).json()
    assert invalid["overall_status"] == "INVALID"
    assert invalid["brand_name"] is None
    assert invalid["errors"][0]["code"] == "PASSPORT_SIG_INVALID"
    assert "\r\nX-Injected: 1" in invalid["errors"][0]["message"]
    assert sorted(invalid) == sorted(RESPONSE_KEYS)  # still the contract's shape
    await set_faults(client, inject=False)
    clean = (await post_verify(client, "forged")).json()
    assert "\r" not in clean["errors"][0]["message"]
    assert (await post_verify(client, "valid")).json()["brand_name"] is None


async def test_faults_endpoint_reports_and_validates(client: httpx.AsyncClient) -> None:
    assert (await client.get("/_sim/faults")).json() == {
        "latency_ms": 0.0,
        "mode": "normal",
        "error_rate": 0.0,
        "force_status": None,
        "inject": False,
        "parser_crash": False,
        "stale_revocation_every_s": 0.0,
        "capacity": None,
        "cold_ms": 0.0,
        "latency_factor": 1.0,
        "crash_call_id_prefix": None,
    }
    assert (await set_faults(client, latency_ms=5))["latency_ms"] == 5
    for bad in (
        {"mode": "explode"},
        {"bogus": 1},
        {"error_rate": 2},
        {"force_status": "OK"},
        {"inject": "yes"},
        {"inject": 1},
        {"parser_crash": 1},
        {"stale_revocation_every_s": -1},
        {"stale_revocation_every_s": True},
    ):
        resp = await client.post("/_sim/faults", json=bad)
        assert resp.status_code == 400, bad
    # A rejected change leaves the faults in force alone.
    assert (await client.get("/_sim/faults")).json()["latency_ms"] == 5


async def test_stats_count_and_reset(client: httpx.AsyncClient) -> None:
    await post_verify(client, "valid")
    await post_verify(client, "valid")
    await post_verify(client, "forged")
    stats = (await client.get("/_sim/stats")).json()
    assert stats["verify_requests"] == 3
    assert stats["by_status"] == {"VALID": 2, "INVALID": 1}
    await client.post("/_sim/reset-stats")
    stats = (await client.get("/_sim/stats")).json()
    assert stats["verify_requests"] == 0 and stats["by_status"] == {}


async def test_healthz(client: httpx.AsyncClient) -> None:
    resp = await client.get("/healthz")
    assert resp.status_code == 200
    assert resp.headers["server"] == "vvp-verifier-simulator"


@pytest.mark.parametrize(
    ("method", "path", "status", "detail"),
    [
        ("GET", "/verify", 405, "Method Not Allowed"),
        ("POST", "/healthz", 405, "Method Not Allowed"),
        ("GET", "/nowhere", 404, "Not Found"),
        ("POST", "/verify/", 404, "Not Found"),
    ],
)
async def test_unknown_routes_answer_as_fastapi_does(
    client: httpx.AsyncClient, method: str, path: str, status: int, detail: str
) -> None:
    resp = await client.request(method, path)
    assert resp.status_code == status
    assert resp.json() == {"detail": detail}
    assert resp.headers["server"] == "vvp-verifier-simulator"


async def test_untrusted_demo_issuer_when_trust_seeds_differ() -> None:
    server, port = await start(SimulatorSettings(port=0, trust_seeds=("someone-else",)))
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as c:
            data = (await post_verify(c, "valid")).json()
    finally:
        await server.close()
    assert data["overall_status"] == "INDETERMINATE"
    assert data["errors"][0]["code"] == "KERI_RESOLUTION_FAILED"


# --- CLI -------------------------------------------------------------------------


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "vvp_simulator", *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_cli_mint_json() -> None:
    proc = run_cli("mint", "--kind", "brand", "--orig", ORIG, "--dest", DEST, "--format", "json")
    assert proc.returncode == 0, proc.stderr
    data = json.loads(proc.stdout)
    assert data["kind"] == "brand" and data["orig"] == ORIG and data["dest"] == DEST
    assert data["identity"] == f"{data['passport_jwt']};info=<{data['kid']}>;alg=EdDSA;ppt=vvp"
    assert len(decode_signature(data["passport_jwt"].split(".")[2])) == 64
    assert json.loads(b64url_decode(data["vvp_identity"]))["kid"] == data["kid"]


def test_cli_mint_headers() -> None:
    proc = run_cli("mint", "--orig", ORIG, "--dest", DEST)
    assert proc.returncode == 0, proc.stderr
    names = [line.split(":", 1)[0] for line in proc.stdout.splitlines()]
    assert names == ["Identity", "P-VVP-Identity", "P-VVP-Passport"]


def test_cli_bad_kind_exits_2_with_prefixed_error() -> None:
    proc = run_cli("mint", "--kind", "nope", "--orig", ORIG, "--dest", DEST)
    assert proc.returncode == 2
    assert "vvp-simulator: error:" in proc.stderr


def test_cli_mint_csv(tmp_path: Path) -> None:
    out = tmp_path / "calls.csv"
    proc = run_cli(
        "mint-csv", "--out", str(out), "--count", "5", "--kind", "valid,forged",
        "--orig", ORIG, "--dest", DEST,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    lines = out.read_text(encoding="ascii").splitlines()
    assert lines[0] == "SEQUENTIAL" and len(lines) == 6
    rows = [line.split(";") for line in lines[1:]]
    assert all(len(r) == 6 for r in rows)
    assert [r[5] for r in rows] == ["valid", "forged", "valid", "forged", "valid"]
    orig, dest, jwt, kid, vvp_identity, _ = rows[0]
    assert (orig, dest) == (ORIG, DEST)
    assert jwt.count(".") == 2 and kid.startswith("http://witness.demo.example:5642/oobi/D")
    assert json.loads(b64url_decode(vvp_identity))["kid"] == kid


async def test_cli_csv_rows_verify_against_the_server(
    tmp_path: Path, client: httpx.AsyncClient
) -> None:
    out = tmp_path / "calls.csv"
    kinds = "valid,wrong-number,indeterminate"
    proc = run_cli(
        "mint-csv", "--out", str(out), "--count", "3", "--kind", kinds,
        "--orig", ORIG, "--dest", DEST,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    statuses = []
    for line in out.read_text(encoding="ascii").splitlines()[1:]:
        orig, dest, jwt, kid, vvp_identity, kind = line.split(";")
        m = MintedIdentity(jwt, vvp_identity, kid, orig, dest, kind)
        headers, body = verify_body(m)
        statuses.append((await client.post("/verify", headers=headers, json=body)).json())
    assert [s["overall_status"] for s in statuses] == ["VALID", "INVALID", "INDETERMINATE"]


# --- as the real verifier: encodings, signers, crash, failure modes ---------------


@pytest.mark.parametrize(("sig_form", "aid_code"), [("jws", "D"), ("cesr", "B"), ("jws", "B")])
async def test_signature_forms_and_aid_forms_are_valid_over_http(
    client: httpx.AsyncClient, sig_form: str, aid_code: str
) -> None:
    m = mint("valid", ORIG, DEST, sig_form=sig_form, aid_code=aid_code)
    headers, body = verify_body(m)
    data = (await client.post("/verify", headers=headers, json=body)).json()
    assert (data["overall_status"], data["errors"]) == ("VALID", None)
    assert data["signer_aid"] == DEMO_ISSUER.aid_for(aid_code)


def test_cli_trust_aid_trusts_an_issuer_by_its_public_aid(tmp_path: Path) -> None:
    # An operator's issuer: minted with its seed, trusted by the simulator by its B AID alone
    # (read from the minted kid), both through the CLI.
    proc = run_cli(
        "mint", "--orig", ORIG, "--dest", DEST, "--format", "json",
        "--seed", "an-operators-issuer", "--aid-code", "B",
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    minted = json.loads(proc.stdout)
    aid = minted["kid"].split("/oobi/")[1].split("/")[0]
    issuer = SigningKey.from_seed_text("an-operators-issuer")
    assert aid == issuer.aid_for("B")
    port = free_port()
    sim = Process(
        "simulator",
        [sys.executable, "-m", "vvp_simulator", "serve", "--port", str(port), "--trust-aid", aid],
        tmp_path / "sim.log",
    )
    sim.start()
    try:
        url = f"http://127.0.0.1:{port}"
        wait_http(f"{url}/healthz")

        def judge(m: MintedIdentity) -> tuple[str, list[str]]:
            headers, body = verify_body(m)
            data = httpx.post(f"{url}/verify", headers=headers, json=body, timeout=5).json()
            return data["overall_status"], [e["code"] for e in data["errors"] or []]

        cli_minted = MintedIdentity(
            minted["passport_jwt"], minted["vvp_identity"], minted["kid"], ORIG, DEST, "valid"
        )
        assert judge(cli_minted) == ("VALID", [])
        # Only what was named is trusted: not the same key's D AID, not the demo issuer.
        untrusted = ("INDETERMINATE", ["KERI_RESOLUTION_FAILED"])
        assert judge(mint("valid", ORIG, DEST, key=issuer, aid_code="D")) == untrusted
        assert judge(mint("valid", ORIG, DEST)) == untrusted
    finally:
        sim.stop()
    assert "VVP verifier SIMULATOR" in sim.output()


def test_cli_trust_aid_refuses_a_bad_aid(tmp_path: Path) -> None:
    proc = run_cli("serve", "--port", "0", "--trust-aid", "Enot-an-ed25519-aid")
    assert proc.returncode == 2
    assert "vvp-simulator: error: cannot trust 'Enot-an-ed25519-aid'" in proc.stderr


def test_cli_mint_sig_form_and_aid_code() -> None:
    proc = run_cli(
        "mint", "--orig", ORIG, "--dest", DEST, "--format", "json",
        "--sig-form", "jws", "--aid-code", "B",
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    data = json.loads(proc.stdout)
    assert len(data["passport_jwt"].rsplit(".", 1)[1]) == 86
    assert f"/oobi/{DEMO_ISSUER.aid_for('B')}/" in data["kid"]


def _raw_request(port: int, headers: dict[str, str], body: dict[str, Any]) -> bytes:
    payload = json.dumps(body).encode()
    lines = [
        "POST /verify HTTP/1.1",
        f"Host: 127.0.0.1:{port}",
        "Content-Type: application/json",
        f"Content-Length: {len(payload)}",
        *(f"{name}: {value}" for name, value in headers.items()),
    ]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + payload


async def _read_response(reader: asyncio.StreamReader) -> tuple[int, dict[str, str], bytes]:
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
    status_line, *header_lines = head.decode("latin-1").split("\r\n")
    fields = {}
    for line in header_lines:
        if line:
            name, _, value = line.partition(":")
            fields[name.strip().lower()] = value.strip()
    body = await asyncio.wait_for(reader.readexactly(int(fields["content-length"])), 5)
    return int(status_line.split()[1]), fields, body


def _without_kid(m: MintedIdentity) -> str:
    head, payload, _ = m.passport_jwt.split(".")
    header = json.loads(b64url_decode(head))
    del header["kid"]
    return sign_jwt(header, json.loads(b64url_decode(payload)), DEMO_ISSUER)


async def test_parser_crash_answers_500_text_then_closes_the_keepalive_connection(
    base_url: str, client: httpx.AsyncClient
) -> None:
    port = int(base_url.rsplit(":", 1)[1])
    m = mint("valid", ORIG, DEST)
    headers, good = verify_body(m)
    bad = {**good, "passport_jwt": _without_kid(m)}
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        # Fault off: the parser's code, and the connection stays usable.
        writer.write(_raw_request(port, headers, bad))
        status, fields, body = await _read_response(reader)
        assert status == 200 and json.loads(body)["errors"][0]["code"] == "PASSPORT_PARSE_FAILED"
        await set_faults(client, parser_crash=True)
        writer.write(_raw_request(port, headers, good))
        status, _, body = await _read_response(reader)
        assert status == 200 and json.loads(body)["overall_status"] == "VALID"

        writer.write(_raw_request(port, headers, bad))
        status, fields, body = await _read_response(reader)
        assert status == 500
        assert fields["content-type"].startswith("text/plain")
        assert body == b"Internal Server Error"
        assert "connection" not in fields  # no Connection: close, as the real one
        # The next request on that keep-alive connection finds it closed (EOF or reset).
        with contextlib.suppress(ConnectionError):
            writer.write(_raw_request(port, headers, good))
            await writer.drain()
        with contextlib.suppress(ConnectionError):
            assert await asyncio.wait_for(reader.read(), 5) == b""
    finally:
        writer.close()
        with contextlib.suppress(ConnectionError):
            await writer.wait_closed()
    stats = (await client.get("/_sim/stats")).json()
    assert stats["faults"]["parser_crash"] == 1
    # Without a SIP context the real verifier does not crash: the parser's code.
    no_sip = {**bad, "context": {k: v for k, v in bad["context"].items() if k != "sip"}}
    data = (await client.post("/verify", headers=headers, json=no_sip)).json()
    assert data["errors"][0]["code"] == "PASSPORT_PARSE_FAILED"


async def test_stale_revocation_fault_over_http(client: httpx.AsyncClient) -> None:
    # A period shorter than any two calls: every cached call is stale.
    await set_faults(client, stale_revocation_every_s=1e-9)
    m = mint("valid", ORIG, DEST)
    headers, body = verify_body(m)
    first = (await client.post("/verify", headers=headers, json=body)).json()
    second = (await client.post("/verify", headers=headers, json=body)).json()
    assert (first["overall_status"], first["cache_hit"]) == ("VALID", False)
    assert (second["overall_status"], second["cache_hit"]) == ("INDETERMINATE", True)
    assert second["errors"] is None and second["certainty"] == "partial"
    assert second["revocation_pending"] is False
    await set_faults(client, stale_revocation_every_s=0)
    third = (await client.post("/verify", headers=headers, json=body)).json()
    assert third["overall_status"] == "VALID"


async def test_warning_over_http(client: httpx.AsyncClient) -> None:
    data = (await post_verify(client, "warning")).json()
    assert data["overall_status"] == "WARNING"
    assert data["vetter_warning_reason"] == "vetter_not_authorised_for_jurisdiction"
