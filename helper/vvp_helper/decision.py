"""One call's decision: SIP fields -> outcome -> the policy's instruction.

    CallRequest (from Kamailio)
      -> identity.extract        missing / undecodable / found
      -> identity.precheck       invalid without asking anyone, when certain
      -> VerifierClient.verify   VALID / WARNING / INVALID / INDETERMINATE, or error
      -> Policy.action_for(outcome).render(context)
      -> Instruction (code, reason, Contact, headers)

Stateless: nothing survives the call but the log line, so any number of helpers can serve
any number of Kamailio nodes.
"""

from __future__ import annotations

import asyncio
import functools
import ipaddress
import math
import re
import time
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any, Literal, get_args

from .errors import VerifierError, VerifierHTTPError
from .metrics import Metrics
from .policy.model import VERSTAT, CallFacts, Instruction, IPAddress, Policy, digits
from .sip import fields as sipfields
from .sip import identity
from .sip.identity import PrecheckSettings
from .sip.replay import ReplayGuard
from .verifier.client import Verdict, VerifierClient, VerifyRequest
from .verifier.facts import failed_claims, verified_number, why_not_valid
from .verifier.guard import GuardedVerifier, failure_cause

#: Longest value accepted for any single SIP field in a decision request (bytes of text).
MAX_FIELD_LEN = 8192
#: Most Identity/P-VVP-* header fields accepted per INVITE.
MAX_HEADER_FIELDS = 16
#: Latest ``received_at`` taken (Unix seconds, year 9999): beyond it no datetime exists.
MAX_RECEIVED_AT = 253_402_300_799.0
#: SIP fields a caller writes (the INVITE's own text). Too long is the caller's doing and
#: is answered ``invalid`` (EXT_SIP_FIELD_TOO_LONG); every other field of a decision
#: request is Kamailio's own (its clock, the socket, the transport).
CALLER_FIELDS = ("call_id", "from_uri", "to_uri", "request_uri", "from_name")

# Characters a URI user part may keep when it is not a telephone number: RFC 3261
# "unreserved" plus "%" escapes. Anything else could break out of the Contact URI.
_USER_SAFE = re.compile(r"[^A-Za-z0-9\-_.!~*'()%+]")


#: Causes counted in vvp_helper_caller_refusals_total: what a caller sent that was
#: answered without (or before) a verifier verdict. A fixed set, so the label is bounded.
RefusalCause = Literal[
    "nul_byte",
    "sip_field_too_long",
    "identity_too_long",
    "identity_undecodable",
    "identity_precheck",
    "replay",
]
REFUSAL_CAUSES: tuple[RefusalCause, ...] = get_args(RefusalCause)


class BadCallRequest(ValueError):
    """Kamailio sent something that is not a decision request (a bug or a wrong peer).

    The helper answers it with HTTP 400, and Kamailio then takes its fail-open fallback,
    so nothing a *caller* sends may raise it. Why each check below cannot be a caller's
    doing (audit of every 400 the helper gives Kamailio):

    - body not JSON, not an object, a field of the wrong JSON type, a required field
      absent: Kamailio builds the body with jansson from pseudo-variables that always
      exist for an INVITE that passed sanity (text the caller sent that jansson cannot
      encode, or that holds a NUL byte, is answered 400 by Kamailio itself before asking);
    - a caller field (CALLER_FIELDS) over MAX_FIELD_LEN: NOT a 400, it is answered
      ``invalid`` (the SIP message may be 16 KiB, any one field of it more than 8 KiB);
    - too many or too long Identity / P-VVP-* values: NOT a 400 either (``invalid``);
    - ``cseq``, ``source_port`` not integers: Kamailio sends $(cs{s.int}) and $sp;
    - ``received_at`` not a finite Unix time: Kamailio sends its own clock, $TV(Sn);
    - a body over the helper's size limit (HTTP 413, app settings): Kamailio cannot
      build one, its pv_buffer_size (64 KiB) is the helper's default limit.
    """


