"""Gates, bundles and the registry, driven through the core stages alone (no Dagster)."""

import io
import json
import multiprocessing
import os
import shutil
import threading
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path

import fsspec
import polars as pl
import pytest
from click.testing import CliRunner

from model_factory.cli import main
from model_factory.contracts import (
    EvaluationReport,
    FeatureGroupVersion,
    FeatureSpec,
    GateCriterionSpec,
    GateOverride,
    GateSettings,
    GovernancePolicy,
    ModelBundle,
    PublishBundleRequest,
    RegistryRecord,
    TrainingConfig,
    WeekReportRef,
    XGBoostParams,
)
from model_factory.core.bundles import (
    bundle_id_of,
    check_serving_schema,
    load_bundle,
    smoke_test,
    verification,
    verify_bundle,
    write_bundle,
)
from model_factory.core.canonical import canonical_json, content_digest, sha256_hex
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
from model_factory.core.storage import (
    OTHER_FS_WRITES_ENV,
    ArtifactStore,
    read_bytes,
    write_exclusive,
)
from model_factory.errors import (
    ConfigError,
    DigestMismatchError,
    ImmutabilityError,
    MissingInputError,
    ModelFactoryError,
    PolicyViolationError,
    StorageError,
)

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
# The policy under which those names may be point criteria: by default a mandatory name keeps
# the meaning the policy gives it (a CI lower bound), so the small demo weeks could not PASS.
POINT_GATES_POLICY = GovernancePolicy(
    criterion_meanings={
        "roc_auc_lower": {"metric": "roc_auc", "kind": "point"},
        "pr_auc_lower": {"metric": "pr_auc", "kind": "point"},
    }
)


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
        policy or POINT_GATES_POLICY,
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
        "bundle_content",
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


def test_verify_with_inputs_rechecks_the_pinned_manifests_and_their_files(
    passed, catalog, tmp_path
):
    """Without --inputs a bundle whose training data changed since still verified (found in
    review); with it, each pinned manifest and data file is checked and the changed one named."""
    _bundle, uri = passed
    genuine = verification(uri, inputs=True)
    inputs = [c for c in genuine.checks if c.name.startswith("input ")]
    assert genuine.valid and len(inputs) == len(_bundle.input_dataset_manifests) > 0
    assert not [c for c in verification(uri).checks if c.name.startswith("input ")]

    copy = tmp_path / "catalog"
    shutil.copytree(catalog, copy)
    doc = json.loads(Path(uri).read_text())
    for ref in doc["input_dataset_manifests"]:
        ref["uri"] = ref["uri"].replace(str(catalog), str(copy))
    labels = next(r for r in doc["input_dataset_manifests"] if r["kind"] == "labels")
    data = next(Path(labels["uri"][: -len(".json")]).glob("*.parquet"))
    data.write_bytes(data.read_bytes() + b"late edit")
    moved = tmp_path / "bundle.json"
    moved.write_text(json.dumps(doc))

    result = verification(str(moved), inputs=True)
    bad = [c for c in result.checks if c.name.startswith("input ") and c.status != "ok"]
    assert not result.valid
    assert [c.name for c in bad] == [
        f"input labels:{labels['name']}/{labels['version']}@{labels['time_window']['start'][:10]}"
    ]
    assert str(data) in bad[0].actual and "sha256" in bad[0].actual


