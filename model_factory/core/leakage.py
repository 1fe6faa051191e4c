"""The leakage audit: every rule of ARCHITECTURE §4 measured on the frame's own evidence.

The frame builder leaves, per row, the ``available_at`` of each group's matched snapshot
(``__avail__<group>``, before the TTL) and the ``observed_time`` of the label it used
(``__label_observed``). The audit recomputes every rule from those columns, the windows and
the policy, so a builder that joined on the wrong column, skipped the TTL, read labels past their
cut or kept unlabeled rows is caught by measurement, not by trusting the code that built it.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

import numpy as np
import polars as pl

from model_factory.contracts import (
    AuditRule,
    FeatureGroupAudit,
    FeatureSpec,
    GovernancePolicy,
    GroupSplitAudit,
    LabelMaturity,
    LeakageAudit,
    LeakagePolicy,
)
from model_factory.core.governance import pii_columns
from model_factory.core.splits import SPLITS, by_split
from model_factory.core.windows import label_cut

LABEL_OBSERVED = "__label_observed"
# Columns that carry the answer: a feature with one of these names is label-derived.
LABEL_NAMES = frozenset(
    {
        "label",
        "label_value",
        "label_family",
        "observed_time",
        "split",
        "label_cut",
        "is_fraud",
        "fraud",
    }
)
# A feature that alone ranks the label (almost) perfectly is the label in disguise.
LABEL_DERIVED_AUC = 0.999
AUC_SAMPLE_ROWS = 20_000
_US = timedelta(microseconds=1)


def avail_column(group: str) -> str:
    """Evidence column: available_at of the group's matched snapshot (before the TTL)."""
    return f"__avail__{group}"


@dataclass(frozen=True)
class GroupJoin:
    """What the builder joined for one feature group: frame columns and rules."""

    name: str
    version: str
    keys: list[str]
    ttl: timedelta | None
    columns: list[str]


def _seconds(value: timedelta | None) -> float | None:
    return None if value is None else value / timedelta(seconds=1)


def _stale(g: GroupJoin) -> pl.Expr:
    t, avail = pl.col("event_time"), pl.col(avail_column(g.name))
    return (avail.is_not_null() & (t - avail > g.ttl)) if g.ttl is not None else pl.lit(False)


def _group_columns(g: GroupJoin) -> list[pl.Expr]:
    """Per row, what the group's figures aggregate: joined, past the TTL, available_at -
    event_time and event_time - available_at of joined rows (null otherwise)."""
    t, avail = pl.col("event_time"), pl.col(avail_column(g.name))
    stale = _stale(g)
    used = avail.is_not_null() & ~stale
    return [
        used.alias(f"{g.name}|used"),
        stale.alias(f"{g.name}|stale"),
        pl.when(used).then(avail - t).alias(f"{g.name}|ahead_row"),
        pl.when(used).then(t - avail).alias(f"{g.name}|age_row"),
    ]


def _group_aggs(g: GroupJoin) -> list[pl.Expr]:
    # plain sums and maxima over _group_columns: they aggregate fast within group_by
    return [
        pl.len().alias(f"{g.name}|rows"),
        pl.col(f"{g.name}|used").sum().alias(f"{g.name}|joined"),
        pl.col(f"{g.name}|stale").sum().alias(f"{g.name}|ttl_dropped"),
        pl.col(f"{g.name}|ahead_row").max().alias(f"{g.name}|ahead"),
        pl.col(f"{g.name}|age_row").max().alias(f"{g.name}|age"),
        pl.lit(0, dtype=pl.UInt32).alias(f"{g.name}|stale_values"),
    ]


def _stale_values(frame: pl.LazyFrame, g: GroupJoin) -> dict[str, dict]:
    """Per split, rows past the TTL that still carry values of the group, and their max age."""
    if g.ttl is None or not g.columns:
        return {}
    # the test is one boolean per row over every column: no row's values are copied
    carries = _stale(g) & pl.any_horizontal([pl.col(c).is_not_null() for c in g.columns])
    found = (
        frame.select("split", age=pl.col("event_time") - pl.col(avail_column(g.name)), bad=carries)
        .filter("bad")
        .group_by("split")
        .agg(n=pl.len(), age=pl.col("age").max())
        .collect()
    )
    return {r["split"]: r for r in found.iter_rows(named=True)}


