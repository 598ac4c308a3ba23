"""The monitoring configuration in docker/monitoring/: Prometheus config, alerting rules
and their promtool tests, the Grafana dashboard.

Checks that promtool accepts the files and passes the rule tests (when promtool is
installed), that every alert has a firing and a quiet test case, and that every metric
name used in a PromQL expression of the alerts or the dashboard is one the helper
(helper/vvp_helper/metrics.py) or Kamailio (kamailio/kamailio.cfg) actually exports.
"""

from __future__ import annotations

import ast
import json
import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
MONITORING = REPO / "docker" / "monitoring"
PROMETHEUS_YML = MONITORING / "prometheus.yml"
ALERTS_YML = MONITORING / "alerts.yml"
ALERTS_TEST_YML = MONITORING / "alerts.test.yml"
DASHBOARD_JSON = MONITORING / "grafana" / "dashboards" / "vvp-edge.json"
GRAFANA_PROVISIONING = MONITORING / "grafana" / "provisioning"
METRICS_PY = REPO / "helper" / "vvp_helper" / "metrics.py"
KAMAILIO_CFG = REPO / "kamailio" / "kamailio.cfg"

#: Kamailio internal statistics (xhttp_prom_stats "all") the dashboard or alerts use, and
#: Prometheus' own per-target series. Add a name here only after checking Kamailio
#: exports it under exactly that name.
EXTRA_KNOWN_METRICS = frozenset(
    {"up", "kamailio_tmx_inuse_transactions", "kamailio_tcp_current_opened_connections"}
)

#: PromQL functions, aggregations, operators, keywords and modifiers: identifiers that are
#: not metric names.
_PROMQL_WORDS = """
    abs absent absent_over_time acos acosh asin asinh atan atanh avg_over_time ceil
    changes clamp clamp_max clamp_min cos cosh count_over_time day_of_month day_of_week
    day_of_year days_in_month deg delta deriv exp floor histogram_count histogram_fraction
    histogram_quantile histogram_sum holt_winters hour idelta increase irate label_join
    label_replace last_over_time ln log10 log2 mad_over_time max_over_time min_over_time
    minute month pi predict_linear present_over_time quantile_over_time rad rate resets
    round scalar sgn sin sinh sort sort_desc sqrt stddev_over_time stdvar_over_time
    sum_over_time tan tanh time timestamp vector year
    sum min max avg group stddev stdvar count count_values bottomk topk quantile
    by without on ignoring group_left group_right bool and or unless offset
    inf nan le
"""
PROMQL_WORDS = frozenset(_PROMQL_WORDS.split())

NAME_RE = re.compile(r"(?<![\w:.$])[a-zA-Z_:][a-zA-Z0-9_:]*")


# ----------------------------------------------------------------------------- helpers


def load_yaml(path: Path) -> Any:
    with path.open(encoding="utf-8") as f:
        return yaml.safe_load(f)


def alert_rules() -> list[dict[str, Any]]:
    groups = load_yaml(ALERTS_YML)["groups"]
    return [rule for group in groups for rule in group["rules"] if "alert" in rule]


def dashboard() -> dict[str, Any]:
    data: dict[str, Any] = json.loads(DASHBOARD_JSON.read_text(encoding="utf-8"))
    return data


def dashboard_panels(panels: list[dict[str, Any]] | None = None) -> Iterator[dict[str, Any]]:
    """Every panel, including those nested in collapsed rows."""
    for panel in dashboard()["panels"] if panels is None else panels:
        yield panel
        yield from dashboard_panels(panel.get("panels", []))


def dashboard_exprs() -> list[tuple[str, str]]:
    return [
        (panel.get("title", "?"), target["expr"])
        for panel in dashboard_panels()
        for target in panel.get("targets", [])
        if target.get("expr")
    ]


