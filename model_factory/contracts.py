"""The public contracts of the Model Factory: the single source of truth for every JSON document.

Every document the factory writes carries ``schema_version`` = ``mf.<Contract>.v0``.
``contracts/mf_public_contracts_v0.schema.json`` is generated from these models
(``model-factory contracts export``) and committed; a test keeps the two in step.

Fields named in ``VOLATILE_FIELDS`` (wall-clock times, timings, who triggered a run) are kept out
of every content digest, so rebuilding the same train run yields the same ids (ARCHITECTURE §5).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    model_validator,
)

CONTRACTS_VERSION = "v0"

# Keys dropped (at any depth) before a document is digested: they record when and by whom,
# not what, so two builds of the same inputs must not differ by them.
VOLATILE_FIELDS = frozenset(
    {"created_at_utc", "emitted_at_utc", "published_at_utc", "timings", "provenance"}
)


def schema_version_of(name: str) -> str:
    return f"mf.{name}.{CONTRACTS_VERSION}"


def _require_utc(value: datetime) -> datetime:
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError("datetime must be timezone-aware (UTC)")
    return value.astimezone(UTC)


UtcDatetime = Annotated[datetime, AfterValidator(_require_utc)]
Sha256 = Annotated[str, StringConstraints(pattern=r"^[0-9a-f]{64}$")]
TrainRunId = Annotated[str, StringConstraints(pattern=r"^mfr-[0-9a-f]{20}$")]
BundleId = Annotated[str, StringConstraints(pattern=r"^mfb-[0-9a-f]{20}$")]
Identifier = Annotated[str, StringConstraints(pattern=r"^[a-z][a-z0-9_]*$", max_length=64)]
VersionTag = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$", max_length=32)]


class _Contract(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _versioned(name: str):
    """A ``schema_version`` field pinned to one contract, defaulted so callers need not repeat it."""
    tag = schema_version_of(name)
    return Annotated[Literal[tag], Field(default=tag, description="Contract name and version.")]  # type: ignore[valid-type]


# ---------------------------------------------------------------------------------------------
# Shared pieces


class TimeWindow(_Contract):
    """A half-open UTC interval ``[start, end)``."""

    start: UtcDatetime
    end: UtcDatetime

    @model_validator(mode="after")
    def _ordered(self) -> TimeWindow:
        if self.end <= self.start:
            raise ValueError(f"window end {self.end} must be after start {self.start}")
        return self

    def contains(self, t: datetime) -> bool:
        return self.start <= t < self.end

    def overlaps(self, other: TimeWindow) -> bool:
        return self.start < other.end and other.start < self.end


class ColumnSpec(_Contract):
    name: str
    dtype: str = Field(description="Arrow type string, e.g. 'int64', 'timestamp[us, tz=UTC]'.")


class ArtifactRef(_Contract):
    """An immutable, content-addressed artifact (opaque URI plus digest)."""

    name: str
    uri: str
    sha256: Sha256
    size_bytes: int = Field(ge=0)
    media_type: str = "application/octet-stream"


# ---------------------------------------------------------------------------------------------
# Dataset manifests


DatasetKind = Literal["events", "feature_group", "labels"]


class DataFile(_Contract):
    path: str = Field(description="URI, or a path relative to the manifest's folder.")
    sha256: Sha256
    rows: int = Field(ge=0)
    size_bytes: int = Field(ge=0)


class DatasetManifest(_Contract):
    """One dataset slice by reference: files with digests, schema, keys and time window.

    Identified by the sha256 of its canonical JSON.
    """

    schema_version: _versioned("DatasetManifest")
    kind: DatasetKind
    name: Identifier
    version: VersionTag
    time_column: str = Field(
        description="Column the window applies to: event_time, available_at or observed_time."
    )
    time_window: TimeWindow
    keys: list[str] = Field(min_length=1, description="Join keys (entity keys or event_id).")
    columns: list[ColumnSpec] = Field(min_length=1)
    files: list[DataFile] = Field(min_length=1)
    row_count: int = Field(ge=0)
    valid_from_column: str | None = Field(
        None, description="Feature groups: business-time column (never used to join)."
    )
    ttl_seconds: int | None = Field(None, gt=0, description="Feature groups: max staleness.")
    label_family: str | None = Field(None, description="Labels: which truth these are.")
    description: str = ""

    @model_validator(mode="after")
    def _consistent(self) -> DatasetManifest:
        names = [c.name for c in self.columns]
        if len(set(names)) != len(names):
            raise ValueError("columns: duplicate column names")
        for col in [self.time_column, *self.keys, self.valid_from_column]:
            if col is not None and col not in names:
                raise ValueError(f"column '{col}' is declared but not in columns")
        if sum(f.rows for f in self.files) != self.row_count:
            raise ValueError("row_count differs from the sum of files[].rows")
        if self.kind == "labels" and self.label_family is None:
            raise ValueError("label_family is required for kind 'labels'")
        if self.kind != "feature_group" and self.ttl_seconds is not None:
            raise ValueError("ttl_seconds applies to feature groups only")
        return self

    def column_names(self) -> list[str]:
        return [c.name for c in self.columns]


class DatasetManifestRef(_Contract):
    """An opaque reference to a manifest plus the digest that pins it."""

    schema_version: _versioned("DatasetManifestRef")
    uri: str
    digest: Sha256
    kind: DatasetKind
    name: str
    version: str
    time_window: TimeWindow


# ---------------------------------------------------------------------------------------------
# Training configuration


class DatasetSelector(_Contract):
    name: str = Field(description="Dataset name in the catalog.")
    version: str = Field(description="Dataset version in the catalog.")


class SplitPolicy(_Contract):
    """Window lengths relative to the cut C = week start + 7 days (ARCHITECTURE §4)."""

    train_days: int = Field(28, ge=1, le=366, description="Length of the training window in days.")
    val_days: int = Field(7, ge=1, le=90, description="Length of the validation window in days.")
    test_days: int = Field(7, ge=1, le=90, description="Length of the test window in days.")
    label_maturity_days: int = Field(
        7, ge=0, le=180, description="Days a window's labels get to arrive before its cut."
    )
    missing_label: Literal["negative", "exclude"] = Field(
        "negative",
        description="Events with no visible label: 'negative' (no chargeback known = genuine) or 'exclude'.",
    )


class XGBoostParams(_Contract):
    """Hyper-parameters passed to xgboost.train; determinism comes from seed + nthread + hist."""

    max_depth: int = Field(6, ge=1, le=16, description="Maximum tree depth.")
    learning_rate: float = Field(0.1, gt=0, le=1, description="Shrinkage per boosting round (eta).")
    num_boost_round: int = Field(300, ge=1, le=5000, description="Maximum boosting rounds.")
    early_stopping_rounds: int = Field(
        30, ge=1, description="Stop when validation PR-AUC has not improved for this many rounds."
    )
    min_child_weight: float = Field(1.0, ge=0, description="Minimum hessian sum in a leaf.")
    subsample: float = Field(0.8, gt=0, le=1, description="Row subsample ratio per tree.")
    colsample_bytree: float = Field(0.8, gt=0, le=1, description="Column subsample ratio per tree.")
    reg_lambda: float = Field(1.0, ge=0, description="L2 regularisation on leaf weights.")
    max_bin: int = Field(256, ge=2, le=4096, description="Histogram bins per feature (hist).")
    seed: int = Field(42, description="Random seed: fixed so a rebuild gives the same bytes.")
    nthread: int = Field(2, ge=1, le=64, description="Threads; fixed for reproducibility.")


class GateThresholds(_Contract):
    """Gate criteria; the governance policy's floors bound them (a run cannot go below)."""

    min_roc_auc: float = Field(0.80, ge=0, le=1, description="Minimum test ROC-AUC.")
    min_pr_auc: float = Field(0.30, ge=0, le=1, description="Minimum test PR-AUC (average precision).")
    max_brier: float = Field(0.05, ge=0, le=1, description="Maximum test Brier score.")
    min_test_positives: int = Field(
        20, ge=0, description="Minimum positive labels in the test window for a verdict."
    )


