"""The run ledger: `TrainingRunRecord`s rebuilt from a Dagster instance (ARCHITECTURE §6).

Materializations (read by storage id) say what each stage of a train run produced; run records
say which attempts there were, who or what started them and how they ended. An attempt that
failed before its intake pinned a train run (invalid config, missing or tampered manifest) becomes
a failed record of its own, without a train run id, so no failure is ever invisible.
"""

from __future__ import annotations

import os
import re
import socket
from collections import defaultdict
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import dagster as dg
from pydantic import ValidationError

from model_factory.contracts import (
    ArtifactRef,
    DatasetManifestRef,
    IntakeReceipt,
    IntegrityProblem,
    IntegrityReport,
    Provenance,
    RunAttempt,
    TrainingConfig,
    TrainingRunRecord,
)
from model_factory.core.gates import failure_summary
from model_factory.core.identity import config_hash
from model_factory.core.journal import Journal, verify_chain
from model_factory.core.storage import ArtifactStore, file_sha256, open_uri, require_bucket
from model_factory.defs.ledger import (
    ENDED_WITHOUT_SUCCESS,
    STAGES,
    lineage_materialization,
    metadata_value,
    run_materialization,
    triggered_by,
)
from model_factory.errors import ModelFactoryError

INTAKE = STAGES[0]
TRAIN_JOB = "weekly_training"
_PAGE = 500

_RUN_STATUS = {
    dg.DagsterRunStatus.QUEUED: "queued",
    dg.DagsterRunStatus.NOT_STARTED: "queued",
    dg.DagsterRunStatus.MANAGED: "queued",
    dg.DagsterRunStatus.STARTING: "queued",
    dg.DagsterRunStatus.STARTED: "running",
    dg.DagsterRunStatus.SUCCESS: "succeeded",
    dg.DagsterRunStatus.FAILURE: "failed",
    dg.DagsterRunStatus.CANCELING: "canceled",
    dg.DagsterRunStatus.CANCELED: "canceled",
    dg.DagsterRunStatus.SUSPENDED: "running",
}
_ACTIVE = frozenset({"queued", "running"})
# The CLI runner's process, on the runs it executes in-process: a run whose process is gone
# (SIGKILL, OOM) stays STARTED in Dagster until the next CLI run on that host fails it.
PID_TAG = "model_factory/pid"
HOST_TAG = "model_factory/host"


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, someone else's
        return True
    return True


def process_gone(run: dg.DagsterRun) -> str | None:
    """Why an in-process run of this host cannot be running any more (its process is gone),
    or None: another host's, not in-process, this process, or alive."""
    pid, host = run.tags.get(PID_TAG, ""), run.tags.get(HOST_TAG)
    if host != socket.gethostname() or not pid.isdigit() or int(pid) == os.getpid():
        return None
    if _process_alive(int(pid)):
        return None
    return f"the process that ran it (pid {pid} on {host}) is gone: killed or crashed before the run ended"


@dataclass(frozen=True)
class StageMaterialization:
    storage_id: int
    stage: str
    partition: str
    run_id: str
    timestamp: float
    meta: dict[str, Any]


def read_ledger(
    instance: dg.DagsterInstance, week: str | None = None, train_run_id: str | None = None
) -> list[TrainingRunRecord]:
    """Every train run (and every unpinned failed attempt) in the instance, oldest week first."""
    mats = stage_materializations(instance, week)
    runs = {r.dagster_run.run_id: r for r in _run_records(instance, week)}
    by_run: dict[str, list[StageMaterialization]] = defaultdict(list)
    for m in mats:
        by_run[m.run_id].append(m)

    # Which train run each attempt worked on: what it materialized says so; an attempt that
    # materialized nothing worked on the intake before it (or pinned nothing, if it ran intake).
    attempts_of: dict[str | None, list[str]] = defaultdict(list)
    unpinned: list[str] = []
    for run_id in sorted(set(runs) | set(by_run), key=lambda r: _started(runs.get(r), by_run[r])):
        pinned = {m.meta.get("train_run_id") for m in by_run[run_id]} - {None}
        if not pinned and run_id in runs:
            pinned = {_intake_before(instance, runs[run_id])} - {None}
        if pinned:
            for trid in pinned:
                attempts_of[trid].append(run_id)
        elif run_id in runs and _is_training_run(runs[run_id]):
            unpinned.append(run_id)

    records = []
    for trid, run_ids in attempts_of.items():
        own = [m for m in mats if m.meta.get("train_run_id") == trid]
        attempts = [_attempt(instance, runs.get(r), by_run[r]) for r in run_ids]
        records.append(_pinned_record(trid, own, attempts, runs))
    for run_id in unpinned:
        records.append(_unpinned_record(runs[run_id], _attempt(instance, runs[run_id], [])))
    if train_run_id is not None:
        records = [r for r in records if r.train_run_id == train_run_id]
    never = datetime.min.replace(tzinfo=UTC)
    return sorted(records, key=lambda r: (r.partition_key, r.created_at_utc or never))


