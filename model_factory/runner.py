"""Running weeks through the Dagster asset graph from the command line (and tests).

Each week is one run of the ``weekly_training`` job in the given instance, exactly what a
backfill or the schedule would launch, so the UI shows these runs, partitions and ledger.
Then the publish sensor is evaluated once and its requests are executed as publish runs.
"""

from __future__ import annotations

import os
import socket
import threading
from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import timedelta

import dagster as dg

from model_factory.contracts import TrainingConfig
from model_factory.core.manifests import Catalog
from model_factory.core.registry import FileRegistry
from model_factory.core.windows import resolve_windows, week_start
from model_factory.defs.ledger import metadata_value, run_materialization
from model_factory.defs.pools import release_stranded_steps
from model_factory.defs.publishing import PUBLISH_JOB, SENSOR_NAME
from model_factory.errors import ConfigError, ModelFactoryError
from model_factory.ledger import HOST_TAG, PID_TAG, own_error, process_gone

TRAIN_JOB = "weekly_training"
BACKTEST_JOB = "backtest"
# Runs started here print our own progress lines, and a failed week its error in one line;
# Dagster's step-by-step log (a failed step's stack trace is logged at ERROR) stays in the UI.
QUIET = {"loggers": {"console": {"config": {"log_level": "CRITICAL"}}}}
# Runs a CLI run on this host may leave behind when its process dies (see fail_orphaned_runs).
_LIVE = [dg.DagsterRunStatus.NOT_STARTED, dg.DagsterRunStatus.STARTING, dg.DagsterRunStatus.STARTED]


def _process_tags() -> dict[str, str]:
    """Which process runs an in-process run, so a later run, and the ledger, can tell one whose
    process died from one still going (ledger.process_gone)."""
    return {PID_TAG: str(os.getpid()), HOST_TAG: socket.gethostname()}


def fail_orphaned_runs(instance: dg.DagsterInstance) -> list[str]:
    """Mark failed the in-process runs of this host whose process is gone (SIGKILL, OOM, power
    loss), and free their pool slots; returns their run ids.

    Such a run stays STARTED forever, and if it died inside the ``model`` step it keeps the
    ``training`` pool's only slot: every later run would wait for that slot forever. Dagster
    frees slots only for finished runs, so the run is reported failed and its slots freed.
    """
    host, orphans = socket.gethostname(), []
    for record in instance.get_run_records(
        filters=dg.RunsFilter(statuses=_LIVE, tags={HOST_TAG: host})
    ):
        run = record.dagster_run
        gone = process_gone(run)
        if gone is None:
            continue
        instance.report_run_failed(run, gone)
        instance.event_log_storage.free_concurrency_slots_for_run(run.run_id)
        orphans.append(run.run_id)
    return orphans


@dataclass
class WeekSummary:
    week: str
    train_run_id: str | None
    train_rows: int | None
    test_rows: int | None
    roc_auc: float | None
    pr_auc: float | None
    gate: str | None
    bundle_id: str | None
    published: bool
    status: str = "succeeded"
    error: str | None = None
    dagster_run_id: str | None = None

    def as_json(self) -> dict:
        return asdict(self)


def weeks_between(first: str, last: str) -> list[str]:
    start, end = week_start(first), week_start(last)
    if end < start:
        raise ConfigError(f"--to {last} is before --from {first}", field="--to")
    out, d = [], start
    while d <= end:
        out.append(d.date().isoformat())
        d += timedelta(days=7)
    return out


def check_partitions(defs: dg.Definitions, weeks: list[str]) -> None:
    """Every week is a partition of the training job now (the first ``--from``, later ones
    ``--to``): not before MODEL_FACTORY_START_WEEK, and closed (a week is one once it ended)."""
    # The job's own definition: its start comes from the settings when it was imported, and
    # which weeks have closed from the clock.
    partitions = defs.resolve_job_def(TRAIN_JOB).partitions_def
    if not isinstance(partitions, dg.TimeWindowPartitionsDefinition):
        return
    for i, week in enumerate(weeks):
        if partitions.has_partition_key(week):
            continue
        field = "--from" if i == 0 else "--to"
        first = partitions.start.date().isoformat()
        if week < first:
            raise ConfigError(
                f"week {week} is before the first weekly partition {first} "
                "(MODEL_FACTORY_START_WEEK)",
                field=field,
            )
        last = partitions.get_last_partition_key()
        raise ConfigError(
            f"week {week} has not closed yet: it becomes a partition when it ends, on "
            f"{week_start(week) + timedelta(days=7):%Y-%m-%d} 00:00 UTC (the latest closed "
            f"week is {last or 'none yet'})",
            field=field,
        )


