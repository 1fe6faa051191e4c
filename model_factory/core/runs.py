"""One function per stage of a train run, over the catalog, store and registry.

The Dagster assets are thin wrappers around these; the CLI (frame export) and tests call them
directly, so there is one code path whatever runs it.
"""

from __future__ import annotations

import tempfile
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TypeVar

import numpy as np
import polars as pl
from pydantic import BaseModel

from model_factory.contracts import (
    ArtifactRef,
    ChampionRef,
    EvaluationReport,
    EvaluationReportRef,
    FeatureGroupVersion,
    GateReceipt,
    GovernancePolicy,
    IntakeReceipt,
    JournalEntry,
    ModelBundle,
    PromotionReadiness,
    Provenance,
    PublishBundleRequest,
    PublishBundleResponse,
    TrainingConfig,
    TrainingFrameRecord,
    WeekReportRef,
)
from model_factory.core.bundles import (
    MODEL_ARTIFACT,
    assemble_bundle,
    check_serving_schema,
    load_bundle,
    model_ref,
    verify_bundle,
    write_bundle,
)
from model_factory.core.canonical import canonical_json, content_digest
from model_factory.core.documents import parse_document
from model_factory.core.evaluation import evaluate_run
from model_factory.core.faults import crash_point
from model_factory.core.frames import (
    WrittenFrame,
    build_frame_file,
    check_frame_schema,
    frame_from_parquet,
)
from model_factory.core.gates import GateEvidence, decide_gate
from model_factory.core.governance import policy_digest, policy_document
from model_factory.core.intake import FrameInputs, feature_columns, intake, reload_inputs
from model_factory.core.journal import ledger_journal
from model_factory.core.manifests import Catalog
from model_factory.core.readiness import (
    LATENCY_KEY,
    READINESS_NAME,
    ReadinessInputs,
    compute_readiness,
    readiness_uri_for,
)
from model_factory.core.registry import FileRegistry
from model_factory.core.report_html import render_readiness_html, render_report_html
from model_factory.core.settings import DEFAULT_STREAM_ABOVE_BYTES, Settings
from model_factory.core.storage import ArtifactStore, file_sha256, open_uri, read_json
from model_factory.core.training import TrainedModel, train_xgboost
from model_factory.errors import (
    LeakageError,
    MissingInputError,
    ModelFactoryError,
    PolicyViolationError,
    StorageError,
    first_line,
)

D = TypeVar("D", bound=BaseModel)


@dataclass(frozen=True)
class FactoryEnv:
    """Where a run reads and writes, and the policy it obeys."""

    catalog: Catalog
    store: ArtifactStore
    registry: FileRegistry
    policy: GovernancePolicy
    policy_source: str = "built-in default policy"
    frame_mode: str = "auto"  # see Settings.frame_mode
    stream_frames_above_bytes: int = DEFAULT_STREAM_ABOVE_BYTES

    @classmethod
    def from_settings(cls, settings: Settings) -> FactoryEnv:
        return cls(
            Catalog(settings.catalog_url),
            ArtifactStore(settings.store_url),
            FileRegistry(settings.registry_url, settings.store_url),
            settings.policy(),
            settings.policy_path or "built-in default policy",
            settings.frame_mode,
            settings.stream_frames_above_bytes,
        )

    def streams_frame(self, inputs: FrameInputs) -> bool:
        """Whether this run's frame is built in streaming mode."""
        if self.frame_mode != "auto":
            return self.frame_mode == "streaming"
        size = sum(f.size_bytes for e in inputs.all_entries() for f in e.manifest.files)
        return size > self.stream_frames_above_bytes


@dataclass
class StageResult:
    """A stage's document, its stored reference, and ledger facts (row counts, timings)."""

    ref: ArtifactRef
    doc: BaseModel | None = None
    counts: dict[str, int] = field(default_factory=dict)
    seconds: float = 0.0


def load_document(ref: ArtifactRef, model: type[D]) -> D:
    return ArtifactStore.get_document(ref.uri, model, ref.sha256)


def _same_run(intake_doc: IntakeReceipt, *docs: BaseModel) -> None:
    for d in docs:
        other = getattr(d, "train_run_id", intake_doc.train_run_id)
        if other != intake_doc.train_run_id:
            raise ModelFactoryError(
                f"upstream {type(d).__name__} belongs to train run {other}, not "
                f"{intake_doc.train_run_id}: re-materialize the stages after dataset_manifests",
                field="train_run_id",
            )


