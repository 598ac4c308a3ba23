"""The helper's HTTP interface (aiohttp), built by ``create_app(settings)``.

    POST /v1/decide   Kamailio's decision request -> instruction JSON
    GET  /healthz     the process is alive
    GET  /readyz      a policy is loaded and a verifier is configured
    GET  /metrics     Prometheus metrics
    POST /-/reload    reload the policy file (loopback clients only; SIGHUP does the same)

The instruction Kamailio applies (kamailio.cfg route[HELPER_REPLY])::

    {"code": 302, "reason": "Moved Temporarily", "contact": "sip:+1555@verified.example",
     "headers": "X-VVP-Status: VALID\\r\\n", "outcome": "valid", "rule": "on_valid"}

``headers`` is one ready block: every value in it has been stripped of control characters
and every name checked as a SIP token when the policy was loaded.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import ipaddress
import logging
import signal
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

from . import jsonfast
from .breaker import GuardedVerifier
from .config import Settings
from .decision import BadCallRequest, CallRequest, Decider, Decision
from .fallback import FallbackPusher
from .metrics import Metrics, bounded_code
from .reload import PolicyStore
from .replay import MemoryReplayStore, RedisReplayStore, ReplayGuard, ReplayStore
from .verifier import VerifierClient

log = logging.getLogger("vvp_helper")

#: Header carrying the shared secret from Kamailio (kamailio.cfg, VVP_HELPER_SECRET).
SECRET_HEADER = "X-VVP-Edge-Secret"


@dataclass
class Load:
    """Decision requests being worked on (read on every request: a plain int)."""

    in_flight: int = 0


SETTINGS = web.AppKey("settings", Settings)
LOAD = web.AppKey("load", Load)
DECIDER = web.AppKey("decider", Decider)
STORE = web.AppKey("store", PolicyStore)
METRICS = web.AppKey("metrics", Metrics)
PUSHER = web.AppKey("pusher", FallbackPusher)


def create_app(settings: Settings, registry: CollectorRegistry | None = None) -> web.Application:
    """The helper application. Raises PolicyError if the policy file does not load."""
    app = web.Application(client_max_size=settings.max_request_bytes)
    metrics = Metrics(registry)
    app[SETTINGS] = settings
    app[METRICS] = metrics
    app[LOAD] = Load()
    app[STORE] = PolicyStore.open(settings.policy_path, metrics)
    app.cleanup_ctx.append(_verifier_lifetime)
    app.cleanup_ctx.append(_policy_lifetime)
    app.router.add_post("/v1/decide", decide)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/metrics", metrics_page)
    app.router.add_post("/-/reload", reload_policy)
    return app


async def _verifier_lifetime(app: web.Application) -> AsyncIterator[None]:
    settings, metrics = app[SETTINGS], app[METRICS]
    endpoint = settings.verify_endpoint
    verifier = None
    if endpoint:
        client = VerifierClient(
            endpoint,
            timeout=settings.verifier_timeout,
            token=settings.verifier_token,
            max_connections=settings.verifier_concurrency,
        )
        verifier = GuardedVerifier(
            client,
            failure_threshold=settings.breaker_failures,
            reset_timeout=settings.breaker_reset,
            max_in_flight=settings.verifier_concurrency,
            metrics=metrics,
        )
    replay = None
    if settings.replay_check:
        store: ReplayStore = (
            RedisReplayStore(settings.replay_redis_url)
            if settings.replay_redis_url
            else MemoryReplayStore()
        )
        replay = ReplayGuard(store, on_store_error=metrics.replay_store_errors.inc)
    app[DECIDER] = Decider(
        verifier,
        settings.precheck,
        settings.deadline,
        metrics,
        replay,
        max_queue_wait=settings.max_queue_wait,
    )
    yield
    if verifier is not None:
        await verifier.close()
    if replay is not None:
        await replay.close()


async def _policy_lifetime(app: web.Application) -> AsyncIterator[None]:
    """File watching, SIGHUP and the fallback push to Kamailio, for the app's lifetime."""
    settings, store = app[SETTINGS], app[STORE]
    pusher = FallbackPusher(settings.kamailio_rpc_urls, app[METRICS])
    app[PUSHER] = pusher
    store.on_loaded.append(pusher.push)
    tasks = []
    if settings.policy_watch_interval > 0:
        tasks.append(asyncio.create_task(store.watch(settings.policy_watch_interval)))
    if settings.kamailio_rpc_urls:
        tasks.append(
            asyncio.create_task(
                pusher.keep_pushing(lambda: store.current, settings.fallback_push_interval)
            )
        )
    loop = asyncio.get_running_loop()
    hup_installed = False
    with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
        # Only in the main thread of a real process (not every test runner allows it).
        loop.add_signal_handler(signal.SIGHUP, lambda: loop.create_task(store.reload("sighup")))
        hup_installed = True
    yield
    if hup_installed:
        loop.remove_signal_handler(signal.SIGHUP)
    for task in tasks:
        task.cancel()
    for task in tasks:
        with contextlib.suppress(asyncio.CancelledError):
            await task
    await pusher.close()


