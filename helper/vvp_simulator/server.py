"""HTTP front of the VVP verifier SIMULATOR: `POST /verify` plus fault injection.

This is NOT a verifier. It answers in the real verifier's shape so the edge can be
tested and demonstrated without a KERI network, and it can misbehave on demand
(latency, 5xx, hangs, resets, garbage) through `/_sim/faults`. Served by aiohttp, over
plain HTTP or, with a certificate and key, over HTTPS (optionally requiring a client
certificate, as a carrier's verifier between networks would).
"""

from __future__ import annotations

import asyncio
import logging
import random
import signal
import ssl
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiohttp import web

from vvp_helper import jsonfast
from vvp_helper.gc_tuning import tune_for_serving
from vvp_simulator.answer import DossierCache, crash_then_close, simulated_verdict
from vvp_simulator.capacity import Load
from vvp_simulator.faults import Faults
from vvp_simulator.keys import DEMO_ISSUER_SEED, trusted_keys
from vvp_simulator.verdict import (
    JURISDICTION_WARNING,
    ParserCrash,
    certainty_for,
    inject_hostile_fields,
)

log = logging.getLogger("vvp_simulator")

SERVER_HEADER = "vvp-verifier-simulator"
_HANG_POLL_S = 0.05  # how often a hung handler checks whether the client left, seconds


@dataclass(frozen=True, slots=True)
class SimulatorSettings:
    host: str = "127.0.0.1"
    port: int = 8090
    trust_seeds: tuple[str, ...] = (DEMO_ISSUER_SEED,)
    trust_aids: tuple[str, ...] = ()  # AIDs (D or B prefix) trusted by their public key
    faults: Faults = field(default_factory=Faults)  # the faults in force at start
    rng_seed: int = 0  # seeds error_rate draws so runs are reproducible
    # Hung handlers are cancelled after this long at shutdown, seconds.
    shutdown_timeout: float = 1.0
    #: Serve HTTPS with this certificate chain and key (PEM); None = plain HTTP.
    tls_cert: Path | None = None
    tls_key: Path | None = None
    #: Require a client certificate issued by this CA (PEM), as mutual TLS does.
    tls_client_ca: Path | None = None

    def __post_init__(self) -> None:
        if not 0 <= self.port <= 65535:
            raise ValueError("port must be 0..65535")
        if not self.trust_seeds and not self.trust_aids:
            raise ValueError("at least one trust seed or trusted AID is required")
        if (self.tls_cert is None) != (self.tls_key is None):
            raise ValueError("--tls-cert and --tls-key go together")
        if self.tls_client_ca is not None and self.tls_cert is None:
            raise ValueError("--tls-client-ca needs --tls-cert and --tls-key")

    @property
    def scheme(self) -> str:
        return "https" if self.tls_cert is not None else "http"

    def ssl_context(self) -> ssl.SSLContext | None:
        """The server's TLS context, or None for plain HTTP."""
        if self.tls_cert is None:
            return None
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(self.tls_cert, self.tls_key)
        if self.tls_client_ca is not None:
            context.load_verify_locations(cafile=self.tls_client_ca)
            context.verify_mode = ssl.CERT_REQUIRED
        return context


@dataclass(slots=True)
class FaultBox:
    """The one mutable reference to the faults in force."""

    current: Faults


@dataclass(slots=True)
class Stats:
    verify_requests: int = 0
    by_status: Counter[str] = field(default_factory=Counter)
    faults: Counter[str] = field(default_factory=Counter)
    rejected: int = 0  # HTTP 422 answers

    def as_dict(self) -> dict[str, Any]:
        return {
            "verify_requests": self.verify_requests,
            "by_status": dict(self.by_status),
            "faults": dict(self.faults),
            "rejected": self.rejected,
        }


class DropConnection(Exception):
    """Raised by a handler to close the connection without answering (fault injection)."""


Handler = Callable[[web.BaseRequest], Awaitable[web.StreamResponse]]


def json_response(data: Any, status: int = 200) -> web.Response:
    return web.Response(body=jsonfast.dumps(data), status=status, content_type="application/json")


@dataclass(slots=True)
class _State:
    trusted: dict[str, bytes]
    rng: random.Random
    dossiers: DossierCache = field(default_factory=DossierCache)


def _unprocessable(items: list[tuple[list[str | int], str, str]]) -> web.Response:
    """HTTP 422 in FastAPI's shape: items are (loc, msg, type)."""
    detail = [{"loc": loc, "msg": msg, "type": kind} for loc, msg, kind in items]
    return json_response({"detail": detail}, status=422)