def stage_intake(
    env: FactoryEnv,
    config: TrainingConfig,
    partition_key: str,
    provenance: Provenance | None = None,
    gate_history: list[WeekReportRef] | None = None,
) -> StageResult:
    """Pin the train run: manifests, config, windows, the champion before this week (from the
    registry) and the earlier weeks' reports the gate's stability criteria read."""
    started = time.perf_counter()
    champion = env.registry.champion_before(config.model_family, partition_key)
    receipt, inputs = intake(
        env.catalog,
        config,
        partition_key,
        env.policy,
        provenance,
        env.policy_source,
        champion,
        gate_history,
    )
    crash_point("intake.verified")
    # the rules themselves, not only their digest: kept under it (store.blob_uri), so whoever
    # holds a receipt or bundle can read and prove the policy it was pinned under
    env.store.put_bytes(
        "governance_policy.json",
        policy_document(env.policy),
        media_type="application/json",
        suffix=".json",
    )
    ref = env.store.put_document("intake_receipt.json", receipt)
    counts = {
        "manifests": len(receipt.input_dataset_manifests),
        "event_rows": sum(e.manifest.row_count for e in inputs.events),
        "label_rows": sum(e.manifest.row_count for e in inputs.labels),
    }
    return StageResult(ref, receipt, counts, time.perf_counter() - started)


def frame_file(
    env: FactoryEnv, receipt: IntakeReceipt, inputs: FrameInputs, path: str
) -> WrittenFrame:
    """The training frame of a train run as a local parquet file, built in the mode the settings
    pick for its inputs: the same bytes either way; in streaming mode the whole frame's features
    are never in memory at once."""
    streaming = env.streams_frame(inputs)
    return build_frame_file(receipt, inputs, env.policy, path, streaming=streaming)


def _same_policy(env: FactoryEnv, receipt: IntakeReceipt, source: str) -> None:
    """Every stage that reads the policy runs under the one the intake pinned (it is in the train
    run id): under another, a column it denies could reach the frame of a run recorded as
    obeying it, or the gate could judge by other floors and overrides than the bundle names."""
    current = policy_digest(env.policy)
    if receipt.policy_digest is not None and receipt.policy_digest != current:
        raise PolicyViolationError(
            f"the intake was pinned under governance policy {receipt.policy_digest[:12]}, this "
            f"stage runs under {current[:12]}: materialize the week from dataset_manifests again",
            source=source,
            field="policy_digest",
        )


def stage_frame(env: FactoryEnv, intake_ref: ArtifactRef) -> StageResult:
    started = time.perf_counter()
    receipt = load_document(intake_ref, IntakeReceipt)
    _same_policy(env, receipt, intake_ref.uri)
    inputs = reload_inputs(receipt)  # every pinned file verified again
    parquet = {"media_type": "application/vnd.apache.parquet", "suffix": ".parquet"}
    with tempfile.TemporaryDirectory(prefix="mf-frame-") as tmp:
        try:
            written = frame_file(env, receipt, inputs, f"{tmp}/frame.parquet")
        except (OSError, pl.exceptions.ComputeError) as exc:
            # the frame is written in the temporary folder ($TMPDIR) first; Polars' parquet
            # writer reports a full disk as a ComputeError naming the OS error, nothing else
            if not isinstance(exc, OSError) and "os error" not in str(exc).lower():
                raise
            raise StorageError(
                f"the frame could not be written there: {first_line(exc)}",
                source=f"{tmp}/frame.parquet",
            ) from exc
        frame_ref = env.store.put_file("training_frame.parquet", written.path, **parquet)
    schema, audit = written.feature_schema, written.audit
    rows, positives = written.rows, written.positives
    groups = [
        FeatureGroupVersion(
            name=name,
            version=entries[0].manifest.version,
            keys=entries[0].manifest.keys,
            ttl_seconds=entries[0].manifest.ttl_seconds,
            columns=[
                c for c in entries[0].manifest.columns if c.name in feature_columns(entries[0])
            ],
        )
        for name, entries in inputs.feature_groups.items()
    ]
    record = TrainingFrameRecord(
        train_run_id=receipt.train_run_id,
        intake_digest=intake_ref.sha256,
        frame=frame_ref,
        feature_schema=schema,
        feature_group_versions=groups,
        leakage_audit=audit,
        rows=rows,
        positives=positives,
    )
    crash_point("frame.built")
    ref = env.store.put_document("training_frame_record.json", record)
    counts = {f"{s}_rows": rows.get(s, 0) for s in ("train", "val", "test")}
    counts |= {f"{s}_positives": positives.get(s, 0) for s in ("train", "val", "test")}
    return StageResult(ref, record, counts, time.perf_counter() - started)


