"""Precision of the k most suspicious transactions, and of the k most suspicious cards or
customers, per day of the test window (what an investigation team with capacity k sees)."""

from __future__ import annotations

import numpy as np
import polars as pl

from model_factory.contracts import DayTopK, TopKPrecision
from model_factory.core.bootstrap import wilson_ci


def _per_day(units: pl.DataFrame, k: int) -> list[DayTopK]:
    """``units``: day, score, hit (0/1), order; the k highest scores per day (ties by order)."""
    ranked = (
        units.sort(["day", "score", "order"], descending=[False, True, False])
        .with_columns(rank=pl.int_range(pl.len()).over("day"))
        .group_by("day", maintain_order=True)
        .agg(
            candidates=pl.len(),
            positives=pl.col("hit").sum(),
            flagged=(pl.col("rank") < k).sum(),
            hits=pl.col("hit").filter(pl.col("rank") < k).sum(),
        )
    )
    return [
        DayTopK(
            day=str(r["day"]),
            candidates=r["candidates"],
            flagged=r["flagged"],
            hits=r["hits"],
            positives=r["positives"],
            precision=r["hits"] / r["flagged"] if r["flagged"] else None,
        )
        for r in ranked.iter_rows(named=True)
    ]


def _summary(
    unit: str, entity_column: str | None, k: int, days: list[DayTopK], level: float
) -> TopKPrecision:
    flagged = sum(d.flagged for d in days)
    hits = sum(d.hits for d in days)
    positives = sum(d.positives for d in days)
    return TopKPrecision(
        unit=unit,
        entity_column=entity_column,
        k=k,  # type: ignore[arg-type]
        precision=hits / flagged if flagged else None,
        precision_ci=wilson_ci(hits, flagged, level),
        recall=hits / positives if positives else None,
        days=days,
    )


def top_k_precision(
    event_time: pl.Series,
    y: np.ndarray,
    score: np.ndarray,
    ks: list[int],
    entity: pl.Series | None = None,
    entity_column: str | None = None,
    level: float = 0.95,
) -> list[TopKPrecision]:
    """Per k: transactions ranked by score per UTC day; then, given each row's entity, entities
    ranked by their highest score that day (compromised: any fraud of theirs that day)."""
    rows = pl.DataFrame(
        {
            "day": event_time.dt.date(),
            "score": score,
            "hit": y.astype(np.int64),
            "order": np.arange(y.size),
        }
    )
    out = [_summary("transaction", None, k, _per_day(rows, k), level) for k in ks]
    if entity is not None:
        entities = (
            rows.with_columns(entity=entity.alias("entity"))
            .filter(pl.col("entity").is_not_null())
            .group_by("day", "entity")
            .agg(pl.col("score").max(), pl.col("hit").max(), pl.col("order").min())
        )
        out += [_summary("entity", entity_column, k, _per_day(entities, k), level) for k in ks]
    return out
