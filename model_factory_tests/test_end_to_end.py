"""End to end through a real Dagster instance (SQLite on disk), real parquet and real XGBoost."""

import json
import shutil
import time
from datetime import UTC, datetime
from pathlib import Path

import dagster as dg
import jsonschema
import polars as pl
import pytest
from click.testing import CliRunner

from model_factory.cli import main
from model_factory.contracts import (
    EvaluationReport,
    GateReceipt,
    IntakeReceipt,
    ModelBundle,
    RegistryRecord,
    TrainingFrameRecord,
)
from model_factory.core.canonical import sha256_hex
from model_factory.core.demo_data import DemoDataSpec, generate_demo_data
from model_factory.core.registry import FileRegistry
from model_factory.definitions import build_definitions
from model_factory.defs.assets import TRAINING_ASSETS
from model_factory.defs.publishing import SENSOR_NAME, SETTLE_SECONDS, publish_requests
from model_factory.defs.resources import ModelFactoryResource
from model_factory.defs.schedules import SCHEDULE_NAME as SCHEDULE
from model_factory.defs.schedules import weekly_training_schedule
from model_factory.runner import run_week, run_weeks, tick_publish_sensor
from model_factory_tests.conftest import step_failure_messages

pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("end_to_end")]

SCHEMA = json.loads(
    (Path(__file__).parents[1] / "contracts" / "mf_public_contracts_v0.schema.json").read_text()
)
WEEKS = ["2026-02-23", "2026-03-02"]
LEDGER_KEYS = {
    "train_run_id",
    "config_hash",
    "code_version",
    "input_manifests",
    "output_uri",
    "output_sha256",
    "triggered_by",
    "seconds",
    "partition_key",
}


def validate(doc: dict, contract: str) -> None:
    jsonschema.Draft202012Validator(
        {"$ref": f"#/$defs/{contract}", "$defs": SCHEMA["$defs"]}
    ).validate(doc)


@pytest.fixture(scope="module")
def factory(tmp_path_factory):
    root = tmp_path_factory.mktemp("factory")
    generate_demo_data(str(root / "catalog"), DemoDataSpec(customers=600, terminals=1200, weeks=10))
    resource = ModelFactoryResource(
        catalog_url=str(root / "catalog"),
        store_url=str(root / "store"),
        registry_url=str(root / "registry"),
    )
    (root / "dagster").mkdir()
    with dg.instance_for_test(temp_dir=str(root / "dagster")) as instance:
        yield {
            "root": root,
            "defs": build_definitions(resource),
            "instance": instance,
            "registry": FileRegistry(str(root / "registry")),
            "resource": resource,
        }


@pytest.fixture(scope="module")
def first_pass(factory):
    """Two consecutive weeks, then one sensor tick."""
    return run_weeks(factory["instance"], factory["defs"], WEEKS, factory["registry"])


def latest_metadata(instance, asset: str, week: str) -> tuple[dict, dg.EventLogRecord]:
    rec = instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=dg.AssetKey(asset), asset_partitions=[week]), limit=1
    ).records[0]
    meta = {k: getattr(v, "value", v) for k, v in rec.asset_materialization.metadata.items()}
    return meta, rec


def test_two_weeks_publish_exactly_the_pass_bundles(factory, first_pass):
    assert [r.status for r in first_pass] == ["succeeded", "succeeded"]
    gates = {r.bundle_id: r.gate for r in first_pass}
    assert set(gates.values()) <= {"PASS", "FAIL"}
    assert "PASS" in gates.values(), "the demo data should give at least one PASS bundle"
    registered = {r.bundle_id for r in factory["registry"].records()}
    assert registered == {b for b, g in gates.items() if g == "PASS"}
    assert all(r.published == (r.gate == "PASS") for r in first_pass)


