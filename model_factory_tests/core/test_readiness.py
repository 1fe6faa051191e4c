"""Promotion readiness: numbers that tie out with both models' evaluations, the recommendation at
each configured boundary, the committed contract, binding to the bundle and the registry."""

import json
import shutil
from pathlib import Path

import dagster as dg
import jsonschema
import numpy as np
import polars as pl
import pytest
from click.testing import CliRunner
from scipy.stats import spearmanr

from model_factory.cli import main
from model_factory.contracts import (
    CanarySettings,
    ChampionRef,
    ConfidenceInterval,
    DayDecisions,
    DecisionChanges,
    DecisionPolicy,
    EvaluationReport,
    EvaluationSettings,
    OperationalLimits,
    OutcomeDeltas,
    OutcomeValue,
    PromotionReadiness,
    PublishBundleRequest,
    ReadinessSettings,
    ThresholdRule,
    TrainingConfig,
)
from model_factory.core.bundles import artifact_named, load_bundle, model_ref
from model_factory.core.canonical import content_digest
from model_factory.core.demo_data import DemoDataSpec, generate_demo_data
from model_factory.core.drift import psi
from model_factory.core.frames import frame_from_parquet
from model_factory.core.operating_points import operating_metrics
from model_factory.core.readiness import (
    NO_CHAMPION,
    ReadinessInputs,
    compute_readiness,
    max_share_within_capacity,
    readiness_uri_for,
    recommend,
    spearman,
)
from model_factory.core.registry import FileRegistry
from model_factory.core.reproduce import reproduce_bundle
from model_factory.core.runs import load_readiness
from model_factory.core.storage import ArtifactStore
from model_factory.core.training import TrainedModel, feature_matrix
from model_factory_tests.core.test_bundles_registry import (
    POINT_GATES_POLICY,
    build,
    fresh_env,
    point_gates,
)

SCHEMA = json.loads(
    (Path(__file__).parents[2] / "contracts" / "mf_public_contracts_v0.schema.json").read_text()
)
WEEKS = ["2026-02-23", "2026-03-02", "2026-03-09"]
# Readiness reads the report's policy and operating points, not its intervals, SHAP or controls.
CHEAP = TrainingConfig(
    gates=point_gates(),
    evaluation=EvaluationSettings(
        bootstrap_resamples=0,
        slice_bootstrap_resamples=0,
        shap_sample_rows=0,
        shuffled_label_canary=CanarySettings(enabled=False),
    ),
)
# ... under a policy that lets a config do without the canary (the default policy requires it)
CHEAP_POLICY = POINT_GATES_POLICY.model_copy(update={"require_shuffled_label_canary": False})
# The real-model tests share one module fixture: keep them on one xdist worker.
ON_THE_DEMO_WEEKS = pytest.mark.xdist_group("readiness_weeks")
RULE = ThresholdRule(basis="alert_rate", target=0.01)


def validate(doc: dict) -> None:
    jsonschema.Draft202012Validator(
        {"$ref": "#/$defs/PromotionReadiness", "$defs": SCHEMA["$defs"]}
    ).validate(doc)


def policy(review: float | None, decline: float | None) -> DecisionPolicy:
    return DecisionPolicy(
        review_threshold=review,
        review_rule=RULE,
        decline_threshold=decline,
        decline_rule=ThresholdRule(basis="precision", target=0.9),
    )


CHAMPION = ChampionRef(
    bundle_id="mfb-" + "1" * 20,
    bundle_uri="memory://champion/bundle.json",
    partition_key="2026-02-23",
    model_sha256="b" * 64,
)


