"""The as-of join and label visibility against an independent DuckDB oracle (ARCHITECTURE §4).

The oracle is plain SQL over integer microseconds: DuckDB's ``ASOF LEFT JOIN`` for
``asof_join_group``, and a ``row_number()`` formulation (every snapshot with
``available_at <= event_time``, latest first) for the frame builder, so neither shares code or
Polars semantics with the code under test.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import duckdb
import numpy as np
import polars as pl
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from polars.testing import assert_frame_equal

from model_factory.contracts import (
    DatasetSelector,
    GovernancePolicy,
    SplitPolicy,
    TimeWindow,
    TrainingConfig,
)
from model_factory.core.frames import (
    JOIN_AT,
    TIEBREAK,
    TrainingFrame,
    _by_join_match,
    _composite_match,
    _FeatureSource,
    _snapshot_order,
    _walk_match,
    asof_join_group,
    build_training_frame,
    visible_labels,
)
from model_factory.core.intake import intake
from model_factory.core.manifests import Catalog, create_manifest

TS = pl.Datetime("us", "UTC")
US = 1_000_000
HOUR = 3_600 * US
DAY = 24 * HOUR


def epoch_us(t: datetime) -> int:
    return int(t.timestamp()) * US + t.microsecond


def ts(values: np.ndarray | list[int]) -> pl.Series:
    """UTC timestamps from integer microseconds since the epoch."""
    return (
        pl.Series(np.asarray(values, dtype=np.int64))
        .cast(pl.Datetime("us"))
        .dt.replace_time_zone("UTC")
    )


def jitter(rng: np.random.Generator, n: int) -> np.ndarray:
    """Mostly exact grid instants (ties everywhere), sometimes one microsecond either side."""
    return rng.choice(np.array([0, 0, 0, 1, -1], dtype=np.int64), size=n)


# one in-memory database for the module: connecting costs ~20 ms, a query a few
CON = duckdb.connect()


def sql(con: duckdb.DuckDBPyConnection, query: str, **tables: pl.DataFrame) -> pl.DataFrame:
    for name, frame in tables.items():
        con.register(name, frame.to_arrow())
    out = pl.from_arrow(con.sql(query).to_arrow_table())
    for name in tables:
        con.unregister(name)
    assert isinstance(out, pl.DataFrame)
    return out


def seconds(us: int | None) -> float | None:
    return None if us is None else us / US


# ---------------------------------------------------------------------------------------------
# asof_join_group: one group at a time, against DuckDB's ASOF LEFT JOIN

T0 = epoch_us(datetime(2026, 1, 5, tzinfo=UTC))


@st.composite
def asof_cases(draw: st.DrawFn) -> dict:
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    n_events = draw(st.integers(0, 40))
    n_cust, n_term = draw(st.integers(1, 5)), draw(st.integers(1, 4))
    slots = draw(st.integers(1, 24))  # grid of hours: few slots means many ties

    def times(n: int) -> np.ndarray:
        return T0 + rng.integers(0, slots, n) * HOUR + jitter(rng, n)

    events = pl.DataFrame(
        {
            "event_id": pl.Series([f"e{i:03d}" for i in range(n_events)], dtype=pl.String),
            "event_time": ts(times(n_events)),
            # the last id of each key has no snapshot at all
            "customer_id": rng.integers(0, n_cust + 1, n_events),
            "terminal_id": rng.integers(0, n_term + 1, n_events),
        }
    ).sort("event_time", "event_id")

    key_dtype = draw(st.sampled_from([pl.Int64, pl.Int32]))
    n_cs, n_ts = draw(st.integers(0, 30)), draw(st.integers(0, 30))
    spend = rng.normal(100, 30, n_cs).round(2)
    cust = (
        pl.DataFrame(
            {
                "customer_id": rng.integers(0, n_cust, n_cs),
                "available_at": ts(times(n_cs)),
                "spend": pl.Series(spend).set(pl.Series(rng.random(n_cs) < 0.1), None),
            }
        )
        .unique(["customer_id", "available_at"], keep="first", maintain_order=True)
        .with_columns(pl.col("customer_id").cast(key_dtype))
    )
    term = pl.DataFrame(
        {
            "terminal_id": rng.integers(0, n_term, n_ts),
            "available_at": ts(times(n_ts)),
            "risk": rng.random(n_ts),
            "level": rng.integers(0, 5, n_ts),
        }
    ).unique(["terminal_id", "available_at"], keep="first", maintain_order=True)
    # the function must not rely on the caller's order of snapshot rows
    cust = cust.sample(fraction=1.0, shuffle=True, seed=int(rng.integers(2**31)))
    term = term.sample(fraction=1.0, shuffle=True, seed=int(rng.integers(2**31)))
    ttl_hours = st.one_of(st.none(), st.integers(1, 12))
    return {
        "events": events,
        "cust": cust,
        "term": term,
        "cust_ttl": draw(ttl_hours),
        "term_ttl": draw(ttl_hours),
    }


def asof_oracle(
    con: duckdb.DuckDBPyConnection,
    events: pl.DataFrame,
    snaps: pl.DataFrame,
    key: str,
    features: list[str],
    prefix: str,
    ttl_hours: int | None,
) -> tuple[pl.DataFrame, dict]:
    ttl_us = ttl_hours * HOUR if ttl_hours is not None else None
    stale = f"(m.a IS NOT NULL AND e.t - m.a > {ttl_us})" if ttl_us is not None else "false"
    cols = ", ".join(
        f"CASE WHEN {stale} THEN NULL ELSE m.{f} END AS {prefix}__{f}" for f in features
    )
    e = events.select("event_id", key, t=pl.col("event_time").dt.epoch("us"))
    s = snaps.select(pl.col(key).cast(pl.Int64), *features, a=pl.col("available_at").dt.epoch("us"))
    frame = sql(
        con,
        f"""
        SELECT e.event_id, {cols},
               m.a IS NOT NULL AND NOT {stale} AS kept,
               {stale} AS stale,
               CASE WHEN m.a IS NOT NULL AND NOT {stale} THEN m.a - e.t END AS ahead
        FROM e ASOF LEFT JOIN s AS m ON e.{key} = m.{key} AND e.t >= m.a
        """,
        e=e,
        s=s,
    )
    kept = int(frame["kept"].sum())
    ahead = frame["ahead"].max()
    stats = {
        "joined_rows": kept,
        "ttl_dropped_rows": int(frame["stale"].sum()),
        "null_rows": events.height - kept,
        "max_ahead": seconds(ahead),  # type: ignore[arg-type]
    }
    return frame.drop("kept", "stale", "ahead"), stats


def hours(n: int | None) -> timedelta | None:
    return None if n is None else timedelta(hours=n)


@settings(max_examples=50, deadline=None)
@given(case=asof_cases())
def test_asof_join_of_two_groups_matches_duckdb_asof_join(case: dict) -> None:
    events, cust, term = case["events"], case["cust"], case["term"]
    con = CON
    once, cust_stats = asof_join_group(
        events, cust, ["customer_id"], ["spend"], "cust", hours(case["cust_ttl"])
    )
    twice, term_stats = asof_join_group(
        once, term, ["terminal_id"], ["risk", "level"], "term", hours(case["term_ttl"])
    )
    # every event is kept, in its order, with the prefixed feature columns appended
    assert twice.columns == [*events.columns, "cust__spend", "term__risk", "term__level"]
    assert_frame_equal(twice.select(events.columns), events)

    want_cust, want_cust_stats = asof_oracle(
        con, events, cust, "customer_id", ["spend"], "cust", case["cust_ttl"]
    )
    want_term, want_term_stats = asof_oracle(
        con, events, term, "terminal_id", ["risk", "level"], "term", case["term_ttl"]
    )
    want = want_cust.join(want_term, on="event_id").sort("event_id")
    got = twice.select(want.columns).sort("event_id")
    assert_frame_equal(got, want, check_dtypes=False)

    for stats, expected in ((cust_stats, want_cust_stats), (term_stats, want_term_stats)):
        assert stats["joined_rows"] == expected["joined_rows"]
        assert stats["ttl_dropped_rows"] == expected["ttl_dropped_rows"]
        assert stats["null_rows"] == expected["null_rows"]
        # over joined rows only: None when nothing joined (also when the TTL dropped all)
        assert stats["max_ahead"] == expected["max_ahead"]
        assert stats["max_ahead"] is None or stats["max_ahead"] <= 0


def test_asof_join_edges_of_availability_and_ttl() -> None:
    t = T0 + 10 * HOUR
    ttl = timedelta(hours=1)
    events = pl.DataFrame(
        {
            "event_id": [
                "at_t",
                "age_eq_ttl",
                "age_ttl_plus_1us",
                "late_write",
                "no_snap",
                "exact",
            ],
            "event_time": ts([t, t + HOUR, t + HOUR + 1, t, t, t]),
            "customer_id": [1, 1, 1, 2, 3, 4],
        }
    ).sort("event_time", "event_id")
    snaps = pl.DataFrame(
        {
            "customer_id": [1, 1, 1, 2, 2, 4],
            "available_at": ts([t - HOUR, t, t + HOUR + 2, t + 1, t - 5 * HOUR, t]),
            "spend": [0.5, 1.0, 9.0, 2.0, 3.0, 4.0],
        }
    )
    out, stats = asof_join_group(events, snaps, ["customer_id"], ["spend"], "g", ttl)
    got = dict(zip(out["event_id"], out["g__spend"], strict=True))
    assert got == {
        "at_t": 1.0,  # latest snapshot at or before t
        "age_eq_ttl": 1.0,  # age exactly the TTL is still fresh
        "age_ttl_plus_1us": None,  # one microsecond staler: dropped, not replaced by an older row
        # customer 2's snapshot written 1 µs after the event is invisible; the one before it is
        # 5 h old, past the TTL
        "late_write": None,
        "no_snap": None,  # no snapshot: the event stays, with null features
        "exact": 4.0,  # available_at == event_time is visible
    }
    assert stats == {
        "joined_rows": 3,
        "ttl_dropped_rows": 2,
        "null_rows": 3,
        "max_ahead": 0.0,
    }


def test_asof_join_max_ahead_is_none_when_no_row_survives_the_ttl() -> None:
    """The audit's max(available_at - event_time) is over joined rows; with none joined (the only
    match is past the TTL) there is nothing to take a maximum over."""
    t = T0 + 10 * HOUR
    events = pl.DataFrame({"event_id": ["e"], "event_time": ts([t]), "customer_id": [1]})
    snaps = pl.DataFrame({"customer_id": [1], "available_at": ts([t - 2 * HOUR]), "spend": [1.0]})
    _, stats = asof_join_group(events, snaps, ["customer_id"], ["spend"], "g", timedelta(hours=1))
    assert stats["joined_rows"] == 0
    assert stats["ttl_dropped_rows"] == 1
    assert stats["max_ahead"] is None


# ---------------------------------------------------------------------------------------------
# Both join paths (composite int64 key, Polars by-join) against DuckDB, on every key shape:
# integer keys (small, negative, too wide for the composite), strings, two-column keys, nulls,
# empty groups, ties across groups and unsorted snapshots.


@st.composite
def keyed_cases(draw: st.DrawFn) -> dict:
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    shape = draw(
        st.sampled_from(["int", "negative", "wide", "uint_high", "string", "pair", "null_keys"])
    )
    n_events, n_snaps = draw(st.integers(0, 40)), draw(st.integers(0, 40))
    n_keys, slots = draw(st.integers(1, 5)), draw(st.integers(1, 12))

    def times(n: int) -> np.ndarray:
        return T0 + rng.integers(0, slots, n) * HOUR + jitter(rng, n)

    def keys(n: int, extra: int) -> dict:
        k = rng.integers(0, n_keys + extra, n)
        if shape == "negative":
            return {"k": k - 3}
        if shape == "wide":  # the composite key would overflow: the by-join takes over
            return {"k": np.where(k % 2 == 0, k, 2**62 + k)}
        if shape == "uint_high":  # hashed ids: unsigned, above 2**63 (an OverflowError once)
            return {"k": pl.Series(k.astype(np.uint64) + np.uint64(2**64 - 16), dtype=pl.UInt64)}
        if shape == "string":
            return {"k": pl.Series([f"id{v}" for v in k], dtype=pl.String)}
        if shape == "pair":
            return {"k": k, "k2": rng.integers(0, 2, n)}
        if shape == "null_keys":
            return {"k": pl.Series(k).set(pl.Series(rng.random(n) < 0.2), None)}
        return {"k": k}

    events = pl.DataFrame(
        {
            "event_id": [f"e{i:03d}" for i in range(n_events)],
            "event_time": ts(times(n_events)),
            **keys(n_events, 1),
        }
    )
    snaps = pl.DataFrame(
        {
            **keys(n_snaps, 0),
            "available_at": ts(times(n_snaps)),
            "v": rng.normal(0, 1, n_snaps).round(3),
        }
    )
    key_cols = ["k", "k2"] if shape == "pair" else ["k"]
    snaps = snaps.unique([*key_cols, "available_at"], keep="first", maintain_order=True)
    return {
        "events": events.sort("event_time", "event_id"),
        "snaps": snaps,
        "keys": key_cols,
        "ttl": draw(st.one_of(st.none(), st.integers(1, 6))),
        "shape": shape,
    }


def keyed_oracle(
    events: pl.DataFrame, snaps: pl.DataFrame, keys: list[str], ttl_hours: int | None
) -> dict[str, float | None]:
    ttl = f"AND e.t - m.a <= {ttl_hours * HOUR}" if ttl_hours is not None else ""
    on = " AND ".join(f"e.{k} = m.{k}" for k in keys)
    e = events.select("event_id", *keys, t=pl.col("event_time").dt.epoch("us"))
    s = snaps.select(*keys, "v", a=pl.col("available_at").dt.epoch("us"))
    out = sql(
        CON,
        f"""
        SELECT e.event_id, CASE WHEN m.a IS NOT NULL {ttl} THEN m.v END AS v
        FROM e ASOF LEFT JOIN s AS m ON {on} AND e.t >= m.a""",
        e=e,
        s=s,
    )
    return dict(out.iter_rows())


@settings(max_examples=80, deadline=None)
@given(case=keyed_cases())
def test_every_key_shape_matches_duckdb_asof_join(case: dict) -> None:
    events, snaps, keys = case["events"], case["snaps"], case["keys"]
    shuffled = snaps.sample(fraction=1.0, shuffle=True, seed=7)
    out, stats = asof_join_group(events, shuffled, keys, ["v"], "g", hours(case["ttl"]))
    assert_frame_equal(out.select(events.columns), events)
    got = dict(zip(out["event_id"], out["g__v"], strict=True))
    assert got == keyed_oracle(events, snaps, keys, case["ttl"])
    assert stats["null_rows"] == sum(v is None for v in got.values())  # v itself is never null
    assert stats["max_ahead"] is None or stats["max_ahead"] <= 0


@settings(max_examples=80, deadline=None)
@given(case=keyed_cases())
def test_composite_and_by_join_paths_pick_the_same_snapshot(case: dict) -> None:
    """Integer keys take the entity walk or the composite path; both must agree row for row
    with Polars' by-join."""
    if case["shape"] not in ("int", "negative", "uint_high"):
        return
    right = case["snaps"].with_columns(pl.col("available_at").alias(JOIN_AT))
    # duplicates of (key, available_at), with and without a tiebreak: every path picks the row
    # with the latest tiebreak, then the last written
    doubled = pl.concat([right, right.reverse()]).with_columns(
        pl.Series(TIEBREAK, np.arange(2 * right.height) % 3).cast(pl.Datetime("us", "UTC"))
    )
    for snaps in (right, doubled.drop(TIEBREAK), doubled):
        expected = _by_join_match(case["events"], snaps, ["k"]).tolist()
        fast = _composite_match(case["events"], snaps, "k")
        assert fast is not None
        assert fast.tolist() == expected
        walked = _walk_match(case["events"], snaps, "k")
        if walked is not None:  # None only for no rows, or keys too sparse for its index
            assert walked.tolist() == expected


