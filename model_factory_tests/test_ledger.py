"""The run ledger and the backtest summary, rebuilt from a real instance on disk (no server).

One module-scoped history, built in order: two weeks trained through the CLI's runner (which then
refreshes the backtest), a second attempt of one train run, a week without data, three invalid
configs, and a data file tampered with between a week's intake and its frame, then after it.
"""

import json
import shutil
from pathlib import Path

import dagster as dg
import jsonschema
import pytest
from click.testing import CliRunner

from model_factory.cli import main
from model_factory.contracts import BacktestSummary, TrainingRunRecord
from model_factory.core.demo_data import DemoDataSpec, generate_demo_data
from model_factory.core.registry import FileRegistry
from model_factory.definitions import build_definitions
from model_factory.defs.resources import ModelFactoryResource
from model_factory.ledger import STAGES, read_ledger
from model_factory.runner import run_week, run_weeks

pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("ledger")]

ROOT = Path(__file__).resolve().parents[1]
SCHEMA = json.loads((ROOT / "contracts" / "mf_public_contracts_v0.schema.json").read_text())
TRAINED = ["2026-02-23", "2026-03-02"]
TAMPERED = "2026-03-09"
NO_DATA = "2026-03-16"
BAD_CONFIGS = {
    "negative_window": ({"split_policy": {"train_days": -3}}, "split_policy.train_days"),
    "threshold_outside_0_1": ({"thresholds": [0.5, 1.5]}, "thresholds"),
    "unknown_feature_group": (
        {"feature_group_versions": [{"name": "no_such_group", "version": "v1"}]},
        "no_such_group",
    ),
}


def validate(doc: dict, contract: str) -> None:
    jsonschema.Draft202012Validator(
        {"$ref": f"#/$defs/{contract}", "$defs": SCHEMA["$defs"]}
    ).validate(doc)