def synthetic(seed: int = 0, rows: int = 7000, champion: bool = True, **kw) -> ReadinessInputs:
    """Seven days of rows; the champion's score is the candidate's plus noise."""
    rng = np.random.default_rng(seed)
    y = (rng.random(rows) < 0.01).astype(np.int64)
    cand = np.clip(rng.beta(1, 30, rows) + 0.3 * y * rng.random(rows), 0, 1)
    champ = np.clip(cand + rng.normal(0, 0.02, rows), 0, 1)
    days = np.array([f"2026-03-{1 + i % 7:02d}" for i in range(rows)])
    base = dict(
        bundle_id="mfb-" + "0" * 20,
        train_run_id="mfr-" + "0" * 20,
        partition_key="2026-03-02",
        model_family="fraud_xgb",
        model_sha256="a" * 64,
        evaluation_report_digest="c" * 64,
        y=y,
        days=days,
        candidate_score=cand,
        candidate_policy=policy(0.1, 0.3),
        amount=rng.gamma(2, 50, rows),
        amount_column="amount",
        latency_p50_us=800.0,
    )
    if champion:
        base |= dict(champion=CHAMPION, champion_score=champ, champion_policy=policy(0.11, 0.35))
    return ReadinessInputs(**(base | kw))


# ------------------------------------------------------------------------------- pure computation


def test_no_alerts_on_either_side_is_no_evidence_for_any_traffic():
    """Neither policy reviews anything (its rule was not attainable on validation): the
    decisions were never tried, and readiness said 'ramp' (found in review)."""
    nothing = policy(None, None)
    doc = compute_readiness(
        synthetic(candidate_policy=nothing, champion_policy=nothing), ReadinessSettings()
    )
    assert doc.decisions.alert_overlap is None
    assert doc.recommendation.stage == "shadow"
    assert any("neither model flags" in r for r in doc.recommendation.reasons)


def test_no_test_rows_write_no_mean_per_day_and_no_nan():
    empty = synthetic(rows=0)
    doc = compute_readiness(empty, ReadinessSettings())
    assert doc.outcomes is not None and doc.outcomes.per_day == [] and doc.outcomes.days == []
    assert doc.recommendation.stage == "shadow"
    text = doc.model_dump_json()
    json.loads(text, parse_constant=lambda c: pytest.fail(f"{c} in the document"))


def test_decision_counts_tie_out_with_operating_metrics_of_each_model():
    inputs = synthetic()
    doc = compute_readiness(inputs, ReadinessSettings(bootstrap_resamples=200))
    d, y = doc.decisions, inputs.y
    cand_review = operating_metrics(y, inputs.candidate_score, 0.1)
    champ_review = operating_metrics(y, inputs.champion_score, 0.11)
    assert d.total.rows == y.size == sum(x.rows for x in d.days)
    assert d.total.candidate_alerts == cand_review.alerts == sum(x.candidate_alerts for x in d.days)
    assert d.total.champion_alerts == champ_review.alerts
    assert d.total.candidate_declines == operating_metrics(y, inputs.candidate_score, 0.3).alerts
    assert d.total.champion_declines == operating_metrics(y, inputs.champion_score, 0.35).alerts
    cand_alert, champ_alert = inputs.candidate_score >= 0.1, inputs.champion_score >= 0.11
    assert d.total.both_alert == int((cand_alert & champ_alert).sum())
    assert d.total.newly_flagged == d.total.candidate_alerts - d.total.both_alert
    assert d.total.newly_cleared == d.total.champion_alerts - d.total.both_alert
    assert d.alert_overlap == pytest.approx(
        d.total.both_alert / int((cand_alert | champ_alert).sum())
    )
    caught = {v.metric: v for v in doc.outcomes.per_day}
    assert caught["frauds_caught"].candidate * 7 == pytest.approx(cand_review.true_positives)
    assert caught["frauds_caught"].champion * 7 == pytest.approx(champ_review.true_positives)
    assert caught["false_alerts"].candidate * 7 == pytest.approx(
        cand_review.alerts - cand_review.true_positives
    )
    assert caught["frauds_missed"].delta == pytest.approx(-caught["frauds_caught"].delta)
    amount = (inputs.amount * y * cand_alert).sum() - (inputs.amount * y * champ_alert).sum()
    assert caught["fraud_amount_caught"].delta * 7 == pytest.approx(amount)
    assert doc.operational.candidate_alerts_peak_day == max(x.candidate_alerts for x in d.days)


