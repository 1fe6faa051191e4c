"""The unpartitioned `backtest_summary`: every trained week side by side, refreshed after new weeks."""

import os
from dataclasses import dataclass
from datetime import UTC, datetime

import dagster as dg

from model_factory.backtest import plot_markdown, plot_svg, spread_table, summarize, weeks_table
from model_factory.contracts import BacktestWeek
from model_factory.defs.ledger import CODE_VERSION
from model_factory.defs.resources import ModelFactoryResource
from model_factory.errors import ConfigError
from model_factory.ledger import StageMaterialization, stage_materializations

SOURCES = ("evaluation_report", "gate_receipt", "model_bundle")

# Refresh once new weeks have landed and nothing upstream is still running, so a backfill
# yields one refresh at its end rather than one per week. (eager() would wait for every
# weekly partition, including weeks no one trained, and only looks at the latest week.)
REFRESH_AFTER_NEW_WEEKS = (
    (
        dg.AutomationCondition.any_deps_updated().since_last_handled()
        # An upstream materialization that lands between two ticks together with the summary's
        # own refresh is lost by since_last_handled (the reset wins a tie): a run of a week can
        # finish just after a refresh that another run of that week let through. Refresh again.
        | (
            dg.AutomationCondition.any_deps_updated() & dg.AutomationCondition.newly_updated()
        ).with_label("upstream updated with the last refresh")
    )
    & ~dg.AutomationCondition.any_deps_in_progress()
    & ~dg.AutomationCondition.in_progress()
).with_label("after new weeks, once upstream is idle")


def _interval_seconds(name: str = "MODEL_FACTORY_AUTOMATION_INTERVAL_SECONDS") -> int:
    value = os.environ.get(name) or "30"
    if not value.isdigit() or int(value) < 1:
        raise ConfigError(f"'{value}' is not a whole number of seconds >= 1", field=name)
    return int(value)


# The daemon evaluates the condition this often (seconds); tests lower it.
AUTOMATION_INTERVAL_SECONDS = _interval_seconds()


def _value(meta: dict, key: str, cast=float):
    value = meta.get(key)
    return None if value is None else cast(value)


@dataclass(frozen=True)
class BacktestLine:
    """The runs a backtest compares: one model family under one config, week after week."""

    weeks: list[BacktestWeek]
    model_family: str | None = None
    config_hash: str | None = None
    other_reports: int = 0  # reports of other families or configs, left out


def backtest_weeks(instance: dg.DagsterInstance) -> list[BacktestWeek]:
    return backtest_line(instance).weeks


def backtest_line(instance: dg.DagsterInstance) -> BacktestLine:
    """One row per evaluated week of one line: its latest report, and the verdict and bundle of
    that run. The line is the (model family, config) that reports the most weeks (of equals,
    the one reported last): an experiment on a week, or another family trained on the same
    instance, would otherwise replace that week's row and move the spread."""
    by_run: dict[tuple[str, str, str], StageMaterialization] = {}
    reports: list[StageMaterialization] = []
    for m in stage_materializations(instance, stages=SOURCES):  # storage-id order
        by_run[(m.stage, m.partition, str(m.meta.get("train_run_id")))] = m
        if m.stage == "evaluation_report":
            reports.append(m)
    lines: dict[tuple[str | None, str | None], dict[str, StageMaterialization]] = {}
    last: dict[tuple[str | None, str | None], int] = {}
    for order, m in enumerate(reports):
        key = _key(m)
        lines.setdefault(key, {})[m.partition] = m  # last wins
        last[key] = order
    if not lines:
        return BacktestLine(weeks=[])
    line = max(lines, key=lambda k: (len(lines[k]), last[k]))
    weeks = []
    for week, report in sorted(lines[line].items()):
        trid = report.meta.get("train_run_id")
        rows = _value(report.meta, "test_rows", int)
        positives = _value(report.meta, "test_positives", int)
        # Reports recorded before ranking metrics were left out when unmeasured read 0 for a
        # test week of one class: not a measurement, so not a worst week either
        one_class = positives is not None and positives in (0, rows)
        gate = by_run.get(("gate_receipt", week, str(trid)))
        bundle = by_run.get(("model_bundle", week, str(trid)))
        weeks.append(
            BacktestWeek(
                partition_key=week,
                train_run_id=trid,
                roc_auc=None if one_class else _value(report.meta, "roc_auc"),
                pr_auc=None if one_class else _value(report.meta, "pr_auc"),
                brier=_value(report.meta, "brier"),
                test_rows=rows,
                test_positives=positives,
                gate_status=gate.meta.get("gate_status") if gate else None,
                bundle_id=bundle.meta.get("bundle_id") if bundle else None,
            )
        )
    family, config = line
    return BacktestLine(
        weeks=weeks,
        model_family=None if family is None else str(family),
        config_hash=None if config is None else str(config),
        other_reports=len(reports) - sum(1 for m in reports if _key(m) == line),
    )


