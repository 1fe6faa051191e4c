"""Which upstream outputs a stage reads when several runs (other configs) touch one week, and
where Dagster records the frame's checks. A real instance, real demo data and real models."""

from __future__ import annotations

from pathlib import Path

import dagster as dg
import pytest

from model_factory.contracts import TrainingConfig
from model_factory.core.demo_data import DemoDataSpec, generate_demo_data
from model_factory.definitions import build_definitions
from model_factory.defs.assets import LEAKAGE_CHECK, SCHEMA_CHECK
from model_factory.defs.resources import ModelFactoryResource
from model_factory.ledger import read_ledger
from model_factory.runner import QUIET, TRAIN_JOB, _first_failure, run_week, summarize_week

pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("lineage")]
WEEK = "2026-03-02"


def _metadata(instance: dg.DagsterInstance, asset: str, run_id: str) -> dict:
    (record,) = [
        r
        for r in instance.get_records_for_run(
            run_id, of_type=dg.DagsterEventType.ASSET_MATERIALIZATION
        ).records
        if r.asset_key == dg.AssetKey(asset)
    ]
    return {k: getattr(v, "value", v) for k, v in record.asset_materialization.metadata.items()}


def _demo(tmp_path: Path) -> dg.Definitions:
    """Small demo data and the definitions over it (the Dagster home folder made too)."""
    generate_demo_data(
        str(tmp_path / "catalog"), DemoDataSpec(customers=600, terminals=1200, weeks=10)
    )
    (tmp_path / "dagster").mkdir()
    return build_definitions(
        ModelFactoryResource(
            catalog_url=str(tmp_path / "catalog"),
            store_url=str(tmp_path / "store"),
            registry_url=str(tmp_path / "registry"),
        )
    )


def _with_config(config: TrainingConfig) -> dict:
    """Run config launching the week with ``config`` (as the launchpad or `run --config`)."""
    dumped = config.model_dump(mode="json", exclude={"schema_version"})
    return {**QUIET, "ops": {"dataset_manifests": {"config": dumped}}}


def _deeper_trees() -> TrainingConfig:
    """Another config of the same family: another train run of the same week."""
    default = TrainingConfig()
    return default.model_copy(
        update={"hyperparams": default.hyperparams.model_copy(update={"max_depth": 3})}
    )


def test_a_stage_never_reads_another_configs_outputs_and_checks_are_per_week(tmp_path: Path):
    defs = _demo(tmp_path)
    job = defs.resolve_job_def(TRAIN_JOB)
    other_config = _with_config(_deeper_trees())

    def run(selection: list[str], run_config: dict | None = None) -> dg.ExecuteInProcessResult:
        return job.execute_in_process(
            partition_key=WEEK,
            instance=instance,
            run_config=run_config or QUIET,
            asset_selection=[dg.AssetKey(a) for a in selection],
            raise_on_error=False,
        )

    with dg.instance_for_test(temp_dir=str(tmp_path / "dagster")) as instance:
        first = run_week(instance, defs, WEEK)
        assert first.status == "succeeded"

        # the frame's checks are recorded for the week (not for no partition, leaving the
        # week's planned evaluation unresolved)
        for check in (LEAKAGE_CHECK, SCHEMA_CHECK):
            key = dg.AssetCheckKey(dg.AssetKey("training_frame"), check)
            history = instance.event_log_storage.get_asset_check_execution_history(key, limit=5)
            assert [(h.status.value, h.partition) for h in history] == [("SUCCEEDED", WEEK)]

        # another config pins its own intake and frame for the week; the first run's model is
        # still the week's latest model
        second = run(["dataset_manifests", "training_frame"], other_config)
        assert second.success
        second_run = _metadata(instance, "dataset_manifests", second.run_id)["train_run_id"]
        assert second_run != first.train_run_id

        # a run of one later stage reads its upstream's latest output and goes on as that
        # output's train run: the first one's model, so the first train run is evaluated again
        # (not the second's intake with the first's model, and not a failure because the
        # week's latest intake is the second's: found in the operations review)
        alone = run(["evaluation_report"])
        assert alone.success, _first_failure(alone)
        report = _metadata(instance, "evaluation_report", alone.run_id)
        assert report["train_run_id"] == first.train_run_id
        bundle_alone = run(["model_bundle"])  # e.g. after a failed publish, as the README says
        assert bundle_alone.success, _first_failure(bundle_alone)
        rebuilt = _metadata(instance, "model_bundle", bundle_alone.run_id)
        assert (rebuilt["train_run_id"], rebuilt["bundle_id"]) == (
            first.train_run_id,
            first.bundle_id,
        )

        # with its own model trained, the second train run goes through to its bundle
        rest = run(["model", "evaluation_report", "gate_receipt", "model_bundle"])
        assert rest.success, _first_failure(rest)
        bundle = _metadata(instance, "model_bundle", rest.run_id)
        assert bundle["train_run_id"] == second_run
        model = _metadata(instance, "model", rest.run_id)
        assert model["train_run_id"] == second_run
        report = _metadata(instance, "evaluation_report", rest.run_id)
        assert report["train_run_id"] == second_run

        # a run's summary is what that run made, not the week's latest
        assert summarize_week(instance, WEEK).train_run_id == second_run
        again = summarize_week(instance, WEEK, run_id=first.dagster_run_id)
        assert (again.train_run_id, again.bundle_id) == (first.train_run_id, first.bundle_id)