def test_a_score_exactly_at_a_threshold_is_decided_as_the_evaluation_does():
    base = synthetic()
    # tree ensembles give many tied scores; the thresholds are scores that occur
    cand, champ = np.round(base.candidate_score, 2), np.round(base.champion_score, 2)
    review, decline = float(np.sort(cand)[-80]), float(np.sort(cand)[-20])
    champ_review = float(np.sort(champ)[-90])
    inputs = synthetic(
        candidate_score=cand,
        champion_score=champ,
        candidate_policy=policy(review, decline),
        champion_policy=policy(champ_review, None),
    )
    assert (cand == review).sum() > 1 and (champ == champ_review).sum() > 1
    doc = compute_readiness(inputs, ReadinessSettings(bootstrap_resamples=100))
    y = inputs.y
    assert doc.decisions.total.candidate_alerts == operating_metrics(y, cand, review).alerts
    assert doc.decisions.total.candidate_declines == operating_metrics(y, cand, decline).alerts
    assert doc.decisions.total.champion_alerts == operating_metrics(y, champ, champ_review).alerts
    assert doc.decisions.total.champion_declines == 0  # no decline threshold: nothing declined


def test_outcome_intervals_bracket_the_delta_and_are_seeded():
    settings = ReadinessSettings(bootstrap_resamples=300)
    doc = compute_readiness(synthetic(), settings)
    for day in doc.outcomes.days:
        for v in day.outcomes:
            assert v.delta_ci.lower <= v.delta <= v.delta_ci.upper
    assert content_digest(compute_readiness(synthetic(), settings)) == content_digest(doc)
    other = compute_readiness(synthetic(), settings.model_copy(update={"bootstrap_seed": 1}))
    assert content_digest(other) != content_digest(doc)


def test_identical_models_change_nothing():
    inputs = synthetic()
    same = synthetic(champion_score=inputs.candidate_score, champion_policy=inputs.candidate_policy)
    doc = compute_readiness(same, ReadinessSettings(bootstrap_resamples=100))
    assert doc.decisions.alert_overlap == 1.0 and doc.decisions.changed_decision_share == 0.0
    assert all(
        v.delta == 0 and v.delta_ci.lower == v.delta_ci.upper == 0 for v in doc.outcomes.per_day
    )
    assert doc.agreement.spearman == pytest.approx(1.0) and doc.agreement.psi < 1e-3
    assert doc.recommendation.stage == "ramp"


def test_score_agreement_is_spearman_and_the_drift_psi():
    inputs = synthetic()
    doc = compute_readiness(inputs, ReadinessSettings(bootstrap_resamples=100))
    assert doc.agreement.spearman == pytest.approx(
        spearmanr(inputs.candidate_score, inputs.champion_score).statistic, abs=1e-12
    )
    assert doc.agreement.psi == psi(inputs.champion_score, inputs.candidate_score, 10)[0]
    ties = np.array([0.1, 0.1, 0.2, 0.3, 0.3, 0.3, 0.9])
    assert spearman(ties, ties[::-1]) == pytest.approx(spearmanr(ties, ties[::-1]).statistic)
    assert spearman(np.ones(5), np.arange(5.0)) is None


def test_no_score_agreement_is_claimed_without_test_rows():
    inputs = synthetic(rows=0, gate_overridden=True)  # only an override passes an empty week
    with np.errstate(invalid="ignore"):  # the per-day means of no day are NaN
        doc = compute_readiness(inputs, ReadinessSettings(bootstrap_resamples=100))
    assert doc.test_rows == 0 and doc.agreement is None


def test_first_model_of_a_family_is_shadow_with_reason_no_champion():
    doc = compute_readiness(synthetic(champion=False), ReadinessSettings())
    assert doc.recommendation.stage == "shadow" and doc.recommendation.traffic_share == 0.0
    assert doc.recommendation.reasons[0] == NO_CHAMPION
    assert doc.decisions is None and doc.outcomes is None and doc.agreement is None
    assert doc.operational.candidate_alerts_peak_day > 0
    validate(doc.model_dump(mode="json"))


