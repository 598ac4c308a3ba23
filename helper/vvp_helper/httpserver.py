"""A small HTTP/1.1 server for the two hot paths: the helper's ``/v1/decide`` and the
simulator's ``/verify``.

Why not aiohttp's web server (which the helper used until issue 6): at 1,000 requests/s on
the 2-core reference machine it spends about 120 us of CPU per request, against about 45 us
here, and the helper and the simulator each serve one request per call. This server is
asyncio's transport/protocol API plus httptools (the llhttp parser uvicorn uses); per request
it makes one task and one ``write``. Its client side for the verifier is ``httpclient``;
aiohttp stays the client for Kamailio's RPC (``fallback``), which is off the per-call path.

What it does: HTTP/1.1 keep-alive and pipelining (answers in request order), HTTP/1.0,
Content-Length and chunked request bodies, ``Expect: 100-continue``, a body size cap (413),
400 for anything unparseable, 404/405, idle connections closed after ``keepalive_timeout``,
and a graceful ``close()``. What it does not do: TLS, streamed bodies, upgrades.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from email.utils import formatdate
from http import HTTPStatus
from typing import Any, cast

import httptools

from . import jsonfast

log = logging.getLogger("vvp_helper.http")

#: Requests one connection may have queued behind the one being answered (pipelining);
#: past this the server stops reading from that connection until it catches up.
MAX_PIPELINED = 16
#: Bytes of request line + headers accepted per request.
MAX_HEAD_BYTES = 64 * 1024
#: How often idle keep-alive connections are looked for, seconds.
_IDLE_SWEEP_S = 5.0


class DropConnection(Exception):
    """Raised by a handler to close the connection without answering (fault injection)."""


@dataclass(slots=True)
class Request:
    method: str
    path: str
    query: str
    #: Header names lower-cased; repeated headers joined with ", " (RFC 9110 5.3).
    headers: Mapping[str, str]
    body: bytes
    remote: str | None
    transport: asyncio.Transport

    @property
    def client_gone(self) -> bool:
        """The client closed its end (a handler that waits long can give up)."""
        return self.transport.is_closing()


@dataclass(slots=True)
class Response:
    status: int = 200
    body: bytes = b""
    content_type: str = "application/json"
    headers: Sequence[tuple[str, str]] = ()


def json_response(data: Any, status: int = 200) -> Response:
    return Response(status, jsonfast.dumps(data))


Handler = Callable[[Request], Awaitable[Response]]
Routes = Mapping[tuple[str, str], Handler]


class _Clock:
    """The Date header, formatted at most once a second."""

    __slots__ = ("_second", "_value")

    def __init__(self) -> None:
        self._second = -1
        self._value = b""

    def date(self) -> bytes:
        now = int(time.time())
        if now != self._second:
            self._second = now
            self._value = formatdate(now, usegmt=True).encode("ascii")
        return self._value


_REASONS = {status.value: status.phrase.encode("ascii") for status in HTTPStatus}


def _head(
    status: int, content_type: str, length: int, extra: bytes, date: bytes, keep_alive: bool
) -> bytes:
    reason = _REASONS.get(status, b"Unknown")
    connection = b"" if keep_alive else b"Connection: close\r\n"
    return b"HTTP/1.1 %d %s\r\nDate: %s\r\nContent-Type: %s\r\nContent-Length: %d\r\n%s%s\r\n" % (
        status,
        reason,
        date,
        content_type.encode("latin-1"),
        length,
        extra,
        connection,
    )


class HttpServer:
    """Serves ``routes`` ({(method, path): handler}) on one listening socket."""

    def __init__(
        self,
        routes: Routes,
        *,
        max_body_bytes: int = 1024 * 1024,
        server_header: str | None = None,
        keepalive_timeout: float = 75.0,
    ) -> None:
        self.routes = dict(routes)
        self._paths = {path for _, path in self.routes}
        self.max_body_bytes = max_body_bytes
        self.keepalive_timeout = keepalive_timeout
        self._extra_headers = (
            b"Server: %s\r\n" % server_header.encode("latin-1") if server_header else b""
        )
        self._clock = _Clock()
        self._connections: set[_Connection] = set()
        self._server: asyncio.AbstractServer | None = None
        self._sweeper: asyncio.Task[None] | None = None

    async def start(
        self, host: str, port: int, *, backlog: int = 4096, reuse_port: bool = False
    ) -> int:
        """Listen on host:port (0 = any free port); returns the bound port."""
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(
            lambda: _Connection(self), host, port, backlog=backlog, reuse_port=reuse_port or None
        )
        self._sweeper = loop.create_task(self._sweep_idle())
        return int(self._server.sockets[0].getsockname()[1])

    async def close(self, timeout: float = 1.0) -> None:
        """Stop accepting, let answers in progress finish (up to timeout), close the rest."""
        if self._server is None:
            return
        self._server.close()
        if self._sweeper is not None:
            self._sweeper.cancel()
        for connection in list(self._connections):
            connection.close_when_idle()
        deadline = time.monotonic() + timeout
        while self._connections and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        stuck = [c.task for c in self._connections if c.task is not None and not c.task.done()]
        for connection in list(self._connections):
            connection.abort()
        for task in stuck:
            task.cancel()
        await asyncio.gather(*stuck, return_exceptions=True)
        await self._server.wait_closed()
        self._server = None

    async def _sweep_idle(self) -> None:
        interval = min(_IDLE_SWEEP_S, self.keepalive_timeout / 2)
        while True:
            await asyncio.sleep(interval)
            cutoff = time.monotonic() - self.keepalive_timeout
            for connection in list(self._connections):
                if connection.idle_since is not None and connection.idle_since < cutoff:
                    connection.close_when_idle()


class _Connection(asyncio.Protocol):
    """One client connection: parses requests, runs their handlers one at a time, in order."""

    def __init__(self, server: HttpServer) -> None:
        self.server = server
        self.transport: asyncio.Transport | None = None
        self.remote: str | None = None
        self.parser = httptools.HttpRequestParser(self)
        self.pending: collections.deque[tuple[Request, bool]] = collections.deque()
        self.busy = False
        self.task: asyncio.Task[None] | None = None
        self.paused = False
        self.closing = False
        self.idle_since: float | None = time.monotonic()
        self._reset_message()

    # -- asyncio.Protocol

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports implement asyncio.Transport without subclassing it.
        self.transport = cast(asyncio.Transport, transport)
        peer = transport.get_extra_info("peername")
        self.remote = peer[0] if isinstance(peer, tuple) else None
        self.server._connections.add(self)

    def connection_lost(self, exc: Exception | None) -> None:
        self.server._connections.discard(self)
        self.pending.clear()
        self.closing = True

    def data_received(self, data: bytes) -> None:
        self.idle_since = None
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self._fail(400, "upgrades are not supported")
        except httptools.HttpParserError as exc:
            # httptools wraps what a callback raises; a size limit keeps its own status.
            cause = exc.__context__
            if isinstance(cause, _TooLarge):
                self._fail(cause.status, str(cause))
            else:
                self._fail(400, f"bad request: {exc}")

    # -- httptools callbacks

    def _reset_message(self) -> None:
        self.url = b""
        self.headers: dict[str, str] = {}
        self.head_bytes = 0
        self.body: list[bytes] = []
        self.body_bytes = 0

    def on_message_begin(self) -> None:
        self._reset_message()

    def on_url(self, url: bytes) -> None:
        self.url += url
        self.head_bytes += len(url)
        if self.head_bytes > MAX_HEAD_BYTES:
            raise _TooLarge(414, "request line too long")

    def on_header(self, name: bytes, value: bytes) -> None:
        self.head_bytes += len(name) + len(value)
        if self.head_bytes > MAX_HEAD_BYTES:
            raise _TooLarge(431, "request headers too large")
        key = name.decode("latin-1").lower()
        text = value.decode("latin-1")
        previous = self.headers.get(key)
        self.headers[key] = text if previous is None else f"{previous}, {text}"

    def on_headers_complete(self) -> None:
        length = self.headers.get("content-length")
        if length is not None and length.isdigit() and int(length) > self.server.max_body_bytes:
            raise _TooLarge(413, "request body too large")
        if self.headers.get("expect", "").lower() == "100-continue" and self.transport:
            self.transport.write(b"HTTP/1.1 100 Continue\r\n\r\n")

    def on_body(self, body: bytes) -> None:
        self.body_bytes += len(body)
        if self.body_bytes > self.server.max_body_bytes:
            raise _TooLarge(413, "request body too large")
        self.body.append(body)

    def on_message_complete(self) -> None:
        assert self.transport is not None
        path, _, query = self.url.decode("latin-1").partition("?")
        request = Request(
            method=self.parser.get_method().decode("ascii"),
            path=path,
            query=query,
            headers=self.headers,
            body=b"".join(self.body),
            remote=self.remote,
            transport=self.transport,
        )
        self.pending.append((request, self.parser.should_keep_alive()))
        self._reset_message()
        if len(self.pending) > MAX_PIPELINED and not self.paused:
            self.paused = True
            self.transport.pause_reading()
        if not self.busy:
            self.busy = True
            self.task = asyncio.get_running_loop().create_task(self._answer_pending())

    # -- answering

    async def _answer_pending(self) -> None:
        try:
            while self.pending and not self.closing:
                request, keep_alive = self.pending.popleft()
                if self.paused and len(self.pending) <= MAX_PIPELINED // 2:
                    self.paused = False
                    request.transport.resume_reading()
                response = await self._call(request)
                if response is None:
                    self.abort()
                    return
                self._write(response, keep_alive and not self.closing)
                if not keep_alive:
                    self.close_when_idle()
                    return
        finally:
            self.busy = False
            self.idle_since = time.monotonic()
            if self.closing and self.transport is not None:
                self.transport.close()

    async def _call(self, request: Request) -> Response | None:
        handler = self.server.routes.get((request.method, request.path))
        if handler is None:
            if request.path in self.server._paths:
                return json_response({"error": "method not allowed"}, 405)
            return json_response({"error": "not found"}, 404)
        try:
            return await handler(request)
        except DropConnection:
            return None
        except Exception:
            log.exception("unhandled error answering %s %s", request.method, request.path)
            return json_response({"error": "internal error"}, 500)

    def _write(self, response: Response, keep_alive: bool) -> None:
        transport = self.transport
        if transport is None or transport.is_closing():
            return  # the client left; nobody is waiting for this answer
        extra = self.server._extra_headers
        if response.headers:
            extra += b"".join(
                b"%s: %s\r\n" % (name.encode("latin-1"), value.encode("latin-1"))
                for name, value in response.headers
            )
        head = _head(
            response.status,
            response.content_type,
            len(response.body),
            extra,
            self.server._clock.date(),
            keep_alive,
        )
        transport.write(head + response.body)

    def _fail(self, status: int, message: str) -> None:
        """Answer a request that cannot be parsed or accepted, then close."""
        log.info("closing connection from %s: %s", self.remote, message)
        self.pending.clear()
        self.closing = True
        if self.busy:
            return  # an earlier request's answer is still due; the connection closes after it
        self._write(json_response({"error": message}, status), keep_alive=False)
        if self.transport is not None:
            self.transport.close()

    def close_when_idle(self) -> None:
        self.closing = True
        if not self.busy and self.transport is not None:
            self.transport.close()

    def abort(self) -> None:
        self.closing = True
        if self.transport is not None:
            self.transport.abort()


class _TooLarge(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
