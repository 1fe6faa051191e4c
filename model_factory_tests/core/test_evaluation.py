"""Split metrics against scikit-learn, on random data with heavy ties and rare positives."""

from __future__ import annotations

from fractions import Fraction
from itertools import pairwise

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn.calibration import calibration_curve
from sklearn.metrics import (
    average_precision_score,
    brier_score_loss,
    f1_score,
    log_loss,
    precision_recall_curve,
    precision_score,
    recall_score,
    roc_auc_score,
    roc_curve,
)

from model_factory.core.evaluation import average_precision, metric_set, roc_auc
from model_factory.core.metrics import curves, ranking
from model_factory.core.report_html import calibration_plot

THRESHOLDS = [0.1, 0.3, 0.5, 0.7, 0.9]
# A few values only, so most scores are tied; includes exact calibration bin edges and 0 and 1.
TIED_SCORES = [0.0, 0.05, 0.1, 0.3, 0.5, 0.5000001, 0.7, 0.9, 1.0]


@st.composite
def labelled_scores(draw: st.DrawFn, *, min_size: int = 1, lo: float = 0.0, hi: float = 1.0):
    """(y, score): scores either from a handful of tied values or continuous; positives common
    or rare (about one in fifty, often none)."""
    n = draw(st.integers(min_size, 300))
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    rate = draw(st.sampled_from([0.5, 0.1, 0.02, 0.005]))
    y = (rng.random(n) < rate).astype(np.int64)
    if draw(st.booleans()):
        pool = np.clip(np.array(TIED_SCORES), lo, hi)
        score = rng.choice(pool[: draw(st.integers(1, len(pool)))], size=n)
    else:
        score = rng.uniform(lo, hi, n)
        if draw(st.booleans()):  # informative scores: positives shifted up
            score = np.clip(score + 0.3 * y, lo, hi)
    return y, score.astype(np.float64)


def _two_classes(y: np.ndarray) -> bool:
    return 0 < int(y.sum()) < y.size


@settings(max_examples=100, deadline=None)
@given(data=labelled_scores())
def test_roc_auc_matches_sklearn_with_ties_and_rare_positives(data) -> None:
    y, score = data
    got = roc_auc(y, score)
    if _two_classes(y):
        assert got == pytest.approx(roc_auc_score(y, score), rel=1e-12, abs=1e-12)
    else:
        assert got is None


@settings(max_examples=100, deadline=None)
@given(data=labelled_scores())
def test_average_precision_matches_sklearn_with_ties_and_rare_positives(data) -> None:
    y, score = data
    got = average_precision(y, score)
    if y.sum() > 0:
        assert got == pytest.approx(average_precision_score(y, score), rel=1e-12, abs=1e-12)
    else:
        assert got is None


def test_single_class_inputs_have_no_auc() -> None:
    score = np.array([0.1, 0.4, 0.4, 0.9])
    assert roc_auc(np.zeros(4, dtype=np.int64), score) is None
    assert roc_auc(np.ones(4, dtype=np.int64), score) is None
    assert average_precision(np.zeros(4, dtype=np.int64), score) is None
    # all positives: every threshold has precision 1
    assert average_precision(np.ones(4, dtype=np.int64), score) == pytest.approx(1.0)
    m = metric_set("test", np.zeros(4, dtype=np.int64), score, THRESHOLDS)
    assert m.roc_auc is None and m.pr_auc is None
    assert m.positives == 0 and m.positive_rate == 0.0
    # no positives: nothing to recall, so recall and F1 are not measured (never a 0 that reads
    # as a model missing every fraud); precision is measured wherever something is alerted
    assert all(t.recall is None and t.f1 is None for t in m.at_thresholds)
    assert all(t.precision == 0.0 for t in m.at_thresholds)
    m1 = metric_set("val", np.ones(4, dtype=np.int64), score, THRESHOLDS)
    assert m1.roc_auc is None
    assert m1.pr_auc == pytest.approx(1.0)


def test_all_scores_tied_gives_auc_one_half_and_ap_the_base_rate() -> None:
    y = np.array([0, 1, 0, 0, 1, 0, 0, 0], dtype=np.int64)
    score = np.full(8, 0.42)
    assert roc_auc(y, score) == pytest.approx(0.5)
    assert average_precision(y, score) == pytest.approx(2 / 8)


