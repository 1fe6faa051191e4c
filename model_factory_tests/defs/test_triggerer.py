"""A policy's allowed_triggerers against run tags anyone may set: the trigger a run claims must be
one the Dagster instance's own records confirm (found in the governance review: a
`dagster/schedule_name` tag added in the launchpad passed `schedule:*`)."""

from __future__ import annotations

import json
import threading
import time

import dagster as dg
import pytest
from dagster._core.definitions.run_request import InstigatorType
from dagster._core.execution.backfill import PartitionBackfill
from dagster._core.scheduler.instigation import TickData, TickStatus

from model_factory.core.demo_data import DemoDataSpec, generate_demo_data
from model_factory.definitions import build_definitions
from model_factory.defs import ledger
from model_factory.defs.ledger import triggered_by, unverified_trigger
from model_factory.defs.resources import ModelFactoryResource
from model_factory.ledger import read_ledger
from model_factory_tests.conftest import step_failure_messages

WEEK = "2026-02-23"
SCHEDULE = "weekly_training_schedule"


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    root = tmp_path_factory.mktemp("triggerer")
    generate_demo_data(str(root / "catalog"), DemoDataSpec(customers=300, weeks=8))
    policy = root / "policy.json"
    policy.write_text(json.dumps({"allowed_triggerers": ["schedule:*", "backfill:*"]}))
    defs = build_definitions(
        ModelFactoryResource(
            catalog_url=str(root / "catalog"),
            store_url=str(root / "store"),
            policy_path=str(policy),
        )
    )
    (root / "dagster").mkdir()
    with dg.instance_for_test(temp_dir=str(root / "dagster")) as instance:
        yield {"defs": defs, "instance": instance, "policy": str(policy)}


def _tick(
    instance: dg.DagsterInstance,
    name: str,
    status: TickStatus,
    run_ids: list[str] | None = None,
    age: float = 0.0,
) -> int:
    data = TickData(
        instigator_origin_id="origin",
        instigator_name=name,
        instigator_type=InstigatorType.SCHEDULE,
        status=status,
        timestamp=time.time() - age,
        run_ids=run_ids or [],
        selector_id="selector",
    )
    return instance.create_tick(data).tick_id


def _intake(world, tags: dict[str, str]) -> dg.ExecuteInProcessResult:
    return (
        world["defs"]
        .resolve_job_def("weekly_training")
        .execute_in_process(
            partition_key=WEEK,
            instance=world["instance"],
            asset_selection=[dg.AssetKey("dataset_manifests")],
            tags=tags,
            raise_on_error=False,
        )
    )


def _refusal(result: dg.ExecuteInProcessResult) -> str:
    return "\n".join(step_failure_messages(result))


def test_a_schedule_tag_alone_does_not_make_a_run_the_schedules(world):
    refused = _intake(world, {"dagster/schedule_name": SCHEDULE})
    assert not refused.success
    message = _refusal(refused)
    assert "PolicyViolationError" in message and "field 'allowed_triggerers'" in message
    assert f"no tick of schedule '{SCHEDULE}' launched it" in message
    assert world["policy"] in message
    [record] = [
        r for r in read_ledger(world["instance"]) if r.attempts[0].dagster_run_id == refused.run_id
    ]
    assert record.status == "failed" and "allowed_triggerers" in record.error


def test_a_run_of_a_tick_of_that_schedule_is_the_schedules(world):
    going = _tick(world["instance"], SCHEDULE, TickStatus.STARTED)
    ran = _intake(world, {"dagster/schedule_name": SCHEDULE, "dagster/tick": str(going)})
    assert ran.success
    # a tick of another schedule, or a finished tick that did not launch this run, is not
    other = _tick(world["instance"], "some_other_schedule", TickStatus.STARTED)
    done = _tick(world["instance"], SCHEDULE, TickStatus.SUCCESS)
    for tick in (other, done, 10**9):
        result = _intake(world, {"dagster/schedule_name": SCHEDULE, "dagster/tick": str(tick)})
        assert not result.success and "no tick of schedule" in _refusal(result), tick


def test_a_backfill_tag_must_name_a_backfill_of_the_instance(world, monkeypatch):
    monkeypatch.setattr(ledger, "_BACKFILL_RECORD_SECONDS", 2.0)
    started = time.monotonic()
    result = _intake(world, {"dagster/backfill": "madeup"})
    assert not result.success
    assert "the instance holds no backfill 'madeup'" in _refusal(result)
    assert time.monotonic() - started >= 2.0  # it waited for the record first


