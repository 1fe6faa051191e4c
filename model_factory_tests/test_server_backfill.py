"""Operations through the real server: a GraphQL backfill, the daemon's sensor and automation,
the ledger command, the training pool, and the launchpad refusing bad config.

The `backfill` fixture (conftest.py) launches `launchPartitionBackfill` over three trainable weeks
and one week without data on a real `dagster dev`, then waits for the publish sensor and the
backtest automation to settle; these tests read what that left behind.
"""

import json
import subprocess
import sys
import time
from collections import Counter
from itertools import pairwise
from pathlib import Path

import dagster as dg
import jsonschema
import pytest
from dagster_graphql import DagsterGraphQLClient, DagsterGraphQLClientError

from model_factory.contracts import RegistryRecord
from model_factory_tests.conftest import (
    SERVER_GROUP,
    STAGES,
    TRAINABLE_WEEKS,
    WEEK_WITHOUT_DATA,
)
from model_factory_tests.dagster_server import LOCATION, ROOT, wait_for

pytestmark = [pytest.mark.slow, pytest.mark.xdist_group(SERVER_GROUP)]

SCHEMA = json.loads((ROOT / "contracts" / "mf_public_contracts_v0.schema.json").read_text())
MODEL_FACTORY = str(Path(sys.executable).parent / "model-factory")


def validate(doc: dict, contract: str) -> None:
    jsonschema.Draft202012Validator(
        {"$ref": f"#/$defs/{contract}", "$defs": SCHEMA["$defs"]}
    ).validate(doc)


def latest(instance: dg.DagsterInstance, asset: str, week: str | None = None):
    recs = instance.fetch_materializations(
        dg.AssetRecordsFilter(
            asset_key=dg.AssetKey(asset), asset_partitions=[week] if week else None
        ),
        limit=1,
    ).records
    if not recs:
        return None, None
    meta = {k: getattr(v, "value", v) for k, v in recs[0].asset_materialization.metadata.items()}
    return meta, recs[0]


