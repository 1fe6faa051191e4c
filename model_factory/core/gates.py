"""The quality gate: every configured criterion judged with its evidence, bounded by policy.

Kinds of criteria: a point value; the lower bound of a bootstrap interval (positives are rare,
so a point estimate alone misleads); non-inferiority against the family's champion, by a paired
bootstrap on the same test rows; and stability of a metric over the previous weeks.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta

import numpy as np

from model_factory.contracts import (
    ChampionRef,
    ConfidenceInterval,
    EvaluationReport,
    EvaluationReportRef,
    GateCriterion,
    GateCriterionSpec,
    GateReceipt,
    GateSettings,
    GovernancePolicy,
)
from model_factory.core.bootstrap import bootstrap_ci, paired_bootstrap_delta
from model_factory.core.canaries import judge_leakage, leakage_reasons


@dataclass(frozen=True)
class GateEvidence:
    """What the gate judges: the report, the test rows' labels and scores, the champion's
    scores on the same rows (or why there are none), and earlier weeks' reports."""

    report: EvaluationReport
    report_ref: EvaluationReportRef
    frame_sha256: str
    y_test: np.ndarray
    score_test: np.ndarray
    champion: ChampionRef | None = None
    champion_score_test: np.ndarray | None = None
    champion_problem: str | None = None
    history: tuple[tuple[str, EvaluationReport], ...] = ()


def _point(report: EvaluationReport, metric: str) -> float | None:
    """The test window's value; None when it was not measured (the criterion then fails)."""
    test = report.metrics["test"]
    return float(test.positives) if metric == "positives" else getattr(test, metric)


def _report_ci(
    report: EvaluationReport, metric: str, settings: GateSettings
) -> ConfidenceInterval | None:
    """The report's interval, when it was made exactly as the gate would make it."""
    ci = getattr(report.metrics["test"], f"{metric}_ci", None)
    same = (
        ci is not None
        and abs(ci.level - settings.confidence_level) < 1e-12
        and ci.resamples == settings.bootstrap_resamples
        and ci.seed == settings.bootstrap_seed
    )
    return ci if same else None


def _judge(
    spec: GateCriterionSpec,
    ev: GateEvidence,
    settings: GateSettings,
    floor: float | None,
    mandatory: bool,
) -> GateCriterion:
    boot = {
        "resamples": settings.bootstrap_resamples,
        "seed": settings.bootstrap_seed,
        "level": settings.confidence_level,
    }
    ci: ConfidenceInterval | None = None
    observed: float | None
    threshold = spec.threshold
    applicable = True
    if spec.kind == "point":
        observed = _point(ev.report, spec.metric)
        detail = f"test {spec.metric}"
    elif spec.kind == "ci_lower_bound":
        ci = _report_ci(ev.report, spec.metric, settings) or bootstrap_ci(
            ev.y_test, ev.score_test, spec.metric, **boot
        )
        observed = ci.lower if ci is not None else None
        detail = f"lower bound of the {settings.confidence_level:.0%} CI of test {spec.metric}"
    elif spec.kind == "non_inferiority":
        threshold = -spec.threshold
        if ev.champion is None:
            observed, applicable = None, False
            detail = "no champion: this is the family's first model; absolute criteria only"
        elif ev.champion_score_test is None:
            observed = None
            detail = f"champion {ev.champion.bundle_id} could not be scored: {ev.champion_problem}"
        else:
            ci = paired_bootstrap_delta(
                ev.y_test, ev.score_test, ev.champion_score_test, spec.metric, **boot
            )
            observed = ci.lower if ci is not None else None
            detail = (
                f"lower CI bound of {spec.metric}(candidate) - {spec.metric}(champion "
                f"{ev.champion.bundle_id}) on the same {ev.y_test.size} test rows"
            )
    else:  # stability
        # the previous `weeks` calendar weeks, not the last `weeks` entries: a week without a
        # report must not pull an older one into a shorter criterion's window
        since = (
            date.fromisoformat(ev.report.partition_key) - timedelta(weeks=spec.weeks)
        ).isoformat()
        earlier = [
            v
            for key, r in ev.history
            if since <= key < ev.report.partition_key and (v := _point(r, spec.metric)) is not None
        ]
        current = _point(ev.report, spec.metric)
        if current is None:
            # A metric this week did not measure fails, as a point criterion on it does.
            observed = None
            detail = f"test {spec.metric} not measured this week: no spread to judge"
        elif not earlier:
            observed, applicable = None, False
            detail = "no earlier weeks to compare with: not applicable yet"
        else:
            values = [*earlier, current]
            observed = max(values) - min(values)
            detail = f"spread of test {spec.metric} over this and {len(earlier)} earlier week(s)"
    if not applicable:
        passed = True
    elif observed is None:
        passed = False
    else:
        passed = observed >= threshold if spec.comparator == ">=" else observed <= threshold
    return GateCriterion(
        name=spec.name,
        metric=spec.metric,
        kind=spec.kind,
        comparator=spec.comparator,
        threshold=threshold,
        policy_floor=floor,
        mandatory=mandatory,
        observed=observed,
        ci=ci,
        passed=passed,
        detail=detail,
    )


