"""Operations settings without a server: concurrency, default statuses, launchpad validation,
the backtest's pure helpers and the run record's contract rules."""

import shutil
import time
import xml.etree.ElementTree as ET
from pathlib import Path

import dagster as dg
import pytest
from pydantic import ValidationError

from model_factory.backtest import metric_spread, plot_svg, sparkline, spread_table, summarize
from model_factory.contracts import BacktestWeek, TrainingRunRecord
from model_factory.definitions import defs
from model_factory.defs.backtest import REFRESH_AFTER_NEW_WEEKS, backtest_summary
from model_factory.defs.config import TrainingConfig, to_contract
from model_factory.errors import ConfigError

ROOT = Path(__file__).resolve().parents[2]


def test_dagster_yaml_caps_runs_and_gives_the_training_pool_one_slot(tmp_path):
    shutil.copyfile(ROOT / "dagster.yaml", tmp_path / "dagster.yaml")
    instance = dg.DagsterInstance.from_config(str(tmp_path))
    try:
        config = instance.get_concurrency_config()
        assert config.run_queue_config.max_concurrent_runs == 2
        assert config.pool_config.default_pool_limit == 1
        assert type(instance.run_coordinator).__name__ == "QueuedRunCoordinator"
    finally:
        instance.dispose()
    model = defs().resolve_assets_def("model")
    assert model.op.pool == "training"


def test_sensors_and_schedule_run_by_default():
    d = defs()
    for name in ("publish_pass_bundles", "backtest_automation", "training_pool_watch"):
        assert d.resolve_sensor_def(name).default_status == dg.DefaultSensorStatus.RUNNING, name
    schedule = d.resolve_schedule_def("weekly_training_schedule")
    assert schedule.default_status == dg.DefaultScheduleStatus.RUNNING


def test_backtest_summary_reads_every_week_and_refreshes_itself():
    spec = backtest_summary.specs_by_key[dg.AssetKey("backtest_summary")]
    assert spec.partitions_def is None
    assert {d.asset_key.to_user_string() for d in spec.deps} == {
        "evaluation_report",
        "gate_receipt",
        "model_bundle",
    }
    assert all(isinstance(d.partition_mapping, dg.AllPartitionMapping) for d in spec.deps)
    assert spec.automation_condition == REFRESH_AFTER_NEW_WEEKS


@pytest.mark.parametrize(
    ("values", "field"),
    [
        ({"split_policy": {"train_days": -7}}, "split_policy.train_days"),
        ({"split_policy": {"label_maturity_days": -1}}, "split_policy.label_maturity_days"),
        ({"hyperparams": {"learning_rate": 0}}, "hyperparams.learning_rate"),
        ({"hyperparams": {"subsample": 1.5}}, "hyperparams.subsample"),
    ],
)
def test_launchpad_refuses_out_of_range_values_naming_the_field(values, field):
    """As a ConfigError from to_contract, not as pydantic's error when Dagster builds the
    Config (which failed the step with a raw ValidationError); the bounds are documented."""
    with pytest.raises(ConfigError) as refused:
        to_contract(TrainingConfig(**values))
    assert refused.value.field == field
    section, name = field.split(".")
    described = TrainingConfig.model_fields[section].annotation.model_fields[name].description
    assert ">" in described or "<" in described  # "(>= 1, <= 366)"
    family = TrainingConfig.model_fields["model_family"].description
    assert "matching ^[a-z][a-z0-9_]*$" in family  # a pattern is said too
    with pytest.raises(ConfigError) as refused:
        to_contract(TrainingConfig(model_family="Not A Family"))
    assert refused.value.field == "model_family"


def test_launchpad_refuses_cross_field_rules_as_a_config_error():
    with pytest.raises(ConfigError) as refused:
        to_contract(TrainingConfig(thresholds=[0.5, 1.5]))
    assert "thresholds" in str(refused.value)
    assert refused.value.field == "thresholds"  # the field it checks, not the whole config
    with pytest.raises(ConfigError):
        to_contract(TrainingConfig(event_features=[], feature_group_versions=[]))


