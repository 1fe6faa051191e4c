"""Pieces of the report on their own: threshold rules, slice segments, PSI."""

from __future__ import annotations

import math

import numpy as np
import polars as pl
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from model_factory.contracts import EvaluationSettings, SliceSpec, ThresholdRule
from model_factory.core.drift import level, psi
from model_factory.core.operating_points import decision_policy, operating_metrics, threshold_for
from model_factory.core.slices import segments
from model_factory.errors import ConfigError


@st.composite
def window(draw: st.DrawFn):
    n = draw(st.integers(1, 400))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    y = (rng.random(n) < draw(st.sampled_from([0.5, 0.1, 0.02]))).astype(np.int64)
    if draw(st.booleans()):
        score = rng.choice(np.linspace(0, 1, draw(st.integers(1, 12))), size=n)
    else:
        score = np.clip(rng.random(n) + 0.3 * y, 0, 1)
    return y, score


@settings(max_examples=150, deadline=None)
@given(data=window(), rate=st.sampled_from([0.001, 0.005, 0.01, 0.2, 0.9]))
def test_alert_rate_rule_alerts_at_least_the_target_and_ties_only_beyond(data, rate) -> None:
    y, score = data
    th = threshold_for(ThresholdRule(basis="alert_rate", target=rate), y, score)
    k = max(1, math.ceil(rate * score.size))
    assert (score >= th).sum() >= k  # ties at the threshold alert together
    assert (score > th).sum() < k  # without the tied rows it would be under the target


@settings(max_examples=150, deadline=None)
@given(data=window(), target=st.sampled_from([0.1, 0.5, 0.9]))
def test_precision_rule_picks_the_lowest_threshold_reaching_the_target(data, target) -> None:
    y, score = data
    th = threshold_for(ThresholdRule(basis="precision", target=target), y, score)
    reaching = [t for t in np.unique(score) if y[score >= t].mean() >= target]
    if not reaching:
        assert th is None
    else:
        assert th == min(reaching)
        m = operating_metrics(y, score, th)
        assert m.precision >= target


def test_operating_metrics_without_alerts_have_zero_precision() -> None:
    m = operating_metrics(np.array([0, 1, 0]), np.array([0.1, 0.2, 0.3]), 0.9, resamples=50, seed=1)
    assert (m.alerts, m.precision, m.recall, m.f1) == (0, 0.0, 0.0, 0.0)
    assert m.precision_ci.lower == m.precision_ci.upper == 0.0


def test_band_segments_cover_every_row_once_and_nulls_get_their_own() -> None:
    col = pl.Series([5.0, 20.0, 49.99, 50.0, 1000.0, None, float("nan")])
    spec = SliceSpec(name="amount_band", column="amount", edges=[20, 50])
    got = segments(spec, col)
    assert [label for label, _ in got] == ["< 20", "[20, 50)", ">= 50", "missing"]
    assert [m.sum() for _, m in got] == [1, 2, 2, 2]
    assert sum(m for _, m in got).tolist() == [1] * 7
    named = SliceSpec(name="h", column="c", edges=[1], labels=["new", "known"])
    assert [label for label, _ in segments(named, pl.Series([0, 3, 7]))] == ["new", "known"]


def test_value_segments_and_too_many_values() -> None:
    got = segments(
        SliceSpec(name="night", column="is_night"), pl.Series([1, 0, 0, 1, 1], dtype=pl.Int8)
    )
    assert [(label, int(m.sum())) for label, m in got] == [("is_night = 0", 2), ("is_night = 1", 3)]
    with pytest.raises(ConfigError, match="distinct values"):
        segments(SliceSpec(name="amt", column="amount"), pl.Series(np.arange(30.0)))


def test_slice_spec_validation() -> None:
    with pytest.raises(ValueError, match="increasing"):
        SliceSpec(name="a", column="x", edges=[2, 1])
    with pytest.raises(ValueError, match="labels"):
        SliceSpec(name="a", column="x", edges=[1], labels=["one"])


def test_psi_of_a_binary_feature_uses_two_bins_and_reads_the_usual_levels() -> None:
    rng = np.random.default_rng(1)
    ref = (rng.random(50_000) < 0.2).astype(float)
    cur = (rng.random(50_000) < 0.5).astype(float)
    value, _, _ = psi(ref, cur)
    p, q = 0.2, 0.5  # two bins: exactly the two-bin PSI up to sampling
    expected = (q - p) * math.log(q / p) + (p - q) * math.log((1 - q) / (1 - p))
    assert value == pytest.approx(expected, rel=0.05)
    assert (level(0.05), level(0.2), level(0.3)) == ("stable", "moderate", "major")


def test_psi_counts_missing_values_as_a_bin() -> None:
    ref = np.r_[np.arange(1000.0), np.full(10, np.nan)]
    cur = np.r_[np.arange(1000.0), np.full(500, np.nan)]
    value, ref_null, cur_null = psi(ref, cur)
    assert ref_null == pytest.approx(10 / 1010) and cur_null == pytest.approx(500 / 1500)
    assert value > 0.25


def test_a_policy_threshold_resting_on_few_validation_alerts_is_flagged() -> None:
    rng = np.random.default_rng(0)
    y = (rng.random(5000) < 0.02).astype(np.int64)
    score = rng.random(5000) * 0.9  # uninformative, except:
    score[0], y[0] = 1.0, 1  # the single top row is a fraud: precision 1 at one alert
    settings = EvaluationSettings(decline=ThresholdRule(basis="precision", target=0.99))
    policy = decision_policy(settings, y, score)
    assert policy.decline_threshold == 1.0
    assert any("decline threshold rests on only 1 validation alert" in n for n in policy.notes)
    assert not any(n.startswith("the review") for n in policy.notes)