class TrainingConfig(_Contract):
    """Everything a user chooses for a train run; its canonical hash is the config_hash."""

    schema_version: _versioned("TrainingConfig")
    model_family: Identifier = Field("fraud_xgb", description="Model family the bundle belongs to.")
    events: DatasetSelector = Field(
        default_factory=lambda: DatasetSelector(name="transactions", version="v1"),
        description="Events dataset (the population).",
    )
    event_features: list[str] = Field(
        default_factory=lambda: ["amount", "is_night", "is_weekend"],
        description="Event columns used as model features.",
    )
    entity_keys: list[str] = Field(
        default_factory=lambda: ["customer_id", "terminal_id"],
        description="Event columns feature groups may join on.",
    )
    feature_group_versions: list[DatasetSelector] = Field(
        default_factory=lambda: [
            DatasetSelector(name="customer_spending", version="v1"),
            DatasetSelector(name="terminal_risk", version="v1"),
            DatasetSelector(name="card_status", version="v1"),
        ],
        description="Feature groups (name, version), joined as of available_at.",
    )
    labels: DatasetSelector = Field(
        default_factory=lambda: DatasetSelector(name="chargebacks", version="v1"),
        description="Labels dataset (the Label Store).",
    )
    label_family: str = Field("fraud", description="Label family to train on.")
    split_policy: SplitPolicy = Field(default_factory=SplitPolicy, description="Train/val/test windows.")
    hyperparams: XGBoostParams = Field(default_factory=XGBoostParams, description="XGBoost parameters.")
    thresholds: list[float] = Field(
        default_factory=lambda: [0.1, 0.3, 0.5, 0.7, 0.9],
        description="Score thresholds for precision/recall in the report.",
    )
    gates: GateThresholds = Field(default_factory=GateThresholds, description="Quality gate criteria.")
    notes: str = Field("", description="Free text kept with the run.")

    @model_validator(mode="after")
    def _sane(self) -> TrainingConfig:
        if not self.event_features and not self.feature_group_versions:
            raise ValueError("a model needs at least one event feature or feature group")
        if any(not 0 < t < 1 for t in self.thresholds):
            raise ValueError("thresholds must lie strictly between 0 and 1")
        names = [g.name for g in self.feature_group_versions]
        if len(set(names)) != len(names):
            raise ValueError("feature_group_versions: a group may appear once")
        return self