def test_rerun_gives_same_ids_and_no_second_record(factory, first_pass):
    before = {p.name: p.read_bytes() for p in (factory["root"] / "registry" / "records").iterdir()}
    again = run_week(factory["instance"], factory["defs"], WEEKS[0])
    original = first_pass[0]
    assert again.train_run_id == original.train_run_id
    assert again.bundle_id == original.bundle_id
    published, _ = tick_publish_sensor(factory["instance"], factory["defs"])
    assert published == []
    after = {p.name: p.read_bytes() for p in (factory["root"] / "registry" / "records").iterdir()}
    assert after == before


def test_every_stage_records_the_ledger(factory, first_pass):
    instance = factory["instance"]
    for week, summary in zip(WEEKS, first_pass, strict=True):
        for asset in TRAINING_ASSETS:
            key = asset.key.to_user_string()
            meta, rec = latest_metadata(instance, key, week)
            assert meta.keys() >= LEDGER_KEYS, f"{key} misses {LEDGER_KEYS - meta.keys()}"
            assert meta["train_run_id"] == summary.train_run_id
            assert meta["triggered_by"] == "cli"
            manifests = meta["input_manifests"]
            assert manifests and all(len(m["digest"]) == 64 for m in manifests)
            # data version = output digest, and the asset's code version is pinned
            assert rec.asset_materialization.tags["dagster/data_version"] == meta["output_sha256"]
            assert rec.asset_materialization.tags["dagster/code_version"] == meta["code_version"]


def test_leakage_checks_pass_and_audit_is_recorded(factory, first_pass):
    instance = factory["instance"]
    for check in ("leakage_audit_clean", "frame_matches_feature_schema"):
        key = dg.AssetCheckKey(dg.AssetKey("training_frame"), check)
        evaluation = instance.event_log_storage.get_latest_asset_check_execution_by_key([key])[key]
        assert evaluation.status.value == "SUCCEEDED"
    meta, _ = latest_metadata(instance, "training_frame", WEEKS[0])
    audit = meta["leakage_audit"]
    assert audit["passed"] and not audit["violations"]
    assert all(g["max_available_minus_event_seconds"] <= 0 for g in audit["feature_groups"])
    assert sum(audit["labels_hidden_by_cut"].values()) > 0  # late labels exist and are hidden


def test_emitted_documents_match_the_committed_contracts(factory, first_pass):
    instance = factory["instance"]
    week = WEEKS[0]
    for asset, contract in (
        ("dataset_manifests", "IntakeReceipt"),
        ("training_frame", "TrainingFrameRecord"),
        ("evaluation_report", "EvaluationReport"),
        ("gate_receipt", "GateReceipt"),
        ("model_bundle", "ModelBundle"),
    ):
        meta, _ = latest_metadata(instance, asset, week)
        doc = json.loads(Path(meta["output_uri"]).read_text())
        validate(doc, contract)
        assert doc["schema_version"] == f"mf.{contract}.v0"
    bundle_meta, _ = latest_metadata(instance, "model_bundle", week)
    bundle = json.loads(Path(bundle_meta["output_uri"]).read_text())
    for ref in bundle["input_dataset_manifests"]:
        validate(json.loads(Path(ref["uri"]).read_text()), "DatasetManifest")
    for record in (factory["root"] / "registry" / "records").iterdir():
        validate(json.loads(record.read_text()), "RegistryRecord")


