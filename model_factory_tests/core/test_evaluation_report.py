"""The whole evaluation report on a synthetic frame: deterministic, complete, checked part by
part against direct computations (scikit-learn for point metrics)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import jsonschema
import numpy as np
import polars as pl
import pytest
import xgboost as xgb
from sklearn.metrics import (
    average_precision_score,
    brier_score_loss,
    f1_score,
    log_loss,
    roc_auc_score,
)

from model_factory.contracts import (
    EvaluationReport,
    EvaluationReportRef,
    EvaluationSettings,
    GateCriterionSpec,
    GateSettings,
    GovernancePolicy,
    LeakageAudit,
    SliceSpec,
    SplitPolicy,
    ThresholdRule,
    XGBoostParams,
)
from model_factory.core.canonical import content_digest
from model_factory.core.drift import psi
from model_factory.core.evaluation import build_report
from model_factory.core.explanations import shap_sample
from model_factory.core.gates import GateEvidence, decide_gate
from model_factory.core.report_html import (
    earlier_reports,
    headline_metrics,
    label_table,
    markdown_operating_points,
    markdown_slices,
    render_report_html,
)
from model_factory.core.storage import ArtifactStore
from model_factory.core.training import TrainedModel, feature_matrix, train_xgboost
from model_factory.core.windows import resolve_windows

SCHEMA = json.loads(
    (Path(__file__).parents[2] / "contracts" / "mf_public_contracts_v0.schema.json").read_text()
)
FEATURES = ["amount", "is_night", "is_weekend", "customer_spending__cust_tx_count_30d", "noise"]
WINDOWS = resolve_windows("2026-03-02", SplitPolicy())


def _split_frame(rng: np.random.Generator, split: str, start, days: int, n: int, drift: float):
    t_us = int(start.timestamp() * 1_000_000) + np.sort(rng.integers(0, days * 86_400_000_000, n))
    amount = np.round(rng.lognormal(3.6 + drift, 0.7, n), 2)
    night = (rng.random(n) < 0.15).astype(np.int8)
    history = rng.poisson(40, n).astype(float)
    history[rng.random(n) < 0.02] = 0
    logit = -6.0 + 0.03 * amount + 1.5 * night - 0.03 * history + rng.normal(0, 0.5, n)
    y = (rng.random(n) < 1 / (1 + np.exp(-logit))).astype(np.int8)
    cnt = (
        pl.Series(history.astype(np.int64))
        .to_frame("c")
        .with_columns(
            pl.when(pl.Series(rng.random(n) < 0.01)).then(None).otherwise(pl.col("c")).alias("c")
        )["c"]
    )
    return pl.DataFrame(
        {
            "event_id": [f"{split}-{i:06d}" for i in range(n)],
            "event_time": pl.from_epoch(pl.Series(t_us), time_unit="us").dt.replace_time_zone(
                "UTC"
            ),
            "split": split,
            "label": y,
            "amount": amount,
            "is_night": night,
            "is_weekend": (rng.random(n) < 2 / 7).astype(np.int8),
            "customer_spending__cust_tx_count_30d": cnt,
            "noise": rng.normal(2 * drift, 1, n),
        }
    )


@pytest.fixture(scope="module")
def frame() -> pl.DataFrame:
    rng = np.random.default_rng(42)
    w = WINDOWS
    parts = [
        _split_frame(rng, "train", w.train_window.start, 28, 24_000, 0.0),
        _split_frame(rng, "val", w.eval_windows["val"].start, 7, 8_000, 0.0),
        _split_frame(rng, "test", w.eval_windows["test"].start, 7, 8_000, 0.4),
    ]
    return pl.concat(parts)


@pytest.fixture(scope="module")
def trained(frame):
    return train_xgboost(
        frame,
        FEATURES,
        XGBoostParams(num_boost_round=40, max_depth=3, early_stopping_rounds=10, nthread=1),
    )


SETTINGS = EvaluationSettings(
    bootstrap_resamples=200,
    shap_sample_rows=500,
    latency_repeats=5,
    min_slice_rows=300,
    min_slice_positives=5,
    slices=[
        SliceSpec(name="amount_band", column="amount", edges=[20, 50, 100, 200]),
        SliceSpec(name="night", column="is_night"),
        SliceSpec(name="history", column="customer_spending__cust_tx_count_30d", edges=[1]),
        SliceSpec(name="scenario", column="fraud_scenario"),
    ],
)


def _audit() -> LeakageAudit:
    return LeakageAudit(
        passed=True,
        violations=[],
        feature_groups=[],
        labels_hidden_by_cut={"train": 30, "val": 20, "test": 0},
        labels_visible={"train": 400, "val": 60, "test": 70},
        max_label_observed_minus_cut_seconds={"train": -1.0, "val": -1.0, "test": -1.0},
        windows=WINDOWS,
        pii_columns_found=[],
    )


def _report(frame, trained, entities=None, settings=SETTINGS) -> EvaluationReport:
    return build_report(
        train_run_id="mfr-" + "0" * 20,
        partition_key="2026-03-02",
        model_family="fraud_xgb",
        model_sha256="a" * 64,
        frame_sha256="b" * 64,
        frame=frame,
        features=FEATURES,
        trained=trained,
        thresholds=[0.1, 0.5],
        windows=WINDOWS,
        audit=_audit(),
        label_family="fraud",
        settings=settings,
        entities=entities,
        nthread=1,
    )


@pytest.fixture(scope="module")
def entities(frame) -> pl.Series:
    test = frame.filter(pl.col("split") == "test")
    rng = np.random.default_rng(3)
    ids = rng.integers(0, 900, test.height)
    ids = np.where(rng.random(test.height) < 0.01, -1, ids)
    return pl.Series("entity", ids).replace(-1, None)


@pytest.fixture(scope="module")
def report(frame, trained, entities) -> EvaluationReport:
    return _report(frame, trained, entities)


def _scores(frame, trained, split):
    part = frame.filter(pl.col("split") == split)
    return (
        part,
        part["label"].to_numpy().astype(int),
        trained.predict(feature_matrix(part, FEATURES)),
    )


def test_same_inputs_give_the_same_report_digest(frame, trained, entities, report) -> None:
    again = _report(frame, trained, entities)
    assert content_digest(again) == content_digest(report)
    assert again.timings.keys() == report.timings.keys()
    assert (
        "latency_single_row_p50_us" in report.timings and "latency_batch_p99_ms" in report.timings
    )
    # the volatile part alone may differ: it is not in the digest
    changed = report.model_copy(update={"timings": {"x": 1.0}})
    assert content_digest(changed) == content_digest(report)


def test_report_validates_against_the_committed_contract(report) -> None:
    doc = json.loads(report.model_dump_json())
    jsonschema.Draft202012Validator(
        {"$ref": "#/$defs/EvaluationReport", "$defs": SCHEMA["$defs"]}
    ).validate(doc)


def test_point_metrics_equal_sklearn(frame, trained, report) -> None:
    for split in ("val", "test"):
        _, y, s = _scores(frame, trained, split)
        m = report.metrics[split]
        assert m.roc_auc == pytest.approx(roc_auc_score(y, s), abs=1e-9)
        assert m.pr_auc == pytest.approx(average_precision_score(y, s), abs=1e-9)
        assert m.brier == pytest.approx(brier_score_loss(y, s), abs=1e-9)
        assert m.log_loss == pytest.approx(log_loss(y, s), abs=1e-9)
        assert m.roc_auc_ci.lower < m.roc_auc < m.roc_auc_ci.upper
        assert m.pr_auc_ci.lower < m.pr_auc < m.pr_auc_ci.upper
        assert m.roc_auc_delong_ci is not None


def test_the_stored_model_is_the_evaluated_model(frame, report) -> None:
    """Early stopping grows rounds past the best; the bundle's model must not carry them, or a
    plain Booster.predict (a serving runtime) would score with trees the gate never judged."""
    params = XGBoostParams(num_boost_round=300, max_depth=3, early_stopping_rounds=10, nthread=1)
    trained = train_xgboost(frame, FEATURES, params)
    # early stopping did stop early: the booster grew best + 1 + 10 rounds before the cut
    assert trained.best_iteration + 1 + params.early_stopping_rounds <= params.num_boost_round
    plain = xgb.Booster()
    plain.load_model(bytearray(trained.model_bytes))
    assert plain.num_boosted_rounds() == trained.best_iteration + 1
    x = feature_matrix(frame.filter(pl.col("split") == "test"), FEATURES)
    assert np.array_equal(plain.inplace_predict(x), trained.predict(x).astype(np.float32))
    # and its gain importance is over the same trees
    reloaded = TrainedModel.from_bytes(trained.model_bytes, nthread=1)
    assert reloaded.best_iteration == trained.best_iteration
    assert plain.get_score(importance_type="total_gain") == trained.booster.get_score(
        importance_type="total_gain"
    )


def test_operating_points_are_chosen_on_val_and_applied_unchanged_to_test(frame, trained, report):
    _, yv, sv = _scores(frame, trained, "val")
    _, yt, st_ = _scores(frame, trained, "test")
    points = {p.name: p for p in report.operating_points}
    assert list(points) == [
        "review",
        "decline",
        "alert_rate_0.5%",
        "alert_rate_1%",
        "alert_rate_2%",
        "precision_50%",
        "precision_80%",
    ]
    for rate in (0.005, 0.01, 0.02):
        p = points[f"alert_rate_{100 * rate:g}%"]
        assert p.val.alert_rate >= rate > (sv > p.threshold).mean()
    for target in (0.5, 0.8):
        p = points[f"precision_{100 * target:g}%"]
        if p.threshold is None:
            continue
        assert p.val.precision >= target
        lower = np.unique(sv[sv < p.threshold])
        assert all(yv[sv >= t].mean() < target for t in lower)  # the lowest such threshold
    for p in points.values():
        if p.threshold is None:
            assert p.test is None
            continue
        alert = st_ >= p.threshold
        assert p.test.alerts == alert.sum()
        assert p.test.precision == pytest.approx(
            yt[alert].mean() if alert.any() else 0.0, abs=1e-12
        )
        assert p.test.recall == pytest.approx(yt[alert].sum() / yt.sum(), abs=1e-12)
        assert p.test.f1 == pytest.approx(f1_score(yt, alert.astype(int)), abs=1e-9)
        assert p.test.precision_ci is not None and p.val.precision_ci is None
    pol = report.policy
    assert pol.review_threshold == points["alert_rate_1%"].threshold
    assert pol.decline_threshold is None or pol.decline_threshold >= pol.review_threshold


def test_decline_below_review_is_raised_to_it(frame, trained) -> None:
    settings = SETTINGS.model_copy(
        update={
            "review": ThresholdRule(basis="alert_rate", target=0.005),
            "decline": ThresholdRule(basis="alert_rate", target=0.05),
        }
    )
    r = _report(frame, trained, settings=settings)
    assert r.policy.decline_threshold == r.policy.review_threshold
    assert any("raised" in n for n in r.policy.notes)


def test_top_k_per_day_counts_match_a_direct_count(frame, trained, entities, report) -> None:
    test, y, s = _scores(frame, trained, "test")
    days = test["event_time"].dt.date().to_numpy()
    for t in report.top_k:
        assert [d.day for d in t.days] == sorted({str(d) for d in days})
        for d in t.days:
            on = np.nonzero(days == np.datetime64(d.day))[0]
            if t.unit == "transaction":
                order = on[np.lexsort((on, -s[on]))][: t.k]
                assert (d.candidates, d.flagged) == (on.size, min(t.k, on.size))
                assert d.hits == y[order].sum()
                assert d.positives == y[on].sum()
            else:
                ent = entities.to_numpy()[on]
                keep = ~np.isnan(ent.astype(float))
                best = {}
                for e, sc, lab in zip(ent[keep], s[on][keep], y[on][keep], strict=True):
                    b = best.get(e, (-1.0, 0))
                    best[e] = (max(b[0], sc), max(b[1], lab))
                assert d.candidates == len(best)
                top = sorted(best.values(), key=lambda v: -v[0])[: t.k]
                assert d.hits == sum(h for _, h in top)
        flagged = sum(d.flagged for d in t.days)
        assert t.precision == pytest.approx(sum(d.hits for d in t.days) / flagged)
        assert t.precision_ci.method == "wilson"
    assert {(t.unit, t.k) for t in report.top_k} == {
        (u, k) for u in ("transaction", "entity") for k in SETTINGS.top_k_per_day
    }


def test_slices_list_small_and_absent_segments_with_their_counts(frame, trained, report) -> None:
    test, y, _ = _scores(frame, trained, "test")
    by_slice: dict[str, list] = {}
    for s in report.slices:
        by_slice.setdefault(s.slice, []).append(s)
    for name in ("amount_band", "night", "history"):
        assert sum(s.rows for s in by_slice[name]) == test.height
        assert sum(s.positives for s in by_slice[name]) == y.sum()
    assert [s.segment for s in by_slice["amount_band"]] == [
        "< 20",
        "[20, 50)",
        "[50, 100)",
        "[100, 200)",
        ">= 200",
    ]
    assert [s.segment for s in by_slice["night"]] == ["is_night = 0", "is_night = 1"]
    assert [s.segment for s in by_slice["history"]] == ["< 1", ">= 1", "missing"]
    (absent,) = by_slice["scenario"]
    assert absent.status == "column_absent"
    small = [s for s in report.slices if s.status == "too_small"]
    assert small, "the synthetic frame has segments under the minimum size"
    for s in small:
        assert s.rows < SETTINGS.min_slice_rows or s.positives < SETTINGS.min_slice_positives
        assert s.roc_auc is None and s.review is None
    ok = [s for s in report.slices if s.status == "ok"]
    assert ok and all(s.roc_auc_ci is not None and s.review is not None for s in ok)
    amount = test["amount"].to_numpy()
    seg = by_slice["amount_band"][2]
    mask = (amount >= 50) & (amount < 100)
    _, _, s_test = _scores(frame, trained, "test")
    assert seg.roc_auc == pytest.approx(roc_auc_score(y[mask], s_test[mask]), abs=1e-9)
    assert seg.pr_auc == pytest.approx(average_precision_score(y[mask], s_test[mask]), abs=1e-9)
    assert seg.brier == pytest.approx(brier_score_loss(y[mask], s_test[mask]), abs=1e-9)


def test_drift_finds_the_shifted_features(frame, trained, report) -> None:
    assert set(report.drift.top_drifting[:2]) == {"amount", "noise"}
    d = {f.feature: f for f in report.drift.features}
    assert d["noise"].level == "major" and d["is_weekend"].level == "stable"
    assert d["customer_spending__cust_tx_count_30d"].current_null_share == pytest.approx(
        0.01, abs=0.005
    )
    same = np.random.default_rng(0).normal(size=10_000)
    assert psi(same, same)[0] == pytest.approx(0.0, abs=1e-12)
    assert report.drift.score_psi is not None


def test_mean_abs_shap_is_xgboosts_own_on_the_seeded_sample(frame, trained, report) -> None:
    test = frame.filter(pl.col("split") == "test")
    idx = shap_sample(test.height, SETTINGS.shap_sample_rows, SETTINGS.bootstrap_seed)
    assert np.array_equal(
        idx, shap_sample(test.height, SETTINGS.shap_sample_rows, SETTINGS.bootstrap_seed)
    )
    x = feature_matrix(test, FEATURES)[idx]
    contribs = trained.booster.predict(
        xgb.DMatrix(x, feature_names=FEATURES),
        pred_contribs=True,
        iteration_range=(0, trained.best_iteration + 1),
    )
    expected = dict(zip(FEATURES, np.abs(contribs[:, :-1]).mean(axis=0), strict=True))
    got = {a.feature: a.mean_abs_shap for a in report.explainability.features}
    assert got == pytest.approx(expected, rel=1e-6)
    assert report.explainability.shap_rows == SETTINGS.shap_sample_rows
    values = [a.mean_abs_shap for a in report.explainability.features]
    assert values == sorted(values, reverse=True)
    assert report.feature_importance.keys() == set(FEATURES)


def test_label_context_names_the_cuts_and_the_maturity(report) -> None:
    c = report.label_context
    assert c.test_label_cut == WINDOWS.cut and c.train_label_cut == WINDOWS.train_cut
    assert c.label_maturity_days == 7
    assert c.matured_share["val"] == pytest.approx(60 / 80)
    assert c.test_label_completeness_estimate == pytest.approx(60 / 80)
    # the test cut hides nothing pinned: a share of 100% there would say nothing (found in review)
    assert c.matured_share["test"] is None
    assert "not measured" in label_table(report).split("test: labels visible")[1].split("</tr>")[0]
    assert c.test_positives == report.metrics["test"].positives


def test_html_view_holds_every_plot_and_needs_no_network(report) -> None:
    page = render_report_html(report).decode()
    for plot in (
        "plot-roc",
        "plot-pr",
        "plot-calibration",
        "plot-scores",
        "plot-topk",
        "plot-drift",
    ):
        assert re.search(
            rf'<svg id="{plot}"[^>]*>.*?<polyline|<svg id="{plot}"[^>]*>.*?<rect', page, re.S
        ), plot
    assert page.count("<svg") >= 6 and "plot-history" not in page
    assert not re.search(r"\b(src|href)\s*=|@import|url\(", page)
    assert set(re.findall(r"https?://[^\"' ]+", page)) == {"http://www.w3.org/2000/svg"}
    # deterministic and free of the volatile measurements
    assert render_report_html(report) == page.encode()
    assert "latency_single_row_p50_us" not in page
    assert "latency_single_row_p50_us" in render_report_html(report, include_timings=True).decode()


def test_html_view_shows_the_weeks_before(report) -> None:
    earlier = [report.model_copy(update={"partition_key": k}) for k in ("2026-02-16", "2026-02-23")]
    page = render_report_html(report, earlier).decode()
    assert '<svg id="plot-history"' in page
    weeks = page[page.index("<h2>Across weeks</h2>") :]
    assert weeks.index("2026-02-16") < weeks.index("2026-02-23") < weeks.index("2026-03-02")


def test_markdown_tables_for_the_ui(report) -> None:
    ops = markdown_operating_points(report).splitlines()
    assert ops[0].startswith("| point |") and len(ops) == 2 + len(report.operating_points)
    sl = markdown_slices(report).splitlines()
    assert len(sl) == 2 + len(report.slices) and "too_small" in markdown_slices(report)


def test_without_resamples_there_are_no_intervals(frame, trained) -> None:
    r = _report(
        frame,
        trained,
        settings=SETTINGS.model_copy(update={"bootstrap_resamples": 0, "shap_sample_rows": 0}),
    )
    assert r.metrics["test"].roc_auc_ci is None and r.metrics["test"].pr_auc_ci is None
    assert all(p.test is None or p.test.precision_ci is None for p in r.operating_points)
    assert r.explainability.shap_rows == 0
    assert all(a.mean_abs_shap is None for a in r.explainability.features)


def test_a_slice_on_a_column_the_frame_lacks_is_reported_absent(frame, trained) -> None:
    # a frame of another data set: the default slices name columns it does not have
    r = _report(
        frame,
        trained,
        settings=EvaluationSettings(
            bootstrap_resamples=50,
            shap_sample_rows=100,
            latency_repeats=2,
            slices=[SliceSpec(name="x", column="does_not_exist")],
        ),
    )
    assert [(s.slice, s.status) for s in r.slices] == [("x", "column_absent")]


def test_earlier_reports_keep_the_latest_per_week_before_this_one(report, tmp_path) -> None:
    store = ArtifactStore(str(tmp_path / "store"))

    def put(week: str, family: str = "fraud_xgb", best: int = 1):
        doc = report.model_copy(
            update={"partition_key": week, "model_family": family, "best_iteration": best}
        )
        return week, store.put_document("evaluation_report.json", doc)

    broken = ("2026-02-02", put("2026-02-02")[1].model_copy(update={"sha256": "0" * 64}))
    refs = [  # newest first, as the ledger lists them
        put("2026-03-09"),  # after this week
        put("2026-02-23", best=2),  # a re-run: the newest wins
        put("2026-02-23", best=1),
        put("2026-02-16", family="other_family"),
        put("2026-02-09"),
        broken,  # tampered: skipped
    ]
    got = earlier_reports(refs, "2026-03-02", "fraud_xgb")
    assert [(r.partition_key, r.best_iteration) for r in got] == [
        ("2026-02-09", 1),
        ("2026-02-23", 2),
    ]
    assert headline_metrics(report)["roc_auc_ci_lower"] == report.metrics["test"].roc_auc_ci.lower


@pytest.fixture(scope="module")
def empty_test_report(frame, trained) -> EvaluationReport:
    """A week whose test window holds no rows at all."""
    settings = SETTINGS.model_copy(update={"shap_sample_rows": 0, "latency_repeats": 1})
    return _report(frame.filter(pl.col("split") != "test"), trained, settings=settings)


def test_an_empty_test_split_measures_no_calibration_and_no_drift(empty_test_report) -> None:
    r = empty_test_report
    t = r.metrics["test"]
    assert t.rows == 0
    assert (t.positive_rate, t.brier, t.log_loss, t.ece, t.ece_quantile, t.roc_auc) == (None,) * 6
    assert r.drift.current_rows == 0 and r.drift.reference_rows > 0
    assert all(f.psi is None and f.level is None for f in r.drift.features)
    assert all(f.current_null_share is None for f in r.drift.features)
    assert (r.drift.score_psi, r.drift.score_level, r.drift.top_drifting) == (None, None, [])
    review = next(o.test for o in r.operating_points if o.name == "review")
    assert review is not None and (review.recall, review.f1, review.recall_ci) == (None,) * 3
    # what is not measured is shown as such, never as 0
    head = headline_metrics(r)
    not_measured = {"roc_auc", "pr_auc", "brier", "ece", "ece_quantile", "log_loss", "score_psi"}
    assert not not_measured & head.keys()
    page = render_report_html(r).decode()
    assert "plot-drift" not in page  # no bars at 0 for what was not measured
    drift = page[page.index("<h2>Drift") :]
    table = drift[drift.index("<table") : drift.index("</table>")]
    assert table.count("not measured") == 1 + len(r.drift.features) and "0.0000" not in table
    assert "| – [" not in markdown_operating_points(r)  # no interval beside a missing recall
    doc = json.loads(r.model_dump_json())
    jsonschema.Draft202012Validator(
        {"$ref": "#/$defs/EvaluationReport", "$defs": SCHEMA["$defs"]}
    ).validate(doc)


def _judged(criteria, report, *history):
    """The gate on a report alone: no test rows to resample, no champion, the given history."""
    ev = GateEvidence(
        report=report,
        report_ref=EvaluationReportRef(uri="memory://report", digest="b" * 64),
        frame_sha256="b" * 64,
        y_test=np.zeros(0),
        score_test=np.zeros(0),
        history=history,
    )
    return decide_gate(GateSettings(criteria=criteria), GovernancePolicy(), ev)


def test_a_gate_on_what_an_empty_test_split_did_not_measure_fails(report, empty_test_report):
    criteria = [
        GateCriterionSpec(name="brier_max", metric="brier", kind="point", threshold=0.05),
        GateCriterionSpec(name="log_loss_max", metric="log_loss", kind="point", threshold=0.2),
        GateCriterionSpec(
            name="brier_stability", metric="brier", kind="stability", threshold=0.5, weeks=2
        ),
    ]
    receipt = _judged(criteria, empty_test_report, ("2026-02-23", report))
    assert receipt.gate_status == "FAIL"
    assert [(c.name, c.observed, c.passed) for c in receipt.criteria] == [
        ("brier_max", None, False),
        ("log_loss_max", None, False),
        ("brier_stability", None, False),
    ]
    assert "brier_max: test brier = missing, needs <= 0.05" in receipt.reasons
    assert receipt.observed_metrics["brier"] is None


def test_stability_reaches_back_calendar_weeks_not_reports(report):
    """Weeks without a report are not skipped over: a one-week criterion does not compare with a
    week three weeks back, while a three-week one does."""
    older = report.model_copy(
        update={
            "partition_key": "2026-02-09",  # three weeks before 2026-03-02; none in between
            "metrics": report.metrics
            | {"test": report.metrics["test"].model_copy(update={"roc_auc": 0.5})},
        }
    )
    criteria = [
        GateCriterionSpec(
            name=f"roc_{n}w", metric="roc_auc", kind="stability", threshold=0.01, weeks=n
        )
        for n in (1, 3)
    ]
    one, three = _judged(criteria, report, ("2026-02-09", older)).criteria
    assert (one.observed, one.passed) == (None, True) and "not applicable" in one.detail
    assert three.observed == pytest.approx(report.metrics["test"].roc_auc - 0.5)
    assert not three.passed