@pytest.mark.parametrize(
    ("event_key", "snapshot_key", "snapshot_keys"),
    [
        # an event key minus the first snapshot key, in the events' narrower type, wrapped round
        # to another entity's row: key 1 - 3 read key 257's snapshot
        (pl.UInt8, pl.UInt16, range(3, 301)),
        # the first snapshot key does not fit the events' type at all
        (pl.Int16, pl.Int64, range(40_000, 40_300)),
        (pl.Int8, pl.Int32, range(-300, 0)),
    ],
)
def test_event_keys_of_a_narrower_type_than_the_snapshots_match_only_their_own_entity(
    event_key: pl.DataType, snapshot_key: pl.DataType, snapshot_keys: range
) -> None:
    """Intake lets the events and a group key by integers of one kind at any width; the walk's
    table is built from the snapshots before the events are read, so an event's key must be
    widened before it is compared with the table's first key."""
    keys = list(snapshot_keys)
    snaps = pl.DataFrame(
        {
            "k": pl.Series(keys, dtype=snapshot_key),
            "available_at": ts([T0] * len(keys)),
            "f": [float(k) for k in keys],
        }
    )
    low, high = {pl.UInt8: (0, 255), pl.Int8: (-128, 127)}.get(event_key, (-300, 300))
    event_keys = sorted({low, high, 0, 1, 2, *(k for k in keys if low <= k <= high)})
    events = pl.DataFrame(
        {
            "k": pl.Series(event_keys, dtype=event_key),
            "event_time": ts([T0 + HOUR] * len(event_keys)),
        }
    )
    joined, _ = asof_join_group(events, snaps, ["k"], ["f"], "g", None)
    by_key = dict(zip(keys, [float(k) for k in keys], strict=True))
    assert joined["g__f"].to_list() == [by_key.get(k) for k in event_keys]


