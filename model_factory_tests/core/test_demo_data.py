"""The demo data simulator: deterministic, leak-free by construction, and catalogued week by week."""

from __future__ import annotations

import hashlib
import shutil
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import pytest

from model_factory.core.demo_data import (
    CARD_STATUS,
    CHARGEBACKS,
    CUSTOMER_SPENDING,
    DEMO_DATASETS,
    TERMINAL_RISK,
    TRANSACTIONS,
    DemoDataSpec,
    card_numbers,
    demo_data_present,
    generate_demo_data,
    nearby_terminals,
)
from model_factory.core.manifests import Catalog, file_uris, verify_manifest_files
from model_factory.errors import ConfigError, ImmutabilityError

SPEC = DemoDataSpec(customers=300, terminals=600, weeks=10, seed=7)
EVENT_COLUMNS = [
    "event_id",
    "event_time",
    "customer_id",
    "terminal_id",
    "amount",
    "is_night",
    "is_weekend",
    "card_number",
    "customer_email",
]


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, dict[str, Any]]:
    url = str(tmp_path_factory.mktemp("demo_catalog"))
    return url, generate_demo_data(url, SPEC)


@pytest.fixture(scope="module")
def frames(demo: tuple[str, dict[str, Any]]) -> dict[str, pl.DataFrame]:
    """Every dataset read back through its manifests."""
    catalog = Catalog(demo[0])
    out = {}
    for ds in DEMO_DATASETS:
        entries = catalog.entries(ds.kind, ds.name, ds.version)
        out[ds.name] = pl.concat(
            [pl.read_parquet(uri) for e in entries for uri in file_uris(e.manifest, e.uri)]
        )
    return out


