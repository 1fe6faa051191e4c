"""The leakage-safe training frame (ARCHITECTURE §4).

Labels are visible only if observed before their split's cut; features are joined as of
``available_at <= event_time`` (never ``valid_from``) within the group's TTL.

The builder keeps, per row, the evidence of what it used: the ``available_at`` of each group's
matched snapshot and the ``observed_time`` of the label. The leakage audit
(``core/leakage.py``) measures every rule on that evidence rather than trusting the code that
built the frame, then the evidence columns are dropped.

Speed (the design, measured in ``benchmarks/frame_build.py``):

- Matching. A single integer entity key (the usual case) is matched without Polars' by-join.
  With few snapshots per entity (they are daily or weekly), each entity's snapshot times go
  into one row of a small table and each event counts those at or before its time
  (``_EntityIndex``: no sort of the events, no search). Otherwise each snapshot and event gets
  one int64 composite key ``(entity - min) * span + (time - first)``: one sort of the events'
  composites and a binary search in the snapshots' (``_composite_match``). Keys that fit
  neither (several columns, strings, a range too wide for 62 bits) go through Polars'
  ``join_asof(by=...)``.
- Gathering. A group's float features are copied once into a row-major matrix (NaN for null),
  so an event's values are read from one place; chunks of events are gathered, transposed and
  their validity packed while in cache (``_gather_rows``).
- Overlap. Two worker threads read and index the groups' snapshots while the main thread
  reads the events, then match them while it settles the labels and gathers the groups
  already matched (``_Matching``); numpy and Polars release the GIL.
- Memory. Per-event work runs in cache-sized chunks, and the large result arrays live on
  ordinary pages (``_unhuge_empty``): on this class of virtual machine, fresh memory is the
  most expensive thing the builder touches.
"""

from __future__ import annotations

import io
import mmap
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from pathlib import Path
from typing import BinaryIO

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq
from polars.io.plugins import register_io_source

from model_factory.contracts import (
    DatasetManifest,
    DatasetSelector,
    FeatureSpec,
    GovernancePolicy,
    IntakeReceipt,
    LabelMaturity,
    LeakageAudit,
    LeakagePolicy,
    TimeWindow,
    TrainingConfig,
)
from model_factory.core.governance import allowed_times, check_no_pii
from model_factory.core.intake import ID_COLUMNS, FrameInputs, feature_columns, group_feature
from model_factory.core.leakage import (
    LABEL_OBSERVED,
    GroupJoin,
    audit_frame,
    avail_column,
    group_join_stats,
)
from model_factory.core.manifests import CatalogEntry, file_uris, scan_files
from model_factory.core.maturity import label_maturity
from model_factory.core.splits import SPLITS, by_split
from model_factory.core.windows import data_span
from model_factory.errors import SchemaMismatchError

TS = pl.Datetime("us", "UTC")
JOIN_AT = "__join_at"  # the snapshot time the as-of join matches on: available_at
ROW = "__row"  # an event's row before the missing-label rule
OBSERVED_EXACT = "__observed_exact"  # a label's observed_time as written (finer than frames')
TIEBREAK = "__tiebreak"  # among rows of one (key, __join_at): the latest of it, then the last row
_INT_KEYS = (pl.Int8, pl.Int16, pl.Int32, pl.Int64, pl.UInt8, pl.UInt16, pl.UInt32, pl.UInt64)
_COMPOSITE_LIMIT = 1 << 62
# The entity walk: at most this many snapshots per entity (a multiple of 8: one word of its
# count), and key values at most this many times the rows (its tables have a row per value).
_WALK_MAX_SNAPSHOTS = 24
_WALK_KEY_SPAN_PER_ROW = 4
# ... and its per-entity tables at most this many cells per row (or this many in all), walked
# in chunks of this many events.
_WALK_CELLS_PER_ROW = 4
_WALK_CELLS_ALWAYS = 1 << 16
_WALK_CHUNK = 1 << 13
# The feature gather: events per chunk (its rows stay in cache); per-event work goes to two
# threads above this many events.
_GATHER_CHUNK = 1 << 12
_THREADS_ABOVE = 1 << 16
# Events per chunk when their matched available_at and TTL are resolved.
_RESOLVE_CHUNK = 1 << 15
# Snapshot rows per block when their float features are copied into a row-major matrix.
_SOURCE_BLOCK = 1 << 16
# Rows per parquet row group of every frame file, in both build modes (same rows, same bytes).
FRAME_ROW_GROUP = 1 << 17


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
    return scan_files(uris)


def _split_windows(windows: LeakagePolicy) -> list[tuple[str, TimeWindow]]:
    return [
        ("train", windows.train_window),
        ("val", windows.eval_windows["val"]),
        ("test", windows.eval_windows["test"]),
    ]


# While a frame is built its split is an Enum: grouping by it reads one small integer per row
# instead of hashing a string, and it costs a byte a row instead of a 16-byte string view.
# The frame itself (and its file) has a String split, cast once at the end (_finished).
_SPLIT = pl.Enum(SPLITS)


def _split_expr(windows: LeakagePolicy) -> pl.Expr:
    t = pl.col("event_time")
    expr = pl.lit(None, dtype=_SPLIT)
    for name, w in _split_windows(windows):
        expr = (
            pl.when((t >= w.start) & (t < w.end)).then(pl.lit(name, dtype=_SPLIT)).otherwise(expr)
        )
    return expr


# The split's names as a String Series: the frame's String split is a gather from it by the
# Enum's codes, which copies one 16-byte view per row (every name fits a view inline). Polars'
# own Enum -> String cast builds each row's view one at a time, several times slower, at the
# end of a build when nothing else runs.
_SPLIT_NAMES = pl.Series("split", SPLITS, dtype=pl.String)


def _finished(rows: pl.DataFrame) -> pl.DataFrame:
    """Rows as the frame holds them: the split as a String."""
    if rows.schema["split"] != _SPLIT:
        return rows.with_columns(pl.col("split").cast(pl.String))
    return rows.with_columns(_SPLIT_NAMES.gather(rows["split"].to_physical()))


def _in_a_split(windows: LeakagePolicy) -> pl.Expr:
    """True for an event inside one split's window. It reads only the file's own column, so the
    parquet reader applies it as it decodes: no second filter pass over the read columns once
    the split is computed."""
    t = pl.col("event_time")
    inside = pl.lit(False)
    for _, w in _split_windows(windows):
        inside = inside | ((t >= w.start) & (t < w.end))
    return inside


def _label_cut_expr(windows: LeakagePolicy) -> pl.Expr:
    """Per row: labels are visible only if observed strictly before this instant."""
    return (
        pl.when(pl.col("split") == "test")
        .then(pl.lit(windows.cut, dtype=TS))
        .otherwise(pl.lit(windows.train_cut, dtype=TS))
    )