# ------------------------------------------------------------------------------ reading Dagster


def stage_materializations(
    instance: dg.DagsterInstance, week: str | None = None, stages: tuple[str, ...] = STAGES
) -> list[StageMaterialization]:
    """Every materialization of the stages (of one week, or all), in storage-id order."""
    out: list[StageMaterialization] = []
    for stage in stages:
        after = None
        while True:
            batch = instance.fetch_materializations(
                dg.AssetRecordsFilter(
                    asset_key=dg.AssetKey(stage),
                    asset_partitions=[week] if week else None,
                    after_storage_id=after,
                ),
                limit=_PAGE,
                ascending=True,
            ).records
            for rec in batch:
                m = rec.asset_materialization
                if m is None or m.partition is None:
                    continue
                meta = {k: getattr(v, "value", v) for k, v in m.metadata.items()}
                out.append(
                    StageMaterialization(
                        rec.storage_id, stage, m.partition, rec.run_id, rec.timestamp, meta
                    )
                )
            if len(batch) < _PAGE:
                break
            after = batch[-1].storage_id
    return sorted(out, key=lambda m: m.storage_id)


def _run_records(instance: dg.DagsterInstance, week: str | None) -> list[dg.RunRecord]:
    filters = dg.RunsFilter(tags={"dagster/partition": week}) if week else None
    return [
        r
        for r in instance.get_run_records(filters=filters)
        if "dagster/partition" in r.dagster_run.tags
    ]


def _run_stages(run: dg.DagsterRun) -> set[str]:
    # Backfills launched from the UI run the implicit asset job: their selection says it all.
    if run.asset_selection:  # empty when the whole job runs
        return {k.to_user_string() for k in run.asset_selection} & set(STAGES)
    if run.step_keys_to_execute:  # a re-execution names its steps (one per stage) instead
        return set(run.step_keys_to_execute) & set(STAGES)
    return set(STAGES) if run.job_name == TRAIN_JOB else set()


def _is_training_run(record: dg.RunRecord) -> bool:
    return bool(_run_stages(record.dagster_run))


def _intake_before(instance: dg.DagsterInstance, record: dg.RunRecord) -> str | None:
    """The train run a downstream-only attempt loaded, as the stages pick it
    (defs.ledger.run_intake_ref): the intake of the run it re-executes, else the week's latest
    intake before it ended."""
    run = record.dagster_run
    if INTAKE in _run_stages(run) or not _is_training_run(record):
        return None
    week = run.tags["dagster/partition"]
    parent = instance.get_run_by_id(run.parent_run_id) if run.parent_run_id else None
    pinned = lineage_materialization(instance, parent, INTAKE, week)
    if pinned is not None:
        return metadata_value(pinned, "train_run_id")
    before = record.end_time or datetime.now(UTC).timestamp()
    recs = instance.fetch_materializations(
        dg.AssetRecordsFilter(
            asset_key=dg.AssetKey(INTAKE),
            asset_partitions=[week],
            before_timestamp=before,
        ),
        limit=1,
    ).records
    if not recs:
        return None
    value = recs[0].asset_materialization.metadata.get("train_run_id")
    return getattr(value, "value", value)


def _started(record: dg.RunRecord | None, mats: list[StageMaterialization]) -> float:
    if record is not None:
        return record.start_time or record.create_timestamp.timestamp()
    return min((m.timestamp for m in mats), default=0.0)


def _utc(ts: float | None) -> datetime | None:
    return None if ts is None else datetime.fromtimestamp(ts, UTC)


_NOISE = re.compile(r"^\s*(For further information visit|Stack Trace:).*$", re.MULTILINE)


