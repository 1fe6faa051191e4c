"""Window arithmetic of a weekly partition, pinned to ARCHITECTURE §4."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from model_factory.contracts import SplitPolicy
from model_factory.core.windows import data_span, label_cut, resolve_windows, week_start
from model_factory.errors import WindowError

DAY = timedelta(days=1)
FIRST_MONDAY = date(1990, 1, 1)
assert FIRST_MONDAY.weekday() == 0


def utc(y: int, m: int, d: int) -> datetime:
    return datetime(y, m, d, tzinfo=UTC)


mondays = st.integers(min_value=0, max_value=3000).map(lambda k: FIRST_MONDAY + timedelta(weeks=k))
split_policies = st.builds(
    SplitPolicy,
    train_days=st.integers(1, 366),
    val_days=st.integers(1, 90),
    test_days=st.integers(1, 90),
    label_maturity_days=st.integers(0, 180),
    missing_label=st.sampled_from(["negative", "exclude"]),
)


def test_default_windows_of_one_week_match_the_architecture_table() -> None:
    # W = Monday 2026-03-02, so C = 2026-03-09; maturity 7, test 7, val 7, train 28.
    p = resolve_windows("2026-03-02", SplitPolicy())
    assert p.cut == utc(2026, 3, 9)
    assert (p.eval_windows["test"].start, p.eval_windows["test"].end) == (
        utc(2026, 2, 23),
        utc(2026, 3, 2),
    )
    assert p.train_cut == utc(2026, 2, 23)
    assert (p.eval_windows["val"].start, p.eval_windows["val"].end) == (
        utc(2026, 2, 9),
        utc(2026, 2, 16),
    )
    assert (p.train_window.start, p.train_window.end) == (utc(2026, 1, 12), utc(2026, 2, 9))
    assert p.missing_label == "negative"
    assert p.label_as_of_basis == "observed_time"
    assert p.feature_as_of_basis == "available_at"


def test_default_label_cuts_are_cut_for_test_and_train_cut_otherwise() -> None:
    p = resolve_windows("2026-03-02", SplitPolicy())
    assert label_cut(p, "test") == utc(2026, 3, 9)
    assert label_cut(p, "val") == utc(2026, 2, 23)
    assert label_cut(p, "train") == utc(2026, 2, 23)


def test_windows_across_a_year_boundary_and_a_leap_day() -> None:
    # W = Monday 2024-03-04, C = 2024-03-11; the test window spans 29 Feb.
    p = resolve_windows(
        "2024-03-04", SplitPolicy(train_days=3, val_days=2, test_days=5, label_maturity_days=1)
    )
    assert p.cut == utc(2024, 3, 11)
    assert p.eval_windows["test"].start == utc(2024, 3, 5)
    assert p.eval_windows["test"].end == utc(2024, 3, 10)
    assert p.train_cut == utc(2024, 3, 5)
    assert p.eval_windows["val"].start == utc(2024, 3, 2)
    assert p.eval_windows["val"].end == utc(2024, 3, 4)
    assert p.train_window.start == utc(2024, 2, 28)
    assert p.train_window.end == utc(2024, 3, 2)
    # W = Monday 2024-01-01: the train window lies in the previous year.
    q = resolve_windows("2024-01-01", SplitPolicy())
    assert q.cut == utc(2024, 1, 8)
    assert q.eval_windows["test"].start == utc(2023, 12, 25)
    assert q.train_window.start == utc(2023, 11, 13)


def test_zero_maturity_makes_windows_adjacent_and_test_end_at_the_cut() -> None:
    p = resolve_windows(
        "2026-03-02", SplitPolicy(train_days=10, val_days=4, test_days=3, label_maturity_days=0)
    )
    test, val, train = p.eval_windows["test"], p.eval_windows["val"], p.train_window
    assert test.end == p.cut == utc(2026, 3, 9)
    assert test.start == p.train_cut == utc(2026, 3, 6)
    assert val.end == test.start
    assert train.end == val.start == utc(2026, 3, 2)
    assert train.start == utc(2026, 2, 20)


@settings(max_examples=200, deadline=None)
@given(monday=mondays, split=split_policies)
def test_windows_are_ordered_sized_and_before_the_cut(monday: date, split: SplitPolicy) -> None:
    p = resolve_windows(monday.isoformat(), split)
    w = datetime(monday.year, monday.month, monday.day, tzinfo=UTC)
    train, val, test = p.train_window, p.eval_windows["val"], p.eval_windows["test"]
    maturity = split.label_maturity_days * DAY

    assert p.cut == w + 7 * DAY
    for window in (train, val, test):
        assert window.start.tzinfo is not None and window.start.utcoffset() == timedelta(0)
        assert window.start.time() == window.end.time() == datetime.min.time()
    # lengths are the policy's
    assert train.end - train.start == split.train_days * DAY
    assert val.end - val.start == split.val_days * DAY
    assert test.end - test.start == split.test_days * DAY
    # anchors of §4
    assert test.end == p.cut - maturity
    assert p.train_cut == test.start
    assert val.end == p.train_cut - maturity
    assert train.end == val.start
    # ordered, non-overlapping, all before the cut
    assert train.start < train.end <= val.start < val.end <= test.start < test.end <= p.cut
    assert not train.overlaps(val) and not val.overlaps(test) and not train.overlaps(test)
    assert val.end <= p.train_cut < p.cut
    # the gap between val and test is the maturity exactly
    assert test.start - val.end == maturity
    # label cuts
    assert label_cut(p, "test") == p.cut
    assert label_cut(p, "val") == p.train_cut
    assert label_cut(p, "train") == p.train_cut
    # the span of event time
    span = data_span(p)
    assert (span.start, span.end) == (train.start, test.end)
    assert p.missing_label == split.missing_label


@settings(max_examples=100, deadline=None)
@given(
    day=st.dates(min_value=date(1990, 1, 1), max_value=date(2100, 12, 31)).filter(
        lambda d: d.weekday() != 0
    )
)
def test_non_monday_partition_key_is_a_window_error_naming_partition_key(day: date) -> None:
    with pytest.raises(WindowError) as info:
        resolve_windows(day.isoformat(), SplitPolicy())
    assert info.value.field == "partition_key"
    assert "partition_key" in str(info.value)
    assert "Monday" in str(info.value)


@pytest.mark.parametrize(
    "key",
    [
        "",
        "not-a-date",
        "2026-3-2",
        "2026-02-30",
        "2026-13-02",
        "2026-03-02T00:00",
        " 2026-03-02",
        "2026-03-02 ",
        "02/03/2026",
    ],
)
def test_malformed_partition_key_is_a_window_error_naming_partition_key(key: str) -> None:
    with pytest.raises(WindowError) as info:
        resolve_windows(key, SplitPolicy())
    assert info.value.field == "partition_key"
    assert "partition_key" in str(info.value)


@pytest.mark.parametrize("key", ["20260302", "2026-W10-1", "2026W101"])
def test_non_canonical_spellings_of_a_monday_are_rejected(key: str) -> None:
    """Partition keys are YYYY-MM-DD: another spelling of the same Monday would name the same
    week with a different key (and so a different train_run_id)."""
    with pytest.raises(WindowError) as info:
        week_start(key)
    assert info.value.field == "partition_key"


def test_week_start_is_midnight_utc_of_the_monday() -> None:
    assert week_start("2026-03-02") == utc(2026, 3, 2)
    assert week_start("2026-03-02").tzinfo == UTC
