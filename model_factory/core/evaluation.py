"""The evaluation report of a trained model on its frame (issue 4: what a risk committee signs).

Ranking quality with stratified bootstrap intervals, operating points chosen on validation and
applied unchanged to test (they become the decision policy), calibration, slices, drift, global
explanations, label context, and a latency proxy. Everything but the latency is a deterministic
function of the frame, the model and the settings, so a re-run gives the same report digest.
"""

from __future__ import annotations

import time

import numpy as np
import polars as pl

from model_factory.contracts import (
    EvaluationReport,
    EvaluationSettings,
    GovernancePolicy,
    IntakeReceipt,
    LabelContext,
    LeakageAudit,
    LeakagePolicy,
    TrainingFrameRecord,
)
from model_factory.core.canaries import shuffled_label_canary
from model_factory.core.drift import drift_report, reference_sample
from model_factory.core.entities import entities_of
from model_factory.core.explanations import explainability
from model_factory.core.latency import latency_probe
from model_factory.core.metrics import (
    at_thresholds,
    average_precision,
    calibration,
    curves,
    metric_set,
    roc_auc,
)
from model_factory.core.operating_points import decision_policy, operating_points
from model_factory.core.slices import evaluate_slices
from model_factory.core.top_k import top_k_precision
from model_factory.core.training import TrainedModel, feature_matrix

__all__ = [
    "at_thresholds",
    "average_precision",
    "build_report",
    "calibration",
    "evaluate_run",
    "label_context",
    "metric_set",
    "roc_auc",
]


def label_context(
    windows: LeakagePolicy,
    audit: LeakageAudit,
    label_family: str,
    test_rows: int,
    test_positives: int,
) -> LabelContext:
    """The label cuts and what the frame saw of the labels (from its leakage audit)."""
    visible, hidden = audit.labels_visible, audit.labels_hidden_by_cut
    matured = {
        s: (
            visible.get(s, 0) / (visible.get(s, 0) + hidden.get(s, 0))
            if visible.get(s, 0) + hidden.get(s, 0)
            else None
        )
        for s in ("train", "val")
    }
    # Not for test: labels observed after the test cut are never pinned, so none is "hidden"
    # from it and the share would read 100% whatever the truth; the validation window's share
    # estimates it (test_label_completeness_estimate)
    matured["test"] = None
    return LabelContext(
        label_family=label_family,
        test_label_cut=windows.cut,
        train_label_cut=windows.train_cut,
        label_maturity_days=round(
            (windows.cut - windows.eval_windows["test"].end).total_seconds() / 86400
        ),
        missing_label=windows.missing_label,
        test_rows=test_rows,
        test_positives=test_positives,
        labels_visible=dict(visible),
        labels_hidden_by_cut=dict(hidden),
        matured_share=matured,
        test_label_completeness_estimate=matured["val"],
    )


def evaluate_run(
    receipt: IntakeReceipt,
    record: TrainingFrameRecord,
    frame: pl.DataFrame,
    trained: TrainedModel,
    model_sha256: str,
    policy: GovernancePolicy,
) -> EvaluationReport:
    """The report of a pinned train run, with the config's evaluation settings (the entity of
    each test row is read from the pinned events when the settings name an entity column)."""
    cfg = receipt.config
    started = time.perf_counter()
    entities = None
    if cfg.evaluation.entity_column is not None:
        entities = entities_of(
            receipt,
            frame.filter(pl.col("split") == "test")["event_id"],
            cfg.evaluation.entity_column,
            policy,
        )
    entity_seconds = time.perf_counter() - started
    report = build_report(
        train_run_id=receipt.train_run_id,
        partition_key=receipt.partition_key,
        model_family=cfg.model_family,
        model_sha256=model_sha256,
        frame_sha256=record.frame.sha256,
        frame=frame,
        features=[f.name for f in record.feature_schema],
        trained=trained,
        thresholds=cfg.thresholds,
        windows=record.leakage_audit.windows,
        audit=record.leakage_audit,
        label_family=cfg.label_family,
        settings=cfg.evaluation,
        entities=entities,
        nthread=cfg.hyperparams.nthread,
    )
    # The leakage canary: a control on shuffled training labels (seeded, a few small trees).
    started = time.perf_counter()
    canary = shuffled_label_canary(
        frame,
        [f.name for f in record.feature_schema],
        cfg.evaluation.shuffled_label_canary,
        cfg.hyperparams.nthread,
    )
    canary_seconds = time.perf_counter() - started
    return report.model_copy(
        update={
            "leakage_canary": canary,
            "timings": {
                **report.timings,
                "entities_seconds": entity_seconds,
                "canary_seconds": canary_seconds,
            },
        }
    )


