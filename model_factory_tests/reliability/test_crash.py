"""Crash safety: SIGKILL a real `model-factory run` at every named point of a partition run,
then run again (ISSUE 7, item 1).

The kills form a chain on one home: the run after a kill at point k is the re-run that must get
past k, and is itself killed at point k+1; the last run is not killed. So every re-run starts
from everything the earlier kills left behind (leftover temporary files, a Dagster run stuck in
STARTED, a record without its champion change). After every kill, no file under a final name may
be partial or corrupt; at the end the run succeeds with the reference run's train_run_id and
bundle_id, and the registry holds exactly one record and one champion change.

The points are set by MODEL_FACTORY_CRASH_AT (model_factory/core/faults.py), read only there.
"""

from __future__ import annotations

import fnmatch
import signal
from dataclasses import dataclass, field
from pathlib import Path

import dagster as dg
import pytest

from model_factory.core.bundles import find_bundle
from model_factory.core.faults import ENV, POINTS
from model_factory.core.registry import FileRegistry
from model_factory_tests.reliability.conftest import (
    Home,
    final_name_of,
    integrity_problems,
    partial_files,
    reference_then_fresh,
    week_result,
)

pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("reliability")]

# (stage, MODEL_FACTORY_CRASH_AT), in the order a run reaches them. A "link:GLOB" point kills
# after a file's bytes are complete under their temporary name and before the atomic link to
# the final name; with a glob shared by several files it fires at the first one not yet stored.
CRASH_POINTS = [
    ("intake", "intake.verified"),  # every manifest file verified, nothing stored
    ("intake", "link:*/sha256/*.json"),  # the intake receipt, not yet linked
    ("frame", "link:*.parquet"),  # the frame's parquet, not yet linked
    ("frame", "frame.built"),  # parquet stored, frame record not yet
    ("training", "training.fitted"),  # XGBoost fitted, model not stored
    ("training", "link:*.ubj"),  # the model bytes, not yet linked
    ("report", "link:*.html"),  # the report's HTML page, not yet linked
    ("report", "report.evaluated"),  # report computed, not stored
    ("gate", "gate.decided"),  # verdict computed, receipt not stored
    ("bundle", "link:*/bundles/*/bundle.json"),  # bundle.json, not yet linked
    ("bundle", "bundle.written"),  # bundle stored, the run not yet recorded
    ("publish", "link:*/records/*.json"),  # the registry record, not yet linked
    ("publish", "publish.recorded"),  # record written, champion history not yet
    ("publish", "link:*/champions/*/*.json"),  # the champion change, not yet linked
]


@dataclass
class Kill:
    stage: str
    point: str
    returncode: int
    stderr: str
    problems: list[str]
    new_partials: list[str] = field(default_factory=list)
    finals_present: list[str] = field(default_factory=list)


@dataclass
class Chain:
    home: Home
    reference: dict  # the uncrashed run's JSON line, made at the same path first
    kills: list[Kill]
    final: dict
    final_problems: list[str]


@pytest.fixture(scope="module")
def chain(reliability_catalog, tmp_path_factory) -> Chain:
    home, reference = reference_then_fresh(
        tmp_path_factory.mktemp("crash_chain") / "home", reliability_catalog
    )
    assert reference["gate"] == "PASS" and reference["published"], reference
    kills = []
    for stage, point in CRASH_POINTS:
        before = set(partial_files(home.root))
        proc = home.run(**{ENV: point})
        new = [p for p in partial_files(home.root) if p not in before]
        kills.append(
            Kill(
                stage,
                point,
                proc.returncode,
                proc.stderr[-2000:],
                integrity_problems(home),
                [str(p) for p in new],
                [str(final_name_of(p)) for p in new if final_name_of(p).exists()],
            )
        )
    final = week_result(home.run())
    return Chain(home, reference, kills, final, integrity_problems(home))


