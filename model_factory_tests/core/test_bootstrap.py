"""The stratified bootstrap on cells: exact against scikit-learn on weighted rows, multinomial
draws, determinism, coverage at the nominal rate, and the paired comparison."""

from __future__ import annotations

from statistics import NormalDist

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn.metrics import average_precision_score, roc_auc_score

from model_factory.core import bootstrap
from model_factory.core.bootstrap import (
    bootstrap_ci,
    bootstrap_cis,
    delong_ci,
    paired_bootstrap_delta,
    rate_intervals,
    wilson_ci,
)

TIED = np.array([0.0, 0.05, 0.1, 0.3, 0.5, 0.5000001, 0.7, 0.9, 1.0])


@st.composite
def samples(draw: st.DrawFn, scores: int = 1):
    """(y, scores...) with both classes; scores tied or continuous, positives common or rare."""
    n = draw(st.integers(4, 300))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    rate = draw(st.sampled_from([0.5, 0.1, 0.03]))
    y = (rng.random(n) < rate).astype(np.int64)
    y[0], y[1] = 1, 0
    out = []
    for _ in range(scores):
        if draw(st.booleans()):
            s = rng.choice(TIED[: draw(st.integers(1, TIED.size))], size=n)
        else:
            s = np.clip(rng.uniform(0, 1, n) + draw(st.sampled_from([0.0, 0.3])) * y, 0, 1)
        out.append(s.astype(np.float64))
    return y, out


def _stratified_rows(rng: np.random.Generator, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """One stratified resample as indices into the positives and into the negatives."""
    n_pos = int(y.sum())
    return rng.integers(0, n_pos, n_pos), rng.integers(0, y.size - n_pos, y.size - n_pos)


def _weights(y: np.ndarray, pos_rows: np.ndarray, neg_rows: np.ndarray) -> np.ndarray:
    """The row weights (times drawn) of a resample given as class-wise indices."""
    w = np.zeros(y.size)
    w[np.nonzero(y == 1)[0]] = np.bincount(pos_rows, minlength=int(y.sum()))
    w[np.nonzero(y == 0)[0]] = np.bincount(neg_rows, minlength=int(y.size - y.sum()))
    return w


def _resample_weights(rng: np.random.Generator, y: np.ndarray) -> np.ndarray:
    return _weights(y, *_stratified_rows(rng, y))


@settings(max_examples=40, deadline=None)
@given(data=samples(scores=2), seed=st.integers(0, 2**31), by_rows=st.booleans())
def test_resample_counts_give_sklearn_metrics_of_the_resampled_rows(data, seed, by_rows) -> None:
    """Whatever rows a resample draws, the metrics computed from its counts (per joint cell or
    per drawn row) equal scikit-learn's on those rows (as weights), for both scores of a paired
    design."""
    y, scores = data
    pos = y.astype(bool)
    design = bootstrap._Design.of(pos, scores, by_rows=by_rows)
    rng = np.random.default_rng(seed)
    for _ in range(3):
        pos_rows, neg_rows = _stratified_rows(rng, y)
        w = _weights(y, pos_rows, neg_rows)
        if by_rows:
            mats = design.pos.from_rows(pos_rows[None, :]), design.neg.from_rows(neg_rows[None, :])
        else:
            joint = [
                np.bincount(side.joint[rows], minlength=side.sizes.size)[None, :].astype(float)
                for side, rows in ((design.pos, pos_rows), (design.neg, neg_rows))
            ]
            mats = design.pos.from_joint(joint[0]), design.neg.from_joint(joint[1])
        for s, got in zip(scores, design.metrics(*mats, ("roc_auc", "pr_auc")), strict=True):
            assert got["roc_auc"][0] == pytest.approx(
                roc_auc_score(y, s, sample_weight=w), abs=1e-9
            )
            assert got["pr_auc"][0] == pytest.approx(
                average_precision_score(y, s, sample_weight=w), abs=1e-9
            )


@settings(max_examples=40, deadline=None)
@given(data=samples())
def test_original_counts_reproduce_the_point_metrics(data) -> None:
    y, (s,) = data
    pos = y.astype(bool)
    design = bootstrap._Design.of(pos, [s], by_rows=False)
    mats = (
        design.pos.from_joint(design.pos.sizes[None, :].astype(float)),
        design.neg.from_joint(design.neg.sizes[None, :].astype(float)),
    )
    got = design.metrics(*mats, ("roc_auc", "pr_auc"))[0]
    assert got["roc_auc"][0] == pytest.approx(roc_auc_score(y, s), abs=1e-9)
    assert got["pr_auc"][0] == pytest.approx(average_precision_score(y, s), abs=1e-9)


@pytest.mark.parametrize(
    "sizes",
    [[1, 2, 1, 3, 1], [50_000, 30_000, 20_000, 7, 1]],
    ids=["row-draws", "poisson-then-exact-total"],
)
def test_multinomial_draws_have_exact_totals_and_multinomial_moments(sizes) -> None:
    sizes = np.array(sizes)
    n = int(sizes.sum())
    p = sizes / n
    counts = bootstrap._multinomial(np.random.default_rng(3), sizes, 4000)
    assert (counts.sum(axis=1) == n).all()
    assert (counts >= 0).all()
    mean, var = counts.mean(axis=0), counts.var(axis=0)
    np.testing.assert_allclose(mean, n * p, rtol=0.02, atol=0.1)
    np.testing.assert_allclose(var, n * p * (1 - p), rtol=0.1, atol=0.1)
    # covariance of two cells: -n p_i p_j
    cov = np.cov(counts[:, 0], counts[:, 1])[0, 1]
    assert cov == pytest.approx(-n * p[0] * p[1], rel=0.15, abs=0.05)


def test_same_seed_same_interval_and_the_method_is_recorded() -> None:
    rng = np.random.default_rng(0)
    y = (rng.random(3000) < 0.05).astype(int)
    s = rng.normal(size=3000) + y
    a = bootstrap_ci(y, s, "roc_auc", resamples=300, seed=11)
    assert a == bootstrap_ci(y, s, "roc_auc", resamples=300, seed=11)
    assert a != bootstrap_ci(y, s, "roc_auc", resamples=300, seed=12)
    assert (a.level, a.method, a.resamples, a.seed) == (
        0.95,
        "stratified_bootstrap_percentile",
        300,
        11,
    )
    assert a.lower < roc_auc_score(y, s) < a.upper
    both = bootstrap_cis(y, s, resamples=300, seed=11)
    assert both["roc_auc"] == a
    assert both["pr_auc"] == bootstrap_ci(y, s, "pr_auc", resamples=300, seed=11)


def test_a_missing_class_gives_no_interval() -> None:
    s = np.array([0.1, 0.4, 0.8])
    for y in (np.zeros(3, int), np.ones(3, int)):
        assert bootstrap_ci(y, s, "roc_auc", resamples=10, seed=0) is None
        assert bootstrap_ci(y, s, "pr_auc", resamples=10, seed=0) is None
        assert paired_bootstrap_delta(y, s, s, "roc_auc", resamples=10, seed=0) is None
        assert delong_ci(y, s) is None


def test_bad_arguments_are_refused() -> None:
    y, s = np.array([0, 1]), np.array([0.2, 0.8])
    with pytest.raises(ValueError, match="metric"):
        bootstrap_ci(y, s, "accuracy", resamples=10, seed=0)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="resamples"):
        bootstrap_ci(y, s, "roc_auc", resamples=0, seed=0)
    with pytest.raises(ValueError, match="finite"):
        bootstrap_ci(y, np.array([np.nan, 0.1]), "roc_auc", resamples=10, seed=0)
    with pytest.raises(ValueError, match="one length"):
        bootstrap_ci(y, np.array([0.1]), "roc_auc", resamples=10, seed=0)