def test_reproduce_notices_an_edited_bundle_that_kept_its_id(env, passed, tmp_path):
    """Fields the rebuild derives afresh (the decision thresholds, the declared schema) were
    edited in a copy that still claims the genuine id: the rebuild alone would match it."""
    _bundle, uri = passed
    doc = json.loads(Path(uri).read_text())
    doc["policy_config"]["review_threshold"] = 0.05
    doc["feature_schema"][0]["dtype"] = "String"
    forged = tmp_path / "bundle.json"
    forged.write_text(json.dumps(doc))
    report = reproduce_bundle(str(forged), env)
    assert report.verdict == "DIFFERENT"
    statuses = {c.name: c.status for c in report.comparisons}
    assert statuses.pop("bundle_content") == "mismatch"
    assert set(statuses.values()) == {"ok"}  # what the pinned inputs give is the genuine bundle


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
    bundle, uri, _ = build(env, TrainingConfig(gates=gates))
    receipt = bundle.gate_receipt
    assert (receipt.gate_status, receipt.judged_status) == ("PASS", "FAIL")
    assert receipt.override == override
    assert any("FORCED PASS by head of fraud risk" in r for r in receipt.reasons)
    # the registry's record says so too: it read as a plain PASS (found in review)
    published = env.registry.publish(
        PublishBundleRequest(bundle_uri=uri, bundle_id=bundle.bundle_id)
    )
    assert published.record.gate_status == "PASS" and published.record.gate_override == override
    listed = CliRunner().invoke(
        main,
        ["registry", "list"],
        env={"MODEL_FACTORY_HOME": str(tmp_path), "MODEL_FACTORY_REGISTRY": env.registry.url},
        catch_exceptions=False,
    )
    assert f"{bundle.bundle_id}" in listed.stdout
    assert "FORCED PASS by head of fraud risk" in listed.stdout
    strict = POINT_GATES_POLICY.model_copy(update={"allow_override": False})
    with pytest.raises(PolicyViolationError) as info:
        stage_intake(
            fresh_env(catalog, tmp_path / "strict", strict), TrainingConfig(gates=gates), WEEK1
        )
    assert info.value.field == "gates.override"


# -- bundles that are broken, but consistently pinned ------------------------------------------


def forge_bundle(
    uri: str,
    folder: Path,
    *,
    model: bytes | None = None,
    frame: bytes | None = None,
    report_edit: Callable[[dict], None] | None = None,
) -> tuple[str, str]:
    """A copy of the bundle at ``uri`` with its model, frame or report replaced and every digest
    that pins them recomputed, so only the replaced content is at fault; returns (URI, id)."""
    folder.mkdir(parents=True)
    raw = json.loads(Path(uri).read_text())
    report = json.loads(Path(raw["evaluation_report_ref"]["uri"]).read_text())
    refs = [*raw["artifact_refs"], *raw["training_run_record"]["outputs"]]
    for name, data in (("model.ubj", model), ("training_frame.parquet", frame)):
        if data is not None:
            (folder / name).write_bytes(data)
            for ref in refs:
                if ref["name"] == name:
                    ref.update(
                        uri=str(folder / name), sha256=sha256_hex(data), size_bytes=len(data)
                    )
    if model is not None:
        raw["gate_receipt"]["model_sha256"] = report["model_sha256"] = sha256_hex(model)
    if report_edit is not None:
        report_edit(report)
    (folder / "report.json").write_bytes(canonical_json(report))
    pin = {"uri": str(folder / "report.json"), "digest": content_digest(report)}
    raw["evaluation_report_ref"].update(pin)
    raw["gate_receipt"]["evaluation_report_ref"].update(pin)
    for ref in refs:
        if ref["name"] == "evaluation_report.json":
            ref.update(uri=pin["uri"], sha256=pin["digest"])
    raw["bundle_id"] = bundle_id_of(raw)
    (folder / "bundle.json").write_bytes(canonical_json(raw))
    return str(folder / "bundle.json"), raw["bundle_id"]


def publish(registry_root: Path, uri: str, bundle_id: str):
    return FileRegistry(str(registry_root)).publish(
        PublishBundleRequest(bundle_uri=uri, bundle_id=bundle_id)
    )


@pytest.mark.parametrize(
    "body",
    [b"[]", b"5", b"null", "the bundle encoded twice"],
    ids=["array", "number", "null", "string"],
)
def test_a_document_that_is_not_a_json_object_is_refused_naming_it(passed, tmp_path, body):
    bundle, uri = passed
    if body == "the bundle encoded twice":
        body = json.dumps(Path(uri).read_text()).encode()
    path = tmp_path / "bundle.json"
    path.write_bytes(body)
    for read in (load_bundle, verification, lambda p: ArtifactStore.get_document(p, ModelBundle)):
        with pytest.raises(ModelFactoryError) as info:
            read(str(path))
        assert (info.value.source, info.value.field) == (str(path), "(document)")
        assert "JSON object" in str(info.value)
    response = publish(tmp_path / "registry", str(path), bundle.bundle_id)
    assert response.status == "refused" and "JSON object" in response.reason
    assert not (tmp_path / "registry" / "records").exists()