def _week(key, roc, gate="PASS", brier=0.01):
    return BacktestWeek(
        partition_key=key,
        train_run_id=None,
        roc_auc=roc,
        pr_auc=roc and roc / 3,
        brier=brier,
        gate_status=gate,
    )


def test_spread_names_the_best_and_worst_week_per_metric_direction():
    weeks = [
        _week("2026-03-02", 0.90, brier=0.02),
        _week("2026-02-23", 0.80, "FAIL", brier=0.01),
        _week("2026-03-09", None, brier=0.03),
    ]
    summary = summarize(weeks)
    assert [w.partition_key for w in summary.weeks] == ["2026-02-23", "2026-03-02", "2026-03-09"]
    assert (summary.pass_weeks, summary.fail_weeks) == (2, 1)
    roc = metric_spread(summary.weeks, "roc_auc")
    assert (roc.weeks, roc.min, roc.max, roc.best_week, roc.worst_week) == (
        2,
        0.80,
        0.90,
        "2026-03-02",
        "2026-02-23",
    )
    assert roc.std == pytest.approx(0.05)
    brier = metric_spread(summary.weeks, "brier")  # lower is better
    assert (brier.best_week, brier.worst_week) == ("2026-02-23", "2026-03-09")
    assert "| roc_auc | 2 |" in spread_table(summary)


def test_sparkline_scales_between_extremes_and_marks_gaps():
    assert sparkline([0.0, None, 1.0, 0.5]) == "▁·█▅"
    assert sparkline([]) == ""


@pytest.mark.parametrize("n", [0, 1, 5])
def test_plot_is_one_well_formed_svg_with_a_marker_per_verdict(n):
    weeks = [
        _week(
            f"2026-03-{2 + 7 * i:02d}" if i < 4 else "2026-03-30",
            0.8 + i / 100,
            "PASS" if i % 2 else "FAIL",
        )
        for i in range(n)
    ]
    root = ET.fromstring(plot_svg(summarize(weeks)))
    assert root.tag.endswith("svg")
    titles = [t.text for t in root.iter("{http://www.w3.org/2000/svg}title")]
    assert len(titles) == n


def test_a_finished_record_needs_its_identity_but_a_failed_attempt_may_lack_it():
    base = dict(
        status="failed",
        partition_key="2026-03-02",
        model_family="fraud_xgb",
        config_hash=None,
        code_version=None,
        input_dataset_manifests=[],
        outputs=[],
        error="refused",
    )
    TrainingRunRecord(train_run_id=None, **base)
    with pytest.raises(ValidationError, match="needs train_run_id"):
        TrainingRunRecord(train_run_id=None, **{**base, "status": "succeeded"})


def _definitions(tmp_path: Path) -> dg.Definitions:
    """The project's definitions on a catalog, store and registry under ``tmp_path``."""
    from model_factory.definitions import build_definitions
    from model_factory.defs.resources import ModelFactoryResource

    return build_definitions(
        ModelFactoryResource(
            catalog_url=str(tmp_path / "catalog"),
            store_url=str(tmp_path / "store"),
            registry_url=str(tmp_path / "registry"),
        )
    )


def _bundle_materialized(
    instance: dg.DagsterInstance, bundle_id: str, folder: Path, gate: str = "PASS"
) -> int:
    """A model_bundle materialization of week 2026-03-02 (its bundle.json under ``folder``),
    as the stage records it; returns its storage id."""
    instance.report_runless_asset_event(
        dg.AssetMaterialization(
            "model_bundle",
            partition="2026-03-02",
            metadata={
                "gate_status": gate,
                "bundle_id": bundle_id,
                "train_run_id": "mfr-" + "1" * 20,
                "output_uri": str(folder / bundle_id / "bundle.json"),
            },
        )
    )
    (record,) = instance.fetch_materializations(dg.AssetKey("model_bundle"), limit=1).records
    return record.storage_id


