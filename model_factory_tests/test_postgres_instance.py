"""The Dagster instance on PostgreSQL (dagster.postgres.yaml, MODEL_FACTORY_INSTANCE=postgres).

The fast tests cover how the instance settings are chosen. The slow test starts a throwaway
PostgreSQL server (postgres_server.py) and a real `dagster dev` whose DAGSTER_HOME was prepared by
the same code as the CLI and `make ui`, launches a multi-week backfill through GraphQL as the UI
does, and lets the daemon's queued run coordinator run two weeks at once against PostgreSQL.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from itertools import pairwise
from pathlib import Path
from unittest import mock

import dagster as dg
import pytest
from dagster._core.instance.config import dagster_instance_config
from dagster_graphql.client.query import LAUNCH_PARTITION_BACKFILL_MUTATION

from model_factory.contracts import RegistryRecord
from model_factory.core.demo_data import DemoDataSpec, generate_demo_data
from model_factory.core.settings import (
    INSTANCE_TEMPLATES,
    POSTGRES_ENV,
    TEMPLATE_VERSIONS,
    Settings,
)
from model_factory.errors import ConfigError
from model_factory.ledger import read_ledger
from model_factory_tests.conftest import (
    STAGES,
    TRAINABLE_WEEKS,
    _finished_runs,
    _pass_bundles,
    _publications_settled,
)
from model_factory_tests.dagster_server import ROOT, DagsterServer, free_port, wait_for
from model_factory_tests.postgres_server import PostgresServer, postgres_server  # noqa: F401

MODEL_FACTORY = str(Path(sys.executable).parent / "model-factory")
PG_ENV = {name: f"value-of-{name}" for name in POSTGRES_ENV} | {"DAGSTER_PG_PORT": "5432"}


# ----------------------------------------------------------------- choosing the instance (fast)


def _settings(tmp_path: Path, **env: str) -> Settings:
    return Settings.from_env({"MODEL_FACTORY_HOME": str(tmp_path), **env})


def test_postgres_instance_is_selected_by_the_environment_and_switches_back(tmp_path):
    home = _settings(tmp_path, MODEL_FACTORY_INSTANCE="postgres").ensure_dagster_home(PG_ENV)
    target = home / "dagster.yaml"
    assert target.read_bytes() == (ROOT / "dagster.postgres.yaml").read_bytes()
    # Unset: whatever the home holds stays (no silent switch back to SQLite).
    _settings(tmp_path).ensure_dagster_home({})
    assert target.read_bytes() == (ROOT / "dagster.postgres.yaml").read_bytes()
    # Explicitly SQLite: an unedited copy of the other template is switched.
    _settings(tmp_path, MODEL_FACTORY_INSTANCE="sqlite").ensure_dagster_home({})
    assert target.read_bytes() == (ROOT / "dagster.yaml").read_bytes()


def test_every_template_version_is_known_and_an_old_unedited_copy_is_brought_up_to_date(tmp_path):
    """A home made by an earlier release keeps no stale instance settings: its dagster.yaml
    (here the release before dead runs' pool slots were freed) becomes the current template;
    a file the user edited stays as it is."""
    for kind, file in INSTANCE_TEMPLATES.items():
        digest = hashlib.sha256((ROOT / file).read_bytes()).hexdigest()
        assert TEMPLATE_VERSIONS.get(digest) == kind, (
            f"add {file}'s new digest to TEMPLATE_VERSIONS"
        )
    old = (Path(__file__).parent / "instance_templates" / "dagster.c523fc4.yaml").read_bytes()
    assert b"free_slots_after_run_end_seconds" not in old
    settings = _settings(tmp_path)
    target = settings.dagster_home / "dagster.yaml"
    target.parent.mkdir(parents=True)
    target.write_bytes(old)
    settings.ensure_dagster_home({})
    assert target.read_bytes() == (ROOT / "dagster.yaml").read_bytes()
    config, _ = dagster_instance_config(str(settings.dagster_home))
    assert config["run_monitoring"]["free_slots_after_run_end_seconds"] == 60

    edited = old + b"\n# my own note\n"
    target.write_bytes(edited)
    settings.ensure_dagster_home({})
    assert target.read_bytes() == edited  # the user's file, never overwritten


def test_a_copy_of_this_checkouts_own_templates_switches_whatever_their_bytes(
    tmp_path, monkeypatch
):
    """A checkout whose templates differ from the committed bytes (CRLF line endings, a local
    edit) still recognises an unedited copy of them, so MODEL_FACTORY_INSTANCE=postgres is not
    silently left on SQLite."""
    import model_factory.core.settings as settings_module

    checkout = tmp_path / "checkout"
    checkout.mkdir()
    for file in INSTANCE_TEMPLATES.values():
        (checkout / file).write_bytes((ROOT / file).read_bytes().replace(b"\n", b"\r\n"))
    monkeypatch.setattr(settings_module, "_PROJECT_ROOT", checkout)
    home = _settings(tmp_path / "home").ensure_dagster_home({})
    target = home / "dagster.yaml"
    assert target.read_bytes() == (checkout / "dagster.yaml").read_bytes()
    _settings(tmp_path / "home", MODEL_FACTORY_INSTANCE="postgres").ensure_dagster_home(PG_ENV)
    assert target.read_bytes() == (checkout / "dagster.postgres.yaml").read_bytes()


def test_postgres_template_is_a_valid_instance_config_reading_every_variable():
    # Dagster's own instance-config validation (no connection is made), with the values
    # coming from the environment as they will on a server.
    with mock.patch.dict(os.environ, PG_ENV):
        config, _ = dagster_instance_config(str(ROOT), "dagster.postgres.yaml")
    db = config["storage"]["postgres"]["postgres_db"]
    assert {v["env"] for v in db.values() if isinstance(v, dict)} == set(POSTGRES_ENV)
    assert config["concurrency"]["runs"]["max_concurrent_runs"] == 2
    assert config["run_coordinator"]["class"] == "QueuedRunCoordinator"


def test_postgres_instance_refuses_missing_variables_a_foreign_file_and_unknown_kinds(tmp_path):
    settings = _settings(tmp_path, MODEL_FACTORY_INSTANCE="postgres")
    with pytest.raises(ConfigError) as missing:
        settings.ensure_dagster_home(
            {k: v for k, v in PG_ENV.items() if k != "DAGSTER_PG_PASSWORD"}
        )
    assert missing.value.field == "DAGSTER_PG_PASSWORD"
    assert not (settings.dagster_home / "dagster.yaml").exists()

    own = settings.dagster_home / "dagster.yaml"
    own.write_text("telemetry:\n  enabled: false\n")  # a file of the user's own, on SQLite
    with pytest.raises(ConfigError) as foreign:
        settings.ensure_dagster_home(PG_ENV)
    assert foreign.value.field == "MODEL_FACTORY_INSTANCE" and foreign.value.source == str(own)
    assert own.read_text() == "telemetry:\n  enabled: false\n"  # never overwritten

    with pytest.raises(ConfigError) as unknown:
        _settings(tmp_path, MODEL_FACTORY_INSTANCE="mysql")
    assert unknown.value.field == "MODEL_FACTORY_INSTANCE"


# ------------------------------------------------- a backfill on a real PostgreSQL server (slow)

POSTGRES_GROUP = "postgres_instance"


@dataclass
class PgBackfill:
    pg: PostgresServer
    server: DagsterServer
    instance: dg.DagsterInstance
    id: str
    runs: list[dg.RunRecord]
    pass_bundles: dict[str, str]


@pytest.fixture(scope="module")
def pg_backfill(postgres_server: PostgresServer, tmp_path_factory) -> Iterator[PgBackfill]:  # noqa: F811
    root = tmp_path_factory.mktemp("pg_instance")
    generate_demo_data(str(root / "catalog"), DemoDataSpec(customers=600, terminals=1200, weeks=10))
    env = {
        **os.environ,
        **postgres_server.env,
        "MODEL_FACTORY_INSTANCE": "postgres",
        "DAGSTER_HOME": str(root / "dagster"),
        "MODEL_FACTORY_HOME": str(root / "home"),
        "MODEL_FACTORY_CATALOG": str(root / "catalog"),
        "MODEL_FACTORY_STORE": str(root / "store"),
        "MODEL_FACTORY_REGISTRY": str(root / "registry"),
        "MODEL_FACTORY_AUTOMATION_INTERVAL_SECONDS": "5",
        "OMP_WAIT_POLICY": "PASSIVE",
        "PYTHONUNBUFFERED": "1",
    }
    env.pop("MODEL_FACTORY_POLICY", None)
    # DAGSTER_HOME is prepared exactly as `model-factory` and `make ui` prepare it.
    Settings.from_env(env).ensure_dagster_home(env)
    server = DagsterServer(root=root, env=env, port=free_port(), log=root / "dagster-dev.log")
    # This process reads the same instance: dagster.yaml resolves DAGSTER_PG_* from os.environ.
    with mock.patch.dict(os.environ, postgres_server.env):
        try:
            server.start()
            launched = server.graphql(
                LAUNCH_PARTITION_BACKFILL_MUTATION,
                {
                    "backfillParams": {
                        "partitionNames": list(TRAINABLE_WEEKS),
                        "assetSelection": [{"path": [s]} for s in STAGES],
                        "title": "backfill on PostgreSQL (test)",
                    }
                },
            )["launchPartitionBackfill"]
            assert launched["__typename"] == "LaunchBackfillSuccess", launched
            instance = server.instance()
            runs = wait_for(
                "one finished run per week",
                lambda: _finished_runs(instance, launched["backfillId"], len(TRAINABLE_WEEKS)),
                timeout=420,
                every=2,
                log=server.log,
            )
            pass_bundles = _pass_bundles(instance)
            wait_for(
                "the sensor to publish every PASS bundle",
                lambda: _publications_settled(server, set(pass_bundles)),
                timeout=150,
                every=2,
                log=server.log,
            )
            print(
                f"\nbackfill {launched['backfillId']} on PostgreSQL 127.0.0.1:{postgres_server.port}"
                f": {len(runs)} runs, {len(pass_bundles)} PASS bundle(s)"
            )
            yield PgBackfill(
                postgres_server, server, instance, launched["backfillId"], runs, pass_bundles
            )
        finally:
            server.stop()


@pytest.mark.slow
@pytest.mark.xdist_group(POSTGRES_GROUP)
def test_every_week_of_the_backfill_succeeded_two_runs_at_a_time(pg_backfill):
    by_week = {r.dagster_run.tags["dagster/partition"]: r.dagster_run for r in pg_backfill.runs}
    assert sorted(by_week) == sorted(TRAINABLE_WEEKS)
    assert all(run.status == dg.DagsterRunStatus.SUCCESS for run in by_week.values()), {
        w: r.status for w, r in by_week.items()
    }
    # The queued run coordinator really ran two weeks at once on this instance, never three.
    spans = sorted((r.start_time, r.end_time) for r in pg_backfill.runs)
    overlap = max(sum(s <= start < e for s, e in spans) for start, _ in spans)
    assert overlap == 2, spans
    # ... while the training pool (its slots kept in PostgreSQL) allowed one fit at a time.
    fits = []
    for record in pg_backfill.runs:
        events = pg_backfill.instance.get_records_for_run(
            record.dagster_run.run_id,
            of_type={dg.DagsterEventType.STEP_START, dg.DagsterEventType.STEP_SUCCESS},
        ).records
        times = {
            (e.event_log_entry.dagster_event.event_type, e.event_log_entry.step_key): e.timestamp
            for e in events
        }
        fits.append(
            (
                times[(dg.DagsterEventType.STEP_START, "model")],
                times[(dg.DagsterEventType.STEP_SUCCESS, "model")],
            )
        )
    fits.sort()
    assert all(later[0] >= earlier[1] for earlier, later in pairwise(fits)), fits


@pytest.mark.slow
@pytest.mark.xdist_group(POSTGRES_GROUP)
def test_runs_and_event_log_live_in_postgresql_not_in_local_files(pg_backfill):
    run_ids = [r.dagster_run.run_id for r in pg_backfill.runs]
    [(runs_in_pg,)] = pg_backfill.pg.query(
        "SELECT count(*) FROM runs WHERE run_id = ANY(%s)", run_ids
    )
    assert runs_in_pg == len(run_ids)
    per_run = dict(
        pg_backfill.pg.query(
            "SELECT run_id, count(*) FROM event_logs WHERE run_id = ANY(%s) "
            "AND dagster_event_type = 'ASSET_MATERIALIZATION' GROUP BY run_id",
            run_ids,
        )
    )
    assert per_run == dict.fromkeys(run_ids, len(STAGES))  # six materializations per week
    [(pool_slots,)] = pg_backfill.pg.query(
        "SELECT count(*) FROM concurrency_limits WHERE concurrency_key = 'training'"
    )
    assert pool_slots == 1
    home = pg_backfill.server.dagster_home
    assert not [p for p in home.rglob("*.db")], "SQLite storage under DAGSTER_HOME"


@pytest.mark.slow
@pytest.mark.xdist_group(POSTGRES_GROUP)
def test_ledger_reads_the_runs_from_postgresql_also_from_a_fresh_home(pg_backfill, tmp_path):
    records = read_ledger(pg_backfill.instance)
    by_week = {r.partition_key: r for r in records if r.train_run_id}
    assert sorted(by_week) == sorted(TRAINABLE_WEEKS)
    runs = {r.dagster_run.tags["dagster/partition"]: r.dagster_run.run_id for r in pg_backfill.runs}
    for week, record in by_week.items():
        [attempt] = record.attempts
        assert attempt.dagster_run_id == runs[week]
        assert attempt.backfill_id == pg_backfill.id
        assert record.status in ("succeeded", "gate_failed")

    # The CLI on an empty DAGSTER_HOME with MODEL_FACTORY_INSTANCE=postgres: it writes
    # dagster.yaml from the template and sees the same train runs, so they are in the database.
    env = {**pg_backfill.server.env, "DAGSTER_HOME": str(tmp_path / "fresh")}
    out = subprocess.run(
        [MODEL_FACTORY, "ledger", "--json"],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr
    assert (tmp_path / "fresh" / "dagster.yaml").read_bytes() == (
        ROOT / "dagster.postgres.yaml"
    ).read_bytes()
    listed = {(r.train_run_id, r.partition_key) for r in records}
    from_cli = {
        (d["train_run_id"], d["partition_key"]) for d in map(json.loads, out.stdout.splitlines())
    }
    assert from_cli == listed


@pytest.mark.slow
@pytest.mark.xdist_group(POSTGRES_GROUP)
def test_registry_holds_one_record_per_pass_bundle(pg_backfill):
    assert pg_backfill.pass_bundles, "the demo weeks should give at least one PASS bundle"
    records = sorted((pg_backfill.server.root / "registry" / "records").glob("*.json"))
    registered = {p.stem: RegistryRecord.model_validate_json(p.read_text()) for p in records}
    assert set(registered) == set(pg_backfill.pass_bundles)
    for bundle_id, record in registered.items():
        assert record.partition_key == pg_backfill.pass_bundles[bundle_id]
    publish_runs = pg_backfill.instance.get_run_records(
        filters=dg.RunsFilter(job_name="publish_bundle")
    )
    assert sorted(r.dagster_run.tags["dagster/run_key"] for r in publish_runs) == sorted(
        pg_backfill.pass_bundles
    )
    assert all(r.dagster_run.status == dg.DagsterRunStatus.SUCCESS for r in publish_runs)
