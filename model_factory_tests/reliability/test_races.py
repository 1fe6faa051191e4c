"""Races (ISSUE 7, item 2): many processes publishing one bundle, two runs of one week at once,
the publish sensor ticking while a backfill writes, and different contents claiming one id.

Every contender is a real process (spawned interpreters released together by a barrier, or
`model-factory run` subprocesses) on real files and a real Dagster instance (SQLite).
"""

from __future__ import annotations

import json
import multiprocessing
import subprocess
import sys
import time
from pathlib import Path

import dagster as dg
import pytest

from model_factory.contracts import (
    ModelBundle,
    PublishBundleRequest,
    RegistryRecord,
    TrainingConfig,
)
from model_factory.core.bundles import bundle_id_of, load_bundle, write_bundle
from model_factory.core.canonical import canonical_json
from model_factory.core.registry import FileRegistry
from model_factory.core.storage import ArtifactStore
from model_factory.definitions import build_definitions
from model_factory.defs.publishing import PUBLISH_JOB, SENSOR_NAME
from model_factory.defs.resources import ModelFactoryResource
from model_factory.errors import ImmutabilityError
from model_factory.runner import tick_publish_sensor
from model_factory_tests.reliability.conftest import (
    LENIENT_CONFIG,
    WEEK,
    Home,
    integrity_problems,
    partial_files,
    reference_then_fresh,
    week_result,
)

pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("reliability")]

PUBLISHERS = 8
CLAIMANTS = 8
BACKFILL_WEEKS = ("2026-02-23", "2026-03-02", "2026-03-09")
FAMILY = "fraud_xgb"


def _race(target, args_list: list[tuple]) -> list:
    """Start one spawned process per args, release them together, return their results in order."""
    ctx = multiprocessing.get_context("spawn")
    barrier = ctx.Barrier(len(args_list))
    results = ctx.Queue()
    procs = [
        ctx.Process(target=_contender, args=(target, i, barrier, results, args))
        for i, args in enumerate(args_list)
    ]
    for p in procs:
        p.start()
    out = dict(results.get(timeout=300) for _ in procs)
    for p in procs:
        p.join(timeout=60)
        assert p.exitcode == 0, p.exitcode
    return [out[i] for i in range(len(args_list))]


def _contender(target, index, barrier, results, args) -> None:
    barrier.wait(timeout=240)  # everyone imported and ready: go at once
    try:
        results.put((index, target(*args)))
    except Exception as exc:  # the outcome under test, reported to the parent
        results.put((index, f"{type(exc).__name__}: {exc}"))


def _publish(registry_url: str, bundle_uri: str, bundle_id: str) -> tuple[str, str | None]:
    response = FileRegistry(registry_url).publish(
        PublishBundleRequest(bundle_uri=bundle_uri, bundle_id=bundle_id, requested_by="race")
    )
    return response.status, response.reason


def _write_bundle(store_url: str, raw: dict) -> bool:
    return write_bundle(ArtifactStore(store_url), ModelBundle.model_validate(raw))[1]


def record_files(registry: Path) -> list[str]:
    folder = registry / "records"
    return (
        sorted(p.name for p in folder.iterdir() if not p.name.startswith("."))
        if folder.exists()
        else []
    )


# ---------------------------------------------------------------------- one bundle, N publishers


def test_n_processes_publishing_one_bundle_leave_exactly_one_record(reference_run, tmp_path):
    registry = tmp_path / "registry"
    bundle_id = reference_run.result["bundle_id"]
    outcomes = _race(_publish, [(str(registry), reference_run.bundle_uri, bundle_id)] * PUBLISHERS)
    statuses = sorted(status for status, _ in outcomes)
    assert statuses == ["already_published"] * (PUBLISHERS - 1) + ["published"], outcomes
    assert record_files(registry) == [f"{bundle_id}.json"]
    history = FileRegistry(str(registry)).history(FAMILY)
    assert [(c.sequence, c.bundle_id) for c in history] == [(1, bundle_id)]
    assert partial_files(registry) == []  # the losers cleaned up their temporary files
    print(f"\nrace: {PUBLISHERS} processes published {bundle_id}: 1 record, 1 champion change")


