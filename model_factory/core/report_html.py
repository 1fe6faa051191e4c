"""A self-contained HTML view of an evaluation report: inline SVG plots and tables, no network.

The view is a pure function of the report (and, optionally, earlier weeks' reports), so the
per-week page stored with the report is as reproducible as the report itself. Volatile numbers
(latency, timings) are shown only when asked for, in views that are not digest-bound.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from html import escape

from model_factory.contracts import (
    ArtifactRef,
    CalibrationBin,
    ConfidenceInterval,
    EvaluationReport,
    MetricSet,
    OperatingMetrics,
    PromotionReadiness,
)
from model_factory.core.storage import ArtifactStore
from model_factory.errors import ModelFactoryError

COLORS = {
    "test": "#1f5fa8",
    "val": "#d9822b",
    "pos": "#c0392b",
    "neg": "#1f5fa8",
    "grid": "#e3e6ea",
    "axis": "#5b6470",
    "band": "#1f5fa833",
    "ideal": "#9aa3ad",
}


def _f(v: float | None, digits: int = 4) -> str:
    return "–" if v is None else f"{v:.{digits}f}"


def _ci(ci: ConfidenceInterval | None, digits: int = 4) -> str:
    return "" if ci is None else f"[{ci.lower:.{digits}f}, {ci.upper:.{digits}f}]"


def _pct(v: float | None, digits: int = 1) -> str:
    return "–" if v is None else f"{100 * v:.{digits}f}%"


class _Plot:
    """A small SVG chart: linear or log10 axes, lines, points, bars, bands, legend."""

    def __init__(
        self,
        title: str,
        x_label: str,
        y_label: str,
        x_range: tuple[float, float],
        y_range: tuple[float, float],
        *,
        log_x: bool = False,
        log_y: bool = False,
        width: int = 420,
        height: int = 300,
        x_ticks: Sequence[tuple[float, str]] = (),
        y_ticks: Sequence[tuple[float, str]] = (),
        left: int = 56,
        legend_at: str = "top-right",
    ):
        """Log axes take their range as powers of ten; ticks default to six even ones."""
        self.title, self.x_label, self.y_label = title, x_label, y_label
        self.x0, self.x1 = x_range
        self.y0, self.y1 = y_range
        self.log_x, self.log_y = log_x, log_y
        self.w, self.h = width, height
        self.left, self.right, self.top, self.bottom = left, 14, 30, 44
        self.x_ticks, self.y_ticks = list(x_ticks), list(y_ticks)
        self.legend_at = legend_at
        self.parts: list[str] = []
        self.legend: list[tuple[str, str, bool]] = []

    @staticmethod
    def _scale(v: float, lo: float, hi: float, log: bool) -> float:
        if log:
            v = math.log10(max(v, 10**lo))
        return (v - lo) / ((hi - lo) or 1)

    def _tx(self, x: float) -> float:
        return self.left + self._scale(x, self.x0, self.x1, self.log_x) * (
            self.w - self.left - self.right
        )

    def _ty(self, y: float) -> float:
        return (
            self.h
            - self.bottom
            - self._scale(y, self.y0, self.y1, self.log_y) * (self.h - self.top - self.bottom)
        )

    def line(
        self,
        xs: Sequence[float],
        ys: Sequence[float],
        color: str,
        label: str | None = None,
        dashed: bool = False,
        width: float = 2.0,
    ) -> None:
        pts = " ".join(f"{self._tx(x):.1f},{self._ty(y):.1f}" for x, y in zip(xs, ys, strict=True))
        dash = ' stroke-dasharray="5,4"' if dashed else ""
        self.parts.append(
            f'<polyline class="series" points="{pts}" fill="none" stroke="{color}" '
            f'stroke-width="{width}"{dash}/>'
        )
        if label:
            self.legend.append((label, color, dashed))

    def points(
        self,
        xs: Sequence[float],
        ys: Sequence[float],
        color: str,
        label: str | None = None,
        radius: float = 3.5,
        titles: Sequence[str] | None = None,
    ) -> None:
        for i, (x, y) in enumerate(zip(xs, ys, strict=True)):
            tip = f"<title>{escape(titles[i])}</title>" if titles else ""
            self.parts.append(
                f'<circle cx="{self._tx(x):.1f}" cy="{self._ty(y):.1f}" r="{radius}" '
                f'fill="{color}" fill-opacity="0.85">{tip}</circle>'
            )
        if label:
            self.legend.append((label, color, False))

    def band(
        self, xs: Sequence[float], lo: Sequence[float], hi: Sequence[float], color: str
    ) -> None:
        upper = [f"{self._tx(x):.1f},{self._ty(y):.1f}" for x, y in zip(xs, hi, strict=True)]
        lower = [f"{self._tx(x):.1f},{self._ty(y):.1f}" for x, y in zip(xs, lo, strict=True)][::-1]
        self.parts.append(
            f'<polygon points="{" ".join(upper + lower)}" fill="{color}" stroke="none"/>'
        )

    def bars(
        self,
        lefts: Sequence[float],
        rights: Sequence[float],
        heights: Sequence[float],
        color: str,
        label: str | None = None,
        opacity: float = 0.55,
    ) -> None:
        """Vertical bars from the x axis."""
        for a, b, v in zip(lefts, rights, heights, strict=True):
            x, x2, y = self._tx(a), self._tx(b), self._ty(v)
            self.parts.append(
                f'<rect x="{x:.1f}" y="{y:.1f}" width="{max(x2 - x - 1, 0.5):.1f}" '
                f'height="{max(self._ty(self.y0) - y, 0):.1f}" fill="{color}" '
                f'fill-opacity="{opacity}"/>'
            )
        if label:
            self.legend.append((label, color, False))

    def hbars(
        self, rows: Sequence[float], lengths: Sequence[float], color: str, opacity: float = 0.7
    ) -> None:
        """Horizontal bars from the y axis, one per row position (rows 0.. from the top)."""
        for r, v in zip(rows, lengths, strict=True):
            y, y2 = self._ty(r + 0.15), self._ty(r + 0.85)
            self.parts.append(
                f'<rect x="{self.left}" y="{min(y, y2):.1f}" '
                f'width="{max(self._tx(v) - self.left, 0.5):.1f}" '
                f'height="{abs(y2 - y):.1f}" fill="{color}" fill-opacity="{opacity}"/>'
            )

    def text(self, x: float, y: float, s: str, anchor: str = "start") -> None:
        self.parts.append(
            f'<text x="{self._tx(x):.1f}" y="{self._ty(y):.1f}" font-size="10" '
            f'text-anchor="{anchor}" fill="#333">{escape(s)}</text>'
        )

    def _even(self, lo: float, hi: float, log: bool) -> list[tuple[float, str]]:
        if log:
            return [(10.0**e, f"1e{e}") for e in range(math.ceil(lo), math.floor(hi) + 1)]
        return [(lo + i * (hi - lo) / 5, _tick(lo + i * (hi - lo) / 5)) for i in range(6)]

    def _ticks(self) -> list[str]:
        out = []
        for x, label in self.x_ticks or self._even(self.x0, self.x1, self.log_x):
            px = self._tx(x)
            out.append(
                f'<line x1="{px:.1f}" y1="{self.top}" x2="{px:.1f}" y2="{self.h - self.bottom}" '
                f'stroke="{COLORS["grid"]}"/>'
            )
            out.append(
                f'<text x="{px:.1f}" y="{self.h - self.bottom + 14}" font-size="10" '
                f'text-anchor="middle" fill="{COLORS["axis"]}">{escape(label)}</text>'
            )
        for y, label in self.y_ticks or self._even(self.y0, self.y1, self.log_y):
            py = self._ty(y)
            out.append(
                f'<line x1="{self.left}" y1="{py:.1f}" x2="{self.w - self.right}" y2="{py:.1f}" '
                f'stroke="{COLORS["grid"]}"/>'
            )
            out.append(
                f'<text x="{self.left - 5}" y="{py + 3:.1f}" font-size="10" text-anchor="end" '
                f'fill="{COLORS["axis"]}">{escape(label)}</text>'
            )
        return out

    def svg(self, plot_id: str) -> str:
        legend = []
        for i, (label, color, dashed) in enumerate(self.legend):
            y = (
                self.top + 10 + 14 * i
                if self.legend_at.startswith("top")
                else self.h - self.bottom - 10 - 14 * (len(self.legend) - 1 - i)
            )
            x = self.w - self.right - 170 if self.legend_at.endswith("right") else self.left + 10
            dash = ' stroke-dasharray="5,4"' if dashed else ""
            legend.append(
                f'<line x1="{x}" y1="{y}" x2="{x + 18}" y2="{y}" stroke="{color}" '
                f'stroke-width="3"{dash}/><text x="{x + 22}" y="{y + 3}" font-size="10" '
                f'fill="#333">{escape(label)}</text>'
            )
        frame = (
            f'<rect x="{self.left}" y="{self.top}" width="{self.w - self.left - self.right}" '
            f'height="{self.h - self.top - self.bottom}" fill="none" stroke="{COLORS["axis"]}"/>'
        )
        mid_y = (self.top + self.h - self.bottom) / 2
        return (
            f'<svg id="{plot_id}" class="plot" xmlns="http://www.w3.org/2000/svg" width="{self.w}" '
            f'height="{self.h}" viewBox="0 0 {self.w} {self.h}" role="img" '
            f'aria-label="{escape(self.title)}">'
            f'<text x="{self.w / 2}" y="16" font-size="13" font-weight="600" text-anchor="middle" '
            f'fill="#222">{escape(self.title)}</text>'
            + "".join(self._ticks())
            + frame
            + "".join(self.parts)
            + "".join(legend)
            + f'<text x="{(self.left + self.w - self.right) / 2}" y="{self.h - 8}" font-size="11" '
            f'text-anchor="middle" fill="#333">{escape(self.x_label)}</text>'
            f'<text x="12" y="{mid_y}" font-size="11" text-anchor="middle" fill="#333" '
            f'transform="rotate(-90 12 {mid_y})">{escape(self.y_label)}</text></svg>'
        )


def _tick(v: float) -> str:
    return f"{v:.3g}" if abs(v) < 1000 else f"{v:.0f}"


# ------------------------------------------------------------------------------------------ plots


def roc_plot(report: EvaluationReport) -> str:
    p = _Plot(
        "ROC curve",
        "false positive rate",
        "true positive rate",
        (0, 1),
        (0, 1),
        legend_at="bottom-right",
    )
    p.line([0, 1], [0, 1], COLORS["ideal"], dashed=True, width=1)
    for split, dashed in (("val", True), ("test", False)):
        if split in report.curves:
            c, m = report.curves[split].roc, report.metrics[split]
            p.line(c.x, c.y, COLORS[split], f"{split} AUC {_f(m.roc_auc, 3)}", dashed=dashed)
    return p.svg("plot-roc")


def pr_plot(report: EvaluationReport) -> str:
    p = _Plot("Precision-recall curve", "recall", "precision", (0, 1), (0, 1))
    for split, dashed in (("val", True), ("test", False)):
        if split in report.curves:
            c, m = report.curves[split].pr, report.metrics[split]
            p.line(c.x, c.y, COLORS[split], f"{split} AP {_f(m.pr_auc, 3)}", dashed=dashed)
    marks = [
        (o.name, o.test)
        for o in report.operating_points
        if o.name in ("review", "decline") and o.test is not None and o.test.recall is not None
    ]
    if marks:
        p.points(
            [t.recall for _, t in marks],
            [t.precision for _, t in marks],
            "#2e7d32",
            "policy on test",
            radius=5,
            titles=[f"{n}: precision {t.precision:.3f}, recall {t.recall:.3f}" for n, t in marks],
        )
        for name, t in marks:
            p.text(min(t.recall + 0.02, 0.9), min(t.precision + 0.03, 0.97), name)
    return p.svg("plot-pr")


def _usable(bins: list[CalibrationBin]) -> list[CalibrationBin]:
    return [b for b in bins if b.rows and b.mean_score is not None and b.observed_rate is not None]


def calibration_plot(m: MetricSet) -> str:
    """Observed fraud rate against mean score per bin, on log-log axes (scores sit near 0);
    a bin without frauds is drawn on the floor."""
    floor = 1e-4
    uniform, quantile = _usable(m.calibration), _usable(m.calibration_quantile)
    p = _Plot(
        "Reliability (test)",
        "mean score in bin (log)",
        "observed fraud rate (log)",
        (-4, 0),
        (-4, 0),
        log_x=True,
        log_y=True,
        legend_at="bottom-right",
    )
    p.line([floor, 1], [floor, 1], COLORS["ideal"], "perfect calibration", dashed=True, width=1)

    def xy(bins: list[CalibrationBin]) -> tuple[list[float], list[float]]:
        return (
            [max(b.mean_score or 0.0, floor) for b in bins],
            [max(b.observed_rate or 0.0, floor) for b in bins],
        )

    qx, qy = xy(quantile)
    p.line(qx, qy, COLORS["test"], f"equal-count bins (ECE {_f(m.ece_quantile)})")
    p.points(
        qx,
        qy,
        COLORS["test"],
        titles=[
            f"{b.rows} rows: mean score {b.mean_score:.4g}, observed {b.observed_rate:.4g}"
            for b in quantile
        ],
    )
    ux, uy = xy(uniform)
    p.points(
        ux,
        uy,
        COLORS["val"],
        f"uniform bins (ECE {_f(m.ece)})",
        radius=4.5,
        titles=[
            f"{b.rows} rows in [{b.lower:.1f}, {b.upper:.1f}): observed {b.observed_rate:.4g}"
            for b in uniform
        ],
    )
    return p.svg("plot-calibration")


def score_distribution_plot(report: EvaluationReport) -> str:
    h = report.curves["test"].score_histogram
    pos_total, neg_total = max(sum(h.positives), 1), max(sum(h.negatives), 1)
    pos = [c / pos_total for c in h.positives]
    neg = [c / neg_total for c in h.negatives]
    top = max(pos + neg + [0.01]) * 1.1
    p = _Plot(
        "Score distribution by class (test)",
        "score (log scale)",
        "share of the class",
        (-4.5, 0),
        (0, top),
        log_x=True,
        legend_at="top-left",
    )
    lefts = [max(e, 10**-4.5) for e in h.edges[:-1]]
    p.bars(lefts, h.edges[1:], neg, COLORS["neg"], f"genuine ({sum(h.negatives)})", opacity=0.45)
    p.bars(lefts, h.edges[1:], pos, COLORS["pos"], f"fraud ({sum(h.positives)})", opacity=0.55)
    for o in report.operating_points:
        if o.name in ("review", "decline") and o.threshold is not None and o.threshold > 0:
            p.line([o.threshold, o.threshold], [0, top], "#2e7d32", dashed=True, width=1.5)
            p.text(o.threshold, top * 0.95, o.name, anchor="end")
    return p.svg("plot-scores")


def top_k_plot(report: EvaluationReport) -> str:
    series = [t for t in report.top_k if t.days]
    days = series[0].days if series else []
    p = _Plot(
        "Precision in the top k per day (test)",
        "day (UTC)",
        "precision",
        (0, max(len(days) - 1, 1)),
        (0, 1),
        width=560,
        x_ticks=[(i, d.day[5:]) for i, d in enumerate(days)],
    )
    palette = ["#1f5fa8", "#6a9fd8", "#c0392b", "#e08e85"]
    for i, t in enumerate(series):
        xs = list(range(len(t.days)))
        ys = [d.precision or 0.0 for d in t.days]
        label = f"{t.unit}{' (' + t.entity_column + ')' if t.entity_column else ''} k={t.k}"
        p.line(xs, ys, palette[i % len(palette)], label, dashed=t.unit == "entity")
        p.points(
            xs,
            ys,
            palette[i % len(palette)],
            radius=2.5,
            titles=[f"{d.day}: {d.hits}/{d.flagged}" for d in t.days],
        )
    return p.svg("plot-topk")


def drift_plot(report: EvaluationReport) -> str:
    """PSI of the score and the most drifting features, as horizontal bars."""
    d = report.drift
    # Only measured PSIs are drawn: a bar at 0 would read as "no drift".
    measured = sorted((f for f in d.features if f.psi is not None), key=lambda f: -f.psi)
    rows = [("model score", d.score_psi)] if d.score_psi is not None else []
    rows += [(f.feature.split("__")[-1], f.psi) for f in measured[:10]]
    if not rows:
        return "<p>PSI not measured: the training or the test window has no rows.</p>"
    top = max([0.3] + [v for _, v in rows]) * 1.05
    n = len(rows)
    p = _Plot(
        "Population stability, train vs test",
        "PSI",
        "",
        (0, top),
        (n, 0),
        width=560,
        height=60 + 22 * n,
        left=190,
        y_ticks=[(i + 0.5, name) for i, (name, _) in enumerate(rows)],
    )
    p.hbars([i for i in range(n)], [v for _, v in rows], COLORS["test"])
    for limit, color, label in (
        (0.1, COLORS["val"], "0.1 moderate"),
        (0.25, COLORS["pos"], "0.25 major"),
    ):
        p.line([limit, limit], [0, n], color, label, dashed=True, width=1)
    for i, (_, v) in enumerate(rows):
        p.text(v + top * 0.01, i + 0.7, f"{v:.4f}")
    return p.svg("plot-drift")


def history_plot(history: Sequence[EvaluationReport]) -> str:
    weeks = [r.partition_key for r in history]
    step = max(1, math.ceil(len(weeks) / 8))
    p = _Plot(
        "Test metrics across weeks (95% bootstrap intervals shaded)",
        "week",
        "metric",
        (0, max(len(weeks) - 1, 1)),
        (0, 1),
        width=860,
        x_ticks=[(i, weeks[i]) for i in range(0, len(weeks), step)],
    )
    xs = list(range(len(weeks)))
    for metric, color in (("roc_auc", COLORS["test"]), ("pr_auc", COLORS["pos"])):
        values = [getattr(r.metrics["test"], metric) for r in history]
        cis = [getattr(r.metrics["test"], f"{metric}_ci") for r in history]
        ok = [i for i in xs if values[i] is not None]
        with_ci = [i for i in ok if cis[i] is not None]
        if with_ci:
            p.band(
                with_ci,
                [cis[i].lower for i in with_ci],
                [cis[i].upper for i in with_ci],
                color + "33",
            )
        p.line(ok, [values[i] for i in ok], color, metric)
        p.points(
            ok, [values[i] for i in ok], color, titles=[f"{weeks[i]}: {values[i]:.4f}" for i in ok]
        )
    return p.svg("plot-history")


# ----------------------------------------------------------------------------------------- tables


def _table(
    head: list[str], rows: list[list[str]], cls: str = "", muted: frozenset[int] = frozenset()
) -> str:
    """An HTML table; rows whose index is in ``muted`` are greyed."""
    th = "".join(f"<th>{escape(h)}</th>" for h in head)
    grey = ' class="muted"'
    body = "".join(
        f"<tr{grey if i in muted else ''}>" + "".join(f"<td>{escape(c)}</td>" for c in r) + "</tr>"
        for i, r in enumerate(rows)
    )
    return f'<table class="{cls}"><thead><tr>{th}</tr></thead><tbody>{body}</tbody></table>'


def _om(m: OperatingMetrics | None) -> list[str]:
    if m is None:
        return ["–"] * 5
    return [
        f"{m.alerts} ({_pct(m.alert_rate, 2)}) {_ci_pct(m.alert_rate_ci)}",
        f"{_f(m.precision, 3)} {_ci(m.precision_ci, 3)}",
        f"{_f(m.recall, 3)} {_ci(m.recall_ci, 3)}",
        f"{_f(m.f1, 3)} {_ci(m.f1_ci, 3)}",
        str(m.true_positives),
    ]


def _ci_pct(ci: ConfidenceInterval | None) -> str:
    return "" if ci is None else f"[{_pct(ci.lower, 2)}, {_pct(ci.upper, 2)}]"


def headline_table(report: EvaluationReport) -> str:
    rows = []
    for split in ("val", "test"):
        m = report.metrics.get(split)
        if m is None:
            continue
        rows.append(
            [
                split,
                str(m.rows),
                f"{m.positives} ({_pct(m.positive_rate, 2)})",
                f"{_f(m.roc_auc)} {_ci(m.roc_auc_ci)}",
                _ci(m.roc_auc_delong_ci),
                f"{_f(m.pr_auc)} {_ci(m.pr_auc_ci)}",
                _f(m.brier, 5),
                _f(m.ece, 5),
                _f(m.ece_quantile, 5),
                _f(m.log_loss, 4),
            ]
        )
    return _table(
        [
            "split",
            "rows",
            "positives",
            "ROC-AUC [95% bootstrap]",
            "DeLong",
            "PR-AUC [95% bootstrap]",
            "Brier",
            "ECE uniform bins",
            "ECE equal-count bins",
            "log loss",
        ],
        rows,
    )


def operating_table(report: EvaluationReport) -> str:
    rows = []
    for o in report.operating_points:
        rule = f"{o.rule.basis} {o.rule.target:g}"
        val = o.val
        rows.append(
            [
                o.name,
                rule,
                _f(o.threshold, 5),
                "–" if val is None else f"{_pct(val.alert_rate, 2)} / {_f(val.precision, 3)}",
                *_om(o.test),
            ]
        )
    return _table(
        [
            "point",
            "rule (on val)",
            "threshold",
            "val alert rate / precision",
            "test alerts [CI]",
            "test precision [CI]",
            "test recall [CI]",
            "test F1 [CI]",
            "test true alerts",
        ],
        rows,
    )


def top_k_table(report: EvaluationReport) -> str:
    rows = [
        [
            t.unit + (f" ({t.entity_column})" if t.entity_column else ""),
            str(t.k),
            f"{_f(t.precision, 3)} {_ci(t.precision_ci, 3)}",
            _f(t.recall, 3),
            " ".join(_f(d.precision, 2) for d in t.days),
        ]
        for t in report.top_k
    ]
    return _table(["ranked", "k per day", "precision [Wilson CI]", "recall", "per day"], rows)


def slices_table(report: EvaluationReport) -> str:
    rows, muted = [], set()
    for i, s in enumerate(report.slices):
        if s.status not in ("ok", "single_class"):
            muted.add(i)
        review = s.review
        rows.append(
            [
                s.slice,
                s.segment,
                s.status,
                str(s.rows),
                str(s.positives),
                f"{_f(s.roc_auc, 3)} {_ci(s.roc_auc_ci, 3)}",
                f"{_f(s.pr_auc, 3)} {_ci(s.pr_auc_ci, 3)}",
                _f(s.brier, 5),
                _f(s.ece, 5),
                _f(s.ece_quantile, 5),
                "–" if review is None else f"{_f(review.precision, 3)} / {_f(review.recall, 3)}",
            ]
        )
    return _table(
        [
            "slice",
            "segment",
            "status",
            "rows",
            "positives",
            "ROC-AUC [CI]",
            "PR-AUC [CI]",
            "Brier",
            "ECE uniform",
            "ECE equal-count",
            "review precision / recall",
        ],
        rows,
        muted=frozenset(muted),
    )


def drift_table(report: EvaluationReport) -> str:
    d = report.drift
    rows = [
        [
            f.feature,
            _f(f.psi),
            f.level or "not measured",
            _pct(f.reference_null_share),
            _pct(f.current_null_share),
        ]
        for f in sorted(d.features, key=lambda f: (f.psi is None, -(f.psi or 0.0)))
    ]
    rows.insert(0, ["(model score)", _f(d.score_psi), d.score_level or "not measured", "", ""])
    return _table(["feature", "PSI", "level", "null share train", "null share test"], rows)


def explain_table(report: EvaluationReport) -> str:
    e = report.explainability
    rows = [[a.feature, _f(a.mean_abs_shap, 4), f"{a.gain:.1f}"] for a in e.features]
    return _table(
        [
            f"feature (SHAP on {e.shap_rows} test rows, seed {e.shap_seed})",
            "mean |SHAP| (log-odds)",
            "total gain",
        ],
        rows,
    )


def label_table(report: EvaluationReport) -> str:
    c = report.label_context
    rows = [
        ["label family", c.label_family],
        ["test labels observed before", str(c.test_label_cut)],
        ["train/val labels observed before", str(c.train_label_cut)],
        ["label maturity (days)", str(c.label_maturity_days)],
        ["events without a visible label", c.missing_label],
        ["test rows / positives", f"{c.test_rows} / {c.test_positives}"],
    ]
    rows += [
        [
            f"{s}: labels visible / hidden by the cut / matured share",
            f"{c.labels_visible.get(s, 0)} / {c.labels_hidden_by_cut.get(s, 0)} / "
            f"{_pct(c.matured_share.get(s)) if c.matured_share.get(s) is not None else 'not measured'}",
        ]
        for s in ("train", "val", "test")
    ]
    rows.append(
        ["estimated completeness of the test labels", _pct(c.test_label_completeness_estimate)]
    )
    return _table(["", ""], rows, cls="kv")


def policy_block(report: EvaluationReport) -> str:
    p = report.policy
    notes = "".join(f"<li>{escape(n)}</li>" for n in p.notes)
    return (
        f"<p><b>Review</b> when score &ge; {_f(p.review_threshold, 5)} "
        f"({p.review_rule.basis} {p.review_rule.target:g} on validation); "
        f"<b>decline</b> when score &ge; {_f(p.decline_threshold, 5)} "
        f"({p.decline_rule.basis} {p.decline_rule.target:g} on validation). Thresholds were "
        f"chosen on the validation window only and applied unchanged to test.</p>"
        + (f"<ul>{notes}</ul>" if notes else "")
    )


def timings_table(report: EvaluationReport) -> str:
    rows = [[k, f"{v:.4g}"] for k, v in sorted(report.timings.items())]
    return _table(["measurement (this machine, this run)", "value"], rows, cls="kv")


CSS = """
body{font-family:-apple-system,Segoe UI,Helvetica,Arial,sans-serif;margin:24px;color:#222;max-width:1320px}
h1{font-size:22px;margin-bottom:4px} h2{font-size:17px;margin-top:28px;border-bottom:1px solid #ddd}
.meta{color:#555;font-size:12px} .plots{display:flex;flex-wrap:wrap;gap:12px}
.plot{background:#fff;border:1px solid #e5e5e5;border-radius:4px}
table{border-collapse:collapse;font-size:12px;margin:8px 0} th,td{border:1px solid #ddd;padding:3px 7px}
th{background:#f3f5f7;text-align:left} tr.muted td{color:#999;background:#fafafa}
table.kv td:first-child{color:#555}
"""


def render_report_html(
    report: EvaluationReport,
    history: Sequence[EvaluationReport] = (),
    include_timings: bool = False,
) -> bytes:
    """The report as one HTML page. ``history``: earlier weeks' reports of the same family
    (this week is added); ``include_timings`` shows the volatile latency and timings."""
    weeks = sorted(
        {r.partition_key: r for r in [*history, report]}.values(), key=lambda r: r.partition_key
    )
    test = report.metrics["test"]
    sections = [
        f"<h1>Evaluation report — {escape(report.model_family)}, week {escape(report.partition_key)}</h1>",
        f'<p class="meta">train run {escape(report.train_run_id)} · model sha256 '
        f"{report.model_sha256[:16]}… · frame sha256 {report.frame_sha256[:16]}… · best iteration "
        f"{report.best_iteration} · intervals: {escape(_ci_method(test))}</p>",
        "<h2>Ranking quality</h2>",
        headline_table(report),
        '<div class="plots">',
        roc_plot(report),
        pr_plot(report),
        calibration_plot(test),
        score_distribution_plot(report),
        "</div>",
        "<h2>Decision policy and operating points</h2>",
        policy_block(report),
        operating_table(report),
        "<h2>Precision in the top k per day</h2>",
        top_k_table(report),
        '<div class="plots">',
        top_k_plot(report),
        "</div>",
        "<h2>Slices (test window)</h2>",
        "<p>Segments below the configured minimum rows or positives are listed, greyed, without "
        "metrics.</p>",
        slices_table(report),
        "<h2>Drift: training window vs test window</h2>",
        f"<p>Most drifting: {escape(', '.join(report.drift.top_drifting)) or '–'}</p>",
        '<div class="plots">',
        drift_plot(report),
        "</div>",
        drift_table(report),
        "<h2>Explainability</h2>",
        explain_table(report),
        "<h2>Label context</h2>",
        label_table(report),
    ]
    if len(weeks) > 1:
        sections += [
            "<h2>Across weeks</h2>",
            '<div class="plots">',
            history_plot(weeks),
            "</div>",
            _table(
                ["week", "ROC-AUC [CI]", "PR-AUC [CI]", "Brier", "test positives"],
                [
                    [
                        r.partition_key,
                        f"{_f(r.metrics['test'].roc_auc)} {_ci(r.metrics['test'].roc_auc_ci)}",
                        f"{_f(r.metrics['test'].pr_auc)} {_ci(r.metrics['test'].pr_auc_ci)}",
                        _f(r.metrics["test"].brier, 5),
                        str(r.metrics["test"].positives),
                    ]
                    for r in weeks
                ],
            ),
        ]
    if include_timings and report.timings:
        sections += ["<h2>Latency proxy and timings (volatile)</h2>", timings_table(report)]
    page = (
        '<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">'
        f"<title>Evaluation {escape(report.model_family)} {escape(report.partition_key)}</title>"
        f"<style>{CSS}</style></head><body>{''.join(sections)}</body></html>"
    )
    return page.encode()


def _ci_method(m: MetricSet) -> str:
    ci = m.roc_auc_ci or m.pr_auc_ci
    if ci is None:
        return "none"
    return f"{ci.method}, {ci.resamples} resamples, seed {ci.seed}, level {ci.level:g}"


# --------------------------------------------------------------------------- Markdown for the UI


def _md(head: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    lines += ["| " + " | ".join(c.replace("|", "/") for c in r) + " |" for r in rows]
    return "\n".join(lines)


def markdown_operating_points(report: EvaluationReport) -> str:
    """Operating points (chosen on val, measured on test) as a Markdown table."""
    rows = []
    for o in report.operating_points:
        t = o.test
        rows.append(
            [o.name, f"{o.rule.basis} {o.rule.target:g}", _f(o.threshold, 5)]
            + (
                ["–"] * 4
                if t is None
                else [
                    f"{t.alerts} ({_pct(t.alert_rate, 2)})",
                    f"{t.precision:.3f} {_ci(t.precision_ci, 3)}",
                    f"{_f(t.recall, 3)} {_ci(t.recall_ci, 3)}",
                    f"{_f(t.f1, 3)} {_ci(t.f1_ci, 3)}",
                ]
            )
        )
    return _md(
        [
            "point",
            "rule on val",
            "threshold",
            "test alerts",
            "precision [CI]",
            "recall [CI]",
            "F1 [CI]",
        ],
        rows,
    )


def markdown_slices(report: EvaluationReport) -> str:
    """Slices with counts, status and ranking metrics as a Markdown table."""
    rows = [
        [
            s.slice,
            s.segment,
            s.status,
            str(s.rows),
            str(s.positives),
            f"{_f(s.roc_auc, 3)} {_ci(s.roc_auc_ci, 3)}",
            f"{_f(s.pr_auc, 3)} {_ci(s.pr_auc_ci, 3)}",
            "–" if s.review is None else f"{s.review.precision:.3f} / {_f(s.review.recall, 3)}",
        ]
        for s in report.slices
    ]
    return _md(
        [
            "slice",
            "segment",
            "status",
            "rows",
            "positives",
            "ROC-AUC [CI]",
            "PR-AUC [CI]",
            "review precision / recall",
        ],
        rows,
    )


def headline_metrics(report: EvaluationReport) -> dict[str, float]:
    """Test metrics, interval bounds, policy thresholds and score PSI as plain numbers, each
    absent when undefined: a ROC-AUC of a test week without both classes is not 0, and the
    backtest's spread and plots, reading these, must not count it as one."""
    test = report.metrics["test"]
    out: dict[str, float] = {}
    for metric in ("roc_auc", "pr_auc", "brier", "ece", "ece_quantile", "log_loss"):
        if getattr(test, metric) is not None:
            out[metric] = getattr(test, metric)
    for metric in ("roc_auc", "pr_auc"):
        ci = getattr(test, f"{metric}_ci")
        if ci is not None:
            out |= {f"{metric}_ci_lower": ci.lower, f"{metric}_ci_upper": ci.upper}
    for name in ("review_threshold", "decline_threshold"):
        if getattr(report.policy, name) is not None:
            out[name] = getattr(report.policy, name)
    if report.drift.score_psi is not None:
        out["score_psi"] = report.drift.score_psi
    return out


# How many earlier weeks the report's page shows beside the week.
HISTORY_WEEKS = 52


def earlier_reports(
    refs: Iterable[tuple[str, ArtifactRef]],
    before: str,
    model_family: str,
    weeks: int = HISTORY_WEEKS,
) -> list[EvaluationReport]:
    """The latest report of each week before ``before`` of the same family, oldest first, from
    (partition, ref) pairs listed newest first; reports of an older contract are skipped."""
    found: dict[str, EvaluationReport] = {}
    for partition, ref in refs:
        if partition >= before or partition in found:
            continue
        try:
            doc = ArtifactStore.get_document(ref.uri, EvaluationReport, ref.sha256)
        except ModelFactoryError:
            continue
        if doc.model_family == model_family:
            found[partition] = doc
    return [found[k] for k in sorted(found)[-weeks:]]


# ------------------------------------------------------------------------------ promotion readiness


def render_readiness_html(doc: PromotionReadiness) -> bytes:
    """A bundle's promotion readiness as one HTML page (the evaluation report is written before
    the bundle exists, so this is its own page, referenced by the document and the bundle's
    Dagster metadata). A pure function of the document's deterministic content."""
    rec = doc.recommendation
    share = "" if rec.traffic_share is None else f" at {_pct(rec.traffic_share, 2)} of traffic"
    champion = (
        f"champion {escape(doc.champion.bundle_id)} (week {escape(doc.champion.partition_key)})"
        if doc.champion
        else "no champion"
    )
    sections = [
        f"<h1>Promotion readiness — {escape(doc.model_family)}, week {escape(doc.partition_key)}</h1>",
        f'<p class="meta">bundle {escape(doc.bundle_id)} · train run {escape(doc.train_run_id)} · '
        f"model sha256 {doc.model_sha256[:16]}… · {champion} · {doc.test_rows} test rows, "
        f"{doc.test_positives} frauds, {doc.test_days} days</p>",
        f"<h2>Recommendation: {escape(rec.stage)}{escape(share)}</h2>",
        "<ul>" + "".join(f"<li>{escape(r)}</li>" for r in rec.reasons) + "</ul>",
    ]
    d = doc.decisions
    if d is not None:
        sections += [
            "<h2>Decision changes (each model at its own policy thresholds)</h2>",
            f"<p>Thresholds: candidate review {_f(d.candidate_review_threshold)}, decline "
            f"{_f(d.candidate_decline_threshold)}; champion review {_f(d.champion_review_threshold)}, "
            f"decline {_f(d.champion_decline_threshold)}. Alert overlap {_pct(d.alert_overlap)}, "
            f"decline overlap {_pct(d.decline_overlap)}, newly flagged {_pct(d.newly_flagged_share)} "
            f"of the candidate's alerts, newly cleared {_pct(d.newly_cleared_share)} of the "
            f"champion's, {_pct(d.changed_decision_share, 2)} of transactions change.</p>",
            _table(
                [
                    "day",
                    "rows",
                    "candidate alerts",
                    "champion alerts",
                    "both",
                    "newly flagged",
                    "newly cleared",
                    "candidate declines",
                    "champion declines",
                    "newly declined",
                    "no longer declined",
                ],
                [
                    [
                        x.day,
                        str(x.rows),
                        str(x.candidate_alerts),
                        str(x.champion_alerts),
                        str(x.both_alert),
                        str(x.newly_flagged),
                        str(x.newly_cleared),
                        str(x.candidate_declines),
                        str(x.champion_declines),
                        str(x.newly_declined),
                        str(x.no_longer_declined),
                    ]
                    for x in [*d.days, d.total]
                ],
            ),
        ]
    o = doc.outcomes
    if o is not None:

        def cells(v) -> list[str]:
            return [_f(v.candidate, 2), _f(v.champion, 2), f"{v.delta:+.2f} {_ci(v.delta_ci, 2)}"]

        sections += [
            "<h2>Outcomes at the review threshold</h2>",
            "<p>Mean per test day, candidate minus champion with a paired bootstrap interval "
            "(rows resampled within each day).</p>",
            _table(
                ["outcome", "candidate", "champion", "delta [CI]"],
                [[v.metric, *cells(v)] for v in o.per_day],
            ),
            _table(
                ["day", "frauds", *[f"{m} delta [CI]" for m in [v.metric for v in o.per_day]]],
                [
                    [
                        x.day,
                        str(x.positives),
                        *[f"{v.delta:+.2f} {_ci(v.delta_ci, 2)}" for v in x.outcomes],
                    ]
                    for x in o.days
                ],
            ),
        ]
    a = doc.agreement
    if a is not None:
        sections += [
            "<h2>Score agreement</h2>",
            f"<p>Spearman rank correlation {_f(a.spearman)}; PSI of the candidate's scores "
            f"against the champion's {_f(a.psi)} ({escape(a.psi_level)}, {a.bins} bins).</p>",
        ]
    op = doc.operational
    latency = {None: "not measured", True: "within", False: "over"}[op.latency_within_budget]
    sections += [
        "<h2>Operational limits</h2>",
        _table(
            ["limit", "value"],
            [
                ["review capacity per day", str(op.review_capacity_per_day)],
                [
                    "candidate alerts: peak day / mean per day",
                    f"{op.candidate_alerts_peak_day} / {op.candidate_alerts_mean_per_day:.1f}",
                ],
                [
                    "champion alerts: peak day",
                    "–"
                    if op.champion_alerts_peak_day is None
                    else str(op.champion_alerts_peak_day),
                ],
                ["within capacity at full traffic", "yes" if op.within_review_capacity else "no"],
                [
                    "largest traffic share within capacity",
                    _pct(op.max_traffic_share_within_capacity, 2),
                ],
                [
                    "median single-row latency vs budget",
                    f"{latency} {op.latency_budget_p50_us:g} µs",
                ],
            ],
        ),
    ]
    page = (
        '<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">'
        f"<title>Readiness {escape(doc.model_family)} {escape(doc.partition_key)}</title>"
        f"<style>{CSS}</style></head><body>{''.join(sections)}</body></html>"
    )
    return page.encode()
