"""Confidence intervals for ranking metrics: a stratified bootstrap that is exact and fast.

ROC-AUC and average precision depend on the negatives only through how many of them fall
between (or tie with) consecutive distinct positive scores. So the classic stratified bootstrap
(draw n_pos positives and n_neg negatives with replacement) is computed on those *cells*: per
resample, multinomial counts over the cells of each class, then the metric from cumulative sums.
The resampling distribution is exactly that of resampling rows, at a cost of O(resamples x
cells) instead of O(resamples x rows). Fraud positives are rare, so cells are few.

A paired comparison (candidate vs champion on the same rows) uses the joint cells of both
scores, so both models see the same resampled rows.
"""

from __future__ import annotations

from dataclasses import dataclass
from statistics import NormalDist
from typing import Literal

import numpy as np

from model_factory.contracts import ConfidenceInterval

RankingMetric = Literal["roc_auc", "pr_auc"]
METRICS: tuple[RankingMetric, ...] = ("roc_auc", "pr_auc")
BOOTSTRAP_METHOD = "stratified_bootstrap_percentile"
# Elements per (resamples x cells) block: bounds memory (~50 MB of temporaries) whatever the size.
_BLOCK = 1 << 21


def _rng(seed: int, stream: int) -> np.random.Generator:
    """An independent generator per purpose, all derived from one user seed."""
    return np.random.default_rng([seed % (1 << 63), stream])


@dataclass(frozen=True)
class _Cells:
    """One score's view of a labelled sample, compressed to what the ranking metrics read.

    Positive groups k = 0..m-1 are the distinct positive scores, highest first. A negative either
    ties with group k, or lies strictly between groups g-1 and g (g = 0: above every positive
    score, g = m: below them all). Per negative: the first group at or below it (``first``; m
    when below all) and whether it ties with that group.
    """

    pos_group: np.ndarray  # per positive row
    neg_first: np.ndarray  # per negative row, 0..m
    neg_tie: np.ndarray  # per negative row
    groups: int  # m

    @classmethod
    def of(cls, score_pos: np.ndarray, score_neg: np.ndarray) -> _Cells:
        ascending = np.unique(score_pos)
        m = ascending.size
        pos_group = m - 1 - np.searchsorted(ascending, score_pos)
        below = np.searchsorted(ascending, score_neg, side="left")  # positive groups below
        tie = ascending[np.minimum(below, m - 1)] == score_neg
        first = m - below - tie  # groups strictly above, i.e. the first group not above
        return cls(pos_group.astype(np.int64), first.astype(np.int64), tie, m)

    def neg_code(self) -> np.ndarray:
        """One integer per negative cell: 2 * first + tie (tie only where first < m)."""
        return 2 * self.neg_first + self.neg_tie


def _metrics_from_counts(
    a: np.ndarray,
    d: np.ndarray,
    t: np.ndarray | None,
    n_pos: int,
    n_neg: int,
    metrics: tuple[str, ...],
) -> dict[str, np.ndarray]:
    """Metrics per resample from float counts, all R x m: positives per group (a), negatives
    counted from each group on (d: tied with it or above it but below the group before), and
    of those the ties (t)."""
    fp = np.cumsum(d, axis=1)  # negatives scored >= group k
    out: dict[str, np.ndarray] = {}
    if "roc_auc" in metrics:
        beaten = np.einsum("ij,ij->i", a, fp)  # (positive, negative) pairs not ranked right
        if t is not None:
            beaten -= 0.5 * np.einsum("ij,ij->i", a, t)
        out["roc_auc"] = 1.0 - beaten / (float(n_pos) * n_neg)
    if "pr_auc" in metrics:
        tp = np.cumsum(a, axis=1)
        fp += tp  # alerts at each group's threshold (fp is not needed any more)
        np.maximum(fp, 1.0, out=fp)  # no alerts only where tp = 0, so the term stays 0
        out["pr_auc"] = np.einsum("ij,ij->i", a, np.divide(tp, fp, out=tp)) / n_pos
    return out