@dataclass(frozen=True, slots=True)
class CallRequest:
    """The INVITE as Kamailio describes it (see kamailio.cfg route[ASK_HELPER])."""

    call_id: str
    from_uri: str
    to_uri: str
    received_at: float
    method: str = "INVITE"
    request_uri: str = ""
    cseq: int | None = None
    source_ip: str = ""
    source_port: int = 0
    transport: str = ""
    from_name: str = ""
    identity: tuple[str, ...] = ()
    p_vvp_identity: tuple[str, ...] = ()
    p_vvp_passport: tuple[str, ...] = ()
    #: Identity header fields that were too many or too long to decode (their names).
    oversized_identity: tuple[str, ...] = ()
    #: Caller fields (CALLER_FIELDS) longer than MAX_FIELD_LEN, kept cut to that length.
    oversized_fields: tuple[str, ...] = ()

    @property
    def has_nul(self) -> bool:
        """A NUL byte in a field SIP does not allow one in (Kamailio passes it on)."""
        return any(
            "\x00" in value for value in (self.call_id, self.from_uri, self.to_uri, self.from_name)
        )

    @classmethod
    def from_json(cls, data: object) -> CallRequest:
        if not isinstance(data, dict):
            raise BadCallRequest("decision request must be a JSON object")

        too_long: list[str] = []

        def text(key: str, *, required: bool = False) -> str:
            value = data.get(key)
            if value is None:
                if required:
                    raise BadCallRequest(f"{key} is required")
                return ""
            if not isinstance(value, str):
                raise BadCallRequest(f"{key} must be a string")
            if len(value) > MAX_FIELD_LEN:
                if key not in CALLER_FIELDS:
                    raise BadCallRequest(f"{key} must be at most {MAX_FIELD_LEN} characters")
                # Legal SIP, the caller's choice: answered "invalid" by the decision.
                too_long.append(key)
                return value[:MAX_FIELD_LEN]
            return value

        oversized: list[str] = []

        def texts(key: str) -> tuple[str, ...]:
            value = data.get(key) or []
            if isinstance(value, str):  # Kamailio sends a lone header as a string
                value = [value]
            if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
                raise BadCallRequest(f"{key} must be a string or a list of strings")
            if len(value) > MAX_HEADER_FIELDS or any(len(v) > MAX_FIELD_LEN for v in value):
                # The caller's doing, not Kamailio's: answered as an invalid identity by
                # the decision (a 400 here would hand the call to the fail-open fallback).
                oversized.append(key)
                return ()
            return tuple(value)

        def integer(key: str) -> int | None:
            value = data.get(key)
            if value is None:
                return None
            if isinstance(value, bool) or not isinstance(value, int):
                raise BadCallRequest(f"{key} must be an integer")
            return value

        received = data.get("received_at")
        if isinstance(received, str):  # Kamailio's $TV(Sn): "1795526493.341266"
            try:
                received = float(received)
            except ValueError:
                raise BadCallRequest("received_at must be a Unix time in seconds") from None
        if isinstance(received, bool) or not isinstance(received, int | float):
            raise BadCallRequest("received_at must be a Unix time in seconds")
        # nan, inf and 1e20 are numbers too, but no time a datetime can hold.
        if not (math.isfinite(received) and 0 <= received <= MAX_RECEIVED_AT):
            raise BadCallRequest("received_at must be a Unix time in seconds")
        return cls(
            call_id=text("call_id", required=True),
            from_uri=text("from_uri", required=True),
            to_uri=text("to_uri", required=True),
            received_at=float(received),
            method=text("method") or "INVITE",
            request_uri=text("request_uri"),
            cseq=integer("cseq"),
            source_ip=text("source_ip"),
            source_port=integer("source_port") or 0,
            transport=text("transport"),
            from_name=display_name(text("from_name")),
            identity=texts("identity"),
            p_vvp_identity=texts("p_vvp_identity"),
            p_vvp_passport=texts("p_vvp_passport"),
            oversized_identity=tuple(oversized),
            oversized_fields=tuple(too_long),
        )


@dataclass(frozen=True, slots=True)
class Decision:
    """The instruction plus what the log line and metrics need to know about it."""

    outcome: str
    status: str
    instruction: Instruction
    errors: tuple[Mapping[str, str], ...]
    request_id: str | None = None
    verifier_ms: float | None = None
    #: Why the verifier was not asked or gave no verdict (bounded label), if so.
    error_kind: str | None = None
    shaken: bool = False
    context: Mapping[str, Any] = field(default_factory=dict, repr=False)