def test_a_null_valid_from_after_a_set_one_on_the_same_instant_ranks_lowest_on_every_path() -> None:
    """Two snapshots of one key at one available_at, the first with a valid_from, the second
    without (null ranks lowest): the first is read. The walk's test of written order subtracted
    neighbouring tiebreaks, and the null's lowest value minus a time wrapped round to a large
    positive number, so the walk took the rows as ordered and read the second."""
    valid_from = pl.Series(TIEBREAK, [T0 - 24 * HOUR, None], dtype=pl.Int64).cast(
        pl.Datetime("us", "UTC")
    )
    snaps = pl.DataFrame({"k": [7, 7], JOIN_AT: ts([T0, T0])}).with_columns(valid_from)
    events = pl.DataFrame({"k": [7], "event_time": ts([T0 + HOUR])})
    expected = _by_join_match(events, snaps, ["k"]).tolist()
    assert expected == [0]
    assert _composite_match(events, snaps, "k").tolist() == expected
    assert _walk_match(events, snaps, "k").tolist() == expected


@pytest.mark.parametrize("span", [1, 2, 65_536, 65_537, 2**20, 2**40])
def test_snapshots_in_time_order_are_ordered_by_a_stable_sort_on_the_key(span: int) -> None:
    """The walk's table is filled in (key, written) order; for snapshots written in time order
    that order comes from a radix sort of the key, 16 bits a pass: keys of one, two and three
    passes give what a stable comparison sort gives."""
    rng = np.random.default_rng(span % 1000)
    keys = rng.integers(0, span, 50_000)
    keys[:2] = [0, span - 1]
    times = np.sort(T0 + rng.integers(0, 1_000, keys.size) * US)
    right = pl.DataFrame({JOIN_AT: ts(times)})
    order = _snapshot_order(right, keys, times, span)
    assert order.tolist() == np.argsort(keys, kind="stable").tolist()


def test_entity_walk_over_more_than_65536_entities_matches_the_by_join() -> None:
    """More entities than one 16-bit pass of the key sort covers (so two passes), snapshots in
    time order: the walk picks what Polars' by-join picks."""
    rng = np.random.default_rng(8)
    k = np.repeat(np.arange(70_000), 2)
    at = T0 + rng.integers(0, 40, k.size) * HOUR
    snaps = pl.DataFrame({"k": k, JOIN_AT: ts(at)}).sort(JOIN_AT)
    ev_k = rng.integers(0, 70_001, 20_000)
    events = pl.DataFrame(
        {"k": ev_k, "event_time": ts(T0 + rng.integers(-2, 42, ev_k.size) * HOUR)}
    ).sort("event_time")
    walked = _walk_match(events, snaps, "k")
    assert walked is not None
    assert walked.tolist() == _by_join_match(events, snaps, ["k"]).tolist()
    assert {int(m) for m in walked} > {-1}


@pytest.mark.parametrize("in_time_order", [True, False])
def test_entity_walk_counts_across_words_of_eight_snapshots(in_time_order: bool) -> None:
    """Entities with 1 to 24 snapshots (one, two and three words of the walk's count), ties on
    available_at broken by valid_from then written order, events before, between, on and after
    every snapshot: the walk picks what Polars' by-join picks; 25 snapshots leave it to the
    composite path."""
    rng = np.random.default_rng(5)
    per_entity = [1, 7, 8, 9, 15, 16, 17, 23, 24]
    k = np.repeat(np.arange(len(per_entity)), per_entity)
    at = T0 + rng.integers(0, 30, k.size) * HOUR  # many equal instants within an entity
    snaps = pl.DataFrame(
        {
            "k": k,
            JOIN_AT: ts(at),
            TIEBREAK: ts(at - rng.integers(0, 3, k.size) * HOUR),
        }
    )
    snaps = snaps.sort(JOIN_AT, TIEBREAK) if in_time_order else snaps.sample(fraction=1.0, seed=3)
    ev_k = rng.integers(0, len(per_entity) + 1, 2_000)  # one entity has no snapshot at all
    events = pl.DataFrame(
        {
            "k": ev_k,
            "event_time": ts(T0 + rng.integers(-2, 33, ev_k.size) * HOUR + jitter(rng, ev_k.size)),
        }
    ).sort("event_time")
    walked = _walk_match(events, snaps, "k")
    assert walked is not None
    expected = _by_join_match(events, snaps, ["k"])
    assert walked.tolist() == expected.tolist()
    assert {int(m) for m in walked} > {-1}  # some events match, some do not

    crowded = pl.concat([snaps, snaps.head(25).with_columns(pl.lit(99, dtype=pl.Int64).alias("k"))])
    assert _walk_match(events, crowded, "k") is None
    assert _composite_match(events, crowded, "k").tolist() == (
        _by_join_match(events, crowded, ["k"]).tolist()
    )


