"""The edge against a real VVP stack: sipp -> real Kamailio -> helper (policy/default.yaml)
-> the real VVP verifier, with identities minted by the real VVP issuer a moment before
each call.

Runs only when a stack is reachable, configured by the variables ``scripts/vvp-stack start``
writes to its ``stack.env`` (docs/interop.md):

    VVP_INTEROP_VERIFIER_URL, VVP_INTEROP_ISSUER_URL, VVP_INTEROP_ISSUER_KEY (required)
    VVP_INTEROP_ORIG_TN (a number the issuer maps; default +441923311001),
    VVP_INTEROP_BRAND_NAME, VVP_INTEROP_WARNING_ISSUER_KEY + VVP_INTEROP_WARNING_ORIG_TN
    (an organisation whose vetter does not cover that number: the WARNING case),
    VVP_INTEROP_STALE_VERIFIER_URL + VVP_INTEROP_STALE_RECHECK_S (a verifier with a short
    revocation re-check interval: the stale-revocation INDETERMINATE case).

Everything else is skipped with its reason; CI, which cannot reach the VVP repository,
skips the whole module.
"""

from __future__ import annotations

import base64
import itertools
import json
import os
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.support.harness import DEFAULT_POLICY, Helper, Kamailio, SipMessage, run_sipp, running
from tests.support.sipp_scenarios import invite_expecting

REQUIRED = ("VVP_INTEROP_VERIFIER_URL", "VVP_INTEROP_ISSUER_URL", "VVP_INTEROP_ISSUER_KEY")
_MISSING = [name for name in REQUIRED if not os.environ.get(name)]

pytestmark = [
    pytest.mark.interop,
    pytest.mark.skipif(
        bool(_MISSING),
        reason=f"no real VVP stack configured ({', '.join(_MISSING)} unset; "
        "see docs/interop.md: scripts/vvp-stack start, then source its stack.env)",
    ),
]

ORIG = os.environ.get("VVP_INTEROP_ORIG_TN", "+441923311001")
BRAND = os.environ.get("VVP_INTEROP_BRAND_NAME", "ACME Inc")
STALE_REASON = "Revocation data stale — background re-check pending"

# Identical (orig, dest) within one second mint an identical PASSporT: every call gets
# its own destination number.
_DESTS = (f"+4420790{n:05d}" for n in itertools.count(int(time.time()) % 50000))


@dataclass(frozen=True)
class Minted:
    identity_header: str  # the full Identity value: <jwt>;info=<kid>;alg=EdDSA;ppt=vvp
    vvp_identity: str
    passport_jwt: str
    dest: str

    def headers(self, form: str = "identity", *, passport: str | None = None) -> list[str]:
        jwt = passport or self.passport_jwt
        identity = jwt + self.identity_header[len(self.passport_jwt) :]
        if form == "identity":
            return [f"Identity: {identity}"]
        if form == "identity+p-vvp-identity":
            return [f"Identity: {identity}", f"P-VVP-Identity: {self.vvp_identity}"]
        assert form == "p-vvp", form
        return [f"P-VVP-Identity: {self.vvp_identity}", f"P-VVP-Passport: {jwt}"]


def mint(key: str | None = None, orig: str = ORIG) -> Minted:
    """A fresh identity from the real issuer (the verifier wants iat within 30 s)."""
    dest = next(_DESTS)
    request = urllib.request.Request(
        os.environ["VVP_INTEROP_ISSUER_URL"].rstrip("/") + "/vvp/create-for-tn",
        data=json.dumps({"orig_tn": orig, "dest_tn": [dest]}).encode(),
        headers={
            "Content-Type": "application/json",
            "X-API-Key": key or os.environ["VVP_INTEROP_ISSUER_KEY"],
        },
        method="POST",
    )
    try:
        with urllib.request.urlopen(request, timeout=30) as answer:
            body: dict[str, Any] = json.loads(answer.read())
    except urllib.error.HTTPError as exc:
        raise AssertionError(f"issuer refused to mint: {exc.code} {exc.read()[:300]!r}") from None
    assert body["identity_header"].startswith(body["passport_jwt"] + ";")
    return Minted(body["identity_header"], body["vvp_identity_header"], body["passport_jwt"], dest)


