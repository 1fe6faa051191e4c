"""Point metrics and curves of a scored split, in NumPy (scikit-learn is the oracle in the tests)."""

from __future__ import annotations

import numpy as np

from model_factory.contracts import (
    CalibrationBin,
    Curve,
    MetricSet,
    ScoreHistogram,
    SplitCurves,
    ThresholdMetrics,
)
from model_factory.core.bootstrap import bootstrap_cis, delong_ci

CURVE_POINTS = 300
# Score histogram: [0, 1e-4) then 40 bins even in log10(score) up to 1 (fraud scores sit near 0).
HISTOGRAM_EDGES = np.r_[0.0, np.logspace(-4, 0, 41)]


def roc_auc(y: np.ndarray, score: np.ndarray) -> float | None:
    """Mann-Whitney AUC with average ranks for tied scores; None with a single class."""
    pos = int(y.sum())
    neg = y.size - pos
    if pos == 0 or neg == 0:
        return None
    _, inverse, counts = np.unique(score, return_inverse=True, return_counts=True)
    upper = np.cumsum(counts)
    avg_rank = upper - (counts - 1) / 2.0  # 1-based average rank of each distinct score
    rank_sum = float(avg_rank[inverse][y == 1].sum())
    return (rank_sum - pos * (pos + 1) / 2.0) / (pos * neg)