def test_feature_gather_keeps_every_dtype_null_and_nan() -> None:
    """Float columns without NaN are gathered row-major with NaN as the null marker; every
    other column (floats holding NaN, integers, booleans, strings) by Polars. Both must give
    what Polars' gather gives, nulls where the row is -1, columns in their order."""
    rng = np.random.default_rng(9)
    n = 5_000
    nulls = pl.Series(rng.random(n) < 0.1)
    source = pl.DataFrame(
        {
            "f32": pl.Series(rng.normal(size=n).astype(np.float32)).set(nulls, None),
            "i64": pl.Series(rng.integers(-5, 5, n)).set(nulls, None),
            "f64": rng.normal(size=n),
            "nan64": pl.Series(np.where(rng.random(n) < 0.1, np.nan, rng.normal(size=n))).set(
                nulls, None
            ),
            "s": pl.Series([f"v{i % 7}" for i in range(n)]).set(nulls, None),
            "b": pl.Series(rng.random(n) < 0.5),
            "f32b": rng.normal(size=n).astype(np.float32),
        }
    )
    used = rng.integers(-1, n, 200_000)  # above the size where two threads share the work
    got = _FeatureSource.of(source, source.columns).gather(used)
    index = pl.Series(np.where(used >= 0, used, 0).astype(np.uint32)).scatter(
        np.flatnonzero(used < 0), None
    )
    expected = source.select(pl.all().gather(index))
    assert got.schema == expected.schema
    assert_frame_equal(got, expected)
    assert got["nan64"].is_nan().sum() > 0 and got["f32"].null_count() > (used < 0).sum()
    assert [names for names, _ in _FeatureSource.of(source, source.columns).blocks] == [
        ["f32", "f32b"],
        ["f64"],
    ]


def test_equal_timestamps_across_groups_and_an_empty_group() -> None:
    """Two groups stamped at the very instant of the event both join; a group with no snapshot
    rows leaves every event with null features, kept."""
    t = T0 + 5 * HOUR
    events = pl.DataFrame(
        {
            "event_id": ["a", "b"],
            "event_time": ts([t, t]),
            "customer_id": [1, 2],
            "terminal_id": [7, 7],
        }
    )
    cust = pl.DataFrame({"customer_id": [1, 2], "available_at": ts([t, t + 1]), "x": [1.0, 2.0]})
    term = pl.DataFrame({"terminal_id": [7], "available_at": ts([t]), "y": [3.0]})
    empty = pl.DataFrame(schema={"terminal_id": pl.Int64, "available_at": TS, "z": pl.Float64})
    out, _ = asof_join_group(events, cust, ["customer_id"], ["x"], "c", None)
    out, _ = asof_join_group(out, term, ["terminal_id"], ["y"], "t", None)
    out, stats = asof_join_group(out, empty, ["terminal_id"], ["z"], "e", timedelta(hours=1))
    assert out.select("event_id", "c__x", "t__y", "e__z").rows() == [
        ("a", 1.0, 3.0, None),
        ("b", None, 3.0, None),
    ]
    assert stats == {"joined_rows": 0, "ttl_dropped_rows": 0, "null_rows": 2, "max_ahead": None}


# ---------------------------------------------------------------------------------------------
# visible_labels

SPLITS = ("train", "val", "test")


@st.composite
def label_cases(draw: st.DrawFn) -> tuple[pl.DataFrame, pl.DataFrame]:
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    n_events = draw(st.integers(0, 30))
    n_labels = draw(st.integers(0, 60))
    slots = draw(st.integers(1, 12))
    train_cut = T0 + 6 * HOUR
    cut = train_cut + draw(st.integers(0, 6)) * HOUR
    split = rng.choice(np.array(SPLITS), n_events)
    events = pl.DataFrame(
        {
            "event_id": pl.Series([f"e{i:03d}" for i in range(n_events)], dtype=pl.String),
            "split": split,
            "label_cut": ts(np.where(split == "test", cut, train_cut)),
        },
        schema_overrides={"split": pl.String},
    )
    # a few ids that are no event of the frame
    ids = [f"e{i:03d}" for i in rng.integers(0, n_events + 3, n_labels)]
    labels = pl.DataFrame(
        {
            "event_id": pl.Series(ids, dtype=pl.String),
            "label_family": rng.choice(np.array(["fraud", "fraud", "fraud", "dispute"]), n_labels),
            "label_value": rng.integers(0, 2, n_labels),
            "observed_time": ts(
                T0 + rng.integers(0, slots, n_labels) * HOUR + jitter(rng, n_labels)
            ),
        },
        schema_overrides={"label_family": pl.String},
    )
    return events, labels


def labels_oracle(
    con: duckdb.DuckDBPyConnection, events: pl.DataFrame, labels: pl.DataFrame, family: str
) -> tuple[dict[str, int], dict[str, int], dict[str, int], dict[str, float | None]]:
    e = events.select("event_id", "split", c=pl.col("label_cut").dt.epoch("us"))
    lab = labels.select(
        "event_id", "label_family", "label_value", o=pl.col("observed_time").dt.epoch("us")
    )
    query = f"""
        SELECT l.event_id, l.label_value, l.o, e.split, e.c, l.o < e.c AS visible
        FROM lab AS l JOIN e USING (event_id)
        WHERE l.label_family = '{family}'
    """
    joined = sql(con, query, e=e, lab=lab)
    latest = sql(
        con,
        """
        SELECT event_id, label_value, o FROM (
            SELECT *, row_number() OVER (
                PARTITION BY event_id ORDER BY o DESC, label_value DESC) AS rn
            FROM j WHERE visible)
        WHERE rn = 1
        """,
        j=joined,
    )
    per_split = sql(
        con,
        """
        SELECT split,
               count(*) FILTER (WHERE NOT visible) AS hidden,
               count(*) FILTER (WHERE visible) AS shown,
               max(o - c) FILTER (WHERE visible) AS gap
        FROM j GROUP BY split
        """,
        j=joined,
    )
    hidden = dict.fromkeys(SPLITS, 0)
    shown = dict.fromkeys(SPLITS, 0)
    gap: dict[str, float | None] = dict.fromkeys(SPLITS, None)
    for row in per_split.iter_rows(named=True):
        hidden[row["split"]] = row["hidden"]
        shown[row["split"]] = row["shown"]
        gap[row["split"]] = seconds(row["gap"])
    return {e: (v, o) for e, v, o in latest.iter_rows()}, hidden, shown, gap


