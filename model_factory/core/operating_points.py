"""Operating thresholds chosen on validation, applied unchanged to test; the decision policy."""

from __future__ import annotations

import math
from fractions import Fraction

import numpy as np

from model_factory.contracts import (
    DecisionPolicy,
    EvaluationSettings,
    OperatingMetrics,
    OperatingPoint,
    ThresholdRule,
)
from model_factory.core.bootstrap import rate_intervals

# A threshold picked on fewer validation alerts than this is flagged in the policy's notes.
FEW_ALERTS = 30


def _descending_runs(y: np.ndarray, score: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Distinct scores, highest first, with the alerts and true alerts of score >= each."""
    order = np.argsort(-score, kind="stable")
    s, t = score[order], y[order]
    last = np.r_[np.nonzero(np.diff(s))[0], s.size - 1]
    return s[last], last + 1, np.cumsum(t)[last]


def threshold_for(rule: ThresholdRule, y: np.ndarray, score: np.ndarray) -> float | None:
    """The threshold a rule picks on a labelled window; None when the rule cannot be met.

    alert_rate: the score of the ceil(target x rows)-th highest row (ties alert together, so the
    realised rate can be higher). precision: the lowest threshold whose precision reaches the
    target, i.e. the most recall at that precision.
    """
    if score.size == 0:
        return None
    if rule.basis == "alert_rate":
        # the target as written (0.07), not its binary float: 0.07 * 100 is 7.000000000000001
        # in floating point, and its ceiling would alert one row too many
        k = max(1, math.ceil(Fraction(str(rule.target)) * score.size))
        return float(np.partition(score, score.size - k)[score.size - k])
    thresholds, alerts, hits = _descending_runs(y.astype(np.int64), score)
    ok = np.nonzero(hits / alerts >= rule.target)[0]
    return float(thresholds[ok[-1]]) if ok.size else None


def operating_metrics(
    y: np.ndarray,
    score: np.ndarray,
    threshold: float,
    *,
    resamples: int = 0,
    seed: int = 0,
    level: float = 0.95,
) -> OperatingMetrics:
    """Alerting on score >= threshold; intervals from the stratified bootstrap when resamples > 0.

    Without positives recall and F1 are None (not measured), and so are their intervals.
    """
    y = y.astype(np.int64)
    alert = score >= threshold
    positives = int(y.sum())
    tp = int((alert & (y == 1)).sum())
    alerts = int(alert.sum())
    rows = int(y.size)
    cis: dict = {}
    if resamples > 0 and rows:
        cis = {
            f"{k}_ci": v
            for k, v in rate_intervals(
                tp,
                alerts - tp,
                positives,
                rows - positives,
                resamples=resamples,
                seed=seed,
                level=level,
            ).items()
        }
    return OperatingMetrics(
        rows=rows,
        positives=positives,
        alerts=alerts,
        true_positives=tp,
        alert_rate=alerts / rows if rows else 0.0,
        precision=tp / alerts if alerts else 0.0,
        recall=tp / positives if positives else None,
        f1=2 * tp / (alerts + positives) if positives else None,
        **cis,
    )


def _name(rule: ThresholdRule) -> str:
    return f"{rule.basis}_{100 * rule.target:g}%"


def decision_policy(
    settings: EvaluationSettings, y_val: np.ndarray, s_val: np.ndarray
) -> DecisionPolicy:
    """Review and decline thresholds from the validation window (decline never below review)."""
    review = threshold_for(settings.review, y_val, s_val)
    decline = threshold_for(settings.decline, y_val, s_val)
    notes = []
    if review is None:
        notes.append(
            f"review rule {_name(settings.review)} not attainable on val: nothing is reviewed"
        )
    if decline is None:
        notes.append(
            f"decline rule {_name(settings.decline)} not attainable on val: "
            "nothing is declined automatically"
        )
    if review is None and decline is not None:
        notes.append(
            f"decline threshold {decline:.6g} dropped: nothing is reviewed, and a row is declined "
            "only if it would be reviewed"
        )
        decline = None
    if review is not None and decline is not None and decline < review:
        notes.append(
            f"decline threshold {decline:.6g} was below the review threshold "
            f"{review:.6g}: raised to it (decline only what would be reviewed)"
        )
        decline = review
    for name, th in (("review", review), ("decline", decline)):
        alerts = int((s_val >= th).sum()) if th is not None else None
        if alerts is not None and alerts < FEW_ALERTS:
            notes.append(
                f"the {name} threshold rests on only {alerts} validation alert(s): "
                "its precision on test is very uncertain"
            )
    return DecisionPolicy(
        review_threshold=review,
        review_rule=settings.review,
        decline_threshold=decline,
        decline_rule=settings.decline,
        notes=notes,
    )


def operating_points(
    settings: EvaluationSettings,
    policy: DecisionPolicy,
    y_val: np.ndarray,
    s_val: np.ndarray,
    y_test: np.ndarray,
    s_test: np.ndarray,
) -> list[OperatingPoint]:
    """The policy's thresholds and the configured targets, each measured on val and on test."""
    boot = {
        "resamples": settings.bootstrap_resamples,
        "seed": settings.bootstrap_seed,
        "level": settings.confidence_level,
    }
    chosen = [
        ("review", policy.review_rule, policy.review_threshold),
        ("decline", policy.decline_rule, policy.decline_threshold),
    ]
    rules = [ThresholdRule(basis="alert_rate", target=r) for r in settings.alert_rates]
    rules += [ThresholdRule(basis="precision", target=p) for p in settings.target_precisions]
    chosen += [(_name(r), r, threshold_for(r, y_val, s_val)) for r in rules]
    return [
        OperatingPoint(
            name=name,
            rule=rule,
            threshold=th,
            val=None if th is None else operating_metrics(y_val, s_val, th),
            test=None if th is None else operating_metrics(y_test, s_test, th, **boot),
        )
        for name, rule, th in chosen
    ]