def ledger(server, *args: str) -> subprocess.CompletedProcess:
    out = subprocess.run(
        [MODEL_FACTORY, "ledger", *args],
        env=server.env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr
    return out


def test_backfill_runs_one_run_per_week_and_materializes_every_trainable_week(
    dagster_server, backfill
):
    instance = dagster_server.instance()
    assert backfill.status == "COMPLETED_FAILED"  # the week without data fails, the rest succeed
    by_week = {r.dagster_run.tags["dagster/partition"]: r.dagster_run for r in backfill.runs}
    assert sorted(by_week) == sorted(backfill.weeks)
    for week in TRAINABLE_WEEKS:
        run = by_week[week]
        assert run.status == dg.DagsterRunStatus.SUCCESS
        for stage in STAGES:
            meta, rec = latest(instance, stage, week)
            assert rec is not None, f"{stage} {week} not materialized"
            assert rec.run_id == run.run_id
            assert meta["triggered_by"] == f"backfill:{backfill.id}"
    assert by_week[WEEK_WITHOUT_DATA].status == dg.DagsterRunStatus.FAILURE
    assert all(latest(instance, stage, WEEK_WITHOUT_DATA)[1] is None for stage in STAGES)


def test_sensor_published_exactly_the_pass_bundles_once_each(dagster_server, backfill):
    assert backfill.pass_bundles, "the demo weeks should give at least one PASS bundle"
    records = sorted((dagster_server.root / "registry" / "records").glob("*.json"))
    registered = {p.stem: RegistryRecord.model_validate_json(p.read_text()) for p in records}
    assert set(registered) == set(backfill.pass_bundles)
    for bundle_id, record in registered.items():
        assert record.partition_key == backfill.pass_bundles[bundle_id]
        assert record.published_by == "sensor:publish_pass_bundles"
    publish_runs = dagster_server.instance().get_run_records(
        filters=dg.RunsFilter(job_name="publish_bundle")
    )
    keys = Counter(r.dagster_run.tags["dagster/run_key"] for r in publish_runs)
    assert keys == Counter(set(backfill.pass_bundles))  # once each, nothing else
    assert all(r.dagster_run.status == dg.DagsterRunStatus.SUCCESS for r in publish_runs)


def test_ledger_lists_each_train_run_with_its_backfill_id(dagster_server, backfill):
    records = [json.loads(line) for line in ledger(dagster_server, "--json").stdout.splitlines()]
    for doc in records:
        validate(doc, "TrainingRunRecord")
    runs = {r.dagster_run.tags["dagster/partition"]: r.dagster_run.run_id for r in backfill.runs}
    instance = dagster_server.instance()
    for week in TRAINABLE_WEEKS:
        mine = [r for r in records if r["partition_key"] == week and r["train_run_id"]]
        assert len(mine) == 1, mine
        record = mine[0]
        bundle, _ = latest(instance, "model_bundle", week)
        assert record["train_run_id"] == bundle["train_run_id"]
        assert record["bundle_id"] == bundle["bundle_id"]
        assert (
            record["status"] == {"PASS": "succeeded", "FAIL": "gate_failed"}[bundle["gate_status"]]
        )
        assert record["config_hash"] == bundle["config_hash"] and record["config"]
        assert [o["sha256"] for o in record["outputs"]] == [
            latest(instance, s, week)[0]["output_sha256"] for s in STAGES
        ]
        assert len(record["input_dataset_manifests"]) > 0
        [attempt] = record["attempts"]
        assert attempt["backfill_id"] == backfill.id
        assert attempt["triggered_by"] == f"backfill:{backfill.id}"
        assert attempt["dagster_run_id"] == runs[week]
        assert attempt["stages"] == list(STAGES)
    [failed] = [
        r
        for r in records
        if r["partition_key"] == WEEK_WITHOUT_DATA
        and r["attempts"][0]["backfill_id"] == backfill.id
    ]
    assert failed["status"] == "failed" and failed["train_run_id"] is None
    assert "MissingInputError" in failed["error"] and "time_window" in failed["error"]
    assert failed["attempts"][0]["failed_stage"] == "dataset_manifests"

    first, last = (
        [r["train_run_id"] for r in records if r["partition_key"] == w and r["train_run_id"]]
        for w in (TRAINABLE_WEEKS[0], TRAINABLE_WEEKS[-1])
    )
    table = ledger(dagster_server, "--week", TRAINABLE_WEEKS[0]).stdout  # what a person reads
    assert first[0] in table and f"backfill:{backfill.id}" in table
    assert last[0] not in table and WEEK_WITHOUT_DATA not in table


def test_backtest_summary_is_refreshed_once_after_the_backfill(dagster_server, backfill):
    instance = dagster_server.instance()
    meta, rec = latest(instance, "backtest_summary")
    assert meta["trained_weeks"] == len(TRAINABLE_WEEKS)
    assert all(week in meta["weeks"] for week in TRAINABLE_WEEKS)
    assert meta["pass_weeks"] == len(backfill.pass_bundles)
    assert meta["plot"].startswith("![")
    validate(json.loads(Path(meta["output_uri"]).read_text()), "BacktestSummary")
    assert Path(meta["plot_uri"]).read_bytes().startswith(b"<svg")
    run = instance.get_run_by_id(rec.run_id)
    assert run.tags.get("dagster/from_automation_condition") == "true", run.tags
    # One refresh once the backfill was done, not one per week.
    history = instance.fetch_materializations(dg.AssetKey("backtest_summary"), limit=10).records
    assert len(history) == 1
    assert rec.timestamp >= max(r.end_time for r in backfill.runs)


def test_training_steps_share_one_pool_slot_and_runs_are_capped(dagster_server, backfill):
    instance = dagster_server.instance()
    fits = []
    for record in backfill.runs:
        events = instance.get_records_for_run(
            record.dagster_run.run_id,
            of_type={dg.DagsterEventType.STEP_START, dg.DagsterEventType.STEP_SUCCESS},
        ).records
        times = {
            (e.event_log_entry.dagster_event.event_type, e.event_log_entry.step_key): e.timestamp
            for e in events
        }
        if (dg.DagsterEventType.STEP_START, "model") in times:
            fits.append(
                (
                    times[(dg.DagsterEventType.STEP_START, "model")],
                    times[(dg.DagsterEventType.STEP_SUCCESS, "model")],
                )
            )
    assert len(fits) == len(TRAINABLE_WEEKS)
    fits.sort()
    assert all(later[0] >= earlier[1] for earlier, later in pairwise(fits)), fits
    spans = sorted((r.start_time, r.end_time) for r in backfill.runs)
    for start, _ in spans:
        assert sum(s <= start < e for s, e in spans) <= 2  # dagster.yaml: max_concurrent_runs 2
    config = instance.get_concurrency_config()
    assert config.run_queue_config.max_concurrent_runs == 2
    assert config.pool_config.default_pool_limit == 1


def test_launchpad_refuses_invalid_config_before_any_work(dagster_server, backfill):
    client = DagsterGraphQLClient("127.0.0.1", port_number=dagster_server.port)
    week = WEEK_WITHOUT_DATA  # already failed: the partition statuses the UI shows stay as they are
    launch = dict(
        job_name="weekly_training",
        repository_location_name=LOCATION,
        repository_name="__repository__",
        tags={"dagster/partition": week},
    )

    # A misspelt field: Dagster refuses the launch itself, naming the field.
    with pytest.raises(DagsterGraphQLClientError) as refused:
        client.submit_job_execution(
            **launch,
            run_config={
                "ops": {"dataset_manifests": {"config": {"split_policy": {"train_dayz": 14}}}}
            },
        )
    assert "train_dayz" in str(refused.value)

    # An out-of-range value: the run starts, and its first step fails before its body runs.
    store = dagster_server.root / "store"
    before = sorted(p for p in store.rglob("*") if p.is_file())
    run_id = client.submit_job_execution(
        **launch,
        run_config={"ops": {"dataset_manifests": {"config": {"split_policy": {"train_days": -7}}}}},
    )
    wait_for(
        "the invalid run to fail",
        lambda: (
            client.get_run_status(run_id)
            in (dg.DagsterRunStatus.FAILURE, dg.DagsterRunStatus.SUCCESS)
        ),
        timeout=120,
        every=1,
        log=dagster_server.log,
    )
    assert client.get_run_status(run_id) == dg.DagsterRunStatus.FAILURE
    time.sleep(1)
    assert sorted(p for p in store.rglob("*") if p.is_file()) == before  # nothing written
    records = [
        json.loads(line)
        for line in ledger(dagster_server, "--week", week, "--json").stdout.splitlines()
    ]
    [failed] = [r for r in records if r["attempts"][0]["dagster_run_id"] == run_id]
    assert failed["status"] == "failed" and failed["train_run_id"] is None
    assert failed["config_hash"] is None  # the config itself was invalid
    assert "split_policy.train_days" in failed["error"]
    assert "greater than or equal to 1" in failed["error"]
