"""Population stability index: the training window (reference) against the test window."""

from __future__ import annotations

from typing import Literal

import numpy as np
import polars as pl

from model_factory.contracts import DriftReport, FeatureDrift

# Empty bins are floored at this share, so one empty bin cannot make the index infinite.
FLOOR = 1e-4
# The reference is thinned to every k-th training row beyond this: PSI over ten bins is precise
# long before, and scoring the whole training window would double the evaluation's time.
REFERENCE_ROWS = 100_000


def reference_sample(frame: pl.DataFrame) -> pl.DataFrame:
    """Every k-th row, so at most REFERENCE_ROWS (deterministic: the frame's order is)."""
    return frame.gather_every(max(1, -(-frame.height // REFERENCE_ROWS)))


Level = Literal["stable", "moderate", "major"]


def level(psi: float) -> Level:
    """The usual reading: < 0.1 stable, < 0.25 moderate, else a major shift."""
    return "stable" if psi < 0.1 else "moderate" if psi < 0.25 else "major"


def psi(reference: np.ndarray, current: np.ndarray, bins: int = 10) -> tuple[float, float, float]:
    """PSI over quantile bins of the reference plus one bin for missing values (NaN).

    Returns (psi, reference null share, current null share). Tied quantiles merge bins, so a
    binary feature gets two bins, not ten.
    """
    ref_missing, cur_missing = np.isnan(reference), np.isnan(current)
    ref_values = reference[~ref_missing]
    edges = (
        np.unique(np.quantile(ref_values, np.linspace(0, 1, bins + 1)[1:-1]))
        if ref_values.size
        else np.zeros(0)
    )

    def shares(values: np.ndarray, missing: np.ndarray) -> np.ndarray:
        counts = np.bincount(
            np.searchsorted(edges, values[~missing], side="right"), minlength=edges.size + 1
        )
        counts = np.r_[counts, missing.sum()].astype(np.float64)
        return np.maximum(counts / max(values.size, 1), FLOOR)

    r, c = shares(reference, ref_missing), shares(current, cur_missing)
    value = float(np.sum((c - r) * np.log(c / r)))
    return (
        value,
        float(ref_missing.mean()) if reference.size else 0.0,
        float(cur_missing.mean()) if current.size else 0.0,
    )


def _column(frame: pl.DataFrame, name: str) -> np.ndarray:
    return frame[name].cast(pl.Float64).to_numpy()  # nulls become NaN


def drift_report(
    reference: pl.DataFrame,
    current: pl.DataFrame,
    features: list[str],
    reference_score: np.ndarray | None,
    current_score: np.ndarray | None,
    bins: int = 10,
    top: int = 5,
) -> DriftReport:
    """PSI of every feature and of the score; the most drifting features listed first."""
    drifts = []
    for f in features:
        value, ref_null, cur_null = psi(_column(reference, f), _column(current, f), bins)
        drifts.append(
            FeatureDrift(
                feature=f,
                psi=value,
                level=level(value),
                reference_null_share=ref_null,
                current_null_share=cur_null,
            )
        )
    score_psi = None
    if reference_score is not None and current_score is not None and reference_score.size:
        score_psi = psi(reference_score, current_score, bins)[0]
    ranked = sorted(drifts, key=lambda d: (-d.psi, d.feature))
    return DriftReport(
        bins=bins,
        reference_rows=reference.height,
        current_rows=current.height,
        score_psi=score_psi,
        score_level=level(score_psi) if score_psi is not None else None,
        features=drifts,
        top_drifting=[d.feature for d in ranked[:top]],
    )