def failure_summary(reasons: list[str]) -> str:
    """A FAIL verdict in one line, as run records give it (the ledger's and a bundle's)."""
    return "gate FAIL: " + "; ".join(reasons)


def _reason(c: GateCriterion) -> str:
    shown = "missing" if c.observed is None else f"{c.observed:.4g}"
    return f"{c.name}: {c.detail} = {shown}, needs {c.comparator} {c.threshold:.4g}"


def decide_gate(settings: GateSettings, policy: GovernancePolicy, ev: GateEvidence) -> GateReceipt:
    """Judge every criterion; an ordinary FAIL is a verdict, not an error."""
    criteria = [
        _judge(
            spec,
            ev,
            settings,
            policy.gate_floors.get(spec.name),
            spec.name in policy.mandatory_criteria,
        )
        for spec in settings.criteria
    ]
    failed = [c for c in criteria if not c.passed]
    leakage = judge_leakage(settings.leakage, ev.report)
    judged = "FAIL" if failed or leakage.suspected else "PASS"
    reasons = [_reason(c) for c in failed] + leakage_reasons(leakage)
    reasons = reasons or [f"all {len(criteria)} criteria met"]
    if ev.champion is None:
        reasons.append(
            "no champion: the first model of family "
            f"'{ev.report.model_family}' is judged on absolute criteria only"
        )
    status = judged
    if settings.override is not None and judged == "FAIL" and leakage.suspected:
        # An override accepts a weaker model; it cannot vouch for evidence that may be void.
        reasons.append("override not applied: a suspected_leakage verdict cannot be overridden")
    elif settings.override is not None and judged == "FAIL":
        status = "PASS"
        reasons.append(f"FORCED PASS by {settings.override.approver}: {settings.override.reason}")
    test = ev.report.metrics["test"]
    return GateReceipt(
        train_run_id=ev.report.train_run_id,
        gate_status=status,
        judged_status=judged,
        criteria=criteria,
        observed_metrics={
            "roc_auc": test.roc_auc,
            "pr_auc": test.pr_auc,
            "brier": test.brier,
            "log_loss": test.log_loss,
            "positives": float(test.positives),
            "rows": float(test.rows),
        },
        reasons=reasons,
        evaluation_report_ref=ev.report_ref,
        model_sha256=ev.report.model_sha256,
        frame_sha256=ev.frame_sha256,
        champion=ev.champion,
        bootstrap={
            "resamples": settings.bootstrap_resamples,
            "seed": settings.bootstrap_seed,
            "level": settings.confidence_level,
        },
        override=settings.override if status != judged else None,
        leakage=leakage,
        emitted_at_utc=datetime.now(UTC),
    )
