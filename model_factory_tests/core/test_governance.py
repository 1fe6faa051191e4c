"""Governance: PII by name and pattern, who may trigger, policy files."""

import json

import pytest

from model_factory.contracts import (
    GateCriterionSpec,
    GateOverride,
    GateSettings,
    GovernancePolicy,
    TrainingConfig,
    _default_meanings,
)
from model_factory.core.canonical import canonical_json, sha256_hex
from model_factory.core.governance import (
    check_gate_policy,
    check_leakage_checks,
    check_model_family,
    check_triggerer,
    pii_columns,
    policy_digest,
)
from model_factory.core.intake import _check_feature
from model_factory.core.settings import Settings, load_policy
from model_factory.errors import ConfigError, PolicyViolationError, SchemaMismatchError


@pytest.mark.parametrize(
    "column", ["card_number", "CardNumber", "customer_email", "phone_home", "iban", "ssn_hash"]
)
def test_pii_columns_are_found_by_name_or_pattern(column):
    assert pii_columns(GovernancePolicy(), [column, "amount"]) == [column]


@pytest.mark.parametrize(
    "column",
    [
        "ｐｈｏｎｅ",  # fullwidth
        "phone\u200b",  # a zero-width space
        "ip_address ",
        " EMAIL",
        "card\u00adnumber",  # a soft hyphen
        "\u0440hone",  # a Cyrillic р
        "ph\u03bfne",  # a Greek ο
        "full\u00a0name",  # a no-break space
        "full-name",
        "full\u2010name",  # a Unicode hyphen
        "full\u2212name",  # a minus sign
        "ip\u00b7address",
        "ip/address",
        "card__number",
        "emai\u04cf",  # a Cyrillic palochka for the l
        "\u1d18hone",  # a small capital P
    ],
)
def test_pii_is_found_under_the_name_a_reader_sees(column):
    """Only lowercased before: a fullwidth, zero-width-spaced, soft-hyphenated, blank-padded or
    look-alike-lettered PII name passed the policy (found in review)."""
    assert pii_columns(GovernancePolicy(), [column]) == [column]


@pytest.mark.parametrize("column", ["amount ", " amount", "amo\u200bunt", "amount\u0007"])
def test_a_feature_name_with_what_a_reader_cannot_see_is_refused(column):
    with pytest.raises(SchemaMismatchError) as info:
        _check_feature(column, column, "double", "events.json", "event_features")
    assert (info.value.source, info.value.field) == ("events.json", "event_features")


def test_names_in_other_scripts_and_units_stay_features():
    """Greek letters, units and other scripts are honest names (the first version refused
    latency_µs and Δamount_7d; found by the diff review)."""
    for fine in ("amount", "montant_é", "金額", "latency_µs", "area_m²", "Δamount_7d", "ＡＢ"):
        _check_feature(fine, fine, "double", "events.json", "event_features")
        assert pii_columns(GovernancePolicy(), [fine]) == []


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


def _gates_with(name: str, **change) -> GateSettings:
    """The default criteria, with the one called ``name`` changed."""
    criteria = TrainingConfig().gates.criteria
    return GateSettings(
        criteria=[c.model_copy(update=change) if c.name == name else c for c in criteria]
    )


@pytest.mark.parametrize(
    ("name", "change", "field"),
    [
        # the weakening found in review: the point value under the name of its CI lower bound
        ("roc_auc_lower", {"kind": "point"}, "kind"),
        # a count of positives under the name of PR-AUC's CI lower bound
        ("pr_auc_lower", {"metric": "positives", "kind": "point"}, "metric"),
        ("brier", {"metric": "log_loss"}, "metric"),
    ],
)
def test_a_criterion_keeps_the_metric_and_kind_its_name_has_under_the_policy(name, change, field):
    gates = _gates_with(name, **change)
    index = [c.name for c in gates.criteria].index(name)
    with pytest.raises(PolicyViolationError) as info:
        check_gate_policy(gates, GovernancePolicy(), "policy.yaml")
    assert (info.value.source, info.value.field) == (
        "policy.yaml",
        f"gates.criteria[{index}].{field}",
    )
    # a policy that gives the name that meaning allows it
    meaning = GovernancePolicy().criterion_meanings[name].model_dump() | change
    check_gate_policy(gates, GovernancePolicy(criterion_meanings={name: meaning}), None)


