"""The Definitions as a whole: graph shape, partitions, config documentation, CLI validation."""

import os
import subprocess
import sys
from pathlib import Path

import dagster as dg
import pytest

from model_factory.contracts import TrainingConfig as TrainingConfigContract
from model_factory.definitions import defs
from model_factory.defs.config import TrainingConfig, to_contract
from model_factory.defs.ledger import triggered_by

ROOT = Path(__file__).resolve().parents[2]

EXPECTED_GRAPH = {
    "dataset_manifests": set(),
    "training_frame": {"dataset_manifests"},
    "model": {"training_frame"},
    "evaluation_report": {"model"},
    "gate_receipt": {"evaluation_report"},
    "model_bundle": {"gate_receipt"},
    "backtest_summary": {"evaluation_report", "gate_receipt", "model_bundle"},
}
WEEKLY_ASSETS = set(EXPECTED_GRAPH) - {"backtest_summary"}


def test_asset_graph_is_the_architecture_chain():
    graph = defs().resolve_asset_graph()
    shape = {
        key.to_user_string(): {p.to_user_string() for p in graph.get(key).parent_keys}
        for key in graph.get_all_asset_keys()
    }
    assert shape == EXPECTED_GRAPH


def test_every_stage_is_weekly_on_mondays_with_a_code_version():
    graph = defs().resolve_asset_graph()
    for name in WEEKLY_ASSETS:
        key = dg.AssetKey(name)
        node = graph.get(key)
        pdef = node.partitions_def
        assert isinstance(pdef, dg.WeeklyPartitionsDefinition), key
        assert pdef.day_offset == 1 and pdef.timezone == "UTC"
        assert node.code_version and "+" in node.code_version
        assert node.group_name == "training"


def test_frame_checks_are_blocking():
    checks = [c for a in defs().assets for c in a.check_specs]
    assert {(c.asset_key.to_user_string(), c.name) for c in checks} == {
        ("training_frame", "leakage_audit_clean"),
        ("training_frame", "frame_matches_feature_schema"),
    }
    assert all(c.blocking for c in checks)


def test_sensor_schedule_and_jobs_are_defined():
    d = defs()
    assert d.resolve_sensor_def("publish_pass_bundles").job_name == "publish_bundle"
    schedule = d.resolve_schedule_def("weekly_training_schedule")
    assert schedule.cron_schedule == "0 * * * *"  # hourly: a week runs once its inputs land
    assert d.resolve_job_def("weekly_training") is not None


def test_launchpad_config_documents_every_field_and_matches_the_contract():
    def walk(cls):
        for name, info in cls.model_fields.items():
            assert info.description, f"{cls.__name__}.{name} has no description"
            assert not info.is_required(), f"{cls.__name__}.{name} has no default"
            ann = info.annotation
            if isinstance(ann, type) and issubclass(ann, dg.Config):
                walk(ann)

    walk(TrainingConfig)
    assert to_contract(TrainingConfig()) == TrainingConfigContract()
    custom = TrainingConfig(hyperparams={"max_depth": 3}, thresholds=[0.2])
    assert to_contract(custom).hyperparams.max_depth == 3
    assert to_contract(custom).thresholds == [0.2]


def test_triggered_by_reads_dagster_run_tags():
    assert triggered_by({"dagster/backfill": "abc"}) == "backfill:abc"
    assert triggered_by({"dagster/schedule_name": "s"}) == "schedule:s"
    assert triggered_by({"dagster/sensor_name": "p"}) == "sensor:p"
    assert triggered_by({"dagster/user": "ana"}) == "user:ana"
    assert triggered_by({}) == "ui"


def test_dagster_cli_validates_the_workspace(tmp_path):
    env = {**os.environ, "DAGSTER_HOME": str(tmp_path)}
    (tmp_path / "dagster.yaml").write_text((ROOT / "dagster.yaml").read_text())
    out = subprocess.run(
        [sys.executable, "-m", "dagster", "definitions", "validate", "-w", "workspace.yaml"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 0, out.stdout + out.stderr


@pytest.mark.parametrize(
    "config, field",
    [
        ({"thresholds": [0.5, 1.5]}, "thresholds"),
        ({"evaluation": {"top_k_per_day": [0]}}, "evaluation.top_k_per_day"),
        ({"event_features": [], "feature_group_versions": []}, "event_features"),
    ],
)
def test_a_launchpad_config_breaking_a_rule_names_the_field_a_config_file_would(config, field):
    """The launchpad and `--config` report a broken rule under the same field name."""
    from model_factory.contracts import TrainingConfig as Contract
    from model_factory.core.documents import parse_document
    from model_factory.defs.config import TrainingConfig, to_contract
    from model_factory.errors import ConfigError

    with pytest.raises(ConfigError) as launchpad:
        to_contract(TrainingConfig(**config))
    with pytest.raises(ConfigError) as file:
        parse_document(config, Contract, source="cfg.json", error=ConfigError)
    assert launchpad.value.field == file.value.field == field
