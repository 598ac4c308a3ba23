"""Hot policy reload: one serialized path for file changes, SIGHUP and ``POST /-/reload``.

Build the new policy fully, then swap one reference (Prometheus ``/-/reload``, Caddy).
A call reads ``store.current`` once, so calls in flight finish on the policy they
started with. A file that does not load leaves the last good policy in place, and says
so in the log (every problem, with its position) and in the metrics.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

from vvp_helper.errors import PolicyError, PolicyProblem
from vvp_helper.metrics import Metrics
from vvp_helper.policy.load import read_policy
from vvp_helper.policy.model import Policy

log = logging.getLogger("vvp_helper.policy.store")

#: Seconds between looks at the policy file (an mtime/size/inode check: cheap).
DEFAULT_WATCH_INTERVAL = 1.0

OnLoaded = Callable[[Policy], Awaitable[object]]


@dataclass(frozen=True, slots=True)
class ReloadResult:
    ok: bool
    changed: bool
    sha256: str
    trigger: str
    problems: tuple[PolicyProblem, ...] = ()

    def as_json(self) -> dict[str, object]:
        return {
            "ok": self.ok,
            "changed": self.changed,
            "sha256": self.sha256,
            "trigger": self.trigger,
            "problems": [str(p) for p in self.problems],
        }


@dataclass(eq=False)
class PolicyStore:
    """Holds the active policy and the only code path that replaces it."""

    path: Path
    metrics: Metrics
    current: Policy
    on_loaded: list[OnLoaded] = field(default_factory=list)
    _lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    _stamp: tuple[int, int, int] | None = None

    @classmethod
    def open(cls, path: Path, metrics: Metrics) -> PolicyStore:
        """Load the first policy; a bad file here is fatal (PolicyError), not kept."""
        loaded = read_policy(path)
        for warning in loaded.warnings:
            log.warning("%s", warning)
        store = cls(path=path, metrics=metrics, current=loaded.policy)
        store._stamp = _stamp(path)
        metrics.policy_loaded(str(path), loaded.policy.sha256)
        return store

    async def reload(self, trigger: str) -> ReloadResult:
        async with self._lock:
            self._stamp = _stamp(self.path)
            try:
                # Small file, read in one go: not worth a thread.
                loaded = read_policy(self.path)
            except PolicyError as exc:
                self.metrics.policy_rejected()
                log.error(
                    "policy reload (%s) rejected, keeping %s: %d problem(s)",
                    trigger,
                    self.current.sha256[:12],
                    len(exc.problems),
                )
                for problem in exc.problems:
                    log.error("%s", problem)
                return ReloadResult(False, False, self.current.sha256, trigger, tuple(exc.problems))
            changed = loaded.policy.sha256 != self.current.sha256
            self.current = loaded.policy  # the swap: one reference
            self.metrics.policy_loaded(str(self.path), loaded.policy.sha256)
            for warning in loaded.warnings:
                log.warning("%s", warning)
            log.info(
                "policy reload (%s): %s %s",
                trigger,
                "now" if changed else "unchanged,",
                loaded.policy.sha256[:12],
            )
            for hook in self.on_loaded:
                await hook(loaded.policy)
            return ReloadResult(True, changed, loaded.policy.sha256, trigger, loaded.warnings)

    async def watch(self, interval: float = DEFAULT_WATCH_INTERVAL) -> None:
        """Reload whenever the file changes (editors replace files: inode counts too)."""
        while True:
            await asyncio.sleep(interval)
            stamp = _stamp(self.path)
            if stamp is not None and stamp != self._stamp:
                await self.reload("file-change")


def _stamp(path: Path) -> tuple[int, int, int] | None:
    try:
        stat = os.stat(path)
    except OSError:
        # A file being replaced can vanish for an instant; the next look sees it.
        return None
    return (stat.st_mtime_ns, stat.st_size, stat.st_ino)
