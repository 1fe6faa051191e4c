"""Bad input fails at intake with an error naming the file and the field, before anything is
written (ARCHITECTURE §9)."""

from __future__ import annotations

import hashlib
import json
import re
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from model_factory.contracts import (
    DatasetSelector,
    GovernancePolicy,
    IntakeReceipt,
    TimeWindow,
    TrainingConfig,
)
from model_factory.core.intake import intake
from model_factory.core.manifests import Catalog, read_manifest, verify_manifest_files
from model_factory.core.registry import FileRegistry
from model_factory.core.runs import FactoryEnv, stage_intake
from model_factory.core.storage import ArtifactStore
from model_factory.errors import (
    DigestMismatchError,
    ManifestError,
    MissingInputError,
    ModelFactoryError,
    PolicyViolationError,
    SchemaMismatchError,
)
from model_factory_tests.conftest import SMALL_DEMO

SPEC = SMALL_DEMO  # the `pristine` and `home` fixtures of conftest.py hold it
WEEK = "2026-03-09"  # the last trainable week of SPEC: its data span covers weeks 3..10
TAMPERED_WINDOW = "20260202T000000Z_20260209T000000Z"  # inside that span for every dataset
DATASETS = [
    pytest.param("events/transactions/v1", id="events"),
    pytest.param("labels/chargebacks/v1", id="labels"),
    pytest.param("feature_group/terminal_risk/v1", id="feature-group"),
]


def _env(home: Path, policy: GovernancePolicy | None = None) -> FactoryEnv:
    return FactoryEnv(
        Catalog(str(home / "catalog")),
        ArtifactStore(str(home / "store")),
        FileRegistry(str(home / "registry")),
        policy or GovernancePolicy(),
    )


