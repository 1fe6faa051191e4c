"""Gates, bundles and the registry, driven through the core stages alone (no Dagster)."""

import json
import multiprocessing
import shutil
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from model_factory.contracts import (
    FeatureGroupVersion,
    FeatureSpec,
    GateCriterionSpec,
    GateOverride,
    GateSettings,
    GovernancePolicy,
    ModelBundle,
    PublishBundleRequest,
    TrainingConfig,
    WeekReportRef,
    XGBoostParams,
)
from model_factory.core.bundles import (
    bundle_id_of,
    check_serving_schema,
    verification,
    verify_bundle,
    write_bundle,
)
from model_factory.core.demo_data import DemoDataSpec, generate_demo_data
from model_factory.core.manifests import Catalog
from model_factory.core.registry import FileRegistry
from model_factory.core.reproduce import reproduce_bundle
from model_factory.core.runs import (
    FactoryEnv,
    stage_bundle,
    stage_evaluation,
    stage_frame,
    stage_gate,
    stage_intake,
    stage_model,
)
from model_factory.core.storage import ArtifactStore
from model_factory.errors import DigestMismatchError, ImmutabilityError, PolicyViolationError

WEEK1, WEEK2 = "2026-02-23", "2026-03-02"


def point_gates(**thresholds: float) -> GateSettings:
    """The mandatory criteria as point criteria (no bootstrap), thresholds overridable."""
    values = {"test_positives": 10, "roc_auc_lower": 0.75, "pr_auc_lower": 0.10} | thresholds
    metric = {"test_positives": "positives", "roc_auc_lower": "roc_auc", "pr_auc_lower": "pr_auc"}
    return GateSettings(
        criteria=[
            GateCriterionSpec(name=n, metric=metric[n], kind="point", threshold=v)
            for n, v in values.items()
        ]
    )


LENIENT = TrainingConfig(gates=point_gates())


def build(
    env: FactoryEnv,
    config: TrainingConfig,
    week: str = WEEK1,
    gate_history: list[WeekReportRef] | None = None,
):
    """Every stage of one train run; returns the bundle, its URI and whether it was new."""
    intake = stage_intake(env, config, week, gate_history=gate_history)
    frame = stage_frame(env, intake.ref)
    model = stage_model(env, intake.ref, frame.ref)
    report = stage_evaluation(env, intake.ref, frame.ref, model.ref)
    gate = stage_gate(env, intake.ref, frame.ref, model.ref, report.ref)
    result, bundle, created = stage_bundle(
        env, intake.ref, frame.ref, model.ref, report.ref, gate.ref
    )
    return bundle, result.ref.uri, created


def fresh_env(catalog: Path, root: Path, policy: GovernancePolicy | None = None) -> FactoryEnv:
    return FactoryEnv(
        Catalog(str(catalog)),
        ArtifactStore(str(root / "store")),
        FileRegistry(str(root / "registry")),
        policy or GovernancePolicy(),
    )


@pytest.fixture(scope="module")
def catalog(tmp_path_factory):
    root = tmp_path_factory.mktemp("catalog")
    generate_demo_data(str(root), DemoDataSpec(customers=600, terminals=1200, weeks=9))
    return root


@pytest.fixture(scope="module")
def env(catalog, tmp_path_factory):
    return fresh_env(catalog, tmp_path_factory.mktemp("factory"))


@pytest.fixture(scope="module")
def passed(env):
    bundle, uri, created = build(env, LENIENT)
    assert created
    assert bundle.gate_receipt.gate_status == "PASS", bundle.gate_receipt.reasons
    return bundle, uri


@pytest.fixture(scope="module")
def failed(env):
    bundle, uri, _ = build(env, TrainingConfig(gates=point_gates(roc_auc_lower=0.9999)))
    assert bundle.gate_receipt.gate_status == "FAIL"
    return bundle, uri


def test_rebuilding_a_train_run_gives_identical_model_and_bundle(env, passed):
    bundle, uri = passed
    again, again_uri, created = build(env, LENIENT)
    assert not created
    assert again.bundle_id == bundle.bundle_id and again_uri == uri
    assert again.artifact_refs == bundle.artifact_refs  # same model bytes, same digest


def test_reproduce_says_identical(env, passed):
    _bundle, uri = passed
    report = reproduce_bundle(uri, env)
    assert report.verdict == "IDENTICAL", report.comparisons
    assert {c.name for c in report.comparisons} == {
        "policy_digest",
        "training_frame.parquet",
        "model.ubj",
        "evaluation_report",
        "gate_receipt",
        "bundle_id",
    }


def test_reproduce_notices_changed_training(env, passed, tmp_path):
    """A bundle whose pinned config would now train another model is DIFFERENT."""
    _bundle, uri = passed
    doc = json.loads(Path(uri).read_text())
    doc["config"]["hyperparams"]["max_depth"] = 2
    doc["bundle_id"] = bundle_id_of(doc)
    forged = tmp_path / "bundle.json"
    forged.write_text(json.dumps(doc))
    report = reproduce_bundle(str(forged), env)
    assert report.verdict == "DIFFERENT"
    statuses = {c.name: c.status for c in report.comparisons}
    assert statuses["training_frame.parquet"] == "ok" and statuses["model.ubj"] == "mismatch"


