"""Immutable model bundles: content-addressed, written once per train run, verifiable."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import numpy as np
import polars as pl
import xgboost as xgb

from model_factory.contracts import (
    ArtifactCheck,
    ArtifactRef,
    BundleVerification,
    CompatibilityReport,
    DecisionPolicy,
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
from model_factory.core.canonical import canonical_json, content_digest, sha256_hex, short_id
from model_factory.core.documents import parse_document
from model_factory.core.frames import frame_from_parquet
from model_factory.core.gates import failure_summary
from model_factory.core.intake import pinned_manifest
from model_factory.core.journal import entry_digest, ledger_journal
from model_factory.core.storage import (
    ArtifactStore,
    absolute_uri,
    file_sha256,
    join,
    open_uri,
    read_bytes,
    read_json,
)
from model_factory.core.training import TrainedModel, feature_matrix
from model_factory.errors import DigestMismatchError, ModelFactoryError, first_line

MODEL_ARTIFACT = "model.ubj"
FRAME_ARTIFACT = "training_frame.parquet"
SMOKE_ROWS = 256


def bundle_id_of(fields: dict[str, Any]) -> str:
    """The bundle id: digest of everything but the id itself and the volatile fields."""
    return short_id("mfb", content_digest({k: v for k, v in fields.items() if k != "bundle_id"}))


def feature_schema_digest(schema: list[FeatureSpec] | list[dict[str, Any]]) -> str:
    """sha256 of the schema's canonical JSON; verification passes the schema as stored."""
    return sha256_hex(
        canonical_json(
            [f.model_dump(mode="json") if isinstance(f, FeatureSpec) else f for f in schema]
        )
    )


def assemble_bundle(
    *,
    intake: IntakeReceipt,
    audit: LeakageAudit,
    feature_schema: list[FeatureSpec],
    feature_groups: list[FeatureGroupVersion],
    model_ref: ArtifactRef,
    frame_ref: ArtifactRef,
    report_ref: ArtifactRef,
    receipt: GateReceipt,
    policy_config: DecisionPolicy,
    provenance: Provenance | None = None,
) -> ModelBundle:
    """Everything a registry and a reproducer need, by reference, plus the run's record: its
    status, gate verdicts and reasons as the ledger gives them once the bundle is written (not
    the bundle's own id, a digest over the record too, nor the volatile attempts and timings)."""
    failed = receipt.gate_status == "FAIL"
    record = TrainingRunRecord(
        train_run_id=intake.train_run_id,
        status="gate_failed" if failed else "succeeded",
        gate_status=receipt.gate_status,
        gate_judged_status=receipt.judged_status,
        error=failure_summary(receipt.reasons) if failed else None,
        partition_key=intake.partition_key,
        model_family=intake.config.model_family,
        config_hash=intake.config_hash,
        code_version=intake.code_version,
        input_dataset_manifests=intake.input_dataset_manifests,
        outputs=[
            frame_ref,
            model_ref,
            # the report by its content digest, without a size: its bytes hold volatile timings,
            # so their length differs between runs that agree on everything else, and the bundle
            # id (a digest over this record) must not
            ArtifactRef(
                name=report_ref.name,
                uri=report_ref.uri,
                sha256=report_ref.sha256,
                size_bytes=0,
                media_type=report_ref.media_type,
            ),
        ],
        created_at_utc=datetime.now(UTC),
        provenance=provenance,
    )
    fields = dict(
        train_run_id=intake.train_run_id,
        partition_key=intake.partition_key,
        model_family=intake.config.model_family,
        xgboost_version=xgb.__version__,
        artifact_refs=[model_ref],
        feature_schema=feature_schema,
        feature_schema_digest=feature_schema_digest(feature_schema),
        feature_group_versions=feature_groups,
        input_dataset_manifests=intake.input_dataset_manifests,
        evaluation_report_ref=EvaluationReportRef(uri=report_ref.uri, digest=report_ref.sha256),
        policy_config=policy_config,
        gate_receipt=receipt,
        gate_history=intake.gate_history,
        leakage_audit=audit,
        config=intake.config,
        config_hash=intake.config_hash,
        code_version=intake.code_version,
        policy_digest=intake.policy_digest,
        training_run_record=record,
        created_at_utc=datetime.now(UTC),
    )
    draft = ModelBundle.model_construct(bundle_id="mfb-" + "0" * 20, **fields)
    return ModelBundle.model_validate(
        {**draft.model_dump(mode="json"), "bundle_id": bundle_id_of(draft.model_dump(mode="json"))}
    )