@pytest.mark.parametrize(
    ("stage", "point"), CRASH_POINTS, ids=[f"{s}:{p}" for s, p in CRASH_POINTS]
)
def test_kill_leaves_nothing_partial_under_a_final_name(chain, stage, point):
    kill = next(k for k in chain.kills if k.point == point and k.stage == stage)
    # -SIGKILL: the process died at this point (nothing else in the run sends SIGKILL) and got
    # past every earlier kill's leftovers to reach it.
    assert kill.returncode == -signal.SIGKILL, (kill.returncode, kill.stderr)
    assert kill.problems == []
    if point.startswith("link:"):
        glob = point.split(":", 1)[1]
        # Killed between the temporary file and the link: exactly one temporary file is left,
        # for a file of this kind, and its final name does not exist.
        assert len(kill.new_partials) == 1, kill.new_partials
        assert fnmatch.fnmatchcase(str(final_name_of(Path(kill.new_partials[0]))), glob)
        assert kill.finals_present == []


def test_every_fault_point_is_killed(chain):
    killed = {k.point.split(":", 1)[0] for k in chain.kills if k.returncode == -signal.SIGKILL}
    assert killed == set(POINTS)
    print(
        f"\nfault points killed: {sum(k.returncode == -signal.SIGKILL for k in chain.kills)} "
        f"(stages: {sorted({k.stage for k in chain.kills})})"
    )


def test_rerun_after_the_kills_gives_the_reference_ids(chain):
    ref = chain.reference
    assert chain.final["train_run_id"] == ref["train_run_id"], "train run id differs (code edited?)"
    assert chain.final["bundle_id"] == ref["bundle_id"]
    assert chain.final["gate"] == "PASS" and chain.final["published"]
    assert chain.final_problems == []


def test_registry_holds_exactly_one_record_and_one_champion_change(chain):
    bundle_id = chain.reference["bundle_id"]
    records = sorted(p.name for p in (chain.home.registry / "records").iterdir())
    assert [r for r in records if not r.startswith(".")] == [f"{bundle_id}.json"]
    registry = FileRegistry(str(chain.home.registry))
    assert [r.bundle_id for r in registry.records()] == [bundle_id]
    history = registry.history("fraud_xgb")
    assert [(c.sequence, c.bundle_id) for c in history] == [(1, bundle_id)]
    bundles = sorted((chain.home.store / "bundles").iterdir())
    assert [b.name for b in bundles] == [chain.final["train_run_id"]]


def test_leftover_temporary_files_are_never_read_as_real(chain):
    leftovers = partial_files(chain.home.root)
    # One per "link" kill (a kill elsewhere leaves none): the kills really left them behind.
    assert len(leftovers) == sum(p.startswith("link:") for _, p in CRASH_POINTS)
    assert {p.parent.name for p in leftovers} >= {"records"}
    # The readers that list folders skip them: one record, one change, the bundle found by id.
    registry = FileRegistry(str(chain.home.registry))
    assert len(registry.records()) == 1 and len(registry.history("fraud_xgb")) == 1
    uri = find_bundle(str(chain.home.store), chain.reference["bundle_id"])
    assert uri.endswith(f"bundles/{chain.final['train_run_id']}/bundle.json")


def test_killed_runs_are_failed_and_give_back_their_pool_slot(chain):
    """A run killed inside the ``model`` step held the ``training`` pool's one slot: the next run
    would wait for it forever unless the dead run is failed and its slot freed (runner.py,
    fail_orphaned_runs). The re-runs above got past it; here the ledger says what happened."""
    with dg.DagsterInstance.from_config(str(chain.home.dagster)) as instance:
        runs = [r.dagster_run for r in instance.get_run_records()]
        assert [r.run_id for r in runs if not r.is_finished] == []
        failed = [r for r in runs if r.status == dg.DagsterRunStatus.FAILURE]
        # One run per kill: the week's training run, or its publish run for the publish points.
        assert len(failed) == len(CRASH_POINTS)
        messages = [
            e.message or ""
            for r in failed
            for e in instance.all_logs(r.run_id)
            if e.dagster_event is not None
            and e.dagster_event.event_type_value == "PIPELINE_FAILURE"
        ]
        assert len(messages) == len(CRASH_POINTS) and all("is gone" in m for m in messages), (
            messages
        )
        info = instance.event_log_storage.get_concurrency_info("training")
        assert info.claimed_slots == [] and info.pending_step_count == 0
