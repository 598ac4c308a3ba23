"""The helper's HTTP interface: ``HelperService(settings)``, served by ``httpserver``.

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

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

from . import jsonfast
from .breaker import GuardedVerifier
from .config import Settings
from .decision import BadCallRequest, CallRequest, Decider, Decision
from .fallback import FallbackPusher
from .httpserver import Handler, HttpServer, Request, Response, json_response
from .metrics import Metrics, bounded_code
from .reload import PolicyStore
from .replay import MemoryReplayStore, RedisReplayStore, ReplayGuard, ReplayStore
from .verifier import VerifierClient

log = logging.getLogger("vvp_helper")

#: Header carrying the shared secret from Kamailio (kamailio.cfg, VVP_HELPER_SECRET).
SECRET_HEADER = "x-vvp-edge-secret"

#: Pending connections the kernel keeps for the helper (capped by net.core.somaxconn).
#: Kamailio opens a connection per call in flight (up to VVP_MAX_IN_DECISION) and a
#: traffic burst opens them all at once: with a backlog of 128 the kernel drops the rest
#: of the SYNs and those calls wait a second for a retry.
LISTEN_BACKLOG = 4096


class HelperService:
    """One helper process: policy, verifier client, decider and the HTTP server.

    ``HelperService(settings)`` loads the policy (PolicyError if it does not load);
    ``await start()`` connects the rest and listens; ``await close()`` undoes it.
    """

    def __init__(self, settings: Settings, registry: CollectorRegistry | None = None) -> None:
        self.settings = settings
        self.metrics = Metrics(registry)
        self.store = PolicyStore.open(settings.policy_path, self.metrics)
        self.pusher = FallbackPusher(settings.kamailio_rpc_urls, self.metrics)
        self.in_flight = 0
        self._verifier: GuardedVerifier | None = None
        self._replay: ReplayGuard | None = None
        self.decider = self._build_decider()
        self._tasks: list[asyncio.Task[object]] = []
        self._hup_installed = False
        self._server = HttpServer(self.routes(), max_body_bytes=settings.max_request_bytes)

    def routes(self) -> dict[tuple[str, str], Handler]:
        return {
            ("POST", "/v1/decide"): self.decide,
            ("GET", "/healthz"): self.healthz,
            ("GET", "/readyz"): self.readyz,
            ("GET", "/metrics"): self.metrics_page,
            ("POST", "/-/reload"): self.reload_policy,
        }

    async def start(self, host: str, port: int, *, reuse_port: bool = False) -> int:
        """Connect the verifier and the policy machinery, then listen; returns the port."""
        self._start_policy_tasks()
        return await self._server.start(host, port, backlog=LISTEN_BACKLOG, reuse_port=reuse_port)

    async def close(self) -> None:
        await self._server.close()
        if self._hup_installed:
            asyncio.get_running_loop().remove_signal_handler(signal.SIGHUP)
            self._hup_installed = False
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks.clear()
        await self.pusher.close()
        if self._verifier is not None:
            await self._verifier.close()
        if self._replay is not None:
            await self._replay.close()

    def _build_decider(self) -> Decider:
        # The clients connect lazily, from the running loop, on their first request.
        settings, metrics = self.settings, self.metrics
        endpoint = settings.verify_endpoint
        if endpoint:
            client = VerifierClient(
                endpoint,
                timeout=settings.verifier_timeout,
                token=settings.verifier_token,
                max_connections=settings.verifier_concurrency,
            )
            self._verifier = GuardedVerifier.from_settings(client, settings, metrics)
        if settings.replay_check:
            store: ReplayStore = (
                RedisReplayStore(settings.replay_redis_url)
                if settings.replay_redis_url
                else MemoryReplayStore()
            )
            self._replay = ReplayGuard(store, on_store_error=metrics.replay_store_errors.inc)
        return Decider(
            self._verifier,
            settings.precheck,
            settings.deadline,
            metrics,
            self._replay,
            max_queue_wait=settings.max_queue_wait,
        )

    def _start_policy_tasks(self) -> None:
        """File watching, SIGHUP and the fallback push to Kamailio."""
        settings, store, pusher = self.settings, self.store, self.pusher
        store.on_loaded.append(pusher.push)
        loop = asyncio.get_running_loop()
        if settings.policy_watch_interval > 0:
            self._tasks.append(loop.create_task(store.watch(settings.policy_watch_interval)))
        if settings.kamailio_rpc_urls:
            self._tasks.append(
                loop.create_task(
                    pusher.keep_pushing(lambda: store.current, settings.fallback_push_interval)
                )
            )
        with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
            # Only in the main thread of a real process (not every test runner allows it).
            loop.add_signal_handler(signal.SIGHUP, lambda: loop.create_task(store.reload("sighup")))
            self._hup_installed = True

    async def decide(self, request: Request) -> Response:
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
                call = CallRequest.from_json(jsonfast.loads(request.body))
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

    async def healthz(self, request: Request) -> Response:
        return json_response({"status": "alive"})

    async def readyz(self, request: Request) -> Response:
        policy = self.store.current
        ready = self.settings.verifier_url is not None
        body = {
            "ready": ready,
            "policy": policy.source,
            "policy_sha256": policy.sha256,
            "verifier": self.settings.verify_endpoint,
        }
        return json_response(body, status=200 if ready else 503)

    async def metrics_page(self, request: Request) -> Response:
        return Response(
            body=generate_latest(self.metrics.registry), content_type=CONTENT_TYPE_LATEST
        )

    async def reload_policy(self, request: Request) -> Response:
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
