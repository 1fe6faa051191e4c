"""Shared fixtures: one real `dagster dev` per test session, with a backfill already run on it.

The server tests and the browser test share it (both are in the xdist group "dagster_server",
so they run in one worker and the server starts once).
"""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import dagster as dg
import pytest
from dagster_graphql.client.query import LAUNCH_PARTITION_BACKFILL_MUTATION

from model_factory.core.demo_data import DemoDataSpec, generate_demo_data
from model_factory.ledger import STAGES  # the partitioned stages, in order: what a backfill selects
from model_factory_tests.dagster_server import ROOT, DagsterServer, free_port, wait_for

# DemoDataSpec(weeks=10) starts 2026-01-05: three weeks are trainable, the fourth has no data.
TRAINABLE_WEEKS = ("2026-02-23", "2026-03-02", "2026-03-09")
WEEK_WITHOUT_DATA = "2026-03-16"
SERVER_GROUP = "dagster_server"


def step_failure_messages(result: dg.ExecuteInProcessResult) -> list[str]:
    """The first failed step's error and its causes, outermost first: Dagster wraps the error a
    stage raised, so ours is a cause."""
    failure = next(e for e in result.all_events if e.is_step_failure)
    error, messages = failure.step_failure_data.error, []
    while error is not None:
        messages.append(error.message)
        error = error.cause
    return messages


_BACKFILL_STATUS = """query($id: String!) { partitionBackfillOrError(backfillId: $id) {
  __typename ... on PartitionBackfill { id status numPartitions } ... on PythonError { message } } }"""
_FINISHED = {"COMPLETED", "COMPLETED_SUCCESS", "COMPLETED_FAILED", "FAILED", "CANCELED"}


def artifacts_dir() -> Path:
    """Where tests leave files for people to look at (screenshots); printed by the tests."""
    path = Path(os.environ.get("MODEL_FACTORY_TEST_ARTIFACTS") or ROOT / ".test-artifacts")
    path.mkdir(parents=True, exist_ok=True)
    return path


# The small demo catalog of the bad-input, hostile-input and governance tests: 10 weeks, the last
# trainable one 2026-03-09.
SMALL_DEMO = DemoDataSpec(customers=300, terminals=600, weeks=10)


@pytest.fixture(scope="session")
def pristine(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """SMALL_DEMO, generated once per test process; tests copy it before changing anything."""
    root = tmp_path_factory.mktemp("pristine") / "catalog"
    generate_demo_data(str(root), SMALL_DEMO)
    return root


@pytest.fixture
def home(tmp_path: Path, pristine: Path) -> Path:
    """A private copy of the small demo catalog, next to a store and registry not made yet."""
    shutil.copytree(pristine, tmp_path / "catalog")
    return tmp_path


@pytest.fixture(scope="session")
def dagster_server(tmp_path_factory) -> Iterator[DagsterServer]:
    """`dagster dev` on a temporary DAGSTER_HOME and a free port, over a small demo catalog."""
    root = tmp_path_factory.mktemp("dagster_server")
    generate_demo_data(str(root / "catalog"), DemoDataSpec(customers=600, terminals=1200, weeks=10))
    home = root / "dagster"
    home.mkdir()
    shutil.copyfile(ROOT / "dagster.yaml", home / "dagster.yaml")
    env = {
        **os.environ,
        "DAGSTER_HOME": str(home),
        "MODEL_FACTORY_HOME": str(root / "home"),
        "MODEL_FACTORY_CATALOG": str(root / "catalog"),
        "MODEL_FACTORY_STORE": str(root / "store"),
        "MODEL_FACTORY_REGISTRY": str(root / "registry"),
        "MODEL_FACTORY_AUTOMATION_INTERVAL_SECONDS": "5",
        "OMP_WAIT_POLICY": "PASSIVE",
        "PYTHONUNBUFFERED": "1",
    }
    env.pop("MODEL_FACTORY_POLICY", None)
    server = DagsterServer(root=root, env=env, port=free_port(), log=root / "dagster-dev.log")
    try:
        server.start()
        print(
            f"\ndagster dev on {server.url} (DAGSTER_HOME={home}), up in {server.started_in:.0f}s; "
            f"log {server.log}"
        )
        yield server
    finally:
        server.stop()


@dataclass
class Backfill:
    id: str
    weeks: tuple[str, ...]
    status: str
    runs: list[dg.RunRecord]
    pass_bundles: dict[str, str]  # bundle id -> week
    seconds: float


def _finished_runs(instance: dg.DagsterInstance, backfill_id: str, expected: int) -> list | None:
    runs = instance.get_run_records(filters=dg.RunsFilter(tags={"dagster/backfill": backfill_id}))
    if len(runs) == expected and all(r.dagster_run.is_finished for r in runs):
        return runs
    return None


def _pass_bundles(instance: dg.DagsterInstance) -> dict[str, str]:
    out = {}
    for rec in instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=dg.AssetKey("model_bundle")), limit=1000
    ).records:
        meta = {k: getattr(v, "value", v) for k, v in rec.asset_materialization.metadata.items()}
        if meta.get("gate_status") == "PASS":
            out[meta["bundle_id"]] = rec.asset_materialization.partition
    return out


