"""Leakage canaries: a control trained on shuffled labels, and the "too good to be true" gate.

Each control is a small XGBoost model trained on a seeded sample of the training rows with
their labels shuffled, then scored on the real test labels: the pipeline's result when there is
nothing to learn, which must be chance. One control is erratic on fraud data (measured on the
demo: a single control lands anywhere in about 0.5 +/- 0.1, and below 0.5 on average when it has
many rows, because honest features put the rare frauds in sparse regions where a model of noise
stays near its prior), so several small ones are averaged and the mean is judged against the
spread they show.

The ceilings catch the other face of leakage: a model that is better than a fraud model can
honestly be. Both verdicts go into the gate receipt as ``suspected_leakage``; neither can be
overridden (an override accepts a weaker model, not a model whose evidence is void).
"""

from __future__ import annotations

import math

import numpy as np
import polars as pl
import xgboost as xgb
from scipy.stats import t as student_t

from model_factory.contracts import (
    LOWER_IS_BETTER,
    CanarySettings,
    ConfidenceInterval,
    EvaluationReport,
    GateCriterion,
    LeakageGuard,
    LeakageVerdict,
    ShuffledLabelCanary,
)
from model_factory.core.metrics import roc_auc
from model_factory.core.training import feature_matrix

SUSPECTED_LEAKAGE = "suspected_leakage"
CONTROL_LEVEL = 0.95
# Positives a control's training sample is drawn to hold (on average), whatever train_rows says.
CONTROL_POSITIVES = 30


def shuffled_label_canary(
    frame: pl.DataFrame, features: list[str], settings: CanarySettings, nthread: int
) -> ShuffledLabelCanary | None:
    """Train the controls on shuffled training labels and score the real test rows; None when
    disabled or when a split lacks a class. Seeded throughout, so a re-run gives the same bytes."""
    if not settings.enabled:
        return None
    train = frame.filter(pl.col("split") == "train")
    test = frame.filter(pl.col("split") == "test")
    y_train, y_test = train["label"].to_numpy(), test["label"].to_numpy()
    if int(y_train.sum()) in (0, train.height) or int(y_test.sum()) in (0, test.height):
        return None
    x_train = feature_matrix(train, features)
    x_test = xgb.DMatrix(feature_matrix(test, features), feature_names=features, nthread=nthread)
    # A control with next to no positives predicts a constant, whose ROC-AUC is 0.5 whatever the
    # frame holds: it would pass without testing anything. The sample grows (up to the whole
    # train split) until it holds about CONTROL_POSITIVES of them.
    wanted = math.ceil(CONTROL_POSITIVES * train.height / int(y_train.sum()))
    rows = min(max(settings.train_rows, wanted), train.height)
    aucs, fewest_positives = [], rows
    for k in range(settings.controls):
        rng = np.random.default_rng([settings.seed % (1 << 63), k])  # numpy takes no negatives
        pick = np.sort(rng.choice(train.height, rows, replace=False))
        shuffled = rng.permutation(y_train)[pick]
        fewest_positives = min(fewest_positives, int(shuffled.sum()))
        params = {
            "objective": "binary:logistic",
            "tree_method": "hist",
            "max_depth": settings.max_depth,
            "eta": 0.3,
            "seed": settings.seed + k,
            "nthread": nthread,
            "verbosity": 0,
        }
        dtrain = xgb.DMatrix(x_train[pick], label=shuffled, feature_names=features, nthread=nthread)
        booster = xgb.train(params, dtrain, num_boost_round=settings.rounds)
        auc = roc_auc(y_test, booster.predict(x_test).astype(np.float64))
        if auc is not None:
            aucs.append(float(auc))
    if not aucs:
        return None
    mean = float(np.mean(aucs))
    spread = float(np.std(aucs, ddof=1) / np.sqrt(len(aucs))) if len(aucs) > 1 else 0.0
    # Student's t: the spread is estimated from a handful of controls (8 by default), and the
    # normal quantile's interval would cover the mean about 90% of the time, not 95%
    q = float(student_t.ppf(0.5 + CONTROL_LEVEL / 2, len(aucs) - 1)) if len(aucs) > 1 else 0.0
    ci = ConfidenceInterval(
        lower=mean - q * spread,
        upper=mean + q * spread,
        level=CONTROL_LEVEL,
        method="Student t interval (controls - 1 degrees of freedom) of the mean over "
        "shuffled-label controls",
        resamples=len(aucs),
        seed=settings.seed,
    )
    positives = int(y_test.sum())
    return ShuffledLabelCanary(
        roc_auc=mean,
        roc_auc_ci=ci,
        control_roc_auc=aucs,
        spread_standard_error=spread,
        controls=len(aucs),
        train_rows=rows,
        train_positives=fewest_positives,
        test_rows=test.height,
        test_positives=positives,
        null_standard_error=null_auc_standard_error(positives, test.height),
        rounds=settings.rounds,
        max_depth=settings.max_depth,
        seed=settings.seed,
        features=len(features),
    )


