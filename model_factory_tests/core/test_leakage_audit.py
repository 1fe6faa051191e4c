"""The leakage audit catches each planted violation, one fixture per rule (issue 3).

Every violation is planted without a production flag: through a test-only variant of one step of
the builder (monkeypatched for the test), a hand-made receipt, a stricter policy, or data that
carries the answer. The audit measures the frame's evidence, so each must fail its rule, and the
blocking asset check built from the audit must fail with it.
"""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from model_factory.contracts import GovernancePolicy, LeakageAudit, TimeWindow, TrainingConfig
from model_factory.core import frames
from model_factory.core.frames import JOIN_AT, TS, TrainingFrame, build_training_frame
from model_factory.core.intake import intake
from model_factory.defs.assets import leakage_check_result
from model_factory.errors import PolicyViolationError
from model_factory_tests.core.test_frames_asof import (
    PARTITION,
    CatalogData,
    config,
    random_catalog_data,
    write_catalog,
)

RULES = {
    "windows_ordered",
    "events_inside_split_windows",
    "features_available_before_event",
    "snapshots_within_ttl",
    "labels_observed_before_cut",
    "unlabeled_events_handled",
    "no_denied_features",
    "no_label_derived_features",
}


def build_with(
    root: Path,
    data: CatalogData,
    cfg: TrainingConfig | None = None,
    policy: GovernancePolicy | None = None,
    windows=None,
) -> TrainingFrame:
    catalog = write_catalog(root, data)
    receipt, inputs = intake(catalog, cfg or config(), PARTITION, GovernancePolicy())
    if windows is not None:
        receipt = receipt.model_copy(update={"windows": windows})
    return build_training_frame(receipt, inputs, policy or GovernancePolicy())


def failed(audit: LeakageAudit) -> set[str]:
    return {r.rule for r in audit.rules if not r.passed}


def assert_caught(audit: LeakageAudit, rule: str, subject: str | None = None) -> None:
    """The rule failed (on ``subject``), the audit failed, and so does the blocking check."""
    bad = [r for r in audit.rules if not r.passed]
    assert rule in {r.rule for r in bad}, [r.detail for r in audit.rules if r.rule == rule]
    if subject is not None:
        assert subject in {r.subject for r in bad if r.rule == rule}
    assert not audit.passed
    assert any(v.startswith(rule) for v in audit.violations)
    check = leakage_check_result(audit)
    assert check.passed is False
    assert rule in str(check.metadata["failed_rules"].value)


@pytest.fixture(scope="module")
def data() -> CatalogData:
    return random_catalog_data(4)


def test_the_honest_frame_passes_every_rule(tmp_path: Path, data: CatalogData) -> None:
    audit = build_with(tmp_path, data).audit
    assert audit.passed and audit.violations == []
    assert {r.rule for r in audit.rules} == RULES
    assert failed(audit) == set()
    assert leakage_check_result(audit).passed is True
    # per split and per group, the same measures as over the whole frame
    for g in audit.feature_groups:
        assert set(g.splits) == {"train", "val", "test"}
        assert sum(s.joined_rows for s in g.splits.values()) == g.joined_rows
        assert sum(s.ttl_dropped_rows for s in g.splits.values()) == g.ttl_dropped_rows
        assert g.max_available_minus_event_seconds == max(
            s.max_available_minus_event_seconds
            for s in g.splits.values()
            if s.max_available_minus_event_seconds is not None
        )
    cust = next(g for g in audit.feature_groups if g.name == "cust_fg")
    assert cust.max_snapshot_age_seconds <= cust.ttl_seconds


def test_overlapping_windows_fail_windows_ordered(tmp_path: Path, data: CatalogData) -> None:
    honest = build_with(tmp_path / "a", data).audit.windows
    val = honest.eval_windows["val"]
    # validation starts a day inside the training window: a hand-made receipt, never resolved
    bad = honest.model_copy(
        update={
            "eval_windows": {
                "val": TimeWindow(start=val.start - timedelta(days=1), end=val.end),
                "test": honest.eval_windows["test"],
            }
        }
    )
    assert_caught(build_with(tmp_path / "b", data, windows=bad).audit, "windows_ordered")


def test_rows_outside_their_split_window_fail(
    tmp_path: Path, data: CatalogData, monkeypatch: pytest.MonkeyPatch
) -> None:
    honest = frames._split_windows

    def shifted(windows):  # test-only: validation swallows the day of maturity gap after it
        val = windows.eval_windows["val"]
        wider = windows.model_copy(
            update={
                "eval_windows": {
                    "val": TimeWindow(start=val.start, end=val.end + timedelta(days=1)),
                    "test": windows.eval_windows["test"],
                }
            }
        )
        return honest(wider)

    # the builder reads and labels events by these windows; the audit checks the policy's own
    monkeypatch.setattr(frames, "_split_windows", shifted)
    assert_caught(build_with(tmp_path, data).audit, "events_inside_split_windows")