async def decide(request: web.Request) -> web.Response:
    started = time.perf_counter()
    settings, metrics = request.app[SETTINGS], request.app[METRICS]
    if settings.shared_secret is not None and not hmac.compare_digest(
        request.headers.get(SECRET_HEADER, "").encode(), settings.shared_secret.encode()
    ):
        # Never log the secret, nor what was sent in its place.
        log.warning("decision request without the shared secret from %s", request.remote)
        return web.json_response({"error": "unauthorized"}, status=401)
    load = request.app[LOAD]
    if load.in_flight >= settings.max_in_flight:
        # Overloaded: a quick 503 lets Kamailio try the other helper or fall back now,
        # instead of queueing into its timeout.
        return web.json_response({"error": "overloaded"}, status=503)
    load.in_flight += 1
    metrics.in_flight.inc()
    try:
        try:
            call = CallRequest.from_json(jsonfast.loads(await request.read()))
        except (ValueError, BadCallRequest) as exc:
            # Not a caller's fault: Kamailio (or something posing as it) sent a bad
            # request. A 400 makes Kamailio take its fallback, right for our own bug.
            metrics.bad_requests.inc()
            log.warning("bad decision request: %s", exc)
            return web.json_response({"error": str(exc)[:200]}, status=400)
        # One reference read: a reload swapping the policy mid-call cannot mix two.
        policy = request.app[STORE].current
        decision = await request.app[DECIDER].decide(call, policy)
    finally:
        load.in_flight -= 1
        metrics.in_flight.dec()
    elapsed = time.perf_counter() - started
    instruction = decision.instruction
    action = "redirect" if 300 <= instruction.code < 400 else "reject"
    metrics.decisions.labels(decision.outcome, action, str(instruction.code)).inc()
    metrics.decision_seconds.observe(elapsed)
    if decision.error_kind == "precheck":
        for error in decision.errors:
            metrics.precheck_rejections.labels(bounded_code(error["code"])).inc()
    _log_decision(call, decision, elapsed * 1000)
    body = {
        "code": instruction.code,
        "reason": instruction.reason,
        "contact": instruction.contact or "",
        "headers": instruction.header_block(),
        "outcome": decision.outcome,
        "rule": instruction.rule,
    }
    return web.Response(body=jsonfast.dumps(body), content_type="application/json")


async def healthz(request: web.Request) -> web.Response:
    return web.json_response({"status": "alive"})


async def readyz(request: web.Request) -> web.Response:
    settings = request.app[SETTINGS]
    policy = request.app[STORE].current
    ready = settings.verifier_url is not None
    body = {
        "ready": ready,
        "policy": policy.source,
        "policy_sha256": policy.sha256,
        "verifier": settings.verify_endpoint,
    }
    return web.json_response(body, status=200 if ready else 503)


async def metrics_page(request: web.Request) -> web.Response:
    body = generate_latest(request.app[METRICS].registry)
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})


async def reload_policy(request: web.Request) -> web.Response:
    # Changing routing is an operator's act: only from this host (or a sidecar sharing
    # its network namespace), whatever address the helper listens on.
    try:
        loopback = ipaddress.ip_address(request.remote or "").is_loopback
    except ValueError:
        loopback = False
    if not loopback:
        return web.json_response({"error": "reload is allowed from loopback only"}, status=403)
    result = await request.app[STORE].reload("http")
    return web.json_response(result.as_json(), status=200 if result.ok else 422)


def _log_decision(call: CallRequest, decision: Decision, elapsed_ms: float) -> None:
    # One summary line per call; never the JWT, only what identifies and explains it.
    if not log.isEnabledFor(logging.INFO):
        return
    fields = {
        "call_id": call.call_id,
        "request_id": decision.request_id,
        "outcome": decision.outcome,
        "status": decision.status,
        "code": decision.instruction.code,
        "rule": decision.instruction.rule,
        "errors": [e["code"] for e in decision.errors][:5],
        "error_kind": decision.error_kind,
        "verifier_ms": round(decision.verifier_ms, 2) if decision.verifier_ms else None,
        "total_ms": round(elapsed_ms, 2),
        "source": f"{call.source_ip}:{call.source_port}",
    }
    log.info("decision", extra={"fields": fields})