def trainable_weeks(catalog: Catalog, config: TrainingConfig) -> list[str]:
    """Weeks whose windows the catalog's events and labels fully cover."""
    events = catalog.entries("events", config.events.name, config.events.version)
    labels = catalog.entries("labels", config.labels.name, config.labels.version)
    if not events or not labels:
        raise ModelFactoryError(
            "the catalog holds no events or labels for the config",
            source=catalog.url,
            field="events",
        )
    first_event = min(e.manifest.time_window.start for e in events)
    last_end = min(
        max(e.manifest.time_window.end for e in events),
        max(e.manifest.time_window.end for e in labels),
    )
    d = first_event.date()
    d += timedelta(days=(7 - d.weekday()) % 7)
    weeks = []
    while True:
        key = d.isoformat()
        w = resolve_windows(key, config.split_policy)
        if w.cut > last_end:
            break
        if w.train_window.start >= first_event:
            weeks.append(key)
        d += timedelta(days=7)
    return weeks


def _latest(
    instance: dg.DagsterInstance, asset: str, week: str, run_id: str | None = None
) -> dict | None:
    """The week's latest materialization of ``asset``, or the one run ``run_id`` made: another
    run of the week (another config) may have materialized it since."""
    if run_id is None:
        recs = instance.fetch_materializations(
            dg.AssetRecordsFilter(asset_key=dg.AssetKey(asset), asset_partitions=[week]), limit=1
        ).records
        metadata = recs[0].asset_materialization.metadata if recs else None
    else:
        metadata = run_materialization(instance, run_id, asset, week)
    if metadata is None:
        return None
    return {k: metadata_value(metadata, k) for k in metadata}


_POOL_WATCH_SECONDS = 5.0


def run_week(
    instance: dg.DagsterInstance,
    defs: dg.Definitions,
    week: str,
    run_config: dict | None = None,
    tags: dict[str, str] | None = None,
) -> WeekSummary:
    """One run of the six stages for ``week``; failures are reported, not raised."""
    fail_orphaned_runs(instance)
    job = defs.resolve_job_def(TRAIN_JOB)
    stop = threading.Event()

    def watch() -> None:
        while not stop.wait(_POOL_WATCH_SECONDS):
            try:
                release_stranded_steps(instance)
            except Exception:  # a repair attempt must never fail the run itself
                continue

    watcher = threading.Thread(target=watch, name="pool-watch", daemon=True)
    watcher.start()
    try:
        result = job.execute_in_process(
            partition_key=week,
            instance=instance,
            run_config={**QUIET, **(run_config or {})},
            raise_on_error=False,
            tags={"model_factory/triggered_by": "cli", **_process_tags(), **(tags or {})},
        )
    finally:
        stop.set()
        watcher.join()
    if not result.success:
        error = _first_failure(result)
        # a run that failed after intake has its train run: the ledger lists it under that id
        intake = _latest(instance, "dataset_manifests", week, run_id=result.run_id) or {}
        return WeekSummary(
            week,
            intake.get("train_run_id"),
            None,
            None,
            None,
            None,
            None,
            None,
            False,
            "failed",
            error,
            result.run_id,
        )
    return summarize_week(instance, week, run_id=result.run_id)


def _first_failure(result: dg.ExecuteInProcessResult) -> str:
    """The first failed step's own error (Dagster wraps it: see own_error)."""
    for event in result.all_events:
        if event.is_step_failure and event.step_failure_data.error is not None:
            error = own_error(event.step_failure_data.error)
            return f"{event.step_key}: {error.message.strip()}"
        if (
            event.event_type_value == "ASSET_CHECK_EVALUATION"
            and not event.event_specific_data.passed
        ):
            return f"check {event.event_specific_data.check_name} failed"
    return "run failed"