class _Clock:
    """Seconds per part, for the report's volatile timings."""

    def __init__(self) -> None:
        self.timings: dict[str, float] = {}
        self._last = time.perf_counter()

    def lap(self, name: str) -> None:
        now = time.perf_counter()
        self.timings[f"{name}_seconds"] = (
            self.timings.get(f"{name}_seconds", 0.0) + now - self._last
        )
        self._last = now


def build_report(
    *,
    train_run_id: str,
    partition_key: str,
    model_family: str,
    model_sha256: str,
    frame_sha256: str,
    frame: pl.DataFrame,
    features: list[str],
    trained: TrainedModel,
    thresholds: list[float],
    windows: LeakagePolicy,
    audit: LeakageAudit,
    label_family: str,
    settings: EvaluationSettings | None = None,
    entities: pl.Series | None = None,
    nthread: int = 1,
) -> EvaluationReport:
    """The full report of a trained model on its frame's splits.

    ``entities``: the card/customer of each test row (frame order), for entity precision@k.
    """
    settings = settings or EvaluationSettings()
    clock = _Clock()
    parts = {s: frame.filter(pl.col("split") == s) for s in ("train", "val", "test")}
    x = {s: feature_matrix(parts[s], features) for s in ("val", "test")}
    y = {s: parts[s]["label"].to_numpy().astype(np.int64) for s in ("val", "test")}
    clock.lap("prepare")
    score = {s: trained.predict(x[s]) for s in ("val", "test")}
    clock.lap("predict")
    if parts["test"].height:
        clock.timings["latency_us_per_row"] = (
            1e6 * clock.timings["predict_seconds"] / (parts["val"].height + parts["test"].height)
        )
    boot = {
        "resamples": settings.bootstrap_resamples,
        "seed": settings.bootstrap_seed,
        "level": settings.confidence_level,
    }
    metrics = {
        s: metric_set(s, y[s], score[s], thresholds, bins=settings.calibration_bins, **boot)
        for s in ("val", "test")
    }
    clock.lap("metrics")
    policy = decision_policy(settings, y["val"], score["val"])
    points = operating_points(settings, policy, y["val"], score["val"], y["test"], score["test"])
    clock.lap("operating_points")
    top_k = top_k_precision(
        parts["test"]["event_time"],
        y["test"],
        score["test"],
        settings.top_k_per_day,
        entities,
        settings.entity_column,
        settings.confidence_level,
    )
    clock.lap("top_k")
    slices = evaluate_slices(parts["test"], y["test"], score["test"], policy, settings)
    clock.lap("slices")
    reference = reference_sample(parts["train"])
    reference_score = (
        trained.predict(feature_matrix(reference, features)) if reference.height else None
    )
    clock.lap("train_predict")
    drift = drift_report(
        reference,
        parts["test"],
        features,
        reference_score,
        score["test"],
        settings.drift_bins,
        settings.top_drifting,
    )
    clock.lap("drift")
    explained = explainability(
        trained, features, x["test"], settings.shap_sample_rows, settings.bootstrap_seed
    )
    clock.lap("shap")
    split_curves = {s: curves(y[s], score[s]) for s in ("val", "test")}
    clock.lap("curves")
    latency = latency_probe(
        trained,
        x["test"],
        batch_rows=settings.latency_batch_rows,
        repeats=settings.latency_repeats,
        nthread=nthread,
    )
    clock.lap("latency_probe")
    test = metrics["test"]
    return EvaluationReport(
        train_run_id=train_run_id,
        partition_key=partition_key,
        model_family=model_family,
        model_sha256=model_sha256,
        frame_sha256=frame_sha256,
        best_iteration=trained.best_iteration,
        metrics=metrics,
        policy=policy,
        operating_points=points,
        top_k=top_k,
        slices=slices,
        drift=drift,
        explainability=explained,
        label_context=label_context(windows, audit, label_family, test.rows, test.positives),
        curves=split_curves,
        feature_importance={
            a.feature: a.gain
            for a in sorted(explained.features, key=lambda a: features.index(a.feature))
        },
        timings={**clock.timings, **latency},
    )
