"""The public contracts: the committed JSON Schema is generated from the pydantic models, and a
document either both of them accept or both of them reject."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import jsonschema
import pydantic
import pytest
from pydantic import BaseModel

from model_factory import contracts
from model_factory.contracts import (
    PUBLIC_CONTRACTS,
    DatasetManifest,
    PublishBundleRequest,
    TrainingConfig,
    TrainingRunRecord,
)
from model_factory.core.demo_data import DemoDataSpec, generate_demo_data
from model_factory.core.documents import parse_document
from model_factory.core.manifests import Catalog
from model_factory.core.schema import export_schema, schema_for
from model_factory.errors import ModelFactoryError

COMMITTED = Path(__file__).resolve().parents[1] / "contracts" / "mf_public_contracts_v0.schema.json"
# Shared pieces, not documents: they travel inside documents and carry no version of their own.
UNVERSIONED = {"TimeWindow", "ArtifactRef", "MetricSet"}


def _committed() -> dict[str, Any]:
    return json.loads(COMMITTED.read_text())


def _validators(name: str) -> list[jsonschema.Draft202012Validator]:
    """Draft 2020-12 validators for one contract: from schema_for and from the committed file."""
    committed = _committed()
    wrapped = {
        "$schema": committed["$schema"],
        "$ref": f"#/$defs/{name}",
        "$defs": committed["$defs"],
    }
    return [
        jsonschema.Draft202012Validator(schema_for(name)),
        jsonschema.Draft202012Validator(wrapped),
    ]


def _assert_valid(name: str, doc: dict[str, Any]) -> None:
    for validator in _validators(name):
        errors = [e.message for e in validator.iter_errors(doc)]
        assert errors == [], f"{name} rejected by the JSON Schema: {errors}"


def _assert_invalid(name: str, model: type[BaseModel], doc: dict[str, Any]) -> None:
    with pytest.raises(pydantic.ValidationError):
        model.model_validate(doc)
    for validator in _validators(name):
        assert not validator.is_valid(doc), f"{name}: the JSON Schema accepted a tampered document"


def _versioned_models() -> list[type[BaseModel]]:
    return [
        m
        for m in vars(contracts).values()
        if isinstance(m, type) and issubclass(m, BaseModel) and "schema_version" in m.model_fields
    ]


@pytest.fixture(scope="module")
def demo_catalog(tmp_path_factory: pytest.TempPathFactory) -> Catalog:
    url = str(tmp_path_factory.mktemp("contracts_demo") / "catalog")
    generate_demo_data(url, DemoDataSpec(customers=300, terminals=600, weeks=2))
    return Catalog(url)


def test_committed_schema_equals_a_fresh_export():
    assert COMMITTED.read_text() == export_schema(), (
        f"{COMMITTED} is out of date with model_factory/contracts.py: "
        "run `model-factory contracts export` and commit the result"
    )


def test_committed_schema_is_a_valid_draft_2020_12_schema():
    schema = _committed()

    jsonschema.Draft202012Validator.check_schema(schema)
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    assert {m.__name__ for m in PUBLIC_CONTRACTS} <= set(schema["$defs"])


@pytest.mark.parametrize("model", _versioned_models(), ids=lambda m: m.__name__)
def test_schema_version_defaults_to_mf_name_v0_and_admits_nothing_else(model):
    expected = f"mf.{model.__name__}.v0"

    assert model.model_fields["schema_version"].default == expected
    assert (
        _committed()["$defs"][model.__name__]["properties"]["schema_version"]["const"] == expected
    )


def test_every_public_document_is_versioned():
    versioned = {m.__name__ for m in _versioned_models()}
    public = {m.__name__ for m in PUBLIC_CONTRACTS}

    assert public - versioned == UNVERSIONED
    assert versioned <= public, f"versioned but not exported: {sorted(versioned - public)}"


def test_default_training_config_validates_against_the_committed_schema():
    doc = TrainingConfig().model_dump(mode="json")

    assert doc["schema_version"] == "mf.TrainingConfig.v0"
    _assert_valid("TrainingConfig", doc)


def test_demo_catalog_manifests_validate_against_the_committed_schema(demo_catalog):
    root = Path(demo_catalog.url) / "datasets"
    files = sorted(root.rglob("*.json"))

    assert len(files) == 5 * 2  # five datasets, two weeks
    for path in files:
        doc = json.loads(path.read_bytes())  # the bytes on disk, not a re-dump
        _assert_valid("DatasetManifest", doc)
        assert DatasetManifest.model_validate(doc).model_dump(mode="json") == doc


def _run_record(demo_catalog: Catalog) -> dict[str, Any]:
    entry = demo_catalog.entries("events", "transactions", "v1")[0]
    return TrainingRunRecord(
        train_run_id="mfr-" + "0123456789abcdef0123",
        status="running",
        partition_key="2026-01-05",
        model_family="fraud_xgb",
        config_hash="c" * 64,
        code_version="0.1.0+abc",
        input_dataset_manifests=[entry.ref],
        outputs=[],
        created_at_utc=datetime(2026, 1, 12, tzinfo=UTC),
    ).model_dump(mode="json")


def test_a_valid_run_record_passes_both_validators(demo_catalog):
    doc = _run_record(demo_catalog)

    TrainingRunRecord.model_validate(doc)
    _assert_valid("TrainingRunRecord", doc)


@pytest.mark.parametrize(
    "version",
    ["mf.TrainingConfig.v1", "mf.DatasetManifest.v0", "TrainingConfig", ""],
)
def test_training_config_with_a_wrong_schema_version_is_rejected_by_both(version):
    doc = {**TrainingConfig().model_dump(mode="json"), "schema_version": version}

    _assert_invalid("TrainingConfig", TrainingConfig, doc)


def test_manifest_with_a_wrong_schema_version_is_rejected_by_both(demo_catalog):
    entry = demo_catalog.entries("labels", "chargebacks", "v1")[0]
    doc = {**entry.manifest.model_dump(mode="json"), "schema_version": "mf.DatasetManifest.v1"}

    _assert_invalid("DatasetManifest", DatasetManifest, doc)


@pytest.mark.parametrize(
    "run_id",
    [
        "mfr-0123",  # too short
        "mfr-0123456789ABCDEF0123",  # upper case
        "mfb-0123456789abcdef0123",  # a bundle id
        "mfr-0123456789abcdef01234",  # too long
        "0123456789abcdef0123",  # no prefix
    ],
)
def test_run_record_with_a_bad_train_run_id_is_rejected_by_both(demo_catalog, run_id):
    doc = {**_run_record(demo_catalog), "train_run_id": run_id}

    _assert_invalid("TrainingRunRecord", TrainingRunRecord, doc)


def test_publish_request_with_a_bad_bundle_id_is_rejected_by_both():
    good = PublishBundleRequest(
        bundle_uri="file:///b.json", bundle_id="mfb-" + "a" * 20
    ).model_dump(mode="json")
    _assert_valid("PublishBundleRequest", good)

    _assert_invalid(
        "PublishBundleRequest", PublishBundleRequest, {**good, "bundle_id": "mfr-" + "a" * 20}
    )


def test_unknown_field_is_rejected_by_both():
    doc = {**TrainingConfig().model_dump(mode="json"), "learning_rate": 0.3}

    _assert_invalid("TrainingConfig", TrainingConfig, doc)


def test_train_run_id_definition_agrees_with_the_pydantic_type():
    validator = jsonschema.Draft202012Validator(schema_for("TrainRunId"))

    assert validator.is_valid("mfr-" + "0" * 20)
    assert not validator.is_valid("mfr-" + "0" * 19)
    assert not validator.is_valid("mfr-" + "g" * 20)


@pytest.mark.parametrize(
    ("doc", "field"),
    [
        ({"event_features": ["amount", "is_night", "amount"]}, "event_features"),
        ({"entity_keys": ["customer_id", "customer_id"]}, "entity_keys"),
    ],
)
def test_a_column_selected_twice_is_refused_naming_the_field(doc, field):
    """Two frame columns of one name crashed the frame build with a DuplicateError, after
    intake had already written its receipt (found in review)."""
    with pytest.raises(ModelFactoryError) as info:
        parse_document(doc, contracts.TrainingConfig, source="config.json")
    assert (info.value.source, info.value.field) == ("config.json", field)
    assert "more than once" in str(info.value)


@pytest.mark.parametrize("name", ["risk__v2", "risk_"])
def test_a_feature_group_name_that_could_take_another_groups_column_names_is_refused(name):
    """Its columns are named <group>__<column>: group risk__v2's column is_fraud passed the
    audit as risk's v2__is_fraud, past the governance denial of is_fraud, and groups risk_
    (column x) and risk (column _x) both named a column risk___x (found in review)."""
    doc = {"feature_group_versions": [{"name": name, "version": "v1"}]}
    with pytest.raises(ModelFactoryError) as info:
        parse_document(doc, contracts.TrainingConfig, source="config.json")
    assert (info.value.source, info.value.field) == ("config.json", "feature_group_versions")
    assert name in str(info.value)