def test_a_bundle_whose_publish_failed_is_retried_when_materialized_again(tmp_path):
    """The daemon launches a run key once, even after the run failed: a bundle keyed by its id
    alone would stay unpublished after one registry outage, however often its week re-ran."""
    from model_factory.defs.publishing import SENSOR_NAME, publish_requests
    from model_factory.errors import ModelFactoryError
    from model_factory.runner import tick_publish_sensor

    factory = _definitions(tmp_path)
    bundle = "mfb-" + "0" * 20

    def materialize(bundle_id: str) -> int:
        # nothing there: the publish run fails, as in a registry outage
        return _bundle_materialized(instance, bundle_id, tmp_path / "store" / "bundles")

    (tmp_path / "dagster").mkdir()
    with dg.instance_for_test(temp_dir=str(tmp_path / "dagster")) as instance:
        first = materialize(bundle)
        requests, cursor = publish_requests(instance, None, settle_seconds=0)
        assert [r.run_key for r in requests] == [bundle]
        with pytest.raises(ModelFactoryError):
            tick_publish_sensor(instance, factory)  # the publish run fails under key = bundle id
        (failed,) = instance.get_runs(
            filters=dg.RunsFilter(tags={"dagster/sensor_name": SENSOR_NAME})
        )
        assert failed.status == dg.DagsterRunStatus.FAILURE
        assert failed.tags["dagster/run_key"] == bundle
        # read again while the cursor settles, the same materialization keeps its failed run's
        # key, so the daemon does not silently launch a second publish of it
        requests, _ = publish_requests(instance, None)
        assert [r.run_key for r in requests] == [bundle]

        # the week runs again: the same bundle, a new materialization, a key of its own
        again = materialize(bundle)
        requests, _ = publish_requests(instance, cursor, settle_seconds=0)
        assert [r.run_key for r in requests] == [f"{bundle}:{again}"] != [f"{bundle}:{first}"]
        assert requests[0].tags["model_factory/bundle_id"] == bundle
        # a bundle never tried keeps its id as its key
        other = "mfb-" + "2" * 20
        materialize(other)
        requests, _ = publish_requests(instance, again, settle_seconds=0)
        assert [r.run_key for r in requests] == [other]


def test_the_publish_cursor_waits_for_late_commits_and_reads_a_bounded_batch(tmp_path):
    """On PostgreSQL a materialization with a smaller storage id can become visible after one
    with a larger id: the cursor stays behind the last minute's records (read again next tick,
    the run key deduplicates them), and one tick reads a bounded number of records."""
    from model_factory.defs.publishing import SETTLE_SECONDS, publish_requests

    def materialize(bundle_id: str) -> int:
        return _bundle_materialized(instance, bundle_id, tmp_path)

    (tmp_path / "dagster").mkdir()
    with dg.instance_for_test(temp_dir=str(tmp_path / "dagster")) as instance:
        bundles = [f"mfb-{i:020d}" for i in range(3)]
        ids = [materialize(b) for b in bundles]
        # all three just written: requested now, but the cursor does not move past them
        requests, cursor = publish_requests(instance, None)
        assert [r.run_key for r in requests] == bundles and cursor is None
        # a minute on, they are settled
        later = time.time() + SETTLE_SECONDS + 1
        requests, cursor = publish_requests(instance, None, now=later)
        assert [r.run_key for r in requests] == bundles and cursor == ids[-1]
        # the cursor stops at the first unsettled record, even when later ones look settled
        (first,) = instance.fetch_materializations(
            dg.AssetRecordsFilter(asset_key=dg.AssetKey("model_bundle"), storage_ids=[ids[0]]),
            limit=1,
        ).records
        requests, cursor = publish_requests(instance, None, now=first.timestamp + SETTLE_SECONDS)
        assert cursor is None
        # bounded: two records a tick, resumed where the last tick stopped
        requests, cursor = publish_requests(instance, None, now=later, max_records=2)
        assert [r.run_key for r in requests] == bundles[:2] and cursor == ids[1]
        requests, cursor = publish_requests(instance, cursor, now=later, max_records=2)
        assert [r.run_key for r in requests] == bundles[2:] and cursor == ids[2]