def _binormal(rng: np.random.Generator, n: int, rate: float, shift: float):
    y = (rng.random(n) < rate).astype(np.int64)
    return y, rng.normal(size=n) + shift * y


def _true_ap(rate: float, shift: float) -> float:
    """Population average precision of the binormal model: integral of precision d(recall)."""
    t = np.linspace(-8, 8 + shift, 200_001)
    nd = NormalDist()
    tpr = np.array([1 - nd.cdf(v - shift) for v in t[::100]])
    fpr = np.array([1 - nd.cdf(v) for v in t[::100]])
    precision = rate * tpr / np.maximum(rate * tpr + (1 - rate) * fpr, 1e-300)
    return float(np.sum(-np.diff(tpr) * (precision[1:] + precision[:-1]) / 2))


def test_roc_auc_interval_covers_the_truth_at_about_its_nominal_rate() -> None:
    """200 simulated test windows (binormal scores, 5% positives): the 95% interval should hold
    the population AUC about 95% of the time (binomial sd ~1.5%)."""
    rng = np.random.default_rng(2026)
    shift = 1.5
    truth = NormalDist().cdf(shift / np.sqrt(2))
    covered = 0
    for i in range(200):
        y, s = _binormal(rng, 3000, 0.05, shift)
        ci = bootstrap_ci(y, s, "roc_auc", resamples=300, seed=i)
        covered += ci.lower <= truth <= ci.upper
    assert 0.89 <= covered / 200 <= 0.99