@settings(max_examples=50, deadline=None)
@given(case=label_cases())
def test_visible_labels_match_duckdb_oracle(case: tuple[pl.DataFrame, pl.DataFrame]) -> None:
    events, labels = case
    latest, hidden, shown, gap = visible_labels(events, labels.lazy(), "fraud")
    want_latest, want_hidden, want_shown, want_gap = labels_oracle(CON, events, labels, "fraud")
    assert latest.columns == ["event_id", "label", "observed_time"]
    assert latest["event_id"].n_unique() == latest.height
    # the label used and, as the audit's evidence, when it was observed
    got = latest.with_columns(o=pl.col("observed_time").dt.epoch("us"))
    assert {
        e: (v, o) for e, v, o in got.select("event_id", "label", "o").iter_rows()
    } == want_latest
    assert hidden == want_hidden
    assert shown == want_shown
    assert gap == want_gap
    assert all(g is None or g < 0 for g in gap.values())


def test_visible_labels_cut_rules_by_hand() -> None:
    train_cut = T0 + 10 * HOUR
    cut = train_cut + 24 * HOUR
    events = pl.DataFrame(
        {
            "event_id": ["x", "y", "z", "w"],
            "split": ["test", "train", "val", "test"],
            "label_cut": ts([cut, train_cut, train_cut, cut]),
        }
    )
    labels = pl.DataFrame(
        {
            "event_id": ["x", "x", "y", "y", "z", "z", "w", "unknown"],
            "label_family": ["fraud"] * 6 + ["dispute", "fraud"],
            "label_value": [1, 0, 1, 0, 0, 1, 1, 1],
            "observed_time": ts(
                [
                    cut - 1,  # x: visible, 1 µs before the cut
                    cut,  # x: observed at the cut: hidden, so the earlier 1 stands
                    train_cut,  # y (train): hidden at train_cut, although before C
                    train_cut - HOUR,  # y: visible
                    train_cut - 2 * HOUR,  # z: tie on observed_time ...
                    train_cut - 2 * HOUR,  # ... the larger label wins
                    T0,  # w: another family only
                    T0,  # not an event of the frame
                ]
            ),
        }
    )
    latest, hidden, shown, gap = visible_labels(events, labels.lazy(), "fraud")
    assert dict(latest.select("event_id", "label").iter_rows()) == {"x": 1, "y": 0, "z": 1}
    assert hidden == {"train": 1, "val": 0, "test": 1}
    assert shown == {"train": 1, "val": 2, "test": 1}
    assert gap == {"train": -3600.0, "val": -7200.0, "test": -1e-6}


# ---------------------------------------------------------------------------------------------
# build_training_frame through a real catalog, intake and receipt

PARTITION = "2026-03-02"
SPLIT = SplitPolicy(train_days=4, val_days=2, test_days=2, label_maturity_days=1)
# §4 by hand for W = 2026-03-02: C = 03-09, test = [03-06, 03-08), train_cut = 03-06,
# val = [03-03, 03-05), train = [02-27, 03-03).
CUT = datetime(2026, 3, 9, tzinfo=UTC)
TRAIN_CUT = datetime(2026, 3, 6, tzinfo=UTC)
WINDOWS = {
    "train": (datetime(2026, 2, 27, tzinfo=UTC), datetime(2026, 3, 3, tzinfo=UTC)),
    "val": (datetime(2026, 3, 3, tzinfo=UTC), datetime(2026, 3, 5, tzinfo=UTC)),
    "test": (datetime(2026, 3, 6, tzinfo=UTC), datetime(2026, 3, 8, tzinfo=UTC)),
}
CUST_TTL_HOURS = 12
GRID = 6 * HOUR  # event and snapshot instants fall on a 6-hour grid: ties on purpose
EVENTS_WINDOW = TimeWindow(
    start=datetime(2026, 2, 26, tzinfo=UTC), end=datetime(2026, 3, 10, tzinfo=UTC)
)
LABELS_WINDOW = TimeWindow(
    start=datetime(2026, 2, 26, tzinfo=UTC), end=datetime(2026, 3, 20, tzinfo=UTC)
)
SNAPSHOT_WINDOW = TimeWindow(
    start=datetime(2026, 2, 19, tzinfo=UTC), end=datetime(2026, 3, 10, tzinfo=UTC)
)


def config(missing_label: str = "negative") -> TrainingConfig:
    return TrainingConfig(
        events=DatasetSelector(name="payments", version="v1"),
        event_features=["amount"],
        entity_keys=["customer_id", "terminal_id"],
        feature_group_versions=[
            DatasetSelector(name="cust_fg", version="v1"),
            DatasetSelector(name="term_fg", version="v1"),
        ],
        labels=DatasetSelector(name="truth", version="v1"),
        label_family="fraud",
        split_policy=SPLIT.model_copy(update={"missing_label": missing_label}),
    )


@dataclass(frozen=True)
class CatalogData:
    """What goes into the catalog; snapshot groups as a list of files, in written order."""

    events: pl.DataFrame
    labels: pl.DataFrame
    cust_files: list[pl.DataFrame]
    term_files: list[pl.DataFrame]


def write_dataset(
    catalog: Catalog,
    kind: str,
    name: str,
    files: list[pl.DataFrame],
    window: TimeWindow,
    keys: list[str],
    **extra,
) -> None:
    folder = Path(catalog.slice_dir(kind, name, "v1", window))
    folder.mkdir(parents=True, exist_ok=True)
    uris = []
    for i, frame in enumerate(files):
        uri = str(folder / f"part-{i}.parquet")
        frame.write_parquet(uri)
        uris.append(uri)
    manifest = create_manifest(
        uris,
        kind=kind,  # type: ignore[arg-type]
        name=name,
        version="v1",
        keys=keys,
        window=window,
        relative_to=catalog.manifest_dir(kind, name, "v1"),
        **extra,
    )
    catalog.write(manifest)


def write_catalog(root: Path, data: CatalogData) -> Catalog:
    catalog = Catalog(str(root))
    write_dataset(catalog, "events", "payments", [data.events], EVENTS_WINDOW, ["event_id"])
    write_dataset(
        catalog, "labels", "truth", [data.labels], LABELS_WINDOW, ["event_id"], label_family="fraud"
    )
    write_dataset(
        catalog,
        "feature_group",
        "cust_fg",
        data.cust_files,
        SNAPSHOT_WINDOW,
        ["customer_id"],
        valid_from_column="valid_from",
        ttl_seconds=CUST_TTL_HOURS * 3600,
    )
    write_dataset(
        catalog,
        "feature_group",
        "term_fg",
        data.term_files,
        SNAPSHOT_WINDOW,
        ["terminal_id"],
        valid_from_column="valid_from",
    )
    return catalog


def build(root: Path, data: CatalogData, missing_label: str = "negative") -> TrainingFrame:
    catalog = write_catalog(root, data)
    policy = GovernancePolicy()
    receipt, inputs = intake(catalog, config(missing_label), PARTITION, policy)
    return build_training_frame(receipt, inputs, policy)