def _report_materialized(instance, week: str, uri: str | None, **metadata) -> None:
    """An evaluation_report materialization as the ledger records one: ``uri`` None for a run
    that stored no report."""
    stored = {
        "output_name": "evaluation_report.json",
        "output_uri": uri,
        "output_sha256": "0" * 64,
        "output_size_bytes": 1,
        "output_media_type": "application/json",
    }
    instance.report_runless_asset_event(
        dg.AssetMaterialization(
            "evaluation_report",
            partition=week,
            metadata={**(stored if uri is not None else {}), **metadata},
        )
    )


def test_each_earlier_week_keeps_its_newest_report_of_the_family_however_busy_later_weeks_are(
    tmp_path,
):
    """The report page's history and the stability criterion look a week up on its own: many
    runs of a later week (or another family's reports) never push an earlier week out."""
    from model_factory.defs.ledger import family_report_candidates

    def report(week: str, family: str | None, tag: str, stored: bool = True) -> None:
        uri = f"/reports/{week}/{tag}.json" if stored else None
        _report_materialized(instance, week, uri, **({"model_family": family} if family else {}))

    (tmp_path / "dagster").mkdir()
    with dg.instance_for_test(temp_dir=str(tmp_path / "dagster")) as instance:
        report("2026-02-23", None, "before-families")  # recorded before the family was known
        report("2026-03-02", "fraud", "old")
        report("2026-03-02", "fraud", "new")
        report("2026-03-02", "experiment", "other-family")  # newer, another family
        report("2026-03-02", "fraud", "failed-to-store", stored=False)
        for i in range(30):  # a busy later week
            report("2026-03-09", "fraud", f"rerun-{i}")
        found = family_report_candidates(instance, "2026-03-16", "fraud", 3)
        assert [(week, refs[0].uri) for week, refs in found] == [
            ("2026-02-23", "/reports/2026-02-23/before-families.json"),
            ("2026-03-02", "/reports/2026-03-02/new.json"),
            ("2026-03-09", "/reports/2026-03-09/rerun-29.json"),
        ]
        # only the weeks asked for, and never the week itself or a later one
        assert [w for w, _ in family_report_candidates(instance, "2026-03-09", "fraud", 1)] == [
            "2026-03-02"
        ]


def test_the_stability_history_is_this_configs_not_the_newest_experiments(tmp_path):
    """An experiment (another config of the family) run on an earlier week since must not
    change what a re-run of this week pins, and so its train run id (found in review)."""
    from model_factory.core.identity import code_version
    from model_factory.defs.ledger import family_report_candidates

    def report(week: str, config: str, tag: str, code: str) -> None:
        _report_materialized(
            instance,
            week,
            f"/reports/{tag}.json",
            model_family="fraud",
            config_hash=config,
            code_version=code,
        )

    (tmp_path / "dagster").mkdir()
    with dg.instance_for_test(temp_dir=str(tmp_path / "dagster")) as instance:
        now = code_version()
        report("2026-03-02", "prod", "prod", now)
        report("2026-03-02", "experiment", "experiment", now)  # newer, another config
        report("2026-02-23", "prod", "prod-now", now)
        report("2026-02-23", "prod", "prod-older-code", "0.0.0+older")  # newer, older code
        report("2026-02-16", "prod", "only-older-code", "0.0.0+older")

        def pinned(config):
            found = family_report_candidates(instance, "2026-03-09", "fraud", 3, config_hash=config)
            return [(week, refs[0].uri) for week, refs in found]

        assert pinned("prod") == [
            ("2026-02-16", "/reports/only-older-code.json"),  # no report of this code: older code's
            ("2026-02-23", "/reports/prod-now.json"),  # this code's before a newer older code's
            ("2026-03-02", "/reports/prod.json"),  # the newer experiment is not this config's
        ]
        assert pinned("experiment") == [
            ("2026-02-16", "/reports/only-older-code.json"),  # no report of this config: the
            ("2026-02-23", "/reports/prod-now.json"),  # week's first, which no later run changes
            ("2026-03-02", "/reports/experiment.json"),
        ]
        # a config edited in one field (notes) is judged against the weeks before it too, and a
        # later run of any config on those weeks does not change what it pins
        before = pinned("edited")
        report("2026-03-02", "other", "later-other", now)
        assert (
            pinned("edited")
            == before
            == [
                ("2026-02-16", "/reports/only-older-code.json"),
                ("2026-02-23", "/reports/prod-now.json"),
                ("2026-03-02", "/reports/prod.json"),
            ]
        )


