"""The quality gate: PASS/FAIL with every criterion, bounded below by the policy floors."""

from __future__ import annotations

from datetime import UTC, datetime

from model_factory.contracts import (
    EvaluationReport,
    EvaluationReportRef,
    GateCriterion,
    GateFloors,
    GateReceipt,
    GateThresholds,
)


def _criterion(name: str, metric: str, comparator: str, configured: float, floor: float | None,
               observed: float | None) -> GateCriterion:
    # The policy floor wins whenever the config is more lenient than it.
    if floor is None:
        threshold = configured
    else:
        threshold = max(configured, floor) if comparator == ">=" else min(configured, floor)
    if observed is None:
        passed = False
    else:
        passed = observed >= threshold if comparator == ">=" else observed <= threshold
    return GateCriterion(name=name, metric=metric, comparator=comparator, threshold=threshold,
                         configured=configured, policy_floor=floor, observed=observed, passed=passed)


def decide_gate(report: EvaluationReport, report_ref: EvaluationReportRef, config: GateThresholds,
                floors: GateFloors) -> GateReceipt:
    """Judge the test metrics; an ordinary FAIL is a verdict, not an error."""
    test = report.metrics["test"]
    criteria = [
        _criterion("min_test_positives", "test.positives", ">=", config.min_test_positives,
                   floors.min_test_positives, float(test.positives)),
        _criterion("min_roc_auc", "test.roc_auc", ">=", config.min_roc_auc, floors.min_roc_auc,
                   test.roc_auc),
        _criterion("min_pr_auc", "test.pr_auc", ">=", config.min_pr_auc, floors.min_pr_auc,
                   test.pr_auc),
        _criterion("max_brier", "test.brier", "<=", config.max_brier, floors.max_brier, test.brier),
    ]
    failed = [c for c in criteria if not c.passed]
    reasons = [
        f"{c.metric} = {'missing' if c.observed is None else f'{c.observed:.4g}'} fails "
        f"{c.comparator} {c.threshold:.4g} (config {c.configured:.4g}, policy floor "
        f"{'none' if c.policy_floor is None else f'{c.policy_floor:.4g}'})"
        for c in failed
    ]
    if not failed:
        reasons.append(f"all {len(criteria)} criteria met")
    reasons.append("judged on point values of the test window (no confidence intervals yet)")
    return GateReceipt(
        train_run_id=report.train_run_id, gate_status="FAIL" if failed else "PASS",
        criteria=criteria,
        observed_metrics={"roc_auc": test.roc_auc, "pr_auc": test.pr_auc, "brier": test.brier,
                          "log_loss": test.log_loss, "positives": float(test.positives),
                          "rows": float(test.rows)},
        reasons=reasons, evaluation_report_ref=report_ref, model_sha256=report.model_sha256,
        emitted_at_utc=datetime.now(UTC))