def promql_metric_names(expr: str) -> set[str]:
    """The metric names in a PromQL expression (Grafana variables allowed).

    Identifiers used bare or followed by `{` / `[`, after removing what is not a metric
    name: string literals, label matchers, grouping label lists, range and offset
    durations, numbers, Grafana variables, functions and keywords."""
    s = re.sub(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|`[^`]*`', '""', expr)
    s = re.sub(r"#[^\n]*", " ", s)  # comments
    s = re.sub(r"\$\{[^}]*\}|\$\w+", " 1 ", s)  # Grafana variables ($__rate_interval, ${DS})
    s = re.sub(r"\{[^}]*\}", "{}", s)  # label matchers
    s = re.sub(r"\[[^\]]*\]", "[]", s)  # ranges and subqueries
    s = re.sub(
        r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", r" \1 ", s
    )  # grouping label lists
    s = re.sub(r"\boffset\s+-?[0-9a-zA-Z]+", " ", s)  # offset durations
    s = re.sub(r"(?<![\w:])[0-9][0-9.]*(?:[eE][+-]?[0-9]+)?\w*", " ", s)  # 1e-3, 5m, 0x1f
    return {name for name in NAME_RE.findall(s) if name not in PROMQL_WORDS}


def helper_metric_names(source: str) -> set[str]:
    """Series names prometheus-client exposes for the metrics constructed in source."""
    suffixes = {
        "Counter": ("_total", "_created"),
        "Histogram": ("_bucket", "_sum", "_count", "_created"),
        "Summary": ("", "_sum", "_count", "_created"),
        "Gauge": ("",),
        "Enum": ("",),
        "Info": ("_info",),
    }
    names: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if not isinstance(node, ast.Call) or not node.args:
            continue
        func = node.func
        kind = func.id if isinstance(func, ast.Name) else getattr(func, "attr", None)
        first = node.args[0]
        if kind not in suffixes or not isinstance(first, ast.Constant):
            continue
        assert isinstance(first.value, str), f"{kind} name is not a string literal"
        name = first.value
        if kind == "Counter":
            name = name.removesuffix("_total")  # prometheus-client adds it back
        elif kind == "Info":
            name = name.removesuffix("_info")
        names.update(name + suffix for suffix in suffixes[kind])
    return names


def kamailio_metric_names(cfg: str) -> set[str]:
    """Series names xhttp_prom exposes for the kamailio.cfg statistics and prom_* metrics."""
    pref = "kamailio_"
    if m := re.search(r'modparam\("xhttp_prom",\s*"xhttp_prom_pref",\s*"([^"]*)"\)', cfg):
        pref = m.group(1)
    names: set[str] = set()
    for m in re.finditer(r'modparam\("statistics",\s*"variable",\s*"([^"/]+)', cfg):
        names.add(f"{pref}script_{m.group(1).strip()}")
    for m in re.finditer(
        r'modparam\("xhttp_prom",\s*"prom_(counter|gauge|histogram)",\s*"([^"]*)"\)', cfg
    ):
        kind, spec = m.groups()
        fields = dict(part.strip().split("=", 1) for part in spec.split(";") if "=" in part)
        name = pref + fields["name"].strip()
        if kind == "histogram":
            names.update(name + suffix for suffix in ("_bucket", "_sum", "_count"))
        else:
            names.add(name)
    return names


def known_metric_names() -> set[str]:
    return (
        helper_metric_names(METRICS_PY.read_text(encoding="utf-8"))
        | kamailio_metric_names(KAMAILIO_CFG.read_text(encoding="utf-8"))
        | EXTRA_KNOWN_METRICS
    )


def run_promtool(*args: str) -> None:
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.skip("promtool is not installed (apt-get install prometheus; CI installs it)")
    # From docker/monitoring, so rule_files paths relative to the files resolve.
    result = subprocess.run(
        [promtool, *args],
        cwd=MONITORING,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, (
        f"promtool {' '.join(args)} exited {result.returncode}:\n{result.stdout}\n{result.stderr}"
    )


# ------------------------------------------------------------------------------ promtool


def test_promtool_accepts_the_prometheus_config() -> None:
    run_promtool("check", "config", PROMETHEUS_YML.name)


def test_promtool_accepts_the_alerting_rules() -> None:
    run_promtool("check", "rules", ALERTS_YML.name)


def test_promtool_rule_tests_pass() -> None:
    run_promtool("test", "rules", ALERTS_TEST_YML.name)


# ---------------------------------------------------------------------- configuration


def test_prometheus_scrapes_helper_and_kamailio_and_loads_the_alerts() -> None:
    config = load_yaml(PROMETHEUS_YML)
    assert config["global"]["scrape_interval"] == "5s"
    assert config["rule_files"] == [ALERTS_YML.name]
    jobs = {
        job["job_name"]: [t for sc in job["static_configs"] for t in sc["targets"]]
        for job in config["scrape_configs"]
    }
    assert jobs["vvp-helper"] == ["helper:8480"]
    assert jobs["kamailio"] == ["kamailio:8060"]


def test_alerts_only_name_scraped_jobs() -> None:
    jobs = {job["job_name"] for job in load_yaml(PROMETHEUS_YML)["scrape_configs"]}
    for rule in alert_rules():
        for job in re.findall(r'job\s*=~?\s*"([^"]+)"', rule["expr"]):
            assert set(job.split("|")) <= jobs, f"{rule['alert']}: unknown job {job!r}"


def test_every_alert_has_for_severity_summary_and_description() -> None:
    rules = alert_rules()
    assert {r["alert"] for r in rules} >= {
        "VerifierErrorRatioHigh",
        "VerifierBreakerOpen",
        "KamailioFallbackInUse",
        "DecisionLatencyHigh",
        "PolicyReloadFailing",
        "NoTraffic",
        "HelperDown",
        "KamailioDown",
    }
    for rule in rules:
        assert "for" in rule, rule["alert"]
        assert rule["labels"]["severity"] in {"critical", "warning", "info"}, rule["alert"]
        assert rule["annotations"]["summary"].strip(), rule["alert"]
        assert rule["annotations"]["description"].strip(), rule["alert"]


def test_every_alert_has_a_firing_and_a_quiet_test_case() -> None:
    tests = load_yaml(ALERTS_TEST_YML)
    assert tests["rule_files"] == [ALERTS_YML.name]
    fires: set[str] = set()
    quiet: set[str] = set()
    for case in tests["tests"]:
        for check in case.get("alert_rule_test", []):
            (fires if check.get("exp_alerts") else quiet).add(check["alertname"])
    alerts = {rule["alert"] for rule in alert_rules()}
    assert not alerts - fires, f"alerts without a test case that fires them: {alerts - fires}"
    assert not alerts - quiet, f"alerts without a test case where they stay quiet: {alerts - quiet}"
    unknown = (fires | quiet) - alerts
    assert not unknown, f"test cases for unknown alerts: {unknown}"


def test_the_monitoring_readme_lists_every_alert() -> None:
    readme = (MONITORING / "README.md").read_text(encoding="utf-8")
    row = next(line for line in readme.splitlines() if line.startswith("| `alerts.yml`"))
    listed = set(re.findall(r"[A-Z][A-Za-z]+", row.split("|")[2]))
    assert {rule["alert"] for rule in alert_rules()} <= listed
    count = re.search(r"the (\d+) alerts", row)
    assert count is not None and int(count.group(1)) == len(alert_rules())


def test_firing_cases_expect_the_severity_and_annotations() -> None:
    severity = {rule["alert"]: rule["labels"]["severity"] for rule in alert_rules()}
    for case in load_yaml(ALERTS_TEST_YML)["tests"]:
        for check in case.get("alert_rule_test", []):
            for alert in check.get("exp_alerts") or []:
                assert alert["exp_labels"]["severity"] == severity[check["alertname"]]
                assert set(alert["exp_annotations"]) == {"summary", "description"}


def test_grafana_provisioning_points_at_prometheus_and_the_dashboards() -> None:
    datasources = load_yaml(GRAFANA_PROVISIONING / "datasources" / "prometheus.yml")
    (ds,) = datasources["datasources"]
    assert ds["type"] == "prometheus"
    assert ds["url"] == "http://prometheus:9090"
    providers = load_yaml(GRAFANA_PROVISIONING / "dashboards" / "dashboards.yml")
    (provider,) = providers["providers"]
    assert provider["type"] == "file"
    assert provider["options"]["path"] == "/var/lib/grafana/dashboards"
    # the dashboard's ${DS} variable defaults to the provisioned datasource
    (variable,) = [v for v in dashboard()["templating"]["list"] if v["name"] == "DS"]
    assert variable["current"]["value"] == ds["uid"]


def test_dashboard_is_well_formed() -> None:
    dash = dashboard()
    assert dash["uid"] == "vvp-edge"
    assert dash["schemaVersion"] >= 36
    panels = list(dashboard_panels())
    ids = [p["id"] for p in panels]
    assert len(ids) == len(set(ids)), "duplicate panel ids"
    titles = {p["title"] for p in panels}
    assert {
        "Calls/s by outcome",
        "Answer codes",
        "Decision latency",
        "Verifier latency",
        "Verifier failures by kind",
        "Kamailio fallbacks by cause",
        "Policy reload",
        "Active policy",
        "Transactions in use",
        "Admission control",
    } <= titles
    for panel in panels:
        if panel["type"] == "row":
            continue
        assert panel["datasource"] == {"type": "prometheus", "uid": "${DS}"}, panel["title"]
        refids = [t["refId"] for t in panel["targets"]]
        assert len(refids) == len(set(refids)), f"{panel['title']}: duplicate refIds"
        for target in panel["targets"]:
            assert target["datasource"] == panel["datasource"], panel["title"]
            assert target["expr"].strip(), panel["title"]


# ----------------------------------------------------------------------- metric names


def test_known_metric_names_come_from_the_sources() -> None:
    known = known_metric_names()
    # spot checks of each expansion rule against the documented exposition
    assert {
        "vvp_helper_decisions_total",
        "vvp_helper_decisions_created",
        "vvp_helper_decision_duration_seconds_bucket",
        "vvp_helper_decision_duration_seconds_count",
        "vvp_helper_requests_in_flight",
        "vvp_helper_policy_info",
        "vvp_helper_build_info",
        "kamailio_script_vvp_invites",
        "kamailio_script_vvp_fallbacks",
        "kamailio_vvp_replies_total",
        "kamailio_vvp_helper_failures_total",
    } <= known
    assert "vvp_helper_decisions_total_total" not in known
    assert "vvp_helper_decision_duration_seconds" not in known  # histograms: no bare name


@pytest.mark.parametrize(
    ("expr", "names"),
    [
        ("up", {"up"}),
        ('up{job="vvp-helper"} == 0', {"up"}),
        (
            'sum by (code, source) (rate(kamailio_vvp_replies_total{code=~"4.."}[5m]))',
            {"kamailio_vvp_replies_total"},
        ),
        (
            "histogram_quantile(0.99, sum by (le) (rate(foo_seconds_bucket[$__rate_interval])))",
            {"foo_seconds_bucket"},
        ),
        ("a_total / on(instance) group_left(version) b_info", {"a_total", "b_info"}),
        ("sum(x offset 1m) > bool 1e3 unless y[5m:30s]", {"x", "y"}),
        ("2*x+1e-3-y*0x1f/1h", {"x", "y"}),
        ('time() - ts_seconds{sha256="abc rate"}', {"ts_seconds"}),
        ("max without (kind) (irate(m:recorded:rate5m[1m]))", {"m:recorded:rate5m"}),
    ],
)
def test_promql_metric_name_extraction(expr: str, names: set[str]) -> None:
    assert promql_metric_names(expr) == names


def test_alert_expressions_use_only_exported_metrics() -> None:
    known = known_metric_names()
    for rule in alert_rules():
        used = promql_metric_names(rule["expr"])
        assert used, f"{rule['alert']}: no metric found in {rule['expr']!r}"
        unknown = used - known
        assert not unknown, f"alert {rule['alert']} uses unknown metrics {sorted(unknown)}"


def test_dashboard_expressions_use_only_exported_metrics() -> None:
    known = known_metric_names()
    exprs = dashboard_exprs()
    assert exprs
    for title, expr in exprs:
        used = promql_metric_names(expr)
        assert used, f"panel {title!r}: no metric found in {expr!r}"
        unknown = used - known
        assert not unknown, f"panel {title!r} uses unknown metrics {sorted(unknown)}"
