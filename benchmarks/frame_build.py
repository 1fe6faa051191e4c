"""Benchmark of the training-frame build against what a user would otherwise pick (issue 3).

    .venv/bin/python benchmarks/frame_build.py --events 1000000 [--events 3000000 ...]
        [--methods factory,duckdb_asof,polars_join_asof,pandas_merge_asof,feast_style,
                   feast_offline_store,read_and_sort,read_and_sort_by_key]
        [--workdir /tmp/mf_frame_bench] [--repeat 3]

Not a test: it prints a table. Per size it writes (once, cached in the workdir) the same parquet
inputs for every method: N events over the windows of one weekly partition (default split
policy: 28 + 7 + 7 days and a 7-day maturity gap), labels with observed times (latest visible
before each split's cut wins; some after the cut; reversals), and three feature groups on
different entity keys (customer, terminal, device), each with 20 float32 features (2% null) and
2-5 snapshots per entity, two of them with a TTL.

Each method runs in its own subprocess (peak RSS is the subprocess's own ``ru_maxrss`` when the
frame is built, imports included; the clock starts after imports and stops when the frame is in
memory) and builds the same frame:
the events of the three splits with split, label and every feature as of ``available_at <=
event_time`` within the TTL. A checksum of the rows and values (sorted by event_id, a hash per
row) must be the same for all, or the run is marked MISMATCH. With --repeat N the methods run
in N rounds (each once per round) and the median run of each counts; the table then also gives
each method's time over the factory's of the same round, as the median and range over the
rounds (a drift of the machine's speed between rounds cancels out of that ratio).

  factory            model_factory.core.frames.build_training_frame (intake not timed), including
                     its leakage audit, label maturity and evidence columns
  factory_to_file    factory, then the frame written to parquet (what the frame stage does in
                     memory mode): the peer of factory_streaming
  factory_streaming  model_factory.core.frames.write_training_frame: the same frame built in
                     streaming mode straight to a parquet file (the write is timed too)
  duckdb_asof        DuckDB SQL: ASOF LEFT JOIN per group, labels by arg_max
  polars_join_asof   Polars lazy: join_asof(by=entity) per group on a time-sorted right side
  pandas_merge_asof  pandas merge_asof(by=entity) per group
  feast_style        the point-in-time join of Feast's local offline store in pandas: merge on
                     the entity, keep snapshots in [event_time - ttl, event_time], latest per
                     event (rows without one are kept with nulls, unlike Feast)
  feast_offline_store  the real Feast 0.67, offline store "file" (its dask store, DaskOfflineStore):
                     get_historical_features, in its own venv (`make bench-feast`); it drops every
                     event whose entity has snapshots but none in [event_time - ttl, event_time]
                     (most of them here): its checksum differs, and the parent checks that the
                     factory's frame cut to Feast's event ids gives Feast's checksum ("other
                     rows; the factory's values on them", else MISMATCH)
  read_and_sort      only reads every input and sorts events by time and snapshots by entity
  read_and_sort_by_key  reads every input and sorts what a sort-based as-of join sorts: the
                     events by (key, event_time) for each of the three keys, each group's
                     snapshots by (key, available_at), the labels by (event_id, observed_time)
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import time
from datetime import timedelta
from pathlib import Path

import numpy as np

PARTITION = "2026-03-02"
GROUPS = {  # name: (key, entities per event, ttl)
    "customer": ("customer_id", 1 / 20, timedelta(days=7)),
    "terminal": ("terminal_id", 1 / 100, None),
    "device": ("device_id", 1 / 40, timedelta(days=3)),
}
FEATURES = [f"f{i:02d}" for i in range(20)]
METHODS = [
    "factory",
    "factory_streaming",
    "duckdb_asof",
    "polars_join_asof",
    "pandas_merge_asof",
    "feast_style",
    "feast_offline_store",
    "read_and_sort",
    "read_and_sort_by_key",
]
# Feast lives in its own venv (its pins could clash with dagster's): `make bench-feast`
FEAST_PYTHON = Path(__file__).resolve().parents[1] / ".venv-feast" / "bin" / "python"
DAY_US = 86_400 * 1_000_000


# ---------------------------------------------------------------------------------- the data


_WINDOWS = None  # set in a child whose venv has no model_factory (--windows from the parent)


def windows():
    if _WINDOWS is not None:
        return _WINDOWS
    from model_factory.contracts import SplitPolicy
    from model_factory.core.windows import resolve_windows

    return resolve_windows(PARTITION, SplitPolicy())


def windows_to_json(w) -> str:
    """What the runners use of the windows, for a child without model_factory (Feast's venv)."""
    spans = {"train": w.train_window, **w.eval_windows}
    return json.dumps(
        {
            "cut": w.cut.isoformat(),
            "train_cut": w.train_cut.isoformat(),
            "windows": {
                s: [win.start.isoformat(), win.end.isoformat()] for s, win in spans.items()
            },
        }
    )


def windows_from_json(text: str):
    from datetime import datetime
    from types import SimpleNamespace

    raw = json.loads(text)
    span = {
        s: SimpleNamespace(start=datetime.fromisoformat(a), end=datetime.fromisoformat(b))
        for s, (a, b) in raw["windows"].items()
    }
    return SimpleNamespace(
        cut=datetime.fromisoformat(raw["cut"]),
        train_cut=datetime.fromisoformat(raw["train_cut"]),
        train_window=span.pop("train"),
        eval_windows=span,
    )


def _us(t) -> int:
    return int(t.timestamp()) * 1_000_000


def generate(folder: Path, n: int, seed: int = 11) -> None:
    """The parquet inputs and a catalog of manifests over them (skipped when present)."""
    import polars as pl

    from model_factory.core.manifests import Catalog, create_manifest

    if (folder / "done").exists():
        return
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    w = windows()
    lo, hi = _us(w.train_window.start) - 2 * DAY_US, _us(w.cut)
    utc = pl.Datetime("us", "UTC")
    t = np.sort(rng.integers(lo, hi, n))
    events = {"event_id": np.arange(n, dtype=np.int64), "event_time": t}
    for key, share, _ in GROUPS.values():
        events[key] = rng.integers(0, max(1, int(n * share)), n)
    events["amount"] = np.round(rng.lognormal(3.5, 1.0, n), 2)
    pl.DataFrame(events).with_columns(pl.col("event_time").cast(utc)).write_parquet(
        folder / "events.parquet"
    )

    fraud = np.nonzero(rng.random(n) < 0.02)[0]
    observed = t[fraud] + DAY_US + rng.exponential(7 * DAY_US, fraud.size).astype(np.int64)
    reversed_ = rng.random(fraud.size) < 0.1
    ids = np.concatenate([fraud, fraud[reversed_]])
    obs = np.concatenate(
        [observed, observed[reversed_] + rng.integers(1, 5 * DAY_US, int(reversed_.sum()))]
    )
    value = np.concatenate(
        [np.ones(fraud.size, np.int64), np.zeros(int(reversed_.sum()), np.int64)]
    )
    pl.DataFrame(
        {
            "event_id": ids,
            "label_family": ["fraud"] * ids.size,
            "label_value": value,
            "observed_time": obs,
        }
    ).with_columns(pl.col("observed_time").cast(utc)).sort("observed_time").write_parquet(
        folder / "labels.parquet"
    )

    snap_lo, snap_hi = _us(w.train_window.start) - 10 * DAY_US, _us(w.eval_windows["test"].end)
    for name, (key, share, _) in GROUPS.items():
        entities = max(1, int(n * share))
        per = rng.integers(2, 6, entities)
        k = np.repeat(np.arange(entities), per)
        avail = rng.integers(snap_lo, snap_hi, k.size)
        frame = pl.DataFrame({key: k, "available_at": avail}).unique(
            [key, "available_at"], keep="first", maintain_order=True
        )
        m = frame.height
        cols = {
            f: pl.Series(rng.normal(0, 1, m).astype(np.float32)).set(
                pl.Series(rng.random(m) < 0.02), None
            )
            for f in FEATURES
        }
        frame = frame.with_columns(
            valid_from=pl.col("available_at") - pl.Series(rng.integers(0, 6 * 3_600_000_000, m)),
            **cols,
        ).with_columns(pl.col("available_at", "valid_from").cast(utc))
        frame.select(key, "valid_from", "available_at", *FEATURES).sort(
            "available_at"
        ).write_parquet(folder / f"{name}.parquet")

    catalog = Catalog(str(folder / "catalog"))
    specs = [
        ("events", "bench_events", "events.parquet", ["event_id"], {}),
        ("labels", "bench_labels", "labels.parquet", ["event_id"], {"label_family": "fraud"}),
    ]
    specs += [
        (
            "feature_group",
            name,
            f"{name}.parquet",
            [key],
            {
                "valid_from_column": "valid_from",
                "ttl_seconds": int(ttl.total_seconds()) if ttl else None,
            },
        )
        for name, (key, _, ttl) in GROUPS.items()
    ]
    for kind, name, file, keys, extra in specs:
        catalog.write(
            create_manifest(
                [str(folder / file)], kind=kind, name=name, version="v1", keys=keys, **extra
            )
        )
    (folder / "done").write_text("ok")


def bench_config():
    from model_factory.contracts import DatasetSelector, TrainingConfig

    return TrainingConfig(
        events=DatasetSelector(name="bench_events", version="v1"),
        event_features=["amount"],
        entity_keys=[key for key, _, _ in GROUPS.values()],
        feature_group_versions=[DatasetSelector(name=g, version="v1") for g in GROUPS],
        labels=DatasetSelector(name="bench_labels", version="v1"),
        label_family="fraud",
    )


# ------------------------------------------------------------------------------- the methods


def run_factory(folder: Path):
    from model_factory.contracts import GovernancePolicy
    from model_factory.core.frames import build_training_frame
    from model_factory.core.intake import intake
    from model_factory.core.manifests import Catalog

    # the inputs lie next to the catalog, not inside it: the policy names their folder
    policy = GovernancePolicy(data_roots=[str(folder)])
    receipt, inputs = intake(Catalog(str(folder / "catalog")), bench_config(), PARTITION, policy)
    started = time.perf_counter()
    built = build_training_frame(receipt, inputs, policy)
    seconds = time.perf_counter() - started
    assert built.audit.passed, built.audit.violations
    return built.frame, seconds


def run_factory_to_file(folder: Path):
    """The in-memory build followed by writing the frame's parquet, as the frame stage does."""
    from model_factory.core.frames import write_frame

    frame, seconds = run_factory(folder)
    out = folder / "memory_frame.parquet"
    started = time.perf_counter()
    write_frame(frame, str(out))
    return out, seconds + time.perf_counter() - started


def run_factory_streaming(folder: Path):
    """The streaming build (issue 8): features gathered in chunks straight to a parquet file."""
    from model_factory.contracts import GovernancePolicy
    from model_factory.core.frames import write_training_frame
    from model_factory.core.intake import intake
    from model_factory.core.manifests import Catalog

    # the inputs lie next to the catalog, not inside it: the policy names their folder
    policy = GovernancePolicy(data_roots=[str(folder)])
    receipt, inputs = intake(Catalog(str(folder / "catalog")), bench_config(), PARTITION, policy)
    out = folder / "streamed_frame.parquet"
    started = time.perf_counter()
    written = write_training_frame(receipt, inputs, policy, str(out))
    seconds = time.perf_counter() - started
    assert written.audit.passed, written.audit.violations
    return out, seconds


def _split_sql(w) -> str:
    parts = [
        f"WHEN event_time >= '{win.start.isoformat()}'::TIMESTAMPTZ AND event_time < "
        f"'{win.end.isoformat()}'::TIMESTAMPTZ THEN '{s}'"
        for s, win in (("train", w.train_window), *w.eval_windows.items())
    ]
    return "CASE " + " ".join(parts) + " END"


def run_duckdb(folder: Path):
    import duckdb

    w = windows()
    con = duckdb.connect()
    con.execute("SET TimeZone = 'UTC'")
    started = time.perf_counter()
    joins, cols = [], []
    for name, (key, _, ttl) in GROUPS.items():
        fresh = (
            f"e.event_time - {name}.available_at <= INTERVAL {int(ttl.total_seconds())} SECONDS"
            if ttl
            else "TRUE"
        )
        joins.append(
            f"ASOF LEFT JOIN read_parquet('{folder / name}.parquet') AS {name} "
            f"ON e.{key} = {name}.{key} AND e.event_time >= {name}.available_at"
        )
        cols += [f"CASE WHEN {fresh} THEN {name}.{f} END AS {name}__{f}" for f in FEATURES]
    query = f"""
        WITH ev AS (
            SELECT * FROM (SELECT *, {_split_sql(w)} AS split
                           FROM read_parquet('{folder}/events.parquet'))
            WHERE split IS NOT NULL),
        lab AS (
            SELECT l.event_id,
                   arg_max(l.label_value, epoch_us(l.observed_time) * 2 + l.label_value) AS label
            FROM read_parquet('{folder}/labels.parquet') AS l JOIN ev USING (event_id)
            WHERE l.label_family = 'fraud' AND l.observed_time < CASE WHEN ev.split = 'test'
                THEN '{w.cut.isoformat()}'::TIMESTAMPTZ ELSE '{w.train_cut.isoformat()}'::TIMESTAMPTZ END
            GROUP BY l.event_id)
        SELECT e.event_id, e.event_time, e.split, coalesce(lab.label, 0)::TINYINT AS label,
               e.amount, {", ".join(cols)}
        FROM ev AS e LEFT JOIN lab USING (event_id) {" ".join(joins)}"""
    table = con.sql(query).to_arrow_table()
    return table, time.perf_counter() - started


def _polars_labels(events, labels, w):
    import polars as pl

    cut = pl.when(pl.col("split") == "test").then(pl.lit(w.cut)).otherwise(pl.lit(w.train_cut))
    return (
        labels.filter(pl.col("label_family") == "fraud")
        .join(events.select("event_id", "split"), on="event_id")
        .filter(pl.col("observed_time") < cut)
        .sort("event_id", "observed_time", "label_value")
        .group_by("event_id")
        .agg(label=pl.col("label_value").last())
    )


def _polars_split(w):
    import polars as pl

    expr = pl.lit(None, dtype=pl.String)
    for s, win in (("train", w.train_window), *w.eval_windows.items()):
        t = pl.col("event_time")
        expr = pl.when((t >= win.start) & (t < win.end)).then(pl.lit(s)).otherwise(expr)
    return expr


def run_polars(folder: Path):
    import polars as pl

    w = windows()
    started = time.perf_counter()
    events = (
        pl.scan_parquet(folder / "events.parquet")
        .with_columns(split=_polars_split(w))
        .filter(pl.col("split").is_not_null())
    )
    frame = (
        events.join(
            _polars_labels(events, pl.scan_parquet(folder / "labels.parquet"), w),
            on="event_id",
            how="left",
        )
        .with_columns(pl.col("label").fill_null(0).cast(pl.Int8))
        .sort("event_time")
    )
    for name, (key, _, ttl) in GROUPS.items():
        right = (
            pl.scan_parquet(folder / f"{name}.parquet")
            .drop("valid_from")
            .rename({f: f"{name}__{f}" for f in FEATURES} | {"available_at": "__a"})
            .sort("__a")
        )
        frame = frame.join_asof(
            right,
            left_on="event_time",
            right_on="__a",
            by=key,
            strategy="backward",
            check_sortedness=False,
        )
        if ttl is not None:
            stale = pl.col("event_time") - pl.col("__a") > ttl
            frame = frame.with_columns(
                pl.when(stale).then(None).otherwise(pl.col(f"{name}__{f}")).alias(f"{name}__{f}")
                for f in FEATURES
            )
        frame = frame.drop("__a")
    out = frame.collect()
    return out, time.perf_counter() - started


def _pandas_events(folder: Path, w):
    import pandas as pd

    events = pd.read_parquet(folder / "events.parquet")
    split = np.full(len(events), None, dtype=object)
    t = events["event_time"]
    for s, win in (("train", w.train_window), *w.eval_windows.items()):
        split[((t >= win.start) & (t < win.end)).to_numpy()] = s
    events["split"] = split
    events = events[events["split"].notna()]
    labels = pd.read_parquet(folder / "labels.parquet")
    labels = labels[labels["label_family"] == "fraud"].merge(
        events[["event_id", "split"]], on="event_id"
    )
    cut = labels["split"].map(
        {
            "train": pd.Timestamp(w.train_cut),
            "val": pd.Timestamp(w.train_cut),
            "test": pd.Timestamp(w.cut),
        }
    )
    labels = labels[labels["observed_time"] < cut]
    latest = labels.sort_values(["event_id", "observed_time", "label_value"]).drop_duplicates(
        "event_id", keep="last"
    )[["event_id", "label_value"]]
    events = events.merge(latest, on="event_id", how="left")
    events["label"] = events.pop("label_value").fillna(0).astype("int8")
    return events.sort_values("event_time", kind="stable")


def run_pandas(folder: Path):
    import pandas as pd

    w = windows()
    started = time.perf_counter()
    frame = _pandas_events(folder, w)
    for name, (key, _, ttl) in GROUPS.items():
        right = (
            pd.read_parquet(folder / f"{name}.parquet")
            .drop(columns="valid_from")
            .rename(columns={f: f"{name}__{f}" for f in FEATURES} | {"available_at": "__a"})
            .sort_values("__a", kind="stable")
        )
        frame = pd.merge_asof(
            frame,
            right,
            left_on="event_time",
            right_on="__a",
            by=key,
            direction="backward",
            allow_exact_matches=True,
        )
        if ttl is not None:
            stale = (frame["event_time"] - frame["__a"]) > ttl
            frame.loc[stale, [f"{name}__{f}" for f in FEATURES]] = np.nan
        frame = frame.drop(columns="__a")
    return frame, time.perf_counter() - started


def run_feast_style(folder: Path):
    import pandas as pd

    w = windows()
    started = time.perf_counter()
    frame = _pandas_events(folder, w)
    for name, (key, _, ttl) in GROUPS.items():
        right = (
            pd.read_parquet(folder / f"{name}.parquet")
            .drop(columns="valid_from")
            .rename(columns={f: f"{name}__{f}" for f in FEATURES} | {"available_at": "__a"})
        )
        # Feast's local store: join every snapshot of the entity, keep those inside
        # [event_time - ttl, event_time], then the latest per entity row.
        cand = frame[["event_id", key, "event_time"]].merge(right, on=key, how="inner")
        keep = cand["__a"] <= cand["event_time"]
        if ttl is not None:
            keep &= cand["__a"] >= cand["event_time"] - ttl
        cand = (
            cand[keep]
            .sort_values(["event_id", "__a"])
            .drop_duplicates("event_id", keep="last")
            .drop(columns=[key, "event_time", "__a"])
        )
        frame = frame.merge(cand, on="event_id", how="left")  # Feast drops these rows; we keep them
        del cand
    return frame, time.perf_counter() - started


def run_feast_offline_store(folder: Path):
    """The real Feast (0.67, in .venv-feast): a feature repo made here, its dask offline store."""
    import tempfile

    from feast import Entity, FeatureStore, FeatureView, Field, FileSource, RepoConfig, ValueType
    from feast.infra.offline_stores.dask import DaskOfflineStoreConfig
    from feast.infra.online_stores.sqlite import SqliteOnlineStoreConfig
    from feast.repo_config import RegistryConfig
    from feast.types import Float32, Int64

    w = windows()
    with tempfile.TemporaryDirectory(prefix="mf_feast_") as repo:
        store = FeatureStore(
            config=RepoConfig(
                project="frame_bench",
                provider="local",
                registry=RegistryConfig(registry_type="file", path=f"{repo}/registry.db"),
                offline_store=DaskOfflineStoreConfig(type="file"),  # "file" = the dask store
                online_store=SqliteOnlineStoreConfig(path=f"{repo}/online.db"),
                entity_key_serialization_version=3,
                repo_path=Path(repo),
            )
        )
        objects = []
        for name, (key, _, ttl) in GROUPS.items():
            entity = Entity(name=key, join_keys=[key], value_type=ValueType.INT64)
            source = FileSource(
                name=f"{name}_source",
                path=str(folder / f"{name}.parquet"),
                timestamp_field="available_at",
                # no created_timestamp_column: the inputs have no two snapshots with one (key,
                # available_at), and on such ties Feast 0.67's dask store did not keep the latest
                # created timestamp reliably (46% of 20,000 tied entities in a test: its second
                # sort, by timestamp_field, is not stable), so "valid_from" (the factory's
                # tiebreak) would only cost a sort here (~1 s of ~10 s at 1M events)
            )
            view = FeatureView(
                name=name,
                entities=[entity],
                ttl=ttl or timedelta(0),  # Feast: a ttl of 0 is no TTL
                schema=[Field(name=key, dtype=Int64)]
                + [Field(name=f, dtype=Float32) for f in FEATURES],
                source=source,
                online=False,
            )
            objects += [entity, view]
        store.apply(objects)  # setup, like the factory's intake: not timed

        started = time.perf_counter()
        entity_df = _pandas_events(folder, w).rename(columns={"event_time": "event_timestamp"})
        frame = store.get_historical_features(
            entity_df=entity_df,
            features=[f"{g}:{f}" for g in GROUPS for f in FEATURES],
            full_feature_names=True,  # customer__f00, as the other methods name them
        ).to_df()
        seconds = time.perf_counter() - started
    return frame.rename(columns={"event_timestamp": "event_time"}), seconds


def run_read_and_sort(folder: Path):
    import polars as pl

    started = time.perf_counter()
    events = pl.read_parquet(folder / "events.parquet").sort("event_time", "event_id")
    labels = pl.read_parquet(folder / "labels.parquet")
    snaps = [
        pl.read_parquet(folder / f"{g}.parquet").sort(key, "available_at")
        for g, (key, _, _) in GROUPS.items()
    ]
    seconds = time.perf_counter() - started
    return (events, labels, snaps), seconds


def run_read_and_sort_by_key(folder: Path):
    """What a sort-based as-of join has to sort, all of it alive when the clock stops."""
    import polars as pl

    started = time.perf_counter()
    events = pl.read_parquet(folder / "events.parquet")
    by_key = [events.sort(key, "event_time") for key, _, _ in GROUPS.values()]
    labels = pl.read_parquet(folder / "labels.parquet").sort("event_id", "observed_time")
    snaps = [
        pl.read_parquet(folder / f"{g}.parquet").sort(key, "available_at")
        for g, (key, _, _) in GROUPS.items()
    ]
    seconds = time.perf_counter() - started
    return (events, by_key, labels, snaps), seconds


RUNNERS = {
    "factory": run_factory,
    "factory_to_file": run_factory_to_file,
    "factory_streaming": run_factory_streaming,
    "duckdb_asof": run_duckdb,
    "polars_join_asof": run_polars,
    "pandas_merge_asof": run_pandas,
    "feast_style": run_feast_style,
    "feast_offline_store": run_feast_offline_store,
    "read_and_sort": run_read_and_sort,
    "read_and_sort_by_key": run_read_and_sort_by_key,
}


def canonical(result):
    """The frame as one polars DataFrame in canonical types, sorted by event_id (None: no frame)."""
    import polars as pl

    if isinstance(result, tuple):  # read_and_sort(_by_key) builds no frame
        return None
    if isinstance(result, Path):  # a frame written to a file (streaming mode)
        frame = pl.read_parquet(result)
        result.unlink()
    elif isinstance(result, pl.DataFrame):
        frame = result
    elif type(result).__module__.startswith("pandas"):
        frame = pl.from_pandas(result)
    else:
        frame = pl.from_arrow(result)
    assert isinstance(frame, pl.DataFrame)
    features = [f"{g}__{f}" for g in GROUPS for f in FEATURES]
    return frame.select(
        pl.col("event_id").cast(pl.Int64),
        pl.col("event_time").dt.convert_time_zone("UTC").dt.epoch("us"),
        pl.col("split").cast(pl.String),
        pl.col("label").cast(pl.Int64),
        pl.col("amount").cast(pl.Float64),
        *(pl.col(c).cast(pl.Float32).fill_nan(None) for c in features),
    ).sort("event_id")


def digest(canon) -> str:
    """A digest of every value, independent of row order and of the source library (but not of
    the polars release: rows are hashed with hash_rows)."""
    hashes = canon.hash_rows(seed=1).to_numpy()
    weights = np.arange(1, hashes.size + 1, dtype=np.uint64)
    return f"{int(np.sum(hashes * weights, dtype=np.uint64)):016x}"


def child(method: str, folder: Path, keep: Path | None = None) -> None:
    result, seconds = RUNNERS[method](folder)
    # the high-water mark of the build, before the checksum copies anything
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    canon = canonical(result)
    rows, value_digest = (result[0].height, "-") if canon is None else (canon.height, digest(canon))
    if keep is not None and canon is not None:  # for the parent's checks (see compare_kept)
        canon.write_parquet(keep)
    print(
        json.dumps(
            {
                "method": method,
                "seconds": seconds,
                "rows": rows,
                "checksum": value_digest,
                "peak_rss_bytes": peak,
            }
        )
    )


# ----------------------------------------------------------------------------------- driver


def measure(method: str, folder: Path, timeout: float, keep: Path | None = None) -> dict:
    cmd = [sys.executable, __file__, "--child", method, "--data", str(folder)]
    if keep is not None:
        cmd += ["--keep", str(keep)]
    if method == "feast_offline_store":  # Feast's own venv, which has no model_factory
        if not FEAST_PYTHON.exists():
            return {"method": method, "error": f"no {FEAST_PYTHON}: run `make bench-feast`"}
        cmd[0] = str(FEAST_PYTHON)
        cmd += ["--windows", windows_to_json(windows())]
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=False)
    except subprocess.TimeoutExpired:
        return {"method": method, "error": f"timeout after {timeout:.0f}s"}
    if out.returncode != 0:
        tail = (out.stderr.strip().splitlines() or ["?"])[-1]
        return {"method": method, "error": f"exit {out.returncode}: {tail[:120]}"}
    return json.loads(out.stdout.strip().splitlines()[-1])


