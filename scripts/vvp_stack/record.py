"""Record what a real VVP verifier answers, for the simulator's fidelity tests.

Mints identities on the real issuer, builds the request the edge's helper sends
(``POST /verify``, VVP-Identity header, passport + SIP context body), and writes one JSON
file per case into ``tests/fixtures/real_verifier/``: the request, the HTTP status, the
answer's headers and its body (JSON when it is JSON, text otherwise). Standard library only;
reads the ``VVP_INTEROP_*`` variables that ``scripts/vvp-stack start`` writes.

    set -a; . var/vvp-stack/stack.env; set +a
    .venv/bin/python scripts/vvp_stack/record.py [OUTDIR]
"""

from __future__ import annotations

import base64
import datetime as dt
import http.client
import json
import os
import sys
import time
import uuid
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

DEST_TN = "+441923311006"


def _env(name: str) -> str:
    value = os.environ.get(name)
    if not value:
        sys.exit(f"record.py: {name} is not set (source the stack's stack.env)")
    return value


def _b64d(part: str) -> bytes:
    return base64.urlsafe_b64decode(part + "=" * (-len(part) % 4))


def _b64e(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def _post(url: str, path: str, body: dict[str, Any], headers: dict[str, str]) -> dict[str, Any]:
    parts = urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname or "127.0.0.1", parts.port or 80, timeout=60)
    try:
        conn.request(
            "POST",
            path,
            body=json.dumps(body).encode(),
            headers={"Content-Type": "application/json", **headers},
        )
        answer = conn.getresponse()
        raw = answer.read()
        content_type = answer.getheader("content-type", "")
        parsed: Any
        if content_type.startswith("application/json"):
            parsed = json.loads(raw)
        else:
            parsed = raw.decode("utf-8", "replace")
        return {
            "status": answer.status,
            "content_type": content_type,
            "headers": {k.lower(): v for k, v in answer.getheaders()},
            "body": parsed,
        }
    finally:
        conn.close()


def connection_after(url: str, request: dict[str, Any]) -> str:
    """What becomes of a keep-alive connection after this request: a second request on it."""
    parts = urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname or "127.0.0.1", parts.port or 80, timeout=30)
    try:
        conn.request(
            "POST",
            "/verify",
            body=json.dumps(request["body"]).encode(),
            headers={"Content-Type": "application/json", **request["headers"]},
        )
        conn.getresponse().read()
        try:
            conn.request("GET", "/healthz")
            answer = conn.getresponse()
            answer.read()
        except (ConnectionError, http.client.HTTPException) as exc:
            return f"closed by the server: the next request on it failed ({type(exc).__name__})"
        return f"kept open: the next request on it got HTTP {answer.status}"
    finally:
        conn.close()


def mint(issuer: str, key: str, orig: str, dest: str) -> dict[str, Any]:
    answer = _post(
        issuer,
        "/vvp/create-for-tn",
        {"orig_tn": orig, "dest_tn": [dest]},
        {"X-API-Key": key},
    )
    if answer["status"] != 200:
        raise SystemExit(f"minting failed: {answer}")
    body: dict[str, Any] = answer["body"]
    return body


def verify_request(
    vvp_identity: str, passport: str, from_tn: str, to_tn: str, *, sip: bool = True
) -> dict[str, Any]:
    now = dt.datetime.now(dt.UTC).isoformat()
    context: dict[str, Any] = {"call_id": f"{uuid.uuid4()}@interop", "received_at": now}
    if sip:
        context["sip"] = {
            "from_uri": f"sip:{from_tn}@carrier.example",
            "to_uri": f"sip:{to_tn}@carrier.example",
            "invite_time": now,
            "cseq": 1,
        }
    return {
        "headers": {"VVP-Identity": vvp_identity},
        "body": {"passport_jwt": passport, "context": context},
    }


def call(verifier: str, request: dict[str, Any]) -> dict[str, Any]:
    return _post(verifier, "/verify", request["body"], request["headers"])


def write(
    outdir: Path,
    case: str,
    what: str,
    request: dict[str, Any],
    answer: dict[str, Any],
    keep_alive: str | None = None,
) -> None:
    record: dict[str, Any] = {
        "case": case,
        "what": what,
        "recorded_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "request": request,
        "http_status": answer["status"],
        "content_type": answer["content_type"],
        "headers": answer["headers"],
        "body": answer["body"],
    }
    if keep_alive is not None:
        record["connection_after"] = keep_alive
    (outdir / f"{case}.json").write_text(json.dumps(record, indent=2, sort_keys=False) + "\n")
    body = answer["body"]
    summary = body.get("overall_status") if isinstance(body, dict) else repr(body)[:60]
    print(f"{case:28} HTTP {answer['status']} {summary}")


def _reheader(passport: str, change: dict[str, Any], drop: tuple[str, ...] = ()) -> str:
    header, payload, signature = passport.split(".")
    fields = json.loads(_b64d(header))
    fields.update(change)
    for key in drop:
        fields.pop(key, None)
    return ".".join((_b64e(json.dumps(fields, separators=(",", ":")).encode()), payload, signature))