def test_a_different_bundle_for_an_existing_train_run_is_refused(env, passed):
    bundle, uri = passed
    before = Path(uri).read_bytes()
    other = bundle.model_copy(update={"partition_key": "2026-03-02"})
    with pytest.raises(ImmutabilityError) as info:
        write_bundle(env.store, other)
    assert info.value.field == "content digest"
    assert Path(uri).read_bytes() == before


def test_publishing_twice_keeps_one_record_and_names_the_champion(passed, tmp_path):
    bundle, uri = passed
    registry = FileRegistry(str(tmp_path / "registry"))
    request = PublishBundleRequest(bundle_uri=uri, bundle_id=bundle.bundle_id)
    first, second = registry.publish(request), registry.publish(request)
    assert (first.status, second.status) == ("published", "already_published")
    assert (first.champion_changed, second.champion_changed) == (True, False)
    assert second.record == first.record
    assert [r.bundle_id for r in registry.records()] == [bundle.bundle_id]
    history = registry.history(bundle.model_family)
    assert [(c.sequence, c.bundle_id, c.previous_bundle_id) for c in history] == [
        (1, bundle.bundle_id, None)
    ]


def test_concurrent_threads_create_exactly_one_record(passed, tmp_path):
    bundle, uri = passed
    registry = FileRegistry(str(tmp_path / "registry"))
    request = PublishBundleRequest(bundle_uri=uri, bundle_id=bundle.bundle_id)
    with ThreadPoolExecutor(max_workers=8) as pool:
        statuses = sorted(r.status for r in pool.map(lambda _: registry.publish(request), range(8)))
    assert statuses == ["already_published"] * 7 + ["published"]
    assert len(list((tmp_path / "registry" / "records").iterdir())) == 1
    assert len(registry.history(bundle.model_family)) == 1


def _publish_in_process(args: tuple[str, str, str]) -> str:
    registry_url, uri, bundle_id = args
    return (
        FileRegistry(registry_url)
        .publish(PublishBundleRequest(bundle_uri=uri, bundle_id=bundle_id))
        .status
    )


def test_concurrent_processes_create_exactly_one_record(passed, tmp_path):
    bundle, uri = passed
    url = str(tmp_path / "registry")
    with multiprocessing.get_context("spawn").Pool(4) as pool:
        statuses = sorted(pool.map(_publish_in_process, [(url, uri, bundle.bundle_id)] * 4))
    assert statuses == ["already_published"] * 3 + ["published"]
    assert len(list((tmp_path / "registry" / "records").iterdir())) == 1
    assert len(FileRegistry(url).history(bundle.model_family)) == 1


def test_registry_refuses_a_fail_bundle_with_its_reasons(failed, tmp_path):
    bundle, uri = failed
    registry = FileRegistry(str(tmp_path / "registry"))
    response = registry.publish(PublishBundleRequest(bundle_uri=uri, bundle_id=bundle.bundle_id))
    assert response.status == "refused" and response.record is None
    assert "FAIL" in response.reason and "roc_auc_lower" in response.reason
    assert not (tmp_path / "registry" / "records").exists()


def test_a_degraded_model_fails_with_readable_reasons(env):
    one_tree = TrainingConfig(
        hyperparams=XGBoostParams(num_boost_round=1, max_depth=1),
        gates=point_gates(roc_auc_lower=0.85, pr_auc_lower=0.2),
    )
    bundle, _, _ = build(env, one_tree)
    receipt = bundle.gate_receipt
    assert receipt.gate_status == "FAIL"
    failing = [c for c in receipt.criteria if not c.passed]
    assert failing and all(any(c.name in r for r in receipt.reasons) for c in failing)


def test_registry_refuses_a_bundle_whose_receipt_was_edited(passed, tmp_path):
    bundle, uri = passed
    doc = json.loads(Path(uri).read_text())
    doc["gate_receipt"]["observed_metrics"]["roc_auc"] = 0.999
    forged = tmp_path / "bundle.json"
    forged.write_text(json.dumps(doc))
    with pytest.raises(DigestMismatchError):
        verify_bundle(str(forged))
    assert not verification(str(forged)).valid
    response = FileRegistry(str(tmp_path / "registry")).publish(
        PublishBundleRequest(bundle_uri=str(forged), bundle_id=bundle.bundle_id)
    )
    assert response.status == "refused" and "bundle_id" in response.reason


def test_registry_refuses_a_bundle_whose_model_bytes_changed(passed, tmp_path):
    bundle, _ = passed
    copy = tmp_path / "model.ubj"
    shutil.copyfile(bundle.artifact_refs[0].uri, copy)
    data = bytearray(copy.read_bytes())
    data[-1] ^= 0x01
    copy.write_bytes(bytes(data))
    doc = bundle.model_dump(mode="json")
    doc["artifact_refs"][0]["uri"] = str(copy)
    doc["bundle_id"] = bundle_id_of(doc)  # only the model bytes are wrong
    path = tmp_path / "bundle.json"
    path.write_text(json.dumps(doc))
    checks = {c.name: c.status for c in verification(str(path)).checks}
    assert checks["model.ubj"] == "mismatch" and checks["bundle_id"] == "ok"
    response = FileRegistry(str(tmp_path / "registry")).publish(
        PublishBundleRequest(bundle_uri=str(path), bundle_id=doc["bundle_id"])
    )
    assert response.status == "refused" and "model.ubj" in response.reason