#: How far Kamailio's clock (``received_at``) may be behind this host's and still be
#: trusted as the start of the call's time budget. A longer apparent wait means the two
#: clocks differ (helper on another host without NTP): the budget then starts on arrival.
MAX_TRUSTED_WAIT = 30.0


def waited_before_decision(call: CallRequest) -> float:
    """Seconds between Kamailio receiving the INVITE and the decision starting."""
    waited = time.time() - call.received_at
    return waited if 0.0 < waited < MAX_TRUSTED_WAIT else 0.0


@dataclass(slots=True)
class Decider:
    """Everything a decision needs; built once per process, shared by all calls."""

    verifier: VerifierClient | GuardedVerifier | None
    precheck: PrecheckSettings
    deadline: float
    metrics: Metrics | None = None
    replay: ReplayGuard | None = None
    #: Seconds a call may have queued before its decision starts; 0 = only the deadline.
    max_queue_wait: float = 0.0

    async def decide(self, call: CallRequest, policy: Policy) -> Decision:
        """Never raises for anything a caller or the verifier does."""
        waited = waited_before_decision(call)
        if waited >= self.deadline or (self.max_queue_wait and waited > self.max_queue_wait):
            # Overload: the call queued (Kamailio, the network, this process's backlog)
            # for longer than a decision should take before its decision even started.
            # The verifier's latency does not count here (it is spent after this point),
            # so this only fires when the helper itself is the bottleneck: answering at
            # once through the policy's error action, instead of verifying, gives the
            # caller a fast answer and the calls behind this one their time back.
            if self.metrics is not None:
                self.metrics.overloaded.inc()
            message = f"call queued {waited * 1000:.0f} ms before its decision"
            errors = ({"code": "EXT_HELPER_OVERLOADED", "message": message},)
            return conclude(call, policy, "error", errors, error_kind="overload")
        try:
            async with asyncio.timeout(self.deadline - waited):
                return await self._decide(call, policy)
        except TimeoutError:
            # The verifier's own timeout is shorter, so this is the helper itself running
            # late (overload): still answer, through the policy, before Kamailio gives up.
            errors = ({"code": "EXT_HELPER_DEADLINE", "message": "decision took too long"},)
            return conclude(call, policy, "error", errors, error_kind="deadline")

    def _count_refusal(self, cause: RefusalCause) -> None:
        if self.metrics is not None:
            self.metrics.caller_refusals.labels(cause).inc()

    async def _decide(self, call: CallRequest, policy: Policy) -> Decision:
        errors: tuple[dict[str, str], ...]
        if call.has_nul:
            # Not a verification outcome: the request itself is broken, as SIP sees it.
            self._count_refusal("nul_byte")
            return Decision(
                outcome="malformed",
                status="MALFORMED",
                instruction=Instruction(
                    400,
                    "Bad Request - Undecodable Header",
                    None,
                    (),
                    "edge: NUL byte in a SIP field",
                ),
                errors=({"code": "EXT_SIP_MALFORMED", "message": "NUL byte"},),
                error_kind="malformed",
            )
        if call.oversized_fields:
            # Legal SIP, but no honest INVITE has a field this long; the caller's doing,
            # so "invalid" (never "error": that would be the fail-open route).
            message = f"{', '.join(call.oversized_fields)} longer than {MAX_FIELD_LEN}"
            errors = ({"code": "EXT_SIP_FIELD_TOO_LONG", "message": message},)
            self._count_refusal("sip_field_too_long")
            return conclude(call, policy, "invalid", errors, error_kind="precheck")
        if call.oversized_identity:
            message = f"too many or too long {', '.join(call.oversized_identity)} values"
            errors = ({"code": "PASSPORT_PARSE_FAILED", "message": message},)
            self._count_refusal("identity_too_long")
            return conclude(call, policy, "invalid", errors, error_kind="precheck")
        found = identity.extract(call.identity, call.p_vvp_identity, call.p_vvp_passport)
        if isinstance(found, identity.Missing):
            return conclude(call, policy, "missing", (), shaken=found.shaken)
        if isinstance(found, identity.Undecodable):
            errors = ({"code": found.code, "message": found.message},)
            self._count_refusal("identity_undecodable")
            return conclude(call, policy, "invalid", errors, error_kind="precheck")

        failures = identity.precheck(
            found,
            now=time.time(),
            from_uri=call.from_uri,
            to_uri=call.to_uri,
            settings=self.precheck,
        )
        if failures:
            errors = tuple({"code": f.code, "message": f.message} for f in failures)
            self._count_refusal("identity_precheck")
            return conclude(call, policy, "invalid", errors, error_kind="precheck")

        if self.replay is not None and await self.replay.is_replay(
            found.passport.jwt, call.call_id, _replay_window(found.passport)
        ):
            if self.metrics is not None:
                self.metrics.replays.inc()
            self._count_refusal("replay")
            errors = ({"code": "EXT_PASSPORT_REPLAY", "message": "PASSporT used on another call"},)
            return conclude(call, policy, "invalid", errors, error_kind="replay")

        if self.verifier is None:
            errors = ({"code": "EXT_VERIFIER_NOT_CONFIGURED", "message": "no verifier URL"},)
            return conclude(call, policy, "error", errors, error_kind="not_configured")

        request = _verify_request(call, found)
        started = time.perf_counter()
        try:
            verdict = await self.verifier.verify(request)
        except VerifierError as exc:
            elapsed = (time.perf_counter() - started) * 1000
            self._observe_verifier(elapsed, exc)
            errors = ({"code": exc.code, "message": str(exc)},)
            # ``invalid`` when the guard found the request at fault (a healthy verifier
            # failing on this one request), else ``error``; see verifier.guard.GuardedVerifier.
            # The log's error_kind names the upstream status (http_500, http_503, ...).
            kind = failure_cause(exc)
            return conclude(call, policy, exc.outcome, errors, error_kind=kind, verifier_ms=elapsed)
        elapsed = (time.perf_counter() - started) * 1000
        self._observe_verifier(elapsed, None)
        return conclude(
            call,
            policy,
            verdict.overall_status.lower(),
            tuple({"code": e.code, "message": e.message} for e in verdict.errors),
            verdict=verdict,
            verifier_ms=elapsed,
            signed_orig=found.passport.orig,
        )

    def _observe_verifier(self, elapsed_ms: float, failure: VerifierError | None) -> None:
        if self.metrics is None:
            return
        self.metrics.verifier_seconds.observe(elapsed_ms / 1000)
        if failure is not None:
            self.metrics.verifier_failures.labels(failure.kind).inc()
            # 500 (a request it chokes on) and 503 (overloaded, behind a proxy) are
            # different incidents: the upstream status gets its own label.
            status = getattr(failure, "status", None)
            if status is None and isinstance(failure.__cause__, VerifierHTTPError):
                status = failure.__cause__.status
            if isinstance(status, int):
                label = str(status) if 100 <= status <= 599 else "other"
                self.metrics.verifier_http_errors.labels(label, failure.outcome).inc()