KEPT = ("factory", "feast_offline_store")


def compare_kept(results: list[dict], kept: dict[str, Path]) -> None:
    """Feast's frame against the factory's, both digested here (one polars release): its
    checksum, and whether the factory's frame cut to Feast's event ids gives the same one."""
    import polars as pl

    frames = {m: pl.read_parquet(path) for m, path in kept.items() if path.exists()}
    for path in kept.values():
        path.unlink(missing_ok=True)
    if len(frames) < len(kept):  # a method failed, or was not run (factory left out)
        return
    ours, theirs = frames["factory"], frames["feast_offline_store"]
    feast = next(r for r in results if r["method"] == "feast_offline_store")
    feast["checksum"] = digest(theirs)
    cut = ours.filter(pl.col("event_id").is_in(theirs["event_id"].implode()))
    feast["same_on_its_rows"] = cut.height == theirs.height and digest(cut) == feast["checksum"]


def round_ratios(mine: list[dict], factory: list[dict]) -> list[float]:
    """Per round where both ran, this method's seconds over the factory's, sorted."""
    return sorted(
        round(m["seconds"] / f["seconds"], 3)
        for m, f in zip(mine, factory, strict=False)
        if "seconds" in m and "seconds" in f
    )


def table(n: int, results: list[dict]) -> str:
    ours = next((r for r in results if r["method"] == "factory" and "seconds" in r), None)
    reference = next(
        (r["checksum"] for r in results if r["method"] == "factory" and "checksum" in r), None
    )
    lines = [
        f"\n{n:,} events",
        "| method | seconds | events/s | peak RSS GiB | vs factory | same round: median (range)"
        " | rows | checksum |",
        "|---|---:|---:|---:|---:|---:|---:|---|",
    ]
    for r in results:
        if "error" in r:
            lines.append(f"| {r['method']} | - | - | - | - | - | - | {r['error']} |")
            continue
        ratio = f"{r['seconds'] / ours['seconds']:.2f}x" if ours else "-"
        paired = r.get("round_ratios") or []
        per_round = (
            f"{statistics.median(paired):.2f}x ({paired[0]:.2f}-{paired[-1]:.2f}, {len(paired)} rounds)"
            if len(paired) > 1
            else "-"
        )
        if r["checksum"] == "-":
            same = "(no frame)"
        elif reference is None:
            same = "(no factory run to compare with)"
        else:
            same = "same" if r["checksum"] == reference else "MISMATCH"
        if same == "MISMATCH" and r.get("same_on_its_rows"):
            same = "other rows; the factory's values on them"
        lines.append(
            f"| {r['method']} | {r['seconds']:.2f} | {n / r['seconds']:,.0f} | "
            f"{r['peak_rss_bytes'] / 2**30:.2f} | {ratio} | {per_round} | {r['rows']:,} | {same} |"
        )
    return "\n".join(lines)


