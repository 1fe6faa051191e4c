"""The public contracts of the Model Factory: the single source of truth for every JSON document.

Every document the factory writes carries ``schema_version`` = ``mf.<Contract>.v0``.
``contracts/mf_public_contracts_v0.schema.json`` is generated from these models
(``model-factory contracts export``) and committed; a test keeps the two in step.

Fields named in ``VOLATILE_FIELDS`` (wall-clock times, timings, who triggered a run) are kept out
of every content digest, so rebuilding the same train run yields the same ids (ARCHITECTURE §5).
"""

from __future__ import annotations

import math
import re
import struct
import unicodedata
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    ValidationInfo,
    field_validator,
    model_validator,
)

CONTRACTS_VERSION = "v0"
# Seeds go to NumPy (non-negative) and to XGBoost (a signed 64-bit long), some plus a small
# offset per control model: a bound well inside both, refused at the config, not mid-run.
MAX_SEED = 2**62
_FLOAT32_SMALLEST_NORMAL = 2.0**-126

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
    # Another offset is refused, not converted: a document whose author thought in local time
    # is more likely wrong by that offset than meant as the instant it denotes.
    if value.utcoffset().total_seconds() != 0:  # type: ignore[union-attr]
        raise ValueError(
            f"datetime must be UTC (offset +00:00 or Z), found offset {value.utcoffset()}"
        )
    return value.astimezone(UTC)


UtcDatetime = Annotated[datetime, AfterValidator(_require_utc)]
Sha256 = Annotated[str, StringConstraints(pattern=r"^[0-9a-f]{64}$")]
TrainRunId = Annotated[str, StringConstraints(pattern=r"^mfr-[0-9a-f]{20}$")]
BundleId = Annotated[str, StringConstraints(pattern=r"^mfb-[0-9a-f]{20}$")]
Identifier = Annotated[str, StringConstraints(pattern=r"^[a-z][a-z0-9_]*$", max_length=64)]
VersionTag = Annotated[
    str, StringConstraints(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$", max_length=32)
]


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
            raise ValueError(f"end: window end {self.end} must be after start {self.start}")
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
        if len(set(self.keys)) != len(self.keys):
            raise ValueError("keys: duplicate key names")
        for field, declared in (
            ("time_column", [self.time_column]),
            ("keys", self.keys),
            ("valid_from_column", [self.valid_from_column]),
        ):
            for col in declared:
                if col is not None and col not in names:
                    raise ValueError(f"{field}: '{col}' is not among the columns {names}")
        if sum(f.rows for f in self.files) != self.row_count:
            raise ValueError("row_count: differs from the sum of files[].rows")
        if self.kind == "labels" and self.label_family is None:
            raise ValueError("label_family: required for kind 'labels'")
        if self.kind != "feature_group" and self.ttl_seconds is not None:
            raise ValueError("ttl_seconds: applies to feature groups only")
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
        30,
        ge=1,
        description="Stop when the validation 'aucpr' (XGBoost's interpolated PR-AUC) has not "
        "improved for this many rounds.",
    )
    min_child_weight: float = Field(1.0, ge=0, description="Minimum hessian sum in a leaf.")
    subsample: float = Field(0.8, gt=0, le=1, description="Row subsample ratio per tree.")
    colsample_bytree: float = Field(0.8, gt=0, le=1, description="Column subsample ratio per tree.")
    reg_lambda: float = Field(1.0, ge=0, description="L2 regularisation on leaf weights.")
    max_bin: int = Field(256, ge=2, le=4096, description="Histogram bins per feature (hist).")
    seed: int = Field(
        42,
        ge=0,
        le=MAX_SEED,
        description="Random seed: fixed so a rebuild gives the same bytes. XGBoost uses its low "
        "32 bits: seeds that differ by a multiple of 2**32 give the same model.",
    )
    nthread: int = Field(2, ge=1, le=64, description="Threads; fixed for reproducibility.")

    @field_validator(
        "learning_rate", "min_child_weight", "subsample", "colsample_bytree", "reg_lambda"
    )
    @classmethod
    def _a_float32(cls, value: float) -> float:
        # XGBoost parses its parameters as 32-bit floats: infinity (YAML's .inf) gives a
        # constant model, and a value that overflows or underflows a normal float32 is refused
        # mid-run, after the frame has been built
        try:
            single = struct.unpack("f", struct.pack("f", value))[0]
        except OverflowError:
            single = math.inf
        if not math.isfinite(single) or (value != 0 and abs(value) < _FLOAT32_SMALLEST_NORMAL):
            raise ValueError(
                f"{value!r} is not one XGBoost takes: 0, or a 32-bit float from 1.2e-38 to "
                "3.4e38 in size"
            )
        return value


GateMetric = Literal["roc_auc", "pr_auc", "brier", "log_loss", "positives"]
GateKind = Literal["point", "ci_lower_bound", "non_inferiority", "stability"]
# Metrics where lower is better; every other gate metric is better when higher.
LOWER_IS_BETTER = frozenset({"brier", "log_loss"})


class GateCriterionSpec(_Contract):
    """One configured gate criterion."""

    name: Identifier = Field(description="Unique name; governance floors refer to it.")
    metric: GateMetric = Field(
        description="Test-window metric: roc_auc, pr_auc, brier, log_loss, positives."
    )
    kind: GateKind = Field(
        description="point: the value; ci_lower_bound: the lower bound of its bootstrap CI; "
        "non_inferiority: lower CI bound of candidate minus champion on the same rows >= -threshold; "
        "stability: max - min over this and the previous `weeks` weeks <= threshold."
    )
    threshold: float = Field(
        description="Bound, margin (non_inferiority) or maximum spread (stability)."
    )
    weeks: int = Field(0, ge=0, le=52, description="stability: how many previous weeks to include.")

    @model_validator(mode="after")
    def _applicable(self) -> GateCriterionSpec:
        if self.kind in ("ci_lower_bound", "non_inferiority") and self.metric not in (
            "roc_auc",
            "pr_auc",
        ):
            raise ValueError(
                f"metric: kind '{self.kind}' needs a ranking metric (roc_auc or pr_auc)"
            )
        if self.kind == "stability" and self.weeks < 1:
            raise ValueError("weeks: a stability criterion needs weeks >= 1")
        return self

    @property
    def comparator(self) -> Literal[">=", "<="]:
        if self.kind == "stability" or (self.kind == "point" and self.metric in LOWER_IS_BETTER):
            return "<="
        return ">="


def _default_criteria() -> list[GateCriterionSpec]:
    return [
        GateCriterionSpec(name="test_positives", metric="positives", kind="point", threshold=20),
        GateCriterionSpec(
            name="roc_auc_lower", metric="roc_auc", kind="ci_lower_bound", threshold=0.85
        ),
        GateCriterionSpec(
            name="pr_auc_lower", metric="pr_auc", kind="ci_lower_bound", threshold=0.20
        ),
        GateCriterionSpec(name="brier", metric="brier", kind="point", threshold=0.05),
        GateCriterionSpec(
            name="roc_auc_vs_champion", metric="roc_auc", kind="non_inferiority", threshold=0.02
        ),
        GateCriterionSpec(
            name="roc_auc_stability", metric="roc_auc", kind="stability", threshold=0.08, weeks=3
        ),
    ]


def visible_text(text: str) -> str:
    """``text`` as a reader sees it: NFKC-normalised, without format or control characters
    (zero-width spaces and the like) and without surrounding whitespace."""
    normal = unicodedata.normalize("NFKC", text)
    return "".join(c for c in normal if unicodedata.category(c) not in ("Cf", "Cc")).strip()


class GateOverride(_Contract):
    """A forced PASS: only with a named reason and approver, recorded in the receipt and ledger."""

    reason: str = Field(min_length=10, description="Why the gate verdict is overridden.")
    approver: str = Field(min_length=1, description="Who approved the override.")

    @field_validator("reason", "approver")
    @classmethod
    def _readable(cls, value: str, info: Any) -> str:
        # counted as a reader sees them: ten spaces were a reason, a zero-width space an approver.
        # Kept as written: the text is part of the config and so of its hash
        shown = visible_text(value)
        least = 10 if info.field_name == "reason" else 1
        if len(shown) < least or not any(c.isalnum() for c in shown):
            raise ValueError(
                f"{info.field_name}: needs at least {least} visible character(s), letters or "
                "digits among them"
            )
        return value


