"""The `model-factory` command: manifests, contracts export and demo data, through click."""

from __future__ import annotations

import hashlib
import json
import os
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner

from model_factory.cli import main
from model_factory.contracts import DatasetManifest, TimeWindow
from model_factory.core.demo_data import DemoDataSpec, demo_data_present
from model_factory.core.manifests import Catalog, manifest_digest
from model_factory.core.schema import export_schema

MONDAY = datetime(2026, 1, 5, tzinfo=UTC)


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("MODEL_FACTORY_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("MODEL_FACTORY_CATALOG", str(tmp_path / "catalog"))
    for var in ("MODEL_FACTORY_STORE", "MODEL_FACTORY_REGISTRY", "MODEL_FACTORY_POLICY"):
        monkeypatch.delenv(var, raising=False)
    return tmp_path


@pytest.fixture
def parquet_files(tmp_path: Path) -> list[str]:
    """Two events files of the week of MONDAY."""
    out = []
    for k in range(2):
        table = pa.table(
            {
                "event_id": pa.array([f"tx-{k}-{i}" for i in range(3)]),
                "event_time": pa.array(
                    [MONDAY + timedelta(days=k, hours=i) for i in range(3)],
                    pa.timestamp("us", tz="UTC"),
                ),
                "amount": pa.array([1.0, 2.0, 3.0]),
            }
        )
        path = tmp_path / "in" / f"part-{k}.parquet"
        path.parent.mkdir(exist_ok=True)
        pq.write_table(table, path)
        out.append(str(path))
    return out


def _invoke(*args: str):
    return CliRunner().invoke(main, list(args))


CREATE = [
    "manifest",
    "create",
    "--kind",
    "events",
    "--name",
    "transactions",
    "--version",
    "v1",
    "--keys",
    "event_id",
]


def test_manifest_create_writes_the_manifest_to_out(home, parquet_files):
    out = home / "m.json"

    result = _invoke(
        *CREATE, "--start", "2026-01-05", "--end", "2026-01-12", "--out", str(out), *parquet_files
    )

    assert result.exit_code == 0, result.output
    m = DatasetManifest.model_validate_json(out.read_text())
    assert [f.path for f in m.files] == parquet_files
    assert [f.sha256 for f in m.files] == [
        hashlib.sha256(Path(p).read_bytes()).hexdigest() for p in parquet_files
    ]
    assert m.row_count == 6
    assert m.time_window == TimeWindow(start=MONDAY, end=MONDAY + timedelta(days=7))
    assert not (home / "catalog").exists()  # --out writes there instead of the catalog


def test_manifest_create_takes_a_window_with_an_offset_as_that_instant_in_utc(home, parquet_files):
    """A pydantic traceback before (found in review): the contracts hold UTC times only."""
    out = home / "m.json"
    window = ["--start", "2026-01-05T01:00:00+01:00", "--end", "2026-01-12T00:00:00Z"]

    result = _invoke(*CREATE, *window, "--out", str(out), *parquet_files)

    assert result.exit_code == 0, result.output
    m = DatasetManifest.model_validate_json(out.read_text())
    assert m.time_window.start == MONDAY  # 01:00 at +01:00 is midnight UTC


def _corrupt_pages(path: Path, column: str | None = None) -> None:
    """Garbage over every data page (or over ``column``'s only); the footer (schema, row counts)
    still reads."""
    meta = pq.ParquetFile(path).metadata
    raw = bytearray(path.read_bytes())
    chunks = [meta.row_group(0).column(c) for c in range(meta.num_columns)]
    if column is None:
        start = min(c.data_page_offset for c in chunks)
        end = len(raw) - 8 - meta.serialized_size
    else:
        chunk = next(c for c in chunks if c.path_in_schema == column)
        start = chunk.dictionary_page_offset or chunk.data_page_offset
        end = start + chunk.total_compressed_size
    raw[start:end] = bytes((i * 7 + 3) % 251 for i in range(end - start))
    path.write_bytes(bytes(raw))


def test_manifest_create_and_validate_name_a_file_whose_pages_are_corrupt(
    home, parquet_files, data_roots
):
    """create: a Polars traceback; validate: "ok" for a file intake then refused (found in
    review). Both now read every page, as intake does, and name the file in one line."""
    out = home / "m.json"
    assert _invoke(*CREATE, "--out", str(out), *parquet_files).exit_code == 0
    damaged = Path(parquet_files[1])
    _corrupt_pages(damaged)
    doc = json.loads(out.read_text())
    doc["files"][1].update(
        sha256=hashlib.sha256(damaged.read_bytes()).hexdigest(), size_bytes=damaged.stat().st_size
    )
    out.write_text(json.dumps(doc))  # the digest re-pinned after the damage

    validated = _invoke("manifest", "validate", str(out))
    created = _invoke(*CREATE, "--out", str(home / "again.json"), *parquet_files)

    for result in (validated, created):
        assert result.exit_code == 2, result.output
        [line] = [x for x in result.output.splitlines() if x.startswith("error")]
        assert "not readable parquet" in line and str(damaged) in line
        assert "Traceback" not in result.output
    assert not (home / "again.json").exists()


def test_manifest_create_of_files_without_rows_names_them_and_asks_for_a_window(home, tmp_path):
    empty = tmp_path / "empty.parquet"
    pq.write_table(
        pa.table(
            {
                "event_id": pa.array([], pa.string()),
                "event_time": pa.array([], pa.timestamp("us", tz="UTC")),
            }
        ),
        empty,
    )

    result = _invoke(*CREATE, "--out", str(tmp_path / "m.json"), str(empty))

    assert result.exit_code == 2
    assert f"file {empty}, field 'time_window'" in result.output and "--start" in result.output
    window = ["--start", "2026-01-05", "--end", "2026-01-12"]
    assert _invoke(*CREATE, *window, "--out", str(tmp_path / "m.json"), str(empty)).exit_code == 0


def test_manifest_create_reads_every_column_not_only_the_time(home, parquet_files):
    """Damage in a column other than the time was not read by create (found in the second
    diff review)."""
    _corrupt_pages(Path(parquet_files[0]), column="amount")

    result = _invoke(*CREATE, "--out", str(home / "m.json"), *parquet_files)

    assert result.exit_code == 2
    assert "not readable parquet" in result.output and parquet_files[0] in result.output
    assert not (home / "m.json").exists()


def test_manifest_create_never_writes_over_another_file(home, parquet_files):
    """An --out naming an existing file (a catalog manifest, say) was overwritten in place; now
    another content is refused and kept, and the same manifest again is a no-op."""
    out = home / "m.json"
    window = ["--start", "2026-01-05", "--end", "2026-01-12"]
    assert _invoke(*CREATE, *window, "--out", str(out), *parquet_files).exit_code == 0
    written = out.read_bytes()

    again = _invoke(*CREATE, *window, "--out", str(out), *parquet_files)
    assert again.exit_code == 0 and "already at" in again.output
    other = _invoke(*CREATE, *window, "--out", str(out), parquet_files[0])

    assert other.exit_code == 2
    assert f"file {out}, field '--out'" in other.output and "other content" in other.output
    assert out.read_bytes() == written
    assert [p.name for p in home.iterdir() if p.name.startswith(".tmp-")] == []


def test_manifest_create_adds_the_manifest_to_the_catalog_from_the_environment(home, parquet_files):
    result = _invoke(*CREATE, *parquet_files)

    assert result.exit_code == 0, result.output
    entries = Catalog(str(home / "catalog")).entries("events", "transactions", "v1")
    assert len(entries) == 1
    # No window given: the whole days the data spans (5 and 6 January).
    assert entries[0].manifest.time_window == TimeWindow(
        start=MONDAY, end=MONDAY + timedelta(days=2)
    )
    assert entries[0].uri in result.stderr
    assert entries[0].digest in result.stderr
    assert result.stderr.startswith("manifest added to the catalog: ")

    again = _invoke(*CREATE, *parquet_files)  # the same manifest again: a no-op, said as one
    assert again.exit_code == 0, again.output
    assert again.stderr.startswith(f"manifest already in the catalog: {entries[0].uri}")


def test_manifest_create_to_an_explicit_catalog(home, parquet_files):
    other = home / "other_catalog"

    result = _invoke(*CREATE, "--catalog", str(other), *parquet_files)

    assert result.exit_code == 0, result.output
    assert len(Catalog(str(other)).entries("events", "transactions", "v1")) == 1
    assert not (home / "catalog").exists()


def test_manifest_create_with_a_row_outside_the_window_exits_2(home, parquet_files):
    result = _invoke(*CREATE, "--start", "2026-01-05", "--end", "2026-01-06", *parquet_files)

    assert result.exit_code == 2
    assert "error [manifest_invalid]" in result.stderr
    assert "time_window" in result.stderr
    assert not (home / "catalog").exists()


def test_manifest_create_with_only_a_start_exits_2(home, parquet_files):
    result = _invoke(*CREATE, "--start", "2026-01-05", *parquet_files)

    assert result.exit_code == 2
    assert "error [config_invalid]" in result.stderr


@pytest.fixture
def data_roots(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A policy whose data_roots hold the parquet files (they lie outside the catalog)."""
    policy = tmp_path / "policy.json"
    policy.write_text(json.dumps({"data_roots": [str(tmp_path / "in")]}))
    monkeypatch.setenv("MODEL_FACTORY_POLICY", str(policy))
    return policy


def test_manifest_validate_prints_ok_for_a_good_manifest(home, parquet_files, data_roots):
    out = home / "m.json"
    assert _invoke(*CREATE, "--out", str(out), *parquet_files).exit_code == 0

    result = _invoke("manifest", "validate", str(out))

    assert result.exit_code == 0, result.output
    assert result.stdout.startswith("ok")
    assert str(out) in result.stdout
    assert "events:transactions/v1" in result.stdout
    assert "6 rows in 2 file(s)" in result.stdout


def test_manifest_validate_of_a_tampered_manifest_exits_2_naming_the_file(
    home, parquet_files, data_roots
):
    out = home / "m.json"
    assert _invoke(*CREATE, "--out", str(out), *parquet_files).exit_code == 0
    doc = json.loads(out.read_text())
    doc["files"][1]["sha256"] = "0" * 64
    out.write_text(json.dumps(doc))

    result = _invoke("manifest", "validate", str(out))

    assert result.exit_code == 2
    assert "error [digest_mismatch]" in result.stderr
    assert str(out) in result.stderr
    assert "files[1].sha256" in result.stderr
    assert "Traceback" not in result.output
    assert "ok" not in result.stdout


def test_manifest_validate_checks_every_manifest_and_names_each_bad_one(
    home, parquet_files, data_roots
):
    good, bad, missing = home / "good.json", home / "bad.json", home / "missing.json"
    assert _invoke(*CREATE, "--out", str(good), *parquet_files).exit_code == 0
    bad.write_text("{not json")

    result = _invoke("manifest", "validate", str(bad), str(good), str(missing))

    assert result.exit_code == 2
    assert result.stdout.startswith("ok") and str(good) in result.stdout  # checked after a bad one
    errors = result.stderr.splitlines()
    assert errors[0].startswith(f"error [manifest_invalid]: file {bad}")
    assert errors[1].startswith(f"error [missing_input]: file {missing}")
    assert errors[2] == "2 of 3 manifest(s) refused"


def test_manifest_validate_refuses_files_outside_the_catalog_as_intake_would(home, parquet_files):
    """Created into a catalog from files elsewhere, a manifest that intake (frame build, run)
    would refuse is refused by validate too, naming the manifest and the file's field."""
    created = _invoke(*CREATE, *parquet_files)
    assert created.exit_code == 0
    [entry] = Catalog(str(home / "catalog")).entries("events", "transactions", "v1")
    # said at once, not first at the run
    assert "warning: intake will refuse this manifest" in created.stderr
    assert f"remove {entry.uri}, move the files and create it again" in created.stderr

    result = _invoke("manifest", "validate", entry.uri)

    assert result.exit_code == 2, result.output
    assert "error [manifest_invalid]" in result.stderr
    assert entry.uri in result.stderr
    assert "field 'files[0].path'" in result.stderr
    # the catalog root, and the policy's own data_roots (none here), each said as what it is
    assert f"outside the catalog root {home / 'catalog'} and the policy's data_roots []" in (
        result.stderr
    )
    assert "ok" not in result.stdout


def test_manifest_validate_accepts_files_under_the_catalog_or_the_policy_data_roots(
    home, parquet_files, monkeypatch
):
    assert _invoke(*CREATE, "--catalog", str(home / "in"), *parquet_files).exit_code == 0
    [entry] = Catalog(str(home / "in")).entries("events", "transactions", "v1")

    # the files lie under the catalog given
    inside = _invoke("manifest", "validate", "--catalog", str(home / "in"), entry.uri)
    # under MODEL_FACTORY_CATALOG only with the policy's data_roots
    policy = home / "policy.json"
    policy.write_text(json.dumps({"data_roots": [str(home / "in")]}))
    monkeypatch.setenv("MODEL_FACTORY_POLICY", str(policy))
    allowed = _invoke("manifest", "validate", entry.uri)

    assert inside.exit_code == 0, inside.output
    assert allowed.exit_code == 0, allowed.output
    assert inside.stdout.startswith("ok") and allowed.stdout.startswith("ok")


@pytest.mark.parametrize(
    "args, field",
    [
        (["demo-data", "--start", "2026-1-5"], "--start"),
        (["demo-data", "--start", "2026-01-06"], "--start"),  # a Tuesday
        ([*CREATE, "--start", "yesterday", "--end", "2026-01-12", "x.parquet"], "--start"),
        ([*CREATE, "--start", "2026-01-05", "--end", "2026-13-01", "x.parquet"], "--end"),
        ([*CREATE, "--start", "2026-01-12", "--end", "2026-01-05", "x.parquet"], "--end"),
        (["run", "--from", "2026-02-24", "--to", "2026-03-02"], "--from"),
        (["run", "--from", "2026-02-23", "--to", "20260302"], "--to"),
        (["ledger", "--week", "2026-03-03"], "--week"),
        (["frame", "build", "--partition", "2026-03-03", "--out", "f.parquet"], "--partition"),
    ],
)
def test_a_bad_date_on_the_command_line_exits_2_naming_the_option(home, args, field):
    result = _invoke(*args)

    assert result.exit_code == 2, result.output
    assert result.stderr.startswith("error [")
    assert f"field '{field}'" in result.stderr
    assert "Traceback" not in result.output
    assert not (home / "catalog").exists()
    assert not (home / "home").exists()  # no instance, store or registry made


@pytest.mark.parametrize(
    "args",
    [
        ["run", "--from", "2026-03-02", "--to", "2026-03-02"],
        ["frame", "build", "--partition", "2026-03-02", "--out", "f.parquet"],
    ],
)
def test_a_missing_config_file_exits_2_naming_it(home, args):
    missing = home / "missing.json"

    result = _invoke(*args, "--config", str(missing))

    assert result.exit_code == 2, result.output
    assert result.stderr.startswith("error [missing_input]")
    assert str(missing) in result.stderr
    assert "field '--config'" in result.stderr
    assert not (home / "home").exists()


def test_a_config_file_breaking_a_one_field_rule_names_that_field(home):
    config = home / "c.json"
    config.write_text(json.dumps({"thresholds": [0.5, 1.5]}))

    result = _invoke("run", "--from", "2026-03-02", "--to", "2026-03-02", "--config", str(config))

    assert result.exit_code == 2, result.output
    assert result.stderr.startswith("error [config_invalid]")
    assert "field 'thresholds'" in result.stderr


@pytest.mark.parametrize(
    "first, last, field, says",
    [
        ("2026-02-16", "2026-03-02", "--from", "MODEL_FACTORY_START_WEEK"),
        ("2026-03-02", "2099-12-28", "--to", "not closed yet"),
        ("2099-12-28", "2099-12-28", "--from", "not closed yet"),
    ],
)
def test_run_of_a_week_outside_the_partitions_exits_2_before_running_any(
    home, monkeypatch, first, last, field, says
):
    monkeypatch.setenv("DAGSTER_HOME", str(home / "dagster"))

    result = _invoke("run", "--from", first, "--to", last)

    assert result.exit_code == 2, result.output
    assert result.stderr.startswith("error [config_invalid]")
    assert f"field '{field}'" in result.stderr
    assert says in result.stderr
    assert not (home / "dagster").exists()  # nothing ran, not even the valid weeks


@pytest.fixture
def small_catalog(home: Path) -> Path:
    """A small demo catalog (10 weeks from 2026-01-05) where the home's settings look."""
    from model_factory.core.demo_data import generate_demo_data

    generate_demo_data(str(home / "catalog"), DemoDataSpec(customers=200, terminals=400, weeks=10))
    return home / "catalog"


@pytest.mark.slow
def test_run_json_tells_a_failed_week_from_one_without_results(home, small_catalog, monkeypatch):
    monkeypatch.setenv("DAGSTER_HOME", str(home / "dagster"))

    result = _invoke("run", "--from", "2026-06-01", "--to", "2026-06-01", "--json")

    assert result.exit_code == 1, result.output  # no data for that week: its intake fails
    [week] = [json.loads(line) for line in result.stdout.splitlines()]
    assert week["week"] == "2026-06-01"
    assert week["status"] == "failed"
    assert "MissingInputError" in week["error"]
    assert week["dagster_run_id"]
    assert week["train_run_id"] is None  # it failed before it had one
    # the error is in that line; Dagster's stack traces of the failed step stay in the UI
    assert "STEP_FAILURE" not in result.stderr and "Stack Trace" not in result.stderr


@pytest.mark.slow
def test_run_json_names_the_train_run_of_a_week_that_failed_after_intake(
    home, small_catalog, monkeypatch
):
    """The ledger lists such a run under its train run id; `run --json` said null (found in
    review)."""
    import dagster as dg

    from model_factory.defs import assets
    from model_factory.errors import ModelFactoryError
    from model_factory.ledger import read_ledger

    def planted(*args, **kwargs):
        raise ModelFactoryError("planted failure after intake")

    monkeypatch.setattr(assets, "stage_frame", planted)  # the step after intake fails
    monkeypatch.setenv("DAGSTER_HOME", str(home / "dagster"))

    result = _invoke("run", "--from", "2026-02-23", "--to", "2026-02-23", "--json")

    assert result.exit_code == 1, result.output
    [week] = [json.loads(line) for line in result.stdout.splitlines()]
    assert week["status"] == "failed" and "planted failure" in week["error"]
    with dg.DagsterInstance.from_config(str(home / "dagster")) as instance:
        [record] = read_ledger(instance, week="2026-02-23")
    assert week["train_run_id"] == record.train_run_id is not None


@pytest.mark.parametrize(
    "config, code, field, says",
    [
        # the default policy makes these criteria mandatory
        (
            {
                "gates": {
                    "criteria": [
                        {"name": "x", "metric": "roc_auc", "kind": "point", "threshold": 0.5}
                    ]
                }
            },
            "policy_violation",
            "gates.criteria",
            "(policy: built-in default policy)",
        ),
        (
            {"feature_group_versions": [{"name": "customer_profile", "version": "v9"}]},
            "missing_input",
            "feature_group_versions[0]",
            "no feature_group dataset 'customer_profile' version 'v9'",
        ),
        (
            {"events": {"name": "payments", "version": "v1"}},
            "missing_input",
            "events",
            "'payments'",
        ),
    ],
)
def test_run_refuses_a_config_every_week_would_fail_before_running_any(
    home, small_catalog, monkeypatch, config, code, field, says
):
    monkeypatch.setenv("DAGSTER_HOME", str(home / "dagster"))
    path = home / "cfg.json"
    path.write_text(json.dumps(config))

    result = _invoke("run", "--from", "2026-02-23", "--to", "2026-03-02", "--config", str(path))

    assert result.exit_code == 2, result.output
    assert result.stderr.startswith(f"error [{code}]: file {path}, field '{field}'")
    assert says in result.stderr
    assert len(result.stderr.splitlines()) == 1  # one line, no traceback
    assert not (home / "dagster").exists()  # nothing ran


def test_run_refuses_an_unvetted_feature_before_running_any(home, small_catalog, monkeypatch):
    """A policy's vetted_features are checked against every feature the config's frames would
    have (event columns and each group's columns, as the catalog's manifests name them)."""
    monkeypatch.setenv("DAGSTER_HOME", str(home / "dagster"))
    policy = home / "policy.json"
    policy.write_text(
        json.dumps(
            {"vetted_features": ["amount", "is_*", "customer_spending__*", "card_status__*"]}
        )
    )
    monkeypatch.setenv("MODEL_FACTORY_POLICY", str(policy))

    result = _invoke("run", "--from", "2026-02-23", "--to", "2026-03-02")

    assert result.exit_code == 2, result.output
    assert result.stderr.startswith(
        f"error [policy_violation]: file {policy}, field 'vetted_features'"
    )
    # the terminal group's columns are named, the vetted ones are not
    assert "terminal_risk__" in result.stderr
    assert "customer_spending__" not in result.stderr.split("are not among")[0]
    assert len(result.stderr.splitlines()) == 1
    assert not (home / "dagster").exists()  # nothing ran

    # vetted: the check lets the run start (a week without data, so it fails at once in intake)
    policy.write_text(json.dumps({"vetted_features": ["amount", "is_*", "*__*"]}))
    result = _invoke("run", "--from", "2026-06-01", "--to", "2026-06-01", "--json")
    assert result.exit_code == 1, result.output
    assert "MissingInputError" in json.loads(result.stdout)["error"]


@pytest.mark.slow
@pytest.mark.parametrize(
    "config, field",
    [
        ({"thresholds": [0.5, 1.5]}, "thresholds"),
        # one field's bounds: pydantic enforced them when Dagster built the Config (review)
        ({"split_policy": {"train_days": 0}}, "split_policy.train_days"),
        ({"hyperparams": {"subsample": 1.5}}, "hyperparams.subsample"),
    ],
)
def test_a_launchpad_config_error_is_reported_as_ours_not_as_its_cause(tmp_path, config, field):
    """The ConfigError (file and field) is what a failed run and the ledger show, not the
    pydantic ValidationError it was raised from."""
    import dagster as dg

    from model_factory.definitions import build_definitions
    from model_factory.defs.resources import ModelFactoryResource
    from model_factory.ledger import read_ledger
    from model_factory.runner import run_week

    defs = build_definitions(
        ModelFactoryResource(
            catalog_url=str(tmp_path / "catalog"),
            store_url=str(tmp_path / "store"),
            registry_url=str(tmp_path / "registry"),
        )
    )
    bad = {"ops": {"dataset_manifests": {"config": config}}}
    with dg.instance_for_test() as instance:
        summary = run_week(instance, defs, "2026-03-02", bad)
        [record] = read_ledger(instance, week="2026-03-02")

    assert summary.status == "failed"
    for error in (summary.error, record.error):
        assert "model_factory.errors.ConfigError" in error
        assert f"field '{field}'" in error
        assert "ValidationError" not in error


def test_contracts_export_writes_the_generated_schema(home):
    out = home / "nested" / "schema.json"

    result = _invoke("contracts", "export", "--out", str(out))

    assert result.exit_code == 0, result.output
    assert out.read_text() == export_schema()


def test_demo_data_creates_the_catalog_and_prints_a_json_summary(home):
    result = _invoke("demo-data", "--weeks", "9", "--customers", "300", "--terminals", "600")

    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    catalog_url = str(home / "catalog")
    assert summary["catalog_url"] == catalog_url
    assert summary["manifests"] == 5 * 9
    assert summary["customers"] == 300
    assert summary["terminals"] == 600
    assert summary["window"] == ["2026-01-05T00:00:00+00:00", "2026-03-09T00:00:00+00:00"]
    assert summary["rows"]["transactions"] > 0
    assert 0 < summary["fraud_rate"] < 1
    spec = DemoDataSpec(start=date(2026, 1, 5), weeks=9, customers=300, terminals=600)
    assert demo_data_present(catalog_url, spec)
    events = Catalog(catalog_url).entries("events", "transactions", "v1")
    assert sum(e.manifest.row_count for e in events) == summary["rows"]["transactions"]
    assert all(e.digest == manifest_digest(e.manifest) for e in events)


@pytest.mark.slow
def test_several_processes_opening_a_fresh_home_at_once_all_succeed(tmp_path: Path) -> None:
    """The first open of a SQLite instance creates its tables; processes starting together on a
    fresh home (two runs of a backfill, a run and `ledger`) must not race on that. Without the
    lock in `cli._instance` about one round in three lost a process ("already exists",
    "more than one head")."""
    import os
    import subprocess
    import sys

    cli = str(Path(sys.executable).parent / "model-factory")
    for round_ in range(4):
        home = tmp_path / f"home{round_}"
        env = {**os.environ, "MODEL_FACTORY_HOME": str(home), "DAGSTER_HOME": str(home / "dagster")}
        procs = [
            subprocess.Popen(
                [cli, "ledger", "--json"],
                env=env,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
            for _ in range(3)
        ]
        results = [(p.communicate(timeout=300), p.returncode) for p in procs]
        failed = [err[-400:] for (_, err), code in results if code != 0]
        assert not failed, failed
        assert (home / "dagster" / "dagster.yaml").exists()


def test_an_export_replaces_the_old_file_whole_or_not_at_all(tmp_path: Path) -> None:
    """`frame build --out` over an existing file: the new bytes replace it whole; if the copy
    fails, the old file is still there, and no temporary file is left either way."""
    import fsspec
    from fsspec.implementations.local import LocalFileSystem

    from model_factory.core.storage import replace_from_file

    out, new = tmp_path / "out" / "frame.parquet", tmp_path / "new.parquet"
    out.parent.mkdir()
    out.write_bytes(b"old frame")
    new.write_bytes(b"new frame" * 1000)
    replace_from_file(LocalFileSystem(), str(out), str(new))
    assert out.read_bytes() == new.read_bytes()
    with pytest.raises(FileNotFoundError):
        replace_from_file(LocalFileSystem(), str(out), str(tmp_path / "missing.parquet"))
    assert out.read_bytes() == new.read_bytes()
    assert [p.name for p in out.parent.iterdir()] == ["frame.parquet"]
    # another fsspec filesystem, a name without a folder: no folder is made of the name itself
    memory = fsspec.filesystem("memory")
    replace_from_file(memory, "mf-export-test.parquet", str(new))
    assert memory.cat_file("mf-export-test.parquet") == new.read_bytes()
    memory.rm("mf-export-test.parquet")


# ------------------------------------------------------------------------------ store sweep


def _killed_writer(folder: Path) -> Path:
    """A real writer SIGKILLed between writing its temporary file and linking the final name."""
    import subprocess
    import sys

    final = folder / "sha256" / "ab" / "abcdef"
    code = (
        "import sys; from fsspec.implementations.local import LocalFileSystem; "
        "from model_factory.core.storage import write_exclusive; "
        "write_exclusive(LocalFileSystem(), sys.argv[1], b'x' * 1000)"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code, str(final)],
        env={**os.environ, "MODEL_FACTORY_CRASH_AT": "link"},
        capture_output=True,
    )
    assert proc.returncode == -9, proc.stderr
    assert not final.exists()
    (partial,) = final.parent.glob(".tmp-*.partial")
    return partial


def _age(path: Path, hours: float) -> None:
    then = (datetime.now(UTC) - timedelta(hours=hours)).timestamp()
    os.utime(path, (then, then))


def test_store_sweep_removes_only_old_temporary_files(home: Path) -> None:
    store, registry, catalog = home / "home" / "store", home / "home" / "registry", home / "catalog"
    killed = _killed_writer(store)  # under the store, as the store writes them
    _age(killed, 48)
    stale_registry = registry / "records" / f".tmp-{'0' * 32}-r.json.partial"
    stale_catalog = catalog / "events" / "v1" / f".tmp-{'1' * 32}-manifest.json.partial"
    fresh = store / "sha256" / f".tmp-{'2' * 32}-x.partial"  # a write in flight
    old_final = store / "sha256" / "cd" / "cdef"  # a final name, however old
    look_alike = store / ".tmp-notes.partial.txt"  # not one of our temporary names
    for path in (stale_registry, stale_catalog, fresh, old_final, look_alike):
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"y" * 10)
    for path in (stale_registry, stale_catalog, old_final, look_alike):
        _age(path, 48)
    stale = {killed, stale_registry, stale_catalog}

    dry = _invoke("store", "sweep", "--dry-run")
    assert dry.exit_code == 0, dry.output
    assert sorted(dry.stdout.splitlines()) == sorted(f"would remove  {p}" for p in stale)
    assert all(p.exists() for p in stale)  # a dry run removes nothing

    swept = _invoke("store", "sweep", "--json")
    assert swept.exit_code == 0, swept.output
    rows = [json.loads(line) for line in swept.stdout.splitlines()]
    assert len(rows) == 3 and all(r["removed"] for r in rows)
    assert sorted(r["bytes"] for r in rows) == [10, 10, 1000]
    assert "removed 3 temporary file(s), 1020 bytes" in swept.stderr
    assert not any(p.exists() for p in stale)
    assert fresh.exists() and old_final.exists() and look_alike.exists()

    # with no margin, the young one goes too; final names never do
    assert _invoke("store", "sweep", "--older-than", "0").exit_code == 0
    assert not fresh.exists() and old_final.exists() and look_alike.exists()


def test_store_sweep_refuses_a_negative_age(home: Path) -> None:
    result = _invoke("store", "sweep", "--older-than", "-1")
    assert result.exit_code == 2 and "--older-than" in result.output


def test_frame_build_names_the_policy_file_a_config_breaks(
    home, small_catalog, monkeypatch, tmp_path
):
    policy = tmp_path / "policy.json"
    policy.write_text(json.dumps({"gate_floors": {"roc_auc_lower": 0.99}}))
    monkeypatch.setenv("MODEL_FACTORY_POLICY", str(policy))

    result = _invoke("frame", "build", "--partition", "2026-02-23", "--out", str(tmp_path / "f.pq"))

    assert result.exit_code == 2, result.output
    assert result.stderr.startswith(
        f"error [policy_violation]: file {policy}, field 'gates.criteria["
    )
    assert not (tmp_path / "f.pq").exists()


@pytest.mark.parametrize("command", ["contracts", "frame", "manifest"])
def test_an_out_that_is_a_folder_is_refused_before_any_work(home, parquet_files, tmp_path, command):
    folder = tmp_path / "already-a-folder"
    folder.mkdir()
    args = {
        "contracts": ["contracts", "export"],
        # with an empty catalog: the --out check comes before intake would fail
        "frame": ["frame", "build", "--partition", "2026-03-02"],
        # with a file that does not exist: the --out check comes before any file is read
        "manifest": [*CREATE, *parquet_files, str(tmp_path / "missing.parquet")],
    }[command]

    result = _invoke(*args, "--out", str(folder))

    assert result.exit_code == 2, result.output
    assert (
        result.stderr
        == f"error [config_invalid]: file {folder}, field '--out': is a folder; give a file name\n"
    )


def test_an_out_that_cannot_be_written_is_an_error_naming_it(home, tmp_path):
    out = tmp_path / "a-file" / "schema.json"
    (tmp_path / "a-file").write_text("not a folder")  # so no folder can be made under it

    result = _invoke("contracts", "export", "--out", str(out))

    assert result.exit_code == 2, result.output
    assert result.stderr.startswith(f"error [model_factory_error]: file {out}, field '--out'")
    assert len(result.stderr.splitlines()) == 1


def test_manifest_validate_of_a_folder_is_an_error_not_a_traceback(home, tmp_path):
    result = _invoke("manifest", "validate", str(tmp_path))

    assert result.exit_code == 2, result.output
    assert result.stderr.startswith(f"error [manifest_invalid]: file {tmp_path}")
    assert "cannot be read" in result.stderr
    assert result.stderr.splitlines()[1:] == ["1 of 1 manifest(s) refused"]  # no traceback


def test_a_bad_automation_interval_is_a_config_error(home):
    import subprocess
    import sys

    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "model_factory.cli",
            "run",
            "--from",
            "2026-03-02",
            "--to",
            "2026-03-02",
        ],
        env={**os.environ, "MODEL_FACTORY_AUTOMATION_INTERVAL_SECONDS": "abc"},
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.splitlines()[-1] == (
        "error [config_invalid]: field 'MODEL_FACTORY_AUTOMATION_INTERVAL_SECONDS': 'abc' is not "
        "a whole number of seconds >= 1"
    )