def test_an_unreadable_uri_is_an_error_naming_it_and_publishing_refuses(passed, tmp_path):
    _bundle, uri = passed
    with pytest.raises(ModelFactoryError) as info:
        read_bytes(str(tmp_path))  # a directory: something is there, so not "missing"
    assert info.value.source == str(tmp_path) and not isinstance(info.value, MissingInputError)
    remote = "nosuchfs://models/training_frame.parquet"  # no fsspec backend has this protocol
    with pytest.raises(ConfigError) as info:
        read_bytes(remote)
    assert info.value.source == remote
    for tag, frame_uri in (("dir", str(tmp_path)), ("remote", remote)):
        raw = json.loads(Path(uri).read_text())
        for ref in raw["training_run_record"]["outputs"]:
            if ref["name"] == "training_frame.parquet":
                ref["uri"] = frame_uri
        raw["bundle_id"] = bundle_id_of(raw)
        forged = tmp_path / tag / "bundle.json"
        forged.parent.mkdir()
        forged.write_bytes(canonical_json(raw))
        checks = {c.name: c.status for c in verification(str(forged)).checks}
        assert checks["training_frame.parquet"] == "missing" and checks["bundle_id"] == "ok"
        response = publish(tmp_path / "registry", str(forged), raw["bundle_id"])
        assert response.status == "refused" and "training_frame.parquet" in response.reason
    assert not (tmp_path / "registry" / "records").exists()


def test_a_model_xgboost_cannot_load_is_refused_naming_its_file(passed, tmp_path):
    _bundle, uri = passed
    forged, forged_id = forge_bundle(uri, tmp_path / "b", model=b"this is not a UBJ model")
    assert verification(forged).valid  # every digest holds: only the smoke test can tell
    model_uri = str(tmp_path / "b" / "model.ubj")
    with pytest.raises(ModelFactoryError) as info:
        smoke_test(load_bundle(forged))
    assert info.value.source == model_uri and "XGBoost" in str(info.value)
    response = publish(tmp_path / "registry", forged, forged_id)
    assert response.status == "refused" and model_uri in response.reason
    assert not (tmp_path / "registry" / "records").exists()


def test_a_frame_the_smoke_test_cannot_score_is_refused_naming_its_file(passed, tmp_path):
    _bundle, uri = passed
    no_split = io.BytesIO()
    pl.DataFrame({"amount": [1.0, 2.0]}).write_parquet(no_split)
    forged, forged_id = forge_bundle(uri, tmp_path / "b", frame=no_split.getvalue())
    frame_uri = str(tmp_path / "b" / "training_frame.parquet")
    with pytest.raises(ModelFactoryError) as info:
        smoke_test(load_bundle(forged))
    assert info.value.source == frame_uri and "split" in str(info.value)
    response = publish(tmp_path / "registry", forged, forged_id)
    assert response.status == "refused" and frame_uri in response.reason


def test_a_report_written_before_an_optional_field_existed_still_verifies(passed, tmp_path):
    """The report's pinned digest is of its JSON as stored: today's contract, which gained
    `leakage_canary` since, must not re-dump it with the field before digesting."""
    _bundle, uri = passed
    optional = "leakage_canary"
    assert EvaluationReport.model_fields[optional].is_required() is False

    def written_before_the_field(report: dict) -> None:
        report.pop(optional)

    forged, forged_id = forge_bundle(uri, tmp_path / "b", report_edit=written_before_the_field)
    assert optional not in json.loads((tmp_path / "b" / "report.json").read_text())
    result = verification(forged)
    assert result.valid, [c for c in result.checks if c.status != "ok"]
    assert publish(tmp_path / "registry", forged, forged_id).status == "published"


