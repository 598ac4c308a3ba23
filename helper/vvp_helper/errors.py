"""Exceptions raised by the helper.

    HelperError
    ├── ConfigError                  bad settings (CLI / environment)
    ├── PolicyError                  a policy file that cannot be used; carries its problems
    └── VerifierError                the verifier gave no verdict (outcome ``error``)
        ├── VerifierUnreachable      connection refused / reset / DNS
        │   └── VerifierTLSError     TLS handshake failed (certificate not trusted, ...)
        ├── VerifierTimeout          no answer within the timeout (also a ``TimeoutError``)
        ├── VerifierHTTPError        answered, but not HTTP 200
        ├── VerifierBadAnswer        HTTP 200 whose body is not the documented JSON
        ├── VerifierBreakerOpen      not asked: it failed repeatedly, the breaker is open
        ├── VerifierOverloaded       not asked: the adaptive limit is full (shed)
        └── VerifierRefusedRequest   the verifier failed on THIS request while healthy
                                     (outcome ``invalid``: the caller's doing, see
                                     verifier/guard.py)
    IdentityDecodeError (a ValueError) VVP material in the INVITE that cannot be decoded

Each ``VerifierError`` carries the ``EXT_`` error code the policy and logs see, so a
template such as ``{errors[0].code}`` tells downstream *why* there was no verdict.
(The verifier spec asks deployment-specific codes to start with ``EXT_``.)
"""

from __future__ import annotations

from dataclasses import dataclass


class HelperError(Exception):
    """Base class of everything the helper raises on purpose."""


class ConfigError(HelperError):
    """Settings that cannot work (bad URL, timeouts out of order, ...)."""


@dataclass(frozen=True, slots=True)
class PolicyProblem:
    """One problem in a policy file, printed ``file:line:col: code: message``."""

    file: str
    line: int
    column: int
    code: str
    message: str
    severity: str = "error"

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}:{self.column}" if self.line else self.file
        severity = "warning: " if self.severity == "warning" else ""
        return f"{where}: {severity}{self.code}: {self.message}"


class PolicyError(HelperError):
    """A policy file that cannot be loaded; ``problems`` lists every problem found,
    errors and warnings, sorted by position."""

    def __init__(self, problems: list[PolicyProblem]) -> None:
        self.problems = sorted(problems, key=lambda p: (p.file, p.line, p.column))
        super().__init__("\n".join(str(p) for p in self.problems))

    @property
    def errors(self) -> list[PolicyProblem]:
        return [p for p in self.problems if p.severity == "error"]


class VerifierError(HelperError):
    """The verifier could not give a verdict."""

    code = "EXT_VERIFIER_ERROR"
    #: A bounded label for logs and metrics (never free text).
    kind = "error"
    #: The decision's outcome: ``error`` (no verdict; the policy's fail-open or -closed).
    outcome = "error"


class VerifierUnreachable(VerifierError):
    code = "EXT_VERIFIER_UNREACHABLE"
    kind = "unreachable"


class VerifierTLSError(VerifierUnreachable):
    code = "EXT_VERIFIER_TLS"
    kind = "tls"


class VerifierTimeout(VerifierError, TimeoutError):
    code = "EXT_VERIFIER_TIMEOUT"
    kind = "timeout"


class VerifierHTTPError(VerifierError):
    code = "EXT_VERIFIER_HTTP_STATUS"
    kind = "http_status"

    def __init__(self, status: int, message: str) -> None:
        self.status = status
        super().__init__(message)


class VerifierBadAnswer(VerifierError):
    code = "EXT_VERIFIER_BAD_ANSWER"
    kind = "malformed"


class VerifierBreakerOpen(VerifierError):
    code = "EXT_VERIFIER_BREAKER_OPEN"
    kind = "breaker_open"


class VerifierOverloaded(VerifierError):
    code = "EXT_VERIFIER_OVERLOADED"
    kind = "shed"


class VerifierRefusedRequest(VerifierError):
    """A healthy verifier failed on this one request (HTTP 500 from its parser): the
    request's content is at fault, so the outcome is ``invalid``, never ``error`` - a
    caller must not be able to pick the fail-open route. The code is the one the verifier
    gives for a PASSporT its parser rejects."""

    code = "PASSPORT_PARSE_FAILED"
    kind = "refused_request"
    outcome = "invalid"


class IdentityDecodeError(ValueError):
    """VVP material that cannot be decoded; ``code`` is the verifier error code it maps to.

    Not a ``HelperError``: the caller wrote it, and the decision turns it into an outcome
    (``invalid``), never into the helper's own failure. It lives here, not in
    ``sip/identity.py``, because ``sip/fields.py`` raises it too and ``identity`` imports
    ``fields``: one home below both keeps the imports one-way.
    """

    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message