class LeakageGuard(_Contract):
    """ "Too good to be true": ceilings on test metrics and the shuffled-label canary's tolerance.

    A model above a ceiling, or whose shuffled-label control scores far from chance, is FAIL with
    reason ``suspected_leakage``; an override cannot lift that verdict.
    """

    ceilings: dict[GateMetric, float] = Field(
        default_factory=lambda: {"roc_auc": 0.99, "pr_auc": 0.95},
        description="Per metric: the highest credible validation and test value; above it the "
        "gate suspects leakage (fraud models that good usually read the answer).",
    )
    canary_max_deviation: float = Field(
        0.1,
        gt=0,
        le=0.5,
        description="The shuffled-label controls' mean test ROC-AUC must lie within 0.5 +/- the "
        "larger of this and canary_max_z standard errors of that mean (the larger of the "
        "controls' spread and one chance AUC's standard error on the test rows).",
    )
    canary_max_z: float = Field(
        4.0,
        gt=0,
        le=20,
        description="Tolerance in standard errors of the controls' mean (the larger of their "
        "spread and the test rows' chance standard error).",
    )


class GateSettings(_Contract):
    """The quality gate: criteria, bootstrap settings, and an optional audited override."""

    criteria: list[GateCriterionSpec] = Field(
        default_factory=_default_criteria, description="Every criterion must pass for PASS."
    )
    bootstrap_resamples: int = Field(
        1000, ge=100, le=20000, description="Resamples for CIs and the champion comparison."
    )
    bootstrap_seed: int = Field(
        20260105, ge=0, le=MAX_SEED, description="Seed of every bootstrap the gate runs."
    )
    confidence_level: float = Field(0.95, gt=0.5, lt=1, description="Two-sided CI level.")
    override: GateOverride | None = Field(
        None, description="Force PASS with a reason and approver (recorded, never silent)."
    )
    leakage: LeakageGuard = Field(
        default_factory=LeakageGuard,
        description="Suspected-leakage checks: metric ceilings and the shuffled-label canary.",
    )

    @model_validator(mode="after")
    def _unique(self) -> GateSettings:
        names = [c.name for c in self.criteria]
        if len(set(names)) != len(names):
            raise ValueError("criteria: names must be unique")
        return self


class ThresholdRule(_Contract):
    """How an operating threshold is chosen on the validation window."""

    basis: Literal["alert_rate", "precision"] = Field(
        description="alert_rate: alert on the top `target` share of transactions; precision: the "
        "lowest threshold whose validation precision reaches `target` (the most recall)."
    )
    target: float = Field(gt=0, lt=1, description="The alert rate or precision aimed at.")


class SliceSpec(_Contract):
    """One way to cut the test rows into segments, each evaluated on its own."""

    name: Identifier = Field(description="Slice name in the report.")
    column: str = Field(description="Frame column the slice reads (an event or feature column).")
    edges: list[float] = Field(
        default_factory=list,
        description="Band edges, increasing: bands (-inf, e1), [e1, e2), ..., [ek, inf). "
        "Empty: one segment per distinct value (at most 20). Nulls form a segment of their own.",
    )
    labels: list[str] | None = Field(
        None, description="Names of the bands (one more than the edges); default: the ranges."
    )

    @model_validator(mode="after")
    def _bands(self) -> SliceSpec:
        if any(b <= a for a, b in zip(self.edges, self.edges[1:], strict=False)):
            raise ValueError(f"edges: slice {self.name}'s edges must be strictly increasing")
        if self.labels is not None and len(self.labels) != len(self.edges) + 1:
            raise ValueError(
                f"labels: slice {self.name} needs {len(self.edges) + 1} labels, found "
                f"{len(self.labels)}"
            )
        return self


def _default_slices() -> list[SliceSpec]:
    return [
        SliceSpec(
            name="amount_band",
            column="amount",
            edges=[20, 50, 100, 200],
            labels=["< 20", "20 – 50", "50 – 100", "100 – 200", ">= 200"],
        ),
        SliceSpec(name="night", column="is_night"),
        SliceSpec(name="weekend", column="is_weekend"),
        SliceSpec(
            name="customer_history",
            column="customer_spending__cust_tx_count_30d",
            edges=[1, 20],
            labels=["new (0 tx in 30d)", "light (1 – 19)", "known (20+)"],
        ),
    ]


class CanarySettings(_Contract):
    """The shuffled-label controls trained beside every model: small, seeded, cheap.

    One control on fraud data is erratic (honest features make a model of noise land anywhere
    within about 0.5 +/- 0.1), so several are trained, each on its own shuffle and row sample,
    and their mean is judged.
    """

    enabled: bool = Field(True, description="Train the controls (false: the gate skips the check).")
    controls: int = Field(8, ge=2, le=64, description="Controls, each on its own label shuffle.")
    train_rows: int = Field(
        20_000,
        ge=100,
        description="Training rows sampled (seeded) for each control; more (up to the train "
        "split) when so few would hold fewer than 30 positives on average.",
    )
    rounds: int = Field(10, ge=1, le=500, description="Boosting rounds of each control.")
    max_depth: int = Field(3, ge=1, le=16, description="Tree depth of each control.")
    seed: int = Field(
        20260105,
        ge=0,
        le=MAX_SEED,
        description="Seed of the row samples, the shuffles and XGBoost.",
    )


class EvaluationSettings(_Contract):
    """What the evaluation report computes: intervals, operating points, slices, drift, SHAP."""

    bootstrap_resamples: int = Field(
        1000, ge=0, le=20000, description="Stratified bootstrap resamples per interval; 0: none."
    )
    bootstrap_seed: int = Field(
        20260105, ge=0, le=MAX_SEED, description="Seed of every bootstrap in the report."
    )
    confidence_level: float = Field(0.95, gt=0.5, lt=1, description="Two-sided interval level.")
    alert_rates: list[float] = Field(
        default_factory=lambda: [0.005, 0.01, 0.02],
        description="Operating points: alert on this top share of validation transactions.",
    )
    target_precisions: list[float] = Field(
        default_factory=lambda: [0.5, 0.8],
        description="Operating points: lowest threshold reaching this validation precision.",
    )
    review: ThresholdRule = Field(
        default_factory=lambda: ThresholdRule(basis="alert_rate", target=0.01),
        description="Policy: how the review threshold is chosen on validation.",
    )
    decline: ThresholdRule = Field(
        default_factory=lambda: ThresholdRule(basis="precision", target=0.9),
        description="Policy: how the decline threshold is chosen on validation.",
    )
    top_k_per_day: list[int] = Field(
        default_factory=lambda: [20, 50],
        description="k for precision in the top k alerts per day (transactions and entities).",
    )
    entity_column: str | None = Field(
        "customer_id",
        description="Event column naming the card/customer for entity precision@k; null: skip.",
    )
    calibration_bins: int = Field(10, ge=2, le=100, description="Reliability curve bins.")
    slices: list[SliceSpec] = Field(
        default_factory=_default_slices, description="Test-window segments evaluated separately."
    )
    slice_bootstrap_resamples: int = Field(
        200,
        ge=0,
        le=20000,
        description="Resamples per slice interval (slices are many: fewer than the headline's).",
    )
    min_slice_rows: int = Field(
        500, ge=1, description="Smaller segments are reported as too small."
    )
    min_slice_positives: int = Field(
        10, ge=0, description="Segments with fewer positives are reported as too small."
    )
    drift_bins: int = Field(
        10, ge=2, le=100, description="Quantile bins of the training window (PSI)."
    )
    top_drifting: int = Field(
        5, ge=0, description="How many of the most drifting features to list."
    )
    shap_sample_rows: int = Field(
        1000, ge=0, description="Test rows (seeded sample) for mean |SHAP|; 0: skip SHAP."
    )
    latency_batch_rows: int = Field(1000, ge=1, description="Batch size of the latency probe.")
    latency_repeats: int = Field(100, ge=1, description="Timed predictions per latency probe.")
    shuffled_label_canary: CanarySettings = Field(
        default_factory=CanarySettings,
        description="A control trained on shuffled training labels; its test ROC-AUC must be ~0.5.",
    )

    @model_validator(mode="after")
    def _sane(self) -> EvaluationSettings:
        for field in ("alert_rates", "target_precisions"):
            if any(not 0 < r < 1 for r in getattr(self, field)):
                raise ValueError(f"{field}: each must lie strictly between 0 and 1")
        if any(k < 1 for k in self.top_k_per_day):
            raise ValueError("top_k_per_day: every k must be at least 1")
        names = [s.name for s in self.slices]
        if len(set(names)) != len(names):
            raise ValueError("slices: names must be unique")
        return self