def _own_errors() -> set[str]:
    """'module.Class' of ModelFactoryError and every subclass of it."""
    found, todo = set(), [ModelFactoryError]
    while todo:
        cls = todo.pop()
        found.add(f"{cls.__module__}.{cls.__qualname__}")
        todo.extend(cls.__subclasses__())
    return found


def own_error(error: Any) -> Any:
    """The error that matters in a SerializableErrorInfo chain: the outermost ModelFactoryError
    (it names the file and field; what it was raised from is detail), else the innermost."""
    own = _own_errors()
    while True:
        # The message starts 'module.Class: ...' (cls_name alone is the bare class name).
        if error.message.split(":", 1)[0] in own or error.cause is None:
            return error
        error = error.cause


def _message(error: Any) -> str | None:
    """The user code's own error under Dagster's wrappers (see own_error), on one line."""
    if error is None:
        return None
    error = own_error(error)
    text = _NOISE.sub("", error.message)
    return " ".join(line.strip() for line in text.splitlines() if line.strip())


def _failure(instance: dg.DagsterInstance, run_id: str) -> tuple[str | None, str | None]:
    """(failed step or check, error) of a failed run."""
    types = {
        dg.DagsterEventType.STEP_FAILURE,
        dg.DagsterEventType.ASSET_CHECK_EVALUATION,
        dg.DagsterEventType.RUN_FAILURE,
        dg.DagsterEventType.ENGINE_EVENT,
    }
    run_failure = died = None
    for rec in instance.get_records_for_run(run_id, of_type=types).records:
        event = rec.event_log_entry.dagster_event
        if event is None:
            continue
        if event.event_type == dg.DagsterEventType.ENGINE_EVENT:
            # how the run's process ended, when something outside it failed the run (a SIGKILL
            # of a daemon-launched run: its RUN_FAILURE says only "from outside")
            message = event.message or ""
            if _DIED.search(message):
                died = message.strip()
            continue
        if event.event_type == dg.DagsterEventType.STEP_FAILURE:
            return event.step_key, _message(event.step_failure_data.error)
        if event.event_type == dg.DagsterEventType.ASSET_CHECK_EVALUATION:
            evaluation = event.event_specific_data
            if not evaluation.passed:
                name = f"{evaluation.asset_key.to_user_string()}:{evaluation.check_name}"
                detail = {k: getattr(v, "value", v) for k, v in evaluation.metadata.items()}
                return name, f"blocking check {evaluation.check_name} failed: {detail}"
        if event.event_type == dg.DagsterEventType.RUN_FAILURE:
            data = event.event_specific_data
            own = _message(getattr(data, "error", None))
            run_failure = own or event.message
            if own is None and died is not None:  # failed from outside: say how it died
                run_failure = f"{run_failure} ({died})"
    return None, run_failure


_DIED = re.compile(r"signal|unexpectedly|killed", re.IGNORECASE)


def _attempt(
    instance: dg.DagsterInstance, record: dg.RunRecord | None, mats: list[StageMaterialization]
) -> RunAttempt:
    stages = [s for s in STAGES if any(m.stage == s for m in mats)]
    if record is None:  # the run was deleted; its materializations remain
        meta = mats[0].meta
        return RunAttempt(
            dagster_run_id=mats[0].run_id,
            status="succeeded",
            triggered_by=str(meta.get("triggered_by", "unknown")),
            stages=stages,
            started_at_utc=_utc(mats[0].timestamp),
        )
    run = record.dagster_run
    status = _RUN_STATUS.get(run.status, "running")
    failed_stage = error = None
    gone = process_gone(run) if status in _ACTIVE else None
    if gone is not None:  # read as Dagster will record it once a CLI run on this host fails it
        status, error = "failed", gone
    elif status == "failed":
        failed_stage, error = _failure(instance, run.run_id)
    elif status == "canceled":
        error = "the run was canceled"
    return RunAttempt(
        dagster_run_id=run.run_id,
        status=status,
        triggered_by=triggered_by(dict(run.tags)),
        backfill_id=run.tags.get("dagster/backfill"),
        stages=stages,
        failed_stage=failed_stage,
        error=error,
        started_at_utc=_utc(record.start_time) or record.create_timestamp,
        ended_at_utc=_utc(record.end_time),
    )


# ------------------------------------------------------------------------------ building records


def _latest_by_stage(mats: list[StageMaterialization]) -> dict[str, StageMaterialization]:
    latest: dict[str, StageMaterialization] = {}
    for m in mats:  # ascending storage id: the last one wins
        latest[m.stage] = m
    return latest