def test_a_champion_that_could_not_be_scored_keeps_shadow_and_says_why():
    doc = compute_readiness(
        synthetic(champion_score=None, champion_problem="its inputs ['x'] are not in this frame"),
        ReadinessSettings(),
    )
    assert doc.recommendation.stage == "shadow"
    assert "not in this frame" in doc.recommendation.reasons[0]


def test_documents_validate_against_the_committed_schema():
    for inputs in (
        synthetic(),
        synthetic(champion=False),
        synthetic(amount=None, amount_column=None),
    ):
        validate(
            compute_readiness(inputs, ReadinessSettings(bootstrap_resamples=100)).model_dump(
                mode="json"
            )
        )
    broken = compute_readiness(synthetic(), ReadinessSettings(bootstrap_resamples=100)).model_dump(
        mode="json"
    ) | {"recommendation": {"stage": "go_live", "traffic_share": None, "reasons": []}}
    with pytest.raises(jsonschema.ValidationError):
        validate(broken)


@pytest.mark.parametrize(
    ("candidate", "champion", "capacity", "share"),
    [
        ([100, 100], [50, 50], 100, 1.0),  # at capacity: everything fits
        ([101, 100], [50, 50], 100, 50 / 51),  # one over on one day: s = (100 - 50) / (101 - 50)
        ([300, 80], [100, 90], 200, 0.5),  # the worst day decides
        ([300], [250], 200, 0.0),  # the champion alone is already over
        ([300], [400], 200, 1.0),  # the candidate lowers the volume
    ],
)
def test_traffic_share_within_review_capacity(candidate, champion, capacity, share):
    got = max_share_within_capacity(np.array(candidate), np.array(champion), capacity)
    assert got == pytest.approx(share)


# ----------------------------------------------------------------- recommendation at each boundary

S = ReadinessSettings(
    min_test_positives=30,
    shadow_below_alert_overlap=0.5,
    ramp_min_alert_overlap=0.8,
    ramp_min_decline_overlap=0.5,
    ramp_max_fraud_loss_per_day=1.0,
    ramp_max_extra_false_alerts_per_day=10,
    review_capacity_per_day=200,
    canary_traffic_share=0.05,
    min_canary_traffic_share=0.01,
    latency_budget_p50_us=5_000,
)
EPS = 1e-6


def _value(metric: str, delta: float, lower: float, upper: float) -> OutcomeValue:
    ci = ConfidenceInterval(
        lower=lower, upper=upper, level=0.95, method="test", resamples=1, seed=0
    )
    return OutcomeValue(metric=metric, candidate=10 + delta, champion=10, delta=delta, delta_ci=ci)


def _evidence(
    positives=100,
    overlap=0.9,
    decline_overlap=0.9,
    caught_lower=-0.5,
    caught_upper=0.5,
    false_delta=0.0,
    peak=100,
    share_cap=1.0,
    latency_ok=True,
):
    """Evidence that supports ramp, with one knob turned per test."""
    day = DayDecisions(
        day="all",
        rows=1000,
        candidate_alerts=peak,
        champion_alerts=peak,
        both_alert=peak,
        newly_flagged=0,
        newly_cleared=0,
        candidate_declines=0,
        champion_declines=0,
        both_decline=0,
        newly_declined=0,
        no_longer_declined=0,
    )
    decisions = DecisionChanges(
        candidate_review_threshold=0.1,
        candidate_decline_threshold=None,
        champion_review_threshold=0.1,
        champion_decline_threshold=None,
        days=[day],
        total=day,
        alert_overlap=overlap,
        decline_overlap=decline_overlap,
        newly_flagged_share=0.0,
        newly_cleared_share=0.0,
        changed_decision_share=0.0,
    )
    outcomes = OutcomeDeltas(
        amount_column=None,
        days=[],
        per_day=[
            _value("frauds_caught", (caught_lower + caught_upper) / 2, caught_lower, caught_upper),
            _value("false_alerts", false_delta, false_delta - 1, false_delta + 1),
        ],
    )
    operational = OperationalLimits(
        review_capacity_per_day=200,
        candidate_alerts_peak_day=peak,
        candidate_alerts_mean_per_day=peak,
        champion_alerts_peak_day=peak,
        within_review_capacity=peak <= 200,
        max_traffic_share_within_capacity=share_cap,
        latency_budget_p50_us=5_000,
        latency_within_budget=latency_ok,
    )
    return dict(
        settings=S,
        test_positives=positives,
        operational=operational,
        decisions=decisions,
        outcomes=outcomes,
    )


