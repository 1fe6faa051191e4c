"""Ledger metadata on every materialization, and reading upstream outputs back from it.

Materialization metadata is the run ledger (ARCHITECTURE §6): downstream stages find their
inputs through it, so what a stage used is exactly what the ledger says.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from datetime import timedelta

import dagster as dg

from model_factory.contracts import (
    ArtifactRef,
    EvaluationReportRef,
    GateReceipt,
    IntakeReceipt,
    Provenance,
    TrainingConfig,
    WeekReportRef,
)
from model_factory.core import identity
from model_factory.core.identity import code_version
from model_factory.core.runs import StageResult
from model_factory.core.windows import week_start
from model_factory.errors import MissingInputError

CODE_VERSION = code_version()


# Dagster's run tags that name who started a run, in the order they are believed
_CLAIMS = (
    ("dagster/backfill", "backfill"),
    ("dagster/schedule_name", "schedule"),
    ("dagster/sensor_name", "sensor"),
    ("dagster/user", "user"),
)
OWN_TRIGGER_TAG = "model_factory/triggered_by"  # what the CLI runs say of themselves


def triggered_by(tags: Mapping[str, str]) -> str:
    """Who started the run, from Dagster's run tags."""
    for tag, kind in _CLAIMS:
        if tag in tags:
            return f"{kind}:{tags[tag]}"
    return tags.get(OWN_TRIGGER_TAG, "ui")


def _tick(instance: dg.DagsterInstance, tick_id: str | None):
    if not tick_id or not tick_id.isdigit():
        return None
    try:
        return instance.schedule_storage.get_tick(int(tick_id))  # type: ignore[union-attr]
    except Exception:  # no such tick (the storage raises its own not-found errors)
        return None


# A schedule's tick still going has not yet written the ids of the runs it launched; one older
# than this was left STARTED by a daemon that died, and confirms nothing.
_TICK_GOING_SECONDS = 3600.0
# How long after its creation a run claiming a backfill waits for the backfill's record.
_BACKFILL_RECORD_SECONDS = 300.0


# ... and the tick that launched a schedule's or sensor's run
_TRIGGER_TAGS = (*(tag for tag, _ in _CLAIMS), "dagster/tick", OWN_TRIGGER_TAG)


def _trigger_tags(tags: Mapping[str, str]) -> dict[str, str]:
    return {k: tags[k] for k in _TRIGGER_TAGS if k in tags}


def unverified_trigger(instance: dg.DagsterInstance, run: dg.DagsterRun) -> str | None:
    """Why the instance's own records do not confirm who the run's tags say started it, or None.

    Whoever launches a run in Dagster OSS may set its tags, so a ``dagster/schedule_name`` tag
    alone does not make a run the schedule's. The daemon tags a schedule's or sensor's run with
    the tick that launched it, and that tick, in the instance's schedule storage, names the
    schedule or sensor and the run (a sensor reserves its run ids before it launches them; a
    schedule's tick still going has not written them yet). A re-execution or retry copies its
    first run's tags: that first run is the one checked, and it must be the same work (job,
    week, config and trigger), since whoever launches a run may also name its root run. A
    backfill's run names a backfill the instance holds. Other claims (a user, the CLI, the UI)
    have nothing to check against."""
    if run.root_run_id and not _trigger_tags(run.tags):
        # A re-execution that claims no trigger was launched by whoever re-executed it (Dagster
        # drops a finished backfill's tags from its runs' re-executions): a run of the UI, whose
        # claim the policy's list judges like any other, with nothing to confirm.
        return None
    first = instance.get_run_by_id(run.root_run_id) if run.root_run_id else run
    if first is None:
        return f"the run re-executes {run.root_run_id}, which the instance no longer holds"
    if first is not run:
        differs = [
            what
            for what, mine, theirs in (
                ("job", run.job_name, first.job_name),
                ("week", run.tags.get("dagster/partition"), first.tags.get("dagster/partition")),
                ("config", run.run_config, first.run_config),
                ("trigger", _trigger_tags(run.tags), _trigger_tags(first.tags)),
            )
            if mine != theirs
        ]
        if differs:
            return (
                f"the run names {first.run_id} as the run it re-executes, but its "
                f"{', '.join(differs)} differ from that run's"
            )
    tags = dict(first.tags)
    claim = triggered_by(tags)
    kind, _, name = claim.partition(":")
    if kind in ("schedule", "sensor"):
        tick = _tick(instance, tags.get("dagster/tick"))
        record = instance.get_run_record_by_id(first.run_id)
        created = record.create_timestamp.timestamp() if record else 0.0
        launched = tick is not None and (
            first.run_id
            in (*(tick.tick_data.run_ids or []), *(tick.tick_data.reserved_run_ids or []))
            or (
                kind == "schedule"
                and tick.status.value == "STARTED"
                and 0 <= created - tick.timestamp < _TICK_GOING_SECONDS
            )
        )
        if tick is None or tick.instigator_name != name or not launched:
            return f"the run's tags say {claim}, but no tick of {kind} '{name}' launched it"
    if kind == "backfill" and not _backfill_recorded(instance, first, name):
        return f"the run's tags say {claim}, but the instance holds no backfill '{name}'"
    return None


