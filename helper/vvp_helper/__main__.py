"""``vvp-helper`` command line.

vvp-helper serve [--host H] [--port P] [--policy FILE] [--verifier-url URL] [--workers N] ...
vvp-helper check FILE...        validate policy files with the server's own loader
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import shutil
import signal
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from aiohttp import web
from prometheus_client.multiprocess import mark_process_dead

from . import logs
from .app import create_app, serve
from .config import Settings
from .errors import ConfigError, PolicyError
from .gc_tuning import tune_for_serving
from .policy.cases import CaseError, describe, format_answer, run_test_file
from .policy.load import load_policy, read_policy
from .policy.model import OUTCOMES

PROG = "vvp-helper"


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=PROG, description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)

    serve = sub.add_parser("serve", help="run the decision service (settings from VVP_* env)")
    serve.add_argument("--host", help="listen address (VVP_HELPER_HOST, 127.0.0.1)")
    serve.add_argument("--port", type=int, help="listen port (VVP_HELPER_PORT, 8480)")
    serve.add_argument("--policy", type=Path, help="policy file (VVP_POLICY)")
    serve.add_argument("--verifier-url", help="VVP Verifier base URL (VVP_VERIFIER_URL)")
    serve.add_argument(
        "--verifier-timeout", type=float, help="seconds per verification (VVP_VERIFIER_TIMEOUT)"
    )
    serve.add_argument("--deadline", type=float, help="helper deadline, s (VVP_HELPER_DEADLINE)")
    serve.add_argument("--log-level", help="DEBUG, INFO, WARNING (VVP_LOG_LEVEL)")
    serve.add_argument(
        "--workers",
        type=int,
        help="helper processes sharing the port (VVP_HELPER_PROCESSES, 1)",
    )

    check = sub.add_parser("check", help="validate policy files; exit 0 ok, 1 errors")
    check.add_argument("files", nargs="+", type=Path)
    check.add_argument("--strict", action="store_true", help="exit 3 when there are warnings")

    explain = sub.add_parser("explain", help="show the SIP answer for a described call")
    explain.add_argument("policy", type=Path)
    explain.add_argument("--outcome", required=True, choices=OUTCOMES)
    explain.add_argument("--error", action="append", default=[], help="error code (repeat)")
    explain.add_argument("--orig", help="calling number")
    explain.add_argument("--dest", help="called number")
    explain.add_argument("--source", help="source IP address")
    explain.add_argument("--brand", help="brand name")
    explain.add_argument("--logo", help="brand logo URL")
    explain.add_argument("--vetter-status", help="PASS, FAIL-ECC, FAIL-JURISDICTION, ...")
    explain.add_argument(
        "--claim", action="append", default=[], metavar="NAME=STATUS", help="claim status"
    )

    test = sub.add_parser("test", help="run policy test files")
    test.add_argument("files", nargs="+", type=Path)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.command == "check":
        return _check(args.files, strict=args.strict)
    if args.command == "explain":
        return _explain(args)
    if args.command == "test":
        return _test(args.files)
    return _serve(args)


def _serve(args: argparse.Namespace) -> int:
    try:
        settings = Settings.from_env().with_overrides(
            host=args.host,
            port=args.port,
            policy_path=args.policy,
            verifier_url=args.verifier_url,
            verifier_timeout=args.verifier_timeout,
            deadline=args.deadline,
            log_level=args.log_level.upper() if args.log_level else None,
            processes=args.workers,
        )
    except ConfigError as exc:
        print(f"{PROG}: error: {exc}", file=sys.stderr)
        return 2
    logs.configure(settings.log_level, json_lines=settings.log_json)
    if settings.verifier_url is None:
        print(
            f"{PROG}: error: no verifier URL (set VVP_VERIFIER_URL or --verifier-url; "
            "scripts/run starts the bundled simulator for demos)",
            file=sys.stderr,
        )
        return 2
    try:
        app = create_app(settings)
    except PolicyError as exc:
        print(exc, file=sys.stderr)
        print(f"{PROG}: error: policy {settings.policy_path} not loaded", file=sys.stderr)
        return 1
    if settings.processes == 1:
        return _run(app, settings)
    return _supervise(settings)


def _run(app: web.Application, settings: Settings) -> int:
    """Serve ``app`` in this process until SIGTERM or SIGINT."""
    loop_factory: Callable[[], asyncio.AbstractEventLoop] | None = None
    with contextlib.suppress(ImportError):  # the "fast" extra is optional
        import uvloop

        loop_factory = uvloop.new_event_loop
    with asyncio.Runner(loop_factory=loop_factory) as runner:
        runner.run(_serve_until_signalled(app, settings))
    return 0


async def _serve_until_signalled(app: web.Application, settings: Settings) -> None:
    """Serve until SIGTERM or SIGINT (containers and systemd send SIGTERM), then close."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    # reuse_port: several helper processes may share one port (the kernel spreads them).
    runner = await serve(app, settings.host, settings.port, reuse_port=True)
    tune_for_serving()
    logging.getLogger("vvp_helper").info(
        "helper listening on %s:%d, policy %s, verifier %s",
        settings.host,
        settings.port,
        settings.policy_path,
        settings.verify_endpoint,
    )
    try:
        await stop.wait()
    finally:
        await runner.cleanup()