class ReadinessSettings(_Contract):
    """Promotion readiness: the limits and thresholds that turn the candidate-vs-champion
    evidence into a recommended rollout stage (shadow, canary at a share, ramp)."""

    review_capacity_per_day: int = Field(
        200,
        ge=1,
        description="Alerts (score >= review threshold) the review team can work per day.",
    )
    latency_budget_p50_us: float = Field(
        5_000.0,
        gt=0,
        description="Budget for the median single-row prediction latency, microseconds, as the "
        "evaluation's latency probe measured it (its p99 on a shared machine is scheduler noise).",
    )
    min_test_positives: int = Field(
        30, ge=0, description="Fewer test frauds than this: the evidence is thin, shadow only."
    )
    shadow_below_alert_overlap: float = Field(
        0.5,
        ge=0,
        le=1,
        description="Alert overlap (both alert / either alerts) below this: decisions differ a lot, "
        "shadow only.",
    )
    ramp_min_alert_overlap: float = Field(
        0.8, ge=0, le=1, description="Ramp needs at least this alert overlap."
    )
    ramp_min_decline_overlap: float = Field(
        0.5,
        ge=0,
        le=1,
        description="Ramp needs at least this decline overlap (both decline / either declines): "
        "declines are the decisions customers feel.",
    )
    ramp_max_fraud_loss_per_day: float = Field(
        1.0,
        ge=0,
        description="Ramp needs the CI lower bound of frauds caught per day (candidate minus "
        "champion) at or above minus this.",
    )
    ramp_max_extra_false_alerts_per_day: float = Field(
        10.0, ge=0, description="Ramp needs at most this many more false alerts per day."
    )
    canary_traffic_share: float = Field(
        0.05,
        gt=0,
        lt=1,
        description="Traffic share suggested for a canary (lowered to fit the review capacity).",
    )
    min_canary_traffic_share: float = Field(
        0.01,
        gt=0,
        lt=1,
        description="A canary that fits the review capacity only below this share: shadow instead.",
    )
    bootstrap_resamples: int = Field(
        1000, ge=100, le=20000, description="Resamples (rows within each test day) for outcome CIs."
    )
    bootstrap_seed: int = Field(
        20260105, ge=0, le=MAX_SEED, description="Seed of the outcome bootstrap."
    )
    confidence_level: float = Field(0.95, gt=0.5, lt=1, description="Two-sided CI level.")
    psi_bins: int = Field(
        10, ge=2, le=100, description="Quantile bins (champion scores) of the PSI."
    )
    amount_column: str | None = Field(
        "amount", description="Frame column summed for the fraud amount caught; null: skip."
    )

    @model_validator(mode="after")
    def _ordered(self) -> ReadinessSettings:
        if self.ramp_min_alert_overlap < self.shadow_below_alert_overlap:
            raise ValueError("ramp_min_alert_overlap: must be at least shadow_below_alert_overlap")
        if self.min_canary_traffic_share > self.canary_traffic_share:
            raise ValueError("min_canary_traffic_share: must not exceed canary_traffic_share")
        return self


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
    split_policy: SplitPolicy = Field(
        default_factory=SplitPolicy, description="Train/val/test windows."
    )
    hyperparams: XGBoostParams = Field(
        default_factory=XGBoostParams, description="XGBoost parameters."
    )
    thresholds: list[float] = Field(
        default_factory=lambda: [0.1, 0.3, 0.5, 0.7, 0.9],
        description="Score thresholds for precision/recall in the report.",
    )
    gates: GateSettings = Field(default_factory=GateSettings, description="Quality gate criteria.")
    evaluation: EvaluationSettings = Field(
        default_factory=EvaluationSettings,
        description="Evaluation report: intervals, operating points, policy, slices, drift, SHAP.",
    )
    readiness: ReadinessSettings = Field(
        default_factory=ReadinessSettings,
        description="Promotion readiness: review capacity, latency budget, stage thresholds.",
    )
    notes: str = Field("", description="Free text kept with the run.")

    # One field's rules are field validators, so an error names that field, not the whole config.
    @field_validator("thresholds")
    @classmethod
    def _thresholds(cls, thresholds: list[float]) -> list[float]:
        if any(not 0 < t < 1 for t in thresholds):
            raise ValueError("thresholds: must lie strictly between 0 and 1")
        return thresholds

    @field_validator("event_features", "entity_keys")
    @classmethod
    def _columns_once(cls, columns: list[str], info: ValidationInfo) -> list[str]:
        # a column selected twice would be two frame columns of one name
        repeated = sorted({c for c in columns if columns.count(c) > 1})
        if repeated:
            raise ValueError(f"{info.field_name}: {repeated} appear more than once")
        return columns

    @field_validator("feature_group_versions")
    @classmethod
    def _groups_once(cls, groups: list[DatasetSelector]) -> list[DatasetSelector]:
        names = [g.name for g in groups]
        if len(set(names)) != len(names):
            raise ValueError("feature_group_versions: a group may appear once")
        # the frame names a group's columns <group>__<column>: a "__" in a group's name, or a
        # "_" at its end, would let two groups' columns take one name
        joined = [n for n in names if "__" in n or n.endswith("_")]
        if joined:
            raise ValueError(
                f"feature_group_versions: group names may not contain '__' or end with '_': "
                f"{joined}"
            )
        return groups

    @model_validator(mode="after")
    def _sane(self) -> TrainingConfig:
        if not self.event_features and not self.feature_group_versions:
            raise ValueError(
                "event_features: a model needs at least one event feature or feature group"
            )
        return self


class LeakagePolicy(_Contract):
    """The resolved as-of rules and windows of one train run."""

    schema_version: _versioned("LeakagePolicy")
    label_as_of_basis: Literal["observed_time"] = "observed_time"
    feature_as_of_basis: Literal["available_at"] = "available_at"
    cut: UtcDatetime = Field(description="Everything used was known strictly before this instant.")
    train_cut: UtcDatetime = Field(
        description="Simulated deploy time: labels for train/val before it."
    )
    train_window: TimeWindow
    eval_windows: dict[Literal["val", "test"], TimeWindow]
    missing_label: Literal["negative", "exclude"]


# ---------------------------------------------------------------------------------------------
# Leakage audit, metrics, reports


class GroupSplitAudit(_Contract):
    """One feature group's join over one split's rows."""

    rows: int
    joined_rows: int
    null_rows: int
    ttl_dropped_rows: int
    max_available_minus_event_seconds: float | None = Field(
        description="Max of available_at - event_time over joined rows; must be <= 0."
    )
    max_snapshot_age_seconds: float | None = Field(
        description="Max of event_time - available_at over rows that read their snapshot's "
        "values (joined rows, and any row past the TTL still carrying them); must be <= the TTL."
    )


class AuditRule(_Contract):
    """One leakage rule as measured on the frame: what it checks, the verdict, the evidence."""

    rule: str = Field(
        description="windows_ordered, events_inside_split_windows, "
        "features_available_before_event, snapshots_within_ttl, "
        "labels_observed_before_cut, unlabeled_events_handled, no_denied_features, "
        "no_label_derived_features."
    )
    subject: str | None = Field(None, description="The feature group or split it is about.")
    passed: bool
    detail: str


