"""Leakage canaries (issue 3): the shuffled-label control, the "too good to be true" ceilings,
and the trap shown on demo data: a join on ``valid_from`` is caught, the real frame passes."""

from __future__ import annotations

import math
import shutil
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import polars as pl
import pytest

from model_factory.contracts import (
    CanarySettings,
    DatasetSelector,
    EvaluationReport,
    EvaluationReportRef,
    GateCriterionSpec,
    GateOverride,
    GateSettings,
    GovernancePolicy,
    LeakageGuard,
    MetricSet,
    ShuffledLabelCanary,
    TrainingConfig,
)
from model_factory.core import frames
from model_factory.core.canaries import (
    CONTROL_POSITIVES,
    SUSPECTED_LEAKAGE,
    judge_leakage,
    shuffled_label_canary,
)
from model_factory.core.demo_data import DemoDataSpec, generate_demo_data
from model_factory.core.gates import GateEvidence, decide_gate
from model_factory.core.manifests import Catalog, create_manifest
from model_factory.core.registry import FileRegistry
from model_factory.core.runs import (
    FactoryEnv,
    stage_evaluation,
    stage_frame,
    stage_gate,
    stage_intake,
    stage_model,
)
from model_factory.core.storage import ArtifactStore
from model_factory_tests.core.test_leakage_audit import unsafe_valid_from_snapshots

FEATURES = ["x", "noise"]


def separable_frame(rows: int = 20_000, seed: int = 3) -> pl.DataFrame:
    """A frame with an honest, fraud-like signal: x ranks the label with ROC-AUC ~0.75."""
    rng = np.random.default_rng(seed)
    label = (rng.random(rows) < 0.02).astype(np.int8)
    return pl.DataFrame(
        {
            "split": rng.choice(np.array(["train", "train", "val", "test"]), rows),
            "label": label,
            "x": label * 1.0 + rng.normal(0, 1, rows),
            "noise": rng.normal(0, 1, rows),
        }
    )


def test_shuffled_label_control_scores_chance_and_is_deterministic() -> None:
    frame = separable_frame()
    settings = CanarySettings(train_rows=2000, rounds=10)
    first = shuffled_label_canary(frame, FEATURES, settings, nthread=2)
    again = shuffled_label_canary(frame, FEATURES, settings, nthread=1)
    assert first is not None and first == again  # seeded: same bytes whatever the threads
    # chance, within the tolerance the gate applies to the mean of the controls
    assert abs(first.roc_auc - 0.5) <= max(0.1, 4 * first.spread_standard_error)
    assert first.controls == len(first.control_roc_auc) == settings.controls
    assert first.roc_auc == pytest.approx(np.mean(first.control_roc_auc))
    assert first.roc_auc_ci is not None
    assert first.roc_auc_ci.lower < first.roc_auc < first.roc_auc_ci.upper
    assert first.train_rows == 2000 and first.features == 2
    assert first.test_positives == int(frame.filter(pl.col("split") == "test")["label"].sum())
    other_seed = shuffled_label_canary(frame, FEATURES, settings.model_copy(update={"seed": 1}), 2)
    assert other_seed != first
    # a negative seed is a seed like any other (numpy's generator refuses negatives as such)
    negative = settings.model_copy(update={"seed": -1})
    assert shuffled_label_canary(frame, FEATURES, negative, 2) == shuffled_label_canary(
        frame, FEATURES, negative, 1
    )


