"""Segments of the test window declared in the config, each with its own metrics.

A segment too small to judge is listed with its counts and no metrics, never dropped: a
committee must see that a slice exists and was not measured.
"""

from __future__ import annotations

from itertools import pairwise

import numpy as np
import polars as pl

from model_factory.contracts import DecisionPolicy, EvaluationSettings, SliceMetrics, SliceSpec
from model_factory.core.bootstrap import bootstrap_cis
from model_factory.core.metrics import calibration, calibration_quantile, ece, ranking
from model_factory.core.operating_points import operating_metrics
from model_factory.errors import ConfigError

MAX_DISTINCT = 20


def _fmt(v: float) -> str:
    """A value as a segment's name: whole numbers in full, others in the shortest form that
    reads back as the same float, so two segments never share a name (``:g`` kept 6 digits:
    ids 1000001 and 1000002 were both "1e+06")."""
    v = float(v)
    if v.is_integer() and abs(v) < 2**53:
        return str(int(v))
    return repr(v)


def band_labels(spec: SliceSpec) -> list[str]:
    if spec.labels is not None:
        return spec.labels
    e = spec.edges
    return (
        [f"< {_fmt(e[0])}"]
        + [f"[{_fmt(a)}, {_fmt(b)})" for a, b in pairwise(e)]
        + [f">= {_fmt(e[-1])}"]
    )


def segments(
    spec: SliceSpec, column: pl.Series, source: str = "evaluation.slices"
) -> list[tuple[str, np.ndarray]]:
    """(label, row mask) per segment: bands or distinct values, then nulls if there are any."""
    if not (column.dtype.is_numeric() or column.dtype == pl.Boolean):
        raise ConfigError(
            f"slice '{spec.name}': column '{spec.column}' is {column.dtype}: a slice reads a "
            "numeric or boolean column of the frame (an event feature or a feature group's)",
            source=source,
            field=f"slices.{spec.name}.column",
        )
    values = column.cast(pl.Float64).to_numpy()
    missing = np.isnan(values)
    out: list[tuple[str, np.ndarray]] = []
    if spec.edges:
        band = np.searchsorted(np.asarray(spec.edges, dtype=np.float64), values, side="right")
        out += [(label, (band == i) & ~missing) for i, label in enumerate(band_labels(spec))]
    else:
        distinct = np.unique(values[~missing])
        if distinct.size > MAX_DISTINCT:
            raise ConfigError(
                f"slice '{spec.name}': column '{spec.column}' has {distinct.size} distinct values "
                f"(at most {MAX_DISTINCT} without edges): give band edges",
                source=source,
                field=f"slices.{spec.name}.edges",
            )
        out += [(f"{spec.column} = {_fmt(v)}", values == v) for v in distinct]
    if missing.any():
        out.append(("missing", missing))
    return out


def segment_metrics(
    spec: SliceSpec,
    label: str,
    y: np.ndarray,
    score: np.ndarray,
    policy: DecisionPolicy,
    settings: EvaluationSettings,
    order: np.ndarray | None = None,
) -> SliceMetrics:
    """A segment's metrics (``order``: its rows by descending score, if known)."""
    rows, positives = int(y.size), int(y.sum())
    base = {
        "slice": spec.name,
        "column": spec.column,
        "segment": label,
        "rows": rows,
        "positives": positives,
        "positive_rate": positives / rows if rows else None,
    }
    if rows < settings.min_slice_rows or positives < settings.min_slice_positives:
        return SliceMetrics(status="too_small", **base)
    boot = {
        "resamples": settings.slice_bootstrap_resamples,
        "seed": settings.bootstrap_seed,
        "level": settings.confidence_level,
    }
    two_classes = 0 < positives < rows
    cis = bootstrap_cis(y, score, **boot) if two_classes and boot["resamples"] else {}
    at = {
        name: operating_metrics(y, score, th, **boot) if th is not None else None
        for name, th in (("review", policy.review_threshold), ("decline", policy.decline_threshold))
    }
    auc, ap = ranking(y, score, order)
    return SliceMetrics(
        status="ok" if two_classes else "single_class",
        **base,
        roc_auc=auc,
        roc_auc_ci=cis.get("roc_auc"),
        pr_auc=ap,
        pr_auc_ci=cis.get("pr_auc"),
        brier=float(np.mean((score - y) ** 2)),
        ece=ece(calibration(y, score, settings.calibration_bins), rows),
        ece_quantile=ece(calibration_quantile(y, score, settings.calibration_bins), rows),
        **at,
    )


def evaluate_slices(
    test: pl.DataFrame,
    y: np.ndarray,
    score: np.ndarray,
    policy: DecisionPolicy,
    settings: EvaluationSettings,
) -> list[SliceMetrics]:
    """Every declared slice on the test rows; a slice whose column is absent says so."""
    out: list[SliceMetrics] = []
    ranked = np.argsort(-score, kind="stable")  # one sort; each segment filters it
    for spec in settings.slices:
        if spec.column not in test.columns:
            out.append(
                SliceMetrics(
                    slice=spec.name,
                    column=spec.column,
                    segment="(all)",
                    status="column_absent",
                    rows=int(y.size),
                    positives=int(y.sum()),
                    positive_rate=None,
                )
            )
            continue
        for label, mask in segments(spec, test[spec.column]):
            order = (np.cumsum(mask) - 1)[ranked[mask[ranked]]]
            out.append(segment_metrics(spec, label, y[mask], score[mask], policy, settings, order))
    return out