def _validate(body: Any) -> list[list[str | int]]:
    """FastAPI-style locations of missing required fields."""
    if not isinstance(body, dict):
        return [["body"]]
    missing: list[list[str | int]] = []
    if not isinstance(body.get("passport_jwt"), str):
        missing.append(["body", "passport_jwt"])
    context = body.get("context")
    if not isinstance(context, dict):
        missing.append(["body", "context"])
    else:
        for name in ("call_id", "received_at"):
            if not isinstance(context.get(name), str):
                missing.append(["body", "context", name])
    return missing


async def _hang(request: web.BaseRequest) -> web.Response:
    # Hold the request until the client gives up, as a stuck verifier would (aiohttp
    # does not cancel a handler when its client leaves, so watch the socket).
    while request.transport is not None and not request.transport.is_closing():
        await asyncio.sleep(_HANG_POLL_S)
    raise DropConnection


def _fault_response(faults: Faults) -> web.Response | None:
    mode = faults.mode
    if mode in ("http500", "http502", "http503"):
        status = int(mode[4:])
        return json_response({"detail": f"simulated HTTP {status}"}, status=status)
    if mode == "malformed":
        return web.Response(body=b'{"overall_status": ', content_type="application/json")
    if mode == "wrong_shape":
        return json_response({"status": "ok"})
    if mode == "reset":
        raise DropConnection  # drop the socket without writing a status line
    return None


class Simulator:
    """The simulator's state and its HTTP handlers."""

    def __init__(self, settings: SimulatorSettings) -> None:
        self.settings = settings
        self.faults = FaultBox(settings.faults)
        self.stats = Stats()
        self.load = Load()  # capacity, cold dossiers, latency_factor, crash_call_id_prefix
        self.state = _State(
            trusted=trusted_keys(settings.trust_seeds, settings.trust_aids),
            rng=random.Random(settings.rng_seed),
        )

    def routes(self) -> dict[tuple[str, str], Handler]:
        """{(method, path): handler} of every route."""
        return {
            ("POST", "/verify"): self.handle_verify,
            ("GET", "/_sim/faults"): self.handle_get_faults,
            ("POST", "/_sim/faults"): self.handle_set_faults,
            ("GET", "/_sim/stats"): self.handle_stats,
            ("POST", "/_sim/reset-stats"): self.handle_reset_stats,
            ("GET", "/healthz"): self.handle_healthz,
        }

    async def handle_verify(self, request: web.BaseRequest) -> web.StreamResponse:
        stats, state, faults = self.stats, self.state, self.faults.current
        stats.verify_requests += 1
        if (crashed := await self.load.gate(request, faults, stats.faults)) is not None:
            return crashed
        if faults.latency_ms:
            await asyncio.sleep(faults.latency_ms / 1000.0)
        if faults.mode != "normal":
            stats.faults[faults.mode] += 1
            if faults.mode == "hang":
                return await _hang(request)
            answer = _fault_response(faults)
            if answer is not None:
                return answer
        if faults.error_rate and state.rng.random() < faults.error_rate:
            stats.faults["error_rate"] += 1
            return json_response({"detail": "simulated HTTP 500 (error_rate)"}, status=500)

        try:
            body = jsonfast.loads(await request.read())
        except ValueError as exc:
            stats.rejected += 1
            msg = f"JSON decode error: {exc}"
            return _unprocessable([(["body", 0], msg, "value_error.jsondecode")])
        missing = _validate(body)
        if missing:
            stats.rejected += 1
            return _unprocessable(
                [(loc, "field required", "value_error.missing") for loc in missing]
            )

        vvp_identity = request.headers.get("vvp-identity")
        try:
            result = simulated_verdict(
                state.dossiers, state.trusted, faults, vvp_identity, body, time.time()
            )
        except ParserCrash:  # the real verifier's 500-then-close (see crash_then_close)
            stats.faults["parser_crash"] += 1
            return await crash_then_close(request)
        if faults.force_status is not None:
            _force(result, faults.force_status)
        if faults.inject:
            inject_hostile_fields(result)
        stats.by_status[result["overall_status"]] += 1
        log.debug(
            "VVP verifier SIMULATOR verdict %s request_id=%s call_id=%s",
            result["overall_status"],
            result["request_id"],
            body["context"]["call_id"],
        )
        return json_response(result)

    async def handle_get_faults(self, request: web.BaseRequest) -> web.Response:
        return json_response(self.faults.current.as_dict())

    async def handle_set_faults(self, request: web.BaseRequest) -> web.Response:
        box = self.faults
        try:
            changes = jsonfast.loads(await request.read())
            if not isinstance(changes, dict):
                raise ValueError("body must be a JSON object of fault fields")
            box.current = box.current.updated(changes)
        except (ValueError, TypeError) as exc:
            return json_response({"error": str(exc)}, status=400)
        log.warning("VVP verifier SIMULATOR faults now %s", box.current)
        return json_response(box.current.as_dict())

    async def handle_stats(self, request: web.BaseRequest) -> web.Response:
        return json_response(self.stats.as_dict())

    async def handle_reset_stats(self, request: web.BaseRequest) -> web.Response:
        stats = self.stats
        stats.verify_requests = 0
        stats.by_status.clear()
        stats.faults.clear()
        stats.rejected = 0
        return json_response(stats.as_dict())

    async def handle_healthz(self, request: web.BaseRequest) -> web.Response:
        return json_response({"status": "ok", "service": SERVER_HEADER})