def _sorted_by_time_then_id(frame: pl.DataFrame) -> pl.DataFrame:
    """Sorted by (event_time, event_id); event files usually are, and checking is cheaper."""
    if frame.height < 2:
        return frame
    t, i = pl.col("event_time"), pl.col("event_id")
    ordered = frame.select(
        ((t.diff() > 0) | ((t.diff() == 0) & (i > i.shift()))).slice(1).all()
    ).item()
    return frame if ordered else frame.sort(["event_time", "event_id"])


def _events(inputs: FrameInputs, receipt: IntakeReceipt) -> pl.DataFrame:
    cfg, windows = receipt.config, receipt.windows
    # once each: an entity key may be the event id itself (an event-level feature group)
    cols = list(dict.fromkeys(["event_id", "event_time", *cfg.entity_keys, *cfg.event_features]))
    events = (
        _scan(inputs.events)
        .select(cols)
        # truncating finer units is exact here: windows and cuts lie on whole microseconds, and
        # a join needs ceil(available_at) <= floor(event_time) (see _known_from)
        .with_columns(pl.col("event_time").cast(TS))
        .filter(_in_a_split(windows))  # events in the maturity gaps belong to no split
        .collect()
    )
    # one chunk per column (later selects and joins would otherwise align the chunks each time),
    # before the columns computed here are added: they then come out in one chunk already
    events = _sorted_by_time_then_id(events.rechunk())
    return events.with_columns(split=_split_expr(windows)).with_columns(
        label_cut=_label_cut_expr(windows)
    )


def _label_rows(events: pl.DataFrame, labels: pl.LazyFrame, label_family: str) -> pl.DataFrame:
    """Every label of the family for an event of the frame, with its visibility at the cut."""
    if "label_family" in labels.collect_schema().names():  # else the manifest names the family
        labels = labels.filter(pl.col("label_family") == label_family)
    return (
        labels
        # truncated: with the cut on a whole microsecond, floor(observed) < cut iff observed < cut;
        # the exact time orders labels less than a microsecond apart
        .select(
            "event_id",
            "label_value",
            pl.col("observed_time").cast(TS),
            pl.col("observed_time").alias(OBSERVED_EXACT),
        )
        .join(
            # the event's row too, when the caller numbered them (ROW)
            events.lazy().select("event_id", "split", "label_cut", *({ROW} & set(events.columns))),
            on="event_id",
            how="inner",
        )
        .with_columns(visible=pl.col("observed_time") < pl.col("label_cut"))
        .collect()
    )


def visible_labels(
    events: pl.DataFrame, labels: pl.LazyFrame, label_family: str
) -> tuple[pl.DataFrame, dict[str, int], dict[str, int], dict[str, float | None]]:
    """Latest label per event among those observed strictly before the event's label cut.

    Ties on observed_time resolve to the larger label value (a fraud report beats a genuine one).
    Returns (event_id, label, observed_time of that label) plus per-split counts of hidden and
    visible labels and the max of observed_time - cut over visible labels (must be negative).
    """
    latest, hidden, shown, gap, _ = _visible_labels(events, labels, label_family)
    return latest, hidden, shown, gap


def _visible_labels(events: pl.DataFrame, labels: pl.LazyFrame, label_family: str):
    joined = _label_rows(events, labels, label_family)
    stats = joined.group_by("split").agg(
        hidden=(~pl.col("visible")).sum(),
        visible=pl.col("visible").sum(),
        max_gap=pl.when(pl.col("visible"))
        .then(pl.col("observed_time") - pl.col("label_cut"))
        .max(),
    )
    hidden = dict.fromkeys(SPLITS, 0)
    shown = dict.fromkeys(SPLITS, 0)
    gap: dict[str, float | None] = dict.fromkeys(SPLITS, None)
    for row in stats.iter_rows(named=True):
        hidden[row["split"]] = int(row["hidden"])
        shown[row["split"]] = int(row["visible"])
        gap[row["split"]] = row["max_gap"].total_seconds() if row["max_gap"] is not None else None
    only_late = (
        joined.group_by("event_id")
        .agg(pl.col("split").first(), any_visible=pl.col("visible").any())
        .filter(~pl.col("any_visible"))
        .group_by("split")
        .len()
    )
    late = dict.fromkeys(SPLITS, 0) | {
        r["split"]: int(r["len"]) for r in only_late.iter_rows(named=True)
    }
    latest = (
        joined.filter(pl.col("visible"))
        .sort(["event_id", OBSERVED_EXACT, "label_value"])
        .group_by("event_id", maintain_order=True)
        .agg(
            *([pl.col(ROW).first()] if ROW in joined.columns else []),
            label=pl.col("label_value").last(),
            observed_time=pl.col("observed_time").last(),
        )
    )
    return latest, hidden, shown, gap, late


def _snapshots(
    entries: list[CatalogEntry],
    keys: list[str],
    features: list[str],
    end: datetime,
    allowed: pl.Expr | None = None,
) -> pl.DataFrame:
    """A group's snapshot rows the join may use, in written order (files, then rows): written
    before ``end`` and where ``allowed`` (the governance policy's data window) says.

    Columns: keys, ``__join_at`` (= available_at: the only time a join may match on),
    available_at, ``__tiebreak`` (valid_from, when declared) and the features. Of several rows
    with one (key, available_at) the join uses the latest valid_from, then the last written.
    """
    m = entries[0].manifest
    tiebreak = [pl.col(m.valid_from_column).alias(TIEBREAK)] if m.valid_from_column else []
    scan = _scan(entries)
    return (
        # the join time and the tiebreak keep their exact times: _prepare_snapshots rounds the
        # join time to microseconds once it has ordered the rows of one microsecond by them
        scan.with_columns(pl.col("available_at").alias(JOIN_AT))
        .with_columns(_known_from("available_at", scan.collect_schema()["available_at"]))
        .filter(pl.col("available_at") < end, *([] if allowed is None else [allowed]))
        .select(*keys, JOIN_AT, "available_at", *tiebreak, *features)
        .collect()
    )


def _finer_than_us(dtype: pl.DataType) -> bool:
    return isinstance(dtype, pl.Datetime) and dtype.time_unit == "ns"


def _known_from(column: str, dtype: pl.DataType) -> pl.Expr:
    """A time from which a row may be used, in the frame's microseconds: rounded *up* from
    finer units. Truncating would make a snapshot written 800 ns after an event look available
    at the event's microsecond (the audit, reading the same values, could not tell)."""
    if isinstance(dtype, pl.Datetime) and dtype.time_unit == "ns":
        up = (pl.col(column).dt.epoch("ns") + 999) // 1000  # floor division: a ceiling, also < 0
        return pl.from_epoch(up, time_unit="us").dt.replace_time_zone("UTC").alias(column)
    return pl.col(column).cast(TS)