# ------------------------------------------------------------------- two runs of one week at once


def test_two_runs_of_the_same_week_at_once_give_one_bundle_and_one_record(
    reliability_catalog, tmp_path
):
    home, ref = reference_then_fresh(tmp_path / "home", reliability_catalog)
    procs = [
        subprocess.Popen(
            home.run_args(),
            env=home.env(),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(2)
    ]
    done = []
    for p in procs:
        out, err = p.communicate(timeout=600)
        done.append(subprocess.CompletedProcess(p.args, p.returncode, out, err))
    succeeded = [week_result(d) for d in done if d.returncode == 0]
    # Either both succeed or one refuses cleanly: an exit status of 1 with our error, no crash.
    for d in done:
        assert d.returncode in (0, 1), (d.returncode, d.stderr[-3000:])
        if d.returncode == 1:
            assert "FAILED" in d.stdout, (d.stdout, d.stderr[-3000:])
    assert succeeded, [d.stderr[-2000:] for d in done]
    for result in succeeded:
        assert (result["train_run_id"], result["bundle_id"]) == (
            ref["train_run_id"],
            ref["bundle_id"],
        )
    assert [b.name for b in (home.store / "bundles").iterdir()] == [ref["train_run_id"]]
    assert record_files(home.registry) == [f"{ref['bundle_id']}.json"]
    history = FileRegistry(str(home.registry)).history(FAMILY)
    assert [c.bundle_id for c in history] == [ref["bundle_id"]]
    assert integrity_problems(home) == []
    print(
        f"\nrace: 2 runs of {WEEK} at once: {len(succeeded)} succeeded, "
        f"{2 - len(succeeded)} refused; 1 bundle, 1 record"
    )


# ------------------------------------------------------------ the sensor ticking during a backfill

WRITER = """
import json, sys, time
from pathlib import Path
import dagster as dg
from model_factory.contracts import TrainingConfig
from model_factory.core.settings import Settings
from model_factory.definitions import defs
from model_factory.runner import run_week

signals, config = Path(sys.argv[1]), json.loads(sys.argv[2])
run_config = {"ops": {"dataset_manifests": {"config": TrainingConfig.model_validate(config)
              .model_dump(mode="json", exclude={"schema_version"})}}}
Settings.from_env().ensure_dagster_home()
with dg.DagsterInstance.get() as instance:
    for i, week in enumerate(sys.argv[3:]):
        if i == 1:  # the first week is materialized: wait until the sensor has seen it
            (signals / "first-week-done").touch()
            while not (signals / "go").exists():
                time.sleep(0.05)
        s = run_week(instance, defs(), week, run_config, tags={"dagster/backfill": "racebackfill"})
        print(json.dumps(s.as_json()), flush=True)
"""


@pytest.fixture(scope="module")
def backfill_race(reliability_catalog, tmp_path_factory):
    """A writer process runs three weeks (one run per week, tagged as a backfill) while this
    process ticks the publish sensor and executes its publish runs on the same instance."""
    home = Home(tmp_path_factory.mktemp("backfill_race"), reliability_catalog)
    signals = home.root / "signals"
    signals.mkdir(parents=True)
    writer = subprocess.Popen(
        [sys.executable, "-c", WRITER, str(signals), json.dumps(LENIENT_CONFIG), *BACKFILL_WEEKS],
        env=home.env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        while not (signals / "first-week-done").exists():
            assert writer.poll() is None, writer.communicate()
            time.sleep(0.05)
        defs = build_definitions(
            ModelFactoryResource(
                catalog_url=str(home.catalog),
                store_url=str(home.store),
                registry_url=str(home.registry),
            )
        )
        with dg.DagsterInstance.from_config(str(home.dagster)) as instance:
            # Week 1 is materialized: publish it first, so week 2's intake pins it as champion
            # (as in production, where the sensor runs every 30 s).
            published, cursor = tick_publish_sensor(instance, defs, None)
            assert len(published) == 1, published
            (signals / "go").touch()
            ticks_while_writing = 0
            while writer.poll() is None:
                done, cursor = tick_publish_sensor(instance, defs, cursor)
                published += done
                ticks_while_writing += 1
                time.sleep(0.1)
            out, err = writer.communicate()
            done, cursor = tick_publish_sensor(instance, defs, cursor)  # the last tick after it
            published += done
            # A sensor started afresh (no cursor) requests every PASS bundle again; each already
            # has a successful publish run under its run key, so none is published twice.
            again, _ = tick_publish_sensor(instance, defs, None)
            yield {
                "home": home,
                "instance": instance,
                "writer": (writer.returncode, out, err),
                "published": published,
                "again": again,
                "ticks_while_writing": ticks_while_writing,
            }
    finally:
        if writer.poll() is None:
            writer.kill()
            writer.communicate()


def _pass_bundles(instance: dg.DagsterInstance) -> dict[str, str]:
    out = {}
    for rec in instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=dg.AssetKey("model_bundle")), limit=1000
    ).records:
        meta = {k: getattr(v, "value", v) for k, v in rec.asset_materialization.metadata.items()}
        if meta["gate_status"] == "PASS":
            out[meta["bundle_id"]] = rec.asset_materialization.partition
    return out