def test_a_narrower_confidence_level_is_refused_below_the_policys():
    """At 0.51 a CI lower bound sits near the point value: a config kept every floor and still
    passed a week that failed at 0.95 (found in review)."""
    narrow = GateSettings(confidence_level=0.51)
    with pytest.raises(PolicyViolationError) as info:
        check_gate_policy(narrow, GovernancePolicy(), "policy.yaml")
    assert (info.value.source, info.value.field) == ("policy.yaml", "gates.confidence_level")
    check_gate_policy(GateSettings(confidence_level=0.99), GovernancePolicy(), None)
    check_gate_policy(narrow, GovernancePolicy(min_confidence_level=0.5001), None)
    # left at its default, the field keeps the digests of the policies written before it
    assert policy_digest(GovernancePolicy(min_confidence_level=0.95)) == policy_digest(
        GovernancePolicy()
    )


@pytest.mark.parametrize(
    ("reason", "approver"),
    [(" " * 10, "alice"), ("a" * 9 + "\u200b", "alice"), ("risk accepted for Q2", "\u200b")],
)
def test_an_override_needs_a_visible_reason_and_approver(reason, approver):
    """Ten spaces passed as a reason and a zero-width space as an approver: the receipt and
    registry then read 'FORCED PASS by :' (found in review)."""
    with pytest.raises(ValueError, match="visible"):
        GateOverride(reason=reason, approver=approver)
    # kept as written: the text is part of the config's hash (a YAML block's closing newline)
    kept = GateOverride(reason="risk accepted for Q2\n", approver=" alice")
    assert (kept.reason, kept.approver) == ("risk accepted for Q2\n", " alice")


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"gates": {"leakage": {"ceilings": {"pr_auc": 0.95}}}}, "gates.leakage.ceilings.roc_auc"),
        (
            {"gates": {"leakage": {"ceilings": {"roc_auc": 0.999, "pr_auc": 0.95}}}},
            "gates.leakage.ceilings.roc_auc",
        ),
        (
            {"gates": {"leakage": {"canary_max_deviation": 0.3}}},
            "gates.leakage.canary_max_deviation",
        ),
        ({"gates": {"leakage": {"canary_max_z": 10}}}, "gates.leakage.canary_max_z"),
        (
            {"evaluation": {"shuffled_label_canary": {"enabled": False}}},
            "evaluation.shuffled_label_canary.enabled",
        ),
    ],
)
def test_a_config_keeps_the_leakage_checks_the_policy_asks_for(change, field):
    """No override lifts a suspected_leakage verdict, but a config could drop the ceilings or the
    canary that reach it (noted in an earlier session, tried in review)."""
    config = TrainingConfig.model_validate(change)
    with pytest.raises(PolicyViolationError) as info:
        check_leakage_checks(config, GovernancePolicy(), "policy.yaml")
    assert (info.value.source, info.value.field) == ("policy.yaml", field)
    loose = GovernancePolicy(
        leakage_limits={"ceilings": {}, "canary_max_deviation": 0.5, "canary_max_z": 20},
        require_shuffled_label_canary=False,
    )
    check_leakage_checks(config, loose, None)
    check_leakage_checks(TrainingConfig(), GovernancePolicy(), None)
    stricter = TrainingConfig.model_validate(
        {"gates": {"leakage": {"ceilings": {"roc_auc": 0.98, "pr_auc": 0.9}}}}
    )
    check_leakage_checks(stricter, GovernancePolicy(), None)
    assert policy_digest(loose) != policy_digest(GovernancePolicy())


def test_only_the_policys_model_families_may_be_trained():
    """A new family has no champion: a weaker model passed a mandatory non-inferiority
    criterion as 'first model' by renaming its family (found in review)."""
    policy = GovernancePolicy(model_families=["fraud_xgb"])
    with pytest.raises(PolicyViolationError) as info:
        check_model_family(policy, "fraud_xgb_b", "policy.yaml")
    assert (info.value.source, info.value.field) == ("policy.yaml", "model_family")
    check_model_family(policy, "fraud_xgb", None)
    check_model_family(GovernancePolicy(), "anything", None)  # no list: any family
    assert policy_digest(GovernancePolicy(model_families=None)) == policy_digest(GovernancePolicy())


def test_only_the_policys_approvers_may_override():
    override = GateOverride(reason="risk accepted for Q2", approver="mallory")
    gates = GateSettings(override=override)
    policy = GovernancePolicy(override_approvers=["risk-*", "alice"])
    with pytest.raises(PolicyViolationError) as info:
        check_gate_policy(gates, policy, "policy.yaml")
    assert info.value.field == "gates.override.approver" and "mallory" in str(info.value)
    check_gate_policy(
        GateSettings(override=override.model_copy(update={"approver": "risk-bob"})), policy, None
    )
    check_gate_policy(gates, GovernancePolicy(), None)  # no list: anyone, recorded by name
    assert policy_digest(GovernancePolicy(override_approvers=None)) == policy_digest(
        GovernancePolicy()
    )