def _backfill_recorded(instance: dg.DagsterInstance, run: dg.DagsterRun, backfill_id: str) -> bool:
    """Whether the instance holds the backfill, waiting for it while the run is young: `dagster
    job backfill` (the CLI) records its backfill only after it has submitted every run, so the
    first of them may get here before the record does."""
    record = instance.get_run_record_by_id(run.run_id)
    created = record.create_timestamp.timestamp() if record else 0.0
    while instance.get_backfill(backfill_id) is None:
        if time.time() - created >= _BACKFILL_RECORD_SECONDS:
            return False
        time.sleep(1.0)
    return True


def provenance(context: dg.AssetExecutionContext | dg.OpExecutionContext) -> Provenance:
    tags = {k: str(v) for k, v in context.run.tags.items()}
    return Provenance(triggered_by=triggered_by(tags), dagster_run_id=context.run.run_id, tags=tags)


def ledger_metadata(context, result: StageResult, intake: IntakeReceipt, **extra) -> dict:
    """The stable ledger fields (§6) plus a stage's own facts."""
    meta = {
        "train_run_id": intake.train_run_id,
        "config_hash": intake.config_hash,
        "code_version": intake.code_version,
        "partition_key": intake.partition_key,
        # The full DatasetManifestRefs, so the ledger rebuilds its records from the event log alone.
        "input_manifests": dg.MetadataValue.json(
            [
                r.model_dump(mode="json", exclude={"schema_version"})
                for r in intake.input_dataset_manifests
            ]
        ),
        "output_uri": dg.MetadataValue.path(result.ref.uri),
        "output_sha256": result.ref.sha256,
        "output_name": result.ref.name,
        "output_size_bytes": result.ref.size_bytes,
        "output_media_type": result.ref.media_type,
        "seconds": round(result.seconds, 3),
        "triggered_by": provenance(context).triggered_by,
        "dagster_run_id": context.run.run_id,
    }
    meta.update({k: v for k, v in result.counts.items()})
    meta.update(extra)
    return meta


def materialize_result(
    context, result: StageResult, intake: IntakeReceipt, check_results=(), **extra
) -> dg.MaterializeResult:
    return dg.MaterializeResult(
        metadata=ledger_metadata(context, result, intake, **extra),
        data_version=dg.DataVersion(result.ref.sha256),
        check_results=list(check_results),
    )


# How many of a week's latest materializations of one asset are searched for the train run's
# own: other configs' runs of the same week are few (a run is minutes, the week has one slot).
_SEARCHED = 100
# The weekly stages, each reading the one before it.
STAGES = (
    "dataset_manifests",
    "training_frame",
    "model",
    "evaluation_report",
    "gate_receipt",
    "model_bundle",
)


def run_intake_ref(context: dg.AssetExecutionContext) -> ArtifactRef:
    """The intake this run works on: the one it pinned itself, or the one of the run it
    re-executes (a retry from failure), else, for a run of later stages only, the intake of
    the train run whose output this stage reads (its upstream stage's, as this run made it or
    the week's latest).

    Not simply the week's latest intake: another run of the same week with another config may
    have pinned its own intake since (and been cancelled, or failed, or stopped at intake), and
    this run would go on as that train run, whose upstream outputs do not exist.
    """
    pinned = lineage_materialization(
        context.instance, context.run, "dataset_manifests", context.partition_key
    )
    if pinned is None:
        pinned = _intake_of_upstream(context)
    return ref_from_metadata(pinned, "dataset_manifests")


def _intake_of_upstream(context: dg.AssetExecutionContext) -> dict:
    stage = context.asset_key.to_user_string()
    upstream = STAGES[STAGES.index(stage) - 1] if stage in STAGES[1:] else None
    if upstream is not None:
        found = (
            lineage_materialization(context.instance, context.run, upstream, context.partition_key)
            or _latest(context, upstream, 1)[0]
        )
        train_run = metadata_value(found, "train_run_id")
        for metadata in _latest(context, "dataset_manifests", _SEARCHED):
            if metadata_value(metadata, "train_run_id") == train_run:
                return metadata
    return _latest(context, "dataset_manifests", 1)[0]


