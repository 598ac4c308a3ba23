"""The helper's Prometheus metrics, on a registry passed in (one per app, so each test
gets a fresh one). Labels are bounded: outcomes, actions, SIP codes, error codes from
the verifier's fixed list, failure kinds - never Call-IDs, numbers or free text.

With ``serve --workers N`` (N > 1) the workers keep their values in prometheus_client's
multiprocess mode: each worker writes its own files in one directory the parent made,
and whichever worker answers a scrape reads them all (``MultiProcessCollector``), so
``/metrics`` shows the whole node. Counters and histograms are summed, those of a
worker that died included; each gauge says in its ``multiprocess_mode`` how the
workers' values combine, and its ``live`` modes drop a dead worker's value (the parent
calls ``mark_process_dead``). With one process none of this is used.
"""

from __future__ import annotations

import os
import time

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    Info,
    generate_latest,
    values,
)
from prometheus_client.multiprocess import MultiProcessCollector

from . import __version__

#: 1 ms to 10 s: a cached verification takes 2-5 ms, a first one ~300 ms, the timeout 5 s.
LATENCY_BUCKETS = (
    0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
)  # fmt: skip

#: Error codes are the verifier's documented list plus our EXT_ ones; anything else is
#: folded into "other" so a misbehaving verifier cannot grow the series count.
MAX_CODE_LEN = 48


#: prometheus_client's variable: where multiprocess mode keeps the workers' files.
MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"


def use_multiprocess_dir(path: str) -> None:
    """Put this process's metrics in ``path``, shared with the other workers.

    ``Metrics(multiprocess_dir=...)`` calls it in a worker, after the fork, before its
    metrics are made. The library picks its value class from ``PROMETHEUS_MULTIPROC_DIR``
    once, when it is imported, which for a forked worker was in the parent, before
    ``--workers`` was read, and it has no call to switch it later. So the variable is set
    here and the library chooses again, with its own function, in this process only: the
    parent and a single helper are left as they are.
    """
    os.environ[MULTIPROC_ENV] = path
    values.ValueClass = values.get_value_class()  # type: ignore[no-untyped-call]


