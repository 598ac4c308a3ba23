#!/usr/bin/env python3
"""Draw the vvp-edge dashboard's graphs for a time range into one PNG, without Grafana.

Runs the PromQL of the dashboard's time-series panels (docker/monitoring/grafana/
dashboards/vvp-edge.json, the panel targets' `expr`, so the picture matches the
dashboard) against Prometheus' range-query API and draws one line chart per panel:

    python scripts/render_panels.py --prometheus http://127.0.0.1:9090 \\
        --start 1700000000 --end 1700000600 --out load-run.png
    python scripts/render_panels.py --last 900 --out last-15-minutes.png
    python scripts/render_panels.py --last 600 --panel "Decision latency" --out p.png

Grafana variables are replaced as Grafana would: $__rate_interval = max(step + scrape
interval, 4 x scrape interval), $__interval = step, $__range = end - start. Exits 1 (the
PNG is still written) if a query failed, 2 on bad arguments or an unusable dashboard.
Needs matplotlib; uses only the standard library otherwise.
"""

from __future__ import annotations

import argparse
import json
import math
import re
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
DEFAULT_DASHBOARD = REPO / "docker" / "monitoring" / "grafana" / "dashboards" / "vvp-edge.json"

#: Prometheus refuses more than 11,000 points per series; stay well below.
MAX_POINTS = 1500

UNIT_LABELS = {
    "s": "seconds",
    "ms": "milliseconds",
    "reqps": "per second",
    "ops": "per second",
    "percentunit": "ratio",
    "short": "",
}


@dataclass
class Series:
    label: str
    times: list[float]
    values: list[float]


@dataclass
class Panel:
    title: str
    unit: str
    exprs: list[tuple[str, str]]  # (expr, legendFormat)
    thresholds: list[float] = field(default_factory=list)  # the panel's threshold steps
    series: list[Series] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)


def load_panels(path: Path, titles: list[str]) -> list[Panel]:
    """The dashboard's time-series panels (all, or those titled in `titles`, in that order)."""
    dash = json.loads(path.read_text(encoding="utf-8"))

    def walk(panels: list[dict[str, Any]]) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        for p in panels:
            out.append(p)
            out.extend(walk(p.get("panels", [])))
        return out

    def defaults(p: dict[str, Any]) -> dict[str, Any]:
        d: dict[str, Any] = p.get("fieldConfig", {}).get("defaults", {})
        return d

    found = [
        Panel(
            title=p.get("title", "?"),
            unit=defaults(p).get("unit", ""),
            thresholds=[
                float(step["value"])
                for step in defaults(p).get("thresholds", {}).get("steps", [])
                if step.get("value") is not None
            ],
            exprs=[
                (t["expr"], t.get("legendFormat", ""))
                for t in p.get("targets", [])
                if t.get("expr") and not t.get("hide")
            ],
        )
        for p in walk(dash.get("panels", []))
        if p.get("type") in ("timeseries", "graph")
    ]
    if not titles:
        return found
    by_title = {p.title.lower(): p for p in found}
    missing = [t for t in titles if t.lower() not in by_title]
    if missing:
        raise LookupError(
            f"no time-series panel titled {missing} in {path}; "
            f"there are: {[p.title for p in found]}"
        )
    return [by_title[t.lower()] for t in titles]


def grafana_vars(expr: str, step: float, scrape: float, start: float, end: float) -> str:
    rate_interval = max(step + scrape, 4 * scrape)
    values = {
        "__rate_interval": f"{math.ceil(rate_interval)}s",
        "__interval": f"{math.ceil(step)}s",
        "__range": f"{math.ceil(end - start)}s",
        "__range_s": f"{math.ceil(end - start)}",
        "__interval_ms": f"{math.ceil(step * 1000)}",
    }

    def sub(m: re.Match[str]) -> str:
        name = m.group(1) or m.group(2)
        if name not in values:
            raise ValueError(f"unsupported dashboard variable ${name}")
        return values[name]

    return re.sub(r"\$\{(\w+)\}|\$(\w+)", sub, expr)


def legend(fmt: str, labels: dict[str, str]) -> str:
    if fmt.strip():
        return re.sub(r"\{\{\s*(\w+)\s*\}\}", lambda m: labels.get(m.group(1), ""), fmt)
    name = labels.get("__name__", "")
    rest = ", ".join(f'{k}="{v}"' for k, v in sorted(labels.items()) if k != "__name__")
    return f"{name}{{{rest}}}" if rest else (name or "value")


def query_range(base: str, expr: str, start: float, end: float, step: float) -> list[Any]:
    params = urllib.parse.urlencode(
        {"query": expr, "start": f"{start:.3f}", "end": f"{end:.3f}", "step": f"{step:g}"}
    )
    url = f"{base.rstrip('/')}/api/v1/query_range?{params}"
    try:
        with urllib.request.urlopen(url, timeout=30) as resp:
            body = json.load(resp)
    except urllib.error.HTTPError as exc:  # Prometheus explains 400/422 in the body
        try:
            body = json.load(exc)
        except ValueError:
            raise RuntimeError(f"HTTP {exc.code} from Prometheus") from exc
    if body.get("status") != "success":
        raise RuntimeError(f"{body.get('errorType', 'error')}: {body.get('error', body)}")
    data = body["data"]
    if data.get("resultType") != "matrix":
        raise RuntimeError(f"expected a matrix, got {data.get('resultType')}")
    result: list[Any] = data["result"]
    return result