def write_bundle(store: ArtifactStore, bundle: ModelBundle) -> tuple[str, bool]:
    """Write once under the train run; the same content again is a no-op, other content an error."""
    return store.put_named_once(f"bundles/{bundle.train_run_id}/bundle.json", bundle)


def find_bundle(store_url: str, bundle_id: str) -> str:
    """The URI of a bundle in the store by its id (published or not)."""
    store = ArtifactStore(store_url)
    fs, root = store.location.fs, store.location.root
    unreadable = []
    for path in sorted(fs.glob(root.rstrip("/") + "/bundles/*/bundle.json")):
        uri = store.location.uri(path)
        try:
            found = load_bundle(uri).bundle_id
        except ModelFactoryError:  # another bundle's damage must not hide this one
            unreadable.append(uri)
            continue
        if found == bundle_id:
            return uri
    raise ModelFactoryError(
        f"no bundle with id {bundle_id} in the store"
        + (f" (unreadable, so not searched: {', '.join(unreadable)})" if unreadable else ""),
        source=store_url,
        field="bundle_id",
    )


def built_in(store_url: str, bundle: ModelBundle) -> bool:
    """Whether the bundle was built in this store (its model is there), wherever the bundle
    file itself now is: another store's run ledger says nothing of it, even for the same train
    run (another home that trained the same week journaled its own bundle's bytes)."""
    store = absolute_uri(store_url).rstrip("/") + "/"
    return absolute_uri(model_ref(bundle).uri).startswith(store)


def in_store(store_url: str, uri: str, bundle: ModelBundle) -> bool:
    """Whether ``uri`` is the bundle's own place in the store: ``bundles/<train run>/``."""
    own = join(store_url, "bundles", bundle.train_run_id, "bundle.json")
    return absolute_uri(uri) == absolute_uri(own)


# (sequence, sha256 of the entry's bytes) of a ledger entry, as the Dagster instance recorded it
# in the bundle's materialization (`ledger_sequence`, `ledger_entry_sha256`): outside the store.
EntryPin = tuple[int, str]


def entry_pin(sequence: int | None, entry_sha256: str | None) -> EntryPin | None:
    """The pin from its two recorded fields, when both were recorded."""
    return (sequence, entry_sha256) if sequence is not None and entry_sha256 else None


def journaled_digest(
    store_url: str, bundle: ModelBundle, pin: EntryPin | None = None
) -> tuple[int, str | None, str]:
    """(sequence, sha256 of the bundle's bytes the run journaled, or None, why not) of the
    store's run-ledger entry for the bundle.

    With ``pin``, the entry is read at its sequence and must be the one the Dagster instance
    recorded: the ledger is files in the store, and whoever can edit a bundle there can edit
    its entry's sha256 too. Without, the ledger is searched (its first entry for the run)."""
    subject = f"{bundle.train_run_id}/model_bundle"
    journal = ledger_journal(store_url)
    if pin is None:
        entry = journal.find("ledger_stage", subject)
        if entry is None:
            return (
                0,
                None,
                f"the store's run ledger has no entry for {subject}: no run journaled it",
            )
        return entry.sequence, entry.sha256, ""
    sequence, entry_sha256 = pin
    try:
        entry = journal.read(sequence)
    except ModelFactoryError as exc:
        return sequence, None, f"the run ledger's entry {sequence} is unreadable: {exc}"
    if entry_digest(entry) != entry_sha256 or entry.subject != subject:
        return (
            sequence,
            None,
            f"the run ledger's entry {sequence} is not the one the Dagster instance recorded "
            f"for {subject} (sha256 {entry_sha256}): it was edited",
        )
    return sequence, entry.sha256, ""