# The status a template sees when the verifier gave none of its own.
_STATUS_OF = {
    "invalid": "INVALID",
    "error": "ERROR",
    "missing": "MISSING",
    "valid": "VALID",
    "warning": "WARNING",
    "indeterminate": "INDETERMINATE",
}


def conclude(
    call: CallRequest,
    policy: Policy,
    outcome: str,
    errors: Sequence[Mapping[str, str]],
    *,
    verdict: Verdict | None = None,
    error_kind: str | None = None,
    verifier_ms: float | None = None,
    shaken: bool = False,
    signed_orig: str | None = None,
) -> Decision:
    """The policy's answer for an outcome, from what is known of the call.

    ``signed_orig``: the PASSporT's orig number, when the identity was decoded.
    Also used without any network by ``vvp-helper explain`` and ``vvp-helper test``.
    """
    status = verdict.overall_status if verdict else _STATUS_OF[outcome]
    facts = call_facts(call, outcome, errors, verdict, policy)
    action = policy.select(facts)
    context = template_context(
        call, outcome, status, errors, verdict, signed_orig=signed_orig, wanted=action.variables
    )
    context["trunk"] = facts.trunk or ""
    context["rule"] = action.section
    instruction = no_empty_user(action.render(context))
    return Decision(
        outcome=outcome,
        status=status,
        instruction=instruction,
        errors=tuple(errors),
        request_id=verdict.request_id if verdict else None,
        verifier_ms=verifier_ms,
        error_kind=error_kind,
        shaken=shaken,
        context=context,
    )