def _output(m: StageMaterialization) -> ArtifactRef | None:
    try:
        return ArtifactRef(
            name=m.meta["output_name"],
            uri=m.meta["output_uri"],
            sha256=m.meta["output_sha256"],
            size_bytes=m.meta["output_size_bytes"],
            media_type=m.meta.get("output_media_type", "application/octet-stream"),
        )
    except (KeyError, ValidationError):
        return None


def _manifests(intake: StageMaterialization | None) -> list[DatasetManifestRef]:
    """The pinned manifest refs: from the ledger metadata, else from the intake receipt itself."""
    if intake is None:
        return []
    try:
        return [
            DatasetManifestRef.model_validate(m) for m in intake.meta.get("input_manifests", [])
        ]
    except ValidationError:
        ref = _output(intake)
        if ref is None:
            return []
        return list(
            ArtifactStore.get_document(ref.uri, IntakeReceipt, ref.sha256).input_dataset_manifests
        )


def _record_status(
    attempts: list[RunAttempt], latest: dict[str, StageMaterialization]
) -> tuple[str, str | None]:
    if any(a.status in _ACTIVE for a in attempts):
        return "running", None
    bundle = latest.get("model_bundle")
    if bundle is not None:
        return ("gate_failed" if bundle.meta.get("gate_status") == "FAIL" else "succeeded"), None
    if attempts and attempts[-1].status in ("failed", "canceled"):
        return "failed", attempts[-1].error or "the attempt failed"
    # Every attempt ended well, but none ran the later stages (a run of some assets only, as
    # Materialize on one asset launches): nothing is going, so not "running"
    missing = [s for s in STAGES if s not in latest]
    return "incomplete", f"stages not run: {', '.join(missing)}"


def _provenance(record: dg.RunRecord | None, attempt: RunAttempt) -> Provenance:
    tags = {k: str(v) for k, v in record.dagster_run.tags.items()} if record else {}
    return Provenance(
        triggered_by=attempt.triggered_by, dagster_run_id=attempt.dagster_run_id, tags=tags
    )


def _pinned_record(
    trid: str,
    mats: list[StageMaterialization],
    attempts: list[RunAttempt],
    runs: dict[str, dg.RunRecord],
) -> TrainingRunRecord:
    latest = _latest_by_stage(mats)
    intake = latest.get(INTAKE)
    first = intake or (mats[0] if mats else None)
    meta = first.meta if first else {}
    config = meta.get("config") if intake else None
    bundle = latest.get("model_bundle")
    receipt = latest.get("gate_receipt")
    gate = bundle or receipt
    status, error = _record_status(attempts, latest)
    if status == "gate_failed" and error is None and receipt is not None:
        error = failure_summary([str(r) for r in receipt.meta.get("reasons") or []])
    partition = first.partition if first else ""
    return TrainingRunRecord(
        train_run_id=trid,
        status=status,
        partition_key=partition,
        model_family=(config or {}).get("model_family") or TrainingConfig().model_family,
        config_hash=meta.get("config_hash"),
        code_version=meta.get("code_version"),
        input_dataset_manifests=_manifests(intake),
        outputs=[ref for s in STAGES if s in latest and (ref := _output(latest[s])) is not None],
        created_at_utc=attempts[0].started_at_utc if attempts else None,
        provenance=_provenance(runs.get(attempts[0].dagster_run_id), attempts[0])
        if attempts
        else None,
        error=error,
        gate_status=gate.meta.get("gate_status") if gate else None,
        gate_judged_status=receipt.meta.get("judged_status") if receipt else None,
        bundle_id=bundle.meta.get("bundle_id") if bundle else None,
        config=config,
        attempts=attempts,
        timings={s: float(m.meta["seconds"]) for s, m in latest.items() if "seconds" in m.meta},
    )


def _launched_config(run: dg.DagsterRun) -> tuple[dict[str, Any], str | None]:
    """The config an attempt was launched with (defaults filled in) and its hash, if valid."""
    raw = ((run.run_config or {}).get("ops", {}).get(INTAKE, {}) or {}).get("config", {}) or {}
    try:
        config = TrainingConfig.model_validate(raw)
    except ValidationError:
        return dict(raw), None
    return config.model_dump(mode="json"), config_hash(config)


