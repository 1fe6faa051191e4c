"""Leakage canaries: a control trained on shuffled labels, and the "too good to be true" gate.

The control is a small XGBoost model trained on a seeded sample of the training rows with their
labels shuffled, then scored on the real test labels. Its ROC-AUC must be chance: a frame whose
rows carry their answer in a feature (or whose test rows are tied to the training labels) lets
even a model of noise split on it, and the control lands far from 0.5 in either direction.

The ceilings catch the other face of leakage: a model that is better than a fraud model can
honestly be. Both verdicts go into the gate receipt as ``suspected_leakage``; neither can be
overridden (an override accepts a weaker model, not a model whose evidence is void).
"""

from __future__ import annotations

import numpy as np
import polars as pl
import xgboost as xgb

from model_factory.contracts import (
    LOWER_IS_BETTER,
    CanarySettings,
    EvaluationReport,
    GateCriterion,
    LeakageGuard,
    LeakageVerdict,
    ShuffledLabelCanary,
)
from model_factory.core.bootstrap import bootstrap_ci
from model_factory.core.metrics import roc_auc
from model_factory.core.training import feature_matrix

SUSPECTED_LEAKAGE = "suspected_leakage"
CONTROL_LEVEL = 0.95


def shuffled_label_canary(
    frame: pl.DataFrame, features: list[str], settings: CanarySettings, nthread: int
) -> ShuffledLabelCanary | None:
    """Train the control on shuffled training labels and score the real test rows; None when
    disabled or when a split lacks a class. Seeded throughout, so a re-run gives the same bytes."""
    if not settings.enabled:
        return None
    train = frame.filter(pl.col("split") == "train")
    test = frame.filter(pl.col("split") == "test")
    rng = np.random.default_rng([settings.seed, 1])
    if train.height > settings.train_rows:
        train = train[np.sort(rng.choice(train.height, settings.train_rows, replace=False))]
    y_train = rng.permutation(train["label"].to_numpy())
    y_test = test["label"].to_numpy()
    positives = int(y_train.sum())
    if positives in (0, train.height) or int(y_test.sum()) in (0, test.height):
        return None
    params = {
        "objective": "binary:logistic",
        "tree_method": "hist",
        "max_depth": settings.max_depth,
        "eta": 0.3,
        "seed": settings.seed,
        "nthread": nthread,
        "verbosity": 0,
    }
    dtrain = xgb.DMatrix(
        feature_matrix(train, features), label=y_train, feature_names=features, nthread=nthread
    )
    booster = xgb.train(params, dtrain, num_boost_round=settings.rounds)
    score = booster.predict(
        xgb.DMatrix(feature_matrix(test, features), feature_names=features, nthread=nthread)
    ).astype(np.float64)
    auc = roc_auc(y_test, score)
    ci = (
        bootstrap_ci(
            y_test,
            score,
            "roc_auc",
            resamples=settings.bootstrap_resamples,
            seed=settings.seed,
            level=CONTROL_LEVEL,
        )
        if settings.bootstrap_resamples
        else None
    )
    return ShuffledLabelCanary(
        roc_auc=auc,
        roc_auc_ci=ci,
        train_rows=train.height,
        train_positives=positives,
        test_rows=test.height,
        test_positives=int(y_test.sum()),
        null_standard_error=null_auc_standard_error(int(y_test.sum()), test.height),
        rounds=settings.rounds,
        max_depth=settings.max_depth,
        seed=settings.seed,
        features=len(features),
    )


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
        for metric, limit in sorted(guard.ceilings.items()):
            observed = (
                float(metrics.positives) if metric == "positives" else getattr(metrics, metric)
            )
            checks.append(_ceiling(split, metric, limit, observed))
    canary = report.leakage_canary
    if canary is not None:
        deviation = abs(canary.roc_auc - 0.5) if canary.roc_auc is not None else None
        tolerance = max(guard.canary_max_deviation, guard.canary_max_z * canary.null_standard_error)
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
                ci=canary.roc_auc_ci,
                passed=deviation is not None and deviation <= tolerance,
                detail=f"|test ROC-AUC - 0.5| of a control trained on shuffled labels (ROC-AUC "
                f"{canary.roc_auc:.4f}; chance's standard error on {canary.test_positives} test "
                f"positives {canary.null_standard_error:.4f})"
                if canary.roc_auc is not None
                else "the shuffled-label control has no ROC-AUC",
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