def call_facts(
    call: CallRequest,
    outcome: str,
    errors: Sequence[Mapping[str, str]],
    verdict: Verdict | None,
    policy: Policy,
) -> CallFacts:
    """What the policy's rules match on."""
    source = _source_address(call.source_ip)
    trunk = policy.trunk_of(source)
    calling = digits(sipfields.telephone_number(call.from_uri) or "")
    called = digits(sipfields.telephone_number(call.to_uri) or "")
    error_codes = frozenset(e["code"] for e in errors)
    if verdict is None:
        return CallFacts(outcome, source, trunk, calling, called, error_codes)
    signer = verdict.signer_identity
    # One construction, not a copy with dataclasses.replace(): ~5 us a call.
    return CallFacts(
        outcome,
        source,
        trunk,
        calling,
        called,
        error_codes,
        # Walking the claim tree is the costliest fact, and only claim rules read it.
        claims=claim_statuses(verdict.claims) if policy.matches_claims else {},
        revocation_pending=verdict.revocation_pending,
        brand_logo_hashed=bool(verdict.brand_logo_hash),
        signer_lei=_str_or_none(signer.get("lei")),
        signer_legal_name=_str_or_none(signer.get("legal_name")),
        toip_warnings=frozenset(
            code for w in verdict.toip_warnings if isinstance(code := w.get("code"), str)
        ),
        delegation_depth=verdict.delegation_depth,
    )


@functools.lru_cache(maxsize=4096)
def _source_address(text: str) -> IPAddress | None:
    """The call's source address; cached, as calls come from a few peers (~3 us each)."""
    if not text:
        return None
    try:
        return ipaddress.ip_address(text)
    except ValueError:
        return None


# A redirect target whose user part rendered empty ("sip:@unverified.example"): the
# called party was not a number or a user (To: <sip:127.0.0.1>, <urn:service:sos>).
_EMPTY_USER = re.compile(r"(?i)^<?(sips?|tel):@?(>|;|$|@)")


def no_empty_user(instruction: Instruction) -> Instruction:
    """A redirect to a URI without a user part becomes 484 Address Incomplete.

    Sending ``Contact: <sip:@host>`` (not a valid URI) would leave the next hop to guess.
    484 says what is wrong (RFC 3261 21.4.22: the Request-URI is incomplete); the
    policy's headers are kept, so the verdict is still reported. A reject is left as is.
    """
    contact = instruction.contact
    if not 300 <= instruction.code < 400 or contact is None or not _EMPTY_USER.match(contact):
        return instruction
    return replace(instruction, code=484, reason="Address Incomplete", contact=None)


def claim_statuses(claims: Sequence[Mapping[str, Any]]) -> dict[str, str]:
    """Every claim in the verifier's tree by name -> status (first occurrence wins)."""
    found: dict[str, str] = {}
    stack = list(reversed(claims))
    while stack and len(found) < 256:  # bounded: the answer is someone else's data
        node = stack.pop()
        # dict first: what JSON gives, and far cheaper to check than the Mapping ABC.
        if not isinstance(node, (dict, Mapping)):
            continue
        name, status = node.get("name"), node.get("status")
        if isinstance(name, str) and isinstance(status, str):
            found.setdefault(name, status)
        children = node.get("children")
        if isinstance(children, list):
            stack.extend(
                child.get("node")
                for child in reversed(children)
                if isinstance(child, (dict, Mapping))
            )
    return found


