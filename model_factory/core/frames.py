"""The leakage-safe training frame (ARCHITECTURE §4).

Labels are visible only if observed before their split's cut; features are joined as of
``available_at <= event_time`` (never ``valid_from``) within the group's TTL. Every rule is
measured into a ``LeakageAudit`` that travels with the frame and the bundle.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from datetime import datetime, timedelta

import polars as pl

from model_factory.contracts import (
    FeatureGroupAudit,
    FeatureSpec,
    GovernancePolicy,
    IntakeReceipt,
    LeakageAudit,
    LeakagePolicy,
)
from model_factory.core.governance import pii_columns
from model_factory.core.intake import FrameInputs, feature_columns
from model_factory.core.manifests import CatalogEntry, file_uris
from model_factory.core.windows import data_span
from model_factory.errors import SchemaMismatchError

TS = pl.Datetime("us", "UTC")
SPLITS = ("train", "val", "test")
ID_COLUMNS = ("event_id", "event_time", "split", "label")


@dataclass(frozen=True)
class TrainingFrame:
    frame: pl.DataFrame
    audit: LeakageAudit
    feature_schema: list[FeatureSpec]

    @property
    def feature_names(self) -> list[str]:
        return [f.name for f in self.feature_schema]

    def rows(self, split: str) -> int:
        return int(self.frame.filter(pl.col("split") == split).height)


def _scan(entries: list[CatalogEntry]) -> pl.LazyFrame:
    uris = [u for e in entries for u in file_uris(e.manifest, e.uri)]
    return pl.scan_parquet(uris)


def _split_expr(windows: LeakagePolicy) -> pl.Expr:
    t = pl.col("event_time")
    expr = pl.lit(None, dtype=pl.String)
    for name, w in (("train", windows.train_window), ("val", windows.eval_windows["val"]),
                    ("test", windows.eval_windows["test"])):
        expr = pl.when((t >= w.start) & (t < w.end)).then(pl.lit(name)).otherwise(expr)
    return expr


def _events(inputs: FrameInputs, receipt: IntakeReceipt) -> pl.DataFrame:
    cfg, windows = receipt.config, receipt.windows
    span = data_span(windows)
    cols = ["event_id", "event_time", *cfg.entity_keys, *cfg.event_features]
    return (
        _scan(inputs.events)
        .select(cols)
        .with_columns(pl.col("event_time").cast(TS))
        .filter((pl.col("event_time") >= span.start) & (pl.col("event_time") < span.end))
        .with_columns(split=_split_expr(windows))
        .filter(pl.col("split").is_not_null())  # events in the maturity gaps belong to no split
        .with_columns(
            label_cut=pl.when(pl.col("split") == "test")
            .then(pl.lit(windows.cut, dtype=TS))
            .otherwise(pl.lit(windows.train_cut, dtype=TS))
        )
        .collect()
    )


def visible_labels(events: pl.DataFrame, labels: pl.LazyFrame, label_family: str
                   ) -> tuple[pl.DataFrame, dict[str, int], dict[str, int], dict[str, float | None]]:
    """Latest label per event among those observed strictly before the event's label cut.

    Ties on observed_time resolve to the larger label value (a fraud report beats a genuine one).
    Returns (event_id, label) plus per-split counts of hidden and visible labels and the max of
    observed_time - cut over visible labels (must be negative).
    """
    joined = (
        labels.filter(pl.col("label_family") == label_family)
        .select("event_id", "label_value", pl.col("observed_time").cast(TS))
        .join(events.lazy().select("event_id", "split", "label_cut"), on="event_id", how="inner")
        .with_columns(visible=pl.col("observed_time") < pl.col("label_cut"))
        .collect()
    )
    stats = joined.group_by("split").agg(
        hidden=(~pl.col("visible")).sum(),
        visible=pl.col("visible").sum(),
        max_gap=pl.when(pl.col("visible")).then(pl.col("observed_time") - pl.col("label_cut")).max(),
    )
    hidden = {s: 0 for s in SPLITS}
    shown = {s: 0 for s in SPLITS}
    gap: dict[str, float | None] = {s: None for s in SPLITS}
    for row in stats.iter_rows(named=True):
        hidden[row["split"]] = int(row["hidden"])
        shown[row["split"]] = int(row["visible"])
        gap[row["split"]] = row["max_gap"].total_seconds() if row["max_gap"] is not None else None
    latest = (
        joined.filter(pl.col("visible"))
        .sort(["event_id", "observed_time", "label_value"])
        .group_by("event_id", maintain_order=True)
        .agg(label=pl.col("label_value").last())
    )
    return latest, hidden, shown, gap


def _snapshots(entries: list[CatalogEntry], keys: list[str], features: list[str],
               end: datetime) -> pl.DataFrame:
    """A group's snapshot rows that the join may use, one per (key, available_at).

    Duplicate (key, available_at) rows keep the one with the latest valid_from, then the last
    written, so the choice is deterministic and independent of file order within a key.
    """
    m = entries[0].manifest
    order = ["available_at", *keys]
    frame = _scan(entries).with_row_index("__row").with_columns(pl.col("available_at").cast(TS))
    frame = frame.filter(pl.col("available_at") < end)
    tiebreak = [m.valid_from_column] if m.valid_from_column else []
    return (
        frame.sort([*order, *tiebreak, "__row"])
        .unique(subset=order, keep="last", maintain_order=True)
        .select(*keys, "available_at", *features)
        .collect()
    )


def asof_join_group(frame: pl.DataFrame, snapshots: pl.DataFrame, keys: list[str],
                    features: list[str], prefix: str, ttl: timedelta | None
                    ) -> tuple[pl.DataFrame, dict[str, float | int | None]]:
    """Attach, per event, the latest snapshot with available_at <= event_time (within TTL).

    ``frame`` must be sorted by event_time. Snapshots are sorted by available_at globally, which
    also sorts them within each key: Polars' by-join silently misbehaves otherwise.
    """
    avail = f"__avail_{prefix}"
    right = snapshots.sort("available_at").rename(
        {"available_at": avail, **{f: f"{prefix}__{f}" for f in features}})
    for k in keys:
        if right.schema[k] != frame.schema[k]:
            right = right.with_columns(pl.col(k).cast(frame.schema[k]))
    joined = frame.join_asof(right, left_on="event_time", right_on=avail, by=keys,
                             strategy="backward", allow_exact_matches=True, check_sortedness=False)
    age = pl.col("event_time") - pl.col(avail)
    stale = age > ttl if ttl is not None else pl.lit(False)
    stats = joined.select(
        joined=pl.col(avail).is_not_null().sum(),
        # measured over the values actually used: a snapshot dropped by the TTL feeds nothing
        max_ahead=pl.when(~stale).then(pl.col(avail) - pl.col("event_time")).max(),
        ttl_dropped=(pl.col(avail).is_not_null() & stale).sum(),
    ).row(0, named=True)
    out_cols = [f"{prefix}__{f}" for f in features]
    joined = joined.with_columns(
        [pl.when(stale).then(None).otherwise(pl.col(c)).alias(c) for c in out_cols]
    ).drop(avail)
    ahead = stats["max_ahead"]
    return joined, {
        "joined_rows": int(stats["joined"]) - int(stats["ttl_dropped"]),
        "ttl_dropped_rows": int(stats["ttl_dropped"]),
        "null_rows": frame.height - (int(stats["joined"]) - int(stats["ttl_dropped"])),
        "max_ahead": ahead.total_seconds() if ahead is not None else None,
    }


def build_training_frame(receipt: IntakeReceipt, inputs: FrameInputs,
                         policy: GovernancePolicy) -> TrainingFrame:
    """The frame of one train run: event id, split, label, event and feature-group features."""
    cfg, windows = receipt.config, receipt.windows
    events = _events(inputs, receipt).sort(["event_time", "event_id"])
    latest, hidden, shown, gap = visible_labels(events, _scan(inputs.labels), cfg.label_family)
    frame = events.join(latest, on="event_id", how="left", maintain_order="left")
    if windows.missing_label == "exclude":
        frame = frame.filter(pl.col("label").is_not_null())
    frame = frame.with_columns(pl.col("label").fill_null(0).cast(pl.Int8))

    schema: list[FeatureSpec] = [
        FeatureSpec(name=c, dtype=str(frame.schema[c]), source="event") for c in cfg.event_features
    ]
    group_audits = []
    span = data_span(windows)
    for sel in cfg.feature_group_versions:
        entries = inputs.feature_groups[sel.name]
        m = entries[0].manifest
        ttl = timedelta(seconds=m.ttl_seconds) if m.ttl_seconds else None
        features = feature_columns(entries[0])
        snaps = _snapshots(entries, m.keys, features, span.end)
        frame, stats = asof_join_group(frame, snaps, m.keys, features, sel.name, ttl)
        group_audits.append(FeatureGroupAudit(
            name=sel.name, version=sel.version, keys=m.keys, ttl_seconds=m.ttl_seconds,
            joined_rows=stats["joined_rows"], null_rows=stats["null_rows"],
            ttl_dropped_rows=stats["ttl_dropped_rows"],
            max_available_minus_event_seconds=stats["max_ahead"]))
        schema += [FeatureSpec(name=f"{sel.name}__{f}", dtype=str(frame.schema[f"{sel.name}__{f}"]),
                               source=f"feature_group:{sel.name}/{sel.version}") for f in features]

    names = [f.name for f in schema]
    frame = frame.select(*ID_COLUMNS, *names)
    violations = []
    for g in group_audits:
        if g.max_available_minus_event_seconds is not None and g.max_available_minus_event_seconds > 0:
            violations.append(f"feature group {g.name}: a snapshot available "
                              f"{g.max_available_minus_event_seconds}s after its event was joined")
    for split, seconds in gap.items():
        if seconds is not None and seconds >= 0:
            violations.append(f"split {split}: a label observed at or after its cut is visible")
    pii = pii_columns(policy, frame.columns)
    if pii:
        violations.append(f"PII columns in the frame: {pii}")
    audit = LeakageAudit(
        passed=not violations, violations=violations, feature_groups=group_audits,
        labels_hidden_by_cut=hidden, labels_visible=shown,
        max_label_observed_minus_cut_seconds=gap, windows=windows, pii_columns_found=pii)
    return TrainingFrame(frame=frame, audit=audit, feature_schema=schema)


def frame_to_parquet(frame: pl.DataFrame) -> bytes:
    """Parquet bytes; the same frame gives the same bytes (content-addressed storage)."""
    buf = io.BytesIO()
    frame.write_parquet(buf, compression="zstd", statistics=True)
    return buf.getvalue()


def frame_from_parquet(data: bytes) -> pl.DataFrame:
    return pl.read_parquet(io.BytesIO(data))


def check_frame_schema(frame: pl.DataFrame, schema: list[FeatureSpec], source: str) -> None:
    """The frame has exactly the id columns plus the declared features, with declared dtypes."""
    expected = [*ID_COLUMNS, *(f.name for f in schema)]
    if frame.columns != expected:
        raise SchemaMismatchError(f"frame columns {frame.columns} differ from declared {expected}",
                                  source=source, field="feature_schema")
    for f in schema:
        if str(frame.schema[f.name]) != f.dtype:
            raise SchemaMismatchError(f"'{f.name}' is {frame.schema[f.name]}, declared {f.dtype}",
                                      source=source, field=f"feature_schema.{f.name}")
