"""HTTP client of the VVP Verifier (``POST /verify``), per shared/docs/verifier-api.md.

One pool of keep-alive connections per process (``httpclient``: the verifier's cached
answers take 2-5 ms, a new TCP+TLS handshake would cost more than the answer).
Whatever goes wrong - refused, reset, slow, HTTP 5xx from a proxy, a body that is not the
documented JSON - becomes a ``VerifierError`` subclass, which the decision maps to the
``error`` outcome. Nothing here raises anything else.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from . import jsonfast
from .errors import (
    VerifierBadAnswer,
    VerifierError,
    VerifierHTTPError,
    VerifierTimeout,
    VerifierUnreachable,
)
from .httpclient import AnswerTooLarge, ClientError, HttpClient

STATUSES = frozenset({"VALID", "INVALID", "INDETERMINATE", "WARNING"})

#: A verifier answer is a few KiB; a proxy error page or a runaway body is cut here.
MAX_ANSWER_BYTES = 1024 * 1024


@dataclass(frozen=True, slots=True)
class VerifyRequest:
    """What the edge knows about one call, in the verifier's terms."""

    vvp_identity: str
    passport_jwt: str
    call_id: str
    received_at: str  # RFC 3339
    from_uri: str
    to_uri: str
    invite_time: str  # RFC 3339
    cseq: int | None = None

    def body(self) -> dict[str, Any]:
        sip: dict[str, Any] = {
            "from_uri": self.from_uri,
            "to_uri": self.to_uri,
            "invite_time": self.invite_time,
        }
        if self.cseq is not None:
            sip["cseq"] = self.cseq
        return {
            "passport_jwt": self.passport_jwt,
            "context": {
                "call_id": self.call_id,
                "received_at": self.received_at,
                "sip": sip,
            },
        }


@dataclass(frozen=True, slots=True)
class ErrorItem:
    """One item of the verifier's ``errors`` list."""

    code: str
    message: str
    recoverable: bool


@dataclass(frozen=True, slots=True)
class Verdict:
    """The fields of the verifier's answer that the edge uses."""

    overall_status: str
    request_id: str | None
    errors: tuple[ErrorItem, ...]
    claims: tuple[Mapping[str, Any], ...]
    brand_name: str | None
    brand_logo_url: str | None
    certainty: str | None
    signer_aid: str | None
    vetter_warning_reason: str | None
    cache_hit: bool
    #: Per-credential vetter checks, keyed by credential SAID (``constraint_type``,
    #: ``is_authorized``, ``vetter_certification_said``).
    vetter_constraints: Mapping[str, Any] | None = None
    #: The ``HASH`` parameter of the card's ``LOGO`` line (a Blake3 SAID, ``E...``).
    brand_logo_hash: str | None = None
    #: Revocation not yet confirmed for one or more credentials.
    revocation_pending: bool = False
    #: ToIP dossier warnings (``code``, ``message``, ``said``, ``field_path``):
    #: informational, they never change the verdict.
    toip_warnings: tuple[Mapping[str, Any], ...] = ()
    #: AID -> ``{aid, legal_name, lei, ...}`` for the AIDs of the dossier (informational).
    issuer_identities: Mapping[str, Mapping[str, Any]] | None = None
    #: ``{chain, depth, root_aid, is_valid, errors}`` for a delegated signer, else None.
    delegation_chain: Mapping[str, Any] | None = None

    @classmethod
    def from_json(cls, data: object) -> Verdict:
        """Validate the documented shape; anything else is ``VerifierBadAnswer``."""
        if not isinstance(data, dict):
            raise VerifierBadAnswer("answer is not a JSON object")
        status = data.get("overall_status")
        if status not in STATUSES:
            raise VerifierBadAnswer(f"overall_status {str(status)[:40]!r} is not a verdict")
        raw_errors = data.get("errors") or []
        if not isinstance(raw_errors, list):
            raise VerifierBadAnswer("errors is not a list")
        errors = []
        for item in raw_errors:
            if not isinstance(item, dict) or not isinstance(item.get("code"), str):
                raise VerifierBadAnswer("an errors item has no code")
            errors.append(
                ErrorItem(
                    code=item["code"],
                    message=str(item.get("message") or ""),
                    recoverable=bool(item.get("recoverable", False)),
                )
            )
        claims = data.get("claims") or []
        if not isinstance(claims, list) or not all(isinstance(c, dict) for c in claims):
            raise VerifierBadAnswer("claims is not a list of claim nodes")
        return cls(
            overall_status=str(status),
            request_id=_optional_str(data, "request_id"),
            errors=tuple(errors),
            claims=tuple(claims),
            brand_name=_optional_str(data, "brand_name"),
            brand_logo_url=_optional_str(data, "brand_logo_url"),
            certainty=_optional_str(data, "certainty"),
            signer_aid=_optional_str(data, "signer_aid"),
            vetter_warning_reason=_optional_str(data, "vetter_warning_reason"),
            cache_hit=data.get("cache_hit") is True,
            vetter_constraints=_optional_dict(data, "vetter_constraints"),
            brand_logo_hash=_optional_str(data, "brand_logo_hash"),
            revocation_pending=data.get("revocation_pending") is True,
            toip_warnings=_informational_list(data.get("toip_warnings")),
            issuer_identities=_informational_identities(data.get("issuer_identities")),
            delegation_chain=_informational_dict(data.get("delegation_chain")),
        )

    @property
    def signer_identity(self) -> Mapping[str, Any]:
        """What the dossier says of the PASSporT's signer: ``legal_name``, ``lei`` (or {})."""
        if self.signer_aid and self.issuer_identities:
            return self.issuer_identities.get(self.signer_aid) or {}
        return {}

    @property
    def delegation_depth(self) -> int:
        """Delegation levels between the signer and its non-delegated root (0: none)."""
        chain = self.delegation_chain
        if not chain:
            return 0
        depth = chain.get("depth")
        if isinstance(depth, int) and not isinstance(depth, bool) and depth >= 0:
            return depth
        nodes = chain.get("chain")
        return max(len(nodes) - 1, 0) if isinstance(nodes, list) else 0

    @property
    def vetter_status(self) -> str | None:
        """The sip-verify service's X-VVP-Vetter-Status value for these constraints.

        A constraint found unauthorized by a known vetter certification is a hard
        failure (FAIL-ECC / FAIL-JURISDICTION / both); one without a certification is
        INDETERMINATE, unless a hard failure exists; otherwise PASS.
        """
        if not self.vetter_constraints:
            return None
        failed: set[str] = set()
        unknown = False
        for item in self.vetter_constraints.values():
            if not isinstance(item, Mapping) or item.get("is_authorized") is True:
                continue
            if item.get("vetter_certification_said"):
                failed.add(str(item.get("constraint_type", "")).lower())
            else:
                unknown = True
        if failed:
            parts = [name.upper() for name in ("ecc", "jurisdiction") if name in failed]
            return "FAIL-" + "-".join(parts) if parts else "FAIL"
        return "INDETERMINATE" if unknown else "PASS"