@settings(max_examples=60, deadline=None)
@given(data=labelled_scores(lo=1e-6, hi=1 - 1e-6), split=st.sampled_from(["train", "val", "test"]))
def test_metric_set_matches_sklearn(data, split: str) -> None:
    y, score = data
    m = metric_set(split, y, score, THRESHOLDS)
    assert m.split == split
    assert m.rows == y.size
    assert m.positives == int(y.sum())
    assert m.positive_rate == pytest.approx(y.mean())
    assert m.brier == pytest.approx(brier_score_loss(y, score), rel=1e-12, abs=1e-15)
    assert m.log_loss == pytest.approx(log_loss(y, score, labels=[0, 1]), rel=1e-9, abs=1e-12)
    if _two_classes(y):
        assert m.roc_auc == pytest.approx(roc_auc_score(y, score), rel=1e-12, abs=1e-12)
    else:
        assert m.roc_auc is None
    if y.sum() > 0:
        assert m.pr_auc == pytest.approx(average_precision_score(y, score), rel=1e-12, abs=1e-12)
    else:
        assert m.pr_auc is None

    assert [t.threshold for t in m.at_thresholds] == THRESHOLDS
    # one column per threshold, so sklearn scores every threshold in one multilabel call
    alerts = (score[:, None] >= np.array(THRESHOLDS)[None, :]).astype(np.int64)
    truth = np.repeat(y[:, None], len(THRESHOLDS), axis=1)
    precision = precision_score(truth, alerts, average=None, zero_division=0.0)
    recall = recall_score(truth, alerts, average=None, zero_division=0.0)
    assert [t.alerts for t in m.at_thresholds] == alerts.sum(axis=0).tolist()
    assert [t.precision for t in m.at_thresholds] == pytest.approx(list(precision), abs=1e-12)
    if y.sum() > 0:
        assert [t.recall for t in m.at_thresholds] == pytest.approx(list(recall), abs=1e-12)
    else:  # sklearn's zero_division stands in for what is not measured
        assert all(t.recall is None and t.f1 is None for t in m.at_thresholds)


@settings(max_examples=100, deadline=None)
@given(data=labelled_scores())
def test_calibration_bins_hold_each_score_in_the_tenth_it_falls_in(data) -> None:
    """Ten bins [k/10, (k+1)/10), the last closed at 1; exact edges go to the upper bin."""
    y, score = data
    bins = metric_set("test", y, score, THRESHOLDS).calibration
    assert len(bins) == 10
    for k, b in enumerate(bins):
        assert b.lower == pytest.approx(k / 10, abs=1e-12)
        assert b.upper == pytest.approx((k + 1) / 10, abs=1e-12)
    # exact rational arithmetic: which tenth each float score really lies in
    expected = np.array([min(int(Fraction(s) * 10), 9) for s in score])
    assert sum(b.rows for b in bins) == y.size
    for k, b in enumerate(bins):
        mask = expected == k
        assert b.rows == int(mask.sum())
        if b.rows:
            assert b.mean_score == pytest.approx(float(score[mask].mean()), rel=1e-12)
            assert b.observed_rate == pytest.approx(float(y[mask].mean()), rel=1e-12)
        else:
            assert b.mean_score is None and b.observed_rate is None


@settings(max_examples=100, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), n=st.integers(1, 400))
def test_calibration_matches_sklearn_calibration_curve_away_from_bin_edges(seed: int, n: int):
    rng = np.random.default_rng(seed)
    score = rng.uniform(0, 1, n)
    # sklearn closes bins on the right; away from the edges both conventions agree
    edges = np.linspace(0, 1, 11)
    score = score[np.min(np.abs(score[:, None] - edges[None, :]), axis=1) > 1e-9]
    y = (rng.random(score.size) < score).astype(np.int64)
    if score.size == 0:
        return
    bins = [b for b in metric_set("val", y, score, THRESHOLDS).calibration if b.rows]
    prob_true, prob_pred = calibration_curve(y, score, n_bins=10, strategy="uniform")
    assert [b.observed_rate for b in bins] == pytest.approx(list(prob_true), rel=1e-12)
    assert [b.mean_score for b in bins] == pytest.approx(list(prob_pred), rel=1e-12)


def test_threshold_metrics_count_scores_equal_to_the_threshold_as_alerts() -> None:
    y = np.array([1, 0, 1, 0, 0], dtype=np.int64)
    score = np.array([0.5, 0.5, 0.49, 0.1, 0.9])
    (t,) = metric_set("test", y, score, [0.5]).at_thresholds
    assert t.alerts == 3  # 0.5, 0.5 and 0.9
    assert t.precision == pytest.approx(1 / 3)
    assert t.recall == pytest.approx(1 / 2)


@settings(max_examples=60, deadline=None)
@given(data=labelled_scores())
def test_threshold_f1_and_alert_rate_match_sklearn(data) -> None:
    y, score = data
    m = metric_set("test", y, score, THRESHOLDS)
    for t in m.at_thresholds:
        alerts = (score >= t.threshold).astype(np.int64)
        if y.sum() == 0:
            assert t.f1 is None  # no positives: not measured
            continue
        assert t.f1 == pytest.approx(f1_score(y, alerts, zero_division=0.0), abs=1e-9)
        assert t.alert_rate == pytest.approx(alerts.mean(), abs=1e-12)