def test_a_gap_in_the_champion_history_neither_blocks_promotion_nor_goes_unreported(
    passed, tmp_path
):
    bundle, uri = passed
    registry = FileRegistry(str(tmp_path / "registry"))
    first = registry.publish(PublishBundleRequest(bundle_uri=uri, bundle_id=bundle.bundle_id))
    week2 = first.record.model_copy(update={"partition_key": WEEK2, "bundle_id": "mfb-" + "2" * 20})
    week3 = first.record.model_copy(
        update={"partition_key": "2026-03-09", "bundle_id": "mfb-" + "3" * 20}
    )
    assert registry._maybe_promote(week2)
    champions = tmp_path / "registry" / "champions" / bundle.model_family
    (champions / "00000001.json").unlink()  # an operator "cleaning up"

    assert registry._maybe_promote(week3)  # once: 64 collisions with change 2, then an error

    history = registry.history(bundle.model_family)
    assert [(c.sequence, c.bundle_id) for c in history] == [
        (2, week2.bundle_id),
        (3, week3.bundle_id),
    ]
    assert history[-1].previous_bundle_id == week2.bundle_id
    missing = [
        p for p in registry.verify().problems if p.source == str(champions / "00000001.json")
    ]
    assert [p.kind for p in missing] == ["record_missing"]
    # With its journal entry gone as well, the gap alone still names the deleted change.
    journal = registry.journal
    [entry] = [e for e in journal.entries() if e.subject.endswith("/00000001.json")]
    Path(journal.entry_path(entry.sequence)).unlink()
    missing = [
        p for p in registry.verify().problems if p.source == str(champions / "00000001.json")
    ]
    assert [(p.kind, p.field) for p in missing] == [("record_missing", "sequence")]


def test_the_champion_of_a_week_with_two_published_bundles_is_the_promoted_one(passed, tmp_path):
    """Two configs published for one week: the first published became champion; a later week
    is judged against it, not against whichever bundle id sorts last."""
    bundle, uri = passed
    registry = FileRegistry(str(tmp_path / "registry"))
    first = registry.publish(PublishBundleRequest(bundle_uri=uri, bundle_id=bundle.bundle_id))
    assert first.champion_changed
    later = first.record.model_copy(
        update={
            "bundle_id": "mfb-" + "f" * 20,  # sorts after the champion's id
            "published_at_utc": first.record.published_at_utc + timedelta(minutes=5),
        }
    )
    path = registry.record_path(later.bundle_id)
    Path(path).write_bytes(canonical_json(later))
    assert not registry._maybe_promote(later)  # same week: the first published stays champion
    assert {r.bundle_id for r in registry.records(bundle.model_family)} == {
        bundle.bundle_id,
        later.bundle_id,
    }

    judged_against = registry.champion_before(bundle.model_family, "2099-01-05")
    assert judged_against is not None
    assert judged_against.bundle_id == registry.champion(bundle.model_family).bundle_id
    assert judged_against.bundle_id == bundle.bundle_id


def _a_record() -> RegistryRecord:
    """A small document with a volatile field, to store."""
    return RegistryRecord(
        bundle_id="mfb-" + "0" * 20,
        bundle_uri="u",
        bundle_sha256="a" * 64,
        train_run_id="mfr-" + "0" * 20,
        model_family="f",
        partition_key="p",
        model_sha256="b" * 64,
        gate_status="PASS",
        published_by="x",
        published_at_utc=datetime(2026, 1, 1, tzinfo=UTC),
    )


def test_put_document_describes_the_blob_it_keeps(tmp_path):
    """A re-run with other volatile fields (here a timestamp with microseconds) names the first
    attempt's blob: its size must be that blob's, not this attempt's bytes."""
    store = ArtifactStore(str(tmp_path / "store"))
    record = _a_record()
    first = store.put_document("rec.json", record)
    again = record.model_copy(
        update={"published_at_utc": datetime(2026, 1, 1, 0, 0, 0, 123456, tzinfo=UTC)}
    )
    assert len(canonical_json(again)) != len(canonical_json(record))
    second = store.put_document("rec.json", again)
    assert second.uri == first.uri
    assert second.size_bytes == first.size_bytes == Path(second.uri).stat().st_size


def test_a_full_disk_is_an_error_naming_the_file_and_leaves_nothing(tmp_path, monkeypatch):
    """Found in review: a full disk was a bare OSError naming no file."""
    import errno

    from model_factory.core import storage

    store = ArtifactStore(str(tmp_path / "store"))

    def full(fd: int) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(storage.os, "fsync", full)
    with pytest.raises(StorageError) as info:
        store.put_bytes("blob", b"frame bytes" * 100)
    assert "No space left on device" in str(info.value)
    written = Path(info.value.source)
    assert written.parent.parent == tmp_path / "store" / "sha256"  # the blob it was for
    assert [p for p in (tmp_path / "store").rglob("*") if p.is_file()] == []  # no temporary