def _split_audit(row: dict, name: str) -> tuple[GroupSplitAudit, int]:
    rows, joined = int(row[f"{name}|rows"]), int(row[f"{name}|joined"])
    return GroupSplitAudit(
        rows=rows,
        joined_rows=joined,
        null_rows=rows - joined,
        ttl_dropped_rows=int(row[f"{name}|ttl_dropped"]),
        max_available_minus_event_seconds=_seconds(row[f"{name}|ahead"]),
        max_snapshot_age_seconds=_seconds(row[f"{name}|age"]),
    ), int(row[f"{name}|stale_values"])


def group_join_stats(frame: pl.DataFrame, g: GroupJoin) -> GroupSplitAudit:
    """One group's counts over the joined rows of the whole frame (evidence column present)."""
    row = frame.select(_group_columns(g)).select(_group_aggs(g)).row(0, named=True)
    return _split_audit(row, g.name)[0]


def _feature_groups(
    frame: pl.DataFrame | pl.LazyFrame, groups: list[GroupJoin]
) -> tuple[list[FeatureGroupAudit], dict[str, int]]:
    if not groups:
        return [], {}
    # one pass per split; the whole frame's figures are their sums and maxima
    columns = [e for g in groups for e in _group_columns(g)]
    aggs = [e for g in groups for e in _group_aggs(g)]
    per_split = by_split(frame, aggs, columns)
    audits, stale_values = [], {}
    for g in groups:
        for split, extra in _stale_values(frame.lazy(), g).items():  # values read past the TTL
            row = per_split[split]
            row[f"{g.name}|stale_values"] = extra["n"]
            ages = [a for a in (row[f"{g.name}|age"], extra["age"]) if a is not None]
            row[f"{g.name}|age"] = max(ages) if ages else None
        parts = {s: _split_audit(per_split[s], g.name) for s in SPLITS if s in per_split}
        splits = {s: a for s, (a, _) in parts.items()}
        stale_values[g.name] = sum(v for _, v in parts.values())

        def peak(field: str, splits: dict[str, GroupSplitAudit] = splits) -> float | None:
            values = [getattr(a, field) for a in splits.values() if getattr(a, field) is not None]
            return max(values) if values else None

        audits.append(
            FeatureGroupAudit(
                name=g.name,
                version=g.version,
                keys=g.keys,
                ttl_seconds=int(g.ttl.total_seconds()) if g.ttl is not None else None,
                joined_rows=sum(a.joined_rows for a in splits.values()),
                null_rows=sum(a.null_rows for a in splits.values()),
                ttl_dropped_rows=sum(a.ttl_dropped_rows for a in splits.values()),
                max_available_minus_event_seconds=peak("max_available_minus_event_seconds"),
                max_snapshot_age_seconds=peak("max_snapshot_age_seconds"),
                splits=splits,
            )
        )
    return audits, stale_values


def _window_rule(w: LeakagePolicy) -> AuditRule:
    train, val, test = w.train_window, w.eval_windows["val"], w.eval_windows["test"]
    maturity = w.cut - test.end
    problems = []
    if not (train.end <= val.start and val.end <= test.start):
        problems.append("train, val and test are not ordered and disjoint")
    if maturity < timedelta(0):
        problems.append(f"test ends {test.end} after the cut {w.cut}")
    if val.end + maturity > w.train_cut:
        problems.append(
            f"validation ends {val.end}, less than the maturity gap {maturity} "
            f"before the train cut {w.train_cut}"
        )
    if w.train_cut > test.start:
        problems.append(f"the train cut {w.train_cut} is after the test start {test.start}")
    detail = "; ".join(problems) or (
        f"train [{train.start:%Y-%m-%d %H:%M}, {train.end:%Y-%m-%d %H:%M}) < val "
        f"[{val.start:%Y-%m-%d %H:%M}, {val.end:%Y-%m-%d %H:%M}) < test "
        f"[{test.start:%Y-%m-%d %H:%M}, {test.end:%Y-%m-%d %H:%M}), maturity gap {maturity}, "
        f"train cut {w.train_cut:%Y-%m-%d %H:%M}, cut {w.cut:%Y-%m-%d %H:%M}"
    )
    return AuditRule(rule="windows_ordered", passed=not problems, detail=detail)


def _policy_cut(w: LeakagePolicy) -> pl.Expr:
    return (
        pl.when(pl.col("split") == "test")
        .then(pl.lit(label_cut(w, "test")))
        .otherwise(pl.lit(label_cut(w, "train")))
    )


