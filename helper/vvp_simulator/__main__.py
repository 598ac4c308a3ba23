"""Command line of the VVP verifier SIMULATOR and its PASSporT minting tool.

python -m vvp_simulator serve [--host H] [--port P] [--latency-ms N] [--mode M]
                              [--error-rate F] [--force-status S] [--parser-crash]
                              [--stale-revocation-every-s S]
                              [--trust-seed TEXT ...] [--trust-aid AID ...]
                              [--capacity N] [--cold-ms M] [--latency-factor F]
                              [--crash-call-id-prefix TEXT]
                              [--tls-cert PEM --tls-key PEM [--tls-client-ca PEM]]
python -m vvp_simulator mint --kind K --orig TN --dest TN [--format headers|json|env]
                             [--sig-form cesr|jws] [--aid-code D|B] [--seed TEXT]
python -m vvp_simulator mint-csv --out FILE --count N --kind K[,K2...] --orig TN --dest TN
                                 [--sig-form cesr|jws] [--aid-code D|B] [--seed TEXT]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, NoReturn

from vvp_simulator.faults import FORCEABLE_STATUSES, MODES, Faults
from vvp_simulator.keys import AID_CODES, DEMO_ISSUER_SEED, SIG_FORMS, SigningKey
from vvp_simulator.mint import FORMATS, mint_rows, render, write_csv
from vvp_simulator.passport import KINDS, mint
from vvp_simulator.server import SimulatorSettings, serve_forever

PROG = "vvp-simulator"
EXIT_USAGE = 2


class _UsageError(Exception):
    pass


class _Parser(argparse.ArgumentParser):
    """Reports every usage error as `vvp-simulator: error: ...`, subcommands included."""

    def error(self, message: str) -> NoReturn:
        self.print_usage(sys.stderr)
        self.exit(EXIT_USAGE, f"{PROG}: error: {message}\n")


def _kinds(text: str) -> list[str]:
    kinds = [k.strip() for k in text.split(",") if k.strip()]
    bad = [k for k in kinds if k not in KINDS]
    if bad or not kinds:
        raise argparse.ArgumentTypeError(
            f"unknown kind(s) {', '.join(bad) or text!r}; choose from {', '.join(KINDS)}"
        )
    return kinds


def _parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog=PROG, description="VVP verifier SIMULATOR (not a real verifier) and PASSporT minter"
    )
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    serve = sub.add_parser("serve", help="run the simulated verifier HTTP service")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=8090)
    serve.add_argument("--latency-ms", type=float, default=0.0)
    serve.add_argument("--mode", choices=MODES, default="normal")
    serve.add_argument("--error-rate", type=float, default=0.0)
    serve.add_argument("--force-status", choices=FORCEABLE_STATUSES, default=None)
    serve.add_argument("--rng-seed", type=int, default=0)
    serve.add_argument("--capacity", type=float, default=None,
                       help="verifications/s it can do; beyond that requests queue")  # fmt: skip
    serve.add_argument("--cold-ms", type=float, default=0.0,
                       help="ms the first verification of each new dossier takes")  # fmt: skip
    serve.add_argument("--latency-factor", type=float, default=1.0,
                       help="multiplies every simulated latency")  # fmt: skip
    serve.add_argument("--crash-call-id-prefix", default=None,
                       help="answer HTTP 500 text/plain and close for these Call-IDs")  # fmt: skip
    serve.add_argument(
        "--parser-crash",
        action="store_true",
        help="answer a PASSporT the verifier's parser refuses, with a SIP context, as the "
        "real verifier does: HTTP 500 text/plain, then close the connection",
    )
    serve.add_argument(
        "--stale-revocation-every-s",
        type=float,
        default=0.0,
        help="per dossier, one stale-revocation INDETERMINATE every this many seconds "
        "(the real verifier: 300); 0 = never",
    )
    serve.add_argument(
        "--trust-seed",
        action="append",
        default=None,
        help="seed text of a trusted signing key, trusted under its D and B AIDs "
        f"(repeatable; default {DEMO_ISSUER_SEED!r} unless --trust-aid is given)",
    )
    serve.add_argument(
        "--trust-aid",
        action="append",
        default=None,
        help="trust an issuer by its public AID: D (transferable) or B (non-transferable) "
        "Ed25519 identifier, 44 characters (repeatable)",
    )

    serve.add_argument("--tls-cert", type=Path, help="serve HTTPS with this certificate (PEM)")
    serve.add_argument("--tls-key", type=Path, help="private key of --tls-cert (PEM)")
    serve.add_argument(
        "--tls-client-ca", type=Path, help="require client certificates issued by this CA (PEM)"
    )

    one = sub.add_parser("mint", help="mint one PASSporT and print it")
    one.add_argument("--kind", choices=KINDS, default="valid")
    one.add_argument("--orig", required=True)
    one.add_argument("--dest", required=True)
    one.add_argument("--format", choices=FORMATS, default="headers")
    one.add_argument("--now", type=int, default=None, help="unix time to mint at")
    _signature_options(one)

    csv = sub.add_parser("mint-csv", help="write a sipp injection CSV of minted PASSporTs")
    csv.add_argument("--out", required=True)
    csv.add_argument("--count", type=int, required=True)
    csv.add_argument("--kind", type=_kinds, default=["valid"], help="comma-separated kinds")
    csv.add_argument("--orig", required=True)
    csv.add_argument("--dest", required=True)
    csv.add_argument("--now", type=int, default=None, help="unix time to mint at")
    _signature_options(csv)
    return parser


def _signature_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--seed",
        default=DEMO_ISSUER_SEED,
        help="seed text of the signing key (a simulator trusts it with --trust-seed, or by "
        f"the AID in the minted kid with --trust-aid); default {DEMO_ISSUER_SEED!r}",
    )
    parser.add_argument(
        "--sig-form",
        choices=SIG_FORMS,
        default="cesr",
        help="signature encoding: cesr (88 characters, as the VVP issuer writes) or jws "
        "(plain base64url, 86 characters)",
    )
    parser.add_argument(
        "--aid-code",
        choices=AID_CODES,
        default="D",
        help="the signer's AID in the kid: D (transferable) or B (non-transferable)",
    )


def _serve(args: argparse.Namespace) -> int:
    settings = SimulatorSettings(
        host=args.host,
        port=args.port,
        trust_seeds=tuple(args.trust_seed or (() if args.trust_aid else (DEMO_ISSUER_SEED,))),
        trust_aids=tuple(args.trust_aid or ()),
        faults=Faults(
            latency_ms=args.latency_ms,
            mode=args.mode,
            error_rate=args.error_rate,
            force_status=args.force_status,
            parser_crash=args.parser_crash,
            stale_revocation_every_s=args.stale_revocation_every_s,
            capacity=args.capacity,
            cold_ms=args.cold_ms,
            latency_factor=args.latency_factor,
            crash_call_id_prefix=args.crash_call_id_prefix,
        ),
        rng_seed=args.rng_seed,
        tls_cert=args.tls_cert,
        tls_key=args.tls_key,
        tls_client_ca=args.tls_client_ca,
    )
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    logging.getLogger("vvp_simulator").warning(
        "starting the VVP verifier SIMULATOR: verdicts are simulated, not real verification"
    )
    loop_factory: Callable[[], asyncio.AbstractEventLoop] | None = None
    with contextlib.suppress(ImportError):
        import uvloop

        loop_factory = uvloop.new_event_loop
    with contextlib.suppress(KeyboardInterrupt), asyncio.Runner(loop_factory=loop_factory) as r:
        r.run(serve_forever(settings))
    return 0


def _signing(args: argparse.Namespace) -> dict[str, Any]:
    """How mint and mint-csv sign: the same options for both."""
    return {
        "now": args.now,
        "key": SigningKey.from_seed_text(args.seed),
        "sig_form": args.sig_form,
        "aid_code": args.aid_code,
    }


def _mint(args: argparse.Namespace) -> int:
    minted = mint(args.kind, args.orig, args.dest, **_signing(args))
    print(render(minted, args.format))
    return 0


def _mint_csv(args: argparse.Namespace) -> int:
    rows = mint_rows(args.kind, args.count, args.orig, args.dest, **_signing(args))
    try:
        with open(args.out, "w", encoding="ascii", newline="\n") as out:
            written = write_csv(out, rows)
    except OSError as exc:
        raise _UsageError(f"cannot write {args.out}: {exc.strerror or exc}") from exc
    print(f"wrote {written} rows to {args.out}", file=sys.stderr)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)  # exits 2 with "vvp-simulator: error: ..." on bad usage
    commands = {"serve": _serve, "mint": _mint, "mint-csv": _mint_csv}
    try:
        return commands[args.command](args)
    except (ValueError, _UsageError) as exc:
        print(f"{PROG}: error: {exc}", file=sys.stderr)
        return EXIT_USAGE


if __name__ == "__main__":
    sys.exit(main())