def _multinomial(rng: np.random.Generator, sizes: np.ndarray, resamples: int) -> np.ndarray:
    """Counts per cell of ``sizes.sum()`` rows drawn with replacement, per resample (R x K).

    Many small cells: draw row indices. Few large cells: Poisson counts with a total a little
    below n (given their total T, Poisson counts are multinomial(T)), then the remaining n - T
    rows are drawn one by one; in the rare resample where T > n a uniform subset of T - n is
    removed instead. Either way each resample is exactly multinomial(n, sizes / n).
    """
    k = sizes.size
    n = int(sizes.sum())
    cell_of_row = np.repeat(np.arange(k, dtype=np.int32), sizes)
    if k * 4 >= n:
        rows = rng.integers(0, n, size=(resamples, n), dtype=np.int32)
        flat = cell_of_row[rows] + (np.arange(resamples, dtype=np.int64) * k)[:, None]
        return np.bincount(flat.ravel(), minlength=resamples * k).reshape(resamples, k)
    shrink = max(0.0, 1.0 - 3.0 / np.sqrt(n))  # P(T > n) ~ 0.1 %
    counts = rng.poisson(sizes.astype(np.float64) * shrink, size=(resamples, k))
    totals = counts.sum(axis=1)
    short = np.nonzero(totals < n)[0]
    if short.size:
        extra = n - totals[short]
        cells = cell_of_row[rng.integers(0, n, size=int(extra.sum()))]
        flat = np.repeat(short * k, extra) + cells
        counts += np.bincount(flat, minlength=resamples * k).reshape(resamples, k)
    for r in np.nonzero(totals > n)[0]:
        drop = rng.choice(int(totals[r]), int(totals[r]) - n, replace=False)
        cells = np.searchsorted(np.cumsum(counts[r]), drop, side="right")
        counts[r] -= np.bincount(cells, minlength=k)
    return counts


@dataclass(frozen=True)
class _ColumnSum:
    """Sums chosen columns of a (R x J) count matrix into ``size`` target columns.

    Source columns are split into layers in which no target repeats, so each layer is one
    scatter-add; with many repeats (a paired comparison) a sorted ``reduceat`` is used instead.
    """

    layers: tuple[tuple[np.ndarray, np.ndarray], ...]  # (source columns, their targets)
    reduce: tuple[np.ndarray, np.ndarray, np.ndarray] | None  # (sorted sources, starts, targets)
    size: int
    identity: bool  # every source column is its own target, in order

    @classmethod
    def plan(cls, target: np.ndarray, size: int, keep: np.ndarray | None = None) -> _ColumnSum:
        source = np.arange(target.size) if keep is None else np.nonzero(keep)[0]
        order = np.argsort(target[source], kind="stable")
        source, tgt = source[order], target[source][order]
        identity = bool(
            target.size == size == source.size
            and np.array_equal(tgt, source)
            and np.array_equal(source, np.arange(size))
        )
        starts = np.r_[0, np.nonzero(np.diff(tgt))[0] + 1] if source.size else source
        rank = np.arange(source.size) - np.repeat(starts, np.diff(np.r_[starts, source.size]))
        depth = int(rank.max()) + 1 if source.size else 0
        if depth <= 4:
            layers = tuple((source[rank == d], tgt[rank == d]) for d in range(depth))
            return cls(layers, None, size, identity)
        return cls((), (source, starts, tgt[starts]), size, identity)

    def __call__(self, counts: np.ndarray) -> np.ndarray:
        if self.identity:
            return counts
        out = np.zeros((counts.shape[0], self.size), dtype=counts.dtype)
        for source, targets in self.layers:
            out[:, targets] += counts[:, source]
        if self.reduce is not None:
            source, starts, targets = self.reduce
            out[:, targets] = np.add.reduceat(counts[:, source], starts, axis=1)
        return out


def _split(y: np.ndarray, *scores: np.ndarray) -> tuple[np.ndarray, list[np.ndarray]] | None:
    y = np.asarray(y)
    if y.ndim != 1 or any(np.asarray(s).shape != y.shape for s in scores):
        raise ValueError(
            f"y and scores must be 1-d of one length, found {y.shape} and "
            f"{[np.asarray(s).shape for s in scores]}"
        )
    for s in scores:
        if not np.all(np.isfinite(s)):
            raise ValueError("scores must be finite")
    pos = y.astype(bool)
    if not pos.any() or pos.all():
        return None
    return pos, [np.asarray(s, dtype=np.float64) for s in scores]