def _inside_rule(frame: pl.LazyFrame, w: LeakagePolicy) -> AuditRule:
    t = pl.col("event_time")
    inside = pl.lit(False)
    for name, win in (("train", w.train_window), *w.eval_windows.items()):
        inside = inside | ((pl.col("split") == name) & (t >= win.start) & (t < win.end))
    outside, rows = frame.select((~inside.fill_null(False)).sum(), pl.len()).collect().row(0)
    return AuditRule(
        rule="events_inside_split_windows",
        passed=outside == 0,
        detail=f"{outside} of {rows} rows lie outside their split's window",
    )


def _label_rules(
    frame: pl.LazyFrame, w: LeakagePolicy, gap: dict[str, float | None]
) -> list[AuditRule]:
    """Per split: the labels used, and every visible label, were observed before the cut."""
    used = (
        frame.select("split", LABEL_OBSERVED)
        .filter(pl.col(LABEL_OBSERVED).is_not_null())
        .group_by("split")
        .agg((pl.col(LABEL_OBSERVED) - _policy_cut(w)).max().alias("gap"))
        .collect()
    )
    used_gap = {r["split"]: _seconds(r["gap"]) for r in used.iter_rows(named=True)}
    rules = []
    for s in SPLITS:
        worst = [v for v in (used_gap.get(s), gap.get(s)) if v is not None]
        over = max(worst) if worst else None
        ok = over is None or over < 0
        detail = (
            "no label used"
            if over is None
            else f"latest label observed {-over:.0f}s before the cut {label_cut(w, s)}"
            if ok
            else f"a label observed {over:.0f}s at or after the cut {label_cut(w, s)} is used"
        )
        rules.append(
            AuditRule(rule="labels_observed_before_cut", subject=s, passed=ok, detail=detail)
        )
    return rules


def _unlabeled_rule(frame: pl.LazyFrame, rule: str) -> AuditRule:
    unlabeled = pl.col(LABEL_OBSERVED).is_null()
    if rule == "exclude":
        bad = int(frame.select(unlabeled.sum()).collect().item())
        detail = f"{bad} rows without a visible label remain (missing_label = exclude)"
    else:
        bad = int(frame.select((unlabeled & (pl.col("label") != 0)).sum()).collect().item())
        detail = f"{bad} rows without a visible label are not negative (missing_label = negative)"
    return AuditRule(rule="unlabeled_events_handled", passed=bad == 0, detail=detail)


def _source_column(spec: FeatureSpec) -> str:
    """The column a feature was read from: ``<group>__<column>`` less its group's prefix (the
    group named by its source, ``feature_group:<group>/<version>``)."""
    if not spec.source.startswith("feature_group:"):
        return spec.name
    group = spec.source.removeprefix("feature_group:").rsplit("/", 1)[0]
    return spec.name.removeprefix(f"{group}__")