def _key(m: StageMaterialization) -> tuple[str | None, str | None]:
    return (m.meta.get("model_family"), m.meta.get("config_hash"))


@dg.asset(
    deps=[dg.AssetDep(source, partition_mapping=dg.AllPartitionMapping()) for source in SOURCES],
    kinds={"json", "svg"},
    code_version=CODE_VERSION,
    group_name="backtest",
    automation_condition=REFRESH_AFTER_NEW_WEEKS,
)
def backtest_summary(
    context: dg.AssetExecutionContext, model_factory: ModelFactoryResource
) -> dg.MaterializeResult:
    """Walk-forward backtest: every week's test metrics and gate verdict, their spread, a plot."""
    line = backtest_line(context.instance)
    summary = summarize(
        line.weeks,
        created_at=datetime.now(UTC),
        model_family=line.model_family,
        config_hash=line.config_hash,
        other_reports=line.other_reports,
    )
    store = model_factory.factory_env().store
    ref = store.put_document("backtest_summary.json", summary)
    svg = plot_svg(summary)
    plot = store.put_bytes("backtest_plot.svg", svg, media_type="image/svg+xml", suffix=".svg")
    spread = {s.metric: s for s in summary.spread}
    numbers = {
        f"{stat}_{metric}": round(getattr(s, stat), 6)
        for metric, s in spread.items()
        for stat in ("mean", "std", "min", "max")
        if getattr(s, stat) is not None
    }
    context.log.info(
        f"backtest over {len(summary.weeks)} week(s): {summary.pass_weeks} PASS, "
        f"{summary.fail_weeks} FAIL"
    )
    return dg.MaterializeResult(
        metadata={
            "weeks": dg.MetadataValue.md(weeks_table(summary)),
            "spread": dg.MetadataValue.md(spread_table(summary)),
            "plot": dg.MetadataValue.md(plot_markdown(svg)),
            "trained_weeks": len(summary.weeks),
            "pass_weeks": summary.pass_weeks,
            "fail_weeks": summary.fail_weeks,
            "model_family": summary.model_family or "",
            "config_hash": summary.config_hash or "",
            "other_reports": summary.other_reports,
            "first_week": summary.weeks[0].partition_key if summary.weeks else "",
            "last_week": summary.weeks[-1].partition_key if summary.weeks else "",
            **numbers,
            "plot_uri": dg.MetadataValue.path(plot.uri),
            "output_uri": dg.MetadataValue.path(ref.uri),
            "output_sha256": ref.sha256,
            "code_version": CODE_VERSION,
        },
        data_version=dg.DataVersion(ref.sha256),
    )


backtest_job = dg.define_asset_job(
    "backtest", selection=[backtest_summary], description="Refresh the backtest summary."
)

backtest_automation = dg.AutomationConditionSensorDefinition(
    "backtest_automation",
    target=dg.AssetSelection.assets(backtest_summary),
    default_status=dg.DefaultSensorStatus.RUNNING,
    minimum_interval_seconds=AUTOMATION_INTERVAL_SECONDS,
    description="Refreshes backtest_summary after new weeks (it only reads the ledger: safe to "
    "run by default).",
)
