"""A keep-alive HTTP/1.1 client for one origin: the helper's calls to the verifier.

Why not aiohttp's ``ClientSession`` (which the helper used until issue 6): at 1,000
requests/s it spends about 200 us of CPU per request, this one about 110 us, and every
verified call makes one. The helper needs one thing from it, ``POST`` a small JSON body and
read a bounded answer, so this is asyncio's transport/protocol API plus httptools' response
parser (llhttp: Content-Length, chunked and close-delimited bodies), with TLS from the
standard ``ssl`` module for ``https`` URLs.

Connections are pooled per client and reused newest-first. When a reused connection closes
before a single byte of answer (the server timed it out as we sent), the request goes once
more on a fresh connection: the only retry, and harmless because verifying has no side
effects. Every failure is one of the exceptions below; the caller bounds the whole exchange
with its own timeout.
"""

from __future__ import annotations

import asyncio
import collections
import ssl
import time
from typing import cast
from urllib.parse import urlsplit

import httptools


class ClientError(Exception):
    """The exchange failed: no connection, a cut or unparseable answer."""


class AnswerTooLarge(ClientError):
    pass


class _Connection(asyncio.Protocol):
    """One connection; carries one request at a time."""

    def __init__(self, max_answer_bytes: int) -> None:
        self.max_answer_bytes = max_answer_bytes
        self.transport: asyncio.Transport | None = None
        self.answer: asyncio.Future[tuple[int, bytes]] | None = None
        self.parser: httptools.HttpResponseParser | None = None
        self.closed = False
        self.idle_since = time.monotonic()
        self._reset()

    def _reset(self) -> None:
        self.received = self.status = self.size = 0
        self.chunks: list[bytes] = []
        self.keep_alive = False
        self.framed = False  # Content-Length or chunked: the answer does not end at close

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports implement asyncio.Transport without subclassing it.
        self.transport = cast(asyncio.Transport, transport)

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        answer = self.answer
        if answer is None or answer.done():
            return
        if self.status and not self.framed:
            # An answer without Content-Length or chunking ends when the server closes.
            answer.set_result((self.status, b"".join(self.chunks)))
            return
        reason = "connection reset" if exc is not None else "server closed the connection"
        answer.set_exception(ClientError(reason))

    def data_received(self, data: bytes) -> None:
        answer = self.answer
        if answer is None or answer.done() or self.parser is None:
            # Bytes nobody asked for: the connection is in an unknown state.
            self.abort()
            return
        self.received += len(data)
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError as exc:
            too_large = exc.__context__
            if isinstance(too_large, AnswerTooLarge):
                answer.set_exception(too_large)
            else:
                answer.set_exception(ClientError(f"bad HTTP answer: {exc}"))
            self.abort()

    # httptools callbacks

    def on_headers_complete(self) -> None:
        assert self.parser is not None
        self.status = self.parser.get_status_code()

    def on_header(self, name: bytes, value: bytes) -> None:
        lowered = name.lower()
        if lowered == b"content-length":
            self.framed = True
            if value.strip().isdigit() and int(value) > self.max_answer_bytes:
                raise AnswerTooLarge("answer too large")
        elif lowered == b"transfer-encoding" and b"chunked" in value.lower():
            self.framed = True

    def on_body(self, body: bytes) -> None:
        self.size += len(body)
        if self.size > self.max_answer_bytes:
            raise AnswerTooLarge("answer too large")
        self.chunks.append(body)

    def on_message_complete(self) -> None:
        assert self.parser is not None and self.answer is not None
        self.keep_alive = self.parser.should_keep_alive()
        if not self.answer.done():
            self.answer.set_result((self.status, b"".join(self.chunks)))

    # use

    def send(self, request: bytes) -> asyncio.Future[tuple[int, bytes]]:
        assert self.transport is not None
        self.answer = asyncio.get_running_loop().create_future()
        self.parser = httptools.HttpResponseParser(self)
        self._reset()
        self.transport.write(request)
        return self.answer

    def abort(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.abort()


class HttpClient:
    """POSTs to one origin over pooled keep-alive connections. Close it with ``close()``."""

    def __init__(
        self,
        url: str,
        *,
        max_connections: int = 256,
        max_answer_bytes: int = 1024 * 1024,
        idle_timeout: float = 30.0,
    ) -> None:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"not an http(s) URL: {url!r}")
        self.host = parts.hostname
        self.port = parts.port or (443 if parts.scheme == "https" else 80)
        self.ssl: ssl.SSLContext | None = (
            ssl.create_default_context() if parts.scheme == "https" else None
        )
        default_port = self.port == (443 if self.ssl else 80)
        host_header = self.host if default_port else f"{self.host}:{self.port}"
        if ":" in self.host and not default_port:  # IPv6 literal
            host_header = f"[{self.host}]:{self.port}"
        target = parts.path or "/"
        if parts.query:
            target += "?" + parts.query
        self._request_line = f"POST {target} HTTP/1.1\r\nHost: {host_header}\r\n".encode("ascii")
        self.max_answer_bytes = max_answer_bytes
        self.idle_timeout = idle_timeout
        self._idle: collections.deque[_Connection] = collections.deque()
        self._slots = asyncio.Semaphore(max_connections)
        self._closed = False

    async def post(self, body: bytes, headers: bytes) -> tuple[int, bytes]:
        """POST ``body`` with ``headers`` (ready ``Name: value\\r\\n`` lines); returns the
        status and the answer body. Raises ClientError (or AnswerTooLarge)."""
        request = b"%s%sContent-Length: %d\r\n\r\n%s" % (
            self._request_line,
            headers,
            len(body),
            body,
        )
        async with self._slots:
            connection = self._take_idle()
            if connection is not None:
                try:
                    return await self._exchange(connection, request)
                except ClientError:
                    if connection.received:
                        raise
                    # Closed by the server while idle: the request never reached it.
            return await self._exchange(await self._connect(), request)

    async def _exchange(self, connection: _Connection, request: bytes) -> tuple[int, bytes]:
        done = False
        try:
            status, answer = await connection.send(request)
            done = True
        finally:
            if not done:  # failed, or cancelled by the caller's timeout mid-answer
                connection.abort()
        if connection.keep_alive and not connection.closed and not self._closed:
            connection.idle_since = time.monotonic()
            self._idle.append(connection)
        elif connection.transport is not None:
            connection.transport.close()
        return status, answer

    def _take_idle(self) -> _Connection | None:
        cutoff = time.monotonic() - self.idle_timeout
        while self._idle:
            connection = self._idle.pop()  # newest first: the oldest ones age out
            if not connection.closed and connection.idle_since >= cutoff:
                return connection
            connection.abort()
        return None

    async def _connect(self) -> _Connection:
        loop = asyncio.get_running_loop()
        try:
            _, connection = await loop.create_connection(
                lambda: _Connection(self.max_answer_bytes),
                self.host,
                self.port,
                ssl=self.ssl,
            )
        except OSError as exc:  # refused, unreachable, DNS, TLS handshake
            raise ClientError(f"cannot connect: {exc.strerror or type(exc).__name__}") from None
        return connection

    async def close(self) -> None:
        self._closed = True
        while self._idle:
            connection = self._idle.pop()
            if connection.transport is not None:
                connection.transport.close()
