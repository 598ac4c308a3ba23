"""The helper's HTTP interface (aiohttp), built by ``create_app(settings)``.

    POST /v1/decide   Kamailio's decision request -> instruction JSON
    GET  /healthz     the process is alive
    GET  /readyz      a policy is loaded and a verifier is configured

The instruction Kamailio applies (kamailio.cfg route[HELPER_REPLY])::

    {"code": 302, "reason": "Moved Temporarily", "contact": "sip:+1555@verified.example",
     "headers": "X-VVP-Status: VALID\\r\\n", "outcome": "valid"}

``headers`` is one ready block: every value in it has been stripped of control characters
and every name checked as a SIP token when the policy was loaded.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import AsyncIterator

from aiohttp import web

from .actions import Policy
from .config import Settings
from .decision import BadCallRequest, CallRequest, Decider, Decision
from .policy import load_policy
from .verifier import VerifierClient

log = logging.getLogger("vvp_helper")

SETTINGS = web.AppKey("settings", Settings)
DECIDER = web.AppKey("decider", Decider)
POLICY = web.AppKey("policy", Policy)


def create_app(settings: Settings, policy: Policy | None = None) -> web.Application:
    """The helper application; loads the policy from settings unless one is given."""
    app = web.Application(client_max_size=settings.max_request_bytes)
    app[SETTINGS] = settings
    app[POLICY] = policy if policy is not None else load_policy(settings.policy_path)
    app.cleanup_ctx.append(_verifier_lifetime)
    app.router.add_post("/v1/decide", decide)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    return app


async def _verifier_lifetime(app: web.Application) -> AsyncIterator[None]:
    settings = app[SETTINGS]
    endpoint = settings.verify_endpoint
    client = (
        VerifierClient(
            endpoint,
            timeout=settings.verifier_timeout,
            token=settings.verifier_token,
            max_connections=settings.verifier_concurrency,
        )
        if endpoint
        else None
    )
    app[DECIDER] = Decider(client, settings.precheck, settings.deadline)
    yield
    if client is not None:
        await client.close()


async def decide(request: web.Request) -> web.Response:
    started = time.perf_counter()
    try:
        call = CallRequest.from_json(await request.json())
    except (ValueError, BadCallRequest) as exc:
        # Not a caller's fault: Kamailio (or something posing as it) sent a bad request.
        # A 400 makes Kamailio take its fallback, which is the right thing for our bug.
        log.warning("bad decision request: %s", exc)
        return web.json_response({"error": str(exc)[:200]}, status=400)
    # One reference read: a reload swapping app[POLICY] mid-call cannot mix two policies.
    policy = request.app[POLICY]
    decision = await request.app[DECIDER].decide(call, policy)
    _log_decision(call, decision, (time.perf_counter() - started) * 1000)
    instruction = decision.instruction
    return web.json_response(
        {
            "code": instruction.code,
            "reason": instruction.reason,
            "contact": instruction.contact or "",
            "headers": instruction.header_block(),
            "outcome": decision.outcome,
        }
    )


async def healthz(request: web.Request) -> web.Response:
    return web.json_response({"status": "alive"})


async def readyz(request: web.Request) -> web.Response:
    settings = request.app[SETTINGS]
    policy = request.app[POLICY]
    ready = settings.verifier_url is not None
    body = {
        "ready": ready,
        "policy": policy.source,
        "policy_sha256": policy.sha256,
        "verifier": settings.verify_endpoint,
    }
    return web.json_response(body, status=200 if ready else 503)


def _log_decision(call: CallRequest, decision: Decision, elapsed_ms: float) -> None:
    # One summary line per call; never the JWT, only what identifies and explains it.
    if not log.isEnabledFor(logging.INFO):
        return
    codes = [e["code"] for e in decision.errors][:5]
    log.info(
        "decision %s",
        json.dumps(
            {
                "call_id": call.call_id,
                "request_id": decision.request_id,
                "outcome": decision.outcome,
                "code": decision.instruction.code,
                "errors": codes,
                "error_kind": decision.error_kind,
                "verifier_ms": round(decision.verifier_ms, 2) if decision.verifier_ms else None,
                "total_ms": round(elapsed_ms, 2),
                "source": f"{call.source_ip}:{call.source_port}",
            },
            separators=(",", ":"),
        ),
    )
