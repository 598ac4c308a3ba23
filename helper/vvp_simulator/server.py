"""HTTP front of the VVP verifier SIMULATOR: `POST /verify` plus fault injection.

This is NOT a verifier. It answers in the real verifier's shape so the edge can be
tested and demonstrated without a KERI network, and it can misbehave on demand
(latency, 5xx, hangs, resets, garbage) through `/_sim/faults`.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import random
import signal
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from vvp_helper import jsonfast
from vvp_helper.httpserver import (
    DropConnection,
    Handler,
    HttpServer,
    Request,
    Response,
    json_response,
)
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

    def __post_init__(self) -> None:
        if not 0 <= self.port <= 65535:
            raise ValueError("port must be 0..65535")
        if not self.trust_seeds and not self.trust_aids:
            raise ValueError("at least one trust seed or trusted AID is required")


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


@dataclass(slots=True)
class _State:
    trusted: dict[str, bytes]
    rng: random.Random
    dossiers: DossierCache = field(default_factory=DossierCache)


def _unprocessable(items: list[tuple[list[str | int], str, str]]) -> Response:
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


async def _hang(request: Request) -> Response:
    # Hold the request until the client gives up, as a stuck verifier would.
    while not request.client_gone:
        await asyncio.sleep(_HANG_POLL_S)
    raise DropConnection


def _fault_response(faults: Faults) -> Response | None:
    mode = faults.mode
    if mode in ("http500", "http502", "http503"):
        status = int(mode[4:])
        return json_response({"detail": f"simulated HTTP {status}"}, status=status)
    if mode == "malformed":
        return Response(body=b'{"overall_status": ')
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
        return {
            ("POST", "/verify"): self.handle_verify,
            ("GET", "/_sim/faults"): self.handle_get_faults,
            ("POST", "/_sim/faults"): self.handle_set_faults,
            ("GET", "/_sim/stats"): self.handle_stats,
            ("POST", "/_sim/reset-stats"): self.handle_reset_stats,
            ("GET", "/healthz"): self.handle_healthz,
        }

    async def handle_verify(self, request: Request) -> Response:
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
            body = jsonfast.loads(request.body)
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
            return crash_then_close(request.transport)
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

    async def handle_get_faults(self, request: Request) -> Response:
        return json_response(self.faults.current.as_dict())

    async def handle_set_faults(self, request: Request) -> Response:
        box = self.faults
        try:
            changes = jsonfast.loads(request.body)
            if not isinstance(changes, dict):
                raise ValueError("body must be a JSON object of fault fields")
            box.current = box.current.updated(changes)
        except (ValueError, TypeError) as exc:
            return json_response({"error": str(exc)}, status=400)
        log.warning("VVP verifier SIMULATOR faults now %s", box.current)
        return json_response(box.current.as_dict())

    async def handle_stats(self, request: Request) -> Response:
        return json_response(self.stats.as_dict())

    async def handle_reset_stats(self, request: Request) -> Response:
        stats = self.stats
        stats.verify_requests = 0
        stats.by_status.clear()
        stats.faults.clear()
        stats.rejected = 0
        return json_response(stats.as_dict())

    async def handle_healthz(self, request: Request) -> Response:
        return json_response({"status": "ok", "service": SERVER_HEADER})


def _force(result: dict[str, Any], status: str) -> None:
    result["overall_status"] = status
    result["certainty"] = certainty_for(status)
    if status == "WARNING":
        result["vetter_warning_reason"] = result["vetter_warning_reason"] or JURISDICTION_WARNING


async def start(settings: SimulatorSettings) -> tuple[HttpServer, int]:
    """Start the simulator on settings.host/port (0 = any free port); return server and port."""
    server = HttpServer(Simulator(settings).routes(), server_header=SERVER_HEADER)
    port = await server.start(settings.host, settings.port)
    log.info(
        "VVP verifier SIMULATOR (not a real verifier) listening on http://%s:%d, faults %s",
        settings.host,
        port,
        settings.faults,
    )
    return server, port


async def serve_forever(settings: SimulatorSettings) -> None:
    """Serve until SIGTERM or SIGINT, then shut down cleanly (containers send SIGTERM)."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    server, _ = await start(settings)
    gc.freeze()  # as the helper does (vvp_helper.__main__): shorter full collections
    try:
        await stop.wait()
        log.info("VVP verifier SIMULATOR stopping")
    finally:
        await server.close(settings.shutdown_timeout)