def _tree_digests(root: str) -> dict[str, str]:
    """sha256 of every manifest and data file under a catalog, by relative path."""
    base = Path(root)
    return {
        str(p.relative_to(base)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(base.rglob("*"))
        if p.is_file()
    }


def test_every_week_of_every_dataset_has_a_verified_manifest(demo):
    url, summary = demo
    catalog = Catalog(url)
    for ds in DEMO_DATASETS:
        entries = catalog.entries(ds.kind, ds.name, ds.version)
        assert [e.manifest.time_window for e in entries] == SPEC.windows()
        for e in entries:
            verify_manifest_files(e.manifest, e.uri)
            stem = Catalog.window_stem(e.manifest.time_window)
            assert [f.path for f in e.manifest.files] == [f"{stem}/part-0.parquet"]
            assert e.manifest.time_column == ds.time_column
            assert e.manifest.keys == list(ds.keys)
        assert sum(e.manifest.row_count for e in entries) == summary["rows"][ds.name]
    assert summary["manifests"] == len(DEMO_DATASETS) * SPEC.weeks
    assert demo_data_present(url, SPEC)


def test_demo_data_present_is_false_for_empty_partial_or_shorter_catalogs(demo, tmp_path):
    assert not demo_data_present(str(tmp_path / "empty"), SPEC)
    assert not demo_data_present(demo[0], DemoDataSpec(weeks=SPEC.weeks + 1))
    partial = tmp_path / "partial"
    shutil.copytree(demo[0], partial)
    last = Catalog.window_stem(SPEC.windows()[-1])
    (partial / "datasets" / "labels" / "chargebacks" / "v1" / f"{last}.json").unlink()
    assert not demo_data_present(str(partial), SPEC)


def test_same_seed_writes_identical_bytes(demo, tmp_path):
    again = str(tmp_path / "again")
    summary = generate_demo_data(again, SPEC)
    assert summary["rows"] == demo[1]["rows"]
    first, second = _tree_digests(demo[0]), _tree_digests(again)
    assert len(first) == 2 * len(DEMO_DATASETS) * SPEC.weeks  # a manifest and a file per week
    assert first == second


def test_another_seed_writes_other_data(demo, tmp_path):
    other = str(tmp_path / "other")
    generate_demo_data(other, DemoDataSpec(customers=300, terminals=600, weeks=10, seed=8))
    first, second = _tree_digests(demo[0]), _tree_digests(other)
    assert first.keys() == second.keys()
    events = [k for k in first if k.startswith("datasets/events/") and k.endswith(".parquet")]
    assert all(first[k] != second[k] for k in events)


def test_regenerating_is_a_no_op_and_another_seed_never_overwrites(demo, tmp_path):
    url = str(tmp_path / "copy")
    shutil.copytree(demo[0], url)
    before = _tree_digests(url)
    assert generate_demo_data(url, SPEC)["rows"] == demo[1]["rows"]
    assert _tree_digests(url) == before
    with pytest.raises(ImmutabilityError, match="different data file"):
        generate_demo_data(url, DemoDataSpec(customers=300, terminals=600, weeks=10, seed=9))
    assert _tree_digests(url) == before


def test_events_lie_in_their_windows_and_hide_the_ground_truth(demo):
    catalog = Catalog(demo[0])
    for e in catalog.entries(TRANSACTIONS.kind, TRANSACTIONS.name, TRANSACTIONS.version):
        frame = pl.read_parquet(file_uris(e.manifest, e.uri)[0])
        assert frame.columns == EVENT_COLUMNS
        assert frame.height > 0
        times = frame["event_time"]
        assert times.min() >= e.manifest.time_window.start
        assert times.max() < e.manifest.time_window.end
        assert times.is_sorted()
    assert (
        dict(zip(e.manifest.column_names(), [c.dtype for c in e.manifest.columns], strict=True))[
            "event_time"
        ]
        == "timestamp[us, tz=UTC]"
    )


def test_event_ids_are_unique_and_flags_match_the_clock(frames):
    events = frames[TRANSACTIONS.name]
    assert events["event_id"].n_unique() == events.height
    assert events["event_id"].str.contains(r"^tx-\d{9}$").all()
    hour, weekday = events["event_time"].dt.hour(), events["event_time"].dt.weekday()
    assert (events["is_night"] == (hour < 6).cast(pl.Int8)).all()
    assert (events["is_weekend"] == (weekday >= 6).cast(pl.Int8)).all()
    assert 0.05 < events["is_night"].mean() < 0.3  # daytime-heavy clock
    assert (events["amount"] > 0).all()


def test_fraud_rate_is_realistic_and_every_scenario_occurs(demo):
    summary = demo[1]
    assert 0.004 < summary["fraud_rate"] < 0.02
    assert all(n > 0 for n in summary["frauds_by_scenario"].values())
    assert sum(summary["frauds_by_scenario"].values()) == summary["frauds"]
    assert 0.8 * summary["frauds"] < summary["frauds_reported"] < summary["frauds"]


def test_every_label_is_observed_after_its_event(frames):
    labels, events = frames[CHARGEBACKS.name], frames[TRANSACTIONS.name]
    assert labels.columns == ["event_id", "label_family", "label_value", "observed_time"]
    joined = labels.join(events.select("event_id", "event_time"), on="event_id", how="left")
    assert joined["event_time"].null_count() == 0
    assert (joined["observed_time"] > joined["event_time"]).all()
    delay = joined["observed_time"] - joined["event_time"]
    assert delay.min() >= timedelta(days=1)
    assert delay.max() <= timedelta(days=61)
    assert (labels["label_family"] == "fraud").all()
    assert set(labels["label_value"].unique()) == {0, 1}


def test_false_chargebacks_are_reversed_by_a_later_label(frames):
    labels = frames[CHARGEBACKS.name]
    twice = (
        labels.sort("observed_time")
        .group_by("event_id")
        .agg(pl.col("label_value"), pl.col("observed_time"))
        .filter(pl.col("label_value").list.len() == 2)
    )
    assert twice.height > 0
    assert all(values == [1, 0] for values in twice["label_value"].to_list())
    assert all(t[0] < t[1] for t in twice["observed_time"].to_list())
    # No event ever carries more than a chargeback and its reversal.
    assert labels.group_by("event_id").len()["len"].max() == 2


def test_card_status_corrections_are_backdated_and_reissued_a_day_later(frames):
    status = frames[CARD_STATUS.name]
    start = SPEC.windows()[0].start
    initial = status.filter(pl.col("available_at") == start)
    assert initial["customer_id"].sort().to_list() == list(range(SPEC.customers))
    assert (initial["card_flagged"] == 0).all()
    flagged = status.filter(pl.col("card_flagged") == 1)
    assert flagged.height > 0
    assert (flagged["valid_from"] < flagged["available_at"]).all()
    reissued = flagged.select(
        "customer_id", available_at=pl.col("available_at") + timedelta(days=1)
    )
    zeros = status.filter(pl.col("card_flagged") == 0, pl.col("available_at") > start)
    inside = reissued.filter(pl.col("available_at") < SPEC.windows()[-1].end)
    assert inside.join(zeros, on=["customer_id", "available_at"], how="anti").height == 0
    assert (zeros["valid_from"] == zeros["available_at"]).all()


def test_card_status_would_leak_through_a_valid_from_join(frames):
    """Events between a compromise start and its discovery see the flag only via valid_from."""
    flagged = frames[CARD_STATUS.name].filter(pl.col("card_flagged") == 1)
    events = frames[TRANSACTIONS.name].select("customer_id", "event_time")
    exposed = events.join(flagged, on="customer_id").filter(
        pl.col("event_time") >= pl.col("valid_from"), pl.col("event_time") < pl.col("available_at")
    )
    assert exposed.height > 0


def test_feature_rows_are_sorted_and_unique_per_key_and_instant(frames):
    for ds in (CUSTOMER_SPENDING, TERMINAL_RISK, CARD_STATUS):
        frame = frames[ds.name]
        assert frame["available_at"].is_sorted()
        assert not frame.select(*ds.keys, "available_at").is_duplicated().any()
        assert (frame["valid_from"] <= frame["available_at"]).all()
        assert frame["available_at"].max() < SPEC.windows()[-1].end


def test_terminal_risk_counts_only_labels_observed_before_the_snapshot(frames):
    risk, events, labels = (
        frames[TERMINAL_RISK.name],
        frames[TRANSACTIONS.name],
        frames[CHARGEBACKS.name],
    )
    labelled = labels.join(events.select("event_id", "terminal_id"), on="event_id")["terminal_id"]
    sample = pl.concat(
        [
            risk.filter(pl.col("terminal_id").is_in(labelled.implode())).sample(40, seed=1),
            risk.sample(20, seed=2),
        ]
    ).unique(["terminal_id", "available_at"])
    in_window = (
        sample.rename({"available_at": "t"})
        .join(events.select("event_id", "terminal_id", "event_time"), on="terminal_id")
        .filter(
            pl.col("event_time") >= pl.col("t") - timedelta(days=28),
            pl.col("event_time") < pl.col("t"),
        )
    )
    counts = in_window.group_by("terminal_id", "t").agg(n=pl.len())
    with_labels = in_window.join(labels, on="event_id")
    assert with_labels.filter(pl.col("observed_time") >= pl.col("t")).height > 0  # test has teeth
    latest = (
        with_labels.filter(pl.col("observed_time") < pl.col("t"))
        .sort("observed_time")
        .group_by("terminal_id", "t", "event_id")
        .agg(pl.col("label_value").last())
        .group_by("terminal_id", "t")
        .agg(frauds=pl.col("label_value").sum())
    )
    check = (
        sample.rename({"available_at": "t"})
        .join(counts, on=["terminal_id", "t"], how="left")
        .join(latest, on=["terminal_id", "t"], how="left")
        .with_columns(pl.col("frauds").fill_null(0))
    )
    assert (check["n"] == check["term_tx_count_28d"]).all()
    assert np.allclose(check["term_risk_28d"], check["frauds"] / check["n"])
    assert (check["term_risk_28d"] > 0).any()
    assert (check["valid_from"] == check["t"]).all()


def test_customer_spending_matches_a_direct_recomputation(frames):
    spending, events = frames[CUSTOMER_SPENDING.name], frames[TRANSACTIONS.name]
    sample = spending.sample(60, seed=3)
    assert (sample["available_at"] - sample["valid_from"] == timedelta(hours=1)).all()
    for width in (1, 7, 30):
        direct = (
            sample.select("customer_id", "valid_from")
            .join(events.select("customer_id", "event_time", "amount"), on="customer_id")
            .filter(
                pl.col("event_time") >= pl.col("valid_from") - timedelta(days=width),
                pl.col("event_time") < pl.col("valid_from"),
            )
            .group_by("customer_id", "valid_from")
            .agg(n=pl.len(), mean=pl.col("amount").mean())
        )
        check = sample.join(direct, on=["customer_id", "valid_from"], how="left").with_columns(
            pl.col("n").fill_null(0)
        )
        assert (check["n"] == check[f"cust_tx_count_{width}d"]).all()
        mean = check[f"cust_mean_amount_{width}d"]
        assert (mean.is_null() == (check["n"] == 0)).all()  # no transactions: null, not 0
        both = check.filter(pl.col("n") > 0)
        assert np.allclose(both[f"cust_mean_amount_{width}d"], both["mean"], rtol=1e-9)


def test_card_numbers_are_distinct_per_customer_and_luhn_valid(frames):
    events = frames[TRANSACTIONS.name]
    per_customer = events.group_by("customer_id").agg(pl.col("card_number").n_unique())
    assert (per_customer["card_number"] == 1).all()
    cards = events.select("customer_id", "card_number").unique()
    assert cards["card_number"].n_unique() == cards.height
    many = card_numbers(np.arange(100_000))
    assert many.n_unique() == 100_000
    for number in many.sample(200, seed=4).to_list():
        assert len(number) == 16 and number.startswith("4")
        digits = [int(d) for d in reversed(number)]
        total = sum(digits[0::2]) + sum(sum(divmod(2 * d, 10)) for d in digits[1::2])
        assert total % 10 == 0


def test_every_customer_gets_at_least_one_terminal():
    cx, cy = np.array([1.0, 50.0, 99.0]), np.array([1.0, 50.0, 99.0])
    tx, ty = np.array([50.0, 52.0, 10.0]), np.array([50.0, 51.0, 90.0])
    indptr, indices = nearby_terminals(cx, cy, tx, ty, radius=5.0, chunk=2)
    assert np.diff(indptr).tolist() == [1, 2, 1]
    assert indices.tolist() == [0, 0, 1, 1]  # the far corners fall back to their nearest


def test_spec_rejects_a_start_that_is_not_a_monday():
    with pytest.raises(ConfigError, match="Monday"):
        DemoDataSpec(start=date(2026, 1, 6))
    with pytest.raises(ConfigError):
        DemoDataSpec(weeks=0)