def load_frame(record: TrainingFrameRecord) -> pl.DataFrame:
    frame = frame_from_parquet(ArtifactStore.get_bytes(record.frame))
    check_frame_schema(frame, record.feature_schema, record.frame.uri)
    return frame


def stage_model(env: FactoryEnv, intake_ref: ArtifactRef, frame_ref: ArtifactRef) -> StageResult:
    started = time.perf_counter()
    receipt = load_document(intake_ref, IntakeReceipt)
    record = load_document(frame_ref, TrainingFrameRecord)
    _same_run(receipt, record)
    if not record.leakage_audit.passed:
        raise LeakageError(
            f"the frame's leakage audit failed: {record.leakage_audit.violations}",
            source=frame_ref.uri,
            field="leakage_audit",
        )
    frame = load_frame(record)
    trained = train_xgboost(
        frame,
        [f.name for f in record.feature_schema],
        receipt.config.hyperparams,
        source=record.frame.uri,
    )
    crash_point("training.fitted")
    ref = env.store.put_bytes(MODEL_ARTIFACT, trained.model_bytes, suffix=".ubj")
    counts = {"best_iteration": trained.best_iteration, "model_bytes": len(trained.model_bytes)}
    return StageResult(ref, None, counts, time.perf_counter() - started)


def stage_evaluation(
    env: FactoryEnv, intake_ref: ArtifactRef, frame_ref: ArtifactRef, model_ref: ArtifactRef
) -> StageResult:
    started = time.perf_counter()
    receipt = load_document(intake_ref, IntakeReceipt)
    _same_policy(env, receipt, intake_ref.uri)
    record = load_document(frame_ref, TrainingFrameRecord)
    _same_run(receipt, record)
    frame = load_frame(record)
    trained = TrainedModel.from_bytes(
        ArtifactStore.get_bytes(model_ref), receipt.config.hyperparams.nthread, source=model_ref.uri
    )
    # every matrix of the report (scores, SHAP, drift) is read in the schema's order: the model's
    trained.check_inputs([f.name for f in record.feature_schema], source=model_ref.uri)
    report = evaluate_run(receipt, record, frame, trained, model_ref.sha256, env.policy)
    # The HTML view is a pure function of the report's deterministic content, so referencing it
    # keeps the report digest reproducible.
    html = env.store.put_bytes(
        "evaluation_report.html", render_report_html(report), media_type="text/html", suffix=".html"
    )
    report = report.model_copy(update={"html": html})
    crash_point("report.evaluated")
    ref = env.store.put_document("evaluation_report.json", report)
    test = report.metrics["test"]
    counts = {"test_rows": test.rows, "test_positives": test.positives}
    return StageResult(ref, report, counts, time.perf_counter() - started)


def _champion_scores(
    champion: ChampionRef | None, test: pl.DataFrame, record: TrainingFrameRecord
) -> tuple[np.ndarray | None, str | None]:
    """The champion's scores on the candidate's test rows, or why there are none.

    Only where this frame can feed the champion's model as its bundle declares (names, dtypes
    and feature-group versions): a group's new version keeps its column names, and the champion
    scored on values it was not trained on is no evidence about either model."""
    if champion is None:
        return None, None
    try:
        bundle = verify_bundle(champion.bundle_uri)
        # the bundle there must still be the champion intake pinned: an edited one verifies
        # against itself under a new id
        if bundle.bundle_id != champion.bundle_id:
            return None, f"{champion.bundle_uri} now holds {bundle.bundle_id}, not the champion"
        if model_ref(bundle).sha256 != champion.model_sha256:
            return None, f"{champion.bundle_uri} now names another model than the champion's"
        fits = check_serving_schema(
            bundle, record.feature_schema, record.feature_group_versions, "this frame"
        )
        if not fits.compatible:
            differences = [
                *([f"missing {fits.missing_features}"] if fits.missing_features else []),
                *fits.dtype_mismatches,
                *fits.group_version_mismatches,
            ]
            return None, f"its inputs are not this frame's ({'; '.join(differences)})"
        names = [f.name for f in bundle.feature_schema]
        ref = model_ref(bundle)
        model = TrainedModel.from_bytes(ArtifactStore.get_bytes(ref), nthread=2, source=ref.uri)
        return model.score(test, names, source=ref.uri), None
    except ModelFactoryError as exc:
        return None, str(exc)