def test_a_filesystem_that_cannot_fsync_a_folder_still_takes_writes(tmp_path, monkeypatch):
    """Some network and FUSE filesystems answer EINVAL to a folder's fsync (diff review): the
    file is complete and named by then, so the write stands."""
    import errno
    import stat

    from model_factory.core import storage

    real = storage.os.fsync

    def no_folders(fd: int) -> None:
        if stat.S_ISDIR(os.fstat(fd).st_mode):
            raise OSError(errno.EINVAL, "Invalid argument")
        real(fd)

    monkeypatch.setattr(storage.os, "fsync", no_folders)
    ref = ArtifactStore(str(tmp_path / "store")).put_bytes("blob", b"frame bytes" * 100)
    assert Path(ref.uri).read_bytes() == b"frame bytes" * 100


def test_a_corrupt_blob_under_a_content_address_is_refused_not_pinned_again(tmp_path):
    """Write-once keeps what is there: a blob corrupted on disk must fail the writer that
    finds it (naming it, leaving it for inspection), not be pinned again as if it were new."""
    store = ArtifactStore(str(tmp_path / "store"))
    source = tmp_path / "model.ubj"
    source.write_bytes(b"model bytes" * 100)
    record = _a_record()
    for put in (
        lambda: store.put_bytes("blob", b"frame bytes" * 100),
        lambda: store.put_file("model.ubj", str(source)),
        lambda: store.put_document("rec.json", record),
    ):
        ref = put()
        assert put() == ref  # the same content again: a no-op
        blob = Path(ref.uri)
        corrupt = bytearray(blob.read_bytes())
        corrupt[5] ^= 0xFF
        blob.write_bytes(bytes(corrupt))
        with pytest.raises(DigestMismatchError) as info:
            put()
        assert (info.value.source, info.value.field) == (ref.uri, "sha256")
        assert blob.read_bytes() == bytes(corrupt)  # kept for inspection, not replaced


def test_reproducing_into_another_store_is_a_config_error_writing_nothing(
    passed, catalog, tmp_path
):
    _bundle, uri = passed
    elsewhere = fresh_env(catalog, tmp_path)
    with pytest.raises(ConfigError) as info:
        reproduce_bundle(uri, elsewhere)
    assert info.value.field == "MODEL_FACTORY_STORE" and elsewhere.store.url in str(info.value)
    assert not (tmp_path / "store").exists()


# -- stores without exclusive create ------------------------------------------------------------


@pytest.fixture
def memory_root():
    """A fresh folder of fsspec's in-memory filesystem (a real fsspec backend with no exclusive
    create, standing in for GCS, Azure, SFTP...), removed afterwards."""
    root = f"/mf-test-{uuid.uuid4().hex[:12]}"
    yield root
    fs = fsspec.filesystem("memory")
    if fs.exists(root):
        fs.rm(root, recursive=True)


def test_a_store_without_exclusive_create_refuses_writers_unless_single_writer(
    memory_root, monkeypatch
):
    """Two racing writers there would both be told they created the file (exists() then rename),
    one's bytes lost: without the operator's single-writer opt-in nothing is written at all."""
    monkeypatch.delenv(OTHER_FS_WRITES_ENV, raising=False)
    fs = fsspec.filesystem("memory")
    path = f"{memory_root}/journal/000000000001.json"
    barrier = threading.Barrier(2)

    def writer(data: bytes):
        barrier.wait()
        try:
            return write_exclusive(fs, path, data)
        except ConfigError as exc:
            return exc

    with ThreadPoolExecutor(max_workers=2) as pool:
        outcomes = list(pool.map(writer, [b"A", b"B"]))
    assert all(isinstance(o, ConfigError) for o in outcomes), outcomes
    assert outcomes[0].source == f"memory://{path}" and outcomes[0].field == OTHER_FS_WRITES_ENV
    assert not fs.exists(memory_root)
    with pytest.raises(ConfigError):
        FileRegistry(f"memory://{memory_root}/registry").journal.append(
            kind="registry_record", subject="records/x.json", uri="x", sha256="a" * 64
        )
    assert not fs.exists(memory_root)

    monkeypatch.setenv(OTHER_FS_WRITES_ENV, "single-writer")
    assert write_exclusive(fs, path, b"A") is True
    assert write_exclusive(fs, path, b"B") is False
    assert fs.cat_file(path) == b"A"
    monkeypatch.setenv(OTHER_FS_WRITES_ENV, "sometimes")
    with pytest.raises(ConfigError) as info:
        write_exclusive(fs, f"{memory_root}/other.json", b"C")
    assert info.value.field == OTHER_FS_WRITES_ENV and "single-writer" in str(info.value)


