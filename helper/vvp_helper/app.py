"""The helper application: ``create_app(settings)`` wires the handlers (handlers.py), the
verifier client, the replay store and the policy's reload and Kamailio push into one
aiohttp application; ``serve`` starts it on a port.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
from collections.abc import AsyncIterator

from aiohttp import web
from prometheus_client import CollectorRegistry

from .config import Settings
from .decision import Decider
from .handlers import Helper
from .metrics import Metrics
from .sip.replay import MemoryReplayStore, RedisReplayStore, ReplayGuard, ReplayStore
from .verifier.client import VerifierClient
from .verifier.guard import GuardedVerifier

#: Pending connections the kernel keeps for the helper (capped by net.core.somaxconn).
#: Kamailio opens a connection per call in flight (up to VVP_MAX_IN_DECISION) and a
#: traffic burst opens them all at once: with a backlog of 128 the kernel drops the rest
#: of the SYNs and those calls wait a second for a retry.
LISTEN_BACKLOG = 4096

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
        # decision line (handlers._log_decision) says what an operator needs.
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