def test_a_backfill_recorded_after_its_first_run_started_confirms_it(world, monkeypatch):
    """`dagster job backfill` submits its runs, then records the backfill: a run that reaches
    intake first waits for the record instead of being refused."""
    monkeypatch.setattr(ledger, "_BACKFILL_RECORD_SECONDS", 60.0)
    instance = world["instance"]
    backfill = PartitionBackfill.from_asset_partitions(
        backfill_id="late0001",
        asset_graph=world["defs"].resolve_asset_graph(),
        partition_names=[WEEK],
        asset_selection=[dg.AssetKey("dataset_manifests")],
        backfill_timestamp=time.time(),
        tags={},
        dynamic_partitions_store=instance,
        all_partitions=False,
        title=None,
        description=None,
        run_config=None,
    )
    recorder = threading.Timer(1.5, instance.add_backfill, args=(backfill,))
    recorder.start()
    try:
        result = _intake(world, {"dagster/backfill": "late0001"})
    finally:
        recorder.join()
    assert result.success, _refusal(result)


def test_a_re_execution_of_a_schedules_run_is_the_schedules(world):
    """A retry or a re-execution copies its first run's tags, but its own id is in no tick:
    the first run is the one checked (found by the diff review: they were refused). Whoever
    launches a run may name its root run (GraphQL executionMetadata.rootRunId), so the root
    counts only for the same job, week, config and trigger (found by the second review)."""
    instance = world["instance"]
    job = world["defs"].resolve_job_def("weekly_training")
    week = {"dagster/partition": WEEK}
    first = instance.create_run_for_job(job, tags={"dagster/schedule_name": SCHEDULE, **week})
    tick = _tick(instance, SCHEDULE, TickStatus.SUCCESS, run_ids=[first.run_id])
    tags = {"dagster/schedule_name": SCHEDULE, "dagster/tick": str(tick), **week}
    instance.add_run_tags(first.run_id, tags)
    first = instance.get_run_by_id(first.run_id)
    assert unverified_trigger(instance, first) is None

    def rerun(**changes):
        kwargs = {"tags": tags, "root_run_id": first.run_id, "parent_run_id": first.run_id}
        return instance.create_run_for_job(job, **(kwargs | changes))

    assert unverified_trigger(instance, rerun()) is None
    # the same tags on a run that re-executes nothing
    copied = instance.create_run_for_job(job, tags=tags)
    assert "no tick of schedule" in unverified_trigger(instance, copied)
    # a genuine schedule run named as the root of other work
    other_week = rerun(tags={**tags, "dagster/partition": "2026-03-02"})
    assert "its week differ" in unverified_trigger(instance, other_week)
    other_config = rerun(run_config={"ops": {"dataset_manifests": {"config": {"notes": "x"}}}})
    assert "its config differ" in unverified_trigger(instance, other_config)
    # a root that no tick launched
    plain = instance.create_run_for_job(job, tags={"dagster/schedule_name": SCHEDULE, **week})
    forged = rerun(root_run_id=plain.run_id, parent_run_id=plain.run_id)
    assert "trigger" in unverified_trigger(instance, forged)


def test_a_re_execution_that_claims_no_trigger_is_judged_as_the_ui_run_it_is(world):
    """Dagster drops a finished backfill's tags from a re-execution of its run: the re-run
    claims nothing, so it is the UI's run, judged by the policy's list as one (the operations
    review: it was refused because its trigger differed from its first run's)."""
    instance = world["instance"]
    job = world["defs"].resolve_job_def("weekly_training")
    week = {"dagster/partition": WEEK}
    first = instance.create_run_for_job(job, tags={"dagster/backfill": "done0001", **week})
    rerun = instance.create_run_for_job(
        job, tags=week, root_run_id=first.run_id, parent_run_id=first.run_id
    )
    assert unverified_trigger(instance, rerun) is None
    assert triggered_by(rerun.tags) == "ui"  # what the policy's list then judges


def test_a_tick_left_started_by_a_dead_daemon_confirms_nothing(world):
    stale = _tick(world["instance"], SCHEDULE, TickStatus.STARTED, age=2 * 3600)
    result = _intake(world, {"dagster/schedule_name": SCHEDULE, "dagster/tick": str(stale)})
    assert not result.success and "no tick of schedule" in _refusal(result)
