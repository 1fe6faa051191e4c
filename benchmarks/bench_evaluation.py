"""Benchmark of the evaluation report at 1M test rows (issue 4). Not a test: it prints timings.

    .venv/bin/python benchmarks/bench_evaluation.py [--rows 1000000] [--train-rows 4000000]

Prints, on a simulated fraud frame (about 1% positives, the demo's feature shapes; by default
the window lengths of the default split policy: 28 days of training for 7 of validation and 7
of test, so 4M training rows for 1M test rows):
  * training time of the XGBoost model (the yardstick the evaluation must stay small against);
  * the stratified bootstrap of ROC-AUC and PR-AUC (1,000 resamples) against the naive loop of
    scikit-learn calls on resampled rows (timed on a few resamples, extrapolated);
  * DeLong's interval and the paired candidate-vs-champion bootstrap;
  * the whole report at that size, split by part (metrics incl. bootstrap, operating points,
    top-k, slices, drift, SHAP, curves, latency probe).
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import polars as pl
from sklearn.metrics import average_precision_score, roc_auc_score

from model_factory.contracts import EvaluationSettings, LeakageAudit, SplitPolicy, XGBoostParams
from model_factory.core.bootstrap import bootstrap_cis, delong_ci, paired_bootstrap_delta
from model_factory.core.evaluation import build_report
from model_factory.core.training import feature_matrix, train_xgboost
from model_factory.core.windows import resolve_windows

WINDOWS = resolve_windows("2026-03-02", SplitPolicy())
FEATURES = [
    "amount",
    "is_night",
    "is_weekend",
    "customer_spending__cust_tx_count_1d",
    "customer_spending__cust_tx_count_7d",
    "customer_spending__cust_tx_count_30d",
    "customer_spending__cust_mean_amount_1d",
    "customer_spending__cust_mean_amount_7d",
    "customer_spending__cust_mean_amount_30d",
    "terminal_risk__term_tx_count_28d",
    "terminal_risk__term_risk_28d",
    "card_status__card_flagged",
]


def simulate(
    rng: np.random.Generator, split: str, start, days: int, n: int, shift: float
) -> pl.DataFrame:
    """A frame shaped like the demo's: amounts, time flags, customer and terminal aggregates."""
    amount = np.round(rng.lognormal(3.6 + shift, 0.8, n), 2)
    night = (rng.random(n) < 0.14).astype(np.int8)
    c30 = rng.poisson(60, n)
    c7, c1 = rng.binomial(c30, 0.25), rng.binomial(c30, 0.03)
    mean30 = rng.lognormal(3.7, 0.4, n)
    risk = rng.beta(0.5, 60, n)
    flagged = (rng.random(n) < 0.003).astype(np.int64)
    logit = (
        -7.3
        + 0.012 * amount
        + 0.6 * night
        + 25 * risk
        + 3.0 * flagged
        + 0.8 * np.log1p(amount / mean30)
        + rng.normal(0, 0.8, n)
    )
    y = (rng.random(n) < 1 / (1 + np.exp(-logit))).astype(np.int8)
    t_us = int(start.timestamp() * 1e6) + np.sort(rng.integers(0, days * 86_400 * 10**6, n))
    missing = rng.random(n) < 0.01
    return pl.DataFrame(
        {
            "event_id": pl.Series(np.arange(n))
            .cast(pl.String)
            .str.zfill(8)
            .str.replace("^", f"{split}-"),
            "event_time": pl.from_epoch(pl.Series(t_us), time_unit="us").dt.replace_time_zone(
                "UTC"
            ),
            "split": split,
            "label": y,
            "amount": amount,
            "is_night": night,
            "is_weekend": (rng.random(n) < 2 / 7).astype(np.int8),
            "customer_spending__cust_tx_count_1d": c1,
            "customer_spending__cust_tx_count_7d": c7,
            "customer_spending__cust_tx_count_30d": pl.Series(np.where(missing, -1, c30)).replace(
                -1, None
            ),
            "customer_spending__cust_mean_amount_1d": mean30 * rng.lognormal(0, 0.3, n),
            "customer_spending__cust_mean_amount_7d": mean30 * rng.lognormal(0, 0.15, n),
            "customer_spending__cust_mean_amount_30d": mean30,
            "terminal_risk__term_tx_count_28d": rng.poisson(150, n),
            "terminal_risk__term_risk_28d": risk,
            "card_status__card_flagged": flagged,
        }
    )


def seconds(fn):
    started = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - started