def feature_label_auc(
    frame: pl.DataFrame | pl.LazyFrame,
    features: list[str],
    seed: int,
    rows: int = AUC_SAMPLE_ROWS,
) -> dict[str, float | None]:
    """ROC-AUC of each feature alone on a seeded sample of the training rows, against the label
    the model trains on, nulls and NaNs ranked lowest (a value present only for frauds is the
    label too). Every training row: under missing_label=negative the events without a visible
    label are the negatives, and "a label exists" is the label; among labelled rows alone such
    a proxy is constant.

    The sample is stratified by class: every fraud up to half the sample, the rest genuine (a
    rank AUC is the same on it), so a few frauds among millions are never all missed."""
    # the training rows of each class, found by Polars: as NumPy arrays of every row, the flags
    # and their row numbers would be fresh (huge) pages, the costliest memory on some machines
    in_train, fraud = pl.col("split") == "train", (pl.col("label") == 1).fill_null(False)
    flags = frame.lazy().select(fraud=in_train & fraud, genuine=in_train & ~fraud).collect()
    rng = np.random.default_rng(seed)

    def at_most(flag: str, n: int) -> np.ndarray:
        indices = flags[flag].arg_true().to_numpy()
        return indices if indices.size <= n else rng.choice(indices, n, replace=False)

    positives = at_most("fraud", rows // 2)
    negatives = at_most("genuine", rows - positives.size)
    eligible = np.sort(np.concatenate([positives, negatives])).astype(np.int64)
    if isinstance(frame, pl.DataFrame):
        train = frame.select("label", *features)[eligible]
    else:  # a file scan: filter on the row index, so only the sample is kept in memory
        train = (
            frame.select("label", *features)
            .with_row_index("__row")
            .filter(pl.col("__row").cast(pl.Int64).is_in(pl.Series(eligible).implode()))
            .drop("__row")
            .collect()
        )
    y = train["label"].to_numpy()
    pos, neg = int((y == 1).sum()), int((y != 1).sum())
    if not features or pos == 0 or neg == 0:
        return dict.fromkeys(features)
    ranks = train.select(
        pl.col(f).cast(pl.Float64).fill_nan(None).fill_null(-np.inf).rank("average").alias(f)
        for f in features
    )
    sums = ranks.filter(pl.Series(y == 1)).sum().row(0, named=True)
    return {f: round((sums[f] - pos * (pos + 1) / 2) / (pos * neg), 6) for f in features}


def audit_frame(
    frame: pl.DataFrame | pl.LazyFrame,
    *,
    windows: LeakagePolicy,
    groups: list[GroupJoin],
    schema: list[FeatureSpec],
    policy: GovernancePolicy,
    label_columns: set[str],
    hidden: dict[str, int],
    shown: dict[str, int],
    gap: dict[str, float | None],
    maturity: LabelMaturity | None,
    seed: int,
) -> LeakageAudit:
    """Measure every leakage rule on the frame's evidence columns; any failure is a violation.

    ``frame`` may be lazy (a scan of a frame written in streaming mode): each rule reads only
    the columns it needs."""
    original, frame = frame, frame.lazy()
    group_audits, stale_values = _feature_groups(original, groups)
    rules = [_window_rule(windows), _inside_rule(frame, windows)]
    for g in group_audits:
        ahead = g.max_available_minus_event_seconds
        rules.append(
            AuditRule(
                rule="features_available_before_event",
                subject=g.name,
                passed=ahead is None or ahead <= 0,
                detail="no snapshot joined"
                if ahead is None
                else f"max available_at - event_time over {g.joined_rows} joined rows = {ahead:g}s",
            )
        )
        if g.ttl_seconds is not None:
            bad = stale_values[g.name]
            rules.append(
                AuditRule(
                    rule="snapshots_within_ttl",
                    subject=g.name,
                    passed=bad == 0,
                    detail=f"{g.ttl_dropped_rows} rows past the TTL {g.ttl_seconds}s got null "
                    f"features; {bad} carry values from a stale snapshot",
                )
            )
    rules += _label_rules(frame, windows, gap)
    rules.append(_unlabeled_rule(frame, windows.missing_label))
    names = [f.name for f in schema]
    # A group's feature is named <group>__<column>: the policy names the column, so both count.
    pii = pii_columns(policy, ["event_id", "event_time", "split", "label", *names])
    pii += [
        f.name for f in schema if f.name not in pii and pii_columns(policy, [_source_column(f)])
    ]
    by_name = [
        f.name
        for f in schema
        if _source_column(f).lower() in LABEL_NAMES | {c.lower() for c in label_columns}
    ]
    denied = sorted({*pii, *by_name})
    rules.append(
        AuditRule(
            rule="no_denied_features",
            passed=not denied,
            detail=f"PII {pii}, label columns {by_name}"
            if denied
            else f"none of {len(names)} features is PII or a label column",
        )
    )
    aucs = feature_label_auc(original, names, seed)
    derived = [
        f for f, a in aucs.items() if a is not None and abs(a - 0.5) >= LABEL_DERIVED_AUC - 0.5
    ]
    rules.append(
        AuditRule(
            rule="no_label_derived_features",
            passed=not derived,
            detail=f"alone, {derived} rank the training labels with ROC-AUC "
            f"{[aucs[f] for f in derived]}"
            if derived
            else f"no feature alone ranks the training labels beyond AUC {LABEL_DERIVED_AUC} "
            f"(max {max((abs(a - 0.5) + 0.5 for a in aucs.values() if a is not None), default=0.5):.4f})",
        )
    )
    violations = [
        f"{r.rule}{f' [{r.subject}]' if r.subject else ''}: {r.detail}"
        for r in rules
        if not r.passed
    ]
    return LeakageAudit(
        passed=not violations,
        violations=violations,
        feature_groups=group_audits,
        labels_hidden_by_cut=hidden,
        labels_visible=shown,
        max_label_observed_minus_cut_seconds=gap,
        windows=windows,
        pii_columns_found=pii,
        rules=rules,
        label_maturity=maturity,
        denied_features=sorted({*denied, *derived}),
        feature_label_auc=aucs,
    )