def test_a_policy_names_its_own_criteria_meanings_and_keeps_the_defaults(tmp_path):
    path = tmp_path / "p.yaml"
    path.write_text(
        "gate_floors:\n  roc_point: 0.8\n"
        "criterion_meanings:\n  roc_point: {metric: roc_auc, kind: point}\n"
    )
    policy = load_policy(str(path))
    assert policy.criterion_meanings["roc_point"].kind == "point"
    assert policy.criterion_meanings["roc_auc_lower"].kind == "ci_lower_bound"
    gates = GateSettings(
        criteria=[
            *TrainingConfig().gates.criteria,
            GateCriterionSpec(
                name="roc_point", metric="roc_auc", kind="stability", threshold=0.1, weeks=2
            ),
        ]
    )
    with pytest.raises(PolicyViolationError) as info:
        check_gate_policy(gates, policy, str(path))
    assert info.value.field == f"gates.criteria[{len(gates.criteria) - 1}].kind"


def test_a_policy_of_its_own_names_without_meanings_still_loads(tmp_path):
    """Policies written before criterion_meanings existed keep loading (and their digest):
    a name without a meaning is checked by name only, as it was."""
    path = tmp_path / "p.yaml"
    path.write_text(
        "gate_floors:\n  recall_at_review: 0.5\nmandatory_criteria: [recall_at_review]\n"
    )
    policy = load_policy(str(path))
    gates = GateSettings(
        criteria=[
            *TrainingConfig().gates.criteria,
            GateCriterionSpec(
                name="recall_at_review", metric="pr_auc", kind="point", threshold=0.6
            ),
        ]
    )
    check_gate_policy(gates, policy, str(path))


def test_a_policy_that_leaves_criterion_meanings_at_the_default_keeps_its_earlier_digest():
    """Bundles pin the policy's digest: the field added later must not change the digest of a
    policy that does not use it, or every earlier bundle would stop reproducing."""
    # the built-in default policy's digest since before the field existed (bundles pin it)
    assert policy_digest(GovernancePolicy()) == (
        "6d24f81ae2a02b171386242761b13e5c6f36785a3f16cfaebffbf215e52fa150"
    )
    for policy in (GovernancePolicy(), GovernancePolicy(pii_columns=["secret"])):
        earlier = policy.model_dump(mode="json")
        del earlier["criterion_meanings"]  # the document before the fields existed
        del earlier["min_confidence_level"]
        del earlier["override_approvers"]
        del earlier["model_families"]
        del earlier["leakage_limits"]
        del earlier["require_shuffled_label_canary"]
        del earlier["vetted_features"]
        assert policy_digest(policy) == sha256_hex(canonical_json(earlier))
        explicit = policy.model_copy(update={"criterion_meanings": _default_meanings()})
        assert policy_digest(explicit) == policy_digest(policy)
    changed = GovernancePolicy(criterion_meanings={"x": {"metric": "roc_auc", "kind": "point"}})
    assert policy_digest(changed) != policy_digest(GovernancePolicy())


def test_a_pii_pattern_too_large_to_compile_names_its_field(tmp_path):
    path = tmp_path / "p.yaml"
    path.write_text('pii_patterns: ["x{99999999999}"]\n')  # an OverflowError, not a re.error
    with pytest.raises(PolicyViolationError) as info:
        load_policy(str(path))
    assert (info.value.source, info.value.field) == (str(path), "pii_patterns[0]")


@pytest.mark.parametrize(
    "name", ["MODEL_FACTORY_CATALOG", "MODEL_FACTORY_STORE", "MODEL_FACTORY_HOME"]
)
def test_a_location_that_is_a_file_is_a_config_error_naming_the_setting(tmp_path, name):
    afile = tmp_path / "not-a-folder"
    afile.write_text("")
    with pytest.raises(ConfigError) as info:
        Settings.from_env({name: str(afile)})
    assert (info.value.source, info.value.field) == (str(afile), name)


@pytest.mark.parametrize("root", ["", "   "])
def test_an_empty_data_root_is_refused_not_taken_as_the_working_directory(tmp_path, root):
    path = tmp_path / "p.json"
    path.write_text(json.dumps({"data_roots": ["/data", root]}))
    with pytest.raises(PolicyViolationError) as info:
        load_policy(str(path))
    assert (info.value.source, info.value.field) == (str(path), "data_roots[1]")