class Metrics:
    def __init__(
        self, registry: CollectorRegistry | None = None, *, multiprocess_dir: str | None = None
    ) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        #: This worker's values are shared with the other workers'.
        self.multiprocess = multiprocess_dir is not None
        if multiprocess_dir is not None:
            use_multiprocess_dir(multiprocess_dir)
        r = self.registry
        self.decisions = Counter(
            "vvp_helper_decisions_total",
            "Calls decided, by outcome, action and SIP answer code.",
            ["outcome", "action", "code"],
            registry=r,
        )
        self.decision_seconds = Histogram(
            "vvp_helper_decision_duration_seconds",
            "Time from decision request to instruction, seconds.",
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.precheck_rejections = Counter(
            "vvp_helper_precheck_rejections_total",
            "Identities found invalid by the edge's own checks, without asking the verifier.",
            ["code"],
            registry=r,
        )
        # Bounded labels: decision.REFUSAL_CAUSES.
        self.caller_refusals = Counter(
            "vvp_helper_caller_refusals_total",
            "Calls answered 'invalid' (or refused as malformed) for what the caller sent, "
            "before any verifier verdict, by cause. A rise is a caller probing the edge.",
            ["cause"],
            registry=r,
        )
        self.verifier_seconds = Histogram(
            "vvp_helper_verifier_request_duration_seconds",
            "Verifier request latency, seconds (failures included).",
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.verifier_failures = Counter(
            "vvp_helper_verifier_failures_total",
            "Verifier requests without a verdict, by kind.",
            ["kind"],
            registry=r,
        )
        self.verifier_http_errors = Counter(
            "vvp_helper_verifier_http_errors_total",
            "Verifier answers other than HTTP 200, by upstream status and the outcome given "
            "(invalid: a healthy verifier failed on that one request; error: no verdict).",
            ["status", "outcome"],
            registry=r,
        )
        self.verifier_limit = Gauge(
            "vvp_helper_verifier_concurrency_limit",
            "Verifications allowed in flight now (adaptive, at most VVP_VERIFIER_CONCURRENCY).",
            registry=r,
            # Each worker has its own limit on the one verifier: the node's is their sum.
            multiprocess_mode="livesum",
        )
        self.verifier_limit_waiting = Gauge(
            "vvp_helper_verifier_concurrency_waiting",
            "Calls waiting for a verification slot (at most VVP_VERIFIER_MAX_WAIT each).",
            registry=r,
            multiprocess_mode="livesum",  # calls waiting on the node
        )
        self.verifier_limit_rejections = Counter(
            "vvp_helper_verifier_overloaded_total",
            "Calls answered error at once because the verifier concurrency limit stayed "
            "full for VVP_VERIFIER_MAX_WAIT (EXT_VERIFIER_OVERLOADED).",
            registry=r,
        )
        self.breaker_state = Gauge(
            "vvp_helper_verifier_breaker_state",
            "Verifier circuit breaker: 0 closed, 1 open, 2 half-open.",
            registry=r,
            # Each worker has its own breaker: not 0 when any of them is not closed (an
            # alert on > 0 fires); which one, and why, is in that worker's log.
            multiprocess_mode="livemax",
        )
        self.replays = Counter(
            "vvp_helper_replays_total",
            "PASSporTs seen again on another Call-ID within their validity.",
            registry=r,
        )
        self.replay_store_errors = Counter(
            "vvp_helper_replay_store_errors_total",
            "Replay checks skipped because the shared store did not answer.",
            registry=r,
        )
        self.overloaded = Counter(
            "vvp_helper_overloaded_total",
            "Calls answered with the error action unverified because they queued longer "
            "than VVP_HELPER_MAX_QUEUE_WAIT before their decision (EXT_HELPER_OVERLOADED).",
            registry=r,
        )
        self.in_flight = Gauge(
            "vvp_helper_requests_in_flight",
            "Decision requests being worked on.",
            registry=r,
            multiprocess_mode="livesum",  # on the node
        )
        self.bad_requests = Counter(
            "vvp_helper_bad_requests_total",
            "Decision requests refused as malformed (Kamailio then falls back).",
            registry=r,
        )
        self.reload_success = Gauge(
            "vvp_helper_policy_last_reload_successful",
            "1 if the last policy (re)load succeeded, 0 if the file was rejected.",
            registry=r,
            # Every worker loads the file itself: 0 as long as any of them rejected it.
            multiprocess_mode="livemin",
        )
        self.reload_success_time = Gauge(
            "vvp_helper_policy_last_reload_success_timestamp_seconds",
            "Unix time of the last successful policy load.",
            registry=r,
            # The oldest of the workers' loads: it moves on a reload only once every
            # worker has loaded the new file, so it confirms the whole node took it.
            multiprocess_mode="livemin",
        )
        self.reloads = Counter(
            "vvp_helper_policy_reloads_total",
            "Policy load attempts, by result.",
            ["result"],
            registry=r,
        )
        self.policy_info = Gauge(
            "vvp_helper_policy_info",
            "The active policy: always 1, labelled with its file and SHA-256.",
            ["source", "sha256"],
            registry=r,
            # 1 for a policy that any worker runs (workers may differ for a moment
            # around a reload); a policy none runs any more shows 0 (policy_loaded).
            multiprocess_mode="livemax",
        )
        self.fallback_push_success = Gauge(
            "vvp_helper_kamailio_fallback_push_successful",
            "1 if the last push of the error policy into Kamailio succeeded.",
            registry=r,
            multiprocess_mode="livemin",  # each worker pushes: 0 if any push failed
        )
        self.build = Info("vvp_helper_build", "Helper version.", registry=r)
        self.build.info({"version": __version__})
        self._policy_labels: tuple[str, str] | None = None
        self._page = self.registry
        if multiprocess_dir is not None:
            # The page reads every worker's files; only those, or this worker's own
            # values would be counted twice. The build Info is not kept in files (the
            # library's multiprocess mode has no Info) and is the same in every worker.
            self._page = CollectorRegistry()
            MultiProcessCollector(self._page, multiprocess_dir)  # type: ignore[no-untyped-call]
            self._page.register(self.build)

    def exposition(self) -> bytes:
        """The /metrics page: this process's metrics, or with workers the whole node's."""
        return generate_latest(self._page)

    def policy_loaded(self, source: str, sha256: str) -> None:
        self.reload_success.set(1)
        self.reload_success_time.set(time.time())
        self.reloads.labels("success").inc()
        previous, self._policy_labels = self._policy_labels, (source, sha256)
        if not self.multiprocess:
            self.policy_info.clear()
        elif previous is not None and previous != self._policy_labels:
            # clear() cannot reach the shared files (the library warns and keeps them):
            # the policy left behind shows 0.
            self.policy_info.labels(*previous).set(0)
        self.policy_info.labels(source, sha256).set(1)

    def policy_rejected(self) -> None:
        self.reload_success.set(0)
        self.reloads.labels("failure").inc()


def bounded_code(code: str) -> str:
    if len(code) > MAX_CODE_LEN or not code.replace("_", "").isalnum() or not code.isupper():
        return "other"
    return code