def test_the_reliability_plot_names_the_ece_of_the_bins_it_draws() -> None:
    """Fraud scores crowd near 0: on uniform bins every row falls in the first, where over- and
    under-prediction cancel (ECE ~0.0005 here); the equal-count line must carry its own ECE."""
    rng = np.random.default_rng(0)
    score = rng.uniform(0, 0.1, 20_000)
    y = (rng.random(score.size) < 0.05 + 0.2 * (score - 0.05)).astype(np.int64)  # slope 0.2
    m = metric_set("test", y, score, THRESHOLDS)
    assert m.calibration[0].rows == score.size
    # an independent count: ten equal-count bins of the sorted scores
    order = np.argsort(score)
    by_count = sum(
        part.size / score.size * abs(score[part].mean() - y[part].mean())
        for part in np.array_split(order, 10)
    )
    assert m.ece_quantile == pytest.approx(by_count, rel=1e-9)
    assert m.ece_quantile > 20 * m.ece
    svg = calibration_plot(m)
    assert f"equal-count bins (ECE {m.ece_quantile:.4f})" in svg
    assert f"uniform bins (ECE {m.ece:.4f})" in svg


@settings(max_examples=60, deadline=None)
@given(data=labelled_scores())
def test_ece_is_the_row_weighted_gap_of_the_reliability_bins(data) -> None:
    y, score = data
    m = metric_set("test", y, score, THRESHOLDS)
    expected = sum(
        b.rows / y.size * abs(b.mean_score - b.observed_rate) for b in m.calibration if b.rows
    )
    assert m.ece == pytest.approx(expected, abs=1e-12)
    by_count = sum(
        b.rows / y.size * abs(b.mean_score - b.observed_rate)
        for b in m.calibration_quantile
        if b.rows
    )
    assert m.ece_quantile == pytest.approx(by_count, abs=1e-12)
    # equal-count bins hold every row once, in score order, tied scores together
    q = m.calibration_quantile
    assert sum(b.rows for b in q) == y.size
    assert all(a.upper <= b.lower + 1e-15 for a, b in pairwise(q))
    for b in q:
        inside = (score >= b.lower) & ((score < b.upper) | (b is q[-1]) & (score <= b.upper))
        assert b.rows == int(inside.sum())


@settings(max_examples=60, deadline=None)
@given(data=labelled_scores(min_size=2))
def test_curves_lie_on_sklearns_roc_and_pr_curves(data) -> None:
    y, score = data
    if not _two_classes(y):
        return
    c = curves(y, score, points=10_000)  # no thinning at these sizes
    fpr, tpr, _ = roc_curve(y, score, drop_intermediate=False)
    np.testing.assert_allclose(c.roc.x, np.round(fpr, 6), atol=1e-9)
    np.testing.assert_allclose(c.roc.y, np.round(tpr, 6), atol=1e-9)
    precision, recall, _ = precision_recall_curve(y, score)
    # sklearn lists thresholds ascending and appends (recall 0, precision 1)
    np.testing.assert_allclose(c.pr.x, np.round(recall[:-1][::-1], 6), atol=1e-9)
    np.testing.assert_allclose(c.pr.y, np.round(precision[:-1][::-1], 6), atol=1e-9)
    h = c.score_histogram
    assert sum(h.positives) == y.sum() and sum(h.negatives) == y.size - y.sum()


def test_thinned_curves_keep_their_ends_and_at_most_the_asked_points() -> None:
    rng = np.random.default_rng(0)
    y = (rng.random(20_000) < 0.1).astype(np.int64)
    c = curves(y, rng.random(20_000) + 0.2 * y, points=100)
    assert len(c.roc.x) <= 102 and (c.roc.x[0], c.roc.y[0]) == (0.0, 0.0)
    assert (c.roc.x[-1], c.roc.y[-1]) == (1.0, 1.0)


@settings(max_examples=80, deadline=None)
@given(data=labelled_scores())
def test_one_pass_ranking_matches_sklearn_and_a_given_order_changes_nothing(data) -> None:
    y, score = data
    auc, ap = ranking(y, score)
    assert auc == (
        None if not _two_classes(y) else pytest.approx(roc_auc_score(y, score), abs=1e-9)
    )
    assert ap == (
        None if y.sum() == 0 else pytest.approx(average_precision_score(y, score), abs=1e-9)
    )
    assert ranking(y, score, np.argsort(-score, kind="stable")) == (auc, ap)