def test_bundle_embeds_its_evidence(factory, first_pass):
    meta, _ = latest_metadata(factory["instance"], "model_bundle", WEEKS[0])
    bundle = ModelBundle.model_validate_json(Path(meta["output_uri"]).read_text())
    intake_meta, _ = latest_metadata(factory["instance"], "dataset_manifests", WEEKS[0])
    intake = IntakeReceipt.model_validate_json(Path(intake_meta["output_uri"]).read_text())
    assert bundle.input_dataset_manifests == intake.input_dataset_manifests
    assert bundle.config_hash == intake.config_hash
    assert bundle.training_run_record.train_run_id == bundle.train_run_id
    assert {g.name for g in bundle.feature_group_versions} == {
        "customer_spending",
        "terminal_risk",
        "card_status",
    }
    assert not any("card_number" in f.name for f in bundle.feature_schema)
    report = EvaluationReport.model_validate_json(
        Path(bundle.evaluation_report_ref.uri).read_text()
    )
    assert bundle.gate_receipt.model_sha256 == report.model_sha256 == bundle.artifact_refs[0].sha256
    frame_meta, _ = latest_metadata(factory["instance"], "training_frame", WEEKS[0])
    record = TrainingFrameRecord.model_validate_json(Path(frame_meta["output_uri"]).read_text())
    assert report.frame_sha256 == record.frame.sha256
    gate = GateReceipt.model_validate_json(
        Path(
            latest_metadata(factory["instance"], "gate_receipt", WEEKS[0])[0]["output_uri"]
        ).read_text()
    )
    assert gate.gate_status == bundle.gate_receipt.gate_status


def test_sensor_cursor_never_requests_a_bundle_twice(factory, first_pass):
    instance, defs = factory["instance"], factory["defs"]
    sensor = defs.resolve_sensor_def(SENSOR_NAME)
    with dg.build_sensor_context(instance=instance, definitions=defs) as ctx:
        first = sensor.evaluate_tick(ctx)
    pass_ids = {r.bundle_id for r in first_pass if r.gate == "PASS"}
    assert {r.run_key for r in first.run_requests} == pass_ids
    with dg.build_sensor_context(instance=instance, definitions=defs, cursor=first.cursor) as ctx:
        second = sensor.evaluate_tick(ctx)
    # the last minute's bundles are read again while the cursor settles, under the same run
    # keys: the daemon launches a run key once, so no bundle gets a second publish run
    assert [r.run_key for r in second.run_requests] == [r.run_key for r in first.run_requests]
    # once settled, the cursor is past them and nothing is requested again
    later = time.time() + SETTLE_SECONDS + 1
    settled, cursor = publish_requests(instance, None, now=later)
    assert {r.run_key for r in settled} == pass_ids
    assert publish_requests(instance, cursor, now=later) == ([], cursor)