def test_sensor_ticking_during_a_backfill_publishes_every_pass_bundle_once(backfill_race):
    code, out, err = backfill_race["writer"]
    assert code == 0, err[-3000:]
    weeks = [json.loads(line) for line in out.splitlines() if line.startswith("{")]
    assert [w["status"] for w in weeks] == ["succeeded"] * len(BACKFILL_WEEKS), weeks
    assert backfill_race["ticks_while_writing"] >= 1
    instance = backfill_race["instance"]
    pass_bundles = _pass_bundles(instance)
    assert len(pass_bundles) >= 2, weeks  # the race is about several bundles landing
    # Exactly the PASS bundles are in the registry, each once; none missed, none twice.
    assert sorted(backfill_race["published"]) == sorted(pass_bundles)
    assert backfill_race["again"] == []
    home = backfill_race["home"]
    assert record_files(home.registry) == sorted(f"{b}.json" for b in pass_bundles)
    runs = instance.get_run_records(filters=dg.RunsFilter(job_name=PUBLISH_JOB))
    keys = [
        r.dagster_run.tags["dagster/run_key"]
        for r in runs
        if r.dagster_run.status == dg.DagsterRunStatus.SUCCESS
    ]
    assert sorted(keys) == sorted(pass_bundles)
    assert all(r.dagster_run.tags.get("dagster/sensor_name") == SENSOR_NAME for r in runs)
    # each record names the publish run that wrote it
    wrote = {
        r.dagster_run.tags["dagster/run_key"]: r.dagster_run.run_id
        for r in runs
        if r.dagster_run.status == dg.DagsterRunStatus.SUCCESS
    }
    registry = FileRegistry(str(home.registry))
    assert {b: registry.get(b).dagster_run_id for b in pass_bundles} == wrote
    assert integrity_problems(home) == []
    # The champion history is append-only and ends at the newest week's bundle.
    history = FileRegistry(str(home.registry)).history(FAMILY)
    assert [c.sequence for c in history] == list(range(1, len(history) + 1))
    assert history[-1].partition_key == max(pass_bundles.values())
    print(
        f"\nrace: sensor ticked {backfill_race['ticks_while_writing']} times while "
        f"{len(BACKFILL_WEEKS)} weeks were written; {len(pass_bundles)} PASS bundles, "
        f"{len(pass_bundles)} records"
    )