def test_a_range_that_ends_before_it_starts_is_a_config_error(home):
    result = _invoke("run", "--from", "2026-03-09", "--to", "2026-03-02")

    assert result.exit_code == 2
    assert result.stderr == (
        "error [config_invalid]: field '--to': --to 2026-03-02 is before --from 2026-03-09\n"
    )


def test_registry_list_says_when_there_is_nothing_to_list(home):
    result = _invoke("registry", "list", "--family", "nope")

    assert result.exit_code == 0 and result.stdout == ""
    assert result.stderr == "no published bundles of model family 'nope'\n"


def test_files_under_the_datasets_folder_are_stored_relative_so_the_catalog_can_move(
    home, parquet_files, monkeypatch
):
    import shutil

    catalog = home / "catalog"
    folder = catalog / "datasets" / "events" / "transactions" / "v1" / "files"
    folder.mkdir(parents=True)
    inside = [shutil.copy(f, folder / Path(f).name) for f in parquet_files]
    created = _invoke(*CREATE, *map(str, inside))
    assert created.exit_code == 0 and "warning" not in created.stderr
    [entry] = Catalog(str(catalog)).entries("events", "transactions", "v1")
    assert [f.path for f in entry.manifest.files] == [
        "files/part-0.parquet",
        "files/part-1.parquet",
    ]

    moved = home / "moved-catalog"
    shutil.copytree(catalog, moved)
    shutil.rmtree(catalog)
    monkeypatch.setenv("MODEL_FACTORY_CATALOG", str(moved))
    manifest = str(moved / Path(entry.uri).relative_to(catalog))
    result = _invoke("manifest", "validate", manifest)
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith(f"ok  {manifest}")