def _publications_settled(server: DagsterServer, expected: set[str]) -> bool:
    """Every PASS bundle is in the registry and no publish run is still going."""
    records = server.root / "registry" / "records"
    published = {p.stem for p in records.glob("*.json")} if records.exists() else set()
    runs = server.instance().get_run_records(filters=dg.RunsFilter(job_name="publish_bundle"))
    failed = [r.dagster_run for r in runs if r.dagster_run.status == dg.DagsterRunStatus.FAILURE]
    if failed:  # fail now with the reason rather than time out
        events = server.instance().all_logs(failed[0].run_id)
        raise RuntimeError(
            f"publish run {failed[0].run_id} failed: "
            + " | ".join(e.message or "" for e in events if e.message)[-3000:]
        )
    return published >= expected and all(r.dagster_run.is_finished for r in runs)


def _backtest_after(instance: dg.DagsterInstance, after: float) -> bool:
    recs = instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=dg.AssetKey("backtest_summary"), after_timestamp=after),
        limit=1,
    ).records
    return bool(recs)


@pytest.fixture(scope="session")
def backfill(dagster_server: DagsterServer) -> Backfill:
    """A backfill of every stage over the trainable weeks plus one week without data, launched
    through GraphQL as the UI does; then the publish sensor and the backtest automation settle."""
    weeks = (*TRAINABLE_WEEKS, WEEK_WITHOUT_DATA)
    started = time.monotonic()
    launched = dagster_server.graphql(
        LAUNCH_PARTITION_BACKFILL_MUTATION,
        {
            "backfillParams": {
                "partitionNames": list(weeks),
                "assetSelection": [{"path": [s]} for s in STAGES],
                "title": "walk-forward backtest (test)",
                "tags": [{"key": "model_factory/test", "value": "server_backfill"}],
            }
        },
    )["launchPartitionBackfill"]
    assert launched["__typename"] == "LaunchBackfillSuccess", launched
    backfill_id = launched["backfillId"]
    instance = dagster_server.instance()
    runs = wait_for(
        "one finished run per week",
        lambda: _finished_runs(instance, backfill_id, len(weeks)),
        timeout=420,
        every=2,
        log=dagster_server.log,
    )
    ended = max(r.end_time or 0 for r in runs)

    def status():
        s = dagster_server.graphql(_BACKFILL_STATUS, {"id": backfill_id})[
            "partitionBackfillOrError"
        ]
        return s["status"] if s.get("status") in _FINISHED else None

    final = wait_for(
        "the backfill to complete", status, timeout=120, every=2, log=dagster_server.log
    )
    pass_bundles = _pass_bundles(instance)
    wait_for(
        "the sensor to publish every PASS bundle",
        lambda: _publications_settled(dagster_server, set(pass_bundles)),
        timeout=150,
        every=2,
        log=dagster_server.log,
    )
    wait_for(
        "backtest_summary to refresh after the backfill",
        lambda: _backtest_after(instance, ended),
        timeout=150,
        every=2,
        log=dagster_server.log,
    )
    seconds = time.monotonic() - started
    print(
        f"\nbackfill {backfill_id}: {len(weeks)} weeks, {final}; publications and backtest settled "
        f"{seconds:.0f}s after launch"
    )
    return Backfill(backfill_id, weeks, final, runs, pass_bundles, seconds)
