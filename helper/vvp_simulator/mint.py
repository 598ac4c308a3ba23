"""Output formats of the minting tool that feeds the VVP verifier SIMULATOR.

Formats: SIP header lines, JSON, shell `env` assignments, and sipp injection CSV.
"""

from __future__ import annotations

import json
import shlex
from collections.abc import Iterable, Sequence
from typing import TextIO

from vvp_simulator.keys import SigningKey
from vvp_simulator.passport import DEMO_ISSUER, MintedIdentity, mint

FORMATS: tuple[str, ...] = ("headers", "json", "env")
CSV_COLUMNS: tuple[str, ...] = ("orig", "dest", "passport_jwt", "kid", "vvp_identity", "kind")


def as_headers(m: MintedIdentity) -> str:
    return "\n".join(
        (
            f"Identity: {m.identity_header()}",
            f"P-VVP-Identity: {m.vvp_identity}",
            f"P-VVP-Passport: {m.passport_jwt}",
        )
    )


def as_json(m: MintedIdentity) -> str:
    return json.dumps(
        {
            "kind": m.kind,
            "orig": m.orig,
            "dest": m.dest,
            "kid": m.kid,
            "passport_jwt": m.passport_jwt,
            "vvp_identity": m.vvp_identity,
            "identity": m.identity_header(),
        },
        indent=2,
    )


def as_env(m: MintedIdentity) -> str:
    pairs = (
        ("VVP_KIND", m.kind),
        ("VVP_ORIG", m.orig),
        ("VVP_DEST", m.dest),
        ("VVP_KID", m.kid),
        ("VVP_PASSPORT", m.passport_jwt),
        ("VVP_IDENTITY", m.vvp_identity),
        ("SIP_IDENTITY", m.identity_header()),
    )
    return "\n".join(f"{name}={shlex.quote(value)}" for name, value in pairs)


def render(m: MintedIdentity, fmt: str) -> str:
    if fmt == "headers":
        return as_headers(m)
    if fmt == "json":
        return as_json(m)
    if fmt == "env":
        return as_env(m)
    raise ValueError(f"unknown format {fmt!r}; expected one of {', '.join(FORMATS)}")


def csv_row(m: MintedIdentity) -> str:
    fields = (m.orig, m.dest, m.passport_jwt, m.kid, m.vvp_identity, m.kind)
    # sipp splits on ';' with no quoting, so a ';' would shift every later field.
    for name, value in zip(CSV_COLUMNS, fields, strict=True):
        if ";" in value or "\n" in value:
            raise ValueError(f"{name} contains ';' or a newline: {value!r}")
    return ";".join(fields)


def mint_rows(
    kinds: Sequence[str],
    count: int,
    orig: str,
    dest: str,
    *,
    now: int | None = None,
    key: SigningKey = DEMO_ISSUER,
    sig_form: str = "cesr",
    aid_code: str = "D",
) -> list[MintedIdentity]:
    """`count` identities, cycling through `kinds` in order."""
    if count < 1:
        raise ValueError("count must be at least 1")
    if not kinds:
        raise ValueError("at least one kind is required")
    return [
        mint(
            kinds[i % len(kinds)],
            orig,
            dest,
            now=now,
            key=key,
            sig_form=sig_form,
            aid_code=aid_code,
        )
        for i in range(count)
    ]


def write_csv(out: TextIO, rows: Iterable[MintedIdentity]) -> int:
    """Write a sipp injection file (SEQUENTIAL, fields [field0]..[field5]); return rows."""
    lines = ["SEQUENTIAL", *(csv_row(m) for m in rows)]
    out.write("\n".join(lines) + "\n")
    return len(lines) - 1
