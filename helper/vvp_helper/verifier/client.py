"""HTTP client of the VVP Verifier (``POST /verify``); docs/design.md "The verifier's contract".

One ``aiohttp.ClientSession`` per process, its pool of keep-alive connections sized to
the verifier concurrency (the verifier's cached answers take 2-5 ms, a new TCP+TLS
handshake would cost more than the answer). TLS trusts the system's CAs or a given CA
bundle, and can present a client certificate; HTTPS_PROXY / NO_PROXY are honoured.
Whatever goes wrong - refused, reset, slow, HTTP 5xx from a proxy, a body that is not the
documented JSON - becomes a ``VerifierError`` subclass, which the decision maps to the
``error`` outcome. Nothing here raises anything else.
"""

from __future__ import annotations

import logging
import ssl
import time
import urllib.request
import weakref
from collections.abc import Mapping
from contextvars import ContextVar
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import aiohttp
from aiohttp.client_reqrep import ClientRequest
from aiohttp.connector import Connection
from aiohttp.tracing import Trace

from vvp_helper import jsonfast
from vvp_helper.errors import (
    VerifierBadAnswer,
    VerifierError,
    VerifierHTTPError,
    VerifierTimeout,
    VerifierTLSError,
    VerifierUnreachable,
)

if TYPE_CHECKING:
    from vvp_helper.config import Settings

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


#: Seconds a resolved verifier address is reused (aiohttp's default is 10).
DNS_CACHE_S = 300
#: Seconds an idle pooled connection is kept. Below the idle timeout of common servers
#: (uvicorn 5 s, nginx 75 s) would avoid most idle-close races; 4 s keeps one alive
#: across a quiet moment at a few calls per second.
IDLE_KEEP_S = 4.0
#: A TLS failure is logged at most once in this many seconds, seconds.
TLS_LOG_INTERVAL_S = 10.0

log = logging.getLogger("vvp_helper.verifier.client")


class VerifierClient:
    """Talks to one verifier over one ``aiohttp.ClientSession``. Close it with ``close()``.

    The session is made on the first call (it needs the running loop) and lives until
    ``close()``: one per process.
    """

    def __init__(
        self,
        endpoint: str,
        *,
        timeout: float,
        token: str | None = None,
        max_connections: int = 256,
        ca_file: Path | None = None,
        client_cert: Path | None = None,
        client_key: Path | None = None,
    ) -> None:
        self.endpoint = endpoint
        self.timeout = timeout
        self.max_connections = max_connections
        headers = {"Content-Type": "application/json", "Accept": "application/json"}
        if token:
            headers["Authorization"] = f"Bearer {_header_safe(token)}"
        self._headers = headers
        # A whole-call budget (connect + send + answer): the helper's deadline plans on it.
        self._timeout = aiohttp.ClientTimeout(total=timeout)
        self._ssl: ssl.SSLContext | bool = True
        if ca_file is not None or client_cert is not None:
            context = ssl.create_default_context(cafile=str(ca_file) if ca_file else None)
            if client_cert is not None:
                context.load_cert_chain(client_cert, client_key)
            self._ssl = context
        self.proxy = proxy_from_env(endpoint)
        self._session: aiohttp.ClientSession | None = None
        self._tls_logged_at = -TLS_LOG_INTERVAL_S

    @classmethod
    def from_settings(cls, settings: Settings) -> VerifierClient:
        assert settings.verify_endpoint is not None
        return cls(
            settings.verify_endpoint,
            timeout=settings.verifier_timeout,
            token=settings.verifier_token,
            max_connections=settings.verifier_concurrency,
            ca_file=settings.verifier_ca_file,
            client_cert=settings.verifier_client_cert,
            client_key=settings.verifier_client_key,
        )

    def _open(self) -> aiohttp.ClientSession:
        connector = _Connector(
            limit=self.max_connections,
            ttl_dns_cache=DNS_CACHE_S,
            keepalive_timeout=IDLE_KEEP_S,
            ssl=self._ssl,
        )
        self._session = aiohttp.ClientSession(
            connector=connector,
            headers=self._headers,
            timeout=self._timeout,
            # HTTPS_PROXY / HTTP_PROXY / NO_PROXY, read once (see proxy_from_env).
            proxy=self.proxy,
            trust_env=False,
            # No cookies: a verifier has no business keeping state in the edge.
            cookie_jar=aiohttp.DummyCookieJar(),
            auto_decompress=False,
            raise_for_status=False,
        )
        return self._session

    def _log_tls(self, message: str) -> None:
        # Every call fails the same way until someone fixes it: once per interval.
        now = time.monotonic()
        if now - self._tls_logged_at >= TLS_LOG_INTERVAL_S:
            self._tls_logged_at = now
            log.error("%s", message)

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def verify(self, request: VerifyRequest) -> Verdict:
        try:
            identity = _header_safe(request.vvp_identity)
            identity.encode("latin-1")
        except ValueError:  # a control character, or not latin-1 (UnicodeEncodeError)
            raise VerifierError("VVP-Identity cannot be sent as an HTTP header") from None
        session = self._session or self._open()
        body = jsonfast.dumps(request.body())
        # The session adds the fixed headers (content type, token) to this one.
        headers = {"VVP-Identity": identity}
        try:
            status, raw = await self._post(session, body, headers)
        except TimeoutError:
            raise VerifierTimeout(f"no answer within {self.timeout:g}s") from None
        except _TooLarge:
            raise VerifierBadAnswer("answer larger than 1 MiB") from None
        except aiohttp.ClientSSLError as exc:
            # Untrusted or expired certificate, wrong host name, refused client
            # certificate: an operator's fix, so say exactly what TLS said.
            message = f"TLS to the verifier {self.endpoint} failed: {_tls_reason(exc)}"
            self._log_tls(message)
            raise VerifierTLSError(message) from None
        except aiohttp.ClientResponseError as exc:
            # The answer was not HTTP (aiohttp's parser refused it).
            raise VerifierUnreachable(f"bad HTTP answer: {exc.message}"[:200]) from None
        except (aiohttp.ClientError, OSError) as exc:
            # Refused, reset, closed early, cut mid-answer, DNS, proxy refused.
            raise VerifierUnreachable(f"{type(exc).__name__}: {exc}"[:200]) from None
        if status != 200:
            raise VerifierHTTPError(status, f"verifier answered HTTP {status}")
        try:
            data = jsonfast.loads(raw)
        except ValueError:
            raise VerifierBadAnswer("answer is not JSON") from None
        return Verdict.from_json(data)

    async def _post(
        self, session: aiohttp.ClientSession, body: bytes, headers: dict[str, str]
    ) -> tuple[int, bytes]:
        _REUSED.set(False)
        try:
            return await self._exchange(session, body, headers)
        except (aiohttp.ServerDisconnectedError, aiohttp.ClientOSError):
            # The idle-close race: the verifier closed a pooled connection as we sent on
            # it (the write fails, or the connection ends or is reset before the answer's
            # first byte; a cut answer is a ClientPayloadError). Sent again once on a fresh
            # connection (verifying has no side effects). A fresh connection that closes
            # unanswered is the verifier's failure, not retried.
            if not _REUSED.get():
                raise
            return await self._exchange(session, body, headers)

    async def _exchange(
        self,
        session: aiohttp.ClientSession,
        body: bytes,
        headers: dict[str, str],
    ) -> tuple[int, bytes]:
        async with session.post(self.endpoint, data=body, headers=headers) as response:
            if response.content_length is not None and response.content_length > MAX_ANSWER_BYTES:
                raise _TooLarge
            raw = await response.content.read(MAX_ANSWER_BYTES + 1)
            if len(raw) > MAX_ANSWER_BYTES:
                raise _TooLarge
            if not response.content.at_eof():
                # read(n) returns what has arrived so far; the rest is still coming.
                raw += await _read_rest(response.content, MAX_ANSWER_BYTES - len(raw))
            return response.status, raw