def test_many_processes_publishing_several_bundles_lose_none(backfill_race, tmp_path):
    """Every PASS bundle of the backfill, each published by several processes at once into an
    empty registry: one record each, and the champion ends at the newest week."""
    home = backfill_race["home"]
    pass_bundles = _pass_bundles(backfill_race["instance"])
    registry = tmp_path / "registry"
    args = [
        (
            str(registry),
            str(home.store / "bundles" / load_record(home, b).train_run_id / "bundle.json"),
            b,
        )
        for b in sorted(pass_bundles)
    ] * 3
    outcomes = _race(_publish, args)
    assert all(status in ("published", "already_published") for status, _ in outcomes), outcomes
    assert sum(status == "published" for status, _ in outcomes) == len(pass_bundles)
    assert record_files(registry) == sorted(f"{b}.json" for b in pass_bundles)
    history = FileRegistry(str(registry)).history(FAMILY)
    assert [c.sequence for c in history] == list(range(1, len(history) + 1))
    assert [c.partition_key for c in history] == sorted({c.partition_key for c in history})
    assert history[-1].partition_key == max(pass_bundles.values())
    print(
        f"\nrace: {len(args)} processes published {len(pass_bundles)} bundles: "
        f"{len(pass_bundles)} records, none lost"
    )


def load_record(home: Home, bundle_id: str) -> RegistryRecord:
    return FileRegistry(str(home.registry)).get(bundle_id)


# ------------------------------------------------------- different contents claiming the same id


def test_different_bundles_racing_for_one_train_run_keep_the_first(reference_run, tmp_path):
    """Eight processes write eight different bundles for the same train run at once: exactly
    one is created, every other one is refused as not reproducible, the winner's bytes stay."""
    store = tmp_path / "store"
    raw = json.loads(Path(reference_run.bundle_uri).read_bytes())
    claims = []
    for i in range(CLAIMANTS):
        variant = {**raw, "config": {**raw["config"], "notes": f"claimant {i}"}}
        claims.append({**variant, "bundle_id": bundle_id_of(variant)})
    assert len({c["bundle_id"] for c in claims}) == CLAIMANTS
    outcomes = _race(_write_bundle, [(str(store), c) for c in claims])
    created = [i for i, o in enumerate(outcomes) if o is True]
    refused = [o for o in outcomes if isinstance(o, str)]
    assert len(created) == 1 and len(refused) == CLAIMANTS - 1, outcomes
    assert all(o.startswith("ImmutabilityError") and "not reproducible" in o for o in refused)
    path = store / "bundles" / raw["train_run_id"] / "bundle.json"
    winner = ModelBundle.model_validate(claims[created[0]])
    assert path.read_bytes() == canonical_json(winner)
    assert load_bundle(str(path)).bundle_id == claims[created[0]]["bundle_id"]
    assert partial_files(store) == []


def test_a_different_record_under_a_published_id_is_refused_and_kept(reference_run, tmp_path):
    """A record already under the bundle's id that names other bytes: the publish is refused
    with a reason, and the record's bytes are untouched."""
    registry = tmp_path / "registry"
    bundle_id = reference_run.result["bundle_id"]
    original = (reference_run.home.registry / "records" / f"{bundle_id}.json").read_bytes()
    forged = RegistryRecord.model_validate_json(original).model_copy(
        update={"bundle_sha256": "0" * 64, "published_by": "someone else"}
    )
    (registry / "records").mkdir(parents=True)
    planted = registry / "records" / f"{bundle_id}.json"
    planted.write_bytes(canonical_json(forged))
    response = FileRegistry(str(registry)).publish(
        PublishBundleRequest(
            bundle_uri=reference_run.bundle_uri, bundle_id=bundle_id, requested_by="race"
        )
    )
    assert response.status == "refused"
    assert response.reason == "a different bundle is already registered under this id"
    assert planted.read_bytes() == canonical_json(forged)
    assert FileRegistry(str(registry)).history(FAMILY) == []  # a refusal promotes nothing


def test_the_same_bundle_written_again_is_a_no_op(reference_run, tmp_path):
    store = ArtifactStore(str(tmp_path / "store"))
    bundle = load_bundle(reference_run.bundle_uri)
    assert write_bundle(store, bundle)[1] is True
    with pytest.raises(ImmutabilityError, match="not reproducible"):
        write_bundle(
            store,
            bundle.model_copy(
                update={
                    "config": TrainingConfig.model_validate(
                        {**bundle.config.model_dump(), "notes": "x"}
                    )
                }
            ),
        )
    assert write_bundle(store, bundle)[1] is False