def random_catalog_data(seed: int, *, unique_valid_from: bool = False) -> CatalogData:
    """Events around and inside every window (gaps and the span's edges too), labels around the
    cuts, and two snapshot groups with duplicates, late writes and stale rows."""
    rng = np.random.default_rng(seed)
    ev_lo = epoch_us(EVENTS_WINDOW.start)
    n_events = 160
    slots = int((epoch_us(CUT) - ev_lo) // GRID)
    event_us = ev_lo + rng.integers(0, slots, n_events) * GRID + jitter(rng, n_events)
    event_us = np.maximum(event_us, ev_lo)
    n_cust, n_term = 8, 5
    events = pl.DataFrame(
        {
            "event_id": [f"ev{i:04d}" for i in range(n_events)],
            "event_time": ts(event_us),
            "customer_id": rng.integers(0, n_cust + 1, n_events),  # customer n_cust: no snapshot
            "terminal_id": rng.integers(0, n_term + 1, n_events),  # terminal n_term: no snapshot
            "amount": rng.gamma(2.0, 40.0, n_events).round(2),
        }
    )

    # Labels: 0-3 per event, observed a multiple of 6 h (+/- 1 µs) after the event; some exactly
    # at C or at train_cut; some of another family; some for unknown events.
    per_event = rng.integers(0, 4, n_events)
    idx = np.repeat(np.arange(n_events), per_event)
    observed = event_us[idx] + rng.integers(0, 28, idx.size) * GRID + jitter(rng, idx.size)
    pinned = rng.random(idx.size)
    observed = np.where(pinned < 0.08, epoch_us(CUT), observed)
    observed = np.where((pinned >= 0.08) & (pinned < 0.16), epoch_us(TRAIN_CUT), observed)
    observed = np.clip(observed, epoch_us(LABELS_WINDOW.start), epoch_us(LABELS_WINDOW.end) - 1)
    ids = events["event_id"].gather(idx).to_list()
    family = rng.choice(np.array(["fraud"] * 5 + ["dispute"]), idx.size).tolist()
    n_unknown = 5
    labels = pl.DataFrame(
        {
            "event_id": ids + [f"ghost{i}" for i in range(n_unknown)],
            "label_family": family + ["fraud"] * n_unknown,
            "label_value": np.r_[rng.integers(0, 2, idx.size), np.ones(n_unknown, np.int64)],
            "observed_time": ts(np.r_[observed, np.full(n_unknown, epoch_us(TRAIN_CUT) - HOUR)]),
        },
        schema_overrides={"event_id": pl.String, "label_family": pl.String},
    ).sample(fraction=1.0, shuffle=True, seed=seed)

    snap_lo = epoch_us(datetime(2026, 2, 20, tzinfo=UTC))
    snap_slots = int((epoch_us(CUT) - snap_lo) // GRID)

    def snapshots(key: str, n_keys: int, n: int, features: dict) -> list[pl.DataFrame]:
        avail = snap_lo + rng.integers(0, snap_slots, n) * GRID + jitter(rng, n)
        # written late: valid_from (business time) well before available_at, sometimes after
        valid_from = avail - rng.integers(-1, 12, n) * HOUR
        frame = pl.DataFrame(
            {
                key: rng.integers(0, n_keys, n),
                "valid_from": ts(valid_from),
                "available_at": ts(avail),
                **{name: make(n) for name, make in features.items()},
            }
        )
        # duplicates of (key, available_at): other values, valid_from later, earlier or equal
        dup = frame.sample(n=n // 4, seed=seed)
        shift = rng.integers(-3, 4, dup.height)
        if unique_valid_from:
            shift = np.where(shift == 0, 5, shift)
        dup = dup.with_columns(
            valid_from=pl.col("valid_from") + pl.Series(shift * HOUR).cast(pl.Duration("us")),
            **{name: pl.Series(make(dup.height)) for name, make in features.items()},
        )
        rows = pl.concat([frame, dup]).sample(fraction=1.0, shuffle=True, seed=seed + 1)
        if unique_valid_from:
            rows = rows.unique(
                [key, "available_at", "valid_from"], keep="first", maintain_order=True
            )
        cut_at = int(rng.integers(1, rows.height))
        return [rows.slice(0, cut_at), rows.slice(cut_at)]

    cust_files = snapshots(
        "customer_id",
        n_cust,
        90,
        {
            "spend": lambda n: rng.normal(80, 20, n).round(2),
            "n_tx": lambda n: rng.integers(0, 50, n),
        },
    )
    term_files = snapshots("terminal_id", n_term, 40, {"risk": lambda n: rng.random(n).round(4)})
    return CatalogData(events, labels, cust_files, term_files)


def frame_oracle(data: CatalogData, missing_label: str) -> tuple[pl.DataFrame, dict]:
    """The expected frame and audit, in SQL over integer microseconds."""
    con = CON
    bounds = {s: (epoch_us(a), epoch_us(b)) for s, (a, b) in WINDOWS.items()}
    cases = " ".join(f"WHEN t >= {lo} AND t < {hi} THEN '{s}'" for s, (lo, hi) in bounds.items())
    ev = data.events.with_columns(t=pl.col("event_time").dt.epoch("us")).drop("event_time")
    events = sql(
        con,
        f"""
        SELECT *, CASE WHEN split = 'test' THEN {epoch_us(CUT)} ELSE {epoch_us(TRAIN_CUT)} END AS c
        FROM (SELECT *, CASE {cases} END AS split FROM ev) WHERE split IS NOT NULL
        """,
        ev=ev,
    )
    lab = data.labels.with_columns(o=pl.col("observed_time").dt.epoch("us")).drop("observed_time")
    joined = sql(
        con,
        """
        SELECT l.event_id, l.label_value, l.o, e.split, e.c, l.o < e.c AS visible
        FROM lab AS l JOIN events AS e USING (event_id) WHERE l.label_family = 'fraud'
        """,
        lab=lab,
        events=events,
    )
    label_stats = sql(
        con,
        """
        SELECT split, count(*) FILTER (WHERE NOT visible) AS hidden,
               count(*) FILTER (WHERE visible) AS shown,
               max(o - c) FILTER (WHERE visible) AS gap
        FROM j GROUP BY split
        """,
        j=joined,
    )
    fill = "coalesce(lv.label_value, 0)" if missing_label == "negative" else "lv.label_value"
    keep = "true" if missing_label == "negative" else "lv.label_value IS NOT NULL"
    frame = sql(
        con,
        f"""
        WITH lv AS (
            SELECT event_id, label_value FROM (
                SELECT *, row_number() OVER (
                    PARTITION BY event_id ORDER BY o DESC, label_value DESC) AS rn
                FROM j WHERE visible) WHERE rn = 1)
        SELECT e.event_id, e.t, e.split, {fill} AS label, e.amount, e.customer_id, e.terminal_id
        FROM events AS e LEFT JOIN lv USING (event_id) WHERE {keep}
        """,
        j=joined,
        events=events,
    )

    group_stats = {}
    for name, files, key, features, ttl_hours in (
        ("cust_fg", data.cust_files, "customer_id", ["spend", "n_tx"], CUST_TTL_HOURS),
        ("term_fg", data.term_files, "terminal_id", ["risk"], None),
    ):
        snaps = pl.concat(
            [
                f.with_columns(
                    a=pl.col("available_at").dt.epoch("us"),
                    vf=pl.col("valid_from").dt.epoch("us"),
                    written=pl.int_range(pl.len()) + 1_000_000 * i,  # file order, then row order
                )
                for i, f in enumerate(files)
            ]
        )
        stale = f"(m.a IS NOT NULL AND f.t - m.a > {ttl_hours * HOUR})" if ttl_hours else "false"
        cols = ", ".join(
            f"CASE WHEN {stale} THEN NULL ELSE m.{c} END AS {name}__{c}" for c in features
        )
        frame = sql(
            con,
            f"""
            WITH cand AS (
                SELECT f.event_id, s.*, row_number() OVER (
                    PARTITION BY f.event_id ORDER BY s.a DESC, s.vf DESC, s.written DESC) AS rn
                FROM f JOIN s ON s.{key} = f.{key} AND s.a <= f.t)
            SELECT f.*, {cols},
                   m.a IS NOT NULL AND NOT {stale} AS kept, {stale} AS stale,
                   CASE WHEN m.a IS NOT NULL AND NOT {stale} THEN m.a - f.t END AS ahead
            FROM f LEFT JOIN (SELECT * FROM cand WHERE rn = 1) AS m USING (event_id)
            """,
            f=frame,
            s=snaps,
        )
        group_stats[name] = {
            "joined_rows": int(frame["kept"].sum()),
            "null_rows": int((~frame["kept"]).sum()),
            "ttl_dropped_rows": int(frame["stale"].sum()),
            "max_available_minus_event_seconds": seconds(frame["ahead"].max()),  # type: ignore[arg-type]
        }
        frame = frame.drop("kept", "stale", "ahead")

    hidden = dict.fromkeys(SPLITS, 0)
    shown = dict.fromkeys(SPLITS, 0)
    gap: dict[str, float | None] = dict.fromkeys(SPLITS, None)
    for row in label_stats.iter_rows(named=True):
        hidden[row["split"]] = row["hidden"]
        shown[row["split"]] = row["shown"]
        gap[row["split"]] = seconds(row["gap"])
    audit = {"groups": group_stats, "hidden": hidden, "shown": shown, "gap": gap}
    expected = frame.select(
        "event_id",
        "t",
        "split",
        "label",
        "amount",
        "cust_fg__spend",
        "cust_fg__n_tx",
        "term_fg__risk",
    )
    return expected, audit


def comparable(frame: pl.DataFrame) -> pl.DataFrame:
    return (
        frame.with_columns(t=pl.col("event_time").dt.epoch("us"))
        .select(
            "event_id",
            "t",
            "split",
            pl.col("label").cast(pl.Int64),
            "amount",
            "cust_fg__spend",
            "cust_fg__n_tx",
            "term_fg__risk",
        )
        .sort("event_id")
    )


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict]:
    """Frames built from three random catalogs under both missing-label rules (built once)."""
    out = {}
    for seed in (1, 2, 3):
        data = random_catalog_data(seed)
        for missing in ("negative", "exclude"):
            root = tmp_path_factory.mktemp(f"catalog_{seed}_{missing}")
            out[seed, missing] = (data, build(root, data, missing), frame_oracle(data, missing))
    yield out


CASES = [(s, m) for s in (1, 2, 3) for m in ("negative", "exclude")]


@pytest.mark.parametrize(("seed", "missing"), CASES)
def test_training_frame_matches_sql_oracle(built: dict, seed: int, missing: str) -> None:
    data, tf, (expected, _) = built[seed, missing]
    assert tf.frame.columns == [
        "event_id",
        "event_time",
        "split",
        "label",
        "amount",
        "cust_fg__spend",
        "cust_fg__n_tx",
        "term_fg__risk",
    ]
    assert tf.feature_names == ["amount", "cust_fg__spend", "cust_fg__n_tx", "term_fg__risk"]
    got = comparable(tf.frame)
    assert_frame_equal(got, expected.sort("event_id"), check_dtypes=False)
    # the oracle is not vacuous: every rule the frame applies has cases in the data
    assert set(expected["split"]) == set(SPLITS)
    assert expected["cust_fg__spend"].null_count() > 0
    assert expected["cust_fg__spend"].null_count() < expected.height
    if missing == "exclude":
        assert expected.height < data.events.height
        assert expected["label"].null_count() == 0


@pytest.mark.parametrize(("seed", "missing"), CASES)
def test_leakage_audit_label_counts_match_sql_oracle(built: dict, seed: int, missing: str):
    _, tf, (_, audit) = built[seed, missing]
    a = tf.audit
    assert a.passed and a.violations == []
    assert a.labels_hidden_by_cut == audit["hidden"]
    assert a.labels_visible == audit["shown"]
    assert a.max_label_observed_minus_cut_seconds == audit["gap"]
    assert sum(audit["hidden"].values()) > 0  # labels at or after the cut exist in the data
    w = a.windows
    assert (w.cut, w.train_cut) == (CUT, TRAIN_CUT)
    assert (w.train_window.start, w.train_window.end) == WINDOWS["train"]
    assert (w.eval_windows["val"].start, w.eval_windows["val"].end) == WINDOWS["val"]
    assert (w.eval_windows["test"].start, w.eval_windows["test"].end) == WINDOWS["test"]
    assert w.missing_label == missing


@pytest.mark.parametrize(("seed", "missing"), CASES)
def test_leakage_audit_feature_group_counts_match_sql_oracle(
    built: dict, seed: int, missing: str
) -> None:
    _, tf, (_, audit) = built[seed, missing]
    groups = {g.name: g for g in tf.audit.feature_groups}
    assert list(groups) == ["cust_fg", "term_fg"]
    assert groups["cust_fg"].ttl_seconds == CUST_TTL_HOURS * 3600
    assert groups["term_fg"].ttl_seconds is None
    for name, expected in audit["groups"].items():
        g = groups[name]
        got = {
            "joined_rows": g.joined_rows,
            "null_rows": g.null_rows,
            "ttl_dropped_rows": g.ttl_dropped_rows,
            "max_available_minus_event_seconds": g.max_available_minus_event_seconds,
        }
        assert got == expected, name
        assert g.max_available_minus_event_seconds is not None
        assert g.max_available_minus_event_seconds <= 0
    assert audit["groups"]["cust_fg"]["ttl_dropped_rows"] > 0
    assert audit["groups"]["term_fg"]["ttl_dropped_rows"] == 0


def test_frame_is_insensitive_to_snapshot_row_order_within_files(tmp_path: Path) -> None:
    """The Polars join_asof trap: an unsorted right side must not change which snapshot wins."""
    data = random_catalog_data(11, unique_valid_from=True)
    rng = np.random.default_rng(12)

    def shuffled(files: list[pl.DataFrame]) -> list[pl.DataFrame]:
        return [f.sample(fraction=1.0, shuffle=True, seed=int(rng.integers(2**31))) for f in files]

    other = CatalogData(
        data.events, data.labels, shuffled(data.cust_files), shuffled(data.term_files)
    )
    assert not all(a.equals(b) for a, b in zip(data.cust_files, other.cust_files, strict=True))
    first = build(tmp_path / "a", data)
    second = build(tmp_path / "b", other)
    assert_frame_equal(first.frame, second.frame)
    assert first.audit == second.audit
    # and both agree with the oracle, which is blind to row order by construction
    expected, _ = frame_oracle(data, "negative")
    assert_frame_equal(comparable(first.frame), expected.sort("event_id"), check_dtypes=False)


def test_duplicate_snapshots_keep_latest_valid_from_then_last_written(tmp_path: Path) -> None:
    a = epoch_us(datetime(2026, 2, 28, 6, tzinfo=UTC))  # inside the train window
    events = pl.DataFrame(
        {
            "event_id": ["c1", "c2", "c3", "c4", "c5", "c6"],
            "event_time": ts([a + HOUR] * 4 + [a - 1, a + HOUR]),
            "customer_id": [1, 2, 3, 9, 1, 4],
            "terminal_id": [0, 0, 0, 0, 0, 0],
            "amount": [1.0, 2.0, 3.0, 4.0, 5.0, 6.0],
        }
    )
    labels = pl.DataFrame(
        {
            "event_id": ["c1"],
            "label_family": ["fraud"],
            "label_value": [1],
            "observed_time": ts([a + 2 * HOUR]),
        }
    )

    def snap(rows: list[tuple[int, int, int, float]]) -> pl.DataFrame:
        c, vf, av, s = zip(*rows, strict=True)
        return pl.DataFrame(
            {
                "customer_id": list(c),
                "valid_from": ts(list(vf)),
                "available_at": ts(list(av)),
                "spend": list(s),
                "n_tx": [0] * len(rows),
            }
        )

    file0 = snap(
        [
            (1, a - HOUR, a, 20.0),  # customer 1: latest valid_from, written first
            (1, a - 2 * HOUR, a, 10.0),
            (2, a - HOUR, a, 30.0),  # customer 2: same valid_from in two files ...
            # customer 4: describes a - 9 h but written 1 µs after c6 happened: invisible to it
            (4, a - 9 * HOUR, a + HOUR + 1, 70.0),
        ]
    )
    file1 = snap(
        [
            (2, a - HOUR, a, 40.0),  # ... the last written wins
            (3, a - HOUR, a, 50.0),  # customer 3: same valid_from twice in one file
            (3, a - HOUR, a, 60.0),
        ]
    )
    term = pl.DataFrame(
        {
            "terminal_id": [0],
            "valid_from": ts([a - DAY]),
            "available_at": ts([a - DAY]),
            "risk": [0.5],
        }
    )
    tf = build(tmp_path, CatalogData(events, labels, [file0, file1], [term]))
    got = dict(zip(tf.frame["event_id"], tf.frame["cust_fg__spend"], strict=True))
    # c4: customer 9 has no snapshot, kept with null features; c5 happened 1 µs before
    # customer 1's first snapshot became available
    assert got == {"c1": 20.0, "c2": 40.0, "c3": 60.0, "c4": None, "c5": None, "c6": None}
    labels_got = dict(zip(tf.frame["event_id"], tf.frame["label"], strict=True))
    assert labels_got == {"c1": 1, "c2": 0, "c3": 0, "c4": 0, "c5": 0, "c6": 0}
    (cust,) = (g for g in tf.audit.feature_groups if g.name == "cust_fg")
    assert (cust.joined_rows, cust.null_rows, cust.ttl_dropped_rows) == (3, 3, 0)
    assert cust.max_available_minus_event_seconds == -3600.0


def one_terminal(available_us: int) -> pl.DataFrame:
    """term_fg with one snapshot of terminal 0: for tests about the other group."""
    return pl.DataFrame(
        {
            "terminal_id": [0],
            "valid_from": ts([available_us]),
            "available_at": ts([available_us]),
            "risk": [0.5],
        }
    )


def test_nanosecond_availability_rounds_up_to_the_next_microsecond(tmp_path: Path) -> None:
    """Frames hold microseconds; a snapshot file in nanoseconds must not lose the 800 ns by
    which a snapshot came after an event (truncating would join it, and the audit, measuring
    the truncated times, would pass it)."""
    a = epoch_us(datetime(2026, 2, 28, 6, tzinfo=UTC))  # inside the train window
    events = pl.DataFrame(
        {
            "event_id": ["late", "exact", "before"],
            "event_time": ts([a, a, a]),
            "customer_id": [1, 2, 3],
            "terminal_id": [0, 0, 0],
            "amount": [1.0, 2.0, 3.0],
        }
    )
    labels = pl.DataFrame(
        {"event_id": ["late"], "label_family": ["fraud"], "label_value": [1]}
    ).with_columns(observed_time=ts([a + HOUR]))
    ns = [
        (1, (a - HOUR) * 1000, 10.0),  # customer 1: an hour-old snapshot ...
        (1, a * 1000 + 800, 11.0),  # ... and one written 800 ns after the event
        (2, a * 1000, 20.0),  # customer 2: available at the event's very nanosecond
        (3, a * 1000 - 1, 30.0),  # customer 3: one nanosecond before it
    ]
    c, av, s = zip(*ns, strict=True)
    available = pl.Series(list(av)).cast(pl.Datetime("ns")).dt.replace_time_zone("UTC")
    cust = pl.DataFrame(
        {"customer_id": list(c), "valid_from": available, "available_at": available, "spend": s}
    )
    assert cust.schema["available_at"] == pl.Datetime("ns", "UTC")
    tf = build(tmp_path, CatalogData(events, labels, [cust], [one_terminal(a - DAY)]))
    got = dict(zip(tf.frame["event_id"], tf.frame["cust_fg__spend"], strict=True))
    assert got == {"late": 10.0, "exact": 20.0, "before": 30.0}
    # the audit measures the times the join used: customer 3's rounded up to the event's µs
    (group,) = (g for g in tf.audit.feature_groups if g.name == "cust_fg")
    assert group.max_available_minus_event_seconds == 0.0
    assert group.max_snapshot_age_seconds == 3600.0


def test_nanosecond_times_order_labels_and_snapshots_within_a_microsecond(tmp_path: Path) -> None:
    """Labels and snapshots in nanoseconds, less than a microsecond apart: the latest is the
    later one by its exact time. Rounded to microseconds first, they tied, and the tiebreak
    (larger label, later valid_from, last written) picked the earlier one, with the audit
    passing (found in review)."""
    a = epoch_us(datetime(2026, 2, 28, 6, tzinfo=UTC))  # inside the train window
    ns = pl.Datetime("ns", "UTC")
    events = pl.DataFrame(
        {
            "event_id": ["e1", "e2"],
            "event_time": ts([a + HOUR, a + HOUR]),
            "customer_id": [1, 2],
            "terminal_id": [0, 0],
            "amount": [1.0, 2.0],
        }
    )
    t = (a + 2 * HOUR) * 1000  # in ns
    labels = pl.DataFrame(
        {
            "event_id": ["e1", "e1", "e2", "e2"],
            "label_family": ["fraud"] * 4,
            # e1: a chargeback reversed 800 ns later; e2: a 0 then a 1 400 ns later
            "label_value": [1, 0, 0, 1],
            "observed_time": pl.Series([t + 100, t + 900, t + 100, t + 500]).cast(ns),
        }
    )
    s = a * 1000
    cust = pl.DataFrame(
        {
            # the newer snapshot written first; customer 2: valid_from decides within one
            # exact time, as it does at microseconds
            "customer_id": [1, 1, 2, 2],
            "valid_from": pl.Series([s + 900, s + 100, s + 600, s + 300]).cast(ns),
            "available_at": pl.Series([s + 900, s + 100, s + 500, s + 500]).cast(ns),
            "spend": [222.0, 111.0, 30.0, 20.0],
            "n_tx": [0, 0, 0, 0],
        }
    )
    tf = build(tmp_path, CatalogData(events, labels, [cust], [one_terminal(a - DAY)]))
    got = {r["event_id"]: r for r in tf.frame.iter_rows(named=True)}
    assert (got["e1"]["label"], got["e1"]["cust_fg__spend"]) == (0, 222.0)
    assert (got["e2"]["label"], got["e2"]["cust_fg__spend"]) == (1, 30.0)
    # every time rule holds (of two rows, any feature ranks the labels perfectly)
    assert {r.rule for r in tf.audit.rules if not r.passed} == {"no_label_derived_features"}