def training_job() -> dg.JobDefinition:
    """The job as a re-execution rebuilds it (``dg.reconstructable``): locations from the
    MODEL_FACTORY_* variables, as a deployed code location reads them."""
    return build_definitions().resolve_job_def(TRAIN_JOB)


def test_a_re_execution_keeps_the_train_run_of_the_run_it_re_executes(tmp_path, monkeypatch):
    """'Re-execute' in the UI: the new run materializes only later stages, and must go on with
    the intake its parent pinned, not with one another config pinned since."""
    _demo(tmp_path)  # the re-executed job reads its locations from the environment instead
    for name in ("catalog", "store", "registry"):
        monkeypatch.setenv(f"MODEL_FACTORY_{name.upper()}", str(tmp_path / name))
    with dg.instance_for_test(temp_dir=str(tmp_path / "dagster")) as instance:
        job = dg.reconstructable(training_job)
        first = dg.execute_job(job, instance, run_config=QUIET, tags={"dagster/partition": WEEK})
        assert first.success
        first_run = _metadata(instance, "model_bundle", first.run_id)["train_run_id"]
        second = training_job().execute_in_process(
            partition_key=WEEK,
            instance=instance,
            run_config=_with_config(_deeper_trees()),
            asset_selection=[dg.AssetKey(a) for a in ("dataset_manifests", "training_frame")],
        )
        second_run = _metadata(instance, "dataset_manifests", second.run_id)["train_run_id"]
        assert second_run != first_run

        again = dg.execute_job(
            job,
            instance,
            run_config=QUIET,
            tags={"dagster/partition": WEEK},  # the UI copies the parent's tags
            reexecution_options=dg.ReexecutionOptions(
                parent_run_id=first.run_id,
                step_selection=["evaluation_report", "gate_receipt", "model_bundle"],
            ),
        )
        assert again.success
        assert instance.get_run_by_id(again.run_id).parent_run_id == first.run_id
        assert _metadata(instance, "model_bundle", again.run_id)["train_run_id"] == first_run

        # a re-execution that fails before it materializes anything (its model is gone) is an
        # attempt of the train run it re-executes, in the ledger as in the stages
        Path(_metadata(instance, "model", first.run_id)["output_uri"]).unlink()
        broken = dg.execute_job(
            job,
            instance,
            run_config=QUIET,
            tags={"dagster/partition": WEEK},
            reexecution_options=dg.ReexecutionOptions(
                parent_run_id=again.run_id, step_selection=["evaluation_report"]
            ),
        )
        assert not broken.success
        records = read_ledger(instance, week=WEEK)
        (mine,) = [r for r in records if r.train_run_id == first_run]
        assert broken.run_id in [a.dagster_run_id for a in mine.attempts]
        assert not [r for r in records if r.train_run_id is None]


def test_the_stability_history_is_the_earlier_weeks_report_of_the_same_family(tmp_path):
    """A later report of another model family for an earlier week must not hide that week's
    report of this family from the stability criterion."""
    from model_factory.contracts import EvaluationReport, IntakeReceipt
    from model_factory.core.storage import ArtifactStore

    defs = _demo(tmp_path)
    job = defs.resolve_job_def(TRAIN_JOB)
    with dg.instance_for_test(temp_dir=str(tmp_path / "dagster")) as instance:
        assert run_week(instance, defs, WEEK).status == "succeeded"
        experiment = job.execute_in_process(
            partition_key=WEEK,
            instance=instance,
            run_config=_with_config(TrainingConfig(model_family="fraud_xgb_experiment")),
            asset_selection=[
                dg.AssetKey(a)
                for a in ("dataset_manifests", "training_frame", "model", "evaluation_report")
            ],
        )
        assert experiment.success
        assert _metadata(instance, "evaluation_report", experiment.run_id)["model_family"] == (
            "fraud_xgb_experiment"
        )

        next_week = job.execute_in_process(
            partition_key="2026-03-09",
            instance=instance,
            run_config=QUIET,
            asset_selection=[dg.AssetKey("dataset_manifests")],
        )
        receipt = ArtifactStore.get_document(
            _metadata(instance, "dataset_manifests", next_week.run_id)["output_uri"], IntakeReceipt
        )
        (earlier,) = [h for h in receipt.gate_history if h.partition_key == WEEK]
        report = ArtifactStore.get_document(earlier.evaluation_report_ref.uri, EvaluationReport)
        assert report.model_family == TrainingConfig().model_family