class LeakagePolicy(_Contract):
    """The resolved as-of rules and windows of one train run."""

    schema_version: _versioned("LeakagePolicy")
    label_as_of_basis: Literal["observed_time"] = "observed_time"
    feature_as_of_basis: Literal["available_at"] = "available_at"
    cut: UtcDatetime = Field(description="Everything used was known strictly before this instant.")
    train_cut: UtcDatetime = Field(description="Simulated deploy time: labels for train/val before it.")
    train_window: TimeWindow
    eval_windows: dict[Literal["val", "test"], TimeWindow]
    missing_label: Literal["negative", "exclude"]


# ---------------------------------------------------------------------------------------------
# Leakage audit, metrics, reports


class FeatureGroupAudit(_Contract):
    name: str
    version: str
    keys: list[str]
    ttl_seconds: int | None
    joined_rows: int
    null_rows: int = Field(description="Events for which no snapshot qualified (features null).")
    ttl_dropped_rows: int = Field(description="Events whose latest snapshot was older than the TTL.")
    max_available_minus_event_seconds: float | None = Field(
        description="Max of available_at - event_time over joined rows; must be <= 0."
    )


class LeakageAudit(_Contract):
    schema_version: _versioned("LeakageAudit")
    passed: bool
    violations: list[str]
    feature_groups: list[FeatureGroupAudit]
    labels_hidden_by_cut: dict[str, int] = Field(
        description="Per split: labels of its events with observed_time >= its label cut."
    )
    labels_visible: dict[str, int]
    max_label_observed_minus_cut_seconds: dict[str, float | None]
    windows: LeakagePolicy
    pii_columns_found: list[str]


class ThresholdMetrics(_Contract):
    threshold: float
    precision: float
    recall: float
    alerts: int


