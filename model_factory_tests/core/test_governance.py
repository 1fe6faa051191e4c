"""Governance: PII by name and pattern, who may trigger, policy files."""

import json

import pytest

from model_factory.contracts import GovernancePolicy
from model_factory.core.governance import check_triggerer, pii_columns
from model_factory.core.settings import Settings, load_policy
from model_factory.errors import ConfigError, PolicyViolationError


@pytest.mark.parametrize(
    "column", ["card_number", "CardNumber", "customer_email", "phone_home", "iban", "ssn_hash"]
)
def test_pii_columns_are_found_by_name_or_pattern(column):
    assert pii_columns(GovernancePolicy(), [column, "amount"]) == [column]


@pytest.mark.parametrize(
    "column", ["amount", "terminal_risk__term_risk_28d", "is_night", "company", "expansion"]
)
def test_ordinary_columns_are_not_pii(column):
    assert pii_columns(GovernancePolicy(), [column]) == []


def test_only_allowed_triggerers_may_train():
    policy = GovernancePolicy(allowed_triggerers=["schedule:*", "backfill:*"])
    check_triggerer(policy, "schedule:weekly_training_schedule", "p.json")
    with pytest.raises(PolicyViolationError) as info:
        check_triggerer(policy, "ui", "p.json")
    assert info.value.source == "p.json" and info.value.field == "allowed_triggerers"
    check_triggerer(GovernancePolicy(), "anyone", None)  # no list: anyone may


def test_policy_files_load_from_json_and_yaml(tmp_path):
    (tmp_path / "p.json").write_text(json.dumps({"pii_columns": ["secret"]}))
    (tmp_path / "p.yaml").write_text("gate_floors:\n  roc_auc_lower: 0.9\n")
    assert load_policy(str(tmp_path / "p.json")).pii_columns == ["secret"]
    assert load_policy(str(tmp_path / "p.yaml")).gate_floors["roc_auc_lower"] == 0.9
    assert load_policy(None) == GovernancePolicy()


def test_a_malformed_policy_names_the_file_and_field(tmp_path):
    path = tmp_path / "p.json"
    path.write_text(json.dumps({"gate_floors": {"roc_auc_lower": "high"}}))
    with pytest.raises(PolicyViolationError) as info:
        load_policy(str(path))
    assert info.value.source == str(path)
    assert info.value.field == "gate_floors.roc_auc_lower"


def test_settings_come_from_the_environment_with_defaults_under_home(tmp_path):
    s = Settings.from_env({"MODEL_FACTORY_HOME": str(tmp_path)})
    assert s.catalog_url == str(tmp_path / "catalog")
    assert s.store_url == str(tmp_path / "store")
    assert s.registry_url == str(tmp_path / "registry")
    assert s.dagster_home == tmp_path / "dagster"
    custom = Settings.from_env(
        {
            "MODEL_FACTORY_HOME": str(tmp_path),
            "MODEL_FACTORY_STORE": "memory://store",
            "MODEL_FACTORY_START_WEEK": "2026-03-02",
        }
    )
    assert custom.store_url == "memory://store" and custom.start_week == "2026-03-02"
    with pytest.raises(ConfigError) as info:
        Settings.from_env({"MODEL_FACTORY_START_WEEK": "2026-03-03"})
    assert info.value.field == "MODEL_FACTORY_START_WEEK"
    # a typo in a write mode fails when the settings are read, not at the first write
    with pytest.raises(ConfigError) as info:
        Settings.from_env({"MODEL_FACTORY_OTHER_FS_WRITES": "sometimes"})
    assert info.value.field == "MODEL_FACTORY_OTHER_FS_WRITES"


def test_dagster_home_gets_the_project_instance_settings(tmp_path):
    home = Settings.from_env({"MODEL_FACTORY_HOME": str(tmp_path)}).ensure_dagster_home()
    text = (home / "dagster.yaml").read_text()
    assert "telemetry" in text and "enabled: false" in text