def test_the_baseline_evidence_supports_ramp():
    rec = recommend(**_evidence())
    assert rec.stage == "ramp" and rec.traffic_share is None


@pytest.mark.parametrize(
    ("knob", "value", "stage", "reason"),
    [
        ("positives", 29, "shadow", "thin evidence"),
        ("positives", 30, "ramp", None),
        ("positives", 31, "ramp", None),
        ("overlap", 0.5 - EPS, "shadow", "decisions differ a lot"),
        ("overlap", 0.5, "canary", "alert overlap"),
        ("overlap", 0.5 + EPS, "canary", "alert overlap"),
        ("overlap", 0.8 - EPS, "canary", "alert overlap"),
        ("overlap", 0.8, "ramp", None),
        ("overlap", 0.8 + EPS, "ramp", None),
        ("decline_overlap", 0.5 - EPS, "canary", "decline overlap"),
        ("decline_overlap", 0.5, "ramp", None),
        ("decline_overlap", 0.5 + EPS, "ramp", None),
        ("decline_overlap", None, "ramp", None),
        ("caught_lower", -1.0 - EPS, "canary", "frauds caught per day CI lower"),
        ("caught_lower", -1.0, "ramp", None),
        ("caught_lower", -1.0 + EPS, "ramp", None),
        ("false_delta", 10 + EPS, "canary", "false alerts per day"),
        ("false_delta", 10, "ramp", None),
        ("false_delta", 10 - EPS, "ramp", None),
        ("peak", 201, "canary", "over the review capacity"),
        ("peak", 200, "ramp", None),
        ("peak", 199, "ramp", None),
        ("share_cap", 0.01 - EPS, "shadow", "alert volume"),
        ("share_cap", 0.01, "canary", "share lowered to 0.0100"),
        ("share_cap", 0.01 + EPS, "canary", "share lowered"),
        ("latency_ok", False, "shadow", "latency over the budget"),
        ("caught_upper", -EPS, "shadow", "catches fewer frauds"),
        ("caught_upper", 0.0, "ramp", None),
    ],
)
def test_recommendation_follows_the_configured_thresholds(knob, value, stage, reason):
    evidence = {"share_cap": 0.5, "peak": 300} if knob == "share_cap" else {}
    if knob == "caught_upper":
        evidence["caught_lower"] = -0.9
    rec = recommend(**_evidence(**(evidence | {knob: value})))
    assert rec.stage == stage, rec.reasons
    if reason is not None:
        assert any(reason in r for r in rec.reasons), rec.reasons
    if stage == "canary":
        expected = min(S.canary_traffic_share, value if knob == "share_cap" else 1.0)
        assert rec.traffic_share == pytest.approx(expected)
    if stage == "shadow":
        assert rec.traffic_share == 0.0


def test_latency_exactly_at_the_budget_is_within_it():
    inputs = synthetic(latency_p50_us=5_000.0)
    at = compute_readiness(inputs, S.model_copy(update={"bootstrap_resamples": 100}))
    over = compute_readiness(
        synthetic(latency_p50_us=5_000.001), S.model_copy(update={"bootstrap_resamples": 100})
    )
    assert at.operational.latency_within_budget is True
    assert over.operational.latency_within_budget is False
    assert over.recommendation.stage == "shadow"


