"""The six weekly stages of a train run (ARCHITECTURE §2), each a thin call into the core."""

import warnings

import dagster as dg

from model_factory.contracts import (
    ArtifactRef,
    GateReceipt,
    IntakeReceipt,
    LeakageAudit,
    TrainingFrameRecord,
)
from model_factory.core.frames import check_frame_schema
from model_factory.core.journal import entry_digest
from model_factory.core.readiness import markdown_summary, readiness_uri_for
from model_factory.core.runs import (
    StageResult,
    journal_stage,
    load_document,
    load_frame,
    load_readiness,
    stage_bundle,
    stage_evaluation,
    stage_frame,
    stage_gate,
    stage_intake,
    stage_model,
)
from model_factory.defs.config import TrainingConfig, to_contract
from model_factory.defs.ledger import (
    CODE_VERSION,
    criteria_table,
    earlier_reports,
    json_value,
    materialize_result,
    provenance,
    run_intake_ref,
    unverified_trigger,
    upstream_ref,
)
from model_factory.defs.partitions import WEEKLY_PARTITIONS
from model_factory.defs.pools import TRAINING_POOL
from model_factory.defs.resources import ModelFactoryResource
from model_factory.errors import ModelFactoryError, PolicyViolationError

GROUP = "training"
LEAKAGE_CHECK = "leakage_audit_clean"
SCHEMA_CHECK = "frame_matches_feature_schema"

_common = dict(partitions_def=WEEKLY_PARTITIONS, code_version=CODE_VERSION, group_name=GROUP)


def audit_table(audit: LeakageAudit) -> str:
    """The audit's rules as a Markdown table (the check's and the frame's metadata)."""
    rows = ["| rule | subject | verdict | evidence |", "|---|---|---|---|"]
    rows += [
        f"| {r.rule} | {r.subject or ''} | {'pass' if r.passed else '**FAIL**'} | "
        f"{r.detail.replace('|', '/')} |"
        for r in audit.rules
    ]
    return "\n".join(rows)


def leakage_check_result(audit: LeakageAudit) -> dg.AssetCheckResult:
    """The blocking check: passes only when every rule of the audit passed."""
    failed = [r.rule + (f"[{r.subject}]" if r.subject else "") for r in audit.rules if not r.passed]
    return dg.AssetCheckResult(
        check_name=LEAKAGE_CHECK,
        passed=audit.passed,
        severity=dg.AssetCheckSeverity.ERROR,
        metadata={
            "violations": json_value(audit.violations),
            "failed_rules": json_value(failed),
            "rules": dg.MetadataValue.md(audit_table(audit)),
        },
    )


def _maturity_metadata(audit: LeakageAudit) -> dict:
    m = audit.label_maturity
    if m is None:
        return {}
    return {
        f"{s}_expected_visible_share_of_positives": v.expected_visible_share_of_positives
        for s, v in m.splits.items()
        if v.expected_visible_share_of_positives is not None
    } | {"label_maturity": json_value(m.model_dump(mode="json"))}


def _recorded(
    context: dg.AssetExecutionContext,
    model_factory: ModelFactoryResource,
    result: StageResult,
    intake: IntakeReceipt,
    **extra,
) -> dg.MaterializeResult:
    """Chain the stage's output into the ledger journal, then materialize naming that entry, so
    `ledger verify` ties every materialization to its link of the hash chain (and back)."""
    entry = journal_stage(
        model_factory.factory_env(),
        context.asset_key.to_user_string(),
        result.ref,
        intake.train_run_id,
        context.partition_key,
        context.run.run_id,
    )
    return materialize_result(
        context,
        result,
        intake,
        ledger_sequence=entry.sequence,
        ledger_entry_sha256=entry_digest(entry),
        **extra,
    )


def _intake(context: dg.AssetExecutionContext) -> tuple[IntakeReceipt, ArtifactRef]:
    ref = run_intake_ref(context)
    return load_document(ref, IntakeReceipt), ref


@dg.asset(kinds={"json"}, **_common)
def dataset_manifests(
    context: dg.AssetExecutionContext, config: TrainingConfig, model_factory: ModelFactoryResource
) -> dg.MaterializeResult:
    """Intake: resolve the week's windows, find and verify every manifest, pin the train run."""
    cfg = to_contract(config)
    env = model_factory.factory_env()
    if env.policy.allowed_triggerers is not None:
        # the policy names who may train: a trigger the run's tags claim must be the instance's
        doubt = unverified_trigger(context.instance, context.run)
        if doubt is not None:
            raise PolicyViolationError(doubt, source=env.policy_source, field="allowed_triggerers")
    result = stage_intake(
        env,
        cfg,
        context.partition_key,
        provenance(context),
        earlier_reports(context, cfg),
    )
    intake: IntakeReceipt = result.doc  # type: ignore[assignment]
    champion = intake.champion.bundle_id if intake.champion else "none (first of its family)"
    context.log.info(
        f"train run {intake.train_run_id}: {len(intake.input_dataset_manifests)} "
        f"manifests pinned; champion {champion}"
    )
    return _recorded(
        context,
        model_factory,
        result,
        intake,
        windows=json_value(intake.windows.model_dump(mode="json")),
        config=json_value(intake.config.model_dump(mode="json")),
    )