def unsafe_valid_from_snapshots(entries, keys, features, end, allowed=None) -> pl.DataFrame:
    """THE TRAP, test-only: match snapshots on valid_from (the business time they describe)
    instead of available_at (when they could have been served). available_at is kept as it is,
    so the audit's evidence tells the truth about what was joined."""
    vf = entries[0].manifest.valid_from_column
    rows = (
        frames._scan(entries)
        .select(*keys, "available_at", vf, *features)
        .with_columns(pl.col("available_at").cast(TS), pl.col(vf).cast(TS))
        .filter(pl.col(vf) < end)
        .collect()
        .sort([*keys, vf, "available_at"])
        .unique([*keys, vf], keep="last", maintain_order=True)
    )
    return rows.select(*keys, pl.col(vf).alias(JOIN_AT), "available_at", *features)


def test_join_on_valid_from_fails_features_available_before_event(
    tmp_path: Path, data: CatalogData, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(frames, "_snapshots", unsafe_valid_from_snapshots)
    audit = build_with(tmp_path, data).audit
    assert_caught(audit, "features_available_before_event", "cust_fg")
    cust = next(g for g in audit.feature_groups if g.name == "cust_fg")
    assert cust.max_available_minus_event_seconds > 0
    # and per split: the splits where it happened say so
    assert any((s.max_available_minus_event_seconds or 0) > 0 for s in cust.splits.values())


def test_stale_snapshots_past_the_ttl_fail(
    tmp_path: Path, data: CatalogData, monkeypatch: pytest.MonkeyPatch
) -> None:
    # test-only: the TTL is never applied (every event reads its matched snapshot)
    resolve = frames._GroupPlan.resolve
    monkeypatch.setattr(frames._GroupPlan, "resolve", lambda plan: (resolve(plan)[0], plan.match))
    audit = build_with(tmp_path, data).audit
    assert_caught(audit, "snapshots_within_ttl", "cust_fg")
    cust = next(g for g in audit.feature_groups if g.name == "cust_fg")
    assert cust.max_snapshot_age_seconds > cust.ttl_seconds


def test_labels_read_past_their_cut_fail(
    tmp_path: Path, data: CatalogData, monkeypatch: pytest.MonkeyPatch
) -> None:
    # test-only: every split reads labels as of 30 days after the cut
    monkeypatch.setattr(
        frames, "_label_cut_expr", lambda w: pl.lit(w.cut + timedelta(days=30), dtype=TS)
    )
    audit = build_with(tmp_path, data).audit
    assert_caught(audit, "labels_observed_before_cut", "train")
    assert audit.max_label_observed_minus_cut_seconds["train"] < 0  # measured against the
    # builder's own cut column it looks fine: the rule measures against the policy's cut


def test_unlabeled_rows_kept_under_exclude_fail(
    tmp_path: Path, data: CatalogData, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(
        frames,
        "_apply_missing_label",
        lambda frame, rule: frame.with_columns(pl.col("label").fill_null(0)),
    )
    audit = build_with(tmp_path, data, config("exclude")).audit
    assert_caught(audit, "unlabeled_events_handled")


def test_unlabeled_rows_not_negative_under_negative_fail(
    tmp_path: Path, data: CatalogData, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(
        frames,
        "_apply_missing_label",
        lambda frame, rule: frame.with_columns(pl.col("label").fill_null(1)),
    )
    assert_caught(build_with(tmp_path, data).audit, "unlabeled_events_handled")


def test_a_pii_feature_fails_no_denied_features(tmp_path: Path, data: CatalogData) -> None:
    # intake ran under the default policy; the frame is audited under one that calls a feature
    # group's column PII (an event column so named is not even read: the builder refuses it)
    strict = GovernancePolicy(pii_columns=["cust_fg__spend"])
    audit = build_with(tmp_path / "group", data, policy=strict).audit
    assert_caught(audit, "no_denied_features")
    assert "cust_fg__spend" in audit.pii_columns_found
    assert "cust_fg__spend" in audit.denied_features
    with pytest.raises(PolicyViolationError, match="amount"):
        build_with(tmp_path / "event", data, policy=GovernancePolicy(pii_columns=["amount"]))


def test_the_audit_knows_a_group_feature_by_its_column_name(
    tmp_path: Path, data: CatalogData, monkeypatch
) -> None:
    # The policy names the column ("spend"); the frame calls it "cust_fg__spend". The builder
    # refuses such a column; with its check gone, the audit must still see it.
    monkeypatch.setattr(frames, "check_no_pii", lambda *args, **kwargs: None)
    audit = build_with(tmp_path, data, policy=GovernancePolicy(pii_columns=["spend"])).audit
    assert_caught(audit, "no_denied_features")
    assert "cust_fg__spend" in audit.denied_features


def with_event_column(data: CatalogData, name: str, values: pl.Expr | pl.Series) -> CatalogData:
    events = data.events.with_columns(
        values.alias(name) if isinstance(values, pl.Expr) else values.rename(name)
    )
    return CatalogData(events, data.labels, data.cust_files, data.term_files)


def test_a_label_named_feature_fails_no_denied_features(tmp_path: Path, data: CatalogData) -> None:
    planted = with_event_column(data, "label_value", pl.lit(0, dtype=pl.Int64))
    cfg = config().model_copy(update={"event_features": ["amount", "label_value"]})
    audit = build_with(tmp_path, planted, cfg).audit
    assert_caught(audit, "no_denied_features")
    assert audit.denied_features == ["label_value"]


def test_a_feature_that_is_the_label_fails_no_label_derived_features(
    tmp_path: Path, data: CatalogData
) -> None:
    honest = build_with(tmp_path / "a", data).frame.select("event_id", "label")
    answer = data.events.join(honest, on="event_id", how="left")["label"].fill_null(0)
    # an innocent name: only its content gives it away
    planted = with_event_column(data, "merchant_score", answer.cast(pl.Float64))
    cfg = config().model_copy(update={"event_features": ["amount", "merchant_score"]})
    audit = build_with(tmp_path / "b", planted, cfg).audit
    assert_caught(audit, "no_label_derived_features")
    assert audit.feature_label_auc["merchant_score"] == 1.0
    assert "merchant_score" in audit.denied_features


def test_the_label_under_missing_label_negative_fails_no_label_derived_features(
    tmp_path: Path, data: CatalogData
) -> None:
    """A label store of chargebacks only (every label 1): under missing_label=negative the
    events without one are the negatives the model trains on. The rule ranked only the
    labelled rows, all positives, so every AUC was None and an exact copy of the label passed,
    as did any "a chargeback exists" proxy (found in review)."""
    chargebacks = CatalogData(
        data.events,
        data.labels.filter(pl.col("label_value") == 1),
        data.cust_files,
        data.term_files,
    )
    honest = build_with(tmp_path / "a", chargebacks).frame.select("event_id", "label")
    answer = data.events.join(honest, on="event_id", how="left")["label"].fill_null(0)
    planted = with_event_column(chargebacks, "dispute_opened", answer.cast(pl.Float64))
    cfg = config("negative").model_copy(update={"event_features": ["amount", "dispute_opened"]})
    audit = build_with(tmp_path / "b", planted, cfg).audit
    assert_caught(audit, "no_label_derived_features")
    assert audit.feature_label_auc["dispute_opened"] == 1.0
    assert audit.feature_label_auc["amount"] < 0.999  # an honest feature is still measured


def test_a_group_column_named_as_a_label_is_denied_whatever_the_group_is_called() -> None:
    """The column was read back from the feature's name at its first '__': group risk_'s
    is_fraud (risk___is_fraud) read as _is_fraud and passed (found in review)."""
    from model_factory.contracts import FeatureSpec
    from model_factory.core.leakage import _source_column

    for group, column in (("risk_", "is_fraud"), ("risk", "_x"), ("risk", "a__b")):
        spec = FeatureSpec(
            name=f"{group}__{column}", dtype="Float64", source=f"feature_group:{group}/v1"
        )
        assert _source_column(spec) == column
    assert _source_column(FeatureSpec(name="amount", dtype="Float64", source="event")) == "amount"


def test_label_maturity_counts_add_up(tmp_path: Path, data: CatalogData) -> None:
    for missing in ("negative", "exclude"):
        tf = build_with(tmp_path / missing, data, config(missing))
        m = tf.audit.label_maturity
        assert m is not None and m.positives_used > 0
        for split, s in m.splits.items():
            rows = tf.rows(split)
            assert s.events == s.events_with_visible_label + s.events_without_visible_label
            assert rows == s.events - s.events_excluded_unlabeled
            assert s.events_excluded_unlabeled == (
                s.events_without_visible_label if missing == "exclude" else 0
            )
            assert s.visible_positives == int(
                tf.frame.filter(pl.col("split") == split)["label"].sum()
            )
            share = s.expected_visible_share_of_positives
            assert share is None or 0 <= share <= 1
        # labels after the cut exist for train/val in this data (observed at train_cut exactly)
        assert (
            m.splits["train"].events_with_label_only_after_cut
            + m.splits["val"].events_with_label_only_after_cut
            > 0
        )


def test_labels_observed_before_their_event_are_counted(tmp_path: Path, data: CatalogData) -> None:
    """A label observed before its event happened cannot be a report about that event (a
    recycled or foreign event id, a label system's clock): it became the label unseen, and the
    delay estimate read negative delays (found in review). Each split counts them."""
    honest = build_with(tmp_path / "a", data)
    assert honest.audit.label_maturity is not None
    before = {
        s: v.events_with_label_before_event for s, v in honest.audit.label_maturity.splits.items()
    }
    unlabelled = honest.frame.filter(
        (pl.col("split") == "train") & ~pl.col("event_id").is_in(data.labels["event_id"].implode())
    ).row(0, named=True)
    planted = CatalogData(
        data.events,
        pl.concat(
            [
                data.labels,
                pl.DataFrame(
                    {
                        "event_id": [unlabelled["event_id"]],
                        "label_family": ["fraud"],
                        "label_value": [1],
                        "observed_time": [unlabelled["event_time"] - timedelta(hours=1)],
                    },
                    schema=data.labels.schema,
                ),
            ]
        ),
        data.cust_files,
        data.term_files,
    )
    m = build_with(tmp_path / "b", planted).audit.label_maturity
    assert m is not None
    counted = {s: v.events_with_label_before_event for s, v in m.splits.items()}
    assert counted == {s: n + (s == "train") for s, n in before.items()}


@pytest.mark.slow
def test_blocking_check_stops_the_run_on_a_planted_violation(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Through a real Dagster instance: the unsafe join fails leakage_audit_clean, which is
    blocking, so `model` never runs; the check's metadata names the failed rule."""
    import dagster as dg

    from model_factory.core.demo_data import DemoDataSpec, generate_demo_data
    from model_factory.definitions import build_definitions
    from model_factory.defs.assets import LEAKAGE_CHECK
    from model_factory.defs.resources import ModelFactoryResource

    generate_demo_data(
        str(tmp_path / "catalog"), DemoDataSpec(customers=300, terminals=600, weeks=8)
    )
    resource = ModelFactoryResource(
        catalog_url=str(tmp_path / "catalog"),
        store_url=str(tmp_path / "store"),
        registry_url=str(tmp_path / "registry"),
    )
    defs = build_definitions(resource)
    job = defs.resolve_job_def("weekly_training")
    monkeypatch.setattr(frames, "_snapshots", unsafe_valid_from_snapshots)
    (tmp_path / "dagster").mkdir()
    with dg.instance_for_test(temp_dir=str(tmp_path / "dagster")) as instance:
        result = job.execute_in_process(
            partition_key="2026-02-23",
            instance=instance,
            raise_on_error=False,
            asset_selection=[
                dg.AssetKey(k) for k in ("dataset_manifests", "training_frame", "model")
            ],
        )
        assert not result.success
        key = dg.AssetCheckKey(dg.AssetKey("training_frame"), LEAKAGE_CHECK)
        check = instance.event_log_storage.get_latest_asset_check_execution_by_key([key])[key]
        assert check.status.value == "FAILED"
        evaluation = check.event.dagster_event.event_specific_data  # type: ignore[union-attr]
        assert "features_available_before_event" in str(evaluation.metadata["failed_rules"].value)
        materialized = {
            e.asset_key.to_user_string()
            for e in result.all_events
            if e.event_type_value == "ASSET_MATERIALIZATION"
        }
        assert "model" not in materialized


@pytest.mark.parametrize("seed", range(5))
def test_the_label_derived_rule_sees_rare_frauds(seed: int) -> None:
    """A plain sample of 20,000 of the training rows often held none of a few frauds: every AUC
    was None and an exact copy of the label passed (found in the diff review). The sample keeps
    the frauds (a rank AUC is the same over a class-stratified sample)."""
    from model_factory.core.leakage import feature_label_auc

    rng = np.random.default_rng([seed, 99])  # not the audit's own sampling stream
    label = np.zeros(200_000, dtype=np.int8)
    label[rng.choice(label.size, 5, replace=False)] = 1
    frame = pl.DataFrame(
        {
            "split": ["train"] * label.size,
            "label": label,
            "copy": label.astype(np.float64),
            "noise": rng.normal(size=label.size),
        }
    )
    for source in (frame, frame.lazy()):
        auc = feature_label_auc(source, ["copy", "noise"], seed=seed)
        assert auc["copy"] == 1.0
        assert auc["noise"] is not None and 0.0 <= auc["noise"] <= 1.0