def fetch(panel: Panel, args: argparse.Namespace, step: float) -> None:
    for expr, fmt in panel.exprs:
        promql = expr
        try:
            promql = grafana_vars(expr, step, args.scrape_interval, args.start, args.end)
            result = query_range(args.prometheus, promql, args.start, args.end, step)
        except (OSError, RuntimeError, ValueError) as exc:
            panel.errors.append(f"{promql}: {exc}")
            print(f"render_panels: {panel.title}: {promql}: {exc}", file=sys.stderr)
            continue
        for item in result:
            points = item.get("values", [])
            panel.series.append(
                Series(
                    label=legend(fmt, item.get("metric", {})),
                    times=[float(t) - args.start for t, _ in points],
                    values=[float(v) for _, v in points],  # "NaN", "+Inf" parse too
                )
            )


def draw(panels: list[Panel], args: argparse.Namespace, step: float) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cols = max(1, min(args.columns, len(panels)))
    rows = math.ceil(len(panels) / cols)
    fig, axes = plt.subplots(
        rows, cols, figsize=(7.5 * cols, 3.8 * rows), squeeze=False, layout="constrained"
    )
    span = args.end - args.start
    for ax, panel in zip(axes.flat, panels, strict=False):
        ax.set_title(panel.title, fontsize=11, loc="left")
        ax.set_xlim(0, span)
        ax.grid(True, alpha=0.3)
        ax.set_xlabel("seconds since start")
        if UNIT_LABELS.get(panel.unit, panel.unit):
            ax.set_ylabel(UNIT_LABELS.get(panel.unit, panel.unit))
        for s in sorted(panel.series, key=lambda s: s.label):
            ax.plot(s.times, s.values, label=s.label, linewidth=1.2)
        for threshold in panel.thresholds:
            ax.axhline(threshold, color="red", linewidth=0.8, linestyle="--", alpha=0.6)
        if panel.series:
            ax.legend(fontsize=7, loc="upper left", ncol=2 if len(panel.series) > 6 else 1)
        message = "; ".join(panel.errors) if panel.errors else "" if panel.series else "no data"
        if message:
            ax.text(
                0.5, 0.5, message[:300], transform=ax.transAxes, ha="center", va="center",
                wrap=True, fontsize=8, color="red" if panel.errors else "gray",
            )  # fmt: skip
    for ax in list(axes.flat)[len(panels) :]:
        ax.set_visible(False)
    start = datetime.fromtimestamp(args.start, UTC).strftime("%Y-%m-%d %H:%M:%S")
    end = datetime.fromtimestamp(args.end, UTC).strftime("%H:%M:%S")
    fig.suptitle(
        f"vvp-edge  {start} - {end} UTC  ({span:.0f} s, step {step:g} s)  {args.prometheus}",
        fontsize=12,
    )
    fig.savefig(args.out, dpi=args.dpi)
    plt.close(fig)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description="Render the vvp-edge dashboard's graphs from Prometheus into one PNG.",
    )
    p.add_argument("--prometheus", default="http://127.0.0.1:9090", help="Prometheus base URL")
    p.add_argument("--start", type=float, help="range start, UNIX seconds")
    p.add_argument("--end", type=float, help="range end, UNIX seconds (default: now)")
    p.add_argument("--last", type=float, help="instead of --start: the last N seconds to --end")
    p.add_argument("--out", required=True, type=Path, help="PNG file to write")
    p.add_argument("--step", type=float, help="query resolution, seconds (default: auto)")
    p.add_argument(
        "--scrape-interval", type=float, default=5.0,
        help="Prometheus scrape interval, seconds, for $__rate_interval (default 5)",
    )  # fmt: skip
    p.add_argument(
        "--panel", action="append", default=[], metavar="TITLE",
        help="only this panel (repeatable; default: every time-series panel)",
    )  # fmt: skip
    p.add_argument("--dashboard", type=Path, default=DEFAULT_DASHBOARD, help="dashboard JSON")
    p.add_argument("--columns", type=int, default=2, help="charts per row (default 2)")
    p.add_argument("--dpi", type=int, default=100)
    args = p.parse_args(argv)
    if args.end is None:
        args.end = time.time()
    if args.last is not None:
        if args.start is not None:
            p.error("give --start or --last, not both")
        args.start = args.end - args.last
    if args.start is None:
        p.error("--start (or --last) is required")
    if args.end <= args.start:
        p.error("--end must be after --start")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        panels = load_panels(args.dashboard, args.panel)
    except LookupError as exc:
        print(f"render_panels: {exc.args[0]}", file=sys.stderr)
        return 2
    except (OSError, ValueError) as exc:
        print(f"render_panels: cannot read {args.dashboard}: {exc}", file=sys.stderr)
        return 2
    if not panels:
        print(f"render_panels: no time-series panels in {args.dashboard}", file=sys.stderr)
        return 2
    span = args.end - args.start
    step = args.step or max(1.0, math.ceil(span / MAX_POINTS))
    for panel in panels:
        fetch(panel, args, step)
    draw(panels, args, step)
    failed = sum(bool(p.errors) for p in panels)
    points = sum(len(s.values) for p in panels for s in p.series)
    print(f"{args.out}: {len(panels)} panels, {points} points, {failed} with failed queries")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