def _versions() -> str:
    """The releases a run measured (the checksum depends on Polars' too)."""
    from importlib.metadata import PackageNotFoundError, version

    found = []
    for package in ("polars", "pyarrow", "numpy", "pandas", "duckdb", "xgboost"):
        try:
            found.append(f"{package} {version(package)}")
        except PackageNotFoundError:
            found.append(f"{package} -")
    return ", ".join(found)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--events", type=int, action="append", help="events (repeatable)")
    parser.add_argument("--methods", default=",".join(METHODS))
    parser.add_argument("--workdir", default="/tmp/mf_frame_bench")
    parser.add_argument(
        "--repeat", type=int, default=1, help="runs per method; the median run counts"
    )
    parser.add_argument("--timeout", type=float, default=1800)
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--data", help=argparse.SUPPRESS)
    parser.add_argument("--windows", help=argparse.SUPPRESS)
    parser.add_argument("--keep", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        if args.windows:
            global _WINDOWS
            _WINDOWS = windows_from_json(args.windows)
        child(args.child, Path(args.data), Path(args.keep) if args.keep else None)
        return
    print(f"versions: {_versions()}", flush=True)
    for n in args.events or [1_000_000]:
        folder = Path(args.workdir) / f"n{n}"
        started = time.perf_counter()
        generate(folder, n)
        print(
            f"inputs for {n:,} events in {folder} ({time.perf_counter() - started:.0f}s)",
            flush=True,
        )
        results = []
        methods = args.methods.split(",")
        # Feast's frame has other rows (see the docstring): its rows are checked against the
        # factory's in this process (compare_kept), so both frames are kept in files
        kept = {m: folder / f"_kept_{m}.parquet" for m in KEPT if "feast_offline_store" in methods}
        # rounds: each method once per round, so that a drift of this machine's speed over the
        # minutes of a run (it moves by a third between hours here) hits every method alike
        # minutes of a run (it moves by a third between hours here) hits every method alike; the
        # order turns by one method each round, as a process can pay for the memory the process
        # before it freed
        runs: dict[str, list[dict]] = {m: [] for m in methods}
        for i in range(args.repeat):
            turn = i % len(methods)
            for method in methods[turn:] + methods[:turn]:
                runs[method].append(measure(method, folder, args.timeout, kept.get(method)))
        for method in methods:
            # the median run (seconds and its peak memory): runs vary by +-15% here, and the
            # best of N would flatter every method
            ok = sorted((r for r in runs[method] if "seconds" in r), key=lambda r: r["seconds"])
            median = ok[(len(ok) - 1) // 2] if ok else runs[method][-1]
            median["all_seconds"] = [round(r["seconds"], 2) for r in ok]
            median["seconds_by_round"] = [
                round(r.get("seconds", float("nan")), 2) for r in runs[method]
            ]
            median["max_peak_rss_bytes"] = max((r["peak_rss_bytes"] for r in ok), default=None)
            median["round_ratios"] = round_ratios(runs[method], runs.get("factory", []))
            print(f"  {method}: {json.dumps(median)}", flush=True)
            results.append(median)
        if len(kept) == len(KEPT):
            compare_kept(results, kept)
        print(table(n, results), flush=True)


if __name__ == "__main__":
    main()
