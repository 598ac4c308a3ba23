"""A scripted fake verifier: a raw TCP server whose answers are bytes written as they are,
so tests can send what no HTTP library would (interim 1xx answers, cut or oversized bodies,
garbage, a hang-up at the wrong moment)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable

Answer = bytes | Callable[[asyncio.StreamWriter], Awaitable[None]]

VALID_ANSWER = b'{"overall_status": "VALID", "request_id": "r-1"}'


def ok(body: bytes = VALID_ANSWER, *extra: bytes) -> bytes:
    """A complete HTTP/1.1 200 answer with a Content-Length."""
    head = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n" + b"".join(extra)
    return head + b"Content-Length: %d\r\n\r\n" % len(body) + body


class ScriptedVerifier:
    """Each request gets the next scripted answer (the last one repeats): bytes, or a
    coroutine function taking the stream writer. Counts connections, requests, and the
    connections it is done with (closed on its side, whoever ended them)."""

    def __init__(self, *answers: Answer) -> None:
        self.answers = list(answers)
        self.connections = 0
        self.requests = 0
        self.closed = 0
        self.server: asyncio.Server | None = None

    async def start(self) -> str:
        """Listen on a free loopback port; returns the /verify URL."""
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        return f"http://127.0.0.1:{self.server.sockets[0].getsockname()[1]}/verify"

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = int(head.lower().split(b"content-length: ")[1].split(b"\r\n")[0])
                await reader.readexactly(length)
                self.requests += 1
                answer = self.answers.pop(0) if len(self.answers) > 1 else self.answers[0]
                if isinstance(answer, bytes):
                    writer.write(answer)
                else:
                    await answer(writer)
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()
            self.closed += 1

    async def close(self) -> None:
        assert self.server is not None
        self.server.close()
        await self.server.wait_closed()