def not_journaled(
    store_url: str, uri: str, bundle: ModelBundle, pin: EntryPin | None = None
) -> str | None:
    """Why the bundle at ``uri`` is not its train run's bundle in the store with the bytes the
    store's run ledger journaled, or None. The bundle id is a digest of the bundle's own
    content, so an edited and re-digested bundle is self-consistent: the ledger is what holds."""
    if not in_store(store_url, uri, bundle):
        return (
            f"the bundle at {uri} is not its train run's bundle in the store {store_url}: only "
            "bundles the factory built there are published"
        )
    sequence, journaled, why = journaled_digest(store_url, bundle, pin)
    if journaled is None:
        return why
    stored = _stored_sha256(uri)
    if stored != journaled:
        return (
            f"the bundle's bytes (sha256 {stored}) are not those its run journaled (ledger "
            f"entry {sequence}: {journaled}): it was changed after it was written"
        )
    return None


def _stored_sha256(uri: str) -> str:
    fs, path = open_uri(uri)
    return file_sha256(fs, path)[0]


def load_bundle(uri: str) -> ModelBundle:
    return parse_document(read_json(uri), ModelBundle, source=uri)


def stored_bundle_digest(uri: str) -> str:
    """Content digest of the bundle as stored (robust to optional fields added since)."""
    return content_digest(read_json(uri))


def artifact_named(bundle: ModelBundle, name: str) -> ArtifactRef:
    for ref in [*bundle.artifact_refs, *bundle.training_run_record.outputs]:
        if ref.name == name:
            return ref
    raise ModelFactoryError(f"bundle has no '{name}' artifact", field="artifact_refs")


def model_ref(bundle: ModelBundle) -> ArtifactRef:
    return artifact_named(bundle, MODEL_ARTIFACT)


def _check(name: str, expected: str, actual: str | None) -> ArtifactCheck:
    status = "missing" if actual is None else "ok" if actual == expected else "mismatch"
    return ArtifactCheck(name=name, expected=expected, actual=actual, status=status)


def _blob_digest(uri: str) -> str | None:
    try:
        return sha256_hex(read_bytes(uri))
    except ModelFactoryError:
        return None


def _input_check(ref) -> ArtifactCheck:
    """A pinned input manifest: its digest, and every data file's digest, size and schema."""
    name = f"input {ref.kind}:{ref.name}/{ref.version}@{ref.time_window.start:%Y-%m-%d}"
    try:
        found = pinned_manifest(ref).digest
    except ModelFactoryError as exc:
        found = f"[{exc.code}] {exc}"
    return _check(name, ref.digest, found)


def verification(
    uri: str, inputs: bool = False, store_url: str | None = None, pin: EntryPin | None = None
) -> BundleVerification:
    """Recompute every digest the bundle pins and report each one's status; with ``inputs``,
    also its input manifests and their data files (all the data is read). A bundle built in
    ``store_url`` (in the store or a copy anywhere) is also checked against the bytes the
    store's run ledger journaled for its train run (``ledger_journal``; the entry the Dagster
    instance recorded, with ``pin``): an edit re-digested to a new bundle id is consistent with
    itself, and only the ledger tells it. No entry is ``missing``: nothing vouches for it. A
    bundle of another store is checked against itself only."""
    raw = read_json(uri)
    bundle = parse_document(raw, ModelBundle, source=uri)
    # Digests are taken over the JSON as stored, never as re-dumped by today's contracts: a
    # document written before an optional field was added must still verify.
    checks = [
        _check("bundle_id", bundle.bundle_id, bundle_id_of(raw)),
    ]
    if store_url is not None and built_in(store_url, bundle):
        _, journaled, why = journaled_digest(store_url, bundle, pin)
        # no entry: "missing", with the reason where the digest would be
        expected, actual = (journaled, _stored_sha256(uri)) if journaled else (why, None)
        checks.append(_check("ledger_journal", expected, actual))
    checks += [
        _check(
            "feature_schema_digest",
            bundle.feature_schema_digest,
            feature_schema_digest(raw["feature_schema"]),
        ),
    ]
    for ref in [*bundle.artifact_refs, artifact_named(bundle, FRAME_ARTIFACT)]:
        checks.append(_check(ref.name, ref.sha256, _blob_digest(ref.uri)))
    report_uri = bundle.evaluation_report_ref.uri
    report_digest, report = None, None
    try:
        stored_report = read_json(report_uri)
        report = parse_document(stored_report, EvaluationReport, source=report_uri)
        report_digest = content_digest(stored_report)
    except ModelFactoryError:
        pass
    checks.append(_check("evaluation_report", bundle.evaluation_report_ref.digest, report_digest))
    receipt = bundle.gate_receipt
    model_sha = model_ref(bundle).sha256
    checks += [
        _check(
            "gate_receipt.evaluation_report",
            bundle.evaluation_report_ref.digest,
            receipt.evaluation_report_ref.digest,
        ),
        _check("gate_receipt.model_sha256", model_sha, receipt.model_sha256),
        _check("gate_receipt.train_run_id", bundle.train_run_id, receipt.train_run_id),
    ]
    if report is not None:
        checks += [
            _check("evaluation_report.model_sha256", model_sha, report.model_sha256),
            _check("evaluation_report.train_run_id", bundle.train_run_id, report.train_run_id),
        ]
    if inputs:
        checks += [_input_check(ref) for ref in bundle.input_dataset_manifests]
    return BundleVerification(
        bundle_uri=uri,
        bundle_id=bundle.bundle_id,
        valid=all(c.status == "ok" for c in checks),
        checks=checks,
    )