def test_tampered_data_file_fails_the_frame_and_writes_nothing_downstream(
    factory, first_pass, tmp_path
):
    """Files are re-verified against the pinned digests when the frame is built."""
    catalog = factory["root"] / "catalog"
    copy = tmp_path / "catalog"
    shutil.copytree(catalog, copy)
    resource = ModelFactoryResource(
        catalog_url=str(copy),
        store_url=str(tmp_path / "store"),
        registry_url=str(tmp_path / "registry"),
    )
    defs = build_definitions(resource)
    instance = factory["instance"]
    job = defs.resolve_job_def("weekly_training")
    week = "2026-03-09"
    ok = job.execute_in_process(
        partition_key=week, instance=instance, asset_selection=[dg.AssetKey("dataset_manifests")]
    )
    assert ok.success
    victim = next(copy.glob("datasets/events/transactions/v1/*/part-0.parquet"))
    data = bytearray(victim.read_bytes())
    data[len(data) // 2] ^= 0xFF
    victim.write_bytes(bytes(data))
    bad = job.execute_in_process(
        partition_key=week,
        instance=instance,
        raise_on_error=False,
        asset_selection=[dg.AssetKey(k) for k in ("training_frame", "model")],
    )
    assert not bad.success
    messages = step_failure_messages(bad)
    assert any("DigestMismatchError" in m and "sha256" in m and "files[" in m for m in messages)
    assert not (tmp_path / "store" / "bundles").exists()
    assert [e for e in bad.all_events if e.event_type_value == "ASSET_MATERIALIZATION"] == []


def _schedule_tick(factory, instance, when: datetime):
    schedule = factory["defs"].resolve_schedule_def(weekly_training_schedule.name)
    with dg.build_schedule_context(
        instance=instance,
        scheduled_execution_time=when,
        # as the daemon evaluates it: with the repository's resources and jobs
        resources={"model_factory": factory["resource"]},
        repository_def=factory["defs"].get_repository_def(),
    ) as ctx:
        return schedule.evaluate_tick(ctx)


def test_weekly_schedule_trains_each_closed_week_once_its_inputs_are_complete(factory, tmp_path):
    """The demo catalog's labels end with the week of 2026-03-09: a tick asks for the oldest
    closed week the catalog covers (keyed by week, so the daemon launches each once), never two
    weeks at once, and skips, with intake's own reason, a week whose labels have not landed,
    instead of launching a run bound to fail."""
    with dg.instance_for_test(temp_dir=str(tmp_path)) as fresh:  # nothing trained yet
        first = _schedule_tick(factory, fresh, datetime(2026, 3, 16, 3, tzinfo=UTC))
        assert [(r.partition_key, r.run_key) for r in first.run_requests] == [
            ("2026-03-02", "2026-03-02")
        ]
        # while a training run of that week is going (the CLI's, a backfill's), no week is
        # asked for: a week's intake pins the champion and earlier reports it is judged against
        job = factory["defs"].resolve_job_def("weekly_training")
        going = fresh.create_run_for_job(job, tags={"dagster/partition": "2026-03-02"})
        # a run of another job, or one left going for a week before those it looks at (a
        # `dagster dev` that died mid-run), holds nothing
        fresh.add_run(
            dg.DagsterRun(
                job_name="other_team_daily_etl",
                run_id="0" * 8 + "-0000-0000-0000-" + "0" * 12,
                status=dg.DagsterRunStatus.STARTED,
                tags={"dagster/partition": "2025-06-30"},
            )
        )
        fresh.create_run_for_job(job, tags={"dagster/partition": "2026-02-23"})
        waiting = _schedule_tick(factory, fresh, datetime(2026, 3, 16, 4, tzinfo=UTC))
        assert waiting.run_requests == []
        assert f"2026-03-02: waits for the run {going.run_id} of 2026-03-02" in (
            waiting.skip_message
        )
        fresh.report_run_canceled(going)
        after = _schedule_tick(factory, fresh, datetime(2026, 3, 16, 5, tzinfo=UTC))
        assert [r.partition_key for r in after.run_requests] == ["2026-03-02"]
        # the week of 2026-03-16 has closed but its labels are not in the catalog: only the
        # week before is asked for
        late = _schedule_tick(factory, fresh, datetime(2026, 3, 23, 5, tzinfo=UTC))
        assert [r.partition_key for r in late.run_requests] == ["2026-03-09"]
        none = _schedule_tick(factory, fresh, datetime(2026, 3, 30, 3, tzinfo=UTC))
        assert none.run_requests == []
        assert "2026-03-16: inputs not complete yet" in none.skip_message
        assert "labels:" in none.skip_message and "2026-03-23: inputs" in none.skip_message
        early = _schedule_tick(factory, fresh, datetime(2026, 1, 1, tzinfo=UTC))
        assert early.run_requests == [] and "no week has closed" in early.skip_message
        # the schedule's own run of the week ended without a bundle (failed, cancelled): it is
        # not launched again every hour (Dagster keys a schedule's run keys by tick)
        tags = {"dagster/partition": "2026-03-02", "dagster/schedule_name": SCHEDULE}
        launched = fresh.create_run_for_job(job, tags=tags)
        fresh.report_run_canceled(launched)
        once = _schedule_tick(factory, fresh, datetime(2026, 3, 16, 6, tzinfo=UTC))
        assert [r.partition_key for r in once.run_requests] == ["2026-03-09"]
        fresh.report_run_canceled(
            fresh.create_run_for_job(job, tags={**tags, "dagster/partition": "2026-03-09"})
        )
        neither = _schedule_tick(factory, fresh, datetime(2026, 3, 16, 7, tzinfo=UTC))
        assert neither.run_requests == []
        assert f"2026-03-02: this schedule's run {launched.run_id} ended CANCELED" in (
            neither.skip_message
        )


def test_weekly_schedule_skips_weeks_already_trained(factory, first_pass):
    done = _schedule_tick(factory, factory["instance"], datetime(2026, 3, 9, 3, tzinfo=UTC))
    assert done.run_requests == []
    for week in WEEKS:
        bundle = next(r.bundle_id for r in first_pass if r.week == week)
        assert f"{week}: trained already ({bundle})" in done.skip_message


def test_publish_runs_are_tagged_with_their_bundle(factory, first_pass):
    runs = factory["instance"].get_runs(
        filters=dg.RunsFilter(tags={"dagster/sensor_name": SENSOR_NAME})
    )
    keys = {r.tags["dagster/run_key"] for r in runs}
    assert keys == {r.bundle_id for r in first_pass if r.gate == "PASS"}
    record = RegistryRecord.model_validate_json(
        (factory["root"] / "registry" / "records" / f"{next(iter(keys))}.json").read_text()
    )
    assert record.published_by.startswith("sensor:")


def test_frame_export_is_the_assets_frame(factory, first_pass, tmp_path, monkeypatch):
    """`model-factory frame build` runs the asset's code path: identical rows and bytes."""
    root = factory["root"]
    monkeypatch.setenv("MODEL_FACTORY_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("MODEL_FACTORY_CATALOG", str(root / "catalog"))
    out = tmp_path / "frame.parquet"
    result = CliRunner().invoke(
        main, ["frame", "build", "--partition", WEEKS[0], "--out", str(out)]
    )
    assert result.exit_code == 0, result.output
    assert sha256_hex(out.read_bytes()) in result.output
    meta, _ = latest_metadata(factory["instance"], "training_frame", WEEKS[0])
    stored = Path(meta["frame_uri"])
    assert pl.read_parquet(out).equals(pl.read_parquet(stored))
    assert out.read_bytes() == stored.read_bytes()

    # streaming mode, over an older file of that name: the same bytes replace it whole
    monkeypatch.setenv("MODEL_FACTORY_FRAME_MODE", "streaming")
    out.write_bytes(b"an older export")
    again = CliRunner().invoke(main, ["frame", "build", "--partition", WEEKS[0], "--out", str(out)])
    assert again.exit_code == 0, again.output
    assert out.read_bytes() == stored.read_bytes()
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".tmp-")) == []