class CalibrationBin(_Contract):
    lower: float
    upper: float
    rows: int
    mean_score: float | None
    observed_rate: float | None


class MetricSet(_Contract):
    """Metrics of one split."""

    split: Literal["train", "val", "test"]
    rows: int
    positives: int
    positive_rate: float
    roc_auc: float | None
    pr_auc: float | None
    brier: float
    log_loss: float
    at_thresholds: list[ThresholdMetrics]
    calibration: list[CalibrationBin]


class EvaluationReport(_Contract):
    schema_version: _versioned("EvaluationReport")
    train_run_id: TrainRunId
    partition_key: str
    model_family: str
    model_sha256: Sha256
    frame_sha256: Sha256
    best_iteration: int
    metrics: dict[str, MetricSet] = Field(description="Per split: val and test.")
    feature_importance: dict[str, float] = Field(description="Total gain per feature.")
    timings: dict[str, float] = Field(default_factory=dict, description="Volatile: seconds, latency.")
    emitted_at_utc: UtcDatetime | None = None


class EvaluationReportRef(_Contract):
    schema_version: _versioned("EvaluationReportRef")
    uri: str
    digest: Sha256


# ---------------------------------------------------------------------------------------------
# Gates, bundles, registry, ledger


class GateCriterion(_Contract):
    name: str
    metric: str
    comparator: Literal[">=", "<="]
    threshold: float = Field(description="Effective threshold: the config's, bounded by the policy floor.")
    configured: float
    policy_floor: float | None
    observed: float | None
    basis: Literal["point"] = "point"
    passed: bool


class GateReceipt(_Contract):
    schema_version: _versioned("GateReceipt")
    train_run_id: TrainRunId
    gate_status: Literal["PASS", "FAIL"]
    criteria: list[GateCriterion]
    observed_metrics: dict[str, float | None]
    reasons: list[str]
    evaluation_report_ref: EvaluationReportRef
    model_sha256: Sha256
    emitted_at_utc: UtcDatetime | None = None


class Provenance(_Contract):
    """Who and what started an attempt; never part of a digest."""

    triggered_by: str
    dagster_run_id: str | None = None
    tags: dict[str, str] = Field(default_factory=dict)


class TrainingRunRecord(_Contract):
    """Append-only record of one train run (rebuilt from the ledger; embedded in bundles)."""

    schema_version: _versioned("TrainingRunRecord")
    train_run_id: TrainRunId
    status: Literal["running", "succeeded", "failed"]
    partition_key: str
    model_family: str
    config_hash: Sha256
    code_version: str
    input_dataset_manifests: list[DatasetManifestRef]
    outputs: list[ArtifactRef]
    created_at_utc: UtcDatetime | None = None
    provenance: Provenance | None = None
    error: str | None = None


class FeatureGroupVersion(_Contract):
    name: str
    version: str
    keys: list[str]
    ttl_seconds: int | None
    columns: list[ColumnSpec] = Field(description="Feature columns the model reads from the group.")


class FeatureSpec(_Contract):
    name: str = Field(description="Column name in the frame / model input.")
    dtype: str
    source: str = Field(description="'event' or 'feature_group:<name>/<version>'.")


class ModelBundle(_Contract):
    """An immutable, content-addressed model bundle; bundle_id is the digest of its content."""

    schema_version: _versioned("ModelBundle")
    bundle_id: BundleId
    bundle_version: Literal["0.1"] = Field("0.1", description="Bundle layout version.")
    train_run_id: TrainRunId
    partition_key: str
    model_family: str
    model_format: Literal["xgboost-ubj"] = "xgboost-ubj"
    xgboost_version: str
    artifact_refs: list[ArtifactRef]
    feature_schema: list[FeatureSpec]
    feature_group_versions: list[FeatureGroupVersion]
    input_dataset_manifests: list[DatasetManifestRef]
    evaluation_report_ref: EvaluationReportRef
    gate_receipt: GateReceipt
    leakage_audit: LeakageAudit
    config: TrainingConfig
    config_hash: Sha256
    code_version: str
    training_run_record: TrainingRunRecord
    created_at_utc: UtcDatetime | None = None


