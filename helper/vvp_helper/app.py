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
from collections.abc import AsyncIterator, Awaitable, Callable

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry

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

#: Pending connections the kernel keeps for the helper (capped by net.core.somaxconn).
#: Kamailio opens a connection per call in flight (up to VVP_MAX_IN_DECISION) and a
#: traffic burst opens them all at once: with a backlog of 128 the kernel drops the rest
#: of the SYNs and those calls wait a second for a retry.
LISTEN_BACKLOG = 4096

_JSON = "application/json"

Handler = Callable[[web.Request], Awaitable[web.Response]]


def json_response(data: object, status: int = 200) -> web.Response:
    # jsonfast (orjson) instead of web.json_response's json.dumps: ~10% of a call.
    return web.Response(body=jsonfast.dumps(data), status=status, content_type=_JSON)


class Helper:
    """One helper process's state and its route handlers.

    Built by ``create_app`` (which loads the policy: PolicyError if it does not load);
    the verifier client, the replay store and the policy tasks live in the app's
    ``cleanup_ctx``, from startup to cleanup.
    """

    def __init__(self, settings: Settings, metrics: Metrics) -> None:
        self.settings = settings
        self.metrics = metrics
        self.store = PolicyStore.open(settings.policy_path, metrics)
        self.pusher = FallbackPusher(settings.kamailio_rpc_urls, metrics)
        self.in_flight = 0
        # Until the app starts: no verifier, so a decision would be ``error``.
        self.decider = Decider(None, settings.precheck, settings.deadline, metrics)

    def routes(self) -> dict[tuple[str, str], Handler]:
        """{(method, path): handler} of every route."""
        return {
            ("POST", "/v1/decide"): self.decide,
            ("GET", "/healthz"): self.healthz,
            ("GET", "/readyz"): self.readyz,
            ("GET", "/metrics"): self.metrics_page,
            ("POST", "/-/reload"): self.reload_policy,
        }

    async def decide(self, request: web.Request) -> web.Response:
        started = time.perf_counter()
        settings, metrics = self.settings, self.metrics
        if settings.shared_secret is not None and not hmac.compare_digest(
            request.headers.get(SECRET_HEADER, "").encode(), settings.shared_secret.encode()
        ):
            # Never log the secret, nor what was sent in its place.
            log.warning("decision request without the shared secret from %s", request.remote)
            return json_response({"error": "unauthorized"}, status=401)
        if self.in_flight >= settings.max_in_flight:
            # Overloaded: a quick 503 lets Kamailio try the other helper or fall back now,
            # instead of queueing into its timeout.
            return json_response({"error": "overloaded"}, status=503)
        self.in_flight += 1
        metrics.in_flight.inc()
        try:
            try:
                if request.content.is_eof():
                    raw = await request.read()  # all here (Kamailio sends it at once)
                else:
                    # aiohttp bounds the request line and headers (keepalive_timeout)
                    # but not a body that stops half way: a client cannot hold us
                    # longer than the deadline Kamailio waits for anyway.
                    async with asyncio.timeout(settings.deadline):
                        raw = await request.read()
            except TimeoutError:
                log.warning("decision request body not received from %s", request.remote)
                response = json_response({"error": "request body timeout"}, status=408)
                response.force_close()
                return response
            try:
                call = CallRequest.from_json(jsonfast.loads(raw))
            except (ValueError, BadCallRequest) as exc:
                # Not a caller's fault: Kamailio (or something posing as it) sent a bad
                # request. A 400 makes Kamailio take its fallback, right for our own bug.
                metrics.bad_requests.inc()
                log.warning("bad decision request: %s", exc)
                return json_response({"error": str(exc)[:200]}, status=400)
            # One reference read: a reload swapping the policy mid-call cannot mix two.
            policy = self.store.current
            decision = await self.decider.decide(call, policy)
        finally:
            self.in_flight -= 1
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
        return json_response(instruction_json(decision))

    async def healthz(self, request: web.Request) -> web.Response:
        return json_response({"status": "alive"})

    async def readyz(self, request: web.Request) -> web.Response:
        policy = self.store.current
        ready = self.settings.verifier_url is not None
        body = {
            "ready": ready,
            "policy": policy.source,
            "policy_sha256": policy.sha256,
            "verifier": self.settings.verify_endpoint,
        }
        return json_response(body, status=200 if ready else 503)

    async def metrics_page(self, request: web.Request) -> web.Response:
        body = self.metrics.exposition()
        # CONTENT_TYPE_LATEST carries its own charset, which web.Response's content_type
        # argument refuses; set the header as it is.
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def reload_policy(self, request: web.Request) -> web.Response:
        # Changing routing is an operator's act: only from this host (or a sidecar sharing
        # its network namespace), whatever address the helper listens on.
        try:
            loopback = ipaddress.ip_address(request.remote or "").is_loopback
        except ValueError:
            loopback = False
        if not loopback:
            return json_response({"error": "reload is allowed from loopback only"}, status=403)
        result = await self.store.reload("http")
        return json_response(result.as_json(), status=200 if result.ok else 422)