def test_a_registry_on_another_filesystem_names_corrupt_files_by_full_uri(
    passed, memory_root, monkeypatch
):
    monkeypatch.setenv(OTHER_FS_WRITES_ENV, "single-writer")
    bundle, uri = passed
    registry = FileRegistry(f"memory://{memory_root}")
    response = registry.publish(PublishBundleRequest(bundle_uri=uri, bundle_id=bundle.bundle_id))
    assert response.status == "published" and registry.verify().ok
    fs = fsspec.filesystem("memory")
    record = f"{memory_root}/records/mfb-{'0' * 20}.json"
    change = f"{memory_root}/champions/{bundle.model_family}/00000002.json"
    fs.pipe_file(record, b'{"bundle_id": 1}')
    fs.pipe_file(change, b"{}")
    for read, path in (
        (registry.records, record),
        (lambda: registry.history(bundle.model_family), change),
    ):
        with pytest.raises(ModelFactoryError) as info:
            read()
        assert info.value.source == f"memory://{path}"


def test_a_champion_on_another_version_of_a_feature_group_is_not_scored_on_this_one(
    catalog, tmp_path
):
    """The champion was re-scored by column names alone: after terminal_risk v2 it read v2's
    columns as if they were the v1 values it was trained on, and the comparison looked like
    evidence (found in review). Now it is the champion that could not be scored, with the
    versions named, and the non-inferiority criterion fails (an audited override promotes
    the first model of the new version)."""
    copied = tmp_path / "catalog"
    shutil.copytree(catalog, copied)
    v1 = Catalog(str(copied))
    v1_dir = Path(v1.dataset_dir("feature_group", "terminal_risk", "v1"))
    shutil.copytree(v1_dir, v1_dir.parent / "v2", ignore=shutil.ignore_patterns("*.json"))
    for entry in v1.entries("feature_group", "terminal_risk", "v1"):
        v1.write(entry.manifest.model_copy(update={"version": "v2"}))
    gates = point_gates().model_copy(
        update={
            "criteria": [
                *point_gates().criteria,
                GateCriterionSpec(
                    name="roc_auc_vs_champion",
                    metric="roc_auc",
                    kind="non_inferiority",
                    threshold=0.05,
                ),
            ]
        }
    )
    config = TrainingConfig(gates=gates)
    env = fresh_env(copied, tmp_path)
    first, first_uri, _ = build(env, config, WEEK1)
    env.registry.publish(PublishBundleRequest(bundle_uri=first_uri, bundle_id=first.bundle_id))

    same, _, _ = build(env, config, WEEK2)  # the same versions: scored and compared
    versions = [
        s.model_copy(update={"version": "v2"}) if s.name == "terminal_risk" else s
        for s in config.feature_group_versions
    ]
    second, _, _ = build(env, config.model_copy(update={"feature_group_versions": versions}), WEEK2)

    def judged(bundle):
        return next(c for c in bundle.gate_receipt.criteria if c.name == "roc_auc_vs_champion")

    assert same.gate_receipt.champion.bundle_id == first.bundle_id
    assert judged(same).detail.startswith("lower CI bound of roc_auc(candidate)")
    assert second.gate_receipt.champion.bundle_id == first.bundle_id
    assert not judged(second).passed and second.gate_receipt.gate_status == "FAIL"
    assert "could not be scored" in judged(second).detail
    assert "terminal_risk: bundle v1, this frame v2" in judged(second).detail


