"""Promotion readiness: how a PASS candidate would change decisions against the champion, and
the rollout stage (shadow, canary at a share, ramp) the evidence supports.

Pure: arrays in, a ``PromotionReadiness`` document out. Each model decides at its own policy
(the candidate at its bundle's thresholds, the champion at the thresholds of the bundle that is
live), because that is what a rollout would swap. Outcome intervals resample the test rows
within each day (days are the unit the review team lives in), paired: both models see the same
resampled rows.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from model_factory.contracts import (
    ChampionRef,
    ConfidenceInterval,
    DayDecisions,
    DayOutcomes,
    DecisionChanges,
    DecisionPolicy,
    OperationalLimits,
    OutcomeDeltas,
    OutcomeValue,
    PromotionReadiness,
    ReadinessRecommendation,
    ReadinessSettings,
    ScoreAgreement,
)
from model_factory.core.drift import level, psi

NO_CHAMPION = "no champion"
# The median, not the p99: a 100-call probe on a shared machine puts scheduler noise in its tail,
# and a budget verdict that flips between machines would make the recommendation noise too.
LATENCY_KEY = "latency_single_row_p50_us"
BOOTSTRAP_METHOD = "day_stratified_paired_bootstrap_percentile"
READINESS_NAME = "readiness.json"
OUTCOMES = ("frauds_caught", "frauds_missed", "false_alerts", "fraud_amount_caught")


@dataclass(frozen=True)
class ReadinessInputs:
    """Everything the document is computed from: the bundle's identity and the test rows, scored
    by both models (one entry per row in every array)."""

    bundle_id: str
    train_run_id: str
    partition_key: str
    model_family: str
    model_sha256: str
    evaluation_report_digest: str
    y: np.ndarray
    days: np.ndarray  # UTC date of each row, as 'YYYY-MM-DD'
    candidate_score: np.ndarray
    candidate_policy: DecisionPolicy
    champion: ChampionRef | None = None
    champion_score: np.ndarray | None = None
    champion_policy: DecisionPolicy | None = None
    champion_problem: str | None = None
    amount: np.ndarray | None = None
    amount_column: str | None = None
    latency_p50_us: float | None = None
    gate_overridden: bool = False


def _flags(score: np.ndarray, threshold: float | None) -> np.ndarray:
    """Score >= threshold (the evaluation's rule); no threshold: nothing is flagged."""
    if threshold is None:
        return np.zeros(score.shape, dtype=bool)
    return score >= threshold


def _per_day(inverse: np.ndarray, days: int, values: np.ndarray) -> np.ndarray:
    return np.bincount(inverse, weights=values.astype(np.float64), minlength=days)


def _ratio(num: float, den: float) -> float | None:
    return num / den if den else None


def _decisions(
    names: list[str],
    inverse: np.ndarray,
    cand_alert: np.ndarray,
    champ_alert: np.ndarray,
    cand_decline: np.ndarray,
    champ_decline: np.ndarray,
    cand: DecisionPolicy,
    champ: DecisionPolicy,
) -> DecisionChanges:
    d = len(names)
    cols = {
        "rows": np.ones(cand_alert.shape, dtype=bool),
        "candidate_alerts": cand_alert,
        "champion_alerts": champ_alert,
        "both_alert": cand_alert & champ_alert,
        "newly_flagged": cand_alert & ~champ_alert,
        "newly_cleared": champ_alert & ~cand_alert,
        "candidate_declines": cand_decline,
        "champion_declines": champ_decline,
        "both_decline": cand_decline & champ_decline,
        "newly_declined": cand_decline & ~champ_decline,
        "no_longer_declined": champ_decline & ~cand_decline,
    }
    per_day = {k: _per_day(inverse, d, v).astype(np.int64) for k, v in cols.items()}
    days = [
        DayDecisions(day=name, **{k: int(v[i]) for k, v in per_day.items()})
        for i, name in enumerate(names)
    ]
    t = DayDecisions(day="all", **{k: int(v.sum()) for k, v in per_day.items()})
    either_alert = t.candidate_alerts + t.champion_alerts - t.both_alert
    either_decline = t.candidate_declines + t.champion_declines - t.both_decline
    return DecisionChanges(
        candidate_review_threshold=cand.review_threshold,
        candidate_decline_threshold=cand.decline_threshold,
        champion_review_threshold=champ.review_threshold,
        champion_decline_threshold=champ.decline_threshold,
        days=days,
        total=t,
        alert_overlap=_ratio(t.both_alert, either_alert),
        decline_overlap=_ratio(t.both_decline, either_decline),
        newly_flagged_share=_ratio(t.newly_flagged, t.candidate_alerts),
        newly_cleared_share=_ratio(t.newly_cleared, t.champion_alerts),
        changed_decision_share=(t.newly_flagged + t.newly_cleared) / t.rows if t.rows else 0.0,
    )


def _interval(values: np.ndarray, settings: ReadinessSettings) -> ConfidenceInterval:
    lo, hi = np.quantile(
        values, [(1 - settings.confidence_level) / 2, (1 + settings.confidence_level) / 2]
    )
    return ConfidenceInterval(
        lower=float(lo),
        upper=float(hi),
        level=settings.confidence_level,
        method=BOOTSTRAP_METHOD,
        resamples=settings.bootstrap_resamples,
        seed=settings.bootstrap_seed,
    )


def _outcomes(
    names: list[str],
    inverse: np.ndarray,
    y: np.ndarray,
    amount: np.ndarray | None,
    amount_column: str | None,
    cand_alert: np.ndarray,
    champ_alert: np.ndarray,
    settings: ReadinessSettings,
) -> OutcomeDeltas:
    """Per day: each model's outcome counts, and the paired bootstrap of their differences.

    Resampling n rows of a day with replacement changes a sum only through rows whose
    contribution is non-zero, so each resample is a multinomial over those rows plus one bucket
    for all the others: exact, and cheap because the models disagree on few rows.
    """
    d = len(names)
    fraud = y.astype(bool)
    value = np.zeros(y.shape) if amount is None else np.nan_to_num(amount.astype(np.float64))
    per_model = {}
    for who, alert in (("candidate", cand_alert), ("champion", champ_alert)):
        caught = fraud & alert
        per_model[who] = np.stack(
            [
                _per_day(inverse, d, caught),
                _per_day(inverse, d, fraud & ~alert),
                _per_day(inverse, d, ~fraud & alert),
                _per_day(inverse, d, value * caught),
            ],
            axis=1,
        )
    # per-row differences (candidate minus champion) in the order of OUTCOMES
    d_caught = (fraud & cand_alert).astype(np.float64) - (fraud & champ_alert)
    d_false = (~fraud & cand_alert).astype(np.float64) - (~fraud & champ_alert)
    contrib = np.stack([d_caught, -d_caught, d_false, value * d_caught], axis=1)
    rows = np.bincount(inverse, minlength=d)
    positives = _per_day(inverse, d, fraud).astype(np.int64)
    r = settings.bootstrap_resamples
    rng = np.random.default_rng([settings.bootstrap_seed % (1 << 63), 9])
    sums = np.zeros((d, r, len(OUTCOMES)))
    for i in range(d):
        day_rows = np.nonzero(inverse == i)[0]
        moving = day_rows[np.any(contrib[day_rows] != 0, axis=1)]
        if moving.size == 0:
            continue
        n = day_rows.size
        pvals = np.r_[np.full(moving.size, 1.0 / n), (n - moving.size) / n]
        counts = rng.multinomial(n, pvals, size=r)[:, :-1].astype(np.float64)
        sums[i] = counts @ contrib[moving]
    has_amount = amount is not None

    def values(cand: np.ndarray, champ: np.ndarray, boot: np.ndarray) -> list[OutcomeValue]:
        return [
            OutcomeValue(
                metric=m,
                candidate=float(cand[j]),
                champion=float(champ[j]),
                delta=float(cand[j] - champ[j]),
                delta_ci=_interval(boot[:, j], settings),
            )
            for j, m in enumerate(OUTCOMES)
            if has_amount or m != "fraud_amount_caught"
        ]

    cand, champ = per_model["candidate"], per_model["champion"]
    days = [
        DayOutcomes(
            day=name,
            rows=int(rows[i]),
            positives=int(positives[i]),
            outcomes=values(cand[i], champ[i], sums[i]),
        )
        for i, name in enumerate(names)
    ]
    # no test day: no mean per day (0/0 wrote NaN into the document)
    per_day = values(cand.sum(axis=0) / d, champ.sum(axis=0) / d, sums.sum(axis=0) / d) if d else []
    return OutcomeDeltas(
        amount_column=amount_column if has_amount else None, days=days, per_day=per_day
    )


def _average_ranks(x: np.ndarray) -> np.ndarray:
    _, inverse, counts = np.unique(x, return_inverse=True, return_counts=True)
    ends = np.cumsum(counts)
    return ((ends - counts + 1 + ends) / 2.0)[inverse]


def spearman(a: np.ndarray, b: np.ndarray) -> float | None:
    """Spearman's rank correlation (average ranks for ties); None when either is constant."""
    ra, rb = _average_ranks(a), _average_ranks(b)
    ra, rb = ra - ra.mean(), rb - rb.mean()
    den = float(np.sqrt((ra * ra).sum() * (rb * rb).sum()))
    return float((ra * rb).sum() / den) if den else None


def _agreement(cand: np.ndarray, champ: np.ndarray, bins: int) -> ScoreAgreement | None:
    """None without rows: nothing to compare, so no agreement is claimed."""
    value = psi(champ.astype(np.float64), cand.astype(np.float64), bins)[0]
    if value is None:
        return None
    return ScoreAgreement(
        spearman=spearman(cand, champ), psi=value, psi_level=level(value), bins=bins
    )


def max_share_within_capacity(
    candidate: np.ndarray, champion: np.ndarray | None, capacity: int
) -> float:
    """Largest s in [0, 1] with s x candidate + (1 - s) x champion alerts <= capacity on every
    day where the candidate raises the volume (candidate > champion, candidate > capacity).

    A day the candidate alerts no more than the champion does not limit the share, even when
    both are over capacity: routing traffic to the candidate only lowers that day's volume, so
    the overload is the champion's and no share of the candidate makes it worse."""
    champion = np.zeros_like(candidate) if champion is None else champion
    share = 1.0
    for c, h in zip(candidate.astype(np.float64), champion.astype(np.float64), strict=True):
        if c > capacity and c > h:
            share = min(share, max(0.0, (capacity - h) / (c - h)))
    return share


def _operational(
    cand_daily: np.ndarray,
    champ_daily: np.ndarray | None,
    latency: float | None,
    settings: ReadinessSettings,
) -> OperationalLimits:
    cap = settings.review_capacity_per_day
    peak = int(cand_daily.max()) if cand_daily.size else 0
    return OperationalLimits(
        review_capacity_per_day=cap,
        candidate_alerts_peak_day=peak,
        candidate_alerts_mean_per_day=float(cand_daily.mean()) if cand_daily.size else 0.0,
        champion_alerts_peak_day=(
            int(champ_daily.max()) if champ_daily is not None and champ_daily.size else None
        ),
        within_review_capacity=peak <= cap,
        max_traffic_share_within_capacity=max_share_within_capacity(cand_daily, champ_daily, cap),
        latency_budget_p50_us=settings.latency_budget_p50_us,
        latency_within_budget=None
        if latency is None
        else latency <= settings.latency_budget_p50_us,
    )


def _share(value: float | None) -> str:
    return "n/a (neither model flags any)" if value is None else f"{value:.3f}"


def _outcome(outcomes: OutcomeDeltas, metric: str) -> OutcomeValue | None:
    return next((o for o in outcomes.per_day if o.metric == metric), None)


def recommend(
    *,
    settings: ReadinessSettings,
    test_positives: int,
    operational: OperationalLimits,
    decisions: DecisionChanges | None,
    outcomes: OutcomeDeltas | None,
    champion_problem: str | None = None,
    gate_overridden: bool = False,
) -> ReadinessRecommendation:
    """Shadow while any blocker holds (every blocker is listed); ramp when decisions barely move
    and outcomes hold; otherwise a canary at a share that fits the review capacity."""
    shadow: list[str] = []
    if decisions is None or outcomes is None:
        shadow.append(
            NO_CHAMPION
            if champion_problem is None
            else f"{NO_CHAMPION} could be scored on these rows: {champion_problem}"
        )
    if gate_overridden:
        shadow.append("the gate passed only by an audited override (governance)")
    if test_positives < settings.min_test_positives:
        shadow.append(
            f"thin evidence: {test_positives} test frauds < {settings.min_test_positives}"
        )
    if operational.latency_within_budget is False:
        shadow.append(
            f"median single-row latency over the budget of {operational.latency_budget_p50_us:g} µs"
        )
    share_cap = operational.max_traffic_share_within_capacity
    if share_cap < settings.min_canary_traffic_share:
        shadow.append(
            f"alert volume: only {share_cap:.4f} of traffic fits the review capacity of "
            f"{operational.review_capacity_per_day}/day (< {settings.min_canary_traffic_share})"
        )
    if decisions is not None and outcomes is not None:
        overlap = decisions.alert_overlap
        if overlap is None:
            # nothing about the decisions was tried: no evidence for any traffic
            shadow.append("no alerts to compare: neither model flags a test row for review")
        elif overlap < settings.shadow_below_alert_overlap:
            shadow.append(
                f"decisions differ a lot: alert overlap {overlap:.3f} < "
                f"{settings.shadow_below_alert_overlap}"
            )
        caught = _outcome(outcomes, "frauds_caught")
        if caught is None:
            shadow.append("no test day: no outcomes to compare")
        elif caught.delta_ci is not None and caught.delta_ci.upper < 0:
            shadow.append(
                f"catches fewer frauds: {caught.delta:+.2f}/day, CI upper "
                f"{caught.delta_ci.upper:+.2f} < 0"
            )
    if shadow:
        return ReadinessRecommendation(stage="shadow", traffic_share=0.0, reasons=shadow)
    assert decisions is not None and outcomes is not None  # no champion is a shadow reason
    caught, false = _outcome(outcomes, "frauds_caught"), _outcome(outcomes, "false_alerts")
    assert caught is not None and false is not None  # no test day is a shadow reason
    overlap = decisions.alert_overlap
    ramp_blockers = []
    if overlap is not None and overlap < settings.ramp_min_alert_overlap:
        ramp_blockers.append(f"alert overlap {overlap:.3f} < {settings.ramp_min_alert_overlap}")
    declines = decisions.decline_overlap
    if declines is not None and declines < settings.ramp_min_decline_overlap:
        ramp_blockers.append(
            f"decline overlap {declines:.3f} < {settings.ramp_min_decline_overlap}"
        )
    lower = caught.delta_ci.lower if caught.delta_ci is not None else caught.delta
    if lower < -settings.ramp_max_fraud_loss_per_day:
        ramp_blockers.append(
            f"frauds caught per day CI lower {lower:+.2f} < "
            f"-{settings.ramp_max_fraud_loss_per_day:g}"
        )
    if false.delta > settings.ramp_max_extra_false_alerts_per_day:
        ramp_blockers.append(
            f"{false.delta:+.2f} false alerts per day > "
            f"{settings.ramp_max_extra_false_alerts_per_day:g}"
        )
    if not operational.within_review_capacity:
        ramp_blockers.append(
            f"peak {operational.candidate_alerts_peak_day} alerts/day over the "
            f"review capacity of {operational.review_capacity_per_day}"
        )
    if not ramp_blockers:
        return ReadinessRecommendation(
            stage="ramp",
            traffic_share=None,
            reasons=[
                f"alert overlap {_share(overlap)} >= {settings.ramp_min_alert_overlap}",
                f"decline overlap {_share(declines)} >= {settings.ramp_min_decline_overlap}",
                f"frauds caught per day CI lower {lower:+.2f} >= -{settings.ramp_max_fraud_loss_per_day:g}",
                f"{false.delta:+.2f} false alerts per day <= {settings.ramp_max_extra_false_alerts_per_day:g}",
                f"peak {operational.candidate_alerts_peak_day} alerts/day within the review capacity",
            ],
        )
    share = min(settings.canary_traffic_share, share_cap)
    reasons = [f"not ready to ramp: {b}" for b in ramp_blockers]
    if share < settings.canary_traffic_share:
        reasons.append(f"share lowered to {share:.4f} to fit the review capacity")
    return ReadinessRecommendation(stage="canary", traffic_share=share, reasons=reasons)


def compute_readiness(inputs: ReadinessInputs, settings: ReadinessSettings) -> PromotionReadiness:
    """The readiness document of one PASS bundle (``html`` and ``timings`` left to the caller)."""
    y = np.asarray(inputs.y).astype(np.int64)
    names_arr, inverse = np.unique(np.asarray(inputs.days).astype(str), return_inverse=True)
    names = [str(n) for n in names_arr]
    cand = np.asarray(inputs.candidate_score, dtype=np.float64)
    if cand.shape != y.shape or inverse.shape != y.shape:
        raise ValueError(
            f"labels, days and scores differ in length: {y.shape}, {inverse.shape}, {cand.shape}"
        )
    cand_alert = _flags(cand, inputs.candidate_policy.review_threshold)
    cand_daily = _per_day(inverse, len(names), cand_alert)
    decisions = outcomes = agreement = None
    champ_daily = None
    scored = (
        inputs.champion is not None
        and inputs.champion_score is not None
        and inputs.champion_policy is not None
    )
    if scored:
        champ = np.asarray(inputs.champion_score, dtype=np.float64)
        if champ.shape != y.shape:
            raise ValueError(f"champion scores {champ.shape} differ from the rows {y.shape}")
        cp = inputs.champion_policy
        assert cp is not None
        champ_alert = _flags(champ, cp.review_threshold)
        champ_daily = _per_day(inverse, len(names), champ_alert)
        decisions = _decisions(
            names,
            inverse,
            cand_alert,
            champ_alert,
            _flags(cand, inputs.candidate_policy.decline_threshold),
            _flags(champ, cp.decline_threshold),
            inputs.candidate_policy,
            cp,
        )
        outcomes = _outcomes(
            names,
            inverse,
            y,
            inputs.amount,
            inputs.amount_column,
            cand_alert,
            champ_alert,
            settings,
        )
        agreement = _agreement(cand, champ, settings.psi_bins)
    operational = _operational(cand_daily, champ_daily, inputs.latency_p50_us, settings)
    problem = inputs.champion_problem if inputs.champion is not None else None
    recommendation = recommend(
        settings=settings,
        test_positives=int(y.sum()),
        operational=operational,
        decisions=decisions,
        outcomes=outcomes,
        champion_problem=problem,
        gate_overridden=inputs.gate_overridden,
    )
    return PromotionReadiness(
        bundle_id=inputs.bundle_id,
        train_run_id=inputs.train_run_id,
        partition_key=inputs.partition_key,
        model_family=inputs.model_family,
        model_sha256=inputs.model_sha256,
        evaluation_report_digest=inputs.evaluation_report_digest,
        champion=inputs.champion,
        champion_problem=problem,
        gate_overridden=inputs.gate_overridden,
        test_rows=int(y.size),
        test_positives=int(y.sum()),
        test_days=len(names),
        settings=settings,
        decisions=decisions,
        outcomes=outcomes,
        agreement=agreement,
        operational=operational,
        recommendation=recommendation,
    )


def readiness_uri_for(bundle_uri: str) -> str:
    """Where a bundle's readiness document lives: next to its bundle.json."""
    return bundle_uri.rsplit("/", 1)[0] + "/" + READINESS_NAME


def markdown_summary(doc: PromotionReadiness) -> str:
    """The recommendation and the per-day decision changes as Markdown (Dagster metadata)."""
    rec = doc.recommendation
    share = "" if rec.traffic_share is None else f" at {rec.traffic_share:.2%} of traffic"
    lines = [f"**{rec.stage}**{share}", ""] + [f"- {r}" for r in rec.reasons]
    if doc.decisions is not None:
        lines += [
            "",
            "| day | rows | candidate alerts | champion alerts | both | newly flagged | "
            "newly cleared | candidate declines | champion declines |",
            "|---|" + "---:|" * 8,
        ]
        lines += [
            f"| {d.day} | {d.rows} | {d.candidate_alerts} | {d.champion_alerts} | "
            f"{d.both_alert} | {d.newly_flagged} | {d.newly_cleared} | "
            f"{d.candidate_declines} | {d.champion_declines} |"
            for d in [*doc.decisions.days, doc.decisions.total]
        ]
    return "\n".join(lines)