def test_alert_volume_exactly_at_the_review_capacity_is_within_it():
    quick = S.model_copy(update={"bootstrap_resamples": 100})
    peak = compute_readiness(synthetic(), quick).operational.candidate_alerts_peak_day
    at = compute_readiness(synthetic(), quick.model_copy(update={"review_capacity_per_day": peak}))
    below = compute_readiness(
        synthetic(), quick.model_copy(update={"review_capacity_per_day": peak - 1})
    )
    assert at.operational.within_review_capacity is True
    assert at.operational.max_traffic_share_within_capacity == 1.0
    assert below.operational.within_review_capacity is False
    assert below.operational.max_traffic_share_within_capacity < 1.0
    assert below.recommendation.stage != "ramp"


def test_a_gate_passed_by_override_stays_in_shadow():
    rec = recommend(**_evidence(), gate_overridden=True)
    assert rec.stage == "shadow" and "override" in rec.reasons[0]


# ------------------------------------------------------------------ real models on the demo data


@pytest.fixture(scope="module")
def weeks(tmp_path_factory):
    """Three consecutive weeks, each published (when PASS) before the next trains, and one FAIL."""
    root = tmp_path_factory.mktemp("readiness")
    generate_demo_data(str(root / "catalog"), DemoDataSpec(customers=600, terminals=1200, weeks=10))
    env = fresh_env(root / "catalog", root, CHEAP_POLICY)
    out = []
    for week in WEEKS:
        bundle, uri, _ = build(env, CHEAP, week)
        if bundle.gate_receipt.gate_status == "PASS":
            env.registry.publish(PublishBundleRequest(bundle_uri=uri, bundle_id=bundle.bundle_id))
        out.append((bundle, uri))
    failed = build(
        env, CHEAP.model_copy(update={"gates": point_gates(roc_auc_lower=0.9999)}), WEEKS[1]
    )
    return env, out, failed


def _test_rows(bundle):
    frame = frame_from_parquet(
        ArtifactStore.get_bytes(artifact_named(bundle, "training_frame.parquet"))
    )
    return frame.filter(pl.col("split") == "test")


def _scores(bundle, rows):
    model = TrainedModel.from_bytes(ArtifactStore.get_bytes(model_ref(bundle)), nthread=2)
    return model.predict(feature_matrix(rows, [f.name for f in bundle.feature_schema]))


def _op(report: EvaluationReport, name: str):
    return next(p for p in report.operating_points if p.name == name)


@ON_THE_DEMO_WEEKS
def test_every_pass_bundle_carries_a_document_bound_to_it(weeks):
    env, built, _ = weeks
    assert all(b.gate_receipt.gate_status == "PASS" for b, _ in built)
    for bundle, uri in built:
        doc = load_readiness(uri)
        assert doc is not None
        validate(json.loads(Path(readiness_uri_for(uri)).read_text()))
        assert (doc.bundle_id, doc.train_run_id, doc.model_sha256) == (
            bundle.bundle_id,
            bundle.train_run_id,
            model_ref(bundle).sha256,
        )
        assert doc.evaluation_report_digest == bundle.evaluation_report_ref.digest
        assert doc.champion == bundle.gate_receipt.champion
        record = env.registry.get(bundle.bundle_id)
        assert record.readiness_ref is not None and record.readiness_ref.uri == readiness_uri_for(
            uri
        )
        assert (
            ArtifactStore.get_document(
                record.readiness_ref.uri, PromotionReadiness, record.readiness_ref.sha256
            )
            == doc
        )
        html = Path(doc.html.uri).read_text()
        assert doc.recommendation.stage in html and doc.bundle_id in html
    first = load_readiness(built[0][1])
    assert first.champion is None and first.recommendation.stage == "shadow"
    assert first.recommendation.reasons[0] == NO_CHAMPION
    later = [load_readiness(u) for _, u in built[1:]]
    assert all(d.champion is not None and d.decisions is not None for d in later)