# The verifier documents these fields as informational ("may be incomplete"): a malformed
# one is dropped rather than costing the call its verdict.
_MAX_INFORMATIONAL_ITEMS = 64


def _informational_dict(value: object) -> Mapping[str, Any] | None:
    return value if isinstance(value, dict) else None


def _informational_list(value: object) -> tuple[Mapping[str, Any], ...]:
    if not isinstance(value, list):
        return ()
    return tuple(item for item in value[:_MAX_INFORMATIONAL_ITEMS] if isinstance(item, dict))


def _informational_identities(value: object) -> Mapping[str, Mapping[str, Any]] | None:
    if not isinstance(value, dict):
        return None
    return {
        aid: info
        for aid, info in list(value.items())[:_MAX_INFORMATIONAL_ITEMS]
        if isinstance(aid, str) and isinstance(info, dict)
    }


def _optional_dict(data: Mapping[str, Any], key: str) -> Mapping[str, Any] | None:
    value = data.get(key)
    if value is None:
        return None
    if not isinstance(value, dict):
        raise VerifierBadAnswer(f"{key} is not an object")
    return value


def _optional_str(data: Mapping[str, Any], key: str) -> str | None:
    value = data.get(key)
    if value is None:
        return None
    if not isinstance(value, str):
        raise VerifierBadAnswer(f"{key} is not a string")
    return value


class VerifierClient:
    """Talks to one verifier; owns the connection pool. Close it with ``close()``."""

    def __init__(
        self,
        endpoint: str,
        *,
        timeout: float,
        token: str | None = None,
        max_connections: int = 256,
    ) -> None:
        self.endpoint = endpoint
        self.timeout = timeout
        headers = "Content-Type: application/json\r\nAccept: application/json\r\n"
        if token:
            headers += f"Authorization: Bearer {_header_safe(token)}\r\n"
        self._headers = headers.encode("latin-1")
        self._http = HttpClient(
            endpoint, max_connections=max_connections, max_answer_bytes=MAX_ANSWER_BYTES
        )

    async def close(self) -> None:
        await self._http.close()

    async def verify(self, request: VerifyRequest) -> Verdict:
        try:
            identity = _header_safe(request.vvp_identity).encode("latin-1")
        except ValueError:  # a control character, or not latin-1 (UnicodeEncodeError)
            raise VerifierError("VVP-Identity cannot be sent as an HTTP header") from None
        try:
            async with asyncio.timeout(self.timeout):
                status, raw = await self._http.post(
                    jsonfast.dumps(request.body()),
                    self._headers + b"VVP-Identity: %s\r\n" % identity,
                )
        except TimeoutError:
            raise VerifierTimeout(f"no answer within {self.timeout:g}s") from None
        except AnswerTooLarge:
            raise VerifierBadAnswer("answer larger than 1 MiB") from None
        except ClientError as exc:
            # Refused, reset mid-answer, closed early, not HTTP.
            raise VerifierUnreachable(str(exc)) from None
        if status != 200:
            raise VerifierHTTPError(status, f"verifier answered HTTP {status}")
        try:
            data = jsonfast.loads(raw)
        except ValueError:
            raise VerifierBadAnswer("answer is not JSON") from None
        return Verdict.from_json(data)


def _header_safe(value: str) -> str:
    """``value`` if it can be an HTTP header value as it is (no CR, LF, NUL)."""
    if "\r" in value or "\n" in value or "\0" in value:
        raise ValueError("control character in a header value")
    return value