def test_store_sweep_walks_a_place_once_however_its_roots_are_written(home, monkeypatch):
    data = home / "data"
    monkeypatch.setenv("MODEL_FACTORY_STORE", str(data))
    monkeypatch.setenv("MODEL_FACTORY_CATALOG", f"file://{data}/catalog")  # inside the store
    monkeypatch.setenv("MODEL_FACTORY_REGISTRY", f"file://{data}/./")  # the store again
    partial = data / "catalog" / f".tmp-{'4' * 32}-x.partial"
    partial.parent.mkdir(parents=True)
    partial.write_bytes(b"x")

    result = _invoke("store", "sweep", "--older-than", "0", "--dry-run")

    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines() == [f"would remove  {partial}"]
    assert "would remove 1 temporary file(s), 1 bytes" in result.stderr


def test_manifest_validate_names_a_data_file_that_is_a_folder_and_goes_on(
    home, parquet_files, data_roots
):
    good, bad = home / "good.json", home / "bad.json"
    assert _invoke(*CREATE, "--out", str(good), *parquet_files).exit_code == 0
    doc = json.loads(good.read_text())
    doc["files"][0]["path"] = str(Path(parquet_files[0]).parent)  # the folder, not the file
    bad.write_text(json.dumps(doc))

    result = _invoke("manifest", "validate", str(bad), str(good))

    assert result.exit_code == 2
    assert result.stderr.splitlines()[0].startswith(
        f"error [manifest_invalid]: file {bad}, field 'files[0].path': data file"
    )
    assert "cannot be read" in result.stderr and str(good) in result.stdout


@pytest.mark.parametrize(
    "body, field",
    [("[unclosed", None), ('{"pii_colums": ["email"]}', "pii_colums")],
    ids=["bad-yaml", "misspelt-key"],
)
def test_run_names_the_policy_file_whose_own_content_is_wrong(home, monkeypatch, body, field):
    """Found in review: the error named the config file (or 'the default TrainingConfig')."""
    monkeypatch.setenv("DAGSTER_HOME", str(home / "dagster"))
    policy = home / "policy.yaml"
    policy.write_text(body)
    monkeypatch.setenv("MODEL_FACTORY_POLICY", str(policy))
    config = home / "cfg.json"
    config.write_text("{}")

    result = _invoke("run", "--from", "2026-02-23", "--to", "2026-02-23", "--config", str(config))

    assert result.exit_code == 2, result.output
    named = f"file {policy}" + (f", field '{field}'" if field else ":")
    assert result.stderr.startswith(f"error [policy_violation]: {named}"), result.stderr
    assert str(config) not in result.stderr
    assert len(result.stderr.splitlines()) == 1
    assert not (home / "dagster").exists()