def _frame_checks() -> list[dg.AssetCheckSpec]:
    # Per week: without partitions_def Dagster records each result for no week, and the week's
    # planned check never resolves (the UI shows it skipped). Dagster 1.13 calls the argument a
    # preview; the project pins one dagster patch release, so its warning is only noise here.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", dg.PreviewWarning)
        return [
            dg.AssetCheckSpec(
                LEAKAGE_CHECK,
                asset="training_frame",
                blocking=True,
                partitions_def=WEEKLY_PARTITIONS,
                description="Every leakage rule holds on the frame's evidence: windows "
                "ordered, rows in their window, no feature available after its event "
                "or past its TTL, no label observed at or after its cut, unlabeled "
                "events handled, no PII or label-derived feature.",
            ),
            dg.AssetCheckSpec(
                SCHEMA_CHECK,
                asset="training_frame",
                blocking=True,
                partitions_def=WEEKLY_PARTITIONS,
                description="The stored frame has exactly the declared feature schema.",
            ),
        ]


@dg.asset(
    deps=[dataset_manifests],
    kinds={"polars", "parquet"},
    check_specs=_frame_checks(),
    **_common,
)
def training_frame(
    context: dg.AssetExecutionContext, model_factory: ModelFactoryResource
) -> dg.MaterializeResult:
    """The leakage-safe frame: as-of joins on available_at with TTL, labels as of their cut."""
    intake, intake_ref = _intake(context)
    result = stage_frame(model_factory.factory_env(), intake_ref)
    record: TrainingFrameRecord = result.doc  # type: ignore[assignment]
    audit = record.leakage_audit
    try:
        check_frame_schema(load_frame(record), record.feature_schema, record.frame.uri)
        schema_ok, schema_msg = True, f"{len(record.feature_schema)} features as declared"
    except ModelFactoryError as exc:
        schema_ok, schema_msg = False, str(exc)
    checks = [
        leakage_check_result(audit),
        dg.AssetCheckResult(
            check_name=SCHEMA_CHECK, passed=schema_ok, metadata={"detail": schema_msg}
        ),
    ]
    return _recorded(
        context,
        model_factory,
        result,
        intake,
        check_results=checks,
        frame_uri=dg.MetadataValue.path(record.frame.uri),
        frame_sha256=record.frame.sha256,
        leakage_audit=json_value(audit.model_dump(mode="json")),
        leakage_rules=dg.MetadataValue.md(audit_table(audit)),
        **_maturity_metadata(audit),
        feature_schema=json_value([f.model_dump() for f in record.feature_schema]),
    )


@dg.asset(deps=[training_frame], kinds={"xgboost"}, pool=TRAINING_POOL, **_common)
def model(
    context: dg.AssetExecutionContext, model_factory: ModelFactoryResource
) -> dg.MaterializeResult:
    """A deterministic XGBoost model (hist, fixed seed and threads, early stopping on val)."""
    intake, intake_ref = _intake(context)
    result = stage_model(
        model_factory.factory_env(),
        intake_ref,
        upstream_ref(context, "training_frame", intake.train_run_id),
    )
    return _recorded(context, model_factory, result, intake)


@dg.asset(deps=[model], kinds={"json", "html"}, **_common)
def evaluation_report(
    context: dg.AssetExecutionContext, model_factory: ModelFactoryResource
) -> dg.MaterializeResult:
    """Val and test evaluation: ROC-AUC and PR-AUC with bootstrap CIs, operating points and the
    decision policy chosen on val, calibration, slices, drift, SHAP, latency, HTML view."""
    from model_factory.contracts import EvaluationReport
    from model_factory.core.report_html import (
        HISTORY_WEEKS,
        earlier_reports,
        headline_metrics,
        markdown_operating_points,
        markdown_slices,
        render_report_html,
    )
    from model_factory.defs.ledger import family_report_candidates

    intake, intake_ref = _intake(context)
    env = model_factory.factory_env()
    result = stage_evaluation(
        env,
        intake_ref,
        upstream_ref(context, "training_frame", intake.train_run_id),
        upstream_ref(context, "model", intake.train_run_id),
    )
    report: EvaluationReport = result.doc  # type: ignore[assignment]
    # The page to open adds the earlier weeks found in the ledger and the latency. It depends on
    # what else has run, so only this metadata points at it; the report references its own
    # deterministic page (report_html_pinned).
    # a few candidates per week: a report that no longer loads (removed, an older contract)
    # gives way to the week's next newest
    candidates = family_report_candidates(
        context.instance, context.partition_key, report.model_family, HISTORY_WEEKS, per_week=3
    )
    history = earlier_reports(
        ((week, ref) for week, refs in reversed(candidates) for ref in refs),
        context.partition_key,
        report.model_family,
        HISTORY_WEEKS,
    )
    view = env.store.put_bytes(
        "evaluation_report_view.html",
        render_report_html(report, history, include_timings=True),
        media_type="text/html",
        suffix=".html",
    )
    return _recorded(
        context,
        model_factory,
        result,
        intake,
        **headline_metrics(report),
        model_family=report.model_family,  # earlier_reports picks a week's report by family
        report_html=dg.MetadataValue.path(view.uri),
        **({"report_html_pinned": dg.MetadataValue.path(report.html.uri)} if report.html else {}),
        operating_points=dg.MetadataValue.md(markdown_operating_points(report)),
        slices=dg.MetadataValue.md(markdown_slices(report)),
        top_drifting=json_value(report.drift.top_drifting),
        policy=json_value(report.policy.model_dump(mode="json")),
        timings=json_value(report.timings),
    )