def _epoch_us(s: pl.Series) -> np.ndarray:
    """Microseconds since the epoch; for microsecond timestamps (the frame's), a view."""
    if s.dtype == pl.Datetime("us", s.dtype.time_zone):  # type: ignore[union-attr]
        return s.to_physical().to_numpy()
    return s.dt.epoch("us").to_numpy()


def _offset(keys: pl.Series, k0: int) -> np.ndarray:
    """``keys - k0`` as int64 (the caller has checked that the differences fit): unsigned keys
    are subtracted as unsigned, so ids of 2**63 and more (hashes) do not overflow."""
    values = keys.to_numpy()
    if values.dtype == np.uint64:
        return (values - np.uint64(k0)).astype(np.int64)
    return values.astype(np.int64) - k0


def _composite_match(frame: pl.DataFrame, right: pl.DataFrame, key: str) -> np.ndarray | None:
    """Index of each event's snapshot (or -1) for one integer key, or None when the composite
    key ``(key - min) * (time span + 1) + (time - first time)`` would not fit in 62 bits."""
    ev_key, snap_key = frame[key], right[key]
    if ev_key.null_count() or snap_key.null_count():
        return None
    if right.height == 0 or frame.height == 0:
        return np.full(frame.height, -1, dtype=np.int64)
    ev_t, snap_t = _epoch_us(frame["event_time"]), _epoch_us(right[JOIN_AT])
    t0 = min(int(ev_t.min()), int(snap_t.min()))
    width = max(int(ev_t.max()), int(snap_t.max())) - t0 + 1
    k0 = min(int(ev_key.min()), int(snap_key.min()))  # type: ignore[arg-type]
    k1 = max(int(ev_key.max()), int(snap_key.max()))  # type: ignore[arg-type]
    if (k1 - k0 + 1) * width >= _COMPOSITE_LIMIT:
        return None
    snap_comp = _offset(snap_key, k0) * width + (snap_t - t0)
    snap_order = np.argsort(snap_comp, kind="stable")
    snap_sorted = snap_comp[snap_order]
    if snap_sorted.size > 1 and bool(np.any(snap_sorted[1:] == snap_sorted[:-1])):
        # duplicates of (key, time): the search takes the last of equals, so order them by
        # the tiebreak, then by written order
        snap_order = np.lexsort((np.arange(right.height), _tiebreak(right), snap_comp))
        snap_sorted = snap_comp[snap_order]
    ev_comp = _offset(ev_key, k0) * width + (ev_t - t0)
    perm = pl.Series(ev_comp).arg_sort().to_numpy()  # sorted queries: the search walks forward
    queries = ev_comp[perm]
    pos = np.searchsorted(snap_sorted, queries, side="right") - 1
    safe = np.maximum(pos, 0)
    same_key = (pos >= 0) & (snap_sorted[safe] // width == queries // width)
    match = np.empty(frame.height, dtype=np.int64)
    match[perm] = np.where(same_key, snap_order[safe], -1)
    return match


def _snapshot_order(
    right: pl.DataFrame, snap_k: np.ndarray, snap_t: np.ndarray, span: int
) -> np.ndarray:
    """Snapshot rows sorted by (key, time, tiebreak, written order), as int64 row numbers;
    ``snap_k`` holds keys in [0, span).

    Snapshot files are usually written in time order; then a stable sort on the key alone is
    enough (and cheaper than sorting on four columns): NumPy's radix sort, 16 bits of the key
    a pass, least significant first (about 3x less CPU than a comparison sort here)."""
    tiebreak = _tiebreak(right)
    # neighbours compared, not subtracted: a null tiebreak is the lowest int64, and the lowest
    # minus a time wraps round to a large positive difference
    later, earlier = snap_t[1:], snap_t[:-1]
    ties = later == earlier
    in_time_order = bool(np.all(later >= earlier)) and bool(
        np.all(tiebreak[1:][ties] >= tiebreak[:-1][ties])
    )
    if not in_time_order:
        columns = {"k": snap_k, "t": snap_t, "b": tiebreak}
        order = pl.DataFrame(columns).select(pl.arg_sort_by(list(columns), maintain_order=True))
        return order.to_series().to_numpy().astype(np.int64)
    order = np.argsort((snap_k & 0xFFFF).astype(np.uint16), kind="stable")
    for shift in range(16, (span - 1).bit_length(), 16):
        digits = ((snap_k[order] >> shift) & 0xFFFF).astype(np.uint16)
        order = order[np.argsort(digits, kind="stable")]
    return order


@dataclass(frozen=True)
class _EntityIndex:
    """What the entity walk reads, built from the snapshots alone (so while the events are
    still being read): a row per entity value ``k - first`` plus a last row for values without
    any snapshot. ``times[k]`` holds entity k's snapshot times in (time, tiebreak, written)
    order, padded with the largest time to a multiple of 8 columns; ``rows[k]`` their row
    numbers after a leading -1 ("none")."""

    first: int
    width: int
    times: np.ndarray  # (entities + 1, width) int64
    rows: np.ndarray  # flat (entities + 1) * (width + 1)

    @classmethod
    def of(cls, right: pl.DataFrame, key: str) -> _EntityIndex | None:
        """None when the walk does not fit: keys null, not integers, too sparse for a row per
        value, or an entity with too many snapshots."""
        snap_key = right[key]
        if snap_key.dtype not in _INT_KEYS or snap_key.null_count() or right.height == 0:
            return None
        first, last = int(snap_key.min()), int(snap_key.max())  # type: ignore[arg-type]
        span = last - first + 1
        if span > _WALK_KEY_SPAN_PER_ROW * right.height + _WALK_CELLS_ALWAYS or last >= 2**62:
            return None
        snap_k = snap_key.to_numpy().astype(np.int64, copy=False) - first
        counts = np.bincount(snap_k, minlength=span)
        width = -(-int(counts.max()) // 8) * 8  # the longest entity, in whole words of 8 bytes
        cells = max(_WALK_CELLS_PER_ROW * right.height, _WALK_CELLS_ALWAYS)
        if width > _WALK_MAX_SNAPSHOTS or width * span > cells:
            return None
        snap_t = _epoch_us(right[JOIN_AT])
        order = _snapshot_order(right, snap_k, snap_t, span)
        slot = np.arange(order.size) - np.repeat(np.cumsum(counts) - counts, counts)
        entity = snap_k[order]
        # on small pages, like the frame's largest arrays (see _unhuge_empty)
        times = _unhuge_empty((span + 1, width), np.int64)
        times.fill(np.iinfo(np.int64).max)
        times[entity, slot] = snap_t[order]
        rows = _unhuge_empty((span + 1, width + 1), np.int32 if right.height < 2**31 else np.int64)
        rows.fill(-1)
        rows[entity, slot + 1] = order
        return cls(first, width, times, rows.ravel())

    def walk(self, frame: pl.DataFrame, key: str) -> np.ndarray:
        """Per event of ``frame``, its snapshot row or -1: the event of entity k at time t reads
        ``rows[k, c]`` where c counts entity k's times <= t. One row of each table (a cache line
        or two) per event, no sort of the events and no search; the count is a popcount of the
        comparison's bytes, 8 at a time. Events go in chunks so every temporary array stays in
        cache."""
        ev_k, ev_t = frame[key].to_numpy(), _epoch_us(frame["event_time"])
        found = _unhuge_empty((frame.height,), self.rows.dtype)
        if frame.height == 0:
            return found
        width, none = self.width, self.times.shape[0] - 1
        size = min(_WALK_CHUNK, frame.height)
        seen, fits = np.empty((size, width), np.int64), np.empty((size, width), bool)
        words, at = np.empty((size, width // 8), np.uint8), np.empty(size, np.int64)
        entity = np.empty(size, np.int64)
        for start in range(0, frame.height, size):
            t = ev_t[start : start + size]
            n = t.size
            k = entity[:n]
            # widened before the subtraction: the events may key by a narrower integer than
            # the snapshots the table was built from, and a subtraction in their own type wraps
            # round (an unsigned key 1 - 3 was 254, another entity's row)
            np.copyto(k, ev_k[start : start + n], casting="unsafe")
            np.subtract(k, self.first, out=k)
            # keys no snapshot has read the last row, where no time is <= any event's: those
            # below the first are negative here, so as unsigned numbers they are above it too
            np.minimum(k.view(np.uint64), none, out=k.view(np.uint64))
            np.take(self.times, k, axis=0, out=seen[:n], mode="clip")
            np.less_equal(seen[:n], t[:, None], out=fits[:n])
            np.bitwise_count(fits[:n].view(np.uint64), out=words[:n])  # True: 1 bit per byte
            np.multiply(k, width + 1, out=at[:n])
            for w in range(width // 8):
                np.add(at[:n], words[:n, w], out=at[:n])
            np.take(self.rows, at[:n], out=found[start : start + n], mode="clip")
        return found


def _walk_match(frame: pl.DataFrame, right: pl.DataFrame, key: str) -> np.ndarray | None:
    """Index of each event's snapshot (or -1) for one integer key with few snapshots per
    entity, or None when the walk does not fit (see ``_EntityIndex.of``)."""
    if frame[key].dtype not in _INT_KEYS or frame[key].null_count():
        return None
    index = _EntityIndex.of(right, key)
    return None if index is None else index.walk(frame, key)


def _tiebreak(right: pl.DataFrame) -> np.ndarray:
    """Per snapshot row, the tiebreak time in microseconds (no tiebreak or null: lowest)."""
    if TIEBREAK not in right.columns:
        return np.zeros(right.height, dtype=np.int64)
    lowest = np.iinfo(np.int64).min
    column = right[TIEBREAK]
    if column.dtype.is_integer():  # a rank of exact times (_prepare_snapshots)
        return column.cast(pl.Int64).to_numpy()
    return column.dt.epoch("us").fill_null(lowest).to_numpy()


def _by_join_match(frame: pl.DataFrame, right: pl.DataFrame, keys: list[str]) -> np.ndarray:
    """Index of each event's snapshot (or -1) through Polars' by-join (any keys).

    The right side is sorted by time globally, which also sorts it within each key: Polars'
    by-join silently returns wrong rows otherwise. ``frame`` is sorted by event_time.
    """
    r = (
        right.with_row_index("__snap")
        .with_columns(pl.Series(TIEBREAK, _tiebreak(right)))
        .sort([*keys, JOIN_AT, TIEBREAK, "__snap"])
        .unique(subset=[*keys, JOIN_AT], keep="last")
        .select(*keys, JOIN_AT, "__snap")
        .sort(JOIN_AT, maintain_order=True)
    )
    joined = frame.select(*keys, "event_time").join_asof(
        r,
        left_on="event_time",
        right_on=JOIN_AT,
        by=keys,
        strategy="backward",
        allow_exact_matches=True,
        check_sortedness=False,
    )
    return joined["__snap"].fill_null(-1).to_numpy().astype(np.int64)


def match_snapshots(
    frame: pl.DataFrame,
    right: pl.DataFrame,
    keys: list[str],
    index: _EntityIndex | None = None,
    *,
    indexed: bool = False,
) -> np.ndarray:
    """Per event (``frame`` sorted by event_time), the row of ``right`` with the same keys and
    the latest ``__join_at <= event_time``, or -1. ``indexed``: the caller has already built
    the entity walk's tables for ``right`` (``index``; None when the walk does not fit)."""
    if len(keys) == 1 and frame.schema[keys[0]] in _INT_KEYS and right.schema[keys[0]] in _INT_KEYS:
        key = keys[0]
        if not indexed:
            index = _EntityIndex.of(right, key)
        walkable = index is not None and not frame[key].null_count()
        found = index.walk(frame, key) if walkable else _composite_match(frame, right, key)
        if found is not None:
            return found
    return _by_join_match(frame, right, keys)


@dataclass(frozen=True)
class _FeatureSource:
    """One group's feature values, ready to be gathered by snapshot row (-1: no snapshot).

    Float columns that hold no NaN go into one row-major matrix per dtype, nulls as NaN, plus a
    last all-NaN row that index -1 reads: an event's values come from one place in memory
    instead of one per column, and NaN marks exactly the nulls again after the gather. Every
    other column (integers, strings, floats that hold NaN) is gathered by Polars.
    """

    schema: pl.Schema  # the features, in order
    blocks: list[tuple[list[str], np.ndarray]]
    other: pl.DataFrame

    @classmethod
    def of(cls, right: pl.DataFrame, features: list[str]) -> _FeatureSource:
        values = right.select(features)
        floats = [c for c, t in values.schema.items() if t in (pl.Float32, pl.Float64)]
        if floats:
            has_nan = values.select(pl.col(floats).is_nan().any()).row(0)
            floats = [c for c, nan in zip(floats, has_nan, strict=True) if not nan]
        blocks = []
        for dtype, np_dtype in ((pl.Float32, np.float32), (pl.Float64, np.float64)):
            names = [c for c in floats if values.schema[c] == dtype]
            if names:
                matrix = _unhuge_empty((values.height + 1, len(names)), np_dtype)
                block = values.select(names)
                # a block of rows at a time: the column-major copy Polars makes stays small
                for start in range(0, block.height, _SOURCE_BLOCK):
                    rows = block.slice(start, _SOURCE_BLOCK)
                    matrix[start : start + rows.height] = rows.to_numpy()  # nulls become NaN
                matrix[-1] = np.nan
                blocks.append((names, matrix))
        return cls(values.schema, blocks, values.drop(floats))

    def gather(self, used: np.ndarray) -> pl.DataFrame:
        """The features of snapshot row ``used[i]`` for every i (nulls where it is -1)."""
        columns: dict[str, pl.Series] = {}
        for names, matrix in self.blocks:
            columns |= dict(zip(names, _gather_rows(matrix, used), strict=True))
        if self.other.width:
            index = pl.Series(np.where(used >= 0, used, 0).astype(np.uint32)).scatter(
                np.flatnonzero(used < 0), None
            )
            columns |= self.other.select(pl.all().gather(index)).to_dict()
        return pl.DataFrame([columns[c].alias(c) for c in self.schema])


def _unhuge_empty(shape: tuple[int, ...], dtype: np.dtype) -> np.ndarray:
    """An uninitialised array in its own anonymous mapping, on ordinary pages.

    NumPy asks the kernel for transparent huge pages on large arrays; on a virtual machine
    whose free memory is handed back to the host, each fresh huge page can cost far more to
    fault in than the 512 small ones the kernel otherwise reuses (measured: the frame's
    feature columns took 4x longer to first touch). The frame's largest arrays skip that.
    """
    size = int(np.prod(shape)) * np.dtype(dtype).itemsize
    if size == 0:
        return np.empty(shape, dtype)
    pages = mmap.mmap(-1, size, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
    return np.frombuffer(pages, dtype=dtype).reshape(shape)


def _in_two_halves(part: Callable[[int, int], None], n: int, align: int = 8) -> None:
    """``part(0, n)``, or above ``_THREADS_ABOVE`` rows ``part(0, m)`` and ``part(m, n)`` in
    two threads, m a multiple of ``align`` (numpy releases the GIL in each part's work)."""
    middle = (n // 2 // align) * align
    if n < _THREADS_ABOVE or middle == 0:
        part(0, n)
        return
    with ThreadPoolExecutor(max_workers=2) as pool:
        list(pool.map(part, (0, middle), (middle, n)))


def _gather_rows(matrix: np.ndarray, used: np.ndarray) -> list[pl.Series]:
    """Rows ``used`` of a row-major matrix (-1: its last, all-NaN row), as one Series per
    column, with a null wherever the value is NaN.

    Events go in chunks small enough for the cache: the chunk's rows are gathered, transposed
    into the output columns and their validity bits packed from the NaNs, while in cache.
    Two threads take half the events each (numpy releases the GIL).
    """
    n, width = used.size, matrix.shape[1]
    values = _unhuge_empty((width, n), matrix.dtype)
    valid = _unhuge_empty((width, (n + 7) // 8), np.uint8)

    def part(lo: int, hi: int) -> None:
        rows = np.empty((_GATHER_CHUNK, width), matrix.dtype)
        ok = np.empty((width, _GATHER_CHUNK), bool)
        for start in range(lo, hi, _GATHER_CHUNK):
            size = min(_GATHER_CHUNK, hi - start)
            np.take(matrix, used[start : start + size], axis=0, out=rows[:size], mode="wrap")
            out = values[:, start : start + size]
            out[...] = rows[:size].T
            np.equal(out, out, out=ok[:, :size])  # False exactly where NaN
            valid[:, start // 8 : (start + size + 7) // 8] = np.packbits(
                ok[:, :size], axis=1, bitorder="little"
            )

    _in_two_halves(part, n, align=_GATHER_CHUNK)  # each half owns whole bytes of validity
    arrow_type = pa.from_numpy_dtype(matrix.dtype)
    return [
        pl.Series(
            pa.Array.from_buffers(arrow_type, n, [pa.py_buffer(valid[j]), pa.py_buffer(values[j])])
        )
        for j in range(width)
    ]


@dataclass(frozen=True)
class _GroupPlan:
    """Which snapshot row each event of one group reads. The per-event arrays derived from it
    (the matched available_at, the row after the TTL) are computed when the features are
    attached, for the rows attached, so a plan holds one array per event."""

    source: _FeatureSource
    match: np.ndarray  # matched snapshot row or -1, before the TTL
    avail: np.ndarray  # available_at of each snapshot row (us), then 0 for "none" (index -1)
    event_us: np.ndarray  # event_time of each event (us), shared by the groups of a frame
    ttl_us: int | None

    def rows(self, start: int, end: int) -> _GroupPlan:
        return replace(self, match=self.match[start:end], event_us=self.event_us[start:end])

    def resolve(self) -> tuple[np.ndarray, np.ndarray]:
        """Per event: the available_at of its matched snapshot (0 where none), and the row its
        features come from (-1 for none, or past the TTL). In cache-sized chunks, two threads
        each taking half the events: the only full-size arrays are the two results."""
        n = self.match.size
        matched_avail = _unhuge_empty((n,), np.int64)
        used = self.match if self.ttl_us is None else _unhuge_empty((n,), self.match.dtype)

        def part(lo: int, hi: int) -> None:
            for start in range(lo, hi, _RESOLVE_CHUNK):
                rows = slice(start, min(start + _RESOLVE_CHUNK, hi))
                match, avail = self.match[rows], matched_avail[rows]
                np.take(self.avail, match, out=avail, mode="wrap")
                if self.ttl_us is not None:
                    stale = self.event_us[rows] - avail > self.ttl_us
                    stale &= match >= 0
                    used[rows] = match
                    used[rows][stale] = -1

        _in_two_halves(part, n)
        return matched_avail, used


@dataclass(frozen=True)
class _Prepared:
    """A group's snapshots before the events are known: its features ready to gather, the
    columns its match reads (keys, the join time, available_at, the tiebreak) and, for one
    integer key, the entity walk's tables."""

    source: _FeatureSource
    right: pl.DataFrame
    index: _EntityIndex | None


def _prepare_snapshots(snapshots: pl.DataFrame, keys: list[str], features: list[str]) -> _Prepared:
    right = (
        snapshots
        if JOIN_AT in snapshots.columns
        else snapshots.with_columns(pl.col("available_at").alias(JOIN_AT))
    )
    del snapshots  # the feature columns go once they are in the source
    # the features first, then only the columns the match reads: a column computed on the whole
    # snapshot frame would first align (copy) every feature column's chunks
    source = _FeatureSource.of(right, features)
    right = right.select(*keys, JOIN_AT, "available_at", *({TIEBREAK} & set(right.columns)))
    exact = [c for c in (JOIN_AT, TIEBREAK) if c in right.columns]
    if any(_finer_than_us(right.schema[c]) for c in exact):
        # Rows of one (key, microsecond) are ordered by their exact times, then written order:
        # the tiebreak becomes each row's rank by (exact join time, exact tiebreak time), so
        # rounding the join time up loses no order (a null tiebreak ranks lowest)
        right = right.with_columns(
            pl.int_range(pl.len(), dtype=pl.Int64)
            .sort_by(exact, nulls_last=False, maintain_order=True)
            .arg_sort()
            .cast(pl.Int64)
            .alias(TIEBREAK)
        )
    right = right.with_columns(
        _known_from(JOIN_AT, right.schema[JOIN_AT]),
        _known_from("available_at", right.schema["available_at"]),
    )
    index = _EntityIndex.of(right, keys[0]) if len(keys) == 1 else None
    return _Prepared(source, right, index)


def _match_group(
    frame: pl.DataFrame, prepared: _Prepared, keys: list[str], ttl: timedelta | None
) -> _GroupPlan:
    # intake has checked that the keys are of one kind (text, signed or unsigned integers): a
    # key beyond the events' type matches no event, so it may become null (never matched)
    right = prepared.right.with_columns(
        [
            pl.col(k).cast(frame.schema[k], strict=False)
            for k in keys
            if prepared.right.schema[k] != frame.schema[k]
        ]
    )
    return _GroupPlan(
        source=prepared.source,
        match=match_snapshots(frame, right, keys, prepared.index, indexed=True),
        avail=np.append(_epoch_us(right["available_at"]), 0),
        event_us=_epoch_us(frame["event_time"]),
        ttl_us=None if ttl is None else ttl // timedelta(microseconds=1),
    )


def _plan_group(
    frame: pl.DataFrame,
    snapshots: pl.DataFrame,
    keys: list[str],
    features: list[str],
    ttl: timedelta | None,
) -> _GroupPlan:
    return _match_group(frame, _prepare_snapshots(snapshots, keys, features), keys, ttl)


def _timestamps(name: str, us: np.ndarray, present: np.ndarray) -> pl.Series:
    """UTC timestamps from microseconds, null where not ``present``, without copying ``us``."""
    valid = pa.py_buffer(np.packbits(present, bitorder="little"))
    arrow = pa.Array.from_buffers(pa.timestamp("us", "UTC"), us.size, [valid, pa.py_buffer(us)])
    return pl.Series(name, arrow)


def _attach(
    frame: pl.DataFrame, plan: _GroupPlan, features: list[str], prefix: str
) -> pl.DataFrame:
    matched_avail, used = plan.resolve()
    # events with no snapshot, or only one past the TTL, get nulls
    gathered = plan.source.gather(used)
    gathered = gathered.rename({f: group_feature(prefix, f) for f in features})
    evidence = _timestamps(avail_column(prefix), matched_avail, plan.match >= 0)
    return frame.hstack([*gathered.get_columns(), evidence])


def join_group(
    frame: pl.DataFrame,
    snapshots: pl.DataFrame,
    keys: list[str],
    features: list[str],
    prefix: str,
    ttl: timedelta | None,
) -> pl.DataFrame:
    """Attach ``<prefix>__<feature>`` per event from the latest snapshot with
    available_at <= event_time (null past the TTL), plus the evidence column
    ``__avail__<prefix>`` (the matched snapshot's available_at, before the TTL).

    ``frame`` must be sorted by event_time; ``snapshots`` may come in any order. A ``__join_at``
    column, when present, is what the join matches on (the reader sets it to available_at).
    """
    return _attach(frame, _plan_group(frame, snapshots, keys, features, ttl), features, prefix)


def asof_join_group(
    frame: pl.DataFrame,
    snapshots: pl.DataFrame,
    keys: list[str],
    features: list[str],
    prefix: str,
    ttl: timedelta | None,
) -> tuple[pl.DataFrame, dict[str, float | int | None]]:
    """One group's as-of join and its audit counts (joined, TTL-dropped, null rows, max
    available_at - event_time in seconds over joined rows); ``frame`` sorted by event_time."""
    joined = join_group(frame, snapshots, keys, features, prefix, ttl)
    stats = group_join_stats(
        joined, GroupJoin(prefix, "", keys, ttl, [group_feature(prefix, f) for f in features])
    )
    return joined.drop(avail_column(prefix)), {
        "joined_rows": stats.joined_rows,
        "ttl_dropped_rows": stats.ttl_dropped_rows,
        "null_rows": stats.null_rows,
        "max_ahead": stats.max_available_minus_event_seconds,
    }


def _apply_missing_label(frame: pl.DataFrame, rule: str) -> pl.DataFrame:
    if rule == "exclude":
        frame = frame.filter(pl.col("label").is_not_null())
    return frame.with_columns(pl.col("label").fill_null(0).cast(pl.Int8))


class _Matching:
    """One group's match, still running in a worker thread when the frame plan is made: the
    first group's features can be gathered while the last group is matched. ``get`` waits for
    it and keeps only the rows the missing-label rule kept (``kept``: those rows and their
    event times, shared by the groups)."""

    def __init__(self, future: Future[_GroupPlan], kept: tuple[np.ndarray, np.ndarray] | None):
        self._future, self._kept, self._plan = future, kept, None

    def get(self) -> _GroupPlan:
        if self._plan is None:
            plan = self._future.result()
            if self._kept is not None:
                rows, event_us = self._kept
                plan = replace(plan, match=plan.match[rows], event_us=event_us)
            self._plan, self._future = plan, None
        return self._plan


@dataclass
class _FramePlan:
    """Everything about a frame but its feature values: the narrow rows (ids, split, label,
    event features, label evidence), which snapshot row each event reads per group, the schema
    and the label figures the audit needs. Both build modes gather the features from it."""

    rows: pl.DataFrame
    plans: list[tuple[str, _Matching, list[str]]]  # (group, its match, source feature columns)
    groups: list[GroupJoin]
    schema: list[FeatureSpec]
    audit_inputs: dict

    @property
    def names(self) -> list[str]:
        return [f.name for f in self.schema]

    def counts(self) -> tuple[dict[str, int], dict[str, int]]:
        """Rows and positives per split."""
        return split_counts(self.rows)

    def gather(self, start: int = 0, length: int | None = None) -> pl.DataFrame:
        """Rows [start, start + length) with every group's features and evidence columns."""
        chunk = self.rows.slice(start, length)
        end = start + chunk.height
        for name, matching, features in self.plans:
            chunk = _attach(chunk, matching.get().rows(start, end), features, name)
        return chunk

    def audit(self, frame: pl.DataFrame | pl.LazyFrame) -> LeakageAudit:
        return audit_frame(frame, groups=self.groups, schema=self.schema, **self.audit_inputs)


def split_counts(frame: pl.DataFrame) -> tuple[dict[str, int], dict[str, int]]:
    """Rows and positives per split of a frame (or of its narrow rows)."""
    figures = by_split(frame, [pl.len().alias("rows"), pl.col("label").sum().alias("positives")])
    return (
        {s: int(r["rows"]) for s, r in figures.items()},
        {s: int(r["positives"]) for s, r in figures.items()},
    )


def _labelled(
    events: pl.DataFrame, inputs: FrameInputs, cfg: TrainingConfig, windows: LeakagePolicy
) -> tuple[pl.DataFrame, dict[str, int], dict[str, int], dict[str, float | None], LabelMaturity]:
    """The events with their visible label (and its observed_time, the evidence), after the
    missing-label rule; the label counts the audit needs and the label maturity."""
    latest, hidden, shown, gap, late = _visible_labels(
        events, _scan(inputs.labels), cfg.label_family
    )
    # each visible label is put at its event's row (numbered by ROW in the label join): no
    # second join of all the events
    rows = latest[ROW].to_numpy()
    # the label as the frame keeps it (intake allowed only 0 and 1): an int64 column of every
    # event would be allocated only to be cast
    label, observed = latest["label"].cast(pl.Int8), latest["observed_time"]
    frame = events.with_columns(
        pl.repeat(None, events.height, dtype=values.dtype, eager=True)
        .scatter(rows, values)
        .alias(name)
        for values, name in ((label, "label"), (observed, LABEL_OBSERVED))
    )
    del latest
    maturity = label_maturity(frame, windows, late)
    frame = _apply_missing_label(frame, windows.missing_label)
    after = {s: r["len"] for s, r in by_split(frame, [pl.len()]).items()}
    excluded = {s: m.events - after.get(s, 0) for s, m in maturity.splits.items()}
    maturity = maturity.model_copy(
        update={
            "splits": {
                s: m.model_copy(update={"events_excluded_unlabeled": excluded[s]})
                for s, m in maturity.splits.items()
            }
        }
    )
    return frame, hidden, shown, gap, maturity


def _ttl(manifest: DatasetManifest) -> timedelta | None:
    return timedelta(seconds=manifest.ttl_seconds) if manifest.ttl_seconds else None


def _plan_frame(
    receipt: IntakeReceipt, inputs: FrameInputs, policy: GovernancePolicy
) -> _FramePlan:
    cfg, windows = receipt.config, receipt.windows
    # Intake refused these already; the frame builder checks again against the policy it runs
    # under, so no receipt (however made) gets a PII column read into a frame.
    check_no_pii(
        policy, [*cfg.entity_keys, *cfg.event_features], receipt.train_run_id, "event_features"
    )
    for entries in inputs.feature_groups.values():
        check_no_pii(policy, feature_columns(entries[0]), entries[0].uri, "columns")
    groups_cfg = cfg.feature_group_versions
    span = data_span(windows)
    key_columns = sorted({k for e in inputs.feature_groups.values() for k in e[0].manifest.keys})
    events_read: Future[pl.DataFrame] = Future()

    def prepare(sel: DatasetSelector) -> _Prepared:
        entries = inputs.feature_groups[sel.name]
        keys, features = entries[0].manifest.keys, feature_columns(entries[0])
        snapshots = _snapshots(
            entries, keys, features, span.end, allowed_times(policy, "available_at")
        )
        return _prepare_snapshots(snapshots, keys, features)

    ttls = {sel.name: _ttl(inputs.feature_groups[sel.name][0].manifest) for sel in groups_cfg}

    def match(sel: DatasetSelector, prepared: Future[_Prepared]) -> _GroupPlan:
        keys = inputs.feature_groups[sel.name][0].manifest.keys
        return _match_group(events_read.result(), prepared.result(), keys, ttls[sel.name])

    # Two worker threads read and index every group's snapshots (while this thread reads the
    # events), then match them to the events (while this thread settles the labels, and then
    # gathers the groups already matched): none of these needs another's result but the events,
    # and numpy and Polars release the GIL. Tasks run in the order submitted, so all reads come
    # before any match.
    pool = ThreadPoolExecutor(max_workers=2)
    try:
        prepared = [pool.submit(prepare, sel) for sel in groups_cfg]
        planned = [pool.submit(match, sel, p) for sel, p in zip(groups_cfg, prepared, strict=True)]
        try:
            events = _events(inputs, receipt)
        except BaseException as error:
            events_read.set_exception(error)
            raise
        base = events.select(*key_columns, "event_time")
        events_read.set_result(base)
        labelled = _labelled(events.with_row_index(ROW), inputs, cfg, windows)
        frame, hidden, shown, gap, maturity = labelled
        sources = [p.result().source for p in prepared]
    except BaseException:
        pool.shutdown(wait=True, cancel_futures=True)
        raise
    # the matches still running finish in the pool's threads, which then exit
    pool.shutdown(wait=False)
    del events, prepared
    # the missing-label rule excluded events: each match keeps the rows kept
    kept = None
    if frame.height != base.height:
        rows = frame[ROW].to_numpy()
        kept = (rows, _epoch_us(base["event_time"])[rows])
    del base
    frame = frame.drop(ROW)

    schema: list[FeatureSpec] = [
        FeatureSpec(name=c, dtype=str(frame.schema[c]), source="event") for c in cfg.event_features
    ]
    groups: list[GroupJoin] = []
    # entity keys and the label cut have served: drop them so their memory can go
    frame = frame.drop(
        [c for c in [*key_columns, "label_cut"] if c not in {*ID_COLUMNS, *cfg.event_features}]
    )
    plans = []
    for sel, future, source in zip(groups_cfg, planned, sources, strict=True):
        entry = inputs.feature_groups[sel.name][0]
        features = feature_columns(entry)
        plans.append((sel.name, _Matching(future, kept), features))
        columns = [group_feature(sel.name, f) for f in features]
        groups.append(
            GroupJoin(sel.name, sel.version, entry.manifest.keys, ttls[sel.name], columns)
        )
        schema += [
            FeatureSpec(
                name=c,
                dtype=str(source.schema[f]),
                source=f"feature_group:{sel.name}/{sel.version}",
            )
            for c, f in zip(columns, features, strict=True)
        ]
    del planned, sources

    label_columns = {c for e in inputs.labels for c in e.manifest.column_names()} - {"event_id"}
    return _FramePlan(
        rows=frame,
        plans=plans,
        groups=groups,
        schema=schema,
        audit_inputs={
            "windows": windows,
            "policy": policy,
            "label_columns": label_columns,
            "hidden": hidden,
            "shown": shown,
            "gap": gap,
            "maturity": maturity,
            "seed": cfg.evaluation.shuffled_label_canary.seed,
        },
    )


def build_training_frame(
    receipt: IntakeReceipt, inputs: FrameInputs, policy: GovernancePolicy
) -> TrainingFrame:
    """The frame of one train run: event id, split, label, event and feature-group features,
    with its leakage audit measured on the rows it holds."""
    plan = _plan_frame(receipt, inputs, policy)
    frame = plan.rows
    while plan.plans:  # attach group by group, releasing each group's snapshots once attached
        name, matching, features = plan.plans.pop(0)
        frame = _attach(frame, matching.get(), features, name)
        del matching
    audit = plan.audit(frame)
    return TrainingFrame(
        frame=_finished(frame.select(*ID_COLUMNS, *plan.names)),
        audit=audit,
        feature_schema=plan.schema,
    )


@dataclass(frozen=True)
class WrittenFrame:
    """A frame built straight to a parquet file (streaming mode), with its audit."""

    path: str
    audit: LeakageAudit
    feature_schema: list[FeatureSpec]
    rows: dict[str, int]
    positives: dict[str, int]


def write_training_frame(
    receipt: IntakeReceipt,
    inputs: FrameInputs,
    policy: GovernancePolicy,
    path: str,
    *,
    chunk_rows: int = 8 * FRAME_ROW_GROUP,
) -> WrittenFrame:
    """Build the frame to a local parquet file without holding its features in memory.

    The narrow rows and the per-group match indices are in memory (a few int64 columns per
    event); the features are gathered ``chunk_rows`` at a time and written in the frame's fixed
    row groups, so the file is byte-identical to ``frame_to_parquet`` of the in-memory build.
    The evidence columns go, row-aligned, to a temporary file beside it; the audit scans both
    side by side (each rule reads only its columns).
    """
    plan = _plan_frame(receipt, inputs, policy)
    rows, positives = plan.counts()
    columns = [*ID_COLUMNS, *plan.names]
    evidence_path = f"{path}.evidence.partial"
    evidence: list[pq.ParquetWriter] = []

    def chunks() -> Iterator[pl.DataFrame]:
        for start in range(0, max(plan.rows.height, 1), chunk_rows):
            chunk = plan.gather(start, chunk_rows)
            table = chunk.drop(columns).to_arrow()
            if not evidence:
                evidence.append(pq.ParquetWriter(evidence_path, table.schema, compression="lz4"))
            evidence[0].write_table(table)
            yield _finished(chunk.select(columns))

    try:
        try:
            schema = _finished(plan.gather(0, 0).select(columns)).schema
            _sink_frame(chunks(), schema, path)
        finally:
            for writer in evidence:
                writer.close()
        plan.plans.clear()  # the snapshots have served
        frame = pl.concat([scan_files([path]), scan_files([evidence_path])], how="horizontal")
        # batch by batch: the two files are read side by side, so no filter can be pushed
        # into one of them, and the in-memory engine would load every column a rule reads
        with pl.Config(engine_affinity="streaming"):
            audit = plan.audit(frame)
    except BaseException:
        Path(path).unlink(missing_ok=True)
        raise
    finally:
        Path(evidence_path).unlink(missing_ok=True)
    return WrittenFrame(path, audit, plan.schema, rows, positives)


def build_frame_file(
    receipt: IntakeReceipt,
    inputs: FrameInputs,
    policy: GovernancePolicy,
    path: str,
    *,
    streaming: bool,
) -> WrittenFrame:
    """The frame as a local parquet file, streamed (``write_training_frame``) or built in memory
    and then written; the file's bytes are the same either way."""
    if streaming:
        return write_training_frame(receipt, inputs, policy, path)
    built = build_training_frame(receipt, inputs, policy)
    try:
        write_frame(built.frame, path)
    except BaseException:
        Path(path).unlink(missing_ok=True)
        raise
    rows, positives = split_counts(built.frame)
    return WrittenFrame(path, built.audit, built.feature_schema, rows, positives)


def _parquet_options() -> dict:
    # read when called: tests shrink FRAME_ROW_GROUP to make chunks straddle row groups
    return {"compression": "zstd", "statistics": True, "row_group_size": FRAME_ROW_GROUP}


def write_frame(frame: pl.DataFrame, sink: str | BinaryIO) -> None:
    """A whole frame as parquet, in the frame's fixed row groups of ``FRAME_ROW_GROUP`` rows.

    Polars' writer, not pyarrow's: it encodes the columns on every core (about 1.7x faster on
    a frame of 2M rows and 65 columns, where pyarrow's single-threaded encoding took most of
    the frame stage). ``_sink_frame`` writes the same bytes from chunks."""
    frame.write_parquet(sink, **_parquet_options())


def _sink_frame(chunks: Iterator[pl.DataFrame], schema: pl.Schema, path: str) -> None:
    """Frame rows, chunk by chunk as they are built, to a parquet file: the same bytes as
    ``write_frame`` of their concatenation, however they were chunked (Polars' streaming sink
    cuts the same row groups and encodes them as its in-memory writer does)."""
    pulled: list[bool] = []

    def source(with_columns, predicate, n_rows, batch_size) -> Iterator[pl.DataFrame]:
        # chunks are built (and their evidence written) as they are read: only once, whole
        if pulled or predicate is not None or n_rows is not None:
            raise RuntimeError("the frame's chunks are read once, whole")
        pulled.append(True)
        for chunk in chunks:
            yield chunk if with_columns is None else chunk.select(with_columns)

    # an error raised while a chunk is built reaches the caller as itself
    register_io_source(source, schema=schema).sink_parquet(path, **_parquet_options())


def frame_to_parquet(frame: pl.DataFrame) -> bytes:
    """Parquet bytes; the same frame gives the same bytes (content-addressed storage)."""
    buf = io.BytesIO()
    write_frame(frame, buf)
    return buf.getvalue()


def frame_from_parquet(data: bytes) -> pl.DataFrame:
    return pl.read_parquet(io.BytesIO(data))


def check_frame_schema(frame: pl.DataFrame, schema: list[FeatureSpec], source: str) -> None:
    """The frame has exactly the id columns plus the declared features, with declared dtypes."""
    expected = [*ID_COLUMNS, *(f.name for f in schema)]
    if frame.columns != expected:
        raise SchemaMismatchError(
            f"frame columns {frame.columns} differ from declared {expected}",
            source=source,
            field="feature_schema",
        )
    for f in schema:
        if str(frame.schema[f.name]) != f.dtype:
            raise SchemaMismatchError(
                f"'{f.name}' is {frame.schema[f.name]}, declared {f.dtype}",
                source=source,
                field=f"feature_schema.{f.name}",
            )
