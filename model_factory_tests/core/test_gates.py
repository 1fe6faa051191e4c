"""Gate criteria on real models: CI bounds, champion non-inferiority, stability, receipts."""

import numpy as np
import polars as pl
import pytest
from sklearn.metrics import roc_auc_score

from model_factory.contracts import (
    EvaluationReport,
    GateCriterionSpec,
    GateSettings,
    GovernancePolicy,
    PublishBundleRequest,
    TrainingConfig,
    WeekReportRef,
)
from model_factory.core.bundles import model_ref
from model_factory.core.canonical import content_digest
from model_factory.core.demo_data import DemoDataSpec, generate_demo_data
from model_factory.core.frames import frame_from_parquet
from model_factory.core.storage import ArtifactStore
from model_factory.core.training import TrainedModel, feature_matrix
from model_factory_tests.core.test_bundles_registry import build, fresh_env

WEEKS = ["2026-02-23", "2026-03-02", "2026-03-09"]
GATES = GateSettings(
    criteria=[
        GateCriterionSpec(name="test_positives", metric="positives", kind="point", threshold=10),
        GateCriterionSpec(
            name="roc_auc_lower", metric="roc_auc", kind="ci_lower_bound", threshold=0.75
        ),
        GateCriterionSpec(
            name="pr_auc_lower", metric="pr_auc", kind="ci_lower_bound", threshold=0.10
        ),
        GateCriterionSpec(
            name="roc_auc_vs_champion", metric="roc_auc", kind="non_inferiority", threshold=0.05
        ),
        GateCriterionSpec(
            name="roc_auc_stability", metric="roc_auc", kind="stability", threshold=0.15, weeks=2
        ),
    ],
    bootstrap_resamples=400,
)
CONFIG = TrainingConfig(gates=GATES)


@pytest.fixture(scope="module")
def weeks(tmp_path_factory):
    """Three consecutive weeks, each published (when PASS) before the next trains."""
    root = tmp_path_factory.mktemp("gates")
    generate_demo_data(str(root / "catalog"), DemoDataSpec(customers=600, terminals=1200, weeks=10))
    env = fresh_env(root / "catalog", root, GovernancePolicy())  # these criteria mean the defaults
    out = []
    for week in WEEKS:
        # what the dataset_manifests asset reads from the ledger: the earlier weeks' reports
        history = [
            WeekReportRef(
                partition_key=b.partition_key, evaluation_report_ref=b.evaluation_report_ref
            )
            for b in out[-2:]
        ]
        bundle, uri, _ = build(env, CONFIG, week, history)
        if bundle.gate_receipt.gate_status == "PASS":
            env.registry.publish(PublishBundleRequest(bundle_uri=uri, bundle_id=bundle.bundle_id))
        out.append(bundle)
    return env, out


def _test_rows(bundle):
    frame_ref = next(
        r for r in bundle.training_run_record.outputs if r.name == "training_frame.parquet"
    )
    frame = frame_from_parquet(ArtifactStore.get_bytes(frame_ref))
    return frame.filter(pl.col("split") == "test")


def _scores(bundle, rows):
    model = TrainedModel.from_bytes(ArtifactStore.get_bytes(model_ref(bundle)), nthread=2)
    return model.predict(feature_matrix(rows, [f.name for f in bundle.feature_schema]))


def test_ci_lower_bound_criteria_judge_the_interval_not_the_point(weeks):
    _, bundles = weeks
    for bundle in bundles:
        report = ArtifactStore.get_document(bundle.evaluation_report_ref.uri, EvaluationReport)
        for c in bundle.gate_receipt.criteria:
            if c.kind != "ci_lower_bound":
                continue
            point = getattr(report.metrics["test"], c.metric)
            assert c.ci is not None and c.observed == c.ci.lower
            assert c.ci.lower <= point <= c.ci.upper
            assert c.passed == (c.ci.lower >= c.threshold)


def test_first_week_has_no_champion_and_says_so(weeks):
    _, bundles = weeks
    first = bundles[0].gate_receipt
    assert first.champion is None
    vs = next(c for c in first.criteria if c.kind == "non_inferiority")
    assert vs.passed and vs.observed is None and "no champion" in vs.detail


def test_later_weeks_are_compared_with_the_champion_on_the_same_rows(weeks):
    env, bundles = weeks
    published = {r.bundle_id for r in env.registry.records()}
    compared = 0
    for bundle in bundles[1:]:
        receipt = bundle.gate_receipt
        champion_ids = [
            b.bundle_id for b in bundles[: bundles.index(bundle)] if b.bundle_id in published
        ]
        if not champion_ids:
            assert receipt.champion is None
            continue
        assert receipt.champion.bundle_id == champion_ids[-1]
        champion = next(b for b in bundles if b.bundle_id == champion_ids[-1])
        rows = _test_rows(bundle)
        y = rows["label"].to_numpy()
        delta = roc_auc_score(y, _scores(bundle, rows)) - roc_auc_score(y, _scores(champion, rows))
        vs = next(c for c in receipt.criteria if c.kind == "non_inferiority")
        assert vs.ci is not None and vs.ci.lower <= delta <= vs.ci.upper
        assert vs.observed == vs.ci.lower and vs.threshold == -0.05
        assert vs.passed == (vs.ci.lower >= -0.05)
        compared += 1
    assert compared >= 1, "the demo weeks should publish at least one champion"


def test_stability_is_the_spread_over_the_pinned_weeks(weeks):
    _, bundles = weeks
    last = bundles[-1]
    assert [h.partition_key for h in last.gate_history] == WEEKS[:2]
    aucs = [
        ArtifactStore.get_document(b.evaluation_report_ref.uri, EvaluationReport)
        .metrics["test"]
        .roc_auc
        for b in bundles
    ]
    stability = next(c for c in last.gate_receipt.criteria if c.kind == "stability")
    assert stability.observed == pytest.approx(max(aucs) - min(aucs), abs=1e-12)
    assert stability.passed == (stability.observed <= 0.15)


def test_rerunning_a_week_gives_the_same_receipt_apart_from_emitted_at(weeks):
    env, bundles = weeks
    history = [
        WeekReportRef(
            partition_key=bundles[0].partition_key,
            evaluation_report_ref=bundles[0].evaluation_report_ref,
        )
    ]
    again, _, created = build(env, CONFIG, WEEKS[1], history)
    assert not created
    assert content_digest(again.gate_receipt) == content_digest(bundles[1].gate_receipt)
    assert np.isfinite(
        [c.observed for c in again.gate_receipt.criteria if c.observed is not None]
    ).all()
