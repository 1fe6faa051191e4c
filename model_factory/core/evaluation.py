"""Metrics of a scored split, in NumPy (checked against scikit-learn in the tests)."""

from __future__ import annotations

import time

import numpy as np
import polars as pl

from model_factory.contracts import CalibrationBin, EvaluationReport, MetricSet, ThresholdMetrics
from model_factory.core.training import TrainedModel, feature_matrix


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


def average_precision(y: np.ndarray, score: np.ndarray) -> float | None:
    """PR-AUC as average precision: sum over distinct thresholds of ΔRecall × Precision."""
    pos = int(y.sum())
    if pos == 0:
        return None
    order = np.argsort(-score, kind="stable")
    s, t = score[order], y[order]
    tp = np.cumsum(t)
    # the last index of each run of equal scores is where that threshold's counts are complete
    last = np.r_[np.nonzero(np.diff(s))[0], s.size - 1]
    tp_at = tp[last]
    precision = tp_at / (last + 1)
    recall = tp_at / pos
    return float(np.sum(np.diff(recall, prepend=0.0) * precision))


def at_thresholds(y: np.ndarray, score: np.ndarray, thresholds: list[float]) -> list[ThresholdMetrics]:
    """Precision and recall when alerting on score >= threshold (precision 0 with no alerts)."""
    pos = int(y.sum())
    out = []
    for th in thresholds:
        alert = score >= th
        n = int(alert.sum())
        tp = int((alert & (y == 1)).sum())
        out.append(ThresholdMetrics(threshold=th, precision=tp / n if n else 0.0,
                                    recall=tp / pos if pos else 0.0, alerts=n))
    return out


def calibration(y: np.ndarray, score: np.ndarray, bins: int = 10) -> list[CalibrationBin]:
    edges = np.linspace(0.0, 1.0, bins + 1)
    idx = np.clip(np.digitize(score, edges[1:-1], right=False), 0, bins - 1)
    out = []
    for b in range(bins):
        mask = idx == b
        n = int(mask.sum())
        out.append(CalibrationBin(
            lower=float(edges[b]), upper=float(edges[b + 1]), rows=n,
            mean_score=float(score[mask].mean()) if n else None,
            observed_rate=float(y[mask].mean()) if n else None))
    return out


def metric_set(split: str, y: np.ndarray, score: np.ndarray, thresholds: list[float]) -> MetricSet:
    y = y.astype(np.int64)
    clipped = np.clip(score, 1e-15, 1 - 1e-15)
    pos = int(y.sum())
    return MetricSet(
        split=split, rows=int(y.size), positives=pos,
        positive_rate=pos / y.size if y.size else 0.0,
        roc_auc=roc_auc(y, score), pr_auc=average_precision(y, score),
        brier=float(np.mean((score - y) ** 2)) if y.size else 0.0,
        log_loss=float(-np.mean(y * np.log(clipped) + (1 - y) * np.log(1 - clipped))) if y.size else 0.0,
        at_thresholds=at_thresholds(y, score, thresholds),
        calibration=calibration(y, score),
    )


def build_report(*, train_run_id: str, partition_key: str, model_family: str, model_sha256: str,
                 frame_sha256: str, frame: pl.DataFrame, features: list[str],
                 trained: TrainedModel, thresholds: list[float]) -> EvaluationReport:
    """Evaluation of a trained model on its frame's val and test splits."""
    metrics = {}
    timings: dict[str, float] = {}
    for split in ("val", "test"):
        part = frame.filter(pl.col("split") == split)
        x = feature_matrix(part, features)
        started = time.perf_counter()
        score = trained.predict(x)
        elapsed = time.perf_counter() - started
        if split == "test" and part.height:
            timings["test_predict_seconds"] = elapsed
            timings["latency_us_per_row"] = 1e6 * elapsed / part.height
        metrics[split] = metric_set(split, part["label"].to_numpy(), score, thresholds)
    gain = trained.booster.get_score(importance_type="total_gain")
    return EvaluationReport(
        train_run_id=train_run_id, partition_key=partition_key, model_family=model_family,
        model_sha256=model_sha256, frame_sha256=frame_sha256, best_iteration=trained.best_iteration,
        metrics=metrics, feature_importance={f: round(float(gain.get(f, 0.0)), 6) for f in features},
        timings=timings)