def naive_bootstrap(y: np.ndarray, s: np.ndarray, resamples: int, seed: int) -> float:
    """What the issue measured: resample rows per class, then scikit-learn per resample."""
    rng = np.random.default_rng(seed)
    pos, neg = np.nonzero(y == 1)[0], np.nonzero(y == 0)[0]
    started = time.perf_counter()
    for _ in range(resamples):
        rows = np.r_[rng.choice(pos, pos.size), rng.choice(neg, neg.size)]
        roc_auc_score(y[rows], s[rows])
        average_precision_score(y[rows], s[rows])
    return time.perf_counter() - started


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=1_000_000, help="test rows")
    ap.add_argument("--train-rows", type=int, default=4_000_000)
    ap.add_argument("--val-rows", type=int, default=1_000_000)
    ap.add_argument("--resamples", type=int, default=1000)
    ap.add_argument(
        "--naive-resamples",
        type=int,
        default=5,
        help="naive scikit-learn resamples actually run (then extrapolated)",
    )
    args = ap.parse_args()
    rng = np.random.default_rng(2026)
    w = WINDOWS
    frame, t_sim = seconds(
        lambda: pl.concat(
            [
                simulate(rng, "train", w.train_window.start, 28, args.train_rows, 0.0),
                simulate(rng, "val", w.eval_windows["val"].start, 7, args.val_rows, 0.0),
                simulate(rng, "test", w.eval_windows["test"].start, 7, args.rows, 0.15),
            ]
        )
    )
    test = frame.filter(pl.col("split") == "test")
    y = test["label"].to_numpy().astype(np.int64)
    print(
        f"simulated {frame.height:,} rows in {t_sim:.1f}s; test {test.height:,} rows, "
        f"{int(y.sum()):,} positives ({y.mean():.2%})"
    )

    trained, t_train = seconds(lambda: train_xgboost(frame, FEATURES, XGBoostParams()))
    print(
        f"training (XGBoost hist, 2 threads, {args.train_rows:,} rows, best iteration "
        f"{trained.best_iteration}): {t_train:.1f}s"
    )
    s = trained.predict(feature_matrix(test, FEATURES))
    print(f"distinct scores among positives: {np.unique(s[y == 1]).size:,}")

    print("\n== bootstrap, 1 metric pair (ROC-AUC + PR-AUC) ==")
    cis, t_boot = seconds(lambda: bootstrap_cis(y, s, resamples=args.resamples, seed=1))
    print(f"stratified cell bootstrap, {args.resamples} resamples, both metrics: {t_boot:.2f}s")
    for m, ci in cis.items():
        print(f"  {m}: [{ci.lower:.4f}, {ci.upper:.4f}]")
    _, t_roc = seconds(lambda: bootstrap_cis(y, s, ("roc_auc",), resamples=args.resamples, seed=1))
    print(f"  ROC-AUC alone: {t_roc:.2f}s")
    delong, t_delong = seconds(lambda: delong_ci(y, s))
    print(f"DeLong ROC-AUC interval: [{delong.lower:.4f}, {delong.upper:.4f}] in {t_delong:.2f}s")
    champion = s + np.random.default_rng(9).normal(0, 0.02, s.size)
    _, t_paired = seconds(
        lambda: paired_bootstrap_delta(y, s, champion, "roc_auc", resamples=args.resamples, seed=1)
    )
    print(
        f"paired candidate-vs-champion ROC-AUC delta, {args.resamples} resamples: {t_paired:.2f}s"
    )
    t_naive = naive_bootstrap(y, s, args.naive_resamples, seed=1)
    per = t_naive / args.naive_resamples
    print(
        f"naive scikit-learn loop: {per:.2f}s per resample -> {per * args.resamples:.0f}s for "
        f"{args.resamples} (extrapolated from {args.naive_resamples}); speed-up "
        f"{per * args.resamples / t_boot:.0f}x"
    )

    print("\n== the whole report at this size ==")
    customers = pl.Series(np.random.default_rng(3).integers(0, args.rows // 20, test.height))
    audit = LeakageAudit(
        passed=True,
        violations=[],
        feature_groups=[],
        labels_hidden_by_cut={},
        labels_visible={},
        max_label_observed_minus_cut_seconds={},
        windows=w,
        pii_columns_found=[],
    )
    report, t_report = seconds(
        lambda: build_report(
            train_run_id="mfr-" + "0" * 20,
            partition_key="2026-03-02",
            model_family="fraud_xgb",
            model_sha256="a" * 64,
            frame_sha256="b" * 64,
            frame=frame,
            features=FEATURES,
            trained=trained,
            thresholds=[0.1, 0.3, 0.5, 0.7, 0.9],
            windows=w,
            audit=audit,
            label_family="fraud",
            settings=EvaluationSettings(),
            entities=customers,
            nthread=2,
        )
    )
    parts = {k[: -len("_seconds")]: v for k, v in report.timings.items() if k.endswith("_seconds")}
    for k, v in sorted(parts.items(), key=lambda kv: -kv[1]):
        print(f"  {k:18s} {v:6.2f}s")
    print(f"  {'total':18s} {t_report:6.2f}s  = {t_report / t_train:.0%} of the training time")
    print(
        "  (metrics = val + test point metrics, both bootstraps per split, DeLong, calibration; "
        f"slices: {len(report.slices)} segments each with its own bootstrap)"
    )


if __name__ == "__main__":
    main()