def test_the_stability_history_pages_past_other_runs_and_reports_never_stored(
    tmp_path, monkeypatch
):
    """However many other runs a week had, this config's report is found, and the fallback is
    the family's first *stored* report (found in the second diff review)."""
    from model_factory.defs import ledger

    monkeypatch.setattr(ledger, "_SEARCHED", 2)  # pages of two records
    (tmp_path / "dagster").mkdir()
    with dg.instance_for_test(temp_dir=str(tmp_path / "dagster")) as instance:
        week = "2026-03-02"
        _report_materialized(instance, week, "/r/other-family.json", model_family="other")
        _report_materialized(instance, week, None, model_family="fraud")  # failed to store
        _report_materialized(instance, week, "/r/first.json", model_family="fraud", config_hash="a")
        _report_materialized(instance, week, "/r/mine.json", model_family="fraud", config_hash="me")
        for i in range(5):
            _report_materialized(
                instance, week, f"/r/later-{i}.json", model_family="fraud", config_hash="b"
            )

        def pinned(config):
            found = ledger.family_report_candidates(
                instance, "2026-03-09", "fraud", 1, config_hash=config
            )
            return [refs[0].uri for _, refs in found]

        assert pinned("me") == ["/r/mine.json"]  # three pages back
        assert pinned("new") == ["/r/first.json"]  # the family's first stored report


def test_the_cli_tick_reads_on_past_a_full_batch_to_this_weeks_bundle(tmp_path, monkeypatch):
    """The CLI ticks from the start of the history: with more records than one tick reads, it
    ticks again until the cursor stops, so the bundle just trained is reached."""
    from model_factory.defs import publishing
    from model_factory.errors import ModelFactoryError
    from model_factory.runner import tick_publish_sensor

    monkeypatch.setattr(publishing, "RECORDS_PER_TICK", 2)
    monkeypatch.setattr(publishing, "SETTLE_SECONDS", 0)
    factory = _definitions(tmp_path)
    (tmp_path / "dagster").mkdir()
    with dg.instance_for_test(temp_dir=str(tmp_path / "dagster")) as instance:
        for i, gate in enumerate(["FAIL"] * 4 + ["PASS"]):  # four old weeks, then this week's
            # nothing there: the publish run fails, which shows it was reached
            _bundle_materialized(instance, f"mfb-{i:020d}", tmp_path / "nothing", gate)
        with pytest.raises(ModelFactoryError, match=f"publishing mfb-{4:020d} failed"):
            tick_publish_sensor(instance, factory)


def test_a_weeks_candidate_reports_come_newest_first_and_are_bounded(tmp_path):
    from model_factory.defs.ledger import family_report_candidates

    (tmp_path / "dagster").mkdir()
    with dg.instance_for_test(temp_dir=str(tmp_path / "dagster")) as instance:
        for tag in ("a", "b", "c", "d"):
            _report_materialized(
                instance, "2026-03-02", f"/reports/{tag}.json", model_family="fraud"
            )
        [(week, refs)] = family_report_candidates(instance, "2026-03-09", "fraud", 1, per_week=3)
        assert week == "2026-03-02"
        assert [r.uri for r in refs] == ["/reports/d.json", "/reports/c.json", "/reports/b.json"]


def test_an_upstream_update_landing_with_a_refresh_refreshes_the_backtest_again(tmp_path):
    """Two runs of one week: the second failing ends 'in progress' for the week, the refresh it
    let through lands, and in the same interval the first run's bundle lands. The summary must
    refresh again (since_last_handled alone loses that update), and then settle."""

    defs = _definitions(tmp_path)
    (tmp_path / "dagster").mkdir()
    with dg.instance_for_test(temp_dir=str(tmp_path / "dagster")) as instance:

        def tick(cursor):
            return dg.evaluate_automation_conditions(defs=defs, instance=instance, cursor=cursor)

        def materialize(key: str, week: str | None = None) -> None:
            instance.report_runless_asset_event(dg.AssetMaterialization(key, partition=week))

        first = tick(None)
        materialize("evaluation_report", "2026-03-02")
        requested = tick(first.cursor)
        assert requested.total_requested == 1
        materialize("backtest_summary")  # the refresh lands ...
        materialize("model_bundle", "2026-03-09")  # ... and so does another week's bundle
        again = tick(requested.cursor)
        assert again.get_requested_partitions(dg.AssetKey("backtest_summary")) == {None}
        assert tick(again.cursor).total_requested == 0  # nothing new since: no more refreshes