def test_the_controls_interval_is_students_t_and_is_not_shown_as_the_deviations() -> None:
    """Eight controls estimate their own spread: a 95% interval of their mean takes Student's t
    with 7 degrees of freedom (2.365), not the normal 1.96, which covers ~90% (found in review).
    The gate row judges |mean - 0.5|, so the AUC interval goes into its detail, not its ci."""
    first = shuffled_label_canary(separable_frame(), FEATURES, CanarySettings(rounds=10), 2)
    assert first is not None and first.controls == 8
    aucs = np.asarray(first.control_roc_auc)
    half = 2.3646242510 * aucs.std(ddof=1) / np.sqrt(aucs.size)  # t(0.975, 7)
    assert first.roc_auc_ci.lower == pytest.approx(aucs.mean() - half, abs=1e-9)
    assert first.roc_auc_ci.upper == pytest.approx(aucs.mean() + half, abs=1e-9)
    assert "Student t" in first.roc_auc_ci.method
    report = SimpleNamespace(metrics={}, leakage_canary=first)
    [row] = judge_leakage(LeakageGuard(), report).checks  # type: ignore[arg-type]
    assert row.observed == pytest.approx(abs(first.roc_auc - 0.5)) and row.ci is None
    assert f"[{first.roc_auc_ci.lower:.4f}, {first.roc_auc_ci.upper:.4f}] 95%" in row.detail


def test_a_control_sample_too_small_to_hold_frauds_is_grown_until_it_does() -> None:
    """100 rows at 2% fraud hold ~2 positives: such a control predicts a constant, whose ROC-AUC
    is 0.5 whatever the frame holds, and would pass without testing anything (found in
    review). The sample grows to hold ~CONTROL_POSITIVES; the fewest any control had is kept."""
    frame = separable_frame()
    train = frame.filter(pl.col("split") == "train")
    canary = shuffled_label_canary(frame, FEATURES, CanarySettings(train_rows=100), 2)
    assert canary is not None
    assert canary.train_rows == math.ceil(
        CONTROL_POSITIVES * train.height / int(train["label"].sum())
    )
    assert CONTROL_POSITIVES / 2 <= canary.train_positives <= CONTROL_POSITIVES
    assert len(set(canary.control_roc_auc)) > 1  # not eight constant models at exactly 0.5
    # never beyond the train split, however rare its frauds (here three; the test's unchanged)
    label = frame["label"].to_numpy().copy()
    in_train = np.flatnonzero((frame["split"] == "train").to_numpy() & (label == 1))
    label[in_train[3:]] = 0
    rare = frame.with_columns(pl.Series("label", label))
    grown = shuffled_label_canary(rare, FEATURES, CanarySettings(train_rows=100), 2)
    assert grown is not None and grown.train_rows == train.height
    assert grown.train_positives == 3


def test_control_is_absent_when_disabled_or_a_class_is_missing() -> None:
    frame = separable_frame()
    assert shuffled_label_canary(frame, FEATURES, CanarySettings(enabled=False), 2) is None
    no_fraud = frame.with_columns(pl.lit(0, dtype=pl.Int8).alias("label"))
    assert shuffled_label_canary(no_fraud, FEATURES, CanarySettings(), 2) is None


def stand_in(
    val_auc: float, test_auc: float, canary_auc: float | None, null_se: float = 0.02
) -> SimpleNamespace:
    """What judge_leakage reads of a report."""

    def split(auc: float) -> SimpleNamespace:
        return SimpleNamespace(roc_auc=auc, pr_auc=0.3, positives=50, rows=5000)

    canary = (
        None
        if canary_auc is None
        else ShuffledLabelCanary(
            roc_auc=canary_auc,
            control_roc_auc=[canary_auc],
            spread_standard_error=0.02,
            controls=8,
            train_rows=100,
            train_positives=5,
            test_rows=5000,
            test_positives=100,
            null_standard_error=null_se,
            rounds=1,
            max_depth=1,
            seed=1,
            features=1,
        )
    )
    return SimpleNamespace(
        metrics={"val": split(val_auc), "test": split(test_auc)}, leakage_canary=canary
    )