def files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.is_file())


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    root = tmp_path_factory.mktemp("ledger")
    generate_demo_data(str(root / "catalog"), DemoDataSpec(customers=600, terminals=1200, weeks=10))
    resource = ModelFactoryResource(
        catalog_url=str(root / "catalog"),
        store_url=str(root / "store"),
        registry_url=str(root / "registry"),
    )
    defs = build_definitions(resource)
    home = root / "dagster"
    home.mkdir()
    shutil.copyfile(ROOT / "dagster.yaml", home / "dagster.yaml")
    instance = dg.DagsterInstance.from_config(str(home))
    out: dict = {"root": root, "defs": defs, "instance": instance, "home": home}

    out["summaries"] = run_weeks(instance, defs, TRAINED, FileRegistry(str(root / "registry")))
    out["automation_before"] = dg.evaluate_automation_conditions(defs=defs, instance=instance)
    # A second attempt of the first train run: only its last stage again.
    job = defs.resolve_job_def("weekly_training")
    job.execute_in_process(
        partition_key=TRAINED[0],
        instance=instance,
        asset_selection=[dg.AssetKey("model_bundle")],
        tags={"model_factory/triggered_by": "cli"},
    )
    out["automation_after"] = dg.evaluate_automation_conditions(
        defs=defs, instance=instance, cursor=out["automation_before"].cursor
    )

    store_before = files(root / "store")
    out["no_data"] = run_week(instance, defs, NO_DATA)
    out["bad"] = {
        name: run_week(instance, defs, TRAINED[1], {"ops": {"dataset_manifests": {"config": cfg}}})
        for name, (cfg, _) in BAD_CONFIGS.items()
    }
    out["store_unchanged"] = files(root / "store") == store_before

    # Intake pins the week, then one of its event files changes before the frame is built.
    job.execute_in_process(
        partition_key=TAMPERED,
        instance=instance,
        asset_selection=[dg.AssetKey("dataset_manifests")],
    )
    # The events of the week before: inside the test window of TAMPERED.
    [victim] = (root / "catalog").glob("datasets/events/transactions/v1/20260302T*/part-0.parquet")
    data = bytearray(victim.read_bytes())
    data[len(data) // 2] ^= 0xFF
    victim.write_bytes(bytes(data))
    job.execute_in_process(
        partition_key=TAMPERED,
        instance=instance,
        raise_on_error=False,
        asset_selection=[dg.AssetKey(s) for s in STAGES[1:]],
    )
    out["tampered_intake"] = run_week(instance, defs, TAMPERED)  # intake re-verifies: refused
    out["records"] = read_ledger(instance)
    yield out
    instance.dispose()


def by_week(records, week):
    return [r for r in records if r.partition_key == week]


def test_every_record_validates_against_the_committed_contract(world):
    assert world["records"]
    for record in world["records"]:
        validate(record.model_dump(mode="json"), "TrainingRunRecord")
        TrainingRunRecord.model_validate_json(record.model_dump_json())


def test_a_trained_week_is_one_record_with_every_output_and_its_trigger(world):
    instance = world["instance"]
    for week, summary in zip(TRAINED, world["summaries"], strict=True):
        [record] = [r for r in by_week(world["records"], week) if r.train_run_id]
        assert record.train_run_id == summary.train_run_id
        assert record.status == {"PASS": "succeeded", "FAIL": "gate_failed"}[summary.gate]
        assert record.gate_status == summary.gate and record.bundle_id == summary.bundle_id
        assert record.attempts[0].triggered_by == "cli"
        assert record.provenance.triggered_by == "cli"
        assert record.outputs[0].name == "intake_receipt.json"
        assert len(record.outputs) == len(STAGES) and set(record.timings) == set(STAGES)
        intake = instance.fetch_materializations(
            dg.AssetRecordsFilter(
                asset_key=dg.AssetKey("dataset_manifests"), asset_partitions=[week]
            ),
            limit=1,
        ).records[0]
        meta = intake.asset_materialization.metadata
        assert record.config_hash == meta["config_hash"].value
        assert record.config == meta["config"].value
        assert [m.digest for m in record.input_dataset_manifests] == [
            m["digest"] for m in meta["input_manifests"].value
        ]


def test_a_second_attempt_joins_its_train_run(world):
    [record] = [r for r in by_week(world["records"], TRAINED[0]) if r.train_run_id]
    assert len(record.attempts) == 2
    assert record.attempts[0].stages == list(STAGES)
    assert record.attempts[1].stages == ["model_bundle"]
    assert all(a.status == "succeeded" for a in record.attempts)


def test_a_week_without_data_is_failed_with_the_missing_manifest(world):
    assert world["no_data"].status == "failed"
    [record] = by_week(world["records"], NO_DATA)
    assert record.status == "failed" and record.train_run_id is None
    assert record.attempts[0].failed_stage == "dataset_manifests"
    assert "MissingInputError" in record.error and "time_window" in record.error
    assert record.config_hash is not None  # the config was fine; the data was not there


def test_a_run_of_intake_only_is_incomplete_not_running(tmp_path):
    """Materialize on `dataset_manifests` alone (the launchpad of that one asset) pins a train
    run and ends: with nothing going, the ledger must not show it running for good."""
    generate_demo_data(str(tmp_path / "catalog"), DemoDataSpec(customers=300, weeks=8))
    (tmp_path / "dagster").mkdir()
    defs = build_definitions(
        ModelFactoryResource(
            catalog_url=str(tmp_path / "catalog"), store_url=str(tmp_path / "store")
        )
    )
    with dg.instance_for_test(temp_dir=str(tmp_path / "dagster")) as instance:
        result = defs.resolve_job_def("weekly_training").execute_in_process(
            partition_key=TRAINED[0],
            instance=instance,
            asset_selection=[dg.AssetKey("dataset_manifests")],
        )
        assert result.success
        [record] = read_ledger(instance)
    assert record.train_run_id is not None and record.status == "incomplete"
    assert record.error == f"stages not run: {', '.join(STAGES[1:])}"
    assert [a.status for a in record.attempts] == ["succeeded"]
    validate(record.model_dump(mode="json"), "TrainingRunRecord")


@pytest.mark.parametrize("name", sorted(BAD_CONFIGS))
def test_an_invalid_config_is_refused_before_any_work_naming_the_field(world, name):
    _, field = BAD_CONFIGS[name]
    assert world["bad"][name].status == "failed"
    assert field in world["bad"][name].error
    assert world["store_unchanged"], "an invalid config wrote something"
    failed = [r for r in by_week(world["records"], TRAINED[1]) if r.train_run_id is None]
    assert any(field in r.error for r in failed), [r.error for r in failed]


def test_a_tampered_file_fails_the_pinned_train_run_and_then_the_intake(world):
    records = by_week(world["records"], TAMPERED)
    [pinned] = [r for r in records if r.train_run_id]
    assert pinned.status == "failed"
    assert "DigestMismatchError" in pinned.error and "sha256" in pinned.error
    assert [a.status for a in pinned.attempts] == ["succeeded", "failed"]
    assert pinned.attempts[1].failed_stage == "training_frame"
    assert [o.name for o in pinned.outputs] == ["intake_receipt.json"]
    [refused] = [r for r in records if r.train_run_id is None]
    assert (
        "DigestMismatchError" in refused.error
        and refused.attempts[0].failed_stage == "dataset_manifests"
    )


def test_ledger_command_filters_and_prints(world, monkeypatch):
    monkeypatch.setenv("DAGSTER_HOME", str(world["home"]))
    monkeypatch.setenv("MODEL_FACTORY_HOME", str(world["root"] / "home"))
    trid = world["summaries"][0].train_run_id
    one = CliRunner().invoke(main, ["ledger", "--train-run-id", trid, "--json"])
    assert one.exit_code == 0, one.output
    assert [json.loads(line)["train_run_id"] for line in one.stdout.splitlines()] == [trid]
    week = CliRunner().invoke(main, ["ledger", "--week", TAMPERED])
    assert week.exit_code == 0, week.output
    assert "failed" in week.stdout and "DigestMismatchError" in week.stdout
    assert TRAINED[0] not in week.stdout
    bad = CliRunner().invoke(main, ["ledger", "--week", "2026-03-10"])
    assert bad.exit_code == 2 and "Monday" in bad.output


def test_backtest_summary_lists_every_trained_week(world):
    rec = (
        world["instance"].fetch_materializations(dg.AssetKey("backtest_summary"), limit=10).records
    )
    assert len(rec) == 1  # refreshed once, by run_weeks
    meta = {k: getattr(v, "value", v) for k, v in rec[0].asset_materialization.metadata.items()}
    doc = json.loads(Path(meta["output_uri"]).read_text())
    validate(doc, "BacktestSummary")
    summary = BacktestSummary.model_validate(doc)
    assert [w.partition_key for w in summary.weeks] == TRAINED
    assert [w.bundle_id for w in summary.weeks] == [s.bundle_id for s in world["summaries"]]
    assert [w.gate_status for w in summary.weeks] == [s.gate for s in world["summaries"]]
    assert all(w.roc_auc and w.test_rows for w in summary.weeks)
    assert all(week in meta["weeks"] for week in TRAINED)
    assert meta["trained_weeks"] == 2 and "mean_roc_auc" in meta


def test_backtest_automation_requests_a_refresh_only_after_new_materializations(world):
    assert world["automation_before"].total_requested == 0
    after = world["automation_after"]
    assert after.total_requested == 1
    assert after.get_requested_partitions(dg.AssetKey("backtest_summary")) == {None}


@pytest.mark.parametrize(
    ("judged", "final", "status", "says"),
    [
        ("FAIL", "FAIL", "gate_failed", "gate FAIL: roc_auc_lower: 0.71 < 0.75"),
        ("FAIL", "PASS", "succeeded", None),
        ("PASS", "PASS", "succeeded", None),
    ],
)
def test_a_record_says_why_its_gate_failed_and_whether_it_was_overridden(
    judged, final, status, says
):
    """A gate-failed week had an empty error (the reasons only in the receipt), and an
    overridden FAIL read as a plain PASS in the ledger and `ledger --json` (found in review)."""
    from model_factory.ledger import StageMaterialization, _pinned_record

    trid, week = "mfr-" + "1" * 20, TRAINED[0]
    reasons = ["roc_auc_lower: 0.71 < 0.75"] if judged == "FAIL" else []
    gate = {"gate_status": final, "judged_status": judged, "reasons": reasons}
    mats = [
        StageMaterialization(
            1, "dataset_manifests", week, "r1", 0.0, {"config_hash": "a" * 64, "code_version": "c"}
        ),
        StageMaterialization(2, "gate_receipt", week, "r1", 0.0, gate),
        StageMaterialization(
            3,
            "model_bundle",
            week,
            "r1",
            0.0,
            {"gate_status": final, "bundle_id": "mfb-" + "2" * 20},
        ),
    ]
    record = _pinned_record(trid, mats, [], {})
    assert (record.status, record.gate_status, record.gate_judged_status) == (status, final, judged)
    assert record.error == says
    validate(json.loads(record.model_dump_json()), "TrainingRunRecord")


def test_the_registry_publishes_only_bundles_its_store_journaled(world, tmp_path):
    """A bundle id is a digest of the bundle's own content, so a bundle edited and re-digested
    (a FAIL receipt made to say PASS) verifies against itself; found in review, it was
    published. Given the store, the registry takes only that store's bundle of its train run,
    and only with the bytes the run ledger journaled."""
    from model_factory.contracts import PublishBundleRequest
    from model_factory.core.bundles import bundle_id_of

    store = tmp_path / "store"
    shutil.copytree(world["root"] / "store", store)
    [original] = sorted(store.glob("bundles/*/bundle.json"))[:1]
    registry = FileRegistry(str(tmp_path / "registry"), str(store))

    def publish(path: Path) -> tuple[str, str | None]:
        bundle_id = json.loads(path.read_text())["bundle_id"]
        response = registry.publish(
            PublishBundleRequest(bundle_uri=str(path), bundle_id=bundle_id, requested_by="test")
        )
        return response.status, response.reason

    # forged: the receipt says PASS, the id is recomputed, so the bundle is self-consistent
    raw = json.loads(original.read_text())
    receipt = raw["gate_receipt"]
    receipt["gate_status"] = receipt["judged_status"] = "PASS"
    receipt["reasons"] = []
    for criterion in receipt["criteria"]:
        criterion["passed"] = True
    raw["bundle_id"] = bundle_id_of(raw)
    outside = tmp_path / "elsewhere" / "bundle.json"
    outside.parent.mkdir()
    outside.write_text(json.dumps(raw))
    status, reason = publish(outside)
    assert status == "refused" and "only bundles the factory built there" in reason
    genuine = original.read_bytes()
    original.write_text(json.dumps(raw))  # the same forgery in the store's own place
    status, reason = publish(original)
    assert status == "refused" and "are not those its run journaled" in reason
    # a bundle no run journaled (its ledger entries gone) is refused too
    original.write_bytes(genuine)
    shutil.rmtree(store / "ledger")
    status, reason = publish(original)
    assert status == "refused" and "no entry for" in reason
    assert not list((tmp_path / "registry").glob("records/*.json"))  # nothing was recorded
    # the genuine bundle with its ledger: judged on its gate alone
    shutil.copytree(world["root"] / "store" / "ledger", store / "ledger")
    status, reason = publish(original)
    if json.loads(genuine)["gate_receipt"]["gate_status"] == "PASS":
        assert (status, reason) == ("published", None)
    else:
        assert status == "refused" and "only PASS bundles may be published" in reason


def test_a_run_failed_from_outside_says_how_its_process_died(tmp_path):
    """A daemon-launched run SIGKILLed mid-fit is failed by Dagster "from outside the execution
    context"; how its process ended is in an engine event, which the ledger now quotes
    (operations review); not the "exited" event every run's process ends with."""
    from model_factory.ledger import _failure

    job = build_definitions().resolve_job_def("weekly_training")
    with dg.instance_for_test(temp_dir=str(tmp_path)) as instance:
        killed = instance.create_run_for_job(job, tags={"dagster/partition": TRAINED[0]})
        instance.report_engine_event("Process for run exited (pid: 12)", killed)
        instance.report_engine_event(
            f"GRPC server: Subprocess for {killed.run_id} terminated unexpectedly with exit "
            "code -9",
            killed,
        )
        instance.report_run_failed(killed, "This run has been marked as failed from outside.")
        _, error = _failure(instance, killed.run_id)
        assert error == (
            "This run has been marked as failed from outside. (GRPC server: Subprocess for "
            f"{killed.run_id} terminated unexpectedly with exit code -9)"
        )
