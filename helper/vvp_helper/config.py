"""Helper settings: one frozen value built once from the environment and the CLI.

Every setting has an environment variable (``VVP_*``) so containers and systemd units set
them without a wrapper script; the CLI flags of ``vvp-helper serve`` override them.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from urllib.parse import urlsplit

from .errors import ConfigError
from .sip.identity import PrecheckSettings

DEFAULT_POLICY = Path(__file__).resolve().parents[2] / "policy" / "default.yaml"


@dataclass(frozen=True, slots=True)
class Settings:
    host: str = "127.0.0.1"
    port: int = 8480
    policy_path: Path = DEFAULT_POLICY
    #: Base URL of the VVP Verifier; ``/verify`` is appended.
    verifier_url: str | None = None
    #: Seconds the verifier gets per request (docs/design.md: < helper deadline < Kamailio's wait).
    #: Longer than the verifier's own dossier-fetch timeout (5 s), so its answer for an
    #: unreachable dossier (DOSSIER_FETCH_FAILED) arrives before the helper gives up.
    verifier_timeout: float = 6.0
    #: Optional ``Authorization: Bearer`` for verifiers behind a gateway.
    verifier_token: str | None = None
    #: Ceiling of the adaptive verifier concurrency limit (and the connection pool size):
    #: the limit follows the verifier's latency between 4 and this. Above Kamailio's
    #: VVP_MAX_IN_DECISION (400), so the ceiling is never what sheds a healthy verifier's
    #: load; a saturated verifier is protected by the adaptive limit below it.
    verifier_concurrency: int = 512
    #: Seconds after which the helper answers ``error`` whatever is still pending. Must
    #: stay below Kamailio's VVP_HELPER_TIMEOUT_MS so the policy, not the fallback, decides.
    deadline: float = 6.5
    #: Seconds a call may have waited (since Kamailio received it) when its decision
    #: starts; a call that waited longer gets the policy's ``error`` answer at once
    #: (EXT_HELPER_OVERLOADED): under overload, fast answers instead of timeouts. 0 = off.
    max_queue_wait: float = 1.0
    #: Largest decision request accepted from Kamailio, bytes. Identities are a few KiB.
    max_request_bytes: int = 64 * 1024
    precheck: PrecheckSettings = field(default_factory=PrecheckSettings)
    log_level: str = "INFO"
    #: One JSON object per log line (false: plain text, for a terminal).
    log_json: bool = True
    #: Seconds between looks at the policy file for changes; 0 turns watching off.
    policy_watch_interval: float = 1.0
    #: Kamailio JSON-RPC URLs to push the policy's on_error fallback to.
    kamailio_rpc_urls: tuple[str, ...] = ()
    #: Seconds between re-pushes of the fallback (a restarted Kamailio gets it back).
    fallback_push_interval: float = 10.0
    #: Circuit breaker: the last ``breaker_window`` verifier answers are remembered; once
    #: ``breaker_min_calls`` are, a failure share of at least ``breaker_failure_rate``
    #: (refused/reset, timeouts, 502/503/504, unusable answers) opens it.
    breaker_window: int = 50
    breaker_min_calls: int = 20
    breaker_failure_rate: float = 0.5
    #: Seconds the breaker stays open before half-open admission (10 %, doubling) starts.
    breaker_reset: float = 5.0
    #: Seconds a call may wait for a verification slot when the adaptive limit is full,
    #: before it gets the error answer at once (EXT_VERIFIER_OVERLOADED).
    verifier_max_wait: float = 0.05
    #: Flag a PASSporT seen on another Call-ID within its validity (EXT_PASSPORT_REPLAY).
    replay_check: bool = True
    #: Share replay detection between edge nodes through this Redis (redis://host:6379/0).
    replay_redis_url: str | None = None
    #: Shared secret Kamailio must send (X-VVP-Edge-Secret) when they are on different hosts.
    shared_secret: str | None = field(default=None, repr=False)
    #: Decision requests worked on at once; past it Kamailio gets 503 and falls back.
    max_in_flight: int = 4096
    #: Seconds an idle keep-alive connection from Kamailio, or one whose request head is
    #: still incomplete, is kept open; a stalled request body gets the deadline.
    idle_timeout: float = 75.0
    #: TLS to the verifier: a CA bundle (PEM) for a private PKI (default: the system's),
    #: and a client certificate and key (PEM) for mutual TLS.
    verifier_ca_file: Path | None = None
    verifier_client_cert: Path | None = None
    verifier_client_key: Path | None = None
    #: Helper processes sharing the port (``serve --workers``); docs/adr/0010.
    processes: int = 1

    def __post_init__(self) -> None:
        if not 0 < self.port < 65536:
            raise ConfigError(f"port {self.port} is not a TCP port")
        if self.verifier_url is not None:
            parts = urlsplit(self.verifier_url)
            if parts.scheme not in ("http", "https") or not parts.netloc:
                raise ConfigError(f"verifier URL {self.verifier_url!r} is not an http(s) URL")
        for name in (
            "verifier_timeout", "deadline", "max_queue_wait", "policy_watch_interval",
            "breaker_reset", "verifier_max_wait",
        ):  # fmt: skip
            value = getattr(self, name)
            if not math.isfinite(value) or value < 0:
                raise ConfigError(f"{name} must be a finite, non-negative number of seconds")
        if self.verifier_timeout <= 0:
            raise ConfigError("verifier timeout must be positive")
        if self.deadline <= self.verifier_timeout:
            raise ConfigError(
                f"helper deadline ({self.deadline}s) must be longer than the verifier "
                f"timeout ({self.verifier_timeout}s), or the verifier never gets its full time"
            )
        if self.verifier_concurrency < 1:
            raise ConfigError("verifier concurrency must be at least 1")
        if self.max_in_flight < 1:
            raise ConfigError("max in flight must be at least 1")
        if not 1 <= self.breaker_min_calls <= self.breaker_window:
            raise ConfigError("breaker min calls must be between 1 and the breaker window")
        if not 0 < self.breaker_failure_rate <= 1:
            raise ConfigError("breaker failure rate must be in (0, 1]")
        if self.replay_redis_url is not None and not self.replay_redis_url.startswith(
            ("redis://", "rediss://", "unix://")
        ):
            raise ConfigError(f"replay Redis URL {self.replay_redis_url!r} is not a redis:// URL")
        for url in self.kamailio_rpc_urls:
            if urlsplit(url).scheme not in ("http", "https"):
                raise ConfigError(f"Kamailio RPC URL {url!r} is not an http(s) URL")
        if not math.isfinite(self.idle_timeout) or self.idle_timeout <= 0:
            raise ConfigError("idle timeout must be a positive number of seconds")
        if self.verifier_client_key is not None and self.verifier_client_cert is None:
            raise ConfigError("VVP_VERIFIER_CLIENT_KEY needs VVP_VERIFIER_CLIENT_CERT")
        for path in (self.verifier_ca_file, self.verifier_client_cert, self.verifier_client_key):
            if path is not None and not path.is_file():
                raise ConfigError(f"TLS file {path} does not exist")
        if self.processes < 1:
            raise ConfigError("helper processes must be at least 1")

    @property
    def verify_endpoint(self) -> str | None:
        if self.verifier_url is None:
            return None
        return self.verifier_url.rstrip("/") + "/verify"

    def with_overrides(self, **changes: object) -> Settings:
        """A copy with the given fields changed; ``None`` values are ignored."""
        return replace(self, **{k: v for k, v in changes.items() if v is not None})  # type: ignore[arg-type]

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        env = os.environ if environ is None else environ

        def number(name: str, default: float) -> float:
            raw = env.get(name)
            if raw is None or raw == "":
                return default
            try:
                value = float(raw)
            except ValueError:
                raise ConfigError(f"{name}={raw!r} is not a number") from None
            if not math.isfinite(value):
                raise ConfigError(f"{name}={raw!r} is not a finite number")
            return value

        def whole(name: str, default: int) -> int:
            value = number(name, default)
            if value != int(value):
                raise ConfigError(f"{name}={env.get(name)!r} is not a whole number")
            return int(value)

        def flag(name: str, default: bool) -> bool:
            raw = env.get(name, "").strip().lower()
            if not raw:
                return default
            if raw in ("1", "true", "yes", "on"):
                return True
            if raw in ("0", "false", "no", "off"):
                return False
            raise ConfigError(f"{name}={raw!r} is not a boolean (use true/false)")

        def path(name: str) -> Path | None:
            raw = env.get(name)
            return Path(raw) if raw else None

        defaults = cls()
        precheck = PrecheckSettings(
            check_expiry=flag("VVP_PRECHECK_EXPIRY", True),
            check_numbers=flag("VVP_PRECHECK_NUMBERS", False),
        )
        return cls(
            host=env.get("VVP_HELPER_HOST") or defaults.host,
            port=whole("VVP_HELPER_PORT", defaults.port),
            policy_path=Path(env.get("VVP_POLICY") or defaults.policy_path),
            verifier_url=env.get("VVP_VERIFIER_URL") or None,
            verifier_timeout=number("VVP_VERIFIER_TIMEOUT", defaults.verifier_timeout),
            verifier_token=env.get("VVP_VERIFIER_TOKEN") or None,
            verifier_concurrency=whole("VVP_VERIFIER_CONCURRENCY", defaults.verifier_concurrency),
            deadline=number("VVP_HELPER_DEADLINE", defaults.deadline),
            max_queue_wait=number("VVP_HELPER_MAX_QUEUE_WAIT", defaults.max_queue_wait),
            precheck=precheck,
            log_level=(env.get("VVP_LOG_LEVEL") or defaults.log_level).upper(),
            log_json=flag("VVP_LOG_JSON", True),
            policy_watch_interval=number(
                "VVP_POLICY_WATCH_INTERVAL", defaults.policy_watch_interval
            ),
            kamailio_rpc_urls=tuple(
                url.strip() for url in env.get("VVP_KAMAILIO_RPC", "").split(",") if url.strip()
            ),
            fallback_push_interval=number(
                "VVP_FALLBACK_PUSH_INTERVAL", defaults.fallback_push_interval
            ),
            breaker_window=whole("VVP_BREAKER_WINDOW", defaults.breaker_window),
            breaker_min_calls=whole("VVP_BREAKER_MIN_CALLS", defaults.breaker_min_calls),
            breaker_failure_rate=number("VVP_BREAKER_FAILURE_RATE", defaults.breaker_failure_rate),
            breaker_reset=number("VVP_BREAKER_RESET", defaults.breaker_reset),
            verifier_max_wait=number("VVP_VERIFIER_MAX_WAIT", defaults.verifier_max_wait),
            replay_check=flag("VVP_REPLAY_CHECK", True),
            replay_redis_url=env.get("VVP_REPLAY_REDIS_URL") or None,
            shared_secret=env.get("VVP_HELPER_SECRET") or None,
            max_in_flight=whole("VVP_HELPER_MAX_IN_FLIGHT", defaults.max_in_flight),
            idle_timeout=number("VVP_HELPER_IDLE_TIMEOUT", defaults.idle_timeout),
            verifier_ca_file=path("VVP_VERIFIER_CA_FILE"),
            verifier_client_cert=path("VVP_VERIFIER_CLIENT_CERT"),
            verifier_client_key=path("VVP_VERIFIER_CLIENT_KEY"),
            processes=whole("VVP_HELPER_PROCESSES", defaults.processes),
        )