@dg.asset(deps=[evaluation_report], kinds={"json"}, **_common)
def gate_receipt(
    context: dg.AssetExecutionContext, model_factory: ModelFactoryResource
) -> dg.MaterializeResult:
    """PASS/FAIL with every criterion; a FAIL is a verdict recorded here, not a failed run."""
    intake, intake_ref = _intake(context)
    result = stage_gate(
        model_factory.factory_env(),
        intake_ref,
        upstream_ref(context, "training_frame", intake.train_run_id),
        upstream_ref(context, "model", intake.train_run_id),
        upstream_ref(context, "evaluation_report", intake.train_run_id),
    )
    gate: GateReceipt = result.doc  # type: ignore[assignment]
    context.log.info(f"gate {gate.gate_status}: {'; '.join(gate.reasons)}")
    return _recorded(
        context,
        model_factory,
        result,
        intake,
        gate_status=gate.gate_status,
        judged_status=gate.judged_status,
        reasons=json_value(gate.reasons),
        champion=gate.champion.bundle_id if gate.champion else "none",
        override=json_value(gate.override.model_dump() if gate.override else None),
        criteria=dg.MetadataValue.md(criteria_table(gate)),
    )


@dg.asset(deps=[gate_receipt], kinds={"json"}, **_common)
def model_bundle(
    context: dg.AssetExecutionContext, model_factory: ModelFactoryResource
) -> dg.MaterializeResult:
    """The immutable, content-addressed bundle; the publish sensor picks up PASS ones."""
    intake, intake_ref = _intake(context)
    result, bundle, created = stage_bundle(
        model_factory.factory_env(),
        intake_ref,
        upstream_ref(context, "training_frame", intake.train_run_id),
        upstream_ref(context, "model", intake.train_run_id),
        upstream_ref(context, "evaluation_report", intake.train_run_id),
        upstream_ref(context, "gate_receipt", intake.train_run_id),
        provenance(context),
    )
    return _recorded(
        context,
        model_factory,
        result,
        intake,
        bundle_id=bundle.bundle_id,
        gate_status=bundle.gate_receipt.gate_status,
        newly_written=created,
        **readiness_metadata(result.ref.uri),
    )


def readiness_metadata(bundle_uri: str) -> dict:
    """A PASS bundle's promotion readiness (FAIL bundles have none): the recommended stage and
    share, the reasons, decision changes per day, and links to the document and its page."""
    doc = load_readiness(bundle_uri) if bundle_uri else None
    if doc is None:
        return {}
    rec, d = doc.recommendation, doc.decisions
    meta = {
        "readiness_stage": rec.stage,
        "readiness_reasons": json_value(rec.reasons),
        "readiness": dg.MetadataValue.md(markdown_summary(doc)),
        "readiness_uri": dg.MetadataValue.path(readiness_uri_for(bundle_uri)),
        "readiness_peak_daily_alerts": doc.operational.candidate_alerts_peak_day,
    }
    if rec.traffic_share is not None:
        meta["readiness_traffic_share"] = rec.traffic_share
    if doc.html is not None:
        meta["readiness_html"] = dg.MetadataValue.path(doc.html.uri)
    if d is not None and d.alert_overlap is not None:
        meta["readiness_alert_overlap"] = d.alert_overlap
    if doc.agreement is not None:
        meta["readiness_score_psi"] = doc.agreement.psi
        if doc.agreement.spearman is not None:
            meta["readiness_spearman"] = doc.agreement.spearman
    return meta


TRAINING_ASSETS = [
    dataset_manifests,
    training_frame,
    model,
    evaluation_report,
    gate_receipt,
    model_bundle,
]