class PublishBundleRequest(_Contract):
    schema_version: _versioned("PublishBundleRequest")
    bundle_uri: str
    bundle_id: BundleId
    requested_by: str = "model_factory"


class RegistryRecord(_Contract):
    """What the registry keeps per bundle_id (created once, never changed)."""

    schema_version: _versioned("RegistryRecord")
    bundle_id: BundleId
    bundle_uri: str
    bundle_sha256: Sha256
    train_run_id: TrainRunId
    model_family: str
    partition_key: str
    gate_status: Literal["PASS"]
    published_by: str
    published_at_utc: UtcDatetime | None = None


class PublishBundleResponse(_Contract):
    schema_version: _versioned("PublishBundleResponse")
    status: Literal["published", "already_published"]
    record_uri: str
    record: RegistryRecord


class ErrorResponse(_Contract):
    schema_version: _versioned("ErrorResponse")
    error_code: str
    message: str
    source: str | None = None
    field: str | None = None
    train_run_id: str | None = None
    emitted_at_utc: UtcDatetime | None = None


class GateFloors(_Contract):
    """Policy bounds no TrainingConfig may relax."""

    min_roc_auc: float = Field(0.70, ge=0, le=1)
    min_pr_auc: float = Field(0.10, ge=0, le=1)
    max_brier: float = Field(0.10, ge=0, le=1)
    min_test_positives: int = Field(10, ge=0)


class GovernancePolicy(_Contract):
    """What data may be used, what may never enter a frame or bundle, and gate floors."""

    schema_version: _versioned("GovernancePolicy")
    allowed_data_window: TimeWindow | None = Field(
        None, description="All event, label and feature time used must lie inside it.")
    excluded_ranges: list[TimeWindow] = Field(
        default_factory=list, description="Time ranges no training window may touch.")
    pii_columns: list[str] = Field(
        default_factory=lambda: ["card_number", "email", "phone", "full_name", "address", "ip_address"])
    pii_patterns: list[str] = Field(
        default_factory=lambda: [r"(?i)(card_?num|\bpan\b|e_?mail|phone|ssn|passport|iban)"],
        description="Regular expressions; a column name matching any is PII.")
    gate_floors: GateFloors = Field(default_factory=GateFloors)
    allowed_triggerers: list[str] | None = Field(
        None, description="fnmatch patterns of who may trigger training, e.g. 'schedule:*'; null = anyone.")


class IntakeReceipt(_Contract):
    """What the dataset_manifests asset pins for a train run: config, windows, manifest refs."""

    schema_version: _versioned("IntakeReceipt")
    train_run_id: TrainRunId
    partition_key: str
    config: TrainingConfig
    config_hash: Sha256
    code_version: str
    windows: LeakagePolicy
    input_dataset_manifests: list[DatasetManifestRef]
    provenance: Provenance | None = None


class TrainingFrameRecord(_Contract):
    """What training_frame produced: the frame by reference, its feature schema and its audit."""

    schema_version: _versioned("TrainingFrameRecord")
    train_run_id: TrainRunId
    intake_digest: Sha256
    frame: ArtifactRef
    feature_schema: list[FeatureSpec]
    feature_group_versions: list[FeatureGroupVersion]
    leakage_audit: LeakageAudit
    rows: dict[str, int]
    positives: dict[str, int]


PUBLIC_CONTRACTS: tuple[type[BaseModel], ...] = (
    TimeWindow,
    ArtifactRef,
    DatasetManifest,
    DatasetManifestRef,
    TrainingConfig,
    LeakagePolicy,
    LeakageAudit,
    MetricSet,
    EvaluationReport,
    EvaluationReportRef,
    GateReceipt,
    TrainingRunRecord,
    ModelBundle,
    PublishBundleRequest,
    PublishBundleResponse,
    RegistryRecord,
    ErrorResponse,
    GovernancePolicy,
    IntakeReceipt,
    TrainingFrameRecord,
)


def to_json_dict(model: BaseModel) -> dict[str, Any]:
    return model.model_dump(mode="json")