def summarize_week(
    instance: dg.DagsterInstance,
    week: str,
    registry: FileRegistry | None = None,
    run_id: str | None = None,
) -> WeekSummary:
    """What the week's run ``run_id`` made (without one: the week's latest outputs)."""
    frame = _latest(instance, "training_frame", week, run_id) or {}
    report = _latest(instance, "evaluation_report", week, run_id) or {}
    bundle = _latest(instance, "model_bundle", week, run_id) or {}
    published = False
    if registry is not None and bundle.get("bundle_id"):
        published = any(r.bundle_id == bundle["bundle_id"] for r in registry.records())
    return WeekSummary(
        week=week,
        train_run_id=bundle.get("train_run_id"),
        train_rows=frame.get("train_rows"),
        test_rows=frame.get("test_rows"),
        roc_auc=report.get("roc_auc"),
        pr_auc=report.get("pr_auc"),
        gate=bundle.get("gate_status"),
        bundle_id=bundle.get("bundle_id"),
        published=published,
        dagster_run_id=run_id,
    )


def tick_publish_sensor(
    instance: dg.DagsterInstance, defs: dg.Definitions, cursor: str | None = None
) -> tuple[list[str], str | None]:
    """Evaluate the publish sensor once and execute each new request as a publish run.

    Requests whose run_key already has a run (whatever its status) are skipped, as the daemon
    skips them; the sensor gives a failed publish's bundle a new key when it is re-materialized.
    Returns the bundle ids published by this tick and the sensor's new cursor.
    """
    sensor = defs.resolve_sensor_def(SENSOR_NAME)
    # One tick reads a bounded batch: tick again until the cursor stops (at the end, or before
    # the last minute's records), so a long history never keeps this week's bundle unread.
    requests: list[dg.RunRequest] = []
    while True:
        with dg.build_sensor_context(
            instance=instance, cursor=cursor, definitions=defs, sensor_name=SENSOR_NAME
        ) as ctx:
            result = sensor.evaluate_tick(ctx)
        requests += result.run_requests or []
        if result.cursor == cursor:
            break
        cursor = result.cursor
    job = defs.resolve_job_def(PUBLISH_JOB)
    done = []
    for request in requests:
        prior = instance.get_runs(
            filters=dg.RunsFilter(
                tags={"dagster/run_key": request.run_key, "dagster/sensor_name": SENSOR_NAME},
            ),
            limit=1,
        )
        if prior:
            continue
        outcome = job.execute_in_process(
            run_config={**QUIET, **request.run_config},
            instance=instance,
            raise_on_error=False,
            tags={
                **request.tags,
                "dagster/run_key": request.run_key,
                "dagster/sensor_name": SENSOR_NAME,
                **_process_tags(),
            },
        )
        if not outcome.success:
            raise ModelFactoryError(
                f"publishing {request.run_key} failed: {_first_failure(outcome)}", field="publish"
            )
        done.append(request.tags["model_factory/bundle_id"])
    return done, cursor


def run_weeks(
    instance: dg.DagsterInstance,
    defs: dg.Definitions,
    weeks: list[str],
    registry: FileRegistry,
    run_config: dict | None = None,
    progress: Callable[[str], None] | None = None,
) -> list[WeekSummary]:
    """Run the weeks in order, ticking the publish sensor after each; summarize each week."""
    say = progress or (lambda _msg: None)
    results: dict[str, WeekSummary] = {}
    cursor = None
    for i, week in enumerate(weeks, 1):
        say(f"[{i}/{len(weeks)}] week {week}: training ...")
        summary = run_week(instance, defs, week, run_config)
        results[week] = summary
        # Publish before the next week trains, so that week is judged against this champion,
        # as it would be when the schedule runs week after week.
        published, cursor = tick_publish_sensor(instance, defs, cursor)
        say(
            f"[{i}/{len(weeks)}] week {week}: {summary.status}"
            + (f" ({summary.error})" if summary.error else f", gate {summary.gate}")
            + (", published" if published else "")
        )
    weeks_in_summary = refresh_backtest(instance, defs)
    if weeks_in_summary is not None:
        say(f"backtest_summary refreshed: {weeks_in_summary} week(s) side by side")
    return [
        results[w]
        if results[w].status == "failed"
        else summarize_week(instance, w, registry, results[w].dagster_run_id)
        for w in weeks
    ]


def refresh_backtest(instance: dg.DagsterInstance, defs: dg.Definitions) -> int | None:
    """Materialize backtest_summary over every evaluated week (as its automation does after a
    backfill); returns how many weeks it holds, or None if the run failed."""
    result = defs.resolve_job_def(BACKTEST_JOB).execute_in_process(
        instance=instance,
        run_config=QUIET,
        raise_on_error=False,
        tags={"model_factory/triggered_by": "cli", **_process_tags()},
    )
    if not result.success:
        return None
    meta = result.asset_materializations_for_node("backtest_summary")[0].metadata
    return int(meta["trained_weeks"].value)