def stage_gate(
    env: FactoryEnv,
    intake_ref: ArtifactRef,
    frame_ref: ArtifactRef,
    model_ref_: ArtifactRef,
    report_ref: ArtifactRef,
) -> StageResult:
    """Judge the candidate: its report, its test scores, the champion on the same rows."""
    started = time.perf_counter()
    receipt = load_document(intake_ref, IntakeReceipt)
    _same_policy(env, receipt, intake_ref.uri)
    record = load_document(frame_ref, TrainingFrameRecord)
    report = load_document(report_ref, EvaluationReport)
    _same_run(receipt, record, report)
    test = load_frame(record).filter(pl.col("split") == "test")
    features = [f.name for f in record.feature_schema]
    model = TrainedModel.from_bytes(
        ArtifactStore.get_bytes(model_ref_),
        receipt.config.hyperparams.nthread,
        source=model_ref_.uri,
    )
    champion_scores, problem = _champion_scores(receipt.champion, test, record)
    history = tuple(
        (h.partition_key, r)
        for h in receipt.gate_history
        if (
            r := ArtifactStore.get_document(
                h.evaluation_report_ref.uri, EvaluationReport, h.evaluation_report_ref.digest
            )
        ).model_family
        == receipt.config.model_family
    )
    evidence = GateEvidence(
        report=report,
        report_ref=EvaluationReportRef(uri=report_ref.uri, digest=report_ref.sha256),
        frame_sha256=record.frame.sha256,
        y_test=test["label"].to_numpy(),
        score_test=model.score(test, features, source=model_ref_.uri),
        champion=receipt.champion,
        champion_score_test=champion_scores,
        champion_problem=problem,
        history=history,
    )
    gate = decide_gate(receipt.config.gates, env.policy, evidence)
    crash_point("gate.decided")
    ref = env.store.put_document("gate_receipt.json", gate)
    return StageResult(ref, gate, {}, time.perf_counter() - started)


def stage_bundle(
    env: FactoryEnv,
    intake_ref: ArtifactRef,
    frame_ref: ArtifactRef,
    model_ref: ArtifactRef,
    report_ref: ArtifactRef,
    gate_ref: ArtifactRef,
    provenance: Provenance | None = None,
    write: bool = True,
) -> tuple[StageResult, ModelBundle, bool]:
    """Package the bundle and (unless ``write`` is False) write it once; returns
    (result, bundle, created)."""
    started = time.perf_counter()
    receipt = load_document(intake_ref, IntakeReceipt)
    _same_policy(env, receipt, intake_ref.uri)
    record = load_document(frame_ref, TrainingFrameRecord)
    gate = load_document(gate_ref, GateReceipt)
    report = load_document(report_ref, EvaluationReport)
    _same_run(receipt, record, gate, report)
    bundle = assemble_bundle(
        intake=receipt,
        audit=record.leakage_audit,
        feature_schema=record.feature_schema,
        feature_groups=record.feature_group_versions,
        model_ref=model_ref,
        frame_ref=record.frame,
        report_ref=report_ref,
        receipt=gate,
        policy_config=report.policy,
        provenance=provenance,
    )
    uri, created = write_bundle(env.store, bundle) if write else ("", False)
    crash_point("bundle.written")
    if write and gate.gate_status == "PASS":
        # After the bundle: the document names the bundle_id, so it cannot be inside it.
        stage_readiness(env, receipt, record, report, bundle, uri, model_ref)
    ref = ArtifactRef(
        name="bundle.json",
        uri=uri,
        sha256=content_digest(bundle),
        size_bytes=len(canonical_json(bundle)),
        media_type="application/json",
    )
    return StageResult(ref, bundle, {}, time.perf_counter() - started), bundle, created