def verify_bundle(uri: str) -> ModelBundle:
    """The bundle, if every digest it pins still holds; otherwise an error naming the first."""
    result = verification(uri)
    for c in result.checks:
        if c.status != "ok":
            raise DigestMismatchError(
                f"{c.name}: expected {c.expected}, found {c.actual or 'nothing'}",
                source=uri,
                field=c.name,
            )
    return load_bundle(uri)


def smoke_test(bundle: ModelBundle) -> int:
    """Load the model, score a few rows of its own frame: finite probabilities, the declared
    inputs in order. Returns the rows scored; every failure names the artifact at fault."""
    model, frame_ref = model_ref(bundle), artifact_named(bundle, FRAME_ARTIFACT)
    trained = TrainedModel.from_bytes(ArtifactStore.get_bytes(model), nthread=1, source=model.uri)
    names = [f.name for f in bundle.feature_schema]
    if list(trained.booster.feature_names or []) != names:
        raise ModelFactoryError(
            f"model inputs {trained.booster.feature_names} differ from the "
            f"bundle's feature schema {names}",
            source=model.uri,
            field="feature_names",
        )
    try:
        frame = frame_from_parquet(ArtifactStore.get_bytes(frame_ref))
        rows = frame.filter(pl.col("split") == "test").head(SMOKE_ROWS)
        x = feature_matrix(rows, names)
    except (pl.exceptions.PolarsError, OSError) as exc:
        raise ModelFactoryError(
            f"the frame cannot be read for scoring ({first_line(exc)})",
            source=frame_ref.uri,
            field="(frame)",
        ) from exc
    try:
        scores = trained.predict(x)
    except xgb.core.XGBoostError as exc:
        raise ModelFactoryError(
            f"the model cannot score its own frame ({first_line(exc)})",
            source=model.uri,
            field="(model)",
        ) from exc
    if (
        scores.shape != (rows.height,)
        or not np.all(np.isfinite(scores))
        or not np.all((scores >= 0) & (scores <= 1))
    ):
        raise ModelFactoryError(
            "the model's scores on its own frame are not probabilities",
            source=model.uri,
            field="(model)",
        )
    return rows.height


def check_serving_schema(
    bundle: ModelBundle,
    serving: list[FeatureSpec],
    groups: list[FeatureGroupVersion] | None = None,
    offered_as: str = "serving",
) -> CompatibilityReport:
    """Can a serving feature schema (and its feature-group versions) feed this bundle's model?
    ``offered_as`` names the offered side in the mismatches (another frame, for a champion)."""
    offered = {f.name: f for f in serving}
    wanted = {f.name: f for f in bundle.feature_schema}
    missing = [n for n in wanted if n not in offered]
    dtypes = [
        f"{n}: bundle {wanted[n].dtype}, {offered_as} {offered[n].dtype}"
        for n in wanted
        if n in offered and offered[n].dtype != wanted[n].dtype
    ]
    versions: list[str] = []
    if groups is not None:
        served = {g.name: g.version for g in groups}
        versions = [
            f"{g.name}: bundle {g.version}, {offered_as} {served.get(g.name, 'absent')}"
            for g in bundle.feature_group_versions
            if served.get(g.name) != g.version
        ]
    return CompatibilityReport(
        compatible=not (missing or dtypes or versions),
        missing_features=missing,
        dtype_mismatches=dtypes,
        group_version_mismatches=versions,
        extra_features=[n for n in offered if n not in wanted],
    )