def run_materialization(
    instance: dg.DagsterInstance, run_id: str, asset: str, partition: str
) -> dict | None:
    """Metadata of run ``run_id``'s newest materialization of ``asset`` for ``partition``."""
    for record in instance.get_records_for_run(
        run_id, of_type=dg.DagsterEventType.ASSET_MATERIALIZATION, ascending=False
    ).records:
        if record.asset_key == dg.AssetKey(asset) and record.partition_key == partition:
            return record.asset_materialization.metadata
    return None


def lineage_materialization(
    instance: dg.DagsterInstance, run: dg.DagsterRun | None, asset: str, partition: str
) -> dict | None:
    """The materialization of ``asset`` for ``partition`` that ``run`` made, or else the run it
    re-executes made (and so on up the parent runs), or None."""
    while run is not None:
        found = run_materialization(instance, run.run_id, asset, partition)
        if found is not None:
            return found
        run = instance.get_run_by_id(run.parent_run_id) if run.parent_run_id else None
    return None


def upstream_ref(context: dg.AssetExecutionContext, asset: str, train_run_id: str) -> ArtifactRef:
    """The output an upstream asset recorded for this week *and this train run* (the latest
    such materialization): a stage never reads another config's frame or model."""
    found = _latest(context, asset, _SEARCHED)
    for metadata in found:
        if metadata_value(metadata, "train_run_id") == train_run_id:
            return ref_from_metadata(metadata, asset)
    raise MissingInputError(
        f"'{asset}' of week {context.partition_key} was last materialized for train run "
        f"{metadata_value(found[0], 'train_run_id')}, never for this run's {train_run_id} (its "
        "own run stopped before it, or another run of this week came since): materialize the "
        "week's stages from dataset_manifests again",
        field=asset,
    )


def _latest(context: dg.AssetExecutionContext, asset: str, limit: int) -> list[dict]:
    """Metadata of the week's latest materializations of ``asset``, newest first (at least one)."""
    records = context.instance.fetch_materializations(
        dg.AssetRecordsFilter(
            asset_key=dg.AssetKey(asset), asset_partitions=[context.partition_key]
        ),
        limit=limit,
    ).records
    if not records:
        raise MissingInputError(
            f"'{asset}' has not been materialized for week {context.partition_key}: materialize it first",
            field=asset,
        )
    return [r.asset_materialization.metadata for r in records]


# Runs that ended and did not succeed: what they did not finish, they never will.
ENDED_WITHOUT_SUCCESS = (dg.DagsterRunStatus.FAILURE, dg.DagsterRunStatus.CANCELED)


def bundle_ledger_pin(
    instance: dg.DagsterInstance, partition_key: str, train_run_id: str
) -> tuple[int, str] | None:
    """The run-ledger entry (sequence, sha256 of its bytes) the instance recorded for the train
    run's bundle, from its newest ``model_bundle`` materialization of the week; None if none
    names one. The instance is outside the store: its record is what the store's entry is
    checked against."""
    records = instance.fetch_materializations(
        dg.AssetRecordsFilter(
            asset_key=dg.AssetKey("model_bundle"), asset_partitions=[partition_key]
        ),
        limit=1000,
    ).records
    for rec in records:
        meta = rec.asset_materialization.metadata if rec.asset_materialization else {}
        sequence = metadata_value(meta, "ledger_sequence")
        digest = metadata_value(meta, "ledger_entry_sha256")
        if metadata_value(meta, "train_run_id") == train_run_id and sequence and digest:
            return int(sequence), str(digest)
    return None


def metadata_value(metadata: dict, key: str):
    """A metadata entry's plain value (Dagster wraps some in MetadataValue), or None."""
    v = metadata.get(key)
    return getattr(v, "value", v)


def ref_from_metadata(metadata: dict, asset: str) -> ArtifactRef:
    def value(key: str):
        v = metadata[key]
        return getattr(v, "value", v)

    try:
        return ArtifactRef(
            name=value("output_name"),
            uri=value("output_uri"),
            sha256=value("output_sha256"),
            size_bytes=value("output_size_bytes"),
            media_type=value("output_media_type"),
        )
    except KeyError as exc:
        raise MissingInputError(
            f"'{asset}' materialization carries no ledger output ({exc})", field="output_uri"
        ) from exc