def template_context(
    call: CallRequest,
    outcome: str,
    status: str,
    errors: Sequence[Mapping[str, str]],
    verdict: Verdict | None,
    *,
    signed_orig: str | None = None,
    wanted: Collection[str] | None = None,
) -> dict[str, Any]:
    """The documented template variables (policy.model.TEMPLATE_VARIABLES), as plain data.

    ``wanted``: the variables the action will render, when known; ``failed_claims`` (a
    walk of the whole claim tree) is only built when it is among them.
    """
    claims = list(verdict.claims) if verdict else []
    reason = why_not_valid(
        outcome, claims, errors, verdict.vetter_warning_reason if verdict else None
    )
    signer = verdict.signer_identity if verdict else {}
    return {
        "orig": uri_user(call.from_uri),
        # Only a number the verifier vouched for (VALID, WARNING) is ever asserted.
        "orig_tn": verified_number(signed_orig) if outcome in ("valid", "warning") else "",
        "dest": uri_user(call.to_uri),
        "call_id": call.call_id,
        "request_id": verdict.request_id if verdict else "",
        "status": status,
        "outcome": outcome,
        "verstat": VERSTAT[outcome],
        "errors": [dict(e) for e in errors],
        "claims": claims,
        "failed_claims": failed_claims(claims)
        if wanted is None or "failed_claims" in wanted
        else [],
        "reason": reason.text,
        "reason_claim": reason.claim,
        "brand_name": verdict.brand_name if verdict else None,
        "brand_logo_url": _http_url(verdict.brand_logo_url) if verdict else None,
        "brand_logo_hash": verdict.brand_logo_hash if verdict else None,
        "revocation_pending": verdict.revocation_pending if verdict else None,
        "signer_legal_name": _str_or_none(signer.get("legal_name")),
        "signer_lei": _str_or_none(signer.get("lei")),
        "toip_warnings": list(verdict.toip_warnings) if verdict else [],
        "delegation_depth": verdict.delegation_depth if verdict else None,
        "signer_aid": verdict.signer_aid if verdict else None,
        "certainty": verdict.certainty if verdict else None,
        "vetter_status": verdict.vetter_status if verdict else None,
        "vetter_warning_reason": verdict.vetter_warning_reason if verdict else None,
        "from_uri": call.from_uri,
        "to_uri": call.to_uri,
        "from_name": call.from_name,
        "source_ip": call.source_ip,
        "trunk": "",
        "rule": "",
    }


def display_name(raw: str) -> str:
    """A From display name as a person reads it: quotes removed, quoted-pairs undone.

    Kamailio's $fn is the raw token, quotes and backslash escapes included.
    """
    value = raw.strip()
    if len(value) >= 2 and value[0] == value[-1] == '"':
        return re.sub(r"\\(.)", r"\1", value[1:-1], flags=re.S)
    return value


def uri_user(uri: str) -> str:
    """The telephone number of a From/To URI, or its user part made safe for a URI."""
    number = sipfields.telephone_number(uri)
    if number is not None:
        return number
    value = uri.strip()
    if "<" in value:
        value = value[value.find("<") + 1 :].split(">", 1)[0]
    scheme, _, rest = value.partition(":")
    if not rest or scheme.lower() not in ("sip", "sips", "tel"):
        return ""
    user = rest.split("@", 1)[0] if "@" in rest else ""
    return _USER_SAFE.sub("", user.split(";", 1)[0])


def _str_or_none(value: object) -> str | None:
    return value if isinstance(value, str) and value else None


def _http_url(url: str | None) -> str | None:
    # A logo URL reaches downstream devices; only http(s) is passed on.
    if url and url.lower().startswith(("https://", "http://")):
        return url
    return None


#: How long a PASSporT is remembered, counted from its iat: the verifier accepts a
#: PASSporT only within 30 s of the INVITE (context alignment), so a copy arriving later
#: is refused anyway; 5 s more for clocks. (Remembering until exp would hold ten
#: minutes of calls in memory for nothing.)
REPLAY_WINDOW_S = 35


def _replay_window(passport: identity.Passport) -> float:
    """Seconds from now during which a copy of this PASSporT could still be accepted."""
    return max(1.0, min(passport.iat + REPLAY_WINDOW_S - time.time(), REPLAY_WINDOW_S + 300))


def _rfc3339(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, UTC).isoformat()


def _verify_request(call: CallRequest, found: identity.Found) -> VerifyRequest:
    received = _rfc3339(call.received_at)
    return VerifyRequest(
        vvp_identity=found.vvp_identity,
        passport_jwt=found.passport.jwt,
        call_id=call.call_id,
        received_at=received,
        from_uri=call.from_uri,
        to_uri=call.to_uri,
        invite_time=received,
        cseq=call.cseq,
    )
