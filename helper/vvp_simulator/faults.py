"""Fault injection settings for the VVP verifier SIMULATOR.

A `Faults` value is immutable; the server swaps one reference when an operator
changes faults at run time, so a request sees either the old or the new set.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

MODES: tuple[str, ...] = (
    "normal",
    "http500",
    "http502",
    "http503",
    "hang",
    "malformed",
    "wrong_shape",
    "reset",
)
FORCEABLE_STATUSES: tuple[str, ...] = ("VALID", "INVALID", "INDETERMINATE", "WARNING")


@dataclass(frozen=True, slots=True)
class Faults:
    latency_ms: float = 0.0  # delay added before every /verify answer, milliseconds
    mode: str = "normal"
    error_rate: float = 0.0  # fraction 0..1 of /verify requests answered HTTP 500
    force_status: str | None = None  # overrides overall_status when set
    # Hostile text in the verdict (CR/LF in brand_name and error messages, a javascript:
    # logo URL), to prove the edge never lets verifier text add a SIP header.
    inject: bool = False
    # Answer as the real verifier does when its PASSporT parser refuses a PASSporT and the
    # request has a SIP context: it crashes (HTTP 500 text/plain, then closes the keep-alive
    # connection) instead of giving the parser's code. Off by default: the simulator then
    # gives the code the verifier's parser meant (PASSPORT_PARSE_FAILED and kin), which is
    # its documented contract; tests switch it on to prove the edge survives the crash.
    parser_crash: bool = False
    # Every this many seconds per dossier, one cached answer gets the real verifier's stale
    # revocation INDETERMINATE (errors null, the reason only in revocation_clear), as when
    # its revocation data is older than its re-check interval (300 s by default there).
    # 0 = never.
    stale_revocation_every_s: float = 0.0
    # Load behaviour (vvp_simulator.capacity), settable at start (--capacity, --cold-ms)
    # and at run time like any fault.
    #: Verifications per second the simulated verifier can do; beyond it requests queue,
    #: so latency grows as a saturated server's does. None = unlimited (instant answers).
    capacity: float | None = None
    #: Milliseconds the first verification of each new dossier (evd) takes; concurrent
    #: first calls for one dossier each pay it (the real verifier has no single-flight).
    cold_ms: float = 0.0
    #: Multiplies every simulated latency (service time under capacity, cold_ms,
    #: latency_ms): a verifier that slowed down, e.g. 10 for "ten times slower".
    latency_factor: float = 1.0
    #: A request whose context.call_id starts with this text is answered the way the real
    #: verifier answers a PASSporT its parser chokes on: HTTP 500 text/plain, then the
    #: keep-alive connection is closed. None = off. (A caller controls its Call-ID, so this
    #: is how tests stand for "a request crafted to make the verifier fail".)
    crash_call_id_prefix: str | None = None

    def __post_init__(self) -> None:
        if isinstance(self.latency_ms, bool) or not isinstance(self.latency_ms, int | float):
            raise ValueError("latency_ms must be a number")
        if self.latency_ms < 0:
            raise ValueError("latency_ms must be >= 0")
        if self.mode not in MODES:
            raise ValueError(f"mode must be one of {', '.join(MODES)}")
        if isinstance(self.error_rate, bool) or not isinstance(self.error_rate, int | float):
            raise ValueError("error_rate must be a number")
        if not 0.0 <= self.error_rate <= 1.0:
            raise ValueError("error_rate must be between 0 and 1")
        if self.force_status is not None and self.force_status not in FORCEABLE_STATUSES:
            raise ValueError(f"force_status must be null or one of {', '.join(FORCEABLE_STATUSES)}")
        if not isinstance(self.inject, bool):
            raise ValueError("inject must be true or false")
        if not isinstance(self.parser_crash, bool):
            raise ValueError("parser_crash must be true or false")
        every = self.stale_revocation_every_s
        if isinstance(every, bool) or not isinstance(every, int | float) or every < 0:
            raise ValueError("stale_revocation_every_s must be a number >= 0")
        if self.capacity is not None and (not _number(self.capacity) or self.capacity <= 0):
            raise ValueError("capacity must be null or a number of verifications/s > 0")
        if not _number(self.cold_ms) or self.cold_ms < 0:
            raise ValueError("cold_ms must be a number >= 0")
        if not _number(self.latency_factor) or self.latency_factor <= 0:
            raise ValueError("latency_factor must be a number > 0")
        if self.crash_call_id_prefix is not None and (
            not isinstance(self.crash_call_id_prefix, str) or not self.crash_call_id_prefix
        ):
            raise ValueError("crash_call_id_prefix must be null or a non-empty string")

    def updated(self, changes: Mapping[str, Any]) -> Faults:
        """A new Faults with `changes` applied; ValueError on unknown fields or bad values."""
        known = {f.name for f in dataclasses.fields(self)}
        unknown = sorted(set(changes) - known)
        if unknown:
            raise ValueError(f"unknown fault field(s): {', '.join(unknown)}")
        return dataclasses.replace(self, **dict(changes))

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def _number(value: object) -> bool:
    return not isinstance(value, bool) and isinstance(value, int | float)