def json_value(obj) -> dg.MetadataValue:
    return dg.MetadataValue.json(json.loads(json.dumps(obj)))


def _family_reports(
    instance: dg.DagsterInstance,
    week: str,
    model_family: str,
    oldest_first: bool = False,
    wanted=lambda meta: True,
    count: int | None = None,
) -> list[dict]:
    """Metadata of the week's stored reports of ``model_family`` for which ``wanted`` holds,
    newest first (or oldest), ``count`` at most (None: all), page by page, so no number of other
    runs of the week pushes one out.

    Another family's (or an experiment's) report run later must not hide them. Reports recorded
    before the family was in the metadata count as this family's, as they did; readers check
    the family again."""
    found: list[dict] = []
    cursor = None
    while count is None or len(found) < count:
        page = instance.fetch_materializations(
            dg.AssetRecordsFilter(
                asset_key=dg.AssetKey("evaluation_report"), asset_partitions=[week]
            ),
            limit=_SEARCHED,
            cursor=cursor,
            ascending=oldest_first,
        )
        found += [
            meta
            for r in page.records
            if "output_uri" in (meta := r.asset_materialization.metadata)  # a report was stored
            and metadata_value(meta, "model_family") in (None, model_family)
            and wanted(meta)
        ]
        if not page.has_more:
            break
        cursor = page.cursor
    return found if count is None else found[:count]


def family_report_candidates(
    instance: dg.DagsterInstance,
    partition_key: str,
    model_family: str,
    weeks: int,
    per_week: int = 1,
    config_hash: str | None = None,
) -> list[tuple[str, list[ArtifactRef]]]:
    """(week, report refs) of the ``weeks`` weeks before ``partition_key`` that have a report of
    ``model_family``: each week's newest ``per_week`` such reports (newest first), oldest week
    first. One lookup per week, so however many runs a later week had, no earlier week drops
    out.

    With ``config_hash`` (the stability history, see earlier_reports) a week's candidates are
    its reports of that config, this code version's first; a week without one gives the
    family's *first* report of the week instead, which later runs of other configs never
    change."""
    start = week_start(partition_key)
    found = []
    for i in range(weeks, 0, -1):
        key = (start - timedelta(days=7 * i)).date().isoformat()
        if config_hash is None:
            metas = _family_reports(instance, key, model_family, count=per_week)
        else:
            same = _family_reports(
                instance,
                key,
                model_family,
                wanted=lambda m: metadata_value(m, "config_hash") == config_hash,
            )
            # stable sort: this code's reports (newest first), then older code's
            same.sort(key=lambda m: metadata_value(m, "code_version") != code_version())
            metas = same or _family_reports(instance, key, model_family, oldest_first=True, count=1)
        mine = [ref_from_metadata(m, "evaluation_report") for m in metas][:per_week]
        if mine:
            found.append((key, mine))
    return found


def earlier_reports(
    context: dg.AssetExecutionContext, config: TrainingConfig
) -> list[WeekReportRef]:
    """The previous weeks' evaluation reports (oldest first) that the config's stability
    criteria need; pinned at intake so a re-run judges the same history.

    Each week's report is the newest of *this config* (by this code version if there is one),
    else the family's first of that week: the newest of any config would let an experiment run
    on an earlier week since change this week's history, and so its train run id, though
    nothing of this run changed; and a config edited in one field (its notes) must still be
    judged against the weeks before it, not skip the criterion. What changes the history is a
    report of this very config for that week, run since: new evidence of this config."""
    weeks = max((c.weeks for c in config.gates.criteria if c.kind == "stability"), default=0)
    return [
        WeekReportRef(
            partition_key=key,
            evaluation_report_ref=EvaluationReportRef(uri=newest.uri, digest=newest.sha256),
        )
        for key, (newest, *_) in family_report_candidates(
            context.instance,
            context.partition_key,
            config.model_family,
            weeks,
            config_hash=identity.config_hash(config),
        )
    ]


def criteria_table(gate: GateReceipt) -> str:
    """The receipt as a Markdown table for the UI."""
    rows = ["| criterion | kind | observed | needs | CI | verdict |", "|---|---|---|---|---|---|"]
    for c in gate.criteria:
        observed = "–" if c.observed is None else f"{c.observed:.4f}"
        ci = f"[{c.ci.lower:.4f}, {c.ci.upper:.4f}]" if c.ci else ""
        rows.append(
            f"| {c.name} | {c.kind} | {observed} | {c.comparator} {c.threshold:.4g} | {ci} | "
            f"{'pass' if c.passed else '**FAIL**'} |"
        )
    return "\n".join(rows)
