"""`bundle reproduce`: rebuild a bundle from what it pins, without Dagster, and compare digests.

The rebuild runs every stage again from the bundle's pinned manifests (re-verified), config,
windows, champion and gate history, with today's code, and compares the frame, model, report,
receipt and bundle id digest for digest. Stages write into the same content-addressed store
(refs inside the documents name their URIs, so a scratch store could never be IDENTICAL): an
identical rebuild writes nothing new, a different one adds blobs beside the originals, and the
rebuilt bundle itself is never written.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel

from model_factory.contracts import ArtifactCheck, IntakeReceipt, ModelBundle, ReproductionReport
from model_factory.core.bundles import (
    FRAME_ARTIFACT,
    MODEL_ARTIFACT,
    artifact_named,
    bundle_id_of,
    load_bundle,
)
from model_factory.core.canonical import content_digest
from model_factory.core.governance import policy_digest
from model_factory.core.identity import code_version
from model_factory.core.runs import (
    FactoryEnv,
    stage_bundle,
    stage_evaluation,
    stage_frame,
    stage_gate,
    stage_model,
)
from model_factory.core.storage import ArtifactStore, read_json, url_to_fs
from model_factory.errors import ConfigError


def pinned_intake(bundle: ModelBundle) -> IntakeReceipt:
    """The intake receipt a bundle was built from, recovered from the bundle itself."""
    return IntakeReceipt(
        train_run_id=bundle.train_run_id,
        partition_key=bundle.partition_key,
        config=bundle.config,
        config_hash=bundle.config_hash,
        code_version=bundle.code_version,
        windows=bundle.leakage_audit.windows,
        input_dataset_manifests=bundle.input_dataset_manifests,
        champion=bundle.gate_receipt.champion,
        gate_history=bundle.gate_history,
        policy_digest=bundle.policy_digest,
    )


def as_stored_shape(stored: Any, rebuilt: Any) -> Any:
    """The rebuilt document without optional fields the contract gained after the original was
    written (left at their empty defaults: None, [], {} or a count of 0); any other difference
    still shows."""
    if isinstance(stored, dict) and isinstance(rebuilt, dict):
        return {
            k: as_stored_shape(stored.get(k), v)
            for k, v in rebuilt.items()
            if k in stored or not (v in (None, [], {}) or (type(v) is int and v == 0))
        }
    if isinstance(stored, list) and isinstance(rebuilt, list) and len(stored) == len(rebuilt):
        return [as_stored_shape(s, r) for s, r in zip(stored, rebuilt, strict=True)]
    return rebuilt


def _full_uri(uri: str) -> str:
    """One spelling per location (relative paths, ``file://``, ``..`` resolved)."""
    try:
        fs, path = url_to_fs(uri)
    except (ImportError, ValueError):  # no backend for it: it can be in no configured store
        return uri
    return fs.unstrip_protocol(path)


def require_same_store(original: ModelBundle, store: ArtifactStore) -> None:
    """The rebuild writes into ``store`` and the URIs of what it writes go into the report,
    receipt and bundle: the bundle's artifacts must live there, or nothing could be IDENTICAL."""
    root = _full_uri(store.url).rstrip("/") + "/"
    refs = [*original.artifact_refs, *original.training_run_record.outputs]
    for uri in [*(r.uri for r in refs), original.evaluation_report_ref.uri]:
        if not _full_uri(uri).startswith(root):
            raise ConfigError(
                f"the bundle's artifact {uri} is not in the configured store {store.url}: a "
                "rebuild there would record other URIs and could never be IDENTICAL. Set "
                "MODEL_FACTORY_STORE to the store the bundle was built in",
                source=uri,
                field="MODEL_FACTORY_STORE",
            )


def _same(name: str, expected: str, actual: str) -> ArtifactCheck:
    return ArtifactCheck(
        name=name,
        expected=expected,
        actual=actual,
        status="ok" if expected == actual else "mismatch",
    )


STORED_CONTENT = "bundle_content"  # the comparison of the stored bundle with its own id


def reproduce_bundle(bundle_uri: str, env: FactoryEnv) -> ReproductionReport:
    """Rebuild every stage of the bundle's train run and compare.

    A bundle pins the governance policy it obeyed: when today's policy differs, nothing is
    rebuilt (the stages would apply other rules) and the verdict is DIFFERENT on that alone."""
    original = load_bundle(bundle_uri)
    require_same_store(original, env.store)
    current_policy = policy_digest(env.policy)
    if original.policy_digest is not None and original.policy_digest != current_policy:
        return ReproductionReport(
            bundle_id=original.bundle_id,
            train_run_id=original.train_run_id,
            verdict="DIFFERENT",
            code_version_then=original.code_version,
            code_version_now=code_version(),
            comparisons=[_same("policy_digest", original.policy_digest, current_policy)],
        )
    intake_ref = env.store.put_document("intake_receipt.json", pinned_intake(original))
    frame = stage_frame(env, intake_ref)
    model = stage_model(env, intake_ref, frame.ref)
    report = stage_evaluation(env, intake_ref, frame.ref, model.ref)
    gate = stage_gate(env, intake_ref, frame.ref, model.ref, report.ref)
    _, rebuilt, _ = stage_bundle(
        env, intake_ref, frame.ref, model.ref, report.ref, gate.ref, write=False
    )
    stored = read_json(bundle_uri)

    def shaped(original_doc: Any, rebuilt_doc: BaseModel) -> str:
        return content_digest(as_stored_shape(original_doc, rebuilt_doc.model_dump(mode="json")))

    comparisons = [
        # the stored document as it is against the id it claims: the rebuild below derives
        # every field afresh, so an edit to a field it re-derives (a decision threshold, the
        # declared feature schema) would otherwise go unseen
        _same(STORED_CONTENT, original.bundle_id, bundle_id_of(stored)),
        *(
            [_same("policy_digest", original.policy_digest, current_policy)]
            if original.policy_digest is not None
            else []
        ),
        _same(
            FRAME_ARTIFACT, artifact_named(original, FRAME_ARTIFACT).sha256, frame.doc.frame.sha256
        ),  # type: ignore[union-attr]
        _same(MODEL_ARTIFACT, artifact_named(original, MODEL_ARTIFACT).sha256, model.ref.sha256),
        _same(
            "evaluation_report",
            original.evaluation_report_ref.digest,
            shaped(read_json(original.evaluation_report_ref.uri), report.doc),
        ),  # type: ignore[arg-type]
        _same(
            "gate_receipt",
            content_digest(stored["gate_receipt"]),
            shaped(stored["gate_receipt"], gate.doc),
        ),  # type: ignore[arg-type]
        _same(
            "bundle_id",
            original.bundle_id,
            bundle_id_of(as_stored_shape(stored, rebuilt.model_dump(mode="json"))),
        ),
    ]
    return ReproductionReport(
        bundle_id=original.bundle_id,
        train_run_id=original.train_run_id,
        verdict="IDENTICAL" if all(c.status == "ok" for c in comparisons) else "DIFFERENT",
        code_version_then=original.code_version,
        code_version_now=code_version(),
        comparisons=comparisons,
    )