def _repayload(passport: str, drop: tuple[str, ...]) -> str:
    header, payload, signature = passport.split(".")
    fields = json.loads(_b64d(payload))
    for key in drop:
        fields.pop(key, None)
    return ".".join((header, _b64e(json.dumps(fields, separators=(",", ":")).encode()), signature))


def jws_signature(passport: str) -> str:
    """The same Ed25519 signature, re-encoded from the issuer's 88-character form to JWS (86).

    The VVP issuer writes the code ``0B`` followed by the plain base64url of the 64
    signature bytes (the verifier's ``decode_pss_signature`` reads it that way), so the
    standard JWS form is those 86 characters alone: the very bytes the issuer signed,
    nothing is re-signed.
    """
    header, payload, signature = passport.split(".")
    if len(signature) != 88 or not signature.startswith("0B"):
        raise SystemExit(f"unexpected signature form {signature[:4]}... ({len(signature)})")
    if len(_b64d(signature[2:])) != 64:
        raise SystemExit("the signature after its code is not 64 bytes of base64url")
    return ".".join((header, payload, signature[2:]))


def _signed_dest(minted: dict[str, Any]) -> str:
    dest: str = json.loads(_b64d(minted["passport_jwt"].split(".")[1]))["dest"]["tn"][0]
    return dest


def main() -> None:
    outdir = Path(sys.argv[1] if len(sys.argv) > 1 else "tests/fixtures/real_verifier")
    outdir.mkdir(parents=True, exist_ok=True)
    verifier = _env("VVP_INTEROP_VERIFIER_URL")
    stale_verifier = _env("VVP_INTEROP_STALE_VERIFIER_URL")
    recheck = float(_env("VVP_INTEROP_STALE_RECHECK_S"))
    issuer = _env("VVP_INTEROP_ISSUER_URL")
    key = _env("VVP_INTEROP_ISSUER_KEY")
    orig = _env("VVP_INTEROP_ORIG_TN")

    # Identical (orig, dest) within one second mint an identical PASSporT: vary dest.
    dests = iter(f"+4419233110{n:02d}" for n in range(10, 100))

    def fresh() -> tuple[dict[str, Any], dict[str, Any]]:
        minted = mint(issuer, key, orig, next(dests))
        request = verify_request(
            minted["vvp_identity_header"], minted["passport_jwt"], orig, _signed_dest(minted)
        )
        return minted, request

    def record(case: str, what: str, request: dict[str, Any]) -> None:
        write(outdir, case, what, request, call(verifier, request))

    _, req = fresh()
    record("valid_first", "a freshly minted identity, first call (dossier not cached)", req)
    minted, req = fresh()
    record("valid", "a freshly minted identity, dossier already verified once", req)
    identity, passport = minted["vvp_identity_header"], minted["passport_jwt"]
    dest = _signed_dest(minted)

    req = verify_request(identity, jws_signature(passport), orig, dest)
    record(
        "valid_jws_signature",
        "the same PASSporT, its signature re-encoded as plain base64url (86 chars)",
        req,
    )

    header, payload, signature = passport.split(".")
    flipped = signature[:40] + ("A" if signature[40] != "A" else "B") + signature[41:]
    req = verify_request(identity, f"{header}.{payload}.{flipped}", orig, dest)
    record("tampered_signature", "one signature character changed", req)

    req = verify_request(identity, passport, "+441923311002", dest)
    record("wrong_from", "From is not the signed orig number", req)

    crashes = {
        "parse_typ_not_jwt": _reheader(passport, {"typ": "foo"}),
        "parse_header_no_kid": _reheader(passport, {}, drop=("kid",)),
        "parse_payload_no_evd": _repayload(passport, drop=("evd",)),
    }
    for case, bad in crashes.items():
        req = verify_request(identity, bad, orig, dest)
        answer = call(verifier, req)
        after = connection_after(verifier, req)
        write(outdir, case, "PASSporT its parser refuses, with a SIP context", req, answer, after)
    req = verify_request(identity, crashes["parse_typ_not_jwt"], orig, dest, sip=False)
    record("parse_typ_not_jwt_no_sip", "the same PASSporT, no SIP context", req)

    warning_key = os.environ.get("VVP_INTEROP_WARNING_ISSUER_KEY")
    warning_orig = os.environ.get("VVP_INTEROP_WARNING_ORIG_TN")
    if warning_key and warning_orig:
        minted = mint(issuer, warning_key, warning_orig, DEST_TN)
        req = verify_request(
            minted["vvp_identity_header"], minted["passport_jwt"], warning_orig, DEST_TN
        )
        record("warning_vetter_scope", "vetter certified for +33 only, caller +1", req)

    # The stale verifier re-checks revocation every `recheck` seconds: verify once (fills its
    # cache and its revocation timestamp), then again once that interval has passed, until
    # the answer is the stale one (the background re-check may just have refreshed it).
    _, req = fresh()
    call(stale_verifier, req)
    deadline = time.monotonic() + 60
    while True:
        time.sleep(recheck + 0.5)
        _, req = fresh()
        answer = call(stale_verifier, req)
        if answer["body"].get("overall_status") == "INDETERMINATE" or time.monotonic() > deadline:
            break
    what = f"cached dossier, revocation data older than the re-check interval ({recheck:g} s)"
    write(outdir, "stale_revocation", what, req, answer)


if __name__ == "__main__":
    main()
