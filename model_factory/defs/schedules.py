"""Weekly retraining: each week that has closed, once its inputs are complete."""

from datetime import UTC, datetime

import dagster as dg

from model_factory.contracts import TrainingConfig
from model_factory.core.intake import find_inputs
from model_factory.core.windows import resolve_windows
from model_factory.defs.assets import TRAINING_ASSETS
from model_factory.defs.ledger import metadata_value
from model_factory.defs.partitions import WEEKLY_PARTITIONS
from model_factory.defs.resources import ModelFactoryResource
from model_factory.errors import ModelFactoryError

weekly_training_job = dg.define_asset_job(
    "weekly_training",
    selection=TRAINING_ASSETS,
    description="All six stages of one week's train run.",
)

# The closed weeks a tick looks at: the newest and the one before, so a week whose labels land
# after the next week has closed is still trained.
LOOKBACK_WEEKS = 2
SCHEDULE_NAME = "weekly_training_schedule"
_GOING = [
    dg.DagsterRunStatus.QUEUED,
    dg.DagsterRunStatus.NOT_STARTED,
    dg.DagsterRunStatus.STARTING,
    dg.DagsterRunStatus.STARTED,
    dg.DagsterRunStatus.CANCELING,
]


def _trained(instance: dg.DagsterInstance, week: str) -> str | None:
    """The week's bundle id when a run has built one (of any config), else None."""
    records = instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=dg.AssetKey("model_bundle"), asset_partitions=[week]),
        limit=1,
    ).records
    if not records:
        return None
    return str(metadata_value(records[0].asset_materialization.metadata, "bundle_id") or "a bundle")


# The jobs whose runs train weeks: this one (the schedule's, the CLI's) and the one Dagster runs
# asset backfills and Materialize clicks under
_TRAINING_JOBS = ("weekly_training", "__ASSET_JOB")


def _going(instance: dg.DagsterInstance, since: str, week: str) -> tuple[str, str] | None:
    """(week, run id) of a training run of a week in [since, week] still queued or going (the
    schedule's, a backfill's, the CLI's), else None. Runs of other jobs, and of weeks before
    ``since``, do not hold the schedule: a run left STARTED by a `dagster dev` that died would
    otherwise stop all training until someone terminated it."""
    for record in instance.get_run_records(filters=dg.RunsFilter(statuses=_GOING)):
        run = record.dagster_run
        partition = run.tags.get("dagster/partition")
        if run.job_name in _TRAINING_JOBS and partition and since <= partition <= week:
            return partition, run.run_id
    return None


def _launched(instance: dg.DagsterInstance, week: str) -> dg.DagsterRun | None:
    """The run this schedule launched for the week, whatever became of it, else None."""
    records = instance.get_run_records(
        filters=dg.RunsFilter(
            tags={"dagster/partition": week, "dagster/schedule_name": SCHEDULE_NAME}
        ),
        limit=1,
    )
    return records[0].dagster_run if records else None


def training_requests(
    instance: dg.DagsterInstance, resource: ModelFactoryResource, now: datetime
) -> list[dg.RunRequest] | dg.SkipReason:
    """A run of the oldest of the last closed weeks that has no bundle yet, that this schedule
    has not launched before, and whose inputs the catalog covers, as intake will check them;
    otherwise why not, week by week.

    One week a tick, and none while a training run of that week or an earlier one of the
    lookback is going: a week's intake pins the champion and the earlier weeks' reports it is
    judged against, so two weeks run at once would judge the later without the earlier (see
    README, "The champion"). A week is launched once: Dagster keys a schedule's runs by tick,
    so a run key alone would let every hourly tick launch again a week whose run failed."""
    weeks = WEEKLY_PARTITIONS.get_partition_keys(current_time=now)[-LOOKBACK_WEEKS:]
    if not weeks:
        return dg.SkipReason(f"no week has closed by {now:%Y-%m-%d %H:%M} UTC")
    # A run launched without config trains the default config (what the launchpad shows)
    config = TrainingConfig()
    catalog = resource.factory_env().catalog
    reasons = []
    for week in weeks:
        bundle = _trained(instance, week)
        if bundle is not None:
            reasons.append(f"{week}: trained already ({bundle})")
            continue
        going = _going(instance, weeks[0], week)
        if going is not None:
            reasons.append(f"{week}: waits for the run {going[1]} of {going[0]}, still going")
            break
        earlier = _launched(instance, week)
        if earlier is not None:
            reasons.append(
                f"{week}: this schedule's run {earlier.run_id} ended {earlier.status.value} "
                "without a bundle; it launches a week once: re-run the week by hand"
            )
            continue
        try:
            find_inputs(catalog, config, resolve_windows(week, config.split_policy))
        except ModelFactoryError as missing:
            reasons.append(f"{week}: inputs not complete yet: {missing}")
            continue
        return [dg.RunRequest(partition_key=week, run_key=week)]
    return dg.SkipReason("; ".join(reasons))


# Hourly, not once a week: a week's late labels or snapshots often land hours after it closes,
# and a run launched before them could only fail at intake. Each tick asks for the oldest closed
# week that is ready, untrained and not launched before.
@dg.schedule(
    name=SCHEDULE_NAME,
    cron_schedule="0 * * * *",
    job=weekly_training_job,
    execution_timezone="UTC",
    default_status=dg.DefaultScheduleStatus.RUNNING,
    description="Trains each week, in order, once it has closed and its events and labels are "
    "in the catalog; skips, with the reason, weeks not ready yet, already trained, or waiting "
    "for an earlier week's run.",
)
def weekly_training_schedule(
    context: dg.ScheduleEvaluationContext, model_factory: ModelFactoryResource
) -> list[dg.RunRequest] | dg.SkipReason:
    now = context.scheduled_execution_time or datetime.now(UTC)
    return training_requests(context.instance, model_factory, now)