@pytest.mark.parametrize(
    ("val", "test", "canary", "tripped"),
    [
        (0.91, 0.92, 0.50, set()),
        (0.995, 0.92, 0.50, {"suspected_leakage_val_roc_auc_ceiling"}),
        (0.91, 0.999, 0.50, {"suspected_leakage_test_roc_auc_ceiling"}),
        (0.91, 0.92, 0.62, {"suspected_leakage_shuffled_label_canary"}),
        (0.91, 0.92, 0.38, {"suspected_leakage_shuffled_label_canary"}),  # far below chance too
        (0.91, 0.92, None, set()),  # no control (disabled): nothing to judge
    ],
)
def test_ceilings_on_val_and_test_and_the_control_within_chance(val, test, canary, tripped):
    verdict = judge_leakage(LeakageGuard(), stand_in(val, test, canary))  # type: ignore[arg-type]
    assert {c.name for c in verdict.checks if not c.passed} == tripped
    assert verdict.suspected == bool(tripped)


def test_a_split_of_one_class_is_not_suspected_of_leakage() -> None:
    """Frauds alone have average precision 1 whatever the scores: not "too good", not judged
    (it was a suspected_leakage verdict no override can lift; found in review)."""
    report = stand_in(0.91, 0.92, 0.50)
    report.metrics["test"] = SimpleNamespace(roc_auc=None, pr_auc=1.0, positives=30, rows=30)
    verdict = judge_leakage(LeakageGuard(), report)  # type: ignore[arg-type]
    assert not verdict.suspected
    judged = {c.name: c.observed for c in verdict.checks}
    assert judged["suspected_leakage_test_pr_auc_ceiling"] is None
    assert judged["suspected_leakage_val_pr_auc_ceiling"] == 0.3  # two classes: judged


def test_a_small_test_window_widens_the_controls_tolerance() -> None:
    """Eight controls scored on the same 30 test positives move together: their spread (0.02)
    understates the chance deviation of their mean, one chance AUC's standard error on those
    rows (0.05) does not. 0.62 is within 4 x 0.05 of chance there, and not with 0.02."""
    wide = judge_leakage(LeakageGuard(), stand_in(0.91, 0.92, 0.62, null_se=0.05))  # type: ignore[arg-type]
    (control,) = [c for c in wide.checks if c.name.endswith("shuffled_label_canary")]
    assert control.passed and control.threshold == pytest.approx(0.2)
    narrow = judge_leakage(LeakageGuard(), stand_in(0.91, 0.92, 0.62, null_se=0.02))  # type: ignore[arg-type]
    assert narrow.suspected


def report_with(test_auc: float, canary_auc: float) -> EvaluationReport:
    metrics = {
        s: MetricSet.model_construct(
            split=s,
            rows=1000,
            positives=40,
            positive_rate=0.04,
            roc_auc=a,
            pr_auc=0.4,
            brier=0.03,
            log_loss=0.1,
        )
        for s, a in (("val", 0.9), ("test", test_auc))
    }
    canary = ShuffledLabelCanary(
        roc_auc=canary_auc,
        control_roc_auc=[canary_auc],
        spread_standard_error=0.02,
        controls=8,
        train_rows=100,
        train_positives=5,
        test_rows=1000,
        test_positives=40,
        null_standard_error=0.02,
        rounds=1,
        max_depth=1,
        seed=1,
        features=1,
    )
    return EvaluationReport.model_construct(
        train_run_id="mfr-" + "1" * 20,
        model_family="fraud_xgb",
        model_sha256="a" * 64,
        metrics=metrics,
        leakage_canary=canary,
    )