def _percentile(values: np.ndarray, level: float, resamples: int, seed: int) -> ConfidenceInterval:
    lo, hi = np.quantile(values, [(1 - level) / 2, (1 + level) / 2])
    return ConfidenceInterval(
        lower=float(lo),
        upper=float(hi),
        level=level,
        method=BOOTSTRAP_METHOD,
        resamples=resamples,
        seed=seed,
    )


def _check(resamples: int, level: float) -> None:
    if resamples < 1:
        raise ValueError(f"resamples must be at least 1, found {resamples}")
    if not 0 < level < 1:
        raise ValueError(f"level must lie strictly between 0 and 1, found {level}")


def _joint(keys: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Distinct combinations of per-row keys: (rows per combination, one row of each, the
    combination of each row), combinations in increasing key order."""
    key = (
        keys[0] if len(keys) == 1 else np.ravel_multi_index(keys, [int(k.max()) + 1 for k in keys])
    )
    if key.size and key.max() < 4 * key.size:  # small key range: counting beats sorting
        counts = np.bincount(key)
        present = np.nonzero(counts)[0]
        index = np.zeros(counts.size, dtype=np.int64)
        index[present] = np.arange(present.size)
        first = np.empty(counts.size, dtype=np.int64)
        first[key[::-1]] = np.arange(key.size - 1, -1, -1)
        return counts[present], first[present], index[key]
    _, first, inverse, sizes = np.unique(
        key, return_index=True, return_inverse=True, return_counts=True
    )
    return sizes, first, inverse


@dataclass(frozen=True)
class _Side:
    """One class's rows and, per target matrix, how a resample of them is counted.

    A target matrix (R x ncols) is, e.g., the positives per group of one score. Rows that every
    score puts in the same cells form a joint cell and always move together. With few joint
    cells (the usual fraud case) a resample is drawn as multinomial counts per joint cell;
    with many (a paired comparison of two differently ordered scores) rows are drawn directly.
    """

    n: int
    sizes: np.ndarray  # rows per joint cell
    joint: np.ndarray  # per row, its joint cell
    columns: tuple[tuple[np.ndarray, int], ...]  # per target: per-row column (ncols: none), ncols
    plans: tuple[_ColumnSum, ...]  # per target, over joint cells (empty when drawing rows)

    @classmethod
    def of(
        cls,
        keys: list[np.ndarray],
        columns: list[tuple[np.ndarray, int]],
        by_rows: bool | None = None,
    ) -> _Side:
        """``by_rows``: force a way of drawing (None: rows when joint cells are many)."""
        sizes, rep, joint = _joint(keys)
        n = int(joint.size)
        columns = [(col.astype(np.int32), ncols) for col, ncols in columns]
        plans: tuple[_ColumnSum, ...] = ()
        if not (sizes.size * 4 >= n if by_rows is None else by_rows):
            plans = tuple(
                _ColumnSum.plan(col[rep], ncols, keep=col[rep] < ncols) for col, ncols in columns
            )
        return cls(n, sizes, joint, tuple(columns), plans)

    @property
    def by_rows(self) -> bool:
        return not self.plans

    @property
    def per_resample(self) -> int:
        """Elements one resample touches (sizes the resample blocks)."""
        return self.n if self.by_rows else int(self.sizes.size)

    def from_rows(self, rows: np.ndarray) -> list[np.ndarray]:
        """Target matrices of resamples given as drawn row indices (R x n)."""
        out = []
        for col, ncols in self.columns:
            cells = col[rows]
            counts = np.stack([np.bincount(c, minlength=ncols + 1)[:ncols] for c in cells])
            out.append(counts.astype(np.float64))
        return out

    def from_joint(self, counts: np.ndarray) -> list[np.ndarray]:
        """Target matrices of resamples given as counts per joint cell (R x joint cells)."""
        return [plan(counts) for plan in self.plans]

    def draw(self, rng: np.random.Generator, resamples: int) -> list[np.ndarray]:
        if self.by_rows:
            return self.from_rows(rng.integers(0, self.n, size=(resamples, self.n), dtype=np.int32))
        return self.from_joint(_multinomial(rng, self.sizes, resamples).astype(np.float64))


@dataclass(frozen=True)
class _Design:
    """A labelled sample seen by one or more scores: per score, the positives per group (a),
    the negatives counted from each group on (d) and, with ties, those tied with it (t)."""

    n_pos: int
    n_neg: int
    pos: _Side
    neg: _Side
    groups: list[int]
    tie_target: list[int | None]  # per score: index of its t matrix among the negative targets

    @classmethod
    def of(cls, pos: np.ndarray, scores: list[np.ndarray], by_rows: bool | None = None) -> _Design:
        cells = [_Cells.of(s[pos], s[~pos]) for s in scores]
        neg_columns: list[tuple[np.ndarray, int]] = []
        tie_target: list[int | None] = []
        for c in cells:
            neg_columns.append((np.where(c.neg_first < c.groups, c.neg_first, c.groups), c.groups))
        for c in cells:
            if c.neg_tie.any():
                tie_target.append(len(neg_columns))
                neg_columns.append((np.where(c.neg_tie, c.neg_first, c.groups), c.groups))
            else:
                tie_target.append(None)
        return cls(
            n_pos=int(pos.sum()),
            n_neg=int((~pos).sum()),
            pos=_Side.of(
                [c.pos_group for c in cells], [(c.pos_group, c.groups) for c in cells], by_rows
            ),
            neg=_Side.of([c.neg_code() for c in cells], neg_columns, by_rows),
            groups=[c.groups for c in cells],
            tie_target=tie_target,
        )

    def metrics(
        self, pos_mats: list[np.ndarray], neg_mats: list[np.ndarray], metrics: tuple[str, ...]
    ) -> list[dict[str, np.ndarray]]:
        """Per score, the metric of each resample from its target matrices."""
        out = []
        for i, tie in enumerate(self.tie_target):
            t = neg_mats[tie] if tie is not None else None
            out.append(
                _metrics_from_counts(pos_mats[i], neg_mats[i], t, self.n_pos, self.n_neg, metrics)
            )
        return out


def _resampled_metrics(
    y: np.ndarray, scores: list[np.ndarray], metrics: tuple[str, ...], resamples: int, seed: int
) -> list[dict[str, np.ndarray]] | None:
    """Per score, per metric: its value on each stratified resample (the same rows for every
    score). None when a class is missing."""
    split = _split(y, *scores)
    if split is None:
        return None
    design = _Design.of(*split)
    per_resample = max(*design.groups, design.pos.per_resample, design.neg.per_resample)
    block = max(1, _BLOCK // per_resample)
    pos_rng, neg_rng = _rng(seed, 1), _rng(seed, 2)
    out = [{m: np.empty(resamples) for m in metrics} for _ in scores]
    for start in range(0, resamples, block):
        r = min(block, resamples - start)
        values = design.metrics(design.pos.draw(pos_rng, r), design.neg.draw(neg_rng, r), metrics)
        for i, per_metric in enumerate(values):
            for name, v in per_metric.items():
                out[i][name][start : start + r] = v
    return out


def bootstrap_cis(
    y: np.ndarray,
    score: np.ndarray,
    metrics: tuple[str, ...] = METRICS,
    *,
    resamples: int,
    seed: int,
    level: float = 0.95,
) -> dict[str, ConfidenceInterval | None]:
    """Intervals of several ranking metrics from one set of resamples (same as one at a time)."""
    _check(resamples, level)
    res = _resampled_metrics(y, [score], tuple(metrics), resamples, seed)
    if res is None:
        return dict.fromkeys(metrics)
    return {m: _percentile(res[0][m], level, resamples, seed) for m in metrics}


def bootstrap_ci(
    y: np.ndarray,
    score: np.ndarray,
    metric: RankingMetric,
    *,
    resamples: int,
    seed: int,
    level: float = 0.95,
) -> ConfidenceInterval | None:
    """Percentile interval of ROC-AUC or PR-AUC under the stratified bootstrap; None with one class."""
    if metric not in METRICS:
        raise ValueError(f"metric must be one of {METRICS}, found {metric!r}")
    return bootstrap_cis(y, score, (metric,), resamples=resamples, seed=seed, level=level)[metric]


def paired_bootstrap_delta(
    y: np.ndarray,
    score_candidate: np.ndarray,
    score_champion: np.ndarray,
    metric: RankingMetric,
    *,
    resamples: int,
    seed: int,
    level: float = 0.95,
) -> ConfidenceInterval | None:
    """Interval of metric(candidate) - metric(champion), both on the same resampled rows."""
    if metric not in METRICS:
        raise ValueError(f"metric must be one of {METRICS}, found {metric!r}")
    _check(resamples, level)
    res = _resampled_metrics(y, [score_candidate, score_champion], (metric,), resamples, seed)
    if res is None:
        return None
    ci = _percentile(res[0][metric] - res[1][metric], level, resamples, seed)
    return ci.model_copy(update={"method": "paired_" + BOOTSTRAP_METHOD})


# ------------------------------------------------------------------------------------------------
# Intervals of counts at a fixed threshold, and analytic cross-checks


def rate_intervals(
    tp: int,
    fp: int,
    positives: int,
    negatives: int,
    *,
    resamples: int,
    seed: int,
    level: float = 0.95,
) -> dict[str, ConfidenceInterval | None]:
    """Precision, recall, F1 and alert rate of a fixed alert rule under the stratified bootstrap.

    With the classes resampled separately, true and false alerts are independent binomials,
    so this is the row bootstrap exactly, drawn in O(resamples). Without positives recall is
    undefined: its interval and F1's are None.
    """
    _check(resamples, level)
    rng = _rng(seed, 3)
    tps = rng.binomial(positives, tp / positives if positives else 0.0, resamples).astype(
        np.float64
    )
    fps = rng.binomial(negatives, fp / negatives if negatives else 0.0, resamples).astype(
        np.float64
    )
    alerts = tps + fps
    values: dict[str, np.ndarray | None] = {
        "precision": np.where(alerts > 0, tps / np.maximum(alerts, 1), 0.0),
        "recall": tps / positives if positives else None,
        "f1": 2 * tps / (alerts + positives) if positives else None,
        "alert_rate": alerts / max(positives + negatives, 1),
    }
    return {
        k: None if v is None else _percentile(v, level, resamples, seed) for k, v in values.items()
    }


def _midranks(x: np.ndarray) -> np.ndarray:
    _, inverse, counts = np.unique(x, return_inverse=True, return_counts=True)
    return (np.cumsum(counts) - (counts - 1) / 2.0)[inverse]


def delong_ci(y: np.ndarray, score: np.ndarray, level: float = 0.95) -> ConfidenceInterval | None:
    """DeLong's asymptotic interval of ROC-AUC (Sun & Xu's midrank form), clipped to [0, 1]."""
    split = _split(y, score)
    if split is None:
        return None
    pos, (s,) = split
    x, z = s[pos], s[~pos]
    m, n = x.size, z.size
    all_ranks = _midranks(np.concatenate([x, z]))
    v_pos = (all_ranks[:m] - _midranks(x)) / n  # per positive: share of negatives below it
    v_neg = 1.0 - (all_ranks[m:] - _midranks(z)) / m  # per negative: share of positives above it
    auc = float(v_pos.mean())
    var = (v_pos.var(ddof=1) / m if m > 1 else 0.0) + (v_neg.var(ddof=1) / n if n > 1 else 0.0)
    half = NormalDist().inv_cdf((1 + level) / 2) * float(np.sqrt(var))
    return ConfidenceInterval(
        lower=max(0.0, auc - half),
        upper=min(1.0, auc + half),
        level=level,
        method="delong",
        resamples=0,
        seed=0,
    )


def wilson_ci(hits: int, trials: int, level: float = 0.95) -> ConfidenceInterval | None:
    """Wilson score interval of a proportion; None without trials."""
    if trials <= 0:
        return None
    z = NormalDist().inv_cdf((1 + level) / 2)
    p = hits / trials
    denom = 1 + z * z / trials
    centre = (p + z * z / (2 * trials)) / denom
    half = z * np.sqrt(p * (1 - p) / trials + z * z / (4 * trials * trials)) / denom
    return ConfidenceInterval(
        lower=float(max(0.0, centre - half)),
        upper=float(min(1.0, centre + half)),
        level=level,
        method="wilson",
        resamples=0,
        seed=0,
    )