def test_a_step_stranded_in_the_pool_queue_gets_the_free_slot(tmp_path):
    """Dagster's race: a step queued just after a slot was freed and handed to the queue gets
    nobody's slot. The runner's watch hands it the free slot; with the slot taken, it waits."""
    from model_factory.defs.pools import release_stranded_steps

    (tmp_path / "dagster").mkdir()
    with dg.instance_for_test(temp_dir=str(tmp_path / "dagster")) as instance:
        storage = instance.event_log_storage
        storage.set_concurrency_slots("training", 1)
        # the stranded state: a free slot, and a step queued without being assigned it
        storage.add_pending_step("training", "run-a", "model", should_assign=False)
        assert not storage.check_concurrency_claim("training", "run-a", "model").is_assigned
        assert release_stranded_steps(instance) == 1
        assert storage.claim_concurrency_slot("training", "run-a", "model").is_claimed
        # the slot is taken now: a second run's step stays queued, and nothing is released
        storage.add_pending_step("training", "run-b", "model", should_assign=False)
        assert release_stranded_steps(instance) == 0
        assert not storage.check_concurrency_claim("training", "run-b", "model").is_assigned
        # once it is freed, Dagster itself hands it on, as usual
        storage.free_concurrency_slot_for_step("run-a", "model")
        assert storage.check_concurrency_claim("training", "run-b", "model").is_assigned


def test_the_pool_watch_sensor_releases_a_stranded_step_of_a_daemon_run(tmp_path):
    """Runs the daemon launches (UI, backfill, schedule) are not wrapped by the CLI's watch: the
    project's sensor, evaluated as the daemon does, hands the stranded step the free slot."""
    from model_factory.defs.pools import SENSOR_NAME

    sensor = _definitions(tmp_path).resolve_sensor_def(SENSOR_NAME)
    (tmp_path / "dagster").mkdir()
    with dg.instance_for_test(temp_dir=str(tmp_path / "dagster")) as instance:
        storage = instance.event_log_storage
        storage.set_concurrency_slots("training", 1)
        idle = sensor.evaluate_tick(dg.build_sensor_context(instance=instance))
        assert not idle.run_requests and "no step waits" in idle.skip_message
        storage.add_pending_step("training", "run-a", "model", should_assign=False)
        tick = sensor.evaluate_tick(dg.build_sensor_context(instance=instance))
        assert not tick.run_requests and "stranded" in tick.skip_message
        assert storage.claim_concurrency_slot("training", "run-a", "model").is_claimed
        # the slot held, a waiting step is not stranded: the sensor leaves it queued
        storage.add_pending_step("training", "run-b", "model", should_assign=False)
        held = sensor.evaluate_tick(dg.build_sensor_context(instance=instance))
        assert not storage.check_concurrency_claim("training", "run-b", "model").is_assigned
        # and says so, naming the waiting step and the run that holds the slot (it said "no
        # step waits" while a step waited behind a dead run's slot: operations review)
        assert held.skip_message == "training: run-b model waiting; its slot(s) held by run-a model"