def _b64(data: dict[str, Any]) -> str:
    raw = json.dumps(data, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def _json(part: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(base64.urlsafe_b64decode(part + "=" * (-len(part) % 4)))
    return data


def tampered(jwt: str) -> str:
    header, payload, signature = jwt.split(".")
    flipped = signature[:40] + ("A" if signature[40] != "A" else "B") + signature[41:]
    return f"{header}.{payload}.{flipped}"


def unparseable(jwt: str, how: str) -> str:
    """A PASSporT the real verifier's parser crashes on when a SIP context is present."""
    header, payload, signature = jwt.split(".")
    head, body = _json(header), _json(payload)
    if how == "typ":
        head["typ"] = "foo"
    elif how == "no-kid":
        del head["kid"]
    else:
        del body["evd"]
    return f"{_b64(head)}.{_b64(body)}.{signature}"


@dataclass
class Edge:
    kamailio: Kamailio
    workdir: Path

    def call(self, code: int, minted: Minted, headers: list[str], from_user: str) -> SipMessage:
        scenario = invite_expecting(
            self.workdir / f"invite-{code}.xml",
            code,
            from_user=from_user,
            to_user=minted.dest,
            headers=headers,
        )
        run = run_sipp(scenario, self.kamailio.port, self.workdir, timeout=30)
        finals = run.finals()
        assert len(finals) == 1, f"expected exactly one final answer:\n{run.stdout}"
        assert run.returncode == 0, f"expected {code}, got {finals[0].first_line}:\n{run.stdout}"
        return finals[0]


def _edge(workdir: Path, verifier_url: str) -> Iterator[Edge]:
    # The real verifier takes about 300 ms for a dossier it has not seen, and the stack
    # shares two cores: generous timeouts, in the design's order (verifier < helper
    # deadline < Kamailio's wait < tm's timer).
    helper = Helper.create(
        workdir,
        verifier_url,
        policy=DEFAULT_POLICY,
        VVP_VERIFIER_TIMEOUT="8.0",
        VVP_HELPER_DEADLINE="9.0",
    )
    kamailio = Kamailio.create(
        workdir, helper.decide_url, VVP_HELPER_TIMEOUT_MS="10000", VVP_FR_TIMEOUT_MS="12000"
    )
    with running(helper, kamailio):
        yield Edge(kamailio, workdir)


@pytest.fixture(scope="module")
def edge(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Edge]:
    yield from _edge(tmp_path_factory.mktemp("interop"), os.environ["VVP_INTEROP_VERIFIER_URL"])


def test_a_real_minted_identity_is_valid_with_its_brand(edge: Edge) -> None:
    minted = mint()
    final = edge.call(302, minted, minted.headers(), ORIG)
    assert final.header("Contact") == f"<sip:{minted.dest}@verified.carrier.example>"
    assert final.header("X-VVP-Status") == "VALID"
    assert final.header("X-VVP-Brand-Name") == BRAND
    assert final.header("P-Asserted-Identity") == f"<sip:{ORIG}@verified.carrier.example>"
    assert final.header("X-VVP-Request-Id")
    # The issuer's card carries the brand logo URL: RFC 9796 Call-Info for the callee.
    logo = final.header("Call-Info") or ""
    assert logo.startswith(("<http://", "<https://")) and logo.endswith(">;purpose=icon"), logo


def test_pai_asserts_the_signed_number_when_from_has_no_plus(edge: Edge) -> None:
    minted = mint()
    final = edge.call(302, minted, minted.headers(), ORIG.removeprefix("+"))
    assert final.header("X-VVP-Status") == "VALID"
    assert final.header("P-Asserted-Identity") == f"<sip:{ORIG}@verified.carrier.example>"


@pytest.mark.parametrize("form", ["identity", "identity+p-vvp-identity", "p-vvp"])
def test_every_header_form_verifies(edge: Edge, form: str) -> None:
    minted = mint()
    final = edge.call(302, minted, minted.headers(form), ORIG)
    assert final.header("X-VVP-Status") == "VALID"
    assert final.header("X-VVP-Brand-Name") == BRAND


@pytest.mark.parametrize("form", ["identity", "p-vvp"])
def test_a_tampered_identity_is_refused(edge: Edge, form: str) -> None:
    minted = mint()
    headers = minted.headers(form, passport=tampered(minted.passport_jwt))
    final = edge.call(403, minted, headers, ORIG)
    assert final.header("X-VVP-Status") == "INVALID"
    assert final.header("X-VVP-Error") == "PASSPORT_SIG_INVALID"
    assert final.header("X-VVP-Reason")
    assert final.header("P-Asserted-Identity") is None


def test_a_wrong_from_is_refused(edge: Edge) -> None:
    minted = mint()
    wrong = ORIG[:-1] + ("2" if ORIG[-1] != "2" else "3")
    final = edge.call(403, minted, minted.headers(), wrong)
    assert final.header("X-VVP-Error") == "CONTEXT_MISMATCH"
    assert final.header("P-Asserted-Identity") is None


@pytest.mark.parametrize(
    "how",
    # The real verifier answers each of these with HTTP 500 when a SIP context is
    # present; the helper's pre-check must refuse them first.
    ["typ", "no-kid", "no-evd"],
)
def test_a_passport_the_verifier_cannot_parse_is_refused_never_an_error(
    edge: Edge, how: str
) -> None:
    minted = mint()
    headers = minted.headers(passport=unparseable(minted.passport_jwt, how))
    final = edge.call(403, minted, headers, ORIG)
    assert final.header("X-VVP-Status") == "INVALID"


def test_a_warning_identity_keeps_its_identity_and_brand(edge: Edge) -> None:
    key = os.environ.get("VVP_INTEROP_WARNING_ISSUER_KEY")
    orig = os.environ.get("VVP_INTEROP_WARNING_ORIG_TN")
    if not key or not orig:
        pytest.skip("VVP_INTEROP_WARNING_ISSUER_KEY / _ORIG_TN unset: no out-of-scope vetter")
    minted = mint(key, orig)
    final = edge.call(302, minted, minted.headers(), orig)
    assert final.header("X-VVP-Status") == "WARNING"
    assert final.header("X-VVP-Warning-Reason") == "vetter_not_authorised_for_jurisdiction"
    assert final.header("P-Asserted-Identity") == f"<sip:{orig}@verified.carrier.example>"
    assert final.header("X-VVP-Brand-Name")
    assert final.header("Contact") == f"<sip:{minted.dest}@verified.carrier.example>"


@pytest.fixture(scope="module")
def stale_edge(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Edge]:
    url = os.environ.get("VVP_INTEROP_STALE_VERIFIER_URL")
    if not url:
        pytest.skip("VVP_INTEROP_STALE_VERIFIER_URL unset: no verifier with a short re-check")
    yield from _edge(tmp_path_factory.mktemp("interop-stale"), url)


def test_a_stale_revocation_indeterminate_says_why_downstream(stale_edge: Edge) -> None:
    # That verifier re-checks revocation every few seconds and answers INDETERMINATE,
    # errors null, on a cached dossier whose last check is older: call until the data
    # has aged past the interval (the first call caches the dossier).
    recheck = float(os.environ.get("VVP_INTEROP_STALE_RECHECK_S", "2"))
    deadline = time.monotonic() + 60
    while True:
        minted = mint()
        final = stale_edge.call(302, minted, minted.headers(), ORIG)
        if final.header("X-VVP-Status") == "INDETERMINATE" or time.monotonic() > deadline:
            break
        time.sleep(recheck + 0.5)  # let the revocation data age past the interval
    assert final.header("X-VVP-Status") == "INDETERMINATE"
    assert final.header("X-VVP-Reason") == STALE_REASON
    assert final.header("X-VVP-Error") is None
    assert final.header("Contact") == f"<sip:{minted.dest}@unverified.carrier.example>"
    assert final.header("P-Asserted-Identity") is None
