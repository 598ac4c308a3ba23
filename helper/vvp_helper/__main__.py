"""``vvp-helper`` command line.

vvp-helper serve [--host H] [--port P] [--policy FILE] [--verifier-url URL] ...
vvp-helper check FILE...        validate policy files with the server's own loader
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

from aiohttp import web

from .app import create_app
from .config import Settings
from .errors import ConfigError, PolicyError
from .policy import load_policy

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

    check = sub.add_parser("check", help="validate policy files; exit 0 ok, 1 errors")
    check.add_argument("files", nargs="+", type=Path)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.command == "check":
        return _check(args.files)
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
        )
    except ConfigError as exc:
        print(f"{PROG}: error: {exc}", file=sys.stderr)
        return 2
    logging.basicConfig(
        level=settings.log_level,
        format="%(asctime)s %(levelname)s %(name)s %(message)s",
        stream=sys.stderr,
    )
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
    loop = None
    try:
        import uvloop

        loop = uvloop.new_event_loop()
    except ImportError:  # the "fast" extra is optional
        pass
    logging.getLogger("vvp_helper").info(
        "helper listening on %s:%d, policy %s, verifier %s",
        settings.host,
        settings.port,
        settings.policy_path,
        settings.verify_endpoint,
    )
    web.run_app(
        app,
        host=settings.host,
        port=settings.port,
        print=None,
        access_log=None,
        loop=loop,
        reuse_port=True,
    )
    return 0


def _check(files: Sequence[Path]) -> int:
    failed = 0
    for path in files:
        try:
            policy = load_policy(path)
        except PolicyError as exc:
            failed += 1
            print(exc)
            continue
        print(f"{path}: ok ({len(set(map(id, policy.actions.values())))} actions)")
    if failed:
        print(f"{failed} of {len(files)} policy files have errors", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
