"""The helper's HTTP handlers (aiohttp): one process's state and its routes.

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
import hmac
import ipaddress
import logging
import time
from collections.abc import Awaitable, Callable

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, Counter

from . import jsonfast
from .config import Settings
from .decision import BadCallRequest, CallRequest, Decider, Decision
from .metrics import Metrics, bounded_code
from .policy.kamailio_push import FallbackPusher
from .policy.store import PolicyStore

log = logging.getLogger("vvp_helper")

#: Header carrying the shared secret from Kamailio (kamailio.cfg, VVP_HELPER_SECRET).
SECRET_HEADER = "X-VVP-Edge-Secret"

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
        if not metrics.multiprocess:
            # Read when scraped. A worker of several writes its count (no functions in
            # prometheus_client's multiprocess mode).
            metrics.in_flight.set_function(lambda: self.in_flight)
        #: (outcome, action, code) -> its decisions counter: labels() takes a lock and
        #: checks its arguments on every call (~2 us); the set is bounded by the policy.
        self._decision_counters: dict[tuple[str, str, str], Counter] = {}
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
        if metrics.multiprocess:
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
            if metrics.multiprocess:
                metrics.in_flight.dec()
        elapsed = time.perf_counter() - started
        instruction = decision.instruction
        action = "redirect" if 300 <= instruction.code < 400 else "reject"
        key = (decision.outcome, action, str(instruction.code))
        counter = self._decision_counters.get(key)
        if counter is None:
            counter = self._decision_counters[key] = metrics.decisions.labels(*key)
        counter.inc()
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
