"""A real Prometheus scrapes Kamailio and the helper during a sipp run; the series move
exactly as the calls did (asserted through Prometheus' HTTP query API)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from tests.support.harness import Helper, Kamailio, Prometheus, Simulator, identity_csv, run_sipp
from tests.support.sipp_scenarios import invite_any_final

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(shutil.which("prometheus") is None, reason="needs Debian's prometheus"),
]

ORIG = "+441923311001"
DEST = "+441923311006"
VALID, FORGED, MISSING = 40, 15, 10


def test_prometheus_sees_each_call_once(tmp_path: Path) -> None:
    simulator = Simulator.create(tmp_path)
    helper = Helper.create(tmp_path, simulator.url)
    kamailio = Kamailio.create(tmp_path, helper.decide_url)
    prometheus = Prometheus.create(
        tmp_path,
        {
            "vvp-helper": f"127.0.0.1:{helper.port}",
            "kamailio": f"127.0.0.1:{kamailio.http_port}",
        },
    )
    try:
        assert prometheus.wait_value('up{job="vvp-helper"}', 1) == 1
        assert prometheus.wait_value('up{job="kamailio"}', 1) == 1
        for kind, calls in (("valid", VALID), ("forged", FORGED), ("none", MISSING)):
            # A fresh identity per call, as real callers send (a reused one is a replay).
            csv = None if kind == "none" else identity_csv(tmp_path / f"{kind}.csv", [kind], calls)
            scenario = invite_any_final(tmp_path / f"{kind}.xml", csv=csv is not None)
            run = run_sipp(scenario, kamailio.port, tmp_path, calls=calls, rate=50, csv=csv)
            assert run.returncode == 0, run.stdout
        total = VALID + FORGED + MISSING

        helper_valid = 'sum(vvp_helper_decisions_total{outcome="valid",code="302"})'
        assert prometheus.wait_value(helper_valid, VALID) == VALID
        helper_invalid = 'sum(vvp_helper_decisions_total{outcome="invalid",code="403"})'
        assert prometheus.wait_value(helper_invalid, FORGED) == FORGED
        assert (
            prometheus.wait_value('sum(vvp_helper_decisions_total{outcome="missing"})', MISSING)
            == MISSING
        )
        assert prometheus.wait_value("kamailio_script_vvp_invites", total) == total
        assert prometheus.wait_value("kamailio_script_vvp_helper_queries", total) == total
        assert (
            prometheus.wait_value(
                'sum(kamailio_vvp_replies_total{source="helper",code="403"})', FORGED
            )
            == FORGED
        )
        assert prometheus.value("kamailio_script_vvp_fallbacks") == 0
        # Only verified calls reached the verifier; every one got a verdict.
        verifier_calls = "vvp_helper_verifier_request_duration_seconds_count"
        assert prometheus.wait_value(verifier_calls, VALID + FORGED) == VALID + FORGED
        assert prometheus.value("sum(vvp_helper_verifier_failures_total)") in (None, 0)
        assert prometheus.value("vvp_helper_policy_last_reload_successful") == 1
    finally:
        for process in (prometheus, kamailio, helper, simulator):
            process.stop()