HELPER = web.AppKey("helper", Helper)


def create_app(
    settings: Settings,
    registry: CollectorRegistry | None = None,
    *,
    multiprocess_dir: str | None = None,
) -> web.Application:
    """The helper application. Raises PolicyError if the policy file does not load.

    ``multiprocess_dir``: a worker of ``serve --workers N`` (see metrics.py).
    """
    helper = Helper(settings, Metrics(registry, multiprocess_dir=multiprocess_dir))
    # client_max_size: a larger decision request gets 413 before its body is read.
    app = web.Application(client_max_size=settings.max_request_bytes)
    app[HELPER] = helper
    app.cleanup_ctx.append(_decider_lifetime)
    app.cleanup_ctx.append(_policy_lifetime)
    for (method, path), handler in helper.routes().items():
        app.router.add_route(method, path, handler)
    return app


async def _decider_lifetime(app: web.Application) -> AsyncIterator[None]:
    """The verifier client (one ClientSession per process) and the replay store."""
    helper = app[HELPER]
    settings, metrics = helper.settings, helper.metrics
    verifier: GuardedVerifier | None = None
    endpoint = settings.verify_endpoint
    if endpoint:
        client = VerifierClient.from_settings(settings)
        verifier = GuardedVerifier.from_settings(client, settings, metrics)
    replay: ReplayGuard | None = None
    if settings.replay_check:
        store: ReplayStore = (
            RedisReplayStore(settings.replay_redis_url)
            if settings.replay_redis_url
            else MemoryReplayStore()
        )
        replay = ReplayGuard(store, on_store_error=metrics.replay_store_errors.inc)
    helper.decider = Decider(
        verifier,
        settings.precheck,
        settings.deadline,
        metrics,
        replay,
        max_queue_wait=settings.max_queue_wait,
    )
    try:
        yield
    finally:
        if verifier is not None:
            await verifier.close()
        if replay is not None:
            await replay.close()


async def _policy_lifetime(app: web.Application) -> AsyncIterator[None]:
    """File watching, SIGHUP and the fallback push to Kamailio, for the app's lifetime."""
    helper = app[HELPER]
    settings, store, pusher = helper.settings, helper.store, helper.pusher
    store.on_loaded.append(pusher.push)
    loop = asyncio.get_running_loop()
    tasks: list[asyncio.Task[object]] = []
    if settings.policy_watch_interval > 0:
        tasks.append(loop.create_task(store.watch(settings.policy_watch_interval)))
    if settings.kamailio_rpc_urls:
        tasks.append(
            loop.create_task(
                pusher.keep_pushing(lambda: store.current, settings.fallback_push_interval)
            )
        )
    hup_installed = False
    with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
        # Only in the main thread of a real process (not every test runner allows it).
        loop.add_signal_handler(signal.SIGHUP, lambda: loop.create_task(store.reload("sighup")))
        hup_installed = True
    try:
        yield
    finally:
        if hup_installed:
            loop.remove_signal_handler(signal.SIGHUP)
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        store.on_loaded.remove(pusher.push)
        await pusher.close()


async def serve(
    app: web.Application, host: str, port: int, *, reuse_port: bool = False
) -> web.AppRunner:
    """Start ``app`` (from create_app) on host:port (0 = a free port); returns the runner.

    The bound port is ``runner.addresses[0][1]``; ``await runner.cleanup()`` stops it.
    ``reuse_port``: several helper processes share the port (``serve --processes``).
    """
    settings = app[HELPER].settings
    runner = web.AppRunner(
        app,
        # No access log: one line per call costs more than the decision's JSON; the
        # decision line (_log_decision) says what an operator needs.
        access_log=None,
        # Idle keep-alive connections, and requests whose head is still incomplete,
        # are closed after this long (aiohttp's default is an hour).
        keepalive_timeout=settings.idle_timeout,
        # A request answered before its body ended (408, 401, 503) closes at once
        # instead of being read for up to 10 s more (chunk extensions can be endless).
        lingering_time=0,
        shutdown_timeout=1.0,
    )
    await runner.setup()
    site = web.TCPSite(runner, host, port, backlog=LISTEN_BACKLOG, reuse_port=reuse_port or None)
    await site.start()
    return runner


def instruction_json(decision: Decision) -> dict[str, object]:
    """The answer to Kamailio's decision request (the shape in the module docstring)."""
    instruction = decision.instruction
    return {
        "code": instruction.code,
        "reason": instruction.reason,
        "contact": instruction.contact or "",
        "headers": instruction.header_block(),
        "outcome": decision.outcome,
        "rule": instruction.rule,
    }


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