def test_the_backtest_reads_a_one_class_week_of_an_older_ledger_as_unmeasured(tmp_path):
    """Reports recorded before unmeasured ranking metrics were left out carry 0 for a test
    week of one class; the backtest counted it as the worst week (found in the diff review)."""
    from model_factory.defs.backtest import backtest_weeks

    (tmp_path / "dagster").mkdir()
    with dg.instance_for_test(temp_dir=str(tmp_path / "dagster")) as instance:
        _report_materialized(
            instance,
            "2026-03-02",
            "/r/a.json",
            roc_auc=0.91,
            pr_auc=0.3,
            test_rows=900,
            test_positives=30,
        )
        _report_materialized(
            instance,
            "2026-03-09",
            "/r/b.json",
            roc_auc=0.0,
            pr_auc=0.0,
            test_rows=900,
            test_positives=0,
        )
        weeks = {w.partition_key: w for w in backtest_weeks(instance)}
    assert (weeks["2026-03-02"].roc_auc, weeks["2026-03-02"].pr_auc) == (0.91, 0.3)
    assert (weeks["2026-03-09"].roc_auc, weeks["2026-03-09"].pr_auc) == (None, None)


def test_the_backtest_compares_one_family_under_one_config_week_after_week(tmp_path):
    """Found in review: one run of another family (or an experiment with another config) on a
    week replaced that week's row and moved the spread. The line reporting the most weeks is
    the one summarized; the others are counted, not mixed in."""
    from model_factory.defs.backtest import backtest_line

    def report(week: str, family: str, config: str, roc: float) -> None:
        _report_materialized(
            instance,
            week,
            f"/r/{family}-{config}-{week}.json",
            model_family=family,
            config_hash=config,
            roc_auc=roc,
            test_rows=900,
            test_positives=30,
        )

    (tmp_path / "dagster").mkdir()
    with dg.instance_for_test(temp_dir=str(tmp_path / "dagster")) as instance:
        for week, roc in (("2026-03-02", 0.90), ("2026-03-09", 0.91), ("2026-03-16", 0.92)):
            report(week, "fraud_xgb", "c" * 64, roc)
        report("2026-03-09", "byod_xgb", "d" * 64, 0.70)  # later, another family
        report("2026-03-16", "fraud_xgb", "e" * 64, 0.60)  # later, an experiment's config
        line = backtest_line(instance)
        # one week of the main line again, later: its newest report of that line counts
        report("2026-03-02", "fraud_xgb", "c" * 64, 0.95)
        again = backtest_line(instance)
    assert [(w.partition_key, w.roc_auc) for w in line.weeks] == [
        ("2026-03-02", 0.90),
        ("2026-03-09", 0.91),
        ("2026-03-16", 0.92),
    ]
    assert (line.model_family, line.config_hash, line.other_reports) == ("fraud_xgb", "c" * 64, 2)
    assert [w.roc_auc for w in again.weeks] == [0.95, 0.91, 0.92]


def test_a_publish_request_carries_the_ledger_entry_the_bundle_run_recorded(tmp_path):
    """The registry checks the store's ledger entry against the one Dagster recorded (outside
    the store): the sensor passes it from the bundle's materialization."""
    from model_factory.defs.publishing import publish_requests

    (tmp_path / "dagster").mkdir()
    with dg.instance_for_test(temp_dir=str(tmp_path / "dagster")) as instance:
        for bundle_id, pinned in (("mfb-" + "3" * 20, True), ("mfb-" + "4" * 20, False)):
            instance.report_runless_asset_event(
                dg.AssetMaterialization(
                    "model_bundle",
                    partition="2026-03-02",
                    metadata={
                        "gate_status": "PASS",
                        "bundle_id": bundle_id,
                        "train_run_id": "mfr-" + "1" * 20,
                        "output_uri": f"/store/bundles/{bundle_id}/bundle.json",
                        # a materialization from before the ledger names no entry
                        **(
                            {"ledger_sequence": 7, "ledger_entry_sha256": "a" * 64}
                            if pinned
                            else {}
                        ),
                    },
                )
            )
        requests, _ = publish_requests(instance, None, settle_seconds=0)
    # queued ahead of a backfill's training runs (operations review)
    assert {r.tags["dagster/priority"] for r in requests} == {"1"}
    configs = [r.run_config["ops"]["publish_to_registry"]["config"] for r in requests]
    assert (configs[0]["ledger_sequence"], configs[0]["ledger_entry_sha256"]) == (7, "a" * 64)
    assert "ledger_sequence" not in configs[1]
