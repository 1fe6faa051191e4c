"""Shared fixtures of the reliability suite: one small demo catalog, a subprocess runner for the
real CLI on a home of its own, a reference (uncrashed) run, and an integrity scan of every file
a run leaves under a final name."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import polars as pl
import pytest

from model_factory.contracts import ChampionChange, RegistryRecord
from model_factory.core.bundles import verify_bundle
from model_factory.core.canonical import content_digest, sha256_hex
from model_factory.core.demo_data import DemoDataSpec, generate_demo_data
from model_factory.core.documents import parse_document
from model_factory.errors import ModelFactoryError

WEEK = "2026-02-23"
# Point criteria (no bootstrap) so the small demo week PASSes and the publish path runs too.
LENIENT_CONFIG = {
    "gates": {
        "criteria": [
            {"name": "test_positives", "metric": "positives", "kind": "point", "threshold": 10},
            {"name": "roc_auc_lower", "metric": "roc_auc", "kind": "point", "threshold": 0.75},
            {"name": "pr_auc_lower", "metric": "pr_auc", "kind": "point", "threshold": 0.10},
        ]
    }
}
# ... and the policy that lets those mandatory names be point criteria (by default they mean
# CI lower bounds, and a config may not change what a mandatory name measures).
POINT_GATES_POLICY = {
    "criterion_meanings": {
        "roc_auc_lower": {"metric": "roc_auc", "kind": "point"},
        "pr_auc_lower": {"metric": "pr_auc", "kind": "point"},
    }
}
CLI = str(Path(sys.executable).with_name("model-factory"))
PARTIAL_GLOB = ".tmp-*.partial"


@dataclass(frozen=True)
class Home:
    """One factory installation in a folder: store, registry and Dagster instance of its own,
    over a shared (read-only) catalog."""

    root: Path
    catalog: Path

    @property
    def store(self) -> Path:
        return self.root / "store"

    @property
    def registry(self) -> Path:
        return self.root / "registry"

    @property
    def dagster(self) -> Path:
        return self.root / "dagster"

    @property
    def config(self) -> Path:
        path = self.root / "config.json"
        if not path.exists():
            self.root.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps(LENIENT_CONFIG))
        return path

    @property
    def policy(self) -> Path:
        path = self.root / "policy.json"
        if not path.exists():
            self.root.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps(POINT_GATES_POLICY))
        return path

    def env(self, **extra: str) -> dict[str, str]:
        env = {
            k: v
            for k, v in os.environ.items()
            if not k.startswith("MODEL_FACTORY_") and k != "DAGSTER_HOME"
        }
        return {
            **env,
            "MODEL_FACTORY_HOME": str(self.root),
            "MODEL_FACTORY_CATALOG": str(self.catalog),
            "MODEL_FACTORY_STORE": str(self.store),
            "MODEL_FACTORY_REGISTRY": str(self.registry),
            "DAGSTER_HOME": str(self.dagster),
            "MODEL_FACTORY_POLICY": str(self.policy),
            "OMP_WAIT_POLICY": "PASSIVE",
            **extra,
        }

    def run_args(self, week: str = WEEK) -> list[str]:
        return [CLI, "run", "--from", week, "--to", week, "--json", "--config", str(self.config)]

    def run(self, week: str = WEEK, **extra: str) -> subprocess.CompletedProcess:
        """`model-factory run` of one week in a subprocess (``extra``: more environment)."""
        return subprocess.run(
            self.run_args(week),
            env=self.env(**extra),
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )


def week_result(proc: subprocess.CompletedProcess) -> dict:
    """The one JSON line `model-factory run --json` prints for its week."""
    lines = [line for line in proc.stdout.splitlines() if line.startswith("{")]
    assert proc.returncode == 0 and len(lines) == 1, (
        proc.returncode,
        proc.stdout,
        proc.stderr[-3000:],
    )
    return json.loads(lines[0])


def reference_then_fresh(root: Path, catalog: Path) -> tuple[Home, dict]:
    """An uncrashed run of WEEK at ``root``, then moved aside; returns a fresh home at the same
    path and the run's JSON line. Artifact URIs name the store's location, and the bundle (and
    the report, through its HTML page's URI) embeds them, so only a run writing to the same path
    can give the reference's bundle id."""
    result = week_result(Home(root, catalog).run())
    root.rename(root.with_name(root.name + "-reference"))
    return Home(root, catalog), result


def partial_files(root: Path) -> list[Path]:
    return sorted(root.rglob(PARTIAL_GLOB))


def final_name_of(partial: Path) -> Path:
    """The final name a temporary file was written for (``.tmp-<32 hex>-<name>.partial``)."""
    return partial.with_name(partial.name[len(".tmp-") + 33 : -len(".partial")])


def integrity_problems(home: Home) -> list[str]:
    """Every file under a final name in the store and registry, checked: blobs match the digest
    they are named by (parquet also reads), bundles verify, registry records and champion
    changes validate and agree with their names. Returns what is wrong (nothing, if all hold)."""
    problems: list[str] = []
    blobs = home.store / "sha256"
    for path in sorted(blobs.rglob("*")) if blobs.exists() else []:
        if path.is_dir() or path.name.startswith("."):
            continue
        data = path.read_bytes()
        digest = path.name.split(".", 1)[0]
        ok = sha256_hex(data) == digest
        if not ok and path.suffix == ".json":  # documents are named by their content digest
            try:
                ok = content_digest(json.loads(data)) == digest
            except ValueError:
                ok = False
        if ok and path.suffix == ".parquet":
            try:
                pl.read_parquet(path)
            except Exception as exc:
                ok, digest = False, f"{digest} (unreadable parquet: {exc})"
        if not ok:
            problems.append(f"blob {path} does not match its name {digest}")
    for path in sorted(home.store.glob("bundles/*/bundle.json")):
        try:
            verify_bundle(str(path))
        except ModelFactoryError as exc:
            problems.append(f"bundle {path}: {exc}")
    for path in sorted(home.registry.glob("records/*.json")):
        try:
            record = parse_document(path.read_bytes(), RegistryRecord, source=str(path))
            if record.bundle_id != path.stem:
                problems.append(f"record {path} holds {record.bundle_id}")
        except ModelFactoryError as exc:
            problems.append(f"record {path}: {exc}")
    for path in sorted(home.registry.glob("champions/*/*.json")):
        try:
            change = parse_document(path.read_bytes(), ChampionChange, source=str(path))
            if change.sequence != int(path.stem):
                problems.append(f"champion change {path} holds sequence {change.sequence}")
        except ModelFactoryError as exc:
            problems.append(f"champion change {path}: {exc}")
    return problems


@pytest.fixture(scope="session")
def reliability_catalog(tmp_path_factory) -> Path:
    """Ten small demo weeks: 2026-02-23, 03-02 and 03-09 are trainable."""
    root = tmp_path_factory.mktemp("reliability_catalog")
    generate_demo_data(str(root), DemoDataSpec(customers=600, terminals=1200, weeks=10))
    return root


@dataclass(frozen=True)
class ReferenceRun:
    home: Home
    result: dict  # the week's JSON line

    @property
    def bundle_uri(self) -> str:
        return str(self.home.store / "bundles" / self.result["train_run_id"] / "bundle.json")


@pytest.fixture(scope="session")
def reference_run(reliability_catalog, tmp_path_factory) -> ReferenceRun:
    """One uncrashed `model-factory run` of WEEK: the ids every crashed or racing run must give."""
    home = Home(tmp_path_factory.mktemp("reference"), reliability_catalog)
    result = week_result(home.run())
    assert result["gate"] == "PASS" and result["published"], result
    return ReferenceRun(home, result)
