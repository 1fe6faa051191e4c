"""Label maturity: how much of each split's fraud was known at its label cut.

Chargebacks arrive days to weeks after the payment, so a split's labels are incomplete by an
amount that depends on how close its events lie to the cut. The reporting delay of positives is
observed only when it is shorter than the time left before the cut (the data are right
truncated), so the naive histogram of visible delays is biased towards short delays. The
estimate here is the product-limit estimator for right-truncated data (Lagakos, Barraj and
De Gruttola, 1988): with distinct delays d_j, the reverse-time hazard
``g_j = #{D = d_j} / #{D <= d_j < T}`` and ``F(d) = prod_{d_j > d} (1 - g_j)``, normalised to 1
at the longest observable delay.
"""

from __future__ import annotations

import numpy as np
import polars as pl

from model_factory.contracts import LabelMaturity, LeakagePolicy, SplitLabelMaturity
from model_factory.core.leakage import LABEL_OBSERVED
from model_factory.core.splits import SPLITS, by_split
from model_factory.core.windows import label_cut

METHOD = (
    "product-limit estimator for right-truncated delays (reverse-time hazard) over the "
    "visible positive labels of the frame: delay = observed_time - event_time, truncation "
    "= label cut - event_time"
)
SHARE_SAMPLE_ROWS = 200_000
_DAY = 86_400.0


def delay_distribution(delay: np.ndarray, truncation: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(distinct delays ascending, F at each) from delays observed only when delay < truncation."""
    if delay.size == 0:
        return np.empty(0), np.empty(0)
    d, counts = np.unique(delay, return_counts=True)
    at_or_below = np.searchsorted(np.sort(delay), d, side="right")
    truncated = np.searchsorted(np.sort(truncation), d, side="right")
    at_risk = at_or_below - truncated  # D <= d_j < T; >= counts since every D_i < T_i
    hazard = counts / np.maximum(at_risk, counts)
    survive = np.append(np.cumprod((1.0 - hazard)[::-1])[::-1][1:], 1.0)
    return d, survive  # F(d_j) = prod_{i > j} (1 - g_i)


def cdf_below(d: np.ndarray, f: np.ndarray, x: np.ndarray) -> np.ndarray:
    """P(D < x) from the step function (d, f)."""
    idx = np.searchsorted(d, x, side="left") - 1
    return np.where(idx >= 0, f[np.maximum(idx, 0)], 0.0)


def _quantile(d: np.ndarray, f: np.ndarray, q: float) -> float:
    return float(d[min(int(np.searchsorted(f, q, side="left")), d.size - 1)]) / _DAY


def label_maturity(
    frame: pl.DataFrame, windows: LeakagePolicy, only_after_cut: dict[str, int]
) -> LabelMaturity:
    """Per split: events with and without a visible label, and the share of its positives
    expected to be visible at its cut (``frame`` before any exclusion, with the label
    evidence)."""
    cut = {s: label_cut(windows, s) for s in SPLITS}
    cut_expr = (
        pl.when(pl.col("split") == "test").then(pl.lit(cut["test"])).otherwise(pl.lit(cut["train"]))
    )

    def seconds(expr: pl.Expr) -> pl.Expr:
        return expr.dt.total_microseconds() / 1e6

    positives = (
        frame.select("split", "label", "event_time", LABEL_OBSERVED)
        .filter(pl.col("label") == 1)
        .select(
            delay=seconds(pl.col(LABEL_OBSERVED) - pl.col("event_time")),
            truncation=seconds(cut_expr - pl.col("event_time")),
        )
    )
    d, f = delay_distribution(positives["delay"].to_numpy(), positives["truncation"].to_numpy())
    counts = by_split(
        frame,
        [
            pl.len().alias("events"),
            pl.col(LABEL_OBSERVED).is_not_null().sum().alias("visible"),
            (pl.col(LABEL_OBSERVED) < pl.col("event_time")).sum().alias("early"),
            (pl.col("label") == 1).sum().alias("positives"),
            pl.col("event_time").min().alias("first"),
        ],
    )
    # every k-th event of a split (the mean of a smooth function of its time) suffices
    step = max(1, frame.height // SHARE_SAMPLE_ROWS)
    sample = frame.select("split", "event_time").gather_every(step)
    splits = {}
    for s in SPLITS:
        row = counts.get(s, {"events": 0, "visible": 0, "positives": 0, "early": 0})
        part = (
            sample.filter(pl.col("split") == s)
            .select(seconds(pl.lit(cut[s]) - pl.col("event_time")))
            .to_series()
            .to_numpy()
        )
        share = float(cdf_below(d, f, part).mean()) if d.size and part.size else None
        visible_pos = int(row["positives"])
        splits[s] = SplitLabelMaturity(
            label_cut=cut[s],
            events=int(row["events"]),
            events_with_visible_label=int(row["visible"]),
            events_without_visible_label=int(row["events"]) - int(row["visible"]),
            events_excluded_unlabeled=0,
            events_with_label_only_after_cut=only_after_cut.get(s, 0),
            visible_positives=visible_pos,
            events_with_label_before_event=int(row["early"]),
            expected_visible_share_of_positives=round(share, 6) if share is not None else None,
            expected_positives_not_yet_visible=(
                round(visible_pos * (1 / share - 1), 3) if share else None
            ),
        )
    # the longest time any event had to show its label: from the earliest event to its cut
    waits = [(cut[s] - r["first"]).total_seconds() for s, r in counts.items() if r["first"]]
    horizon = max(waits) if waits else None
    return LabelMaturity(
        method=METHOD,
        positives_used=positives.height,
        delay_quantiles_days={
            f"p{int(q * 100)}": round(_quantile(d, f, q), 4) for q in (0.5, 0.9, 0.99)
        }
        if d.size
        else {},
        max_observable_delay_days=round(horizon / _DAY, 4) if horizon is not None else None,
        splits=splits,
    )