class SplitLabelMaturity(_Contract):
    """What one split knew of its labels at its label cut."""

    label_cut: UtcDatetime
    events: int = Field(description="Events of the split before any exclusion.")
    events_with_visible_label: int
    events_without_visible_label: int = Field(
        description="No label observed before the cut: negative or excluded per missing_label."
    )
    events_excluded_unlabeled: int = Field(description="Dropped by missing_label = exclude.")
    events_with_label_only_after_cut: int = Field(
        description="Events whose every pinned label was observed at or after the cut."
    )
    visible_positives: int
    events_with_label_before_event: int = Field(
        0,
        description="Events whose visible label was observed before the event itself happened: "
        "no report about that event can be (a recycled or foreign event id, or a label system's "
        "clock); worth a look when not 0.",
    )
    expected_visible_share_of_positives: float | None = Field(
        description="Mean over the split's events of F(cut - event_time), F the estimated "
        "reporting-delay distribution: the share of its frauds expected to be known at the cut."
    )
    expected_positives_not_yet_visible: float | None = Field(
        description="visible_positives x (1 / share - 1)."
    )


class LabelMaturity(_Contract):
    """The observed reporting delay of positives and what it implies for each split."""

    method: str = Field(description="How the delay distribution was estimated.")
    positives_used: int = Field(description="Visible positive labels the estimate rests on.")
    delay_quantiles_days: dict[str, float] = Field(
        description="p50, p90, p99 of the estimated reporting delay, in days."
    )
    max_observable_delay_days: float | None = Field(
        description="The longest delay any positive could have shown (the estimate's horizon)."
    )
    splits: dict[str, SplitLabelMaturity]