def stage_readiness(
    env: FactoryEnv,
    receipt: IntakeReceipt,
    record: TrainingFrameRecord,
    report: EvaluationReport,
    bundle: ModelBundle,
    bundle_uri: str,
    model_ref_: ArtifactRef,
) -> tuple[str, PromotionReadiness]:
    """The PASS bundle's promotion readiness, written once next to its bundle.json (with an HTML
    view in the store); the registry finds it there when it publishes the bundle."""
    settings = receipt.config.readiness
    test = load_frame(record).filter(pl.col("split") == "test")
    model = TrainedModel.from_bytes(
        ArtifactStore.get_bytes(model_ref_),
        receipt.config.hyperparams.nthread,
        source=model_ref_.uri,
    )
    champion_scores, problem = _champion_scores(receipt.champion, test, record)
    champion_policy = None
    if champion_scores is not None and receipt.champion is not None:
        champion_policy = load_bundle(receipt.champion.bundle_uri).policy_config
    amount_column = settings.amount_column if settings.amount_column in test.columns else None
    # Read from the stored report: its first attempt's measurement, so re-runs agree.
    latency = report.timings.get(LATENCY_KEY)
    doc = compute_readiness(
        ReadinessInputs(
            bundle_id=bundle.bundle_id,
            train_run_id=bundle.train_run_id,
            partition_key=bundle.partition_key,
            model_family=bundle.model_family,
            model_sha256=model_ref_.sha256,
            evaluation_report_digest=bundle.evaluation_report_ref.digest,
            y=test["label"].to_numpy(),
            days=test["event_time"].dt.date().cast(pl.Utf8).to_numpy(),
            candidate_score=model.score(
                test, [f.name for f in record.feature_schema], source=model_ref_.uri
            ),
            candidate_policy=bundle.policy_config,
            champion=receipt.champion,
            champion_score=champion_scores,
            champion_policy=champion_policy,
            champion_problem=problem,
            amount=test[amount_column].to_numpy() if amount_column else None,
            amount_column=amount_column,
            latency_p50_us=latency,
            gate_overridden=bundle.gate_receipt.override is not None,
        ),
        settings,
    )
    html = env.store.put_bytes(
        "readiness.html", render_readiness_html(doc), media_type="text/html", suffix=".html"
    )
    doc = doc.model_copy(
        update={
            "html": html,
            "timings": {LATENCY_KEY: latency} if latency is not None else {},
            "created_at_utc": datetime.now(UTC),
        }
    )
    uri, _ = env.store.put_named_once(f"bundles/{bundle.train_run_id}/{READINESS_NAME}", doc)
    return uri, doc


def load_readiness(bundle_uri: str) -> PromotionReadiness | None:
    """The readiness document next to a bundle, if it has one (FAIL bundles have none)."""
    try:
        raw = read_json(readiness_uri_for(bundle_uri))
    except MissingInputError:
        return None
    return parse_document(raw, PromotionReadiness, source=readiness_uri_for(bundle_uri))


def stage_publish(
    env: FactoryEnv,
    bundle_uri: str,
    bundle_id: str,
    requested_by: str,
    dagster_run_id: str | None = None,
    ledger_sequence: int | None = None,
    ledger_entry_sha256: str | None = None,
) -> PublishBundleResponse:
    """Publish through the registry (which re-verifies); a refusal comes back in the response.
    ``ledger_*``: the bundle's run-ledger entry as the Dagster instance recorded it."""
    return env.registry.publish(
        PublishBundleRequest(
            bundle_uri=bundle_uri,
            bundle_id=bundle_id,
            requested_by=requested_by,
            dagster_run_id=dagster_run_id,
            ledger_sequence=ledger_sequence,
            ledger_entry_sha256=ledger_entry_sha256,
        )
    )


def journal_stage(
    env: FactoryEnv,
    stage: str,
    ref: ArtifactRef,
    train_run_id: str,
    partition_key: str,
    dagster_run_id: str | None = None,
) -> JournalEntry:
    """Chain a stage's output into the ledger journal: the document as referenced, plus the
    sha256 of its bytes as stored (a document's ref digest leaves volatile fields out; this one
    pins every byte)."""
    fs, path = open_uri(ref.uri)
    stored, _ = file_sha256(fs, path)
    entry, _ = ledger_journal(env.store.url).append(
        kind="ledger_stage",
        subject=f"{train_run_id}/{stage}",
        uri=ref.uri,
        sha256=stored,
        train_run_id=train_run_id,
        stage=stage,
        partition_key=partition_key,
        document=ref,
        dagster_run_id=dagster_run_id,
    )
    return entry