def _unpinned_record(record: dg.RunRecord, attempt: RunAttempt) -> TrainingRunRecord:
    run = record.dagster_run
    config, cfg_hash = _launched_config(run)
    status = "running" if attempt.status in _ACTIVE else "failed"
    error = None
    if status == "failed":
        error = attempt.error or (
            "the run was canceled"
            if attempt.status == "canceled"
            else "the run ended before its intake pinned a train run"
        )
    return TrainingRunRecord(
        train_run_id=None,
        status=status,
        partition_key=run.tags["dagster/partition"],
        model_family=str(config.get("model_family") or TrainingConfig().model_family),
        config_hash=cfg_hash,
        code_version=None,
        input_dataset_manifests=[],
        outputs=[],
        created_at_utc=attempt.started_at_utc,
        provenance=_provenance(record, attempt),
        error=error,
        config=config,
        attempts=[attempt],
    )


# ------------------------------------------------------------------------------ integrity


def _materialized_entry(
    instance: dg.DagsterInstance, run_id: str, stage: str, week: str | None, sequence: int
) -> bool:
    """Whether run ``run_id``'s event log holds a materialization of ``stage`` for ``week``
    naming journal entry ``sequence``. Wiping an asset hides its materializations from the
    asset queries but leaves them in the runs' event logs."""
    if week is None:
        return False
    found = run_materialization(instance, run_id, stage, week)
    return found is not None and metadata_value(found, "ledger_sequence") == sequence


def _sequence(m: StageMaterialization) -> int:
    """The journal entry a stage materialization names (-1: none)."""
    seq = m.meta.get("ledger_sequence")
    return seq if isinstance(seq, int) else -1


