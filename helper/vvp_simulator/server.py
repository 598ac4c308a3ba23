"""HTTP front of the VVP verifier SIMULATOR: `POST /verify` plus fault injection.

This is NOT a verifier. It answers in the real verifier's shape so the edge can be
tested and demonstrated without a KERI network, and it can misbehave on demand
(latency, 5xx, hangs, resets, garbage) through `/_sim/faults`.
"""

from __future__ import annotations

import asyncio
import logging
import random
import signal
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from vvp_helper import jsonfast
from vvp_simulator.faults import Faults
from vvp_simulator.keys import DEMO_ISSUER_SEED, trusted_keys
from vvp_simulator.verdict import (
    JURISDICTION_WARNING,
    certainty_for,
    inject_hostile_fields,
    parse_vvp_identity,
    verify,
)

log = logging.getLogger("vvp_simulator")

SERVER_HEADER = "vvp-verifier-simulator"
_HANG_POLL_S = 0.05  # how often a hung handler checks whether the client left, seconds
_MAX_SEEN_DOSSIERS = 10_000  # bound on the fake dossier cache used for cache_hit


@dataclass(frozen=True, slots=True)
class SimulatorSettings:
    host: str = "127.0.0.1"
    port: int = 8090
    trust_seeds: tuple[str, ...] = (DEMO_ISSUER_SEED,)
    faults: Faults = field(default_factory=Faults)  # the faults in force at start
    rng_seed: int = 0  # seeds error_rate draws so runs are reproducible
    # Hung handlers are cancelled after this long at shutdown, seconds.
    shutdown_timeout: float = 1.0

    def __post_init__(self) -> None:
        if not 0 <= self.port <= 65535:
            raise ValueError("port must be 0..65535")
        if not self.trust_seeds:
            raise ValueError("at least one trust seed is required")


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
    seen_dossiers: set[str] = field(default_factory=set)


SETTINGS_KEY = web.AppKey("settings", SimulatorSettings)
FAULTS_KEY = web.AppKey("faults", FaultBox)
STATS_KEY = web.AppKey("stats", Stats)
STATE_KEY = web.AppKey("state", _State)


def _unprocessable(items: list[tuple[list[str | int], str, str]]) -> web.Response:
    """HTTP 422 in FastAPI's shape: items are (loc, msg, type)."""
    detail = [{"loc": loc, "msg": msg, "type": kind} for loc, msg, kind in items]
    return web.json_response({"detail": detail}, status=422)


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


async def _hang(request: web.Request) -> web.StreamResponse:
    # aiohttp does not cancel handlers when the client leaves, so watch the socket.
    while request.transport is not None and not request.transport.is_closing():
        await asyncio.sleep(_HANG_POLL_S)
    # aiohttp treats a cancelled handler as a premature client disconnection: no
    # answer, no "Unhandled exception" log line (any other exception would log one).
    raise asyncio.CancelledError


async def _reset(request: web.Request) -> web.StreamResponse:
    if request.transport is not None:
        request.transport.abort()  # drop the socket without writing a status line
    raise asyncio.CancelledError


async def _fault_response(request: web.Request, faults: Faults) -> web.StreamResponse | None:
    mode = faults.mode
    if mode in ("http500", "http502", "http503"):
        status = int(mode[4:])
        return web.json_response({"detail": f"simulated HTTP {status}"}, status=status)
    if mode == "malformed":
        return web.Response(text='{"overall_status": ', content_type="application/json")
    if mode == "wrong_shape":
        return web.json_response({"status": "ok"})
    if mode == "hang":
        return await _hang(request)
    if mode == "reset":
        return await _reset(request)
    return None


async def handle_verify(request: web.Request) -> web.StreamResponse:
    app = request.app
    stats, state, faults = app[STATS_KEY], app[STATE_KEY], app[FAULTS_KEY].current
    stats.verify_requests += 1
    if faults.latency_ms:
        await asyncio.sleep(faults.latency_ms / 1000.0)
    if faults.mode != "normal":
        stats.faults[faults.mode] += 1
        answer = await _fault_response(request, faults)
        if answer is not None:
            return answer
    if faults.error_rate and state.rng.random() < faults.error_rate:
        stats.faults["error_rate"] += 1
        return web.json_response({"detail": "simulated HTTP 500 (error_rate)"}, status=500)

    raw = await request.read()
    try:
        body = jsonfast.loads(raw)
    except ValueError as exc:
        stats.rejected += 1
        msg = f"JSON decode error: {exc}"
        return _unprocessable([(["body", 0], msg, "value_error.jsondecode")])
    missing = _validate(body)
    if missing:
        stats.rejected += 1
        return _unprocessable([(loc, "field required", "value_error.missing") for loc in missing])

    evd = _evd_of(request.headers.get("VVP-Identity"))
    cache_hit = evd is not None and evd in state.seen_dossiers
    result = verify(
        request.headers.get("VVP-Identity"), body, state.trusted, time.time(), cache_hit=cache_hit
    )
    if evd is not None and result["claims"] is not None:
        if len(state.seen_dossiers) >= _MAX_SEEN_DOSSIERS:
            state.seen_dossiers.clear()
        state.seen_dossiers.add(evd)
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
    return web.Response(body=jsonfast.dumps(result), content_type="application/json")


