"""Bundles and the registry, driven through the core stages alone (no Dagster)."""

import json
import shutil
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from model_factory.contracts import (
    GateThresholds,
    GovernancePolicy,
    ModelBundle,
    PublishBundleRequest,
    TrainingConfig,
)
from model_factory.core.bundles import bundle_id_of, verify_bundle, write_bundle
from model_factory.core.demo_data import DemoDataSpec, generate_demo_data
from model_factory.core.manifests import Catalog
from model_factory.core.registry import FileRegistry
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
from model_factory.errors import DigestMismatchError, ImmutabilityError, RegistryError

WEEK = "2026-02-23"


def build(env: FactoryEnv, config: TrainingConfig):
    """Every stage of one train run; returns the bundle, its URI and whether it was new."""
    intake = stage_intake(env, config, WEEK)
    frame = stage_frame(env, intake.ref)
    model = stage_model(env, intake.ref, frame.ref)
    report = stage_evaluation(env, intake.ref, frame.ref, model.ref)
    gate = stage_gate(env, intake.ref, report.ref)
    result, bundle, created = stage_bundle(env, intake.ref, frame.ref, model.ref, report.ref, gate.ref)
    return bundle, result.ref.uri, created


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    root = tmp_path_factory.mktemp("bundles")
    generate_demo_data(str(root / "catalog"), DemoDataSpec(customers=600, terminals=1200, weeks=9))
    return FactoryEnv(Catalog(str(root / "catalog")), ArtifactStore(str(root / "store")),
                      FileRegistry(str(root / "registry")), GovernancePolicy())


@pytest.fixture(scope="module")
def passed(env):
    lenient = TrainingConfig(gates=GateThresholds(min_roc_auc=0.7, min_pr_auc=0.1, max_brier=0.1,
                                                  min_test_positives=10))
    bundle, uri, created = build(env, lenient)
    assert created
    assert bundle.gate_receipt.gate_status == "PASS", bundle.gate_receipt.reasons
    return bundle, uri


@pytest.fixture(scope="module")
def failed(env):
    strict = TrainingConfig(gates=GateThresholds(min_roc_auc=0.9999))
    bundle, uri, _ = build(env, strict)
    assert bundle.gate_receipt.gate_status == "FAIL"
    return bundle, uri


def test_rebuilding_a_train_run_gives_identical_model_and_bundle(env, passed):
    bundle, uri = passed
    lenient = TrainingConfig.model_validate(bundle.config.model_dump())
    again, again_uri, created = build(env, lenient)
    assert not created
    assert again.bundle_id == bundle.bundle_id and again_uri == uri
    assert again.artifact_refs == bundle.artifact_refs  # same model bytes, same digest


def test_a_different_bundle_for_an_existing_train_run_is_refused(env, passed):
    bundle, uri = passed
    before = Path(uri).read_bytes()
    other = bundle.model_copy(update={"partition_key": "2026-03-02"})
    with pytest.raises(ImmutabilityError) as info:
        write_bundle(env.store, other)
    assert info.value.field == "content digest"
    assert Path(uri).read_bytes() == before


def test_publishing_twice_keeps_one_record(env, passed):
    bundle, uri = passed
    request = PublishBundleRequest(bundle_uri=uri, bundle_id=bundle.bundle_id)
    first = env.registry.publish(request)
    second = env.registry.publish(request)
    assert (first.status, second.status) == ("published", "already_published")
    assert second.record == first.record
    assert [r.bundle_id for r in env.registry.records()] == [bundle.bundle_id]


def test_concurrent_publishers_create_exactly_one_record(env, passed, tmp_path):
    bundle, uri = passed
    registry = FileRegistry(str(tmp_path / "registry"))
    request = PublishBundleRequest(bundle_uri=uri, bundle_id=bundle.bundle_id)
    with ThreadPoolExecutor(max_workers=8) as pool:
        statuses = sorted(r.status for r in pool.map(lambda _: registry.publish(request), range(8)))
    assert statuses == ["already_published"] * 7 + ["published"]
    assert len(list((tmp_path / "registry" / "records").iterdir())) == 1


def test_registry_refuses_a_fail_bundle(env, failed, tmp_path):
    bundle, uri = failed
    registry = FileRegistry(str(tmp_path / "registry"))
    with pytest.raises(RegistryError) as info:
        registry.publish(PublishBundleRequest(bundle_uri=uri, bundle_id=bundle.bundle_id))
    assert info.value.field == "gate_receipt.gate_status"
    assert not (tmp_path / "registry").exists()


def test_registry_refuses_a_bundle_whose_receipt_was_edited(passed, tmp_path):
    bundle, uri = passed
    doc = json.loads(Path(uri).read_text())
    doc["gate_receipt"]["observed_metrics"]["roc_auc"] = 0.999
    forged = tmp_path / "bundle.json"
    forged.write_text(json.dumps(doc))
    with pytest.raises(DigestMismatchError):
        verify_bundle(str(forged))
    registry = FileRegistry(str(tmp_path / "registry"))
    with pytest.raises(RegistryError) as info:
        registry.publish(PublishBundleRequest(bundle_uri=str(forged), bundle_id=bundle.bundle_id))
    assert info.value.field == "bundle_id"


def test_registry_refuses_a_bundle_whose_model_bytes_changed(passed, tmp_path):
    bundle, _ = passed
    model = Path(bundle.artifact_refs[0].uri)
    copy = tmp_path / "model.ubj"
    shutil.copyfile(model, copy)
    data = bytearray(copy.read_bytes())
    data[-1] ^= 0x01
    copy.write_bytes(bytes(data))
    ref = bundle.artifact_refs[0].model_copy(update={"uri": str(copy)})
    doc = bundle.model_dump(mode="json")
    doc["artifact_refs"] = [ref.model_dump(mode="json")]
    # re-derive the id so only the model bytes are wrong
    doc["bundle_id"] = bundle_id_of(doc)
    path = tmp_path / "bundle.json"
    path.write_text(json.dumps(doc))
    with pytest.raises(RegistryError) as info:
        FileRegistry(str(tmp_path / "registry")).publish(
            PublishBundleRequest(bundle_uri=str(path), bundle_id=doc["bundle_id"]))
    assert info.value.field == "sha256"


def test_bundle_holds_refs_and_aggregates_never_rows(passed):
    bundle, uri = passed
    text = Path(uri).read_text()
    parsed = ModelBundle.model_validate_json(text)
    assert parsed == bundle
    assert "card_number" not in text
    assert "tx-0" not in text  # no event ids: the frame is referenced, not embedded
    assert len(text) < 200_000


def test_gate_floor_overrides_a_lenient_config(env, tmp_path):
    floors = GovernancePolicy().gate_floors
    lax = TrainingConfig(gates=GateThresholds(min_roc_auc=0.0, min_pr_auc=0.0, max_brier=1.0,
                                              min_test_positives=0))
    env2 = FactoryEnv(env.catalog, ArtifactStore(str(tmp_path / "store")),
                      FileRegistry(str(tmp_path / "registry")), env.policy)
    bundle, _, _ = build(env2, lax)
    by_name = {c.name: c for c in bundle.gate_receipt.criteria}
    assert by_name["min_roc_auc"].threshold == floors.min_roc_auc
    assert by_name["min_pr_auc"].threshold == floors.min_pr_auc
    assert by_name["max_brier"].threshold == floors.max_brier
    assert by_name["min_test_positives"].threshold == floors.min_test_positives