def _runs(
    y: np.ndarray, score: np.ndarray, order: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Distinct scores, highest first, with true and false alerts of score >= each.

    ``order``: the rows by descending score, when already known (saves the sort).
    """
    if order is None:
        order = np.argsort(-score, kind="stable")
    s, t = score[order], y[order]
    last = np.r_[np.nonzero(np.diff(s))[0], s.size - 1]
    tp = np.cumsum(t)[last]
    return s[last], tp, (last + 1) - tp


def average_precision(y: np.ndarray, score: np.ndarray) -> float | None:
    """PR-AUC as average precision: sum over distinct thresholds of ΔRecall × Precision."""
    pos = int(y.sum())
    if pos == 0:
        return None
    _, tp, fp = _runs(y, score)
    precision = tp / (tp + fp)
    recall = tp / pos
    return float(np.sum(np.diff(recall, prepend=0.0) * precision))


def ranking(
    y: np.ndarray, score: np.ndarray, order: np.ndarray | None = None
) -> tuple[float | None, float | None]:
    """ROC-AUC (trapezoids over the ROC steps: ties count half) and average precision in one
    pass over the ranked rows; None where a class is missing."""
    pos = int(y.sum())
    neg = int(y.size) - pos
    if pos == 0:
        return None, None
    _, tp, fp = _runs(y, score, order)
    ap = float(np.sum(np.diff(tp / pos, prepend=0.0) * tp / (tp + fp)))
    if neg == 0:
        return None, ap
    tpr, fpr = np.r_[0.0, tp] / pos, np.r_[0.0, fp] / neg
    return float(np.sum(np.diff(fpr) * (tpr[1:] + tpr[:-1]) / 2)), ap


def at_thresholds(
    y: np.ndarray, score: np.ndarray, thresholds: list[float]
) -> list[ThresholdMetrics]:
    """Precision, recall, F1 and alert rate when alerting on score >= threshold (precision 0
    with no alerts; recall and F1 None without positives: not measured, never 0)."""
    pos = int(y.sum())
    out = []
    for th in thresholds:
        alert = score >= th
        n = int(alert.sum())
        tp = int((alert & (y == 1)).sum())
        out.append(
            ThresholdMetrics(
                threshold=th,
                precision=tp / n if n else 0.0,
                recall=tp / pos if pos else None,
                f1=2 * tp / (n + pos) if pos else None,
                alerts=n,
                alert_rate=n / y.size if y.size else 0.0,
            )
        )
    return out


def _bin(
    y: np.ndarray, score: np.ndarray, mask: np.ndarray, lower: float, upper: float
) -> CalibrationBin:
    n = int(mask.sum())
    return CalibrationBin(
        lower=float(lower),
        upper=float(upper),
        rows=n,
        mean_score=float(score[mask].mean()) if n else None,
        observed_rate=float(y[mask].mean()) if n else None,
    )


def calibration(y: np.ndarray, score: np.ndarray, bins: int = 10) -> list[CalibrationBin]:
    """Reliability curve on uniform bins [k/bins, (k+1)/bins), the last closed at 1."""
    edges = np.linspace(0.0, 1.0, bins + 1)
    idx = np.clip(np.digitize(score, edges[1:-1], right=False), 0, bins - 1)
    return [_bin(y, score, idx == b, edges[b], edges[b + 1]) for b in range(bins)]


def calibration_quantile(y: np.ndarray, score: np.ndarray, bins: int = 10) -> list[CalibrationBin]:
    """Reliability curve on equal-count bins of the ranked scores (tied scores share a bin)."""
    if y.size == 0:
        return []
    order = np.argsort(score, kind="stable")
    s = score[order]
    cuts = [s[min(s.size - 1, (s.size * b) // bins)] for b in range(1, bins)]
    edges = np.unique(np.r_[s[0], cuts, s[-1]])
    idx = np.clip(np.searchsorted(edges, score, side="right") - 1, 0, max(edges.size - 2, 0))
    if edges.size == 1:
        return [_bin(y, score, np.ones(y.size, dtype=bool), edges[0], edges[0])]
    return [_bin(y, score, idx == b, edges[b], edges[b + 1]) for b in range(edges.size - 1)]


def ece(bins: list[CalibrationBin], rows: int) -> float | None:
    """Expected calibration error: sum over bins of rows/n x |mean score - observed rate|;
    None without rows."""
    if rows == 0:
        return None
    return float(
        sum(
            b.rows / rows * abs(b.mean_score - b.observed_rate)
            for b in bins
            if b.rows and b.mean_score is not None and b.observed_rate is not None
        )
    )


def metric_set(
    split: str,
    y: np.ndarray,
    score: np.ndarray,
    thresholds: list[float],
    *,
    bins: int = 10,
    resamples: int = 0,
    seed: int = 0,
    level: float = 0.95,
) -> MetricSet:
    """Every point metric of a split; bootstrap intervals too when resamples > 0.

    An empty split has no positive rate, Brier, log loss or ECE (None: not measured, never 0).
    """
    y = y.astype(np.int64)
    clipped = np.clip(score, 1e-15, 1 - 1e-15)
    pos = int(y.sum())
    cis = (
        bootstrap_cis(y, score, resamples=resamples, seed=seed, level=level)
        if resamples > 0
        else {}
    )
    uniform, quantile = calibration(y, score, bins), calibration_quantile(y, score, bins)
    return MetricSet(
        split=split,
        rows=int(y.size),
        positives=pos,
        positive_rate=pos / y.size if y.size else None,
        roc_auc=roc_auc(y, score),
        pr_auc=average_precision(y, score),
        roc_auc_ci=cis.get("roc_auc"),
        pr_auc_ci=cis.get("pr_auc"),
        roc_auc_delong_ci=delong_ci(y, score, level) if y.size else None,
        brier=float(np.mean((score - y) ** 2)) if y.size else None,
        log_loss=float(-np.mean(y * np.log(clipped) + (1 - y) * np.log(1 - clipped)))
        if y.size
        else None,
        ece=ece(uniform, int(y.size)),
        ece_quantile=ece(quantile, int(y.size)),
        at_thresholds=at_thresholds(y, score, thresholds),
        calibration=uniform,
        calibration_quantile=quantile,
    )


def _thin(x: np.ndarray, y: np.ndarray, points: int) -> Curve:
    """At most ``points`` vertices, spaced evenly along the curve's length (ends kept)."""
    if x.size > points:
        length = np.r_[0.0, np.cumsum(np.hypot(np.diff(x), np.diff(y)))]
        targets = np.linspace(0.0, length[-1], points)
        keep = np.unique(np.r_[0, np.searchsorted(length, targets), x.size - 1].clip(0, x.size - 1))
        x, y = x[keep], y[keep]
    return Curve(x=[round(float(v), 6) for v in x], y=[round(float(v), 6) for v in y])


def curves(y: np.ndarray, score: np.ndarray, points: int = CURVE_POINTS) -> SplitCurves:
    """ROC and precision-recall curves (thinned) and the score histogram by class."""
    y = y.astype(np.int64)
    pos, neg = int(y.sum()), int(y.size - y.sum())
    if y.size:
        _, tp, fp = _runs(y, score)
    else:
        tp = fp = np.zeros(0)
    # Without positives (or negatives) a rate is undefined: a flat 0 as long as the other axis,
    # so a week without a single fraud still gets its report (and a gate that says why).
    tpr = np.r_[0.0, tp / pos] if pos else np.zeros(tp.size + 1)
    fpr = np.r_[0.0, fp / neg] if neg else np.zeros(fp.size + 1)
    precision = tp / np.maximum(tp + fp, 1)
    recall = tp / pos if pos else np.zeros_like(precision)
    hist_pos, _ = np.histogram(score[y == 1], HISTOGRAM_EDGES)
    hist_neg, _ = np.histogram(score[y == 0], HISTOGRAM_EDGES)
    return SplitCurves(
        roc=_thin(fpr, tpr, points),
        pr=_thin(recall, precision, points),
        score_histogram=ScoreHistogram(
            edges=[float(e) for e in HISTOGRAM_EDGES],
            positives=hist_pos.tolist(),
            negatives=hist_neg.tolist(),
        ),
    )