def _evd_of(header: str | None) -> str | None:
    if not header:
        return None
    try:
        return parse_vvp_identity(header).evd
    except ValueError:
        return None


def _force(result: dict[str, Any], status: str) -> None:
    result["overall_status"] = status
    result["certainty"] = certainty_for(status)
    if status == "WARNING":
        result["vetter_warning_reason"] = result["vetter_warning_reason"] or JURISDICTION_WARNING


async def handle_get_faults(request: web.Request) -> web.Response:
    return web.json_response(request.app[FAULTS_KEY].current.as_dict())


async def handle_set_faults(request: web.Request) -> web.Response:
    try:
        changes = await request.json()
        if not isinstance(changes, dict):
            raise ValueError("body must be a JSON object of fault fields")
        box = request.app[FAULTS_KEY]
        box.current = box.current.updated(changes)
    except (ValueError, TypeError) as exc:
        return web.json_response({"error": str(exc)}, status=400)
    log.warning("VVP verifier SIMULATOR faults now %s", box.current)
    return web.json_response(box.current.as_dict())


async def handle_stats(request: web.Request) -> web.Response:
    return web.json_response(request.app[STATS_KEY].as_dict())


async def handle_reset_stats(request: web.Request) -> web.Response:
    stats = request.app[STATS_KEY]
    stats.verify_requests = 0
    stats.by_status.clear()
    stats.faults.clear()
    stats.rejected = 0
    return web.json_response(stats.as_dict())


async def handle_healthz(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok", "service": SERVER_HEADER})


async def _set_server_header(request: web.Request, response: web.StreamResponse) -> None:
    response.headers["Server"] = SERVER_HEADER


def create_app(settings: SimulatorSettings) -> web.Application:
    app = web.Application()
    app[SETTINGS_KEY] = settings
    app[FAULTS_KEY] = FaultBox(settings.faults)
    app[STATS_KEY] = Stats()
    app[STATE_KEY] = _State(
        trusted=trusted_keys(settings.trust_seeds), rng=random.Random(settings.rng_seed)
    )
    app.on_response_prepare.append(_set_server_header)
    app.router.add_post("/verify", handle_verify)
    app.router.add_get("/_sim/faults", handle_get_faults)
    app.router.add_post("/_sim/faults", handle_set_faults)
    app.router.add_get("/_sim/stats", handle_stats)
    app.router.add_post("/_sim/reset-stats", handle_reset_stats)
    app.router.add_get("/healthz", handle_healthz)
    return app


async def start(settings: SimulatorSettings) -> tuple[web.AppRunner, int]:
    """Start the simulator on settings.host/port (0 = any free port); return runner and port."""
    # No access log: a line per verification costs more than the verification's JSON.
    runner = web.AppRunner(
        create_app(settings), shutdown_timeout=settings.shutdown_timeout, access_log=None
    )
    await runner.setup()
    # Every helper connection of a burst is accepted (aiohttp's default backlog is 128).
    site = web.TCPSite(runner, settings.host, settings.port, backlog=4096)
    await site.start()
    # runner.addresses holds the real bound port when settings.port is 0.
    port = int(runner.addresses[0][1]) if runner.addresses else settings.port
    log.info(
        "VVP verifier SIMULATOR (not a real verifier) listening on http://%s:%d, faults %s",
        settings.host,
        port,
        settings.faults,
    )
    return runner, port


async def serve_forever(settings: SimulatorSettings) -> None:
    """Serve until SIGTERM or SIGINT, then shut down cleanly (containers send SIGTERM)."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    runner, _ = await start(settings)
    try:
        await stop.wait()
        log.info("VVP verifier SIMULATOR stopping")
    finally:
        await runner.cleanup()