@ON_THE_DEMO_WEEKS
def test_numbers_tie_out_with_both_models_evaluation_reports(weeks):
    _, built, _ = weeks
    for bundle, uri in built[1:]:
        doc = load_readiness(uri)
        report = ArtifactStore.get_document(bundle.evaluation_report_ref.uri, EvaluationReport)
        champion = load_bundle(doc.champion.bundle_uri)
        champion_report = ArtifactStore.get_document(
            champion.evaluation_report_ref.uri, EvaluationReport
        )
        total = doc.decisions.total
        # the candidate: its report's operating points on test, at the bundle's policy
        assert doc.test_rows == report.metrics["test"].rows == total.rows
        assert doc.test_positives == report.metrics["test"].positives
        assert (
            doc.decisions.candidate_review_threshold
            == report.policy.review_threshold
            == bundle.policy_config.review_threshold
        )
        assert total.candidate_alerts == _op(report, "review").test.alerts
        assert total.candidate_declines == (
            _op(report, "decline").test.alerts if report.policy.decline_threshold is not None else 0
        )
        outcomes = {v.metric: v for v in doc.outcomes.per_day}
        days = doc.test_days
        assert (
            round(outcomes["frauds_caught"].candidate * days)
            == _op(report, "review").test.true_positives
        )
        # the champion: its own report's policy, its model scored on the candidate's test rows
        assert doc.decisions.champion_review_threshold == champion_report.policy.review_threshold
        rows = _test_rows(bundle)
        y = rows["label"].to_numpy()
        champ = operating_metrics(
            y, _scores(champion, rows), champion_report.policy.review_threshold
        )
        assert total.champion_alerts == champ.alerts
        assert round(outcomes["frauds_caught"].champion * days) == champ.true_positives
        assert (
            round(outcomes["false_alerts"].champion * days) == champ.alerts - champ.true_positives
        )
        assert doc.agreement.spearman == pytest.approx(
            spearmanr(_scores(bundle, rows), _scores(champion, rows)).statistic, abs=1e-9
        )
        assert (
            recommend(
                settings=doc.settings,
                test_positives=doc.test_positives,
                operational=doc.operational,
                decisions=doc.decisions,
                outcomes=doc.outcomes,
            )
            == doc.recommendation
        )


@ON_THE_DEMO_WEEKS
def test_rerunning_a_week_gives_the_same_document_digest(weeks):
    env, built, _ = weeks
    bundle, uri = built[1]
    path = Path(readiness_uri_for(uri))
    before, stored = content_digest(load_readiness(uri)), path.read_bytes()
    again, again_uri, created = build(env, CHEAP, WEEKS[1])
    assert not created and again_uri == uri and again.bundle_id == bundle.bundle_id
    assert content_digest(load_readiness(uri)) == before and path.read_bytes() == stored


@ON_THE_DEMO_WEEKS
def test_a_fail_bundle_has_no_readiness(weeks):
    _, _, (failed, uri, _) = weeks
    assert failed.gate_receipt.gate_status == "FAIL"
    assert load_readiness(uri) is None and not Path(readiness_uri_for(uri)).exists()


@ON_THE_DEMO_WEEKS
def test_bundle_with_a_champion_still_reproduces_identically(weeks):
    env, built, _ = weeks
    report = reproduce_bundle(built[1][1], env)
    assert report.verdict == "IDENTICAL", report.comparisons


@ON_THE_DEMO_WEEKS
def test_registry_refuses_a_readiness_document_of_another_bundle(weeks, tmp_path):
    _, built, _ = weeks
    (b1, uri1), (b2, uri2) = built[0], built[1]
    folder = tmp_path / "bundles" / b2.train_run_id
    folder.mkdir(parents=True)
    copy = folder / "bundle.json"
    shutil.copyfile(uri2, copy)
    shutil.copyfile(readiness_uri_for(uri1), folder / "readiness.json")  # week 1's document
    registry = FileRegistry(str(tmp_path / "registry"))
    response = registry.publish(PublishBundleRequest(bundle_uri=str(copy), bundle_id=b2.bundle_id))
    assert response.status == "refused" and "readiness" in response.reason
    assert b1.bundle_id in response.reason
    shutil.copyfile(readiness_uri_for(uri2), folder / "readiness.json")
    response = registry.publish(PublishBundleRequest(bundle_uri=str(copy), bundle_id=b2.bundle_id))
    assert response.status == "published" and response.record.readiness_ref is not None


