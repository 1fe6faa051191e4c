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


def _bins(reference: np.ndarray, bins: int) -> tuple[np.ndarray, np.ndarray, int]:
    """Cut values of the (non-null) reference, the bin of each cell and the number of bins.

    The cells are (-inf, c1), {c1}, (c1, c2), ..., {cm}, (cm, inf): a value's cell is
    searchsorted left + right. With at most ``bins`` distinct values every value is a cut with
    a bin of its own. Otherwise the cuts are quantiles (data values, so infinities need no
    arithmetic) and a cut keeps its own bin only if it holds at least 1/bins of the reference
    (a tied mass that would otherwise swallow the next bin); the others join the interval above
    (the maximum the one below). Cells the reference never reaches (below its minimum, above its
    maximum, between its distinct values) are bins of their own, so new values show as drift.
    """
    s = np.sort(reference)
    n = s.size
    distinct = s[np.r_[True, s[1:] != s[:-1]]] if n else s
    if distinct.size <= bins:
        cuts, own = distinct, np.ones(distinct.size, dtype=bool)
    else:
        k = np.arange(bins + 1)
        cuts = np.unique(s[np.maximum((k * n + bins - 1) // bins - 1, 0)])
        held = np.searchsorted(s, cuts, side="right") - np.searchsorted(s, cuts, side="left")
        own = held * bins >= n
    cell = np.arange(2 * cuts.size + 1)
    for j in np.nonzero(~own)[0]:
        point = 2 * j + 1
        cell[point] = point + 1 if j < cuts.size - 1 else point - 1
    _, bin_of_cell = np.unique(cell, return_inverse=True)
    return cuts, bin_of_cell, int(bin_of_cell.max()) + 1


def psi(
    reference: np.ndarray, current: np.ndarray, bins: int = 10
) -> tuple[float | None, float | None, float | None]:
    """PSI over bins of the reference (see ``_bins``) plus one bin for missing values (NaN).

    Returns (psi, reference null share, current null share); a side without rows has no
    share and there is no PSI (None: not measured, rather than a shift against nothing).
    """
    ref_missing, cur_missing = np.isnan(reference), np.isnan(current)
    ref_null = float(ref_missing.mean()) if reference.size else None
    cur_null = float(cur_missing.mean()) if current.size else None
    if not reference.size or not current.size:
        return None, ref_null, cur_null
    cuts, bin_of_cell, n_bins = _bins(reference[~ref_missing], bins)

    def shares(values: np.ndarray, missing: np.ndarray) -> np.ndarray:
        v = values[~missing]
        cells = np.searchsorted(cuts, v, side="left") + np.searchsorted(cuts, v, side="right")
        counts = np.bincount(bin_of_cell[cells], minlength=n_bins)
        counts = np.r_[counts, missing.sum()].astype(np.float64)
        return np.maximum(counts / values.size, FLOOR)

    r, c = shares(reference, ref_missing), shares(current, cur_missing)
    return float(np.sum((c - r) * np.log(c / r))), ref_null, cur_null


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
    """PSI of every feature and of the score; the most drifting features listed first.

    With no reference or no current rows nothing is measured: every PSI and level is None.
    """
    drifts = []
    for f in features:
        value, ref_null, cur_null = psi(_column(reference, f), _column(current, f), bins)
        drifts.append(
            FeatureDrift(
                feature=f,
                psi=value,
                level=level(value) if value is not None else None,
                reference_null_share=ref_null,
                current_null_share=cur_null,
            )
        )
    score_psi = None
    if reference_score is not None and current_score is not None:
        score_psi = psi(reference_score, current_score, bins)[0]
    # Not measured (an empty side) is not drift: such features are not ranked.
    ranked = sorted((d for d in drifts if d.psi is not None), key=lambda d: (-d.psi, d.feature))
    return DriftReport(
        bins=bins,
        reference_rows=reference.height,
        current_rows=current.height,
        score_psi=score_psi,
        score_level=level(score_psi) if score_psi is not None else None,
        features=drifts,
        top_drifting=[d.feature for d in ranked[:top]],
    )