#: A worker that dies sooner than this after its start is restarted only after this
#: long, so a worker that cannot start does not become a fork loop, seconds.
_RESTART_HOLDOFF_S = 1.0


def _supervise(settings: Settings) -> int:
    """The parent of ``settings.processes`` workers sharing the port (SO_REUSEPORT).

    It serves nothing itself: it restarts a worker that dies, passes SIGHUP (policy
    reload) to every worker, and on SIGTERM/SIGINT stops them all and waits for them.
    Each worker builds its own app after the fork (its own loop, sessions, metrics).
    The workers' metrics go to one directory made here for this run (metrics.py), so
    that any worker's /metrics shows them all; it is removed when the parent ends.
    """
    # A new, private (0700) directory per run: no file of an earlier run can count.
    # On a tmpfs /tmp (the container's, systemd's PrivateTmp) the files stay in memory.
    metrics_dir = tempfile.mkdtemp(prefix="vvp-helper-metrics-")
    try:
        return _supervise_workers(settings, metrics_dir)
    finally:
        shutil.rmtree(metrics_dir, ignore_errors=True)


def _supervise_workers(settings: Settings, metrics_dir: str) -> int:
    log = logging.getLogger("vvp_helper")
    workers: dict[int, float] = {}  # pid -> start time
    stopping = False

    def start_worker() -> None:
        pid = os.fork()
        if pid == 0:  # the worker
            for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
                signal.signal(sig, signal.SIG_DFL)
            code = 1
            try:
                code = _run(create_app(settings, multiprocess_dir=metrics_dir), settings)
            except BaseException:
                # os._exit skips the interpreter's own report: say why the worker ended.
                log.exception("helper worker %d failed", os.getpid())
            finally:
                logging.shutdown()
                os._exit(code)
        workers[pid] = time.monotonic()

    def forward(sig: int, _frame: object) -> None:
        nonlocal stopping
        if sig != signal.SIGHUP:
            stopping = True
            sig = signal.SIGTERM
        for pid in list(workers):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sig)

    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, forward)
    for _ in range(settings.processes):
        start_worker()
    log.info(
        "helper supervising %d worker processes: %s; their metrics in %s",
        len(workers),
        sorted(workers),
        metrics_dir,
    )
    while workers:
        try:
            pid, status = os.wait()
        except ChildProcessError:
            break
        started = workers.pop(pid, None)
        if started is None:
            continue
        # Its counters keep counting on /metrics; its gauges (the "live" modes) go.
        mark_process_dead(pid, metrics_dir)  # type: ignore[no-untyped-call]
        if stopping:
            continue
        log.warning(
            "helper worker %d ended (%s); starting another",
            pid,
            f"signal {-os.waitstatus_to_exitcode(status)}"
            if os.WIFSIGNALED(status)
            else f"exit {os.waitstatus_to_exitcode(status)}",
        )
        if time.monotonic() - started < _RESTART_HOLDOFF_S:
            time.sleep(_RESTART_HOLDOFF_S)
        if not stopping:
            start_worker()
    return 0


def _check(files: Sequence[Path], *, strict: bool) -> int:
    errors = warnings = 0
    for path in files:
        try:
            loaded = read_policy(path)
        except PolicyError as exc:
            errors += 1
            warnings += len(exc.problems) - len(exc.errors)
            print(exc)
            continue
        for warning in loaded.warnings:
            print(warning)
        warnings += len(loaded.warnings)
        policy = loaded.policy
        print(
            f"{path}: ok: {len(policy.rules)} rules, {len(policy.trunks)} trunks, "
            f"sha256 {policy.sha256[:12]}"
        )
    summary = f"{len(files)} file(s): {errors} with errors, {warnings} warning(s)"
    print(summary, file=sys.stderr)
    if errors:
        return 1
    return 3 if strict and warnings else 0


def _explain(args: argparse.Namespace) -> int:
    try:
        policy = load_policy(args.policy)
    except PolicyError as exc:
        print(exc, file=sys.stderr)
        return 1
    call: dict[str, object] = {"outcome": args.outcome, "errors": args.error}
    for key, value in (
        ("orig", args.orig),
        ("dest", args.dest),
        ("source", args.source),
        ("brand_name", args.brand),
        ("brand_logo_url", args.logo),
        ("vetter_status", args.vetter_status),
    ):
        if value is not None:
            call[key] = value
    claims = {}
    for item in args.claim:
        name, sep, status = item.partition("=")
        if not sep:
            print(f"{PROG}: error: --claim takes NAME=STATUS, not {item!r}", file=sys.stderr)
            return 2
        claims[name] = status
    if claims:
        call["claims"] = claims
    try:
        decision = describe(policy, call)
    except CaseError as exc:
        print(f"{PROG}: error: {exc}", file=sys.stderr)
        return 2
    print(f"rule: {decision.instruction.rule} ({args.policy})")
    print(format_answer(decision.instruction))
    return 0


def _test(files: Sequence[Path]) -> int:
    passed = failed = 0
    for path in files:
        try:
            _, results = run_test_file(path)
        except (CaseError, PolicyError) as exc:
            print(f"{path}: ERROR: {exc}")
            failed += 1
            continue
        for result in results:
            if result.ok:
                passed += 1
                print(f"ok    {path}: {result.name}")
            else:
                failed += 1
                print(f"FAIL  {path}: {result.name}")
                for failure in result.failures:
                    print(f"        {failure}")
    print(f"{passed} passed, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