class FeatureGroupAudit(_Contract):
    name: str
    version: str
    keys: list[str]
    ttl_seconds: int | None
    joined_rows: int
    null_rows: int = Field(description="Events for which no snapshot qualified (features null).")
    ttl_dropped_rows: int = Field(
        description="Events whose latest snapshot was older than the TTL."
    )
    max_available_minus_event_seconds: float | None = Field(
        description="Max of available_at - event_time over joined rows; must be <= 0."
    )
    max_snapshot_age_seconds: float | None = Field(
        None,
        description="Max of event_time - available_at over rows that read their snapshot's "
        "values; must be <= the TTL.",
    )
    splits: dict[str, GroupSplitAudit] = Field(
        default_factory=dict, description="The same measures per split."
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
    rules: list[AuditRule] = Field(
        default_factory=list, description="Every rule measured on the frame, with its verdict."
    )
    label_maturity: LabelMaturity | None = None
    denied_features: list[str] = Field(
        default_factory=list, description="Features that are PII or label-derived (must be empty)."
    )
    feature_label_auc: dict[str, float | None] = Field(
        default_factory=dict,
        description="ROC-AUC of each feature alone against the label on a seeded sample of "
        "training rows (nulls lowest); near 0 or 1 means the feature is the label.",
    )


class ConfidenceInterval(_Contract):
    """A two-sided interval with the method that produced it (seeded, so reproducible)."""

    lower: float
    upper: float
    level: float = Field(description="Coverage, e.g. 0.95.")
    method: str = Field(description="e.g. 'stratified_bootstrap_percentile'.")
    resamples: int
    seed: int


class ThresholdMetrics(_Contract):
    """Alerting on score >= threshold (precision 0 when nothing is alerted)."""

    threshold: float
    precision: float
    recall: float | None = Field(description="None: not measured (no positives).")
    f1: float | None = Field(description="None when recall is (no positives).")
    alerts: int
    alert_rate: float


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
    positive_rate: float | None = Field(description="None: not measured (no rows).")
    roc_auc: float | None
    pr_auc: float | None = Field(description="Average precision (sum of recall steps x precision).")
    roc_auc_ci: ConfidenceInterval | None = Field(
        None, description="Stratified bootstrap interval; None when a class is missing."
    )
    pr_auc_ci: ConfidenceInterval | None = Field(
        None, description="Stratified bootstrap interval; None when a class is missing."
    )
    roc_auc_delong_ci: ConfidenceInterval | None = Field(
        None, description="DeLong's analytic interval, a cross-check of the bootstrap."
    )
    brier: float | None = Field(description="None: not measured (no rows).")
    log_loss: float | None = Field(description="None: not measured (no rows).")
    ece: float | None = Field(
        description="Expected calibration error: sum over bins of rows/n x "
        "|mean score - observed rate|, over the uniform bins of `calibration`; None: no rows."
    )
    ece_quantile: float | None = Field(
        None,
        description="The same over the equal-count bins of `calibration_quantile`. With fraud "
        "scores crowded near 0, the uniform bins put almost every row in the first, where over- "
        "and under-prediction cancel out; these bins do not. None: no rows.",
    )
    at_thresholds: list[ThresholdMetrics]
    calibration: list[CalibrationBin] = Field(description="Reliability curve, uniform score bins.")
    calibration_quantile: list[CalibrationBin] = Field(
        default_factory=list, description="Reliability curve, equal-count bins (rare positives)."
    )


class OperatingMetrics(_Contract):
    """Alerting at one threshold on one window, with stratified bootstrap intervals."""

    rows: int
    positives: int
    alerts: int
    true_positives: int
    alert_rate: float
    precision: float = Field(description="0 when nothing is alerted.")
    recall: float | None = Field(description="None: not measured (no positives).")
    f1: float | None = Field(description="None when recall is (no positives).")
    alert_rate_ci: ConfidenceInterval | None = None
    precision_ci: ConfidenceInterval | None = None
    recall_ci: ConfidenceInterval | None = None
    f1_ci: ConfidenceInterval | None = None


class OperatingPoint(_Contract):
    """A threshold chosen on the validation window and applied unchanged to the test window."""

    name: str = Field(description="'review', 'decline', 'alert_rate_1%', 'precision_80%', ...")
    rule: ThresholdRule
    threshold: float | None = Field(
        description="Alert when score >= threshold; None: the target was not attainable on val."
    )
    val: OperatingMetrics | None
    test: OperatingMetrics | None


class DecisionPolicy(_Contract):
    """The decision policy the model was evaluated with; the bundle carries it as its config.

    Scores >= decline_threshold are declined, scores >= review_threshold are sent to review;
    both thresholds were chosen on the validation window only.
    """

    review_threshold: float | None = Field(description="None: no threshold met the rule on val.")
    review_rule: ThresholdRule
    decline_threshold: float | None = Field(
        description="None: no automatic decline (the rule was not attainable on val)."
    )
    decline_rule: ThresholdRule
    chosen_on: Literal["val"] = "val"
    notes: list[str] = Field(default_factory=list, description="Adjustments and unmet targets.")


class DayTopK(_Contract):
    day: str = Field(description="UTC date.")
    candidates: int = Field(description="Transactions (or distinct entities) scored that day.")
    flagged: int = Field(description="min(k, candidates).")
    hits: int = Field(description="Frauds (or compromised entities) among the flagged.")
    positives: int = Field(description="Frauds (or compromised entities) that day.")
    precision: float | None


class TopKPrecision(_Contract):
    """Precision of the k most suspicious transactions (or cards/customers) per test day."""

    unit: Literal["transaction", "entity"]
    entity_column: str | None = Field(
        description="Entity: ranked by its highest score that day; compromised if any of its "
        "transactions that day is a fraud."
    )
    k: int
    precision: float | None = Field(description="Pooled over days: hits / flagged.")
    precision_ci: ConfidenceInterval | None = Field(
        description="Wilson interval of the pooled precision."
    )
    recall: float | None = Field(description="Pooled: hits / positives.")
    days: list[DayTopK]


class SliceMetrics(_Contract):
    """One segment of the test window; too small segments are listed with their counts."""

    slice: str
    column: str
    segment: str
    status: Literal["ok", "too_small", "single_class", "column_absent"]
    rows: int
    positives: int
    positive_rate: float | None
    roc_auc: float | None = None
    roc_auc_ci: ConfidenceInterval | None = None
    pr_auc: float | None = None
    pr_auc_ci: ConfidenceInterval | None = None
    brier: float | None = None
    ece: float | None = Field(None, description="Over uniform score bins (MetricSet.ece).")
    ece_quantile: float | None = Field(
        None, description="Over equal-count bins (MetricSet.ece_quantile)."
    )
    review: OperatingMetrics | None = Field(None, description="At the policy's review threshold.")
    decline: OperatingMetrics | None = Field(None, description="At the policy's decline threshold.")


class FeatureDrift(_Contract):
    feature: str
    psi: float | None = Field(
        description="None: not measured (no reference rows or no current rows)."
    )
    level: Literal["stable", "moderate", "major"] | None = Field(
        description="PSI < 0.1 stable, < 0.25 moderate, else major; None: not measured."
    )
    reference_null_share: float | None = Field(description="None: no reference rows.")
    current_null_share: float | None = Field(description="None: no current rows.")


class DriftReport(_Contract):
    """Population stability index, training window (reference) vs test window (current)."""

    reference: Literal["train"] = "train"
    current: Literal["test"] = "test"
    bins: int = Field(
        description="Quantile bins of the reference (one per value with at most this many "
        "distinct values; a value holding 1/bins of the reference, and values outside the "
        "reference's range, get bins of their own), plus one for nulls."
    )
    reference_rows: int = Field(description="Training rows used: every k-th, at most 100,000.")
    current_rows: int
    score_psi: float | None = Field(description="None: not measured (no scores or no rows).")
    score_level: Literal["stable", "moderate", "major"] | None
    features: list[FeatureDrift]
    top_drifting: list[str] = Field(description="Measured features by decreasing PSI.")


class FeatureAttribution(_Contract):
    feature: str
    gain: float = Field(description="Total gain over the model's trees.")
    mean_abs_shap: float | None = Field(
        description="Mean |SHAP| (XGBoost pred_contribs), log-odds."
    )


class Explainability(_Contract):
    shap_split: Literal["test"] = "test"
    shap_rows: int = Field(description="Test rows in the seeded SHAP sample (0: skipped).")
    shap_seed: int
    features: list[FeatureAttribution] = Field(description="By decreasing mean |SHAP|, then gain.")


class LabelContext(_Contract):
    """Which truth the metrics rest on: label cuts, maturity, what the frame saw."""

    label_family: str
    test_label_cut: UtcDatetime = Field(
        description="Test labels were observed before this instant."
    )
    train_label_cut: UtcDatetime = Field(description="Train/val labels were observed before it.")
    label_maturity_days: int
    missing_label: Literal["negative", "exclude"]
    test_rows: int
    test_positives: int
    labels_visible: dict[str, int]
    labels_hidden_by_cut: dict[str, int]
    matured_share: dict[str, float | None] = Field(
        description="Per split: visible / (visible + hidden by cut) over the pinned label "
        "manifests; None for test, whose later labels are never pinned (see "
        "test_label_completeness_estimate)."
    )
    test_label_completeness_estimate: float | None = Field(
        description="The validation window's matured share: it ends the same maturity gap before "
        "its label cut as test does before its cut, so this estimates (from above: labels after "
        "the cut are not pinned) the share of test frauds already labelled."
    )


class Curve(_Contract):
    x: list[float]
    y: list[float]


class ScoreHistogram(_Contract):
    edges: list[float] = Field(description="Bin edges of the score.")
    positives: list[int]
    negatives: list[int]


class SplitCurves(_Contract):
    """Thinned curves for the plots (the report's HTML view draws from these)."""

    roc: Curve = Field(description="x: false positive rate, y: true positive rate.")
    pr: Curve = Field(description="x: recall, y: precision.")
    score_histogram: ScoreHistogram


class EvaluationReport(_Contract):
    schema_version: _versioned("EvaluationReport")
    train_run_id: TrainRunId
    partition_key: str
    model_family: str
    model_sha256: Sha256
    frame_sha256: Sha256
    best_iteration: int
    metrics: dict[str, MetricSet] = Field(description="Per split: val and test.")
    policy: DecisionPolicy = Field(description="Review/decline thresholds chosen on val.")
    operating_points: list[OperatingPoint] = Field(description="Chosen on val, applied to test.")
    top_k: list[TopKPrecision] = Field(description="Precision of the top k per test day.")
    slices: list[SliceMetrics] = Field(description="Test-window segments from the config.")
    drift: DriftReport
    explainability: Explainability
    label_context: LabelContext
    curves: dict[str, SplitCurves] = Field(description="Per split: val and test.")
    feature_importance: dict[str, float] = Field(description="Total gain per feature.")
    html: ArtifactRef | None = Field(
        None, description="Self-contained HTML view of this report (deterministic content)."
    )
    leakage_canary: ShuffledLabelCanary | None = Field(
        None, description="The shuffled-label control (None: disabled)."
    )
    timings: dict[str, float] = Field(
        default_factory=dict,
        description="Volatile: seconds per part, prediction latency (p50/p99 single row and batch), "
        "batch size and threads of the latency probe.",
    )
    emitted_at_utc: UtcDatetime | None = None


class ShuffledLabelCanary(_Contract):
    """Control models trained on shuffled training labels, scored on the real test labels."""

    roc_auc: float | None = Field(description="Mean test ROC-AUC of the controls; chance is 0.5.")
    roc_auc_ci: ConfidenceInterval | None = Field(
        None,
        description="Student t interval of that mean over the controls (their spread).",
    )
    control_roc_auc: list[float] = Field(description="Each control's test ROC-AUC.")
    spread_standard_error: float = Field(
        description="Standard deviation of the controls' ROC-AUC over sqrt(controls)."
    )
    controls: int
    train_rows: int = Field(description="Training rows of each control.")
    train_positives: int = Field(
        description="Positive (shuffled) labels of the control that had fewest."
    )
    test_rows: int
    test_positives: int
    null_standard_error: float = Field(
        description="Standard error of one chance ROC-AUC on these test rows: "
        "sqrt((P + N + 1) / (12 P N))."
    )
    rounds: int
    max_depth: int
    seed: int
    features: int


class EvaluationReportRef(_Contract):
    schema_version: _versioned("EvaluationReportRef")
    uri: str
    digest: Sha256


# ---------------------------------------------------------------------------------------------
# Gates, bundles, registry, ledger


class GateCriterion(_Contract):
    """One criterion as judged: threshold, observed value, its interval, verdict."""

    name: str
    metric: str
    kind: GateKind
    comparator: Literal[">=", "<="]
    threshold: float
    policy_floor: float | None = Field(
        description="The governance bound this criterion may not relax."
    )
    mandatory: bool
    observed: float | None = Field(description="The value compared with the threshold.")
    ci: ConfidenceInterval | None = None
    passed: bool
    detail: str


class LeakageVerdict(_Contract):
    """The gate's suspected-leakage checks: metric ceilings and the shuffled-label canary."""

    suspected: bool
    checks: list[GateCriterion]
    canary: ShuffledLabelCanary | None = None


class ChampionRef(_Contract):
    """The family's published bundle a candidate is compared with."""

    bundle_id: BundleId
    bundle_uri: str
    partition_key: str
    model_sha256: Sha256


class WeekReportRef(_Contract):
    """An earlier week's evaluation report, pinned for a stability criterion."""

    partition_key: str
    evaluation_report_ref: EvaluationReportRef


class GateReceipt(_Contract):
    schema_version: _versioned("GateReceipt")
    train_run_id: TrainRunId
    gate_status: Literal["PASS", "FAIL"]
    judged_status: Literal["PASS", "FAIL"] = Field(description="The verdict before any override.")
    criteria: list[GateCriterion]
    observed_metrics: dict[str, float | None]
    reasons: list[str]
    evaluation_report_ref: EvaluationReportRef
    model_sha256: Sha256
    frame_sha256: Sha256
    champion: ChampionRef | None = Field(description="None: the first model of its family.")
    bootstrap: dict[str, float] = Field(description="resamples, seed and level of every interval.")
    override: GateOverride | None = None
    leakage: LeakageVerdict | None = Field(
        None, description="Suspected-leakage checks (FAIL with reason suspected_leakage)."
    )
    emitted_at_utc: UtcDatetime | None = None


class DayDecisions(_Contract):
    """One test day's decisions (or the window's: day 'all'), each model at its own policy."""

    day: str = Field(description="UTC date, or 'all' for the whole test window.")
    rows: int
    candidate_alerts: int = Field(description="Candidate score >= its review threshold.")
    champion_alerts: int = Field(description="Champion score >= the champion's review threshold.")
    both_alert: int
    newly_flagged: int = Field(description="Alerted by the candidate, not by the champion.")
    newly_cleared: int = Field(description="Alerted by the champion, not by the candidate.")
    candidate_declines: int = Field(description="Candidate score >= its decline threshold.")
    champion_declines: int
    both_decline: int
    newly_declined: int
    no_longer_declined: int


class DecisionChanges(_Contract):
    """How the candidate would change decisions compared with the champion, on the same rows."""

    candidate_review_threshold: float | None
    candidate_decline_threshold: float | None = Field(description="None: no automatic decline.")
    champion_review_threshold: float | None
    champion_decline_threshold: float | None
    days: list[DayDecisions]
    total: DayDecisions
    alert_overlap: float | None = Field(
        description="Both alert / either alerts (Jaccard); None when neither alerts."
    )
    decline_overlap: float | None
    newly_flagged_share: float | None = Field(description="Newly flagged / candidate alerts.")
    newly_cleared_share: float | None = Field(description="Newly cleared / champion alerts.")
    changed_decision_share: float = Field(
        description="(Newly flagged + newly cleared) / rows: transactions whose alert decision changes."
    )


class OutcomeValue(_Contract):
    """One outcome at the review threshold: each model's value, the difference and its CI."""

    metric: Literal["frauds_caught", "frauds_missed", "false_alerts", "fraud_amount_caught"]
    candidate: float
    champion: float
    delta: float = Field(description="Candidate minus champion.")
    delta_ci: ConfidenceInterval | None = Field(
        None, description="Bootstrap over the test rows (resampled within each day), paired."
    )


class DayOutcomes(_Contract):
    day: str = Field(description="UTC date.")
    rows: int
    positives: int
    outcomes: list[OutcomeValue]


class OutcomeDeltas(_Contract):
    """Frauds caught and missed, false alerts and fraud amount caught, per test day."""

    amount_column: str | None = Field(
        description="Column summed for the fraud amount; None: absent."
    )
    days: list[DayOutcomes]
    per_day: list[OutcomeValue] = Field(
        description="Mean per test day; its CI resamples every day's rows independently."
    )


class ScoreAgreement(_Contract):
    """How alike the two models score the same rows."""

    spearman: float | None = Field(description="Rank correlation; None when a score is constant.")
    psi: float = Field(description="PSI of the candidate's scores against the champion's.")
    psi_level: Literal["stable", "moderate", "major"]
    bins: int = Field(description="Quantile bins of the champion's scores, plus one for nulls.")


class OperationalLimits(_Contract):
    """Alert volume against the review capacity; serving latency against its budget."""

    review_capacity_per_day: int
    candidate_alerts_peak_day: int
    candidate_alerts_mean_per_day: float
    champion_alerts_peak_day: int | None
    within_review_capacity: bool = Field(description="The candidate alone, at full traffic.")
    max_traffic_share_within_capacity: float = Field(
        description="Largest share s in [0, 1] with s x candidate + (1 - s) x champion alerts "
        "within the capacity on every test day where the candidate raises the alert volume (a day "
        "both models are over capacity but the candidate alerts less does not hold it back)."
    )
    latency_budget_p50_us: float
    latency_within_budget: bool | None = Field(
        description="The candidate's measured median single-row latency (volatile: in `timings`) "
        "within the budget; None when not measured."
    )


class ReadinessRecommendation(_Contract):
    stage: Literal["shadow", "canary", "ramp"]
    traffic_share: float | None = Field(
        description="Live traffic share: 0 in shadow (scored, not acted on), the suggested share "
        "for a canary, None for ramp (the rollout process steps it up)."
    )
    reasons: list[str]


class PromotionReadiness(_Contract):
    """Before anything goes live: how a PASS bundle would change decisions against the champion,
    and the rollout stage the evidence supports. Bound to its bundle by id and digests."""

    schema_version: _versioned("PromotionReadiness")
    bundle_id: BundleId
    train_run_id: TrainRunId
    partition_key: str
    model_family: str
    model_sha256: Sha256
    evaluation_report_digest: Sha256
    champion: ChampionRef | None = Field(description="None: the first model of its family.")
    champion_problem: str | None = Field(None, description="Why the champion could not be scored.")
    gate_overridden: bool = Field(description="The gate passed only by an audited override.")
    test_rows: int
    test_positives: int
    test_days: int
    settings: ReadinessSettings
    decisions: DecisionChanges | None
    outcomes: OutcomeDeltas | None
    agreement: ScoreAgreement | None
    operational: OperationalLimits
    recommendation: ReadinessRecommendation
    html: ArtifactRef | None = Field(None, description="HTML view of this document.")
    timings: dict[str, float] = Field(
        default_factory=dict, description="Volatile: the latencies the budget was checked with."
    )
    created_at_utc: UtcDatetime | None = None


class Provenance(_Contract):
    """Who and what started an attempt; never part of a digest."""

    triggered_by: str
    dagster_run_id: str | None = None
    tags: dict[str, str] = Field(default_factory=dict)


class RunAttempt(_Contract):
    """One Dagster run that worked on a train run (or failed before it could pin one)."""

    dagster_run_id: str
    status: Literal["queued", "running", "succeeded", "failed", "canceled"]
    triggered_by: str = Field(
        description="ui, user:<name>, schedule:<name>, sensor:<name>, backfill:<id> or cli."
    )
    backfill_id: str | None = Field(None, description="The Dagster backfill the run belongs to.")
    stages: list[str] = Field(default_factory=list, description="Stages this attempt materialized.")
    failed_stage: str | None = Field(None, description="The step (or check) that failed.")
    error: str | None = Field(None, description="The error the failed step raised.")
    started_at_utc: UtcDatetime | None = None
    ended_at_utc: UtcDatetime | None = None


class TrainingRunRecord(_Contract):
    """Append-only record of one train run (rebuilt from the ledger; embedded in bundles).

    An attempt that failed before its intake pinned a train run (invalid config, missing or
    tampered manifest) is a record of its own: ``train_run_id`` null, status ``failed``.
    """

    schema_version: _versioned("TrainingRunRecord")
    train_run_id: TrainRunId | None = Field(
        description="Null only while no attempt has pinned the run (status failed or running)."
    )
    status: Literal["running", "succeeded", "failed", "gate_failed", "incomplete"] = Field(
        description="gate_failed: every stage ran and the bundle's gate verdict is FAIL. "
        "incomplete: every attempt ended without failing, but none ran the later stages (a "
        "run of some assets only); the error names the stages not run."
    )
    partition_key: str
    model_family: str
    config_hash: Sha256 | None = Field(description="Null only when the config itself was invalid.")
    code_version: str | None = Field(description="Null only when nothing was pinned.")
    input_dataset_manifests: list[DatasetManifestRef]
    outputs: list[ArtifactRef]
    created_at_utc: UtcDatetime | None = None
    provenance: Provenance | None = None
    error: str | None = Field(
        None,
        description="Why the run failed; for gate_failed, the gate's reasons; for incomplete, "
        "the stages not run.",
    )
    gate_status: Literal["PASS", "FAIL"] | None = None
    gate_judged_status: Literal["PASS", "FAIL"] | None = Field(
        None,
        description="The gate's own verdict: differs from gate_status only where an audited "
        "override forced a FAIL to PASS (the receipt names the approver and reason).",
    )
    bundle_id: BundleId | None = None
    config: dict[str, Any] | None = Field(
        None, description="The effective TrainingConfig as recorded at intake (or as launched)."
    )
    attempts: list[RunAttempt] = Field(
        default_factory=list, description="Dagster runs of this train run, oldest first."
    )
    timings: dict[str, float] = Field(
        default_factory=dict, description="Volatile: seconds per stage (latest materialization)."
    )

    @model_validator(mode="after")
    def _pinned_when_finished(self) -> TrainingRunRecord:
        if self.status in ("succeeded", "gate_failed") and None in (
            self.train_run_id,
            self.config_hash,
            self.code_version,
        ):
            raise ValueError(
                f"a {self.status} record needs train_run_id, config_hash and code_version"
            )
        return self


class BacktestWeek(_Contract):
    """One week's headline results, as its latest materializations recorded them."""

    partition_key: str
    train_run_id: TrainRunId | None
    roc_auc: float | None = Field(description="Test ROC-AUC.")
    pr_auc: float | None = Field(description="Test PR-AUC (average precision).")
    brier: float | None = Field(description="Test Brier score.")
    test_rows: int | None = None
    test_positives: int | None = None
    gate_status: Literal["PASS", "FAIL"] | None = None
    bundle_id: BundleId | None = None


class MetricSpread(_Contract):
    """How much one metric moves across the backtest's weeks."""

    metric: str
    weeks: int = Field(ge=0, description="Weeks with a value.")
    min: float | None
    max: float | None
    mean: float | None
    std: float | None = Field(description="Population standard deviation across weeks.")
    worst_week: str | None
    best_week: str | None


class BacktestSummary(_Contract):
    """Every trained week side by side (a walk-forward backtest) and the spread of its metrics."""

    schema_version: _versioned("BacktestSummary")
    weeks: list[BacktestWeek]
    spread: list[MetricSpread]
    pass_weeks: int = Field(ge=0)
    fail_weeks: int = Field(ge=0)
    model_family: str | None = Field(
        None, description="The family of the line compared: the one reporting the most weeks."
    )
    config_hash: str | None = Field(None, description="The config of that line.")
    other_reports: int = Field(
        0, ge=0, description="Reports of other families or configs, left out of the line."
    )
    created_at_utc: UtcDatetime | None = None


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
    feature_schema: list[FeatureSpec] = Field(description="Model inputs in order, with dtypes.")
    feature_schema_digest: Sha256 = Field(description="sha256 of the canonical feature_schema.")
    feature_group_versions: list[FeatureGroupVersion]
    input_dataset_manifests: list[DatasetManifestRef]
    evaluation_report_ref: EvaluationReportRef
    policy_config: DecisionPolicy = Field(
        description="The decision policy (review/decline thresholds) the model was evaluated with."
    )
    gate_receipt: GateReceipt
    gate_history: list[WeekReportRef] = Field(
        default_factory=list, description="Earlier weeks' reports the gate's stability used."
    )
    leakage_audit: LeakageAudit
    config: TrainingConfig
    config_hash: Sha256
    code_version: str
    policy_digest: Sha256 | None = Field(
        None,
        description="sha256 of the canonical governance policy the run obeyed, as pinned at "
        "intake; null only in bundles written before policies were pinned.",
    )
    training_run_record: TrainingRunRecord
    created_at_utc: UtcDatetime | None = None


class PublishBundleRequest(_Contract):
    schema_version: _versioned("PublishBundleRequest")
    bundle_uri: str
    bundle_id: BundleId
    requested_by: str = "model_factory"
    dagster_run_id: str | None = Field(
        None, description="The Dagster run publishing it (None: the command line)."
    )
    ledger_sequence: int | None = Field(
        None,
        ge=1,
        description="The run-ledger entry of the bundle, as the Dagster instance recorded it in "
        "the bundle's materialization (outside the store): publishing checks the store's entry "
        "is that one.",
    )
    ledger_entry_sha256: Sha256 | None = Field(
        None, description="sha256 of that entry's bytes, as the Dagster instance recorded it."
    )


class RegistryRecord(_Contract):
    """What the registry keeps per bundle_id (created once, never changed)."""

    schema_version: _versioned("RegistryRecord")
    bundle_id: BundleId
    bundle_uri: str
    bundle_sha256: Sha256
    train_run_id: TrainRunId
    model_family: str
    partition_key: str
    model_sha256: Sha256
    gate_status: Literal["PASS"]
    published_by: str
    published_at_utc: UtcDatetime | None = None
    readiness_ref: ArtifactRef | None = Field(
        None, description="The bundle's PromotionReadiness document (None: published without one)."
    )
    dagster_run_id: str | None = Field(
        None, description="The Dagster run that wrote this record (None: the command line)."
    )
    gate_override: GateOverride | None = Field(
        None,
        description="The audited override that forced the gate's FAIL to PASS (None: the gate "
        "passed on its own).",
    )


class PublishBundleResponse(_Contract):
    schema_version: _versioned("PublishBundleResponse")
    status: Literal["published", "already_published", "refused"]
    bundle_id: str
    record_uri: str | None = None
    record: RegistryRecord | None = None
    reason: str | None = Field(None, description="Why a bundle was refused.")
    champion_changed: bool = False


class ChampionChange(_Contract):
    """One entry of a family's append-only champion history."""

    schema_version: _versioned("ChampionChange")
    model_family: str
    sequence: int = Field(ge=1)
    bundle_id: BundleId
    partition_key: str
    previous_bundle_id: BundleId | None
    reason: str
    changed_at_utc: UtcDatetime | None = None


class ArtifactCheck(_Contract):
    name: str
    expected: str
    actual: str | None
    status: Literal["ok", "mismatch", "missing"]


class BundleVerification(_Contract):
    """What `bundle verify` found: every digest the bundle pins, rechecked."""

    schema_version: _versioned("BundleVerification")
    bundle_uri: str
    bundle_id: str
    valid: bool
    checks: list[ArtifactCheck]


class ReproductionReport(_Contract):
    """`bundle reproduce`: the bundle rebuilt from its pinned inputs, compared digest by digest."""

    schema_version: _versioned("ReproductionReport")
    bundle_id: BundleId
    train_run_id: TrainRunId
    verdict: Literal["IDENTICAL", "DIFFERENT"]
    code_version_then: str
    code_version_now: str
    comparisons: list[ArtifactCheck]
    created_at_utc: UtcDatetime | None = None


class CompatibilityReport(_Contract):
    """Whether a serving feature schema can feed a bundle's model."""

    schema_version: _versioned("CompatibilityReport")
    compatible: bool
    missing_features: list[str]
    dtype_mismatches: list[str]
    group_version_mismatches: list[str]
    extra_features: list[str]


class ErrorResponse(_Contract):
    schema_version: _versioned("ErrorResponse")
    error_code: str
    message: str
    source: str | None = None
    field: str | None = None
    train_run_id: str | None = None
    emitted_at_utc: UtcDatetime | None = None


def _default_floors() -> dict[str, float]:
    return {
        "test_positives": 10,
        "roc_auc_lower": 0.75,
        "pr_auc_lower": 0.10,
        "brier": 0.10,
        "roc_auc_vs_champion": 0.05,
        "roc_auc_stability": 0.15,
    }


class CriterionMeaning(_Contract):
    """What a gate criterion's name stands for under a policy: the metric and kind its floor
    bounds. A floor is a number compared with a threshold, so it means something only for one
    metric and kind; without this, a config could keep a mandatory name and weaken what it
    measures (a point ROC-AUC under the name of its CI lower bound)."""

    metric: GateMetric
    kind: GateKind


def _default_meanings() -> dict[str, CriterionMeaning]:
    return {c.name: CriterionMeaning(metric=c.metric, kind=c.kind) for c in _default_criteria()}


class GovernancePolicy(_Contract):
    """What data may be used, what may never enter a frame or bundle, and gate floors."""

    schema_version: _versioned("GovernancePolicy")
    policy_version: VersionTag = Field(
        "1",
        description="The policy's own version, bumped on every edit; its digest pins the exact "
        "content in every intake receipt and bundle.",
    )
    allowed_data_window: TimeWindow | None = Field(
        None, description="All event, label and feature time used must lie inside it."
    )
    excluded_ranges: list[TimeWindow] = Field(
        default_factory=list, description="Time ranges no training window may touch."
    )
    pii_columns: list[str] = Field(
        default_factory=lambda: [
            "card_number",
            "email",
            "phone",
            "full_name",
            "address",
            "ip_address",
        ]
    )
    pii_patterns: list[str] = Field(
        default_factory=lambda: [r"(?i)(card_?num|\bpan\b|e_?mail|phone|ssn|passport|iban)"],
        description="Regular expressions; a column name matching any is PII.",
    )
    gate_floors: dict[str, float] = Field(
        default_factory=_default_floors,
        description="Per criterion name: the weakest threshold a config may set (a minimum for "
        "'higher is better', a maximum for margins, spreads and lower-is-better metrics).",
    )
    mandatory_criteria: list[str] = Field(
        default_factory=lambda: ["test_positives", "roc_auc_lower", "pr_auc_lower"],
        description="Criterion names no config may drop.",
    )
    criterion_meanings: dict[str, CriterionMeaning] = Field(
        default_factory=_default_meanings,
        description="Per criterion name: the metric and kind a config's criterion of that name "
        "must have. The default criteria's names (test_positives, roc_auc_lower, ...) have "
        "theirs unless given here; give one for every other name with a floor or in "
        "mandatory_criteria, else only its name is checked.",
    )
    allow_override: bool = Field(True, description="Whether an audited gate override is allowed.")
    leakage_limits: LeakageGuard = Field(
        default_factory=LeakageGuard,
        description="The loosest suspected-leakage checks a config may set: a ceiling for each "
        "metric named here, at most this one, and the canary's tolerances at most these. An "
        "override cannot lift a suspected_leakage verdict, so without limits a config could "
        "drop the checks instead.",
    )
    require_shuffled_label_canary: bool = Field(
        True,
        description="Whether a config must keep the shuffled-label canary "
        "(evaluation.shuffled_label_canary.enabled).",
    )
    vetted_features: list[str] | None = Field(
        None,
        description="fnmatch patterns of the features a frame may hold, by their frame names "
        "(an event feature by its column, a group's as '<group>__<column>'); null = any. The "
        "audit checks times, not what a value means: a column computed from what happened "
        "after the event passes it, so a policy can admit only features someone has vetted.",
    )
    model_families: list[str] | None = Field(
        None,
        description="fnmatch patterns of the model families a config may train; null = any. A "
        "new family has no champion and no history, so criteria against them do not apply: "
        "naming the families keeps a config from dodging them under a new name.",
    )
    override_approvers: list[str] | None = Field(
        None,
        description="fnmatch patterns of who may approve a gate override, e.g. 'risk-*'; null = "
        "anyone (an override is still recorded with its approver).",
    )
    min_confidence_level: float = Field(
        0.95,
        gt=0.5,
        lt=1,
        description="The lowest gates.confidence_level a config may set: a narrower interval "
        "raises every CI lower bound the gate judges, which relaxes their floors.",
    )
    allowed_triggerers: list[str] | None = Field(
        None,
        description="fnmatch patterns of who may trigger training, e.g. 'schedule:*'; null = anyone.",
    )
    allowed_url_schemes: list[Annotated[str, StringConstraints(pattern=r"^[a-z][a-z0-9+.-]*$")]] = (
        Field(
            default_factory=lambda: ["file", "s3", "memory"],
            description="URL schemes a manifest's data files may use (a plain path is 'file'); any "
            "other (http, ftp, data, chained caches) is refused at intake.",
        )
    )
    # non-empty: "" would resolve to the working directory and allow whatever lies under it
    data_roots: list[Annotated[str, StringConstraints(min_length=1, pattern=r"\S")]] = Field(
        default_factory=list,
        description="URL prefixes data files may live under besides the catalog root (for data "
        "registered in place with `manifest create`); files elsewhere are refused at intake.",
    )

    @field_validator("criterion_meanings")
    @classmethod
    def _defaults_kept(cls, meanings: dict[str, CriterionMeaning]) -> dict[str, CriterionMeaning]:
        # a policy file naming only its own criteria keeps the default names' meanings
        return _default_meanings() | meanings

    @field_validator("pii_patterns")
    @classmethod
    def _patterns_compile(cls, patterns: list[str]) -> list[str]:
        # A broken pattern would otherwise fail at intake, far from the policy file at fault.
        for i, pattern in enumerate(patterns):
            try:
                re.compile(pattern)
            except (re.error, OverflowError, RecursionError) as exc:  # x{99999999999}: Overflow
                raise ValueError(f"pii_patterns[{i}]: not a regular expression ({exc})") from exc
        return patterns


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
    champion: ChampionRef | None = Field(
        None, description="The family's champion before this week, pinned at intake."
    )
    gate_history: list[WeekReportRef] = Field(
        default_factory=list, description="Earlier weeks' reports, pinned for stability criteria."
    )
    policy_digest: Sha256 | None = Field(
        None,
        description="sha256 of the canonical governance policy the run obeyed (part of the "
        "train run id); null only in receipts written before policies were pinned.",
    )
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


# ---------------------------------------------------------------------------------------------
# Integrity over time: hash-chained journals of the registry and the run ledger

GENESIS_DIGEST = "0" * 64

JournalKind = Literal["registry_record", "champion_change", "ledger_stage"]


class JournalEntry(_Contract):
    """One link of an append-only, hash-chained journal (``<journal>/<sequence:012d>.json``).

    ``prev_digest`` is the sha256 of entry ``sequence - 1`` exactly as stored, so editing, deleting,
    reordering or inserting any entry breaks the chain after it; ``sha256`` pins the bytes of the
    file the entry records, so editing or deleting that file is detected too.
    """

    schema_version: _versioned("JournalEntry")
    sequence: int = Field(ge=1, description="Position in the journal, 1 for the first entry.")
    prev_digest: Sha256 = Field(
        description="sha256 of the previous entry's stored bytes; 64 zeros for the first entry."
    )
    kind: JournalKind
    subject: str = Field(
        description="What is recorded: a registry file relative to the registry root "
        "('records/<bundle_id>.json', 'champions/<family>/<sequence>.json'), or "
        "'<train_run_id>/<stage>' for a stage of a train run."
    )
    uri: str = Field(description="Where the recorded file is.")
    sha256: Sha256 = Field(description="sha256 of the recorded file's bytes as stored.")
    train_run_id: TrainRunId | None = None
    stage: str | None = Field(None, description="Ledger entries: the asset (stage) that ran.")
    partition_key: str | None = None
    document: ArtifactRef | None = Field(
        None, description="Ledger entries: the stage's output as its materialization records it."
    )
    dagster_run_id: str | None = Field(None, description="Ledger entries: the Dagster run.")
    recorded_at_utc: UtcDatetime


IntegrityProblemKind = Literal[
    "entry_missing",
    "entry_corrupt",
    "entry_out_of_place",
    "entry_edited",
    "stray_file",
    "anchor_mismatch",
    "duplicate_entry",
    "record_missing",
    "record_edited",
    "record_unjournaled",
    "document_missing",
    "document_edited",
    "materialization_unjournaled",
    "entry_unmaterialized",
]


class IntegrityProblem(_Contract):
    kind: IntegrityProblemKind
    source: str = Field(description="The file (or Dagster record) at fault.")
    field: str | None = None
    detail: str


class IntegrityReport(_Contract):
    """What `registry verify` / `ledger verify` found: the chain and every cross-check."""

    schema_version: _versioned("IntegrityReport")
    target: Literal["registry", "ledger"]
    journal: str = Field(description="The journal's location.")
    entries: int = Field(ge=0)
    head_sequence: int = Field(ge=0, description="The last entry's sequence (0: empty journal).")
    head_digest: Sha256 = Field(
        description="sha256 of the last entry; remember it and pass it as --anchor later to detect "
        "a truncated or rewritten tail."
    )
    checked: dict[str, int] = Field(default_factory=dict, description="What was cross-checked.")
    problems: list[IntegrityProblem] = Field(default_factory=list)
    notes: list[str] = Field(default_factory=list, description="Findings that are not problems.")
    ok: bool
    verified_at_utc: UtcDatetime | None = None


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
    BacktestSummary,
    ModelBundle,
    PublishBundleRequest,
    PublishBundleResponse,
    RegistryRecord,
    ErrorResponse,
    GovernancePolicy,
    IntakeReceipt,
    TrainingFrameRecord,
    ChampionChange,
    JournalEntry,
    IntegrityReport,
    BundleVerification,
    ReproductionReport,
    CompatibilityReport,
    PromotionReadiness,
)


def to_json_dict(model: BaseModel) -> dict[str, Any]:
    return model.model_dump(mode="json")