def test_pr_auc_interval_covers_the_truth_at_about_its_nominal_rate() -> None:
    rng = np.random.default_rng(7)
    rate, shift = 0.05, 2.0
    truth = _true_ap(rate, shift)
    covered = 0
    for i in range(200):
        y, s = _binormal(rng, 4000, rate, shift)
        ci = bootstrap_ci(y, s, "pr_auc", resamples=300, seed=i)
        covered += ci.lower <= truth <= ci.upper
    # average precision is a biased estimator at small positive counts: a little looser
    assert 0.85 <= covered / 200 <= 0.99


def test_bootstrap_and_delong_agree_on_a_large_sample() -> None:
    rng = np.random.default_rng(5)
    y, s = _binormal(rng, 50_000, 0.01, 1.8)
    boot = bootstrap_ci(y, s, "roc_auc", resamples=1000, seed=1)
    delong = delong_ci(y, s)
    assert delong.method == "delong" and delong.resamples == 0
    width_b, width_d = boot.upper - boot.lower, delong.upper - delong.lower
    assert width_b == pytest.approx(width_d, rel=0.15)
    assert (boot.lower + boot.upper) / 2 == pytest.approx(
        (delong.lower + delong.upper) / 2, abs=width_d / 5
    )


def test_paired_delta_of_a_model_with_itself_is_exactly_zero() -> None:
    rng = np.random.default_rng(1)
    y, s = _binormal(rng, 2000, 0.1, 1.0)
    for metric in ("roc_auc", "pr_auc"):
        ci = paired_bootstrap_delta(y, s, s, metric, resamples=200, seed=3)
        assert (ci.lower, ci.upper) == (0.0, 0.0)
        assert ci.method == "paired_stratified_bootstrap_percentile"


def test_paired_delta_is_narrower_than_unpaired_and_centred_on_the_difference() -> None:
    """Two correlated models: pairing cancels the shared noise of the test rows."""
    rng = np.random.default_rng(8)
    y = (rng.random(20_000) < 0.02).astype(np.int64)
    base = rng.normal(size=y.size) + 1.5 * y
    cand, champ = base + 0.3 * rng.normal(size=y.size), base + 0.6 * rng.normal(size=y.size)
    paired = paired_bootstrap_delta(y, cand, champ, "roc_auc", resamples=500, seed=2)
    delta = roc_auc_score(y, cand) - roc_auc_score(y, champ)
    assert paired.lower < delta < paired.upper
    a = bootstrap_ci(y, cand, "roc_auc", resamples=500, seed=2)
    b = bootstrap_ci(y, champ, "roc_auc", resamples=500, seed=2)
    unpaired_width = np.hypot(a.upper - a.lower, b.upper - b.lower)
    assert paired.upper - paired.lower < 0.7 * unpaired_width


def test_rate_intervals_are_those_of_the_row_bootstrap() -> None:
    """At a fixed threshold the stratified bootstrap of precision and recall only needs two
    binomials; compare with resampling rows."""
    rng = np.random.default_rng(4)
    y = (rng.random(5000) < 0.05).astype(np.int64)
    alert = rng.random(5000) < np.where(y == 1, 0.6, 0.02)
    tp, fp, pos = int((alert & (y == 1)).sum()), int((alert & (y == 0)).sum()), int(y.sum())
    cis = rate_intervals(tp, fp, pos, y.size - pos, resamples=4000, seed=9)
    naive = []
    for _ in range(2000):
        w = _resample_weights(rng, y)
        t, f = (w * alert * y).sum(), (w * alert * (1 - y)).sum()
        naive.append(t / (t + f))
    lo, hi = np.quantile(naive, [0.025, 0.975])
    assert cis["precision"].lower == pytest.approx(lo, abs=0.01)
    assert cis["precision"].upper == pytest.approx(hi, abs=0.01)
    assert cis["recall"].lower < tp / pos < cis["recall"].upper
    assert cis["alert_rate"].lower < (tp + fp) / y.size < cis["alert_rate"].upper


def test_without_positives_recall_and_f1_have_no_interval() -> None:
    cis = rate_intervals(0, 40, 0, 500, resamples=200, seed=1)
    assert cis["recall"] is None and cis["f1"] is None
    # precision (all alerts false) and the alert rate are still measured
    assert cis["precision"].lower == cis["precision"].upper == 0.0
    assert cis["alert_rate"].lower < 40 / 500 < cis["alert_rate"].upper


def test_wilson_interval_matches_the_textbook_value() -> None:
    ci = wilson_ci(8, 10)
    assert (round(ci.lower, 4), round(ci.upper, 4)) == (0.4902, 0.9433)
    assert wilson_ci(0, 0) is None