async def _read_rest(content: aiohttp.StreamReader, room: int) -> bytes:
    parts = []
    while not content.at_eof():
        chunk = await content.read(room + 1)
        if not chunk:
            break
        room -= len(chunk)
        if room < 0:
            raise _TooLarge
        parts.append(chunk)
    return b"".join(parts)


class _TooLarge(Exception):
    pass


#: Per task: whether the connection of the call in progress came from the pool.
_REUSED: ContextVar[bool] = ContextVar("vvp_verifier_reused", default=False)


class _Connector(aiohttp.TCPConnector):
    """A TCPConnector that notes, for the calling task, whether the connection it hands
    out was used before: only those can meet the idle-close race. (A TraceConfig's
    on_connection_reuseconn says the same for ~19 us of CPU a call: all of aiohttp's
    trace signals are sent once any is set.)"""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._handed_out: weakref.WeakSet[object] = weakref.WeakSet()

    async def connect(
        self, req: ClientRequest, traces: list[Trace], timeout: aiohttp.ClientTimeout
    ) -> Connection:
        connection = await super().connect(req, traces, timeout)
        protocol = connection.protocol
        if protocol in self._handed_out:
            _REUSED.set(True)
        elif protocol is not None:
            self._handed_out.add(protocol)
        return connection


def proxy_from_env(url: str) -> str | None:
    """The forward proxy for ``url`` from HTTPS_PROXY / HTTP_PROXY / NO_PROXY (either case),
    with the standard library's reading of them.

    Read once when the client is made: aiohttp's ``trust_env`` reads the environment (and
    ~/.netrc) again on every request, ~170 us of CPU a call, more than the call itself.
    """
    parts = urlsplit(url)
    proxies = urllib.request.getproxies_environment()
    proxy = proxies.get(parts.scheme)
    bypass = urllib.request.proxy_bypass_environment  # type: ignore[attr-defined]
    if not proxy or bypass(parts.hostname or "", proxies):
        return None
    return proxy


def _tls_reason(exc: aiohttp.ClientSSLError) -> str:
    """What TLS said, e.g. "certificate verify failed: unable to get local issuer
    certificate" (not trusted), "... IP address mismatch", "tlsv13 alert certificate
    required" (the verifier wants a client certificate)."""
    cause = getattr(exc, "certificate_error", None) or exc.__cause__ or exc
    if isinstance(cause, ssl.SSLCertVerificationError):
        return f"certificate verify failed: {cause.verify_message}"[:200]
    return str(getattr(cause, "reason", None) or cause)[:200]


def _header_safe(value: str) -> str:
    """``value`` if it can be an HTTP header value as it is (no CR, LF, NUL)."""
    if "\r" in value or "\n" in value or "\0" in value:
        raise ValueError("control character in a header value")
    return value
