"""The walk-forward backtest: every trained week side by side, the spread of its metrics, a plot.

Plain Python (no Dagster): the `backtest_summary` asset gathers the weeks from the ledger and
calls these. Kept out of ``core/`` on purpose: it summarizes runs and decides nothing about them,
so editing it must not change the code version that train run ids hash.
"""

from __future__ import annotations

import base64
import statistics
from datetime import datetime
from html import escape

from model_factory.contracts import BacktestSummary, BacktestWeek, MetricSpread

METRICS = ("roc_auc", "pr_auc", "brier")
LOWER_IS_BETTER = frozenset({"brier"})
_BARS = "▁▂▃▄▅▆▇█"
_COLOURS = {"roc_auc": "#1f77b4", "pr_auc": "#ff7f0e", "brier": "#7f7f7f"}


def metric_spread(weeks: list[BacktestWeek], metric: str) -> MetricSpread:
    """Min, max, mean, population std, and the best and worst week of one metric."""
    points = [
        (w.partition_key, getattr(w, metric)) for w in weeks if getattr(w, metric) is not None
    ]
    if not points:
        return MetricSpread(
            metric=metric,
            weeks=0,
            min=None,
            max=None,
            mean=None,
            std=None,
            worst_week=None,
            best_week=None,
        )
    values = [v for _, v in points]
    low = min(points, key=lambda p: p[1])[0]
    high = max(points, key=lambda p: p[1])[0]
    best, worst = (low, high) if metric in LOWER_IS_BETTER else (high, low)
    return MetricSpread(
        metric=metric,
        weeks=len(values),
        min=min(values),
        max=max(values),
        mean=statistics.fmean(values),
        std=statistics.pstdev(values),
        worst_week=worst,
        best_week=best,
    )


def summarize(
    weeks: list[BacktestWeek],
    created_at: datetime | None = None,
    *,
    model_family: str | None = None,
    config_hash: str | None = None,
    other_reports: int = 0,
) -> BacktestSummary:
    ordered = sorted(weeks, key=lambda w: w.partition_key)
    return BacktestSummary(
        weeks=ordered,
        spread=[metric_spread(ordered, m) for m in METRICS],
        pass_weeks=sum(w.gate_status == "PASS" for w in ordered),
        fail_weeks=sum(w.gate_status == "FAIL" for w in ordered),
        model_family=model_family,
        config_hash=config_hash,
        other_reports=other_reports,
        created_at_utc=created_at,
    )


def sparkline(values: list[float | None]) -> str:
    """One block character per value, scaled between the smallest and largest ('·' if none)."""
    present = [v for v in values if v is not None]
    if not present:
        return ""
    low, high = min(present), max(present)
    span = high - low or 1.0
    return "".join(
        "·" if v is None else _BARS[round((v - low) / span * (len(_BARS) - 1))] for v in values
    )


def _fmt(value: float | None) -> str:
    return "–" if value is None else f"{value:.4f}"


def _int(value: int | None) -> str:
    return "–" if value is None else str(value)