def test_the_run_record_a_bundle_embeds_says_what_its_gate_said(passed, failed):
    """Every bundle's embedded record said 'succeeded' with no gate status, contradicting the
    ledger for a FAIL bundle (gate_failed / FAIL); found in review."""
    for (bundle, _), status in ((passed, "succeeded"), (failed, "gate_failed")):
        record = bundle.training_run_record
        receipt = bundle.gate_receipt
        assert (record.status, record.gate_status) == (status, receipt.gate_status)
        assert record.gate_judged_status == receipt.judged_status
        assert record.error == (
            "gate FAIL: " + "; ".join(receipt.reasons) if status == "gate_failed" else None
        )
        (report,) = [r for r in record.outputs if r.uri == bundle.evaluation_report_ref.uri]
        assert report.sha256 == bundle.evaluation_report_ref.digest
        assert report.size_bytes == 0  # its bytes' length varies with volatile timings


def test_a_publish_names_the_dagster_run_that_wrote_the_record_and_each_entry(passed, tmp_path):
    """The record named only who asked (a sensor), and its journal entries no run: after a
    publish run was killed and another completed it, nothing told which run wrote what (found
    in review)."""
    bundle, uri = passed
    registry = FileRegistry(str(tmp_path / "registry"))
    first = registry.publish(
        PublishBundleRequest(bundle_uri=uri, bundle_id=bundle.bundle_id, dagster_run_id="run-1")
    )
    for seq in registry.journal.sequences():  # as if run-1 had died before journaling
        Path(registry.journal.entry_path(seq)).unlink()
    again = registry.publish(
        PublishBundleRequest(bundle_uri=uri, bundle_id=bundle.bundle_id, dagster_run_id="run-2")
    )
    assert (first.status, again.status) == ("published", "already_published")
    assert first.record.dagster_run_id == again.record.dagster_run_id == "run-1"
    entries = registry.journal.entries()
    assert [(e.kind, e.dagster_run_id) for e in entries] == [
        ("registry_record", "run-2"),
        ("champion_change", "run-2"),
    ]
    assert registry.verify().ok
    by_cli = registry.publish(PublishBundleRequest(bundle_uri=uri, bundle_id=bundle.bundle_id))
    assert by_cli.record.dagster_run_id == "run-1"  # the record is the first publisher's


def test_a_corrupt_journal_entry_stops_a_publish_before_it_writes_a_record(passed, tmp_path):
    """A damaged entry failed every publish only after its record was written, leaving a
    record no entry knows (found in review). The journal is read first now."""
    bundle, uri = passed
    registry = FileRegistry(str(tmp_path / "registry"))
    request = PublishBundleRequest(bundle_uri=uri, bundle_id=bundle.bundle_id)
    assert registry.publish(request).status == "published"
    record = Path(registry.record_path(bundle.bundle_id))
    record.unlink()  # as if a new bundle came to be published next
    shutil.rmtree(tmp_path / "registry" / "champions")
    damaged = Path(registry.journal.entry_path(registry.journal.sequences()[0]))
    damaged.write_bytes(damaged.read_bytes()[:40])

    with pytest.raises(ModelFactoryError) as info:
        FileRegistry(str(tmp_path / "registry")).publish(request)

    assert info.value.source is not None and damaged.name in info.value.source
    assert not record.exists()


def test_fields_added_since_at_their_defaults_do_not_make_a_rebuild_different():
    """A count added to a contract since a bundle was written defaults to 0, and only None,
    [] and {} were taken for "not there then": every earlier audit rebuilt as DIFFERENT
    (found in the diff review). A value the old code could not have written still shows."""
    from model_factory.core.reproduce import as_stored_shape

    stored = {"audit": {"splits": {"train": {"events": 5}}}, "notes": ["a"]}
    rebuilt = {
        "audit": {"splits": {"train": {"events": 5, "events_with_label_before_event": 0}}},
        "notes": ["a"],
        "gate_judged_status": None,
        "extra": [],
    }
    assert as_stored_shape(stored, rebuilt) == stored
    rebuilt["audit"]["splits"]["train"]["events_with_label_before_event"] = 2
    assert as_stored_shape(stored, rebuilt) != stored
