"""Publishing PASS bundles: a sensor over new bundle materializations and the publish job."""

import time

import dagster as dg
from pydantic import Field

from model_factory.core.runs import stage_publish
from model_factory.defs.ledger import ENDED_WITHOUT_SUCCESS, provenance
from model_factory.defs.resources import ModelFactoryResource
from model_factory.errors import RegistryError

PUBLISH_JOB = "publish_bundle"
SENSOR_NAME = "publish_pass_bundles"


class PublishConfig(dg.Config):
    bundle_uri: str = Field(description="URI of the bundle.json to publish.")
    bundle_id: str = Field(description="Expected bundle id (the registry re-derives it).")
    partition_key: str = Field(description="Week the bundle was trained for.")
    ledger_sequence: int | None = Field(
        None, description="The bundle's run-ledger entry, as its materialization recorded it."
    )
    ledger_entry_sha256: str | None = Field(
        None, description="sha256 of that entry, as its materialization recorded it."
    )


@dg.op
def publish_to_registry(
    context: dg.OpExecutionContext, config: PublishConfig, model_factory: ModelFactoryResource
) -> None:
    """Verify and record the bundle in the registry (idempotent per bundle_id)."""
    response = stage_publish(
        model_factory.factory_env(),
        config.bundle_uri,
        config.bundle_id,
        provenance(context).triggered_by,
        context.run_id,
        config.ledger_sequence,
        config.ledger_entry_sha256,
    )
    context.log.info(
        f"{config.bundle_id}: {response.status} {response.record_uri or ''}{response.reason or ''}"
    )
    # The publication (or refusal) joins the ledger as an observation of the bundle it speaks for.
    context.log_event(
        dg.AssetObservation(
            asset_key="model_bundle",
            partition=config.partition_key,
            metadata={
                "bundle_id": config.bundle_id,
                "registry_status": response.status,
                "registry_record_uri": response.record_uri or "",
                "registry_reason": response.reason or "",
                "champion_changed": response.champion_changed,
            },
        )
    )
    if response.status == "refused":
        raise RegistryError(response.reason or "refused", source=config.bundle_uri, field="bundle")


@dg.job(name=PUBLISH_JOB, description="Publish one PASS bundle to the registry.")
def publish_bundle_job():
    publish_to_registry()


STORAGE_ID_TAG = "model_factory/bundle_storage_id"  # the materialization a publish run is for
PRIORITY_TAG = "dagster/priority"  # the run queue launches higher first (default 0)
PUBLISH_PRIORITY = "1"


def _run_key(instance: dg.DagsterInstance, bundle_id: str, storage_id: int) -> str:
    """The bundle id, unless every publish run of the bundle failed: then this materialization's
    own key. The daemon launches a run key once and never again (even after a failure), so
    without it a bundle whose publish failed once (a registry outage) would stay unpublished
    however often its week re-ran; publishing is idempotent, so a retry never publishes twice.
    A materialization that already had its run (read again while the cursor settles) keeps
    that run's key, so the daemon does not launch it twice."""
    earlier = instance.get_runs(
        filters=dg.RunsFilter(
            tags={"model_factory/bundle_id": bundle_id, "dagster/sensor_name": SENSOR_NAME}
        )
    )
    for run in earlier:
        if run.tags.get(STORAGE_ID_TAG) == str(storage_id):
            return run.tags.get("dagster/run_key", bundle_id)
    if earlier and all(r.status in ENDED_WITHOUT_SUCCESS for r in earlier):
        return f"{bundle_id}:{storage_id}"
    return bundle_id


# PostgreSQL numbers an event when it is inserted and shows it when its transaction commits, so
# two runs storing bundles at once can commit out of storage-id order: a tick between the two
# commits would see the larger id, move past the smaller one and never publish that bundle.
# The cursor therefore stays behind the records of the last SETTLE_SECONDS, which the next tick
# reads (and requests) again; the run key keeps a bundle from being published twice.
SETTLE_SECONDS = 60.0
# A tick reads at most this many records and resumes from there: a long history (the CLI ticks
# from the start) must not run into the sensor's evaluation timeout, which would return no
# cursor, so every later tick would start over and time out again. (More unsettled records than
# this, i.e. this many bundles in one SETTLE_SECONDS, would wait until they settle.)
RECORDS_PER_TICK = 2000
_BATCH = 200


def publish_requests(
    instance: dg.DagsterInstance,
    cursor: int | None,
    *,
    now: float | None = None,
    settle_seconds: float | None = None,
    max_records: int | None = None,
) -> tuple[list[dg.RunRequest], int | None]:
    """Run requests for PASS bundles materialized after ``cursor`` (a storage id), and the
    new cursor. Reading every record by storage id never skips one, unlike asset_sensor; the
    cursor stops before the first record younger than ``settle_seconds`` (default
    SETTLE_SECONDS) and after ``max_records`` (default RECORDS_PER_TICK)."""
    settle_seconds = SETTLE_SECONDS if settle_seconds is None else settle_seconds
    max_records = RECORDS_PER_TICK if max_records is None else max_records
    requests: list[dg.RunRequest] = []
    settled_before = (time.time() if now is None else now) - settle_seconds
    after = new_cursor = cursor
    settled = True  # every record read so far is older than the settle window
    read = 0
    while read < max_records:
        batch = instance.fetch_materializations(
            dg.AssetRecordsFilter(asset_key=dg.AssetKey("model_bundle"), after_storage_id=after),
            limit=min(_BATCH, max_records - read),
            ascending=True,
        ).records
        if not batch:
            break
        for rec in batch:
            after, read = rec.storage_id, read + 1
            settled = settled and rec.timestamp < settled_before
            if settled:
                new_cursor = rec.storage_id
            meta = rec.asset_materialization.metadata
            value = {k: getattr(v, "value", v) for k, v in meta.items()}
            if value.get("gate_status") != "PASS":
                continue
            requests.append(
                dg.RunRequest(
                    run_key=_run_key(instance, value["bundle_id"], rec.storage_id),
                    run_config={
                        "ops": {
                            "publish_to_registry": {
                                "config": {
                                    "bundle_uri": value["output_uri"],
                                    "bundle_id": value["bundle_id"],
                                    "partition_key": rec.asset_materialization.partition,
                                    # the ledger entry the run recorded, so the registry checks
                                    # the store's entry against Dagster's, not only itself
                                    **{
                                        k: value[k]
                                        for k in ("ledger_sequence", "ledger_entry_sha256")
                                        if value.get(k) is not None
                                    },
                                }
                            }
                        }
                    },
                    tags={
                        # ahead of queued training runs: a backfill queues every week's run up
                        # front, and a publish behind them all would wait until the last week
                        # had started (found in the operations review), so later weeks would
                        # pin an older champion than the one that just passed
                        PRIORITY_TAG: PUBLISH_PRIORITY,
                        "model_factory/bundle_id": value["bundle_id"],
                        "model_factory/train_run_id": value["train_run_id"],
                        STORAGE_ID_TAG: str(rec.storage_id),
                    },
                )
            )
    return requests, new_cursor


@dg.sensor(
    name=SENSOR_NAME,
    job=publish_bundle_job,
    minimum_interval_seconds=30,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Requests one publish run per PASS bundle (run_key = bundle_id; after a failed "
    "publish, a re-materialized bundle is retried under its own key).",
)
def publish_pass_bundles(context: dg.SensorEvaluationContext) -> dg.SensorResult:
    cursor = int(context.cursor) if context.cursor else None
    requests, after = publish_requests(context.instance, cursor)
    return dg.SensorResult(run_requests=requests, cursor=str(after) if after is not None else None)