def test_a_model_too_good_to_be_true_fails_the_gate_and_no_override_lifts_it() -> None:
    criteria = [
        GateCriterionSpec(name="test_positives", metric="positives", kind="point", threshold=10),
        GateCriterionSpec(name="roc_auc_lower", metric="roc_auc", kind="point", threshold=0.75),
        GateCriterionSpec(name="pr_auc_lower", metric="pr_auc", kind="point", threshold=0.10),
    ]
    override = GateOverride(reason="risk committee accepted it on 2026-11-29", approver="cro")
    settings = GateSettings(criteria=criteria, override=override)
    ref = EvaluationReportRef(uri="memory://report", digest="b" * 64)

    def gate(test_auc: float, canary_auc: float):
        ev = GateEvidence(
            report=report_with(test_auc, canary_auc),
            report_ref=ref,
            frame_sha256="c" * 64,
            y_test=np.zeros(1),
            score_test=np.zeros(1),
        )
        return decide_gate(settings, GovernancePolicy(), ev)

    honest = gate(0.93, 0.51)
    assert honest.gate_status == honest.judged_status == "PASS"
    assert honest.leakage is not None and not honest.leakage.suspected
    assert honest.leakage.canary is not None and honest.leakage.canary.roc_auc == 0.51
    leaky = gate(0.997, 0.51)
    assert leaky.judged_status == leaky.gate_status == "FAIL"
    assert leaky.leakage.suspected
    assert any(r.startswith(f"{SUSPECTED_LEAKAGE}:") for r in leaky.reasons)
    assert any("cannot be overridden" in r for r in leaky.reasons) and leaky.override is None
    assert gate(0.93, 0.70).gate_status == "FAIL"  # the control far from chance


# ---------------------------------------------------------------------------------------------
# The trap, shown on demo data (ARCHITECTURE §4): what a join on valid_from does, and what
# catches it.

WEEK = "2026-03-02"


def lying_store_snapshots(entries, keys, features, end, allowed=None) -> pl.DataFrame:
    """Test-only: a store that joins on valid_from *and* stamps valid_from as the availability
    time, so the audit's evidence is blind; only the model's results can give it away."""
    vf = entries[0].manifest.valid_from_column
    rows = (
        frames._scan(entries)
        .select(*keys, vf, *features)
        .with_columns(pl.col(vf).cast(frames.TS))
        .filter(pl.col(vf) < end)
        .collect()
        .sort([*keys, vf])
        .unique([*keys, vf], keep="last", maintain_order=True)
    )
    return rows.select(
        *keys, pl.col(vf).alias(frames.JOIN_AT), pl.col(vf).alias("available_at"), *features
    )


def add_case_flags(catalog_dir: Path, spec: DemoDataSpec) -> None:
    """A case-management feature group on the terminal: each confirmed fraud is flagged with
    ``valid_from`` = the payment's own time (back-dated, as case systems do) but written when the
    chargeback arrived (``available_at`` = observed_time), and cleared one microsecond later.

    One fraud in 50 is never flagged, as case systems miss some: the flag alone then ranks the
    labels below the audit's label-derived bound (AUC 0.999), so that only the model's results
    can give the trap away. A flag on every fraud the audit catches itself."""
    events = pl.read_parquet(str(catalog_dir / "datasets/events/transactions/v1/*/part-0.parquet"))
    labels = pl.read_parquet(str(catalog_dir / "datasets/labels/chargebacks/v1/*/part-0.parquet"))
    fraud = (
        labels.filter(pl.col("label_value") == 1)
        .join(events.select("event_id", "event_time", "terminal_id"), on="event_id")
        .sort("event_id", "observed_time")
        .filter(pl.int_range(pl.len()) % 50 != 0)
    )
    later = pl.duration(microseconds=1)
    flags = pl.concat(
        [
            fraud.select(
                "terminal_id",
                valid_from=pl.col("event_time"),
                available_at=pl.col("observed_time"),
                case_flag=pl.lit(1, pl.Int64),
            ),
            fraud.select(
                "terminal_id",
                valid_from=pl.col("event_time") + later,
                available_at=pl.col("observed_time"),
                case_flag=pl.lit(0, pl.Int64),
            ),
        ]
    ).sort("available_at")
    catalog = Catalog(str(catalog_dir))
    for window in spec.windows():
        folder = Path(catalog.slice_dir("feature_group", "case_flags", "v1", window))
        folder.mkdir(parents=True, exist_ok=True)
        flags.filter(
            (pl.col("available_at") >= window.start) & (pl.col("available_at") < window.end)
        ).write_parquet(folder / "part-0.parquet")
        catalog.write(
            create_manifest(
                [str(folder / "part-0.parquet")],
                kind="feature_group",
                name="case_flags",
                version="v1",
                keys=["terminal_id"],
                time_column="available_at",
                window=window,
                valid_from_column="valid_from",
                relative_to=catalog.manifest_dir("feature_group", "case_flags", "v1"),
            )
        )


