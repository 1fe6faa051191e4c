"""Per-split figures: the slices of a frame sorted by time give what a group-by gives."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest

from model_factory.core.splits import by_split, split_runs

AGGS = [
    pl.len().alias("rows"),
    pl.col("x").sum().alias("x_sum"),
    pl.col("x").max().alias("x_max"),
    pl.col("flag").sum().alias("flags"),
]


def _frame(seed: int, order: str) -> pl.DataFrame:
    rng = np.random.default_rng(seed)
    n = 5_000
    split = np.repeat(np.array(["train", "val", "test"]), [3_000, 1_200, 800])
    frame = pl.DataFrame(
        {
            "split": split,
            "x": rng.normal(size=n),
            "flag": rng.random(n) < 0.3,
        }
    ).with_columns(pl.col("split").cast(pl.Enum(["train", "val", "test"])))
    if order == "shuffled":
        frame = frame.sample(fraction=1.0, shuffle=True, seed=seed)
    return frame


def _grouped(frame: pl.DataFrame, aggs: list[pl.Expr]) -> dict:
    rows = frame.group_by("split").agg(aggs).iter_rows(named=True)
    return {r.pop("split"): r for r in rows}


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_the_slices_of_a_sorted_frame_give_the_group_by_figures(seed):
    frame = _frame(seed, "runs")
    assert split_runs(frame) == {"train": (0, 3000), "val": (3000, 1200), "test": (4200, 800)}
    figures = by_split(frame, AGGS)
    expected = _grouped(frame, AGGS)
    assert figures.keys() == expected.keys() == {"train", "val", "test"}
    for split, row in expected.items():
        assert figures[split]["rows"] == row["rows"]
        assert figures[split]["flags"] == row["flags"]
        assert figures[split]["x_max"] == row["x_max"]
        assert figures[split]["x_sum"] == pytest.approx(row["x_sum"])


def test_a_frame_whose_splits_interleave_is_grouped_and_gives_the_same_figures():
    runs, shuffled = _frame(4, "runs"), _frame(4, "shuffled")
    assert split_runs(shuffled) is None
    a, b = by_split(runs, AGGS), by_split(shuffled, AGGS)
    assert a.keys() == b.keys()
    for split in a:
        assert a[split]["rows"] == b[split]["rows"]
        assert a[split]["flags"] == b[split]["flags"]
        assert a[split]["x_sum"] == pytest.approx(b[split]["x_sum"])


def test_per_row_columns_are_computed_before_the_figures_in_both_ways():
    columns = [(pl.col("x") > 0).alias("positive"), (pl.col("x") * 2).alias("double")]
    aggs = [pl.col("positive").sum().alias("positives"), pl.col("double").min().alias("low")]
    runs, shuffled = _frame(5, "runs"), _frame(5, "shuffled")
    a, b = by_split(runs, aggs, columns), by_split(shuffled.lazy(), aggs, columns)
    assert a == b
    train = runs.filter(pl.col("split") == "train")
    assert a["train"]["positives"] == int((train["x"] > 0).sum())
    assert a["train"]["low"] == pytest.approx(2 * train["x"].min())


def test_an_empty_frame_has_no_split_and_a_null_split_is_a_split_of_its_own():
    empty = _frame(6, "runs").clear()
    assert by_split(empty, AGGS) == {}
    frame = pl.DataFrame(
        {"split": ["train", "train", None], "x": [1.0, 2.0, 5.0], "flag": [1, 0, 1]}
    )
    assert split_runs(frame) == {"train": (0, 2), None: (2, 1)}
    figures = by_split(frame, AGGS)
    assert figures[None]["rows"] == 1 and figures[None]["x_max"] == 5.0
    assert figures["train"]["x_sum"] == 3.0