def verify_ledger(
    instance: dg.DagsterInstance, journal: Journal, anchor: tuple[int, str] | None = None
) -> IntegrityReport:
    """The ledger journal's chain; every entry's document against the bytes it pinned; and the
    instance's stage materializations against the entries, both ways.

    A materialization names its entry (``ledger_sequence``, ``ledger_entry_sha256``), so a deleted
    or rewritten entry is found even at the tail, where the chain alone cannot see it. An entry
    with no materialization is a problem when its run succeeded or is gone from the instance (a
    deleted run or wiped materialization), or when its run failed later but its event log shows
    the stage materialized (since wiped); when its run failed or never finished before
    materializing (a crash between journaling and materializing) it is only a note.
    """
    require_bucket(journal.url)
    chain = verify_chain(journal, anchor)
    mats = stage_materializations(instance)
    if any(_sequence(m) > chain.head_sequence for m in mats):
        # A stage journals, then materializes: one of a run still going did both after the
        # chain was read, so its entry is newer than that read, not deleted. Read it again.
        chain = verify_chain(journal, anchor)
    problems = list(chain.problems)
    notes: list[str] = []
    stored = {s.sequence: s for s in chain.entries if s.entry is not None}
    entries = [s for s in stored.values() if s.entry.kind == "ledger_stage"]  # type: ignore[union-attr]

    def add(kind: str, source: str, detail: str, field: str | None = None) -> None:
        problems.append(IntegrityProblem(kind=kind, source=source, field=field, detail=detail))

    for s in entries:
        e = s.entry
        fs, path = open_uri(e.uri)
        try:
            actual, _ = file_sha256(fs, path)
        except FileNotFoundError:
            add(
                "document_missing",
                e.uri,
                f"journal entry {e.sequence} ({e.subject}) points at "
                "this document, which is gone (deleted)",
            )
            continue
        if actual != e.sha256:
            add(
                "document_edited",
                e.uri,
                f"the document has sha256 {actual}; journal entry "
                f"{e.sequence} ({e.subject}) pinned {e.sha256}: it was edited",
                "sha256",
            )

    claimed: set[int] = set()
    # entries a materialization names, matching or not: one that does not match is reported
    # from the materialization's side, and is not also "unmaterialized"
    named: set[int] = set()
    for m in mats:
        where = (
            f"dagster materialization of {m.stage}[{m.partition}] in run {m.run_id} "
            f"(storage id {m.storage_id})"
        )
        seq, digest = m.meta.get("ledger_sequence"), m.meta.get("ledger_entry_sha256")
        s = stored.get(seq) if isinstance(seq, int) else None
        if s is not None:
            named.add(s.sequence)
        if seq is None:
            add(
                "materialization_unjournaled",
                where,
                "it names no ledger journal entry (made "
                "before the journal existed, or by code that bypasses it)",
                "ledger_sequence",
            )
        elif s is None:
            add(
                "materialization_unjournaled",
                journal.location.uri(journal.entry_path(seq)),
                f"{where} names journal entry {seq}, which is missing or unreadable (deleted)",
                "ledger_sequence",
            )
        elif s.digest != digest:
            add(
                "entry_edited",
                journal.location.uri(s.path),
                f"entry {seq} has sha256 {s.digest}, but {where} recorded {digest}: the entry was "
                "edited or replaced",
                "ledger_entry_sha256",
            )
        elif (
            s.entry.stage,
            s.entry.partition_key,
            s.entry.dagster_run_id,  # type: ignore[union-attr]
            s.entry.document.sha256 if s.entry.document else None,
        ) != (  # type: ignore[union-attr]
            m.stage,
            m.partition,
            m.run_id,
            m.meta.get("output_sha256"),
        ):
            add(
                "materialization_unjournaled",
                where,
                f"it differs from journal entry {seq} (stage, week, run or output digest)",
                "output_sha256",
            )
        else:
            claimed.add(seq)

    later: set[int] | None = None

    def materialized_since(sequence: int) -> bool:
        """An entry journaled after the materializations were read, by a run that then
        materialized it and ended: read them again (once) before calling it wiped."""
        nonlocal later
        if later is None:
            later = {_sequence(m) for m in stage_materializations(instance)}
        return sequence in later

    materialized_steps = {
        (stored[q].entry.dagster_run_id, stored[q].entry.stage)  # type: ignore[union-attr]
        for q in claimed
    }
    for s in entries:
        e = s.entry
        if s.sequence in named:
            continue
        source = journal.location.uri(s.path)
        record = instance.get_run_record_by_id(e.dagster_run_id) if e.dagster_run_id else None
        if record is None:
            add(
                "entry_unmaterialized",
                source,
                f"entry {e.sequence} ({e.subject}) was written by "
                f"run {e.dagster_run_id}, which is not in this Dagster instance (the run was "
                "deleted, or the journal belongs to another instance)",
                "dagster_run_id",
            )
        elif (e.dagster_run_id, e.stage) in materialized_steps:
            notes.append(
                f"entry {e.sequence} ({e.subject}): an earlier try of a step its run "
                "retried and then materialized"
            )
        elif (
            record.dagster_run.status == dg.DagsterRunStatus.SUCCESS
            or record.dagster_run.status in ENDED_WITHOUT_SUCCESS
        ) and materialized_since(e.sequence):
            notes.append(
                f"entry {e.sequence} ({e.subject}): materialized by run {e.dagster_run_id} "
                "while this verify ran"
            )
        elif record.dagster_run.status == dg.DagsterRunStatus.SUCCESS:
            add(
                "entry_unmaterialized",
                source,
                f"entry {e.sequence} ({e.subject}) has no "
                f"materialization, yet its run {e.dagster_run_id} succeeded: the materialization "
                "was wiped from the instance",
                "ledger_sequence",
            )
        # a run still going may store a materialization after this verify read them: only an
        # ended run's event log says for certain that one it made is gone
        elif record.dagster_run.status in ENDED_WITHOUT_SUCCESS and _materialized_entry(
            instance, e.dagster_run_id, e.stage, e.partition_key, e.sequence
        ):
            # a later step failed: the run's own event log still holds what was since wiped
            add(
                "entry_unmaterialized",
                source,
                f"entry {e.sequence} ({e.subject}) has no materialization, yet its run "
                f"{e.dagster_run_id} materialized it before it ended "
                f"({record.dagster_run.status.value}): the materialization was wiped from the "
                "instance",
                "ledger_sequence",
            )
        else:
            notes.append(
                f"entry {e.sequence} ({e.subject}): run {e.dagster_run_id} "
                f"({record.dagster_run.status.value}) ended before materializing it"
            )
    return IntegrityReport(
        target="ledger",
        journal=journal.url,
        entries=len(chain.entries),
        head_sequence=chain.head_sequence,
        head_digest=chain.head_digest,
        checked={
            "ledger_entries": len(entries),
            "documents": len(entries),
            "materializations": len(mats),
        },
        problems=problems,
        notes=notes,
        ok=not problems,
        verified_at_utc=datetime.now(UTC),
    )