@pytest.fixture(scope="module")
def demo(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("demo_trap")
    spec = DemoDataSpec(customers=600, terminals=1200, weeks=10)
    generate_demo_data(str(root / "catalog"), spec)
    add_case_flags(root / "catalog", spec)
    return root


def run_week(root: Path, name: str, config: TrainingConfig):
    env = FactoryEnv(
        Catalog(str(root / "catalog")),
        ArtifactStore(str(root / name / "store")),
        FileRegistry(str(root / name / "registry")),
        GovernancePolicy(),
    )
    intake = stage_intake(env, config, WEEK)
    frame = stage_frame(env, intake.ref)
    if not frame.doc.leakage_audit.passed:  # type: ignore[union-attr]
        return frame.doc, None, None
    model = stage_model(env, intake.ref, frame.ref)
    report = stage_evaluation(env, intake.ref, frame.ref, model.ref)
    gate = stage_gate(env, intake.ref, frame.ref, model.ref, report.ref)
    return frame.doc, report.doc, gate.doc


def leakage_reasons(gate) -> list[str]:
    return [r for r in gate.reasons if r.startswith(SUSPECTED_LEAKAGE)]


WITH_FLAGS = TrainingConfig(
    feature_group_versions=[
        *TrainingConfig().feature_group_versions,
        DatasetSelector(name="case_flags", version="v1"),
    ]
)


@pytest.mark.slow
def test_the_real_demo_frame_passes_audit_and_canaries(demo: Path) -> None:
    for name, config in (("real", TrainingConfig()), ("real_flags", WITH_FLAGS)):
        record, report, gate = run_week(demo, name, config)
        assert record.leakage_audit.passed, record.leakage_audit.violations
        assert report.leakage_canary is not None
        control = next(c for c in gate.leakage.checks if c.name.endswith("shuffled_label_canary"))
        assert control.passed and control.observed == abs(report.leakage_canary.roc_auc - 0.5)
        assert gate.leakage is not None and not gate.leakage.suspected
        assert leakage_reasons(gate) == []


@pytest.mark.slow
def test_a_valid_from_join_on_demo_data_fails_the_audit(
    demo: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The demo's card_status is back-dated (valid_from = compromise start, available_at =
    discovery): joined on valid_from, payments see flags written days later."""
    monkeypatch.setattr(frames, "_snapshots", unsafe_valid_from_snapshots)
    record, report, _ = run_week(demo, "unsafe", TrainingConfig())
    audit = record.leakage_audit
    assert not audit.passed and report is None  # stage_model would refuse it too
    ahead = {g.name: g.max_available_minus_event_seconds for g in audit.feature_groups}
    assert ahead["card_status"] > 86_400  # a flag read more than a day before it existed
    assert {
        r.subject
        for r in audit.rules
        if r.rule == "features_available_before_event" and not r.passed
    } >= {"card_status"}


@pytest.mark.slow
def test_a_lying_store_joined_on_valid_from_is_caught_by_the_canaries(
    demo: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """When the store also stamps valid_from as available_at the audit cannot see the trap; a
    back-dated fraud flag then makes the model too good to be true, and the gate says so."""
    monkeypatch.setattr(frames, "_snapshots", lying_store_snapshots)
    record, _, gate = run_week(demo, "lying", WITH_FLAGS)
    assert record.leakage_audit.passed  # blind by construction
    assert gate.judged_status == "FAIL" and gate.leakage.suspected
    assert leakage_reasons(gate), gate.reasons
    shutil.rmtree(demo / "lying", ignore_errors=True)