def _tree(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def _manifest_path(home: Path, dataset: str) -> Path:
    return home / "catalog" / "datasets" / dataset / f"{TAMPERED_WINDOW}.json"


def _data_path(home: Path, dataset: str) -> Path:
    return home / "catalog" / "datasets" / dataset / TAMPERED_WINDOW / "part-0.parquet"


def _edit_manifest(path: Path, edit) -> None:
    doc: dict[str, Any] = json.loads(path.read_bytes())
    edit(doc)
    path.write_text(json.dumps(doc))


def _fails_before_writing(
    home: Path,
    error: type[ModelFactoryError],
    config: TrainingConfig | None = None,
    policy: GovernancePolicy | None = None,
) -> ModelFactoryError:
    """Run intake and the intake stage; both raise ``error``, and nothing is written anywhere."""
    env = _env(home, policy)
    config = config or TrainingConfig()
    catalog_before = _tree(home / "catalog")
    with pytest.raises(error) as direct:
        intake(env.catalog, config, WEEK, env.policy)
    with pytest.raises(error) as staged:
        stage_intake(env, config, WEEK)
    assert str(staged.value) == str(direct.value)
    assert not (home / "store").exists()
    assert not (home / "registry").exists()
    assert _tree(home / "catalog") == catalog_before
    return direct.value


def test_clean_catalog_passes_intake_and_the_stage_writes_its_receipt(home):
    # The control for every test below: the same call on untouched input does write.
    result = stage_intake(_env(home), TrainingConfig(), WEEK)

    stored = sorted(str(p) for p in (home / "store").rglob("*") if p.is_file())
    policy = _env(home).store.blob_uri(result.doc.policy_digest, ".json")
    assert stored == sorted([result.ref.uri, policy])  # the receipt and the policy it pinned
    receipt = IntakeReceipt.model_validate_json(Path(result.ref.uri).read_bytes())
    assert receipt.partition_key == WEEK
    assert len(receipt.input_dataset_manifests) == result.counts["manifests"] > 0


# -------------------------------------------------------------------- data files vs manifest


@pytest.mark.parametrize("dataset", DATASETS)
def test_wrong_file_digest_is_a_digest_mismatch_naming_manifest_and_field(home, dataset):
    manifest = _manifest_path(home, dataset)
    _edit_manifest(manifest, lambda d: d["files"][0].update(sha256="0" * 64))

    err = _fails_before_writing(home, DigestMismatchError)

    assert err.source == str(manifest)
    assert err.field == "files[0].sha256"
    assert str(manifest) in str(err)
    assert "files[0].sha256" in str(err)
    assert str(_data_path(home, dataset)) in str(err)
    assert err.code == "digest_mismatch"


def test_data_file_changed_after_the_manifest_is_a_digest_mismatch(home):
    dataset = "events/transactions/v1"
    data = _data_path(home, dataset)
    table = pq.read_table(data)
    pq.write_table(table.slice(1), data)  # one row fewer, same schema

    err = _fails_before_writing(home, DigestMismatchError)

    assert err.source == str(_manifest_path(home, dataset))
    assert err.field == "files[0].sha256"


@pytest.mark.parametrize("dataset", DATASETS)
def test_missing_data_file_is_a_missing_input_naming_file_and_field(home, dataset):
    data = _data_path(home, dataset)
    data.unlink()

    err = _fails_before_writing(home, MissingInputError)

    assert err.source == str(_manifest_path(home, dataset))
    assert err.field == "files[0].path"
    assert str(data) in str(err)
    assert "files[0].path" in str(err)


def _rewrite_with_float32_amount(home: Path) -> Path:
    """Rewrite one events file with 'amount' as float32 and re-pin its digest and size, so the
    schema is the only thing that differs from the manifest."""
    dataset = "events/transactions/v1"
    data = _data_path(home, dataset)
    table = pq.read_table(data)
    table = table.set_column(
        table.schema.get_field_index("amount"), "amount", table["amount"].cast(pa.float32())
    )
    pq.write_table(table, data)
    digest = hashlib.sha256(data.read_bytes()).hexdigest()
    manifest = _manifest_path(home, dataset)
    _edit_manifest(
        manifest, lambda d: d["files"][0].update(sha256=digest, size_bytes=data.stat().st_size)
    )
    return manifest


def _rewrite(home: Path, dataset: str, change, window: str = TAMPERED_WINDOW) -> Path:
    """Rewrite one file of ``dataset`` with ``change`` (a pyarrow Table -> Table) and re-pin the
    manifest's digest, size, row count and column types, as `manifest create` would."""
    data = home / "catalog" / "datasets" / dataset / window / "part-0.parquet"
    table = change(pq.read_table(data))
    pq.write_table(table, data)
    digest = hashlib.sha256(data.read_bytes()).hexdigest()
    manifest = home / "catalog" / "datasets" / dataset / f"{window}.json"

    def edit(doc: dict[str, Any]) -> None:
        doc["files"][0].update(sha256=digest, size_bytes=data.stat().st_size, rows=table.num_rows)
        doc["row_count"] = table.num_rows
        doc["columns"] = [{"name": f.name, "dtype": str(f.type)} for f in table.schema]

    _edit_manifest(manifest, edit)
    return manifest


def _with_ids(table: pa.Table, ids: list) -> pa.Table:
    index = table.schema.get_field_index("event_id")
    return table.set_column(index, "event_id", pa.array(ids, table.schema.field(index).type))


def test_a_repeated_event_id_is_refused_naming_the_dataset(home):
    ids = pq.read_table(_data_path(home, "events/transactions/v1"))["event_id"].to_pylist()
    manifest = _rewrite(home, "events/transactions/v1", lambda t: _with_ids(t, [ids[0], *ids[:-1]]))

    err = _fails_before_writing(home, SchemaMismatchError)

    assert (err.source, err.field) == (str(manifest), "event_id") and "repeat" in str(err)


def test_an_event_id_of_another_week_is_refused_naming_both(home):
    other = "20260209T000000Z_20260216T000000Z"
    taken = pq.read_table(
        home / "catalog" / "datasets" / "events/transactions/v1" / other / "part-0.parquet"
    )["event_id"][0].as_py()
    ids = pq.read_table(_data_path(home, "events/transactions/v1"))["event_id"].to_pylist()
    _rewrite(home, "events/transactions/v1", lambda t: _with_ids(t, [taken, *ids[1:]]))

    err = _fails_before_writing(home, SchemaMismatchError)

    assert err.field == "event_id" and repr(taken) in str(err)
    assert TAMPERED_WINDOW in f"{err.source} {err}" and other in f"{err.source} {err}"


def test_a_null_event_id_is_refused(home):
    ids = pq.read_table(_data_path(home, "events/transactions/v1"))["event_id"].to_pylist()
    manifest = _rewrite(home, "events/transactions/v1", lambda t: _with_ids(t, [None, *ids[1:]]))

    err = _fails_before_writing(home, SchemaMismatchError)

    assert (err.source, err.field) == (str(manifest), "event_id") and "no event_id" in str(err)


def test_labels_whose_event_id_has_another_type_than_the_events_are_refused(home):
    folder = home / "catalog" / "datasets" / "labels/chargebacks/v1"
    manifests = [
        _rewrite(
            home,
            "labels/chargebacks/v1",
            lambda t: t.set_column(  # the events' ids are text: these are numbers
                t.schema.get_field_index("event_id"),
                "event_id",
                pa.array(range(t.num_rows), pa.int64()),
            ),
            window=m.stem,
        )
        for m in sorted(folder.glob("*.json"))  # every week: one schema across weeks
    ]

    err = _fails_before_writing(home, SchemaMismatchError)

    assert err.source in map(str, manifests) and err.field == "event_id"
    assert "int64 here but text in the events" in str(err)


def test_labels_with_signed_ids_for_events_with_unsigned_ids_are_refused(home):
    """uint64 ids of 2**63 and more, stored signed by the labels' system, would match no
    event: frauds silently negatives (found in the diff review)."""
    unsigned = lambda t: t.set_column(  # noqa: E731
        t.schema.get_field_index("event_id"),
        "event_id",
        pa.array([2**63 + i for i in range(t.num_rows)], pa.uint64()),
    )
    signed = lambda t: t.set_column(  # noqa: E731
        t.schema.get_field_index("event_id"),
        "event_id",
        pa.array(range(t.num_rows), pa.int64()),
    )
    for dataset, change in (
        ("events/transactions/v1", unsigned),
        ("labels/chargebacks/v1", signed),
    ):
        for m in sorted((home / "catalog" / "datasets" / dataset).glob("*.json")):
            _rewrite(home, dataset, change, window=m.stem)

    err = _fails_before_writing(home, SchemaMismatchError)

    assert err.field == "event_id" and "int64 here but unsigned integer in the events" in str(err)


def test_labels_whose_event_id_is_another_text_type_than_the_events_are_accepted(home):
    """string against large_string (pandas against Polars): one type to the join (the check
    refused it at first; found in the diff review)."""
    folder = home / "catalog" / "datasets" / "labels/chargebacks/v1"
    for m in sorted(folder.glob("*.json")):
        _rewrite(
            home,
            "labels/chargebacks/v1",
            lambda t: t.set_column(
                t.schema.get_field_index("event_id"), "event_id", t["event_id"].cast(pa.string())
            ),
            window=m.stem,
        )
    env = _env(home)
    receipt, _ = intake(env.catalog, TrainingConfig(), WEEK, env.policy)
    assert receipt.train_run_id


@pytest.mark.parametrize(
    ("dataset", "column", "says"),
    [
        ("feature_group/terminal_risk/v1", "available_at", "lacks column 'available_at'"),
        ("events/transactions/v1", "event_time", "lack column 'event_time'"),
    ],
)
def test_a_dataset_without_the_time_the_join_reads_is_refused(home, dataset, column, says):
    """Renamed (say to published_at, given as the manifest's time column), the column the
    builder reads was a KeyError or a Polars error mid-frame (found in review)."""
    folder = home / "catalog" / "datasets" / dataset
    manifests = []
    for m in sorted(folder.glob("*.json")):  # every week: one schema across weeks
        manifests.append(
            _rewrite(
                home,
                dataset,
                lambda t: t.rename_columns(
                    ["published_at" if c == column else c for c in t.schema.names]
                ),
                window=m.stem,
            )
        )
        # the manifest's window is on that column: it names the renamed one
        _edit_manifest(m, lambda d: d.update(time_column="published_at"))

    err = _fails_before_writing(home, SchemaMismatchError)

    assert err.source in map(str, manifests) and err.field == "columns" and says in str(err)


def test_the_event_id_as_an_entity_key_builds_a_frame(home):
    """It may key an event-level feature group; listed with the frame's own event_id column it
    was selected twice, a DuplicateError once intake had passed (found in review)."""
    from model_factory.core.frames import build_training_frame

    env = _env(home)
    config = TrainingConfig(entity_keys=["customer_id", "terminal_id", "event_id"])
    receipt, inputs = intake(env.catalog, config, WEEK, env.policy)
    built = build_training_frame(receipt, inputs, env.policy).frame

    assert built.height > 0 and built.columns.count("event_id") == 1


def test_labels_without_a_label_family_column_are_the_manifests_family(home):
    """The column is optional (the manifest names its family); intake let such labels through,
    and the frame builder then failed on the missing column (found in review)."""
    from model_factory.core.frames import build_training_frame

    env = _env(home)
    before, inputs = intake(env.catalog, TrainingConfig(), WEEK, env.policy)
    expected = build_training_frame(before, inputs, env.policy).frame
    folder = home / "catalog" / "datasets" / "labels/chargebacks/v1"
    for m in sorted(folder.glob("*.json")):
        _rewrite(home, "labels/chargebacks/v1", lambda t: t.drop(["label_family"]), window=m.stem)

    receipt, inputs = intake(env.catalog, TrainingConfig(), WEEK, env.policy)
    built = build_training_frame(receipt, inputs, env.policy).frame

    assert built.equals(expected)


def test_data_file_with_another_schema_is_a_schema_mismatch_naming_the_column(home):
    manifest = _rewrite_with_float32_amount(home)

    err = _fails_before_writing(home, SchemaMismatchError)

    assert err.source == str(manifest)
    assert err.field is not None and err.field.startswith("files[0]")
    assert "amount" in str(err)
    assert "float" in str(err)


def test_verify_manifest_files_checks_digest_presence_and_schema(home):
    dataset = "events/transactions/v1"
    manifest = _manifest_path(home, dataset)
    verify_manifest_files(read_manifest(str(manifest)), str(manifest))  # clean: no error

    _rewrite_with_float32_amount(home)
    with pytest.raises(SchemaMismatchError):
        verify_manifest_files(read_manifest(str(manifest)), str(manifest))

    _edit_manifest(manifest, lambda d: d["files"][0].update(sha256="f" * 64))
    with pytest.raises(DigestMismatchError) as digest:
        verify_manifest_files(read_manifest(str(manifest)), str(manifest))
    assert (digest.value.source, digest.value.field) == (str(manifest), "files[0].sha256")

    _data_path(home, dataset).unlink()
    with pytest.raises(MissingInputError) as missing:
        verify_manifest_files(read_manifest(str(manifest)), str(manifest))
    assert (missing.value.source, missing.value.field) == (str(manifest), "files[0].path")


def test_wrong_row_count_is_a_manifest_error_naming_the_field(home):
    dataset = "labels/chargebacks/v1"
    manifest = _manifest_path(home, dataset)
    _edit_manifest(
        manifest,
        lambda d: (
            d["files"][0].update(rows=d["files"][0]["rows"] + 1),
            d.update(row_count=d["row_count"] + 1),
        ),
    )

    err = _fails_before_writing(home, ManifestError)

    assert (err.source, err.field) == (str(manifest), "files[0].rows")


# ---------------------------------------------------------------------- malformed manifests


@pytest.mark.parametrize(
    ("edit", "field"),
    [
        pytest.param(lambda d: d.update(row_count="many"), r"row_count", id="bad-type"),
        pytest.param(lambda d: d.pop("keys"), r"keys", id="missing-field"),
        pytest.param(
            lambda d: d["files"][0].update(rows="x"),
            r"files(\.0|\[0\])\.rows",
            id="bad-nested-type",
        ),
        pytest.param(
            lambda d: d["files"][0].update(sha256="not-hex"),
            r"files(\.0|\[0\])\.sha256",
            id="bad-digest-pattern",
        ),
        pytest.param(
            lambda d: d.update(schema_version="mf.DatasetManifest.v9"),
            r"schema_version",
            id="other-contract-version",
        ),
        pytest.param(lambda d: d.update(surprise=1), r"surprise", id="unknown-field"),
        # rules across fields name the field they are about, not "(document)"
        pytest.param(
            lambda d: d.update(row_count=d["row_count"] + 1), r"row_count", id="row-count-sum"
        ),
        pytest.param(lambda d: d.update(keys=["terminal_id", "x"]), r"keys", id="undeclared"),
        pytest.param(lambda d: d.update(kind="labels"), r"label_family", id="labels-no-family"),
        pytest.param(lambda d: d.update(kind="events"), r"ttl_seconds", id="ttl-not-a-group"),
    ],
)
def test_malformed_manifest_is_a_manifest_error_naming_file_and_field(home, edit, field):
    manifest = _manifest_path(home, "feature_group/terminal_risk/v1")
    _edit_manifest(manifest, edit)

    err = _fails_before_writing(home, ManifestError)

    assert err.source == str(manifest)
    assert err.field is not None
    assert re.fullmatch(field, err.field), err.field
    assert str(manifest) in str(err)
    assert err.field in str(err)


def test_manifest_that_is_not_json_is_a_manifest_error_naming_the_file(home):
    manifest = _manifest_path(home, "events/transactions/v1")
    manifest.write_bytes(b'{"kind": "events", "files": [')

    err = _fails_before_writing(home, ManifestError)

    assert err.source == str(manifest)
    assert err.field == "(document)"
    assert "JSON" in str(err)


# ---------------------------------------------------------------- config and governance


def test_unknown_feature_group_is_a_missing_input(home):
    config = TrainingConfig(
        feature_group_versions=[
            DatasetSelector(name="terminal_risk", version="v1"),
            DatasetSelector(name="merchant_risk", version="v1"),
        ]
    )

    err = _fails_before_writing(home, MissingInputError, config=config)

    assert err.field == "feature_group:merchant_risk/v1"
    assert "merchant_risk" in str(err)
    assert err.source == str(home / "catalog")


def test_unknown_feature_group_version_is_a_missing_input(home):
    config = TrainingConfig(
        feature_group_versions=[
            DatasetSelector(name="terminal_risk", version="v2"),
        ]
    )

    err = _fails_before_writing(home, MissingInputError, config=config)

    assert err.field == "feature_group:terminal_risk/v2"


def test_selecting_a_pii_event_column_is_a_policy_violation(home):
    config = TrainingConfig(event_features=["amount", "card_number"])

    err = _fails_before_writing(home, PolicyViolationError, config=config)

    assert err.field == "event_features"
    assert "card_number" in str(err)
    assert err.source is not None and "datasets/events/transactions/v1/" in err.source


def test_pii_is_recognised_by_pattern_too(home):
    # The column exists in the data, so only the policy's pattern can refuse it.
    policy = GovernancePolicy(pii_columns=[])
    config = TrainingConfig(event_features=["amount", "card_number"])

    err = _fails_before_writing(home, PolicyViolationError, config=config, policy=policy)

    assert err.field == "event_features"


def test_a_text_event_feature_is_refused_at_intake_not_in_training(home):
    # card_number is text; with no PII rule to stop it first, the model could not train on it
    policy = GovernancePolicy(pii_columns=[], pii_patterns=[])
    config = TrainingConfig(event_features=["amount", "card_number"])

    err = _fails_before_writing(home, SchemaMismatchError, config=config, policy=policy)

    assert err.field == "event_features"
    assert "card_number" in str(err) and "large_string" in str(err)


def test_a_frame_column_named_as_an_event_feature_is_refused(home):
    config = TrainingConfig(event_features=["amount", "event_id"])

    err = _fails_before_writing(home, SchemaMismatchError, config=config)

    assert err.field == "event_features" and "event_id" in str(err)


@pytest.mark.parametrize(
    ("change", "field", "name"),
    [
        # found in review: the label's observed time would have become this feature
        ({"event_features": ["amount", "__label_observed"]}, "event_features", "__label_observed"),
        ({"event_features": ["amount", "label_cut"]}, "event_features", "label_cut"),
        ({"event_features": ["amount", "__row"]}, "event_features", "__row"),
        (
            {"event_features": ["amount", "customer_spending__cust_tx_count_1d"]},
            "event_features",
            "customer_spending__cust_tx_count_1d",
        ),
        ({"entity_keys": ["customer_id", "split"]}, "entity_keys", "split"),
        ({"entity_keys": ["customer_id", "event_time"]}, "entity_keys", "event_time"),
    ],
)
def test_an_events_column_named_as_a_working_column_of_the_builder_is_refused(
    home, change, field, name
):
    err = _fails_before_writing(home, SchemaMismatchError, config=TrainingConfig(**change))

    assert err.field == field and f"['{name}']" in str(err)
    assert "overwrite" in str(err)


@pytest.mark.parametrize(
    ("dtype", "name", "refused"),
    [
        ("double", "spend", False),
        ("int8", "is_night", False),
        ("bool", "flag", False),
        ("halffloat", "x", False),
        ("large_string", "channel", True),
        ("dictionary<values=string, indices=int32, ordered=0>", "channel", True),
        ("timestamp[us, tz=UTC]", "seen_at", True),
        ("double", "amount[eur]", True),
        ("double", "amount<0", True),
    ],
)
def test_features_must_be_numbers_under_names_xgboost_takes(dtype, name, refused):
    from model_factory.core.intake import _check_feature

    if not refused:
        _check_feature(name, name, dtype, "m.json", name)
        return
    with pytest.raises(SchemaMismatchError) as info:
        _check_feature(name, name, dtype, "m.json", name)
    assert info.value.source == "m.json" and info.value.field == name


def test_policy_window_that_excludes_the_week_is_a_policy_violation(home):
    # Week 2026-03-09 needs data up to its cut, 2026-03-16; the policy stops at 2026-03-09.
    policy = GovernancePolicy(
        allowed_data_window=TimeWindow(
            start=datetime(2026, 1, 1, tzinfo=UTC), end=datetime(2026, 3, 9, tzinfo=UTC)
        )
    )

    err = _fails_before_writing(home, PolicyViolationError, policy=policy)

    assert err.field == "allowed_data_window"
    assert "2026-03-16" in str(err)
    assert "2026-03-09" in str(err)


def test_policy_window_that_includes_the_week_lets_intake_through(home):
    policy = GovernancePolicy(
        allowed_data_window=TimeWindow(
            start=datetime(2026, 1, 1, tzinfo=UTC), end=datetime(2026, 3, 16, tzinfo=UTC)
        )
    )

    receipt, _ = intake(_env(home, policy).catalog, TrainingConfig(), WEEK, policy)

    assert receipt.partition_key == WEEK


def test_excluded_range_touching_the_week_is_a_policy_violation(home):
    policy = GovernancePolicy(
        excluded_ranges=[
            TimeWindow(
                start=datetime(2026, 2, 10, tzinfo=UTC), end=datetime(2026, 2, 11, tzinfo=UTC)
            )
        ]
    )

    err = _fails_before_writing(home, PolicyViolationError, policy=policy)

    assert err.field == "excluded_ranges[0]"


def _rewrite_all(home: Path, dataset: str, change) -> list[Path]:
    """``_rewrite`` of every week of ``dataset``: one schema across weeks."""
    folder = home / "catalog" / "datasets" / dataset
    return [_rewrite(home, dataset, change, window=m.stem) for m in sorted(folder.glob("*.json"))]


def _column_as(name: str, values) -> Any:
    return lambda t: t.set_column(t.schema.get_field_index(name), name, values(t[name]))


@pytest.mark.parametrize(
    ("values", "kind"),
    [
        (lambda c: c.cast(pa.string()), "string"),  # matched no event: every feature null
        (lambda c: pc.add(c.cast(pa.float64()), 0.9), "double"),  # 2.9 read as 2
        (lambda c: c.cast(pa.uint64()), "uint64"),  # hashes of 2**63 and more: a raw cast error
    ],
    ids=["text", "float", "unsigned"],
)
def test_a_feature_group_keyed_by_another_kind_than_the_events_column_is_refused(
    home, values, kind
):
    """The snapshots' key was cast to the events' type when joined: wrong values with the
    audit passing, or a raw Polars error after intake (found in review)."""
    manifests = _rewrite_all(
        home, "feature_group/terminal_risk/v1", _column_as("terminal_id", values)
    )

    err = _fails_before_writing(home, SchemaMismatchError)

    assert err.source in map(str, manifests) and err.field == "keys"
    assert f"'terminal_id' is {kind} here but int64 (signed integer) in the events" in str(err)


@pytest.mark.parametrize(
    ("dataset", "column", "values"),
    [
        # unsigned ids against wider signed ones: every value fits (refused at first; found in
        # the diff review)
        ("feature_group/terminal_risk/v1", "terminal_id", lambda c: c.cast(pa.uint32())),
        # a pandas category: text, dictionary-encoded
        (
            "labels/chargebacks/v1",
            "label_family",
            lambda c: c.cast(pa.string()).dictionary_encode(),
        ),
    ],
    ids=["uint32-key", "dictionary-family"],
)
def test_types_that_join_by_value_are_accepted(home, dataset, column, values):
    from model_factory.core.frames import build_training_frame

    _rewrite_all(home, dataset, _column_as(column, values))
    env = _env(home)
    receipt, inputs = intake(env.catalog, TrainingConfig(), WEEK, env.policy)
    built = build_training_frame(receipt, inputs, env.policy)

    assert built.audit.passed and built.frame["label"].sum() > 0
    assert built.frame["terminal_risk__term_tx_count_28d"].null_count() < built.frame.height


def test_a_feature_group_key_wider_than_the_events_column_builds_a_frame(home):
    """int16 terminal ids in the events, int64 in the group with one id beyond int16: no event
    can have it, so its snapshots match none (a strict cast of the group's keys raised)."""
    from model_factory.core.frames import build_training_frame

    _rewrite_all(
        home, "events/transactions/v1", _column_as("terminal_id", lambda c: c.cast(pa.int16()))
    )
    _rewrite_all(
        home,
        "feature_group/terminal_risk/v1",
        _column_as(
            "terminal_id",
            lambda c: pa.array([40_000, *c.to_pylist()[1:]], pa.int64()),
        ),
    )
    env = _env(home)
    receipt, inputs = intake(env.catalog, TrainingConfig(), WEEK, env.policy)
    built = build_training_frame(receipt, inputs, env.policy)

    assert built.audit.passed and built.frame.height > 0
    assert built.frame["terminal_risk__term_tx_count_28d"].null_count() < built.frame.height


@pytest.mark.parametrize("column", ["__tiebreak", "__join_at", "__row"])
def test_a_feature_group_column_named_as_a_working_column_of_the_builder_is_refused(home, column):
    """__tiebreak silently became the tiebreak of snapshots of one time; __join_at a raw
    DuplicateError (found in review)."""
    manifests = _rewrite_all(
        home,
        "feature_group/terminal_risk/v1",
        lambda t: t.append_column(column, pa.array([0.0] * t.num_rows, pa.float64())),
    )

    err = _fails_before_writing(home, SchemaMismatchError)

    assert err.source in map(str, manifests) and err.field == column
    assert "frame builder" in str(err)


def test_a_valid_from_column_named_as_a_working_column_of_the_builder_is_refused(home):
    """The join time __join_at is written first: a valid_from column of that name became the
    tiebreak's available_at, unseen (found in the diff review)."""
    manifests = _rewrite_all(
        home,
        "feature_group/terminal_risk/v1",
        lambda t: t.rename_columns(
            ["__join_at" if n == "valid_from" else n for n in t.column_names]
        ),
    )
    for m in manifests:
        _edit_manifest(m, lambda doc: doc.update(valid_from_column="__join_at"))

    err = _fails_before_writing(home, SchemaMismatchError)

    assert err.source in map(str, manifests) and err.field == "valid_from_column"
    assert "frame builder" in str(err)


def test_a_label_family_column_that_is_not_text_is_refused_naming_it(home):
    manifests = _rewrite_all(
        home,
        "labels/chargebacks/v1",
        _column_as("label_family", lambda c: pa.array([1] * len(c), pa.int64())),
    )

    err = _fails_before_writing(home, SchemaMismatchError)

    assert err.source in map(str, manifests) and err.field == "label_family"
    assert "int64" in str(err)