def test_bundle_reproduce_is_identical_and_joins_the_ledger(factory, first_pass, monkeypatch):
    root = factory["root"]
    for name in ("catalog", "store", "registry"):
        monkeypatch.setenv(f"MODEL_FACTORY_{name.upper()}", str(root / name))
    bundle_id = first_pass[0].bundle_id
    runner = CliRunner()
    verified = runner.invoke(main, ["bundle", "verify", bundle_id])
    assert verified.exit_code == 0 and f"{bundle_id}: VALID" in verified.output
    result = runner.invoke(main, ["bundle", "reproduce", bundle_id, "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.output)["verdict"] == "IDENTICAL"
    observations = (
        factory["instance"]
        .fetch_observations(
            dg.AssetRecordsFilter(
                asset_key=dg.AssetKey("model_bundle"), asset_partitions=[WEEKS[0]]
            ),
            limit=10,
        )
        .records
    )
    verdicts = [
        o.asset_observation.metadata["reproduce_verdict"].value
        for o in observations
        if "reproduce_verdict" in o.asset_observation.metadata
    ]
    assert verdicts == ["IDENTICAL"]
    [uri] = [
        o.asset_observation.metadata["bundle_uri"].value
        for o in observations
        if "reproduce_verdict" in o.asset_observation.metadata
    ]
    assert uri.endswith("bundle.json")  # the file reproduced, not a lookup by its claimed id


def test_second_week_names_the_first_weeks_champion(factory, first_pass):
    meta, _ = latest_metadata(factory["instance"], "gate_receipt", WEEKS[1])
    first = first_pass[0]
    expected = first.bundle_id if first.gate == "PASS" else "none"
    assert meta["champion"] == expected
