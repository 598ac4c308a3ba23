"""The helper's own HTTP/1.1 server (vvp_helper.httpserver), on a real loopback socket,
spoken to byte by byte: what Kamailio's libcurl, the helper's verifier client, Prometheus
and an operator's curl rely on."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from vvp_helper.httpserver import (
    MAX_PIPELINED,
    DropConnection,
    HttpServer,
    Request,
    Response,
    json_response,
)


async def echo(request: Request) -> Response:
    return json_response(
        {
            "method": request.method,
            "path": request.path,
            "query": request.query,
            "body": request.body.decode(),
            "headers": dict(request.headers),
            "remote": request.remote,
        }
    )


async def slow(request: Request) -> Response:
    await asyncio.sleep(float(request.query or "0.2"))
    return Response(body=b"slow")


async def broken(request: Request) -> Response:
    raise RuntimeError("a bug in a handler")


async def drop(request: Request) -> Response:
    raise DropConnection


async def hang(request: Request) -> Response:
    await asyncio.sleep(3600)
    return Response()


ROUTES = {
    ("POST", "/echo"): echo,
    ("GET", "/echo"): echo,
    ("GET", "/slow"): slow,
    ("GET", "/broken"): broken,
    ("GET", "/drop"): drop,
    ("GET", "/hang"): hang,
}


@pytest.fixture
async def server() -> AsyncIterator[tuple[HttpServer, int]]:
    server = HttpServer(ROUTES, max_body_bytes=1000, server_header="test-server")
    port = await server.start("127.0.0.1", 0)
    yield server, port
    await server.close()


async def connect(port: int) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    return await asyncio.open_connection("127.0.0.1", port)


async def read_answer(reader: asyncio.StreamReader) -> tuple[int, dict[str, str], bytes]:
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    headers = {}
    for line in lines[1:]:
        if line:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
    body = await reader.readexactly(int(headers.get("content-length", "0")))
    return status, headers, body


async def closed_by_server(reader: asyncio.StreamReader) -> bool:
    return await asyncio.wait_for(reader.read(1), 5) == b""


def post(path: str, body: bytes, *extra: str) -> bytes:
    head = [f"POST {path} HTTP/1.1", "Host: t", f"Content-Length: {len(body)}", *extra]
    return ("\r\n".join(head) + "\r\n\r\n").encode() + body


async def test_keep_alive_answers_several_requests_on_one_connection(server) -> None:
    _, port = server
    reader, writer = await connect(port)
    for n in range(3):
        writer.write(post(f"/echo?n={n}", b'{"a": 1}', "X-Thing: one", "x-thing: two"))
        status, headers, body = await read_answer(reader)
        assert status == 200
        assert headers["content-type"] == "application/json"
        assert headers["server"] == "test-server"
        assert "date" in headers and "connection" not in headers
        assert f'"query":"n={n}"' in body.decode()
        assert '"body":"{\\"a\\": 1}"' in body.decode()
        # Header names arrive lower-cased; repeats are joined in order.
        assert '"x-thing":"one, two"' in body.decode()
        assert '"remote":"127.0.0.1"' in body.decode()
    writer.close()


async def test_pipelined_requests_are_answered_in_order(server) -> None:
    _, port = server
    reader, writer = await connect(port)
    # The first answer takes longest: a server answering as handlers finish would swap them.
    writer.write(
        b"GET /slow?0.3 HTTP/1.1\r\nHost: t\r\n\r\nGET /echo?second HTTP/1.1\r\nHost: t\r\n\r\n"
    )
    assert (await read_answer(reader))[2] == b"slow"
    assert b'"query":"second"' in (await read_answer(reader))[2]
    writer.close()


async def test_a_pipelined_flood_is_paced_not_dropped(server) -> None:
    _, port = server
    reader, writer = await connect(port)
    count = MAX_PIPELINED * 4
    writer.write(b"".join(b"GET /echo?%d HTTP/1.1\r\nHost: t\r\n\r\n" % n for n in range(count)))
    for n in range(count):
        status, _, body = await read_answer(reader)
        assert status == 200 and f'"query":"{n}"'.encode() in body
    writer.close()


async def test_http10_and_connection_close_end_the_connection_after_the_answer(server) -> None:
    _, port = server
    for request in (
        b"GET /echo HTTP/1.0\r\n\r\n",
        b"GET /echo HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n",
    ):
        reader, writer = await connect(port)
        writer.write(request)
        status, headers, _ = await read_answer(reader)
        assert status == 200 and headers["connection"] == "close"
        assert await closed_by_server(reader)
        writer.close()


async def test_chunked_request_body_arrives_whole(server) -> None:
    _, port = server
    reader, writer = await connect(port)
    writer.write(
        b"POST /echo HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n"
    )
    status, _, body = await read_answer(reader)
    assert status == 200 and b'"body":"hello world"' in body
    writer.close()


async def test_expect_100_continue_gets_the_interim_answer_first(server) -> None:
    _, port = server
    reader, writer = await connect(port)
    writer.write(
        b"POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 2\r\nExpect: 100-continue\r\n\r\n"
    )
    interim = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
    assert interim == b"HTTP/1.1 100 Continue\r\n\r\n"
    writer.write(b"{}")
    status, _, body = await read_answer(reader)
    assert status == 200 and b'"body":"{}"' in body
    writer.close()


@pytest.mark.parametrize(
    "request_bytes",
    [
        post("/echo", b"x" * 1001),  # announced too large: refused before the body
        b"POST /echo HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n"
        + b"200\r\n"
        + b"x" * 512
        + b"\r\n"
        + b"200\r\n"
        + b"x" * 512
        + b"\r\n0\r\n\r\n",
    ],
    ids=["content-length", "chunked"],
)
async def test_a_body_over_the_cap_gets_413_and_the_connection_closes(
    server, request_bytes: bytes
) -> None:
    _, port = server
    reader, writer = await connect(port)
    writer.write(request_bytes)
    status, headers, body = await read_answer(reader)
    assert status == 413 and headers["connection"] == "close"
    assert b"too large" in body
    assert await closed_by_server(reader)
    writer.close()


async def test_garbage_gets_400_and_the_connection_closes(server) -> None:
    _, port = server
    reader, writer = await connect(port)
    writer.write(b"\x16\x03\x01 this is not HTTP\r\n\r\n")
    status, _, body = await read_answer(reader)
    assert status == 400 and b"bad request" in body
    assert await closed_by_server(reader)
    writer.close()


async def test_unknown_path_is_404_and_wrong_method_is_405(server) -> None:
    _, port = server
    reader, writer = await connect(port)
    writer.write(b"GET /nowhere HTTP/1.1\r\nHost: t\r\n\r\n")
    assert (await read_answer(reader))[0] == 404
    writer.write(post("/slow", b""))
    assert (await read_answer(reader))[0] == 405
    writer.close()


async def test_a_failing_handler_is_a_500_and_the_connection_stays_usable(server, caplog) -> None:
    _, port = server
    reader, writer = await connect(port)
    writer.write(b"GET /broken HTTP/1.1\r\nHost: t\r\n\r\n")
    status, _, body = await read_answer(reader)
    assert status == 500 and body == b'{"error":"internal error"}'
    assert "a bug in a handler" in caplog.text  # the traceback is logged, not sent
    writer.write(b"GET /echo HTTP/1.1\r\nHost: t\r\n\r\n")
    assert (await read_answer(reader))[0] == 200
    writer.close()


async def test_drop_connection_closes_without_a_status_line(server) -> None:
    _, port = server
    reader, writer = await connect(port)
    writer.write(b"GET /drop HTTP/1.1\r\nHost: t\r\n\r\n")
    assert await asyncio.wait_for(reader.read(), 5) == b""
    writer.close()


async def test_idle_keep_alive_connections_are_closed() -> None:
    server = HttpServer(ROUTES, keepalive_timeout=0.2)
    port = await server.start("127.0.0.1", 0)
    try:
        reader, writer = await connect(port)
        writer.write(b"GET /echo HTTP/1.1\r\nHost: t\r\n\r\n")
        assert (await read_answer(reader))[0] == 200
        assert await closed_by_server(reader)  # within a few sweeps of 0.1 s
        writer.close()
    finally:
        await server.close()


async def test_close_finishes_answers_in_progress_and_ends_hung_ones() -> None:
    server = HttpServer(ROUTES)
    port = await server.start("127.0.0.1", 0)
    slow_reader, slow_writer = await connect(port)
    hung_reader, hung_writer = await connect(port)
    idle_reader, idle_writer = await connect(port)
    slow_writer.write(b"GET /slow?0.2 HTTP/1.1\r\nHost: t\r\n\r\n")
    hung_writer.write(b"GET /hang HTTP/1.1\r\nHost: t\r\n\r\n")
    await asyncio.sleep(0.05)
    loop = asyncio.get_running_loop()
    started = loop.time()
    await server.close(timeout=0.5)
    assert loop.time() - started < 2
    status, headers, body = await read_answer(slow_reader)
    assert (status, body, headers["connection"]) == (200, b"slow", "close")
    assert await asyncio.wait_for(hung_reader.read(), 5) == b""
    assert await closed_by_server(idle_reader)
    with pytest.raises(OSError):
        await connect(port)
    for writer in (slow_writer, hung_writer, idle_writer):
        writer.close()