def test_bundle_holds_refs_and_aggregates_never_rows(passed):
    bundle, uri = passed
    text = Path(uri).read_text()
    assert ModelBundle.model_validate_json(text) == bundle
    assert "card_number" not in text
    assert "tx-0" not in text  # no event ids: the frame is referenced, not embedded
    assert bundle.model_format == "xgboost-ubj" and bundle.xgboost_version
    assert len(bundle.feature_schema_digest) == 64


def test_serving_schema_compatibility(passed):
    bundle, _ = passed
    same = check_serving_schema(bundle, bundle.feature_schema, bundle.feature_group_versions)
    assert same.compatible
    served = [
        *bundle.feature_schema[1:],
        FeatureSpec(name="extra", dtype="Float64", source="event"),
    ]
    retyped = [
        f.model_copy(update={"dtype": "String"}) if i == 2 else f for i, f in enumerate(served)
    ]
    groups = [
        FeatureGroupVersion(**{**g.model_dump(), "version": "v2"}) if i == 0 else g
        for i, g in enumerate(bundle.feature_group_versions)
    ]
    report = check_serving_schema(bundle, retyped, groups)
    assert not report.compatible
    assert report.missing_features == [bundle.feature_schema[0].name]
    assert report.extra_features == ["extra"]
    assert len(report.dtype_mismatches) == 1 and len(report.group_version_mismatches) == 1


def test_second_week_is_judged_against_the_published_champion(catalog, tmp_path):
    env = fresh_env(catalog, tmp_path)
    first, first_uri, _ = build(env, LENIENT, WEEK1)
    assert first.gate_receipt.champion is None
    assert any("no champion" in r for r in first.gate_receipt.reasons)
    env.registry.publish(PublishBundleRequest(bundle_uri=first_uri, bundle_id=first.bundle_id))
    second, second_uri, _ = build(env, LENIENT, WEEK2)
    assert second.gate_receipt.champion.bundle_id == first.bundle_id
    assert second.training_run_record.train_run_id != first.train_run_id
    env.registry.publish(PublishBundleRequest(bundle_uri=second_uri, bundle_id=second.bundle_id))
    history = env.registry.history(first.model_family)
    assert [c.bundle_id for c in history] == [first.bundle_id, second.bundle_id]
    assert history[1].previous_bundle_id == first.bundle_id
    # an older week published late does not displace the newer champion
    late = fresh_env(catalog, tmp_path / "late")
    late_env = FactoryEnv(late.catalog, env.store, late.registry, late.policy)
    late_env.registry.publish(
        PublishBundleRequest(bundle_uri=second_uri, bundle_id=second.bundle_id)
    )
    response = late_env.registry.publish(
        PublishBundleRequest(bundle_uri=first_uri, bundle_id=first.bundle_id)
    )
    assert response.status == "published" and not response.champion_changed
    assert late_env.registry.champion(first.model_family).bundle_id == second.bundle_id


def test_a_config_below_a_policy_floor_is_refused_before_any_work(catalog, tmp_path):
    env = fresh_env(catalog, tmp_path)
    with pytest.raises(PolicyViolationError) as info:
        stage_intake(env, TrainingConfig(gates=point_gates(roc_auc_lower=0.5)), WEEK1)
    assert info.value.field == "gates.criteria[1].threshold"
    dropped = GateSettings(criteria=point_gates().criteria[:2])
    with pytest.raises(PolicyViolationError) as info:
        stage_intake(env, TrainingConfig(gates=dropped), WEEK1)
    assert info.value.field == "gates.criteria" and "pr_auc_lower" in str(info.value)
    assert not (tmp_path / "store").exists()


def test_override_forces_pass_only_with_a_recorded_reason(catalog, tmp_path):
    override = GateOverride(
        reason="risk committee accepted the lower AUC on 2026-11-29", approver="head of fraud risk"
    )
    gates = point_gates(roc_auc_lower=0.9999).model_copy(update={"override": override})
    env = fresh_env(catalog, tmp_path)
    bundle, _, _ = build(env, TrainingConfig(gates=gates))
    receipt = bundle.gate_receipt
    assert (receipt.gate_status, receipt.judged_status) == ("PASS", "FAIL")
    assert receipt.override == override
    assert any("FORCED PASS by head of fraud risk" in r for r in receipt.reasons)
    strict = GovernancePolicy(allow_override=False)
    with pytest.raises(PolicyViolationError) as info:
        stage_intake(
            fresh_env(catalog, tmp_path / "strict", strict), TrainingConfig(gates=gates), WEEK1
        )
    assert info.value.field == "gates.override"