def _interval(canary: ShuffledLabelCanary) -> str:
    ci = canary.roc_auc_ci
    return "" if ci is None else f" [{ci.lower:.4f}, {ci.upper:.4f}] {ci.level:.0%}"


def canary_standard_error(canary: ShuffledLabelCanary) -> float:
    """How far the controls' mean ROC-AUC strays from 0.5 by chance alone.

    Their spread alone understates it: every control is scored on the same test rows, so what
    those rows happen to be moves all of them together. That shared part is at most one chance
    AUC's standard error on those rows (Hanley-McNeil), which with few test positives is the
    larger term: a small honest week must not read as leakage no override can lift.
    """
    return max(canary.spread_standard_error, canary.null_standard_error)


def null_auc_standard_error(positives: int, rows: int) -> float:
    """Standard error of the ROC-AUC of a score unrelated to the label (Hanley and McNeil)."""
    negatives = rows - positives
    return float(np.sqrt((positives + negatives + 1) / (12.0 * positives * negatives)))


def _ceiling(split: str, metric: str, limit: float, observed: float | None) -> GateCriterion:
    lower = metric in LOWER_IS_BETTER  # "too good" is too low for an error
    passed = observed is None or (observed >= limit if lower else observed <= limit)
    return GateCriterion(
        name=f"{SUSPECTED_LEAKAGE}_{split}_{metric}_ceiling",
        metric=metric,
        kind="point",
        comparator=">=" if lower else "<=",
        threshold=limit,
        policy_floor=None,
        mandatory=True,
        observed=observed,
        passed=passed,
        detail=f"{split} {metric} no better than a fraud model can honestly be",
    )


def judge_leakage(guard: LeakageGuard, report: EvaluationReport) -> LeakageVerdict:
    """Ceilings on the validation and test metrics, and the shuffled-label control within
    chance. Validation counts too: a leak that the test window's honest labels do not share
    (future label information in the features of earlier weeks) shows there first."""
    checks = []
    for split in ("val", "test"):
        metrics = report.metrics.get(split)
        if metrics is None:
            continue
        # With one class only, a ranking metric says nothing of the model (a split of frauds
        # alone has average precision 1 whatever the scores): it is not judged, as a missing
        # ROC-AUC is not
        one_class = metrics.positives in (0, metrics.rows)
        for metric, limit in sorted(guard.ceilings.items()):
            observed = (
                float(metrics.positives) if metric == "positives" else getattr(metrics, metric)
            )
            if one_class and metric in ("roc_auc", "pr_auc"):
                observed = None
            checks.append(_ceiling(split, metric, limit, observed))
    canary = report.leakage_canary
    if canary is not None:
        deviation = abs(canary.roc_auc - 0.5) if canary.roc_auc is not None else None
        tolerance = max(
            guard.canary_max_deviation, guard.canary_max_z * canary_standard_error(canary)
        )
        checks.append(
            GateCriterion(
                name=f"{SUSPECTED_LEAKAGE}_shuffled_label_canary",
                metric="roc_auc",
                kind="point",
                comparator="<=",
                threshold=tolerance,
                policy_floor=None,
                mandatory=True,
                observed=deviation,
                # the controls' interval is of their mean ROC-AUC, not of the deviation this row
                # judges: it is named in the detail instead of beside the deviation
                ci=None,
                passed=deviation is not None and deviation <= tolerance,
                detail=f"|mean test ROC-AUC - 0.5| of {canary.controls} controls trained on "
                f"shuffled labels (mean {canary.roc_auc:.4f}{_interval(canary)}, standard error "
                f"{canary_standard_error(canary):.4f}: spread {canary.spread_standard_error:.4f}, "
                f"chance on the test rows {canary.null_standard_error:.4f})"
                if canary.roc_auc is not None
                else "the shuffled-label controls have no ROC-AUC",
            )
        )
    return LeakageVerdict(suspected=not all(c.passed for c in checks), checks=checks, canary=canary)


def leakage_reasons(verdict: LeakageVerdict) -> list[str]:
    """One ``suspected_leakage: ...`` reason per failed check."""
    out = []
    for c in verdict.checks:
        if not c.passed:
            shown = "missing" if c.observed is None else f"{c.observed:.4g}"
            out.append(
                f"{SUSPECTED_LEAKAGE}: {c.detail}: {c.metric} {shown}, needs "
                f"{c.comparator} {c.threshold:.4g}"
            )
    return out