def weeks_table(summary: BacktestSummary) -> str:
    """Markdown: one row per week, the reviewer's first look."""
    rows = [
        "| week | gate | ROC-AUC | PR-AUC | Brier | positives | test rows | bundle | train run |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for w in summary.weeks:
        gate = {"PASS": "PASS", "FAIL": "**FAIL**"}.get(w.gate_status or "", "–")
        rows.append(
            f"| {w.partition_key} | {gate} | {_fmt(w.roc_auc)} | {_fmt(w.pr_auc)} | "
            f"{_fmt(w.brier)} | {_int(w.test_positives)} | {_int(w.test_rows)} | "
            f"{w.bundle_id or '–'} | {w.train_run_id or '–'} |"
        )
    return "\n".join(rows)


def spread_table(summary: BacktestSummary) -> str:
    """Markdown: per metric its range, mean, std, best and worst week, and a sparkline."""
    rows = [
        "| metric | weeks | min | max | mean | std | best week | worst week | over weeks |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for s in summary.spread:
        line = sparkline([getattr(w, s.metric) for w in summary.weeks])
        rows.append(
            f"| {s.metric} | {s.weeks} | {_fmt(s.min)} | {_fmt(s.max)} | {_fmt(s.mean)} | "
            f"{_fmt(s.std)} | {s.best_week or '–'} | {s.worst_week or '–'} | {line} |"
        )
    return "\n".join(rows)


def plot_svg(summary: BacktestSummary, width: int = 760) -> bytes:
    """Test metrics over weeks: ROC-AUC and PR-AUC on [0, 1] with each gate verdict marked on the
    ROC-AUC point, and Brier below on its own scale (it lives near zero)."""
    left, right, top = 56, 150, 26
    plot_w = width - left - right
    panels = ((("roc_auc", "pr_auc"), 0.0, 1.0, 190), (("brier",), 0.0, None, 90))
    n = len(summary.weeks)

    def x(i: int) -> float:
        return left + (plot_w / 2 if n == 1 else 14 + i * (plot_w - 28) / (n - 1))

    out = [
        f'<text x="{left}" y="16" font-size="13">Backtest: test metrics per week '
        f"({summary.pass_weeks} PASS, {summary.fail_weeks} FAIL)</text>"
    ]
    y0, legend = top, 0
    for metrics, low, high, height in panels:
        values = [
            getattr(w, m) for w in summary.weeks for m in metrics if getattr(w, m) is not None
        ]
        if high is None:
            high = max(values, default=0.0) * 1.25 or 1.0

        def y(v: float, y0=y0, low=low, high=high, height=height) -> float:
            return y0 + (1 - (min(max(v, low), high) - low) / (high - low)) * height

        for k in range(5):
            tick = low + (high - low) * k / 4
            out.append(
                f'<line x1="{left}" x2="{left + plot_w}" y1="{y(tick):.1f}" y2="{y(tick):.1f}" '
                f'stroke="#ddd"/><text x="{left - 8}" y="{y(tick) + 4:.1f}" '
                f'text-anchor="end">{tick:.3g}</text>'
            )
        for metric in metrics:
            colour = _COLOURS[metric]
            points = [
                (x(i), y(getattr(w, metric)))
                for i, w in enumerate(summary.weeks)
                if getattr(w, metric) is not None
            ]
            if len(points) > 1:
                path = " ".join(f"{px:.1f},{py:.1f}" for px, py in points)
                out.append(
                    f'<polyline points="{path}" fill="none" stroke="{colour}" stroke-width="2"/>'
                )
            out += [
                f'<circle cx="{px:.1f}" cy="{py:.1f}" r="2.5" fill="{colour}"/>'
                for px, py in points
            ]
            ly = top + 10 + 18 * legend
            legend += 1
            out.append(
                f'<line x1="{left + plot_w + 16}" x2="{left + plot_w + 36}" y1="{ly}" y2="{ly}" '
                f'stroke="{colour}" stroke-width="2"/><text x="{left + plot_w + 42}" '
                f'y="{ly + 4}">{metric}</text>'
            )
        if "roc_auc" in metrics:  # the verdict sits on the ROC-AUC point
            for i, w in enumerate(summary.weeks):
                if w.gate_status and w.roc_auc is not None:
                    colour = "#2ca02c" if w.gate_status == "PASS" else "#d62728"
                    out.append(
                        f'<circle cx="{x(i):.1f}" cy="{y(w.roc_auc):.1f}" r="5" fill="none" '
                        f'stroke="{colour}" stroke-width="2"><title>{w.partition_key} '
                        f"{w.gate_status}</title></circle>"
                    )
        y0 += height + 36
    for k, (label, colour) in enumerate((("gate PASS", "#2ca02c"), ("gate FAIL", "#d62728"))):
        ly = top + 10 + 18 * (legend + k) + 8
        out.append(
            f'<circle cx="{left + plot_w + 26}" cy="{ly}" r="5" fill="none" stroke="{colour}" '
            f'stroke-width="2"/><text x="{left + plot_w + 42}" y="{ly + 4}">{label}</text>'
        )
    axis = y0 - 36
    for i, w in enumerate(summary.weeks):
        out.append(
            f'<text x="{x(i):.1f}" y="{axis + 14}" text-anchor="end" '
            f'transform="rotate(-35 {x(i):.1f} {axis + 14})">{escape(w.partition_key)}</text>'
        )
    height = axis + 70
    head = (
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" font-family="sans-serif" font-size="11">'
        f'<rect width="{width}" height="{height}" fill="white"/>'
    )
    return "\n".join([head, *out, "</svg>"]).encode()


def plot_markdown(svg: bytes) -> str:
    """The plot inline in Markdown (Dagster's UI renders data-URI images)."""
    return f"![test metrics per week](data:image/svg+xml;base64,{base64.b64encode(svg).decode()})"
