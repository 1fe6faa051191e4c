"""Immutable model bundles: content-addressed, written once per train run, verifiable."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import xgboost as xgb

from model_factory.contracts import (
    ArtifactRef,
    EvaluationReport,
    EvaluationReportRef,
    FeatureGroupVersion,
    FeatureSpec,
    GateReceipt,
    IntakeReceipt,
    LeakageAudit,
    ModelBundle,
    Provenance,
    TrainingRunRecord,
)
from model_factory.core.canonical import content_digest, short_id
from model_factory.core.documents import parse_document
from model_factory.core.storage import ArtifactStore, read_bytes
from model_factory.errors import DigestMismatchError, ModelFactoryError

MODEL_ARTIFACT = "model.ubj"


def bundle_id_of(fields: dict[str, Any]) -> str:
    """The bundle id: digest of everything but the id itself and the volatile fields."""
    return short_id("mfb", content_digest({k: v for k, v in fields.items() if k != "bundle_id"}))


def assemble_bundle(*, intake: IntakeReceipt, audit: LeakageAudit, feature_schema: list[FeatureSpec],
                    feature_groups: list[FeatureGroupVersion], model_ref: ArtifactRef,
                    frame_ref: ArtifactRef, report_ref: EvaluationReportRef, receipt: GateReceipt,
                    provenance: Provenance | None = None) -> ModelBundle:
    """Everything a registry and a reproducer need, by reference, plus the run's record."""
    record = TrainingRunRecord(
        train_run_id=intake.train_run_id, status="succeeded", partition_key=intake.partition_key,
        model_family=intake.config.model_family, config_hash=intake.config_hash,
        code_version=intake.code_version, input_dataset_manifests=intake.input_dataset_manifests,
        outputs=[frame_ref, model_ref, ArtifactRef(name="evaluation_report.json", uri=report_ref.uri,
                                                   sha256=report_ref.digest, size_bytes=0,
                                                   media_type="application/json")],
        created_at_utc=datetime.now(UTC), provenance=provenance)
    fields = dict(
        train_run_id=intake.train_run_id, partition_key=intake.partition_key,
        model_family=intake.config.model_family, xgboost_version=xgb.__version__,
        artifact_refs=[model_ref], feature_schema=feature_schema,
        feature_group_versions=feature_groups,
        input_dataset_manifests=intake.input_dataset_manifests, evaluation_report_ref=report_ref,
        gate_receipt=receipt, leakage_audit=audit, config=intake.config,
        config_hash=intake.config_hash, code_version=intake.code_version,
        training_run_record=record, created_at_utc=datetime.now(UTC))
    draft = ModelBundle.model_construct(bundle_id="mfb-" + "0" * 20, **fields)
    return ModelBundle.model_validate({**draft.model_dump(mode="json"),
                                       "bundle_id": bundle_id_of(draft.model_dump(mode="json"))})


def write_bundle(store: ArtifactStore, bundle: ModelBundle) -> tuple[str, bool]:
    """Write once under the train run; the same content again is a no-op, other content an error."""
    return store.put_named_once(f"bundles/{bundle.train_run_id}/bundle.json", bundle)


def load_bundle(uri: str) -> ModelBundle:
    return parse_document(read_bytes(uri), ModelBundle, source=uri)


def verify_bundle(uri: str) -> ModelBundle:
    """Recompute the bundle id and every digest it pins; raise on any difference."""
    bundle = load_bundle(uri)
    expected = bundle_id_of(bundle.model_dump(mode="json"))
    if expected != bundle.bundle_id:
        raise DigestMismatchError(f"content digests to {expected}, not {bundle.bundle_id}: tampered",
                                  source=uri, field="bundle_id")
    for ref in bundle.artifact_refs:
        ArtifactStore.get_bytes(ref)
    report = ArtifactStore.get_document(bundle.evaluation_report_ref.uri, EvaluationReport,
                                        bundle.evaluation_report_ref.digest)
    receipt = bundle.gate_receipt
    if receipt.train_run_id != bundle.train_run_id or report.train_run_id != bundle.train_run_id:
        raise ModelFactoryError("receipt or report belongs to another train run", source=uri,
                                field="gate_receipt.train_run_id")
    if receipt.evaluation_report_ref.digest != bundle.evaluation_report_ref.digest:
        raise DigestMismatchError("receipt speaks for another evaluation report", source=uri,
                                  field="gate_receipt.evaluation_report_ref")
    model = model_ref(bundle)
    if receipt.model_sha256 != model.sha256 or report.model_sha256 != model.sha256:
        raise DigestMismatchError("receipt or report speaks for another model", source=uri,
                                  field="gate_receipt.model_sha256")
    return bundle


def model_ref(bundle: ModelBundle) -> ArtifactRef:
    for ref in bundle.artifact_refs:
        if ref.name == MODEL_ARTIFACT:
            return ref
    raise ModelFactoryError("bundle has no model artifact", field="artifact_refs")


def bundle_digest(bundle: ModelBundle) -> str:
    return content_digest(bundle)
