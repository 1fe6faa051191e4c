"""Train/val/test windows of a weekly partition (ARCHITECTURE §4)."""

from __future__ import annotations

import re
from datetime import UTC, date, datetime, timedelta

from model_factory.contracts import LeakagePolicy, SplitPolicy, TimeWindow
from model_factory.errors import WindowError

WEEK = timedelta(days=7)
_KEY = re.compile(r"\d{4}-\d{2}-\d{2}")


def week_start(partition_key: str) -> datetime:
    """The UTC Monday a partition key names; anything else is an error."""
    # fromisoformat also takes '20260302' and '2026-W10-1': one week, one spelling.
    if not _KEY.fullmatch(partition_key):
        raise WindowError(f"'{partition_key}' is not a YYYY-MM-DD date", field="partition_key")
    try:
        d = date.fromisoformat(partition_key)
    except ValueError as exc:
        raise WindowError(
            f"'{partition_key}' is not a YYYY-MM-DD date", field="partition_key"
        ) from exc
    if d.weekday() != 0:
        raise WindowError(
            f"{partition_key} is a {d:%A}, weekly partitions start on Monday", field="partition_key"
        )
    return datetime(d.year, d.month, d.day, tzinfo=UTC)


def resolve_windows(partition_key: str, split: SplitPolicy) -> LeakagePolicy:
    """Windows for the model of week W, built with exactly what was known at C = W + 7 days.

    test  = [C - maturity - test_days, C - maturity), labels observed < C
    val   = [train_cut - maturity - val_days, train_cut - maturity), labels observed < train_cut
    train = [val.start - train_days, val.start), labels observed < train_cut
    """
    cut = week_start(partition_key) + WEEK
    maturity = timedelta(days=split.label_maturity_days)
    test = TimeWindow(start=cut - maturity - timedelta(days=split.test_days), end=cut - maturity)
    train_cut = test.start
    val = TimeWindow(
        start=train_cut - maturity - timedelta(days=split.val_days), end=train_cut - maturity
    )
    train = TimeWindow(start=val.start - timedelta(days=split.train_days), end=val.start)
    policy = LeakagePolicy(
        cut=cut,
        train_cut=train_cut,
        train_window=train,
        eval_windows={"val": val, "test": test},
        missing_label=split.missing_label,
    )
    check_windows(policy)
    return policy


def check_windows(policy: LeakagePolicy) -> None:
    """Windows are ordered, do not overlap, and end before the cut; each split's labels are
    only looked up before its own cut."""
    train, val, test = policy.train_window, policy.eval_windows["val"], policy.eval_windows["test"]
    if not (train.end <= val.start and val.end <= test.start):
        raise WindowError(
            "train, val and test windows must be ordered and must not overlap", field="split_policy"
        )
    if test.end > policy.cut:
        raise WindowError(
            f"test window ends {test.end} after the cut {policy.cut}", field="split_policy"
        )
    if val.end > policy.train_cut:
        raise WindowError("validation window ends after the train cut", field="split_policy")


def label_cut(policy: LeakagePolicy, split: str) -> datetime:
    """Labels of a split's events are visible only if observed strictly before this instant."""
    return policy.cut if split == "test" else policy.train_cut


def data_span(policy: LeakagePolicy) -> TimeWindow:
    """All event time any split covers."""
    return TimeWindow(start=policy.train_window.start, end=policy.eval_windows["test"].end)