@ON_THE_DEMO_WEEKS
def test_registry_show_lists_the_readiness(weeks, monkeypatch):
    env, built, _ = weeks
    bundle, _ = built[1]
    monkeypatch.setenv("MODEL_FACTORY_REGISTRY", env.registry.url)
    shown = CliRunner().invoke(main, ["registry", "show", bundle.bundle_id])
    assert shown.exit_code == 0, shown.output
    record = json.loads(shown.stdout)
    assert record["readiness_ref"]["name"] == "readiness.json"
    doc = load_readiness(bundle_uri=record["bundle_uri"])
    assert f"readiness: {doc.recommendation.stage}" in shown.stderr
    full = CliRunner().invoke(main, ["registry", "show", bundle.bundle_id, "--readiness"])
    assert full.exit_code == 0 and json.loads(full.stdout)["bundle_id"] == bundle.bundle_id


# ---------------------------------------------------------------- through a real Dagster instance


@pytest.mark.slow
@pytest.mark.xdist_group("readiness_dagster")
def test_dagster_shows_readiness_on_the_later_weeks_bundle(tmp_path):
    from model_factory.definitions import build_definitions
    from model_factory.defs.resources import ModelFactoryResource
    from model_factory.runner import run_weeks

    generate_demo_data(
        str(tmp_path / "catalog"), DemoDataSpec(customers=600, terminals=1200, weeks=10)
    )
    policy = tmp_path / "policy.json"  # the policy under which point_gates' names may be points
    policy.write_text(CHEAP_POLICY.model_dump_json())
    resource = ModelFactoryResource(
        catalog_url=str(tmp_path / "catalog"),
        store_url=str(tmp_path / "store"),
        registry_url=str(tmp_path / "registry"),
        policy_path=str(policy),
    )
    registry = FileRegistry(str(tmp_path / "registry"))
    config = {
        "ops": {
            "dataset_manifests": {
                "config": {
                    "gates": {
                        "criteria": [
                            c.model_dump(mode="json", exclude_none=True)
                            for c in point_gates().criteria
                        ]
                    },
                    "evaluation": {
                        "bootstrap_resamples": 0,
                        "slice_bootstrap_resamples": 0,
                        "shap_sample_rows": 0,
                        "shuffled_label_canary": {"enabled": False},
                    },
                }
            }
        }
    }
    (tmp_path / "dagster").mkdir()
    with dg.instance_for_test(temp_dir=str(tmp_path / "dagster")) as instance:
        summaries = run_weeks(instance, build_definitions(resource), WEEKS[:2], registry, config)
        assert [s.gate for s in summaries] == ["PASS", "PASS"]
        assert all(s.published for s in summaries)
        metas = {}
        for week in WEEKS[:2]:
            rec = instance.fetch_materializations(
                dg.AssetRecordsFilter(
                    asset_key=dg.AssetKey("model_bundle"), asset_partitions=[week]
                ),
                limit=1,
            ).records[0]
            metas[week] = {
                k: getattr(v, "value", v) for k, v in rec.asset_materialization.metadata.items()
            }
    first, later = metas[WEEKS[0]], metas[WEEKS[1]]
    assert first["readiness_stage"] == "shadow" and first["readiness_reasons"][0] == NO_CHAMPION
    doc = PromotionReadiness.model_validate_json(Path(later["readiness_uri"]).read_text())
    assert doc.bundle_id == later["bundle_id"] and doc.champion.bundle_id == first["bundle_id"]
    assert later["readiness_stage"] == doc.recommendation.stage
    assert later["readiness_alert_overlap"] == doc.decisions.alert_overlap
    assert "| all |" in later["readiness"] and Path(later["readiness_html"]).exists()
    record = registry.get(later["bundle_id"])
    assert record.readiness_ref.uri == later["readiness_uri"]