def _force(result: dict[str, Any], status: str) -> None:
    result["overall_status"] = status
    result["certainty"] = certainty_for(status)
    if status == "WARNING":
        result["vetter_warning_reason"] = result["vetter_warning_reason"] or JURISDICTION_WARNING


def _serving(handler: Handler) -> Handler:
    """The route's handler with what every answer of the simulator has: its Server header,
    and DropConnection turned into a dropped socket.

    A wrapper per route rather than an aiohttp middleware: with any middleware aiohttp
    runs two more layers per request (the middleware and its current-app context), which
    the simulator, sharing a benchmark machine with the edge, would pay on every call."""

    async def serve(request: web.BaseRequest) -> web.StreamResponse:
        try:
            response = await handler(request)
        except DropConnection:
            # Drop the socket without writing a status line. aiohttp takes a cancelled
            # handler as a client that left: no answer and no "Unhandled exception" log.
            if request.transport is not None:
                request.transport.abort()
            raise asyncio.CancelledError from None
        response.headers["Server"] = SERVER_HEADER
        return response

    return serve


def create_server(settings: SimulatorSettings) -> tuple[web.Server, Simulator]:
    """The simulator's aiohttp server and its state.

    aiohttp's low-level server with a dispatch on (method, path), not a ``web.Application``:
    the simulator shares benchmark machines with the edge, and the application layer
    (router, match info, the app's own handler chain) costs about 10 us a request
    (``tests/load/http_layer_bench.py``: 59-61 against 68-73 us). Unknown paths and
    methods get the real verifier's (FastAPI's) 404 and 405 answers.
    """
    simulator = Simulator(settings)
    routes = {route: _serving(handler) for route, handler in simulator.routes().items()}
    paths = frozenset(path for _, path in routes)

    async def dispatch(request: web.BaseRequest) -> web.StreamResponse:
        handler = routes.get((request.method, request.path))
        if handler is not None:
            return await handler(request)
        if request.path in paths:
            answer = json_response({"detail": "Method Not Allowed"}, status=405)
        else:
            answer = json_response({"detail": "Not Found"}, status=404)
        answer.headers["Server"] = SERVER_HEADER
        return answer

    # No access log: a line per verification costs more than the verification's JSON.
    return web.Server(dispatch, access_log=None), simulator


@dataclass(slots=True)
class RunningSimulator:
    """A started simulator: its runner, bound port and state; ``close()`` stops it."""

    runner: web.ServerRunner
    port: int
    simulator: Simulator

    async def close(self) -> None:
        await self.runner.cleanup()


async def start(settings: SimulatorSettings) -> tuple[RunningSimulator, int]:
    """Start the simulator on settings.host/port (0 = any free port); return it and its port."""
    server, simulator = create_server(settings)
    runner = web.ServerRunner(server, shutdown_timeout=settings.shutdown_timeout)
    await runner.setup()
    # Every helper connection of a burst is accepted (aiohttp's default backlog is 128).
    site = web.TCPSite(
        runner, settings.host, settings.port, backlog=4096, ssl_context=settings.ssl_context()
    )
    await site.start()
    # runner.addresses holds the real bound port when settings.port is 0.
    port = int(runner.addresses[0][1])
    log.info(
        "VVP verifier SIMULATOR (not a real verifier) listening on %s://%s:%d%s, faults %s",
        settings.scheme,
        settings.host,
        port,
        " (client certificate required)" if settings.tls_client_ca else "",
        settings.faults,
    )
    return RunningSimulator(runner, port, simulator), port


async def serve_forever(settings: SimulatorSettings) -> None:
    """Serve until SIGTERM or SIGINT, then shut down cleanly (containers send SIGTERM)."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    server, _ = await start(settings)
    tune_for_serving()  # as the helper does
    try:
        await stop.wait()
        log.info("VVP verifier SIMULATOR stopping")
    finally:
        await server.close()
