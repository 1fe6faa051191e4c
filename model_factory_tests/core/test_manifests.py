"""Dataset manifests: built from parquet files, checked against the data, filed once in a catalog."""

from __future__ import annotations

import hashlib
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from model_factory.contracts import DatasetManifest, TimeWindow
from model_factory.core.canonical import canonical_json, content_digest
from model_factory.core.manifests import (
    Catalog,
    create_manifest,
    manifest_digest,
    read_manifest,
    verify_manifest_files,
)
from model_factory.errors import (
    ImmutabilityError,
    ManifestError,
    MissingInputError,
    SchemaMismatchError,
)

UTC_US = pa.timestamp("us", tz="UTC")
EVENT_SCHEMA = pa.schema(
    [
        ("event_id", pa.string()),
        ("event_time", UTC_US),
        ("customer_id", pa.int64()),
        ("amount", pa.float64()),
    ]
)
MONDAY = datetime(2026, 1, 5, tzinfo=UTC)


def _events(
    path: Path, times: list[datetime], *, schema: pa.Schema = EVENT_SCHEMA, first_id: int = 0
) -> str:
    """Write an events parquet file with one row per time; returns its path as a string."""
    n = len(times)
    columns = {
        "event_id": [f"tx-{first_id + i:06d}" for i in range(n)],
        "event_time": times,
        "customer_id": [i % 3 for i in range(n)],
        "amount": [1.5 * (i + 1) for i in range(n)],
    }
    table = pa.table({f.name: pa.array(columns[f.name], f.type) for f in schema}, schema=schema)
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(table, path)
    return str(path)


def _week(k: int) -> TimeWindow:
    return TimeWindow(start=MONDAY + timedelta(days=7 * k), end=MONDAY + timedelta(days=7 * k + 7))


def _events_manifest(
    tmp_path: Path, k: int, *, name: str = "transactions", description: str = ""
) -> DatasetManifest:
    """A manifest of week k (from MONDAY) with three events in that week."""
    w = _week(k)
    uri = _events(
        tmp_path / "data" / f"{name}-week{k}.parquet",
        [w.start + timedelta(hours=h) for h in (1, 50, 160)],
        first_id=100 * k,
    )
    return create_manifest(
        [uri],
        kind="events",
        name=name,
        version="v1",
        keys=["event_id"],
        window=w,
        description=description,
    )


# ------------------------------------------------------------------------- create_manifest


def test_create_manifest_reads_schema_digest_and_rows_from_each_file(tmp_path):
    a = _events(tmp_path / "a.parquet", [MONDAY + timedelta(hours=h) for h in (1, 2, 3)])
    b = _events(tmp_path / "b.parquet", [MONDAY + timedelta(hours=30)], first_id=10)

    m = create_manifest([a, b], kind="events", name="transactions", version="v1", keys=["event_id"])

    assert [(c.name, c.dtype) for c in m.columns] == [
        ("event_id", "string"),
        ("event_time", "timestamp[us, tz=UTC]"),
        ("customer_id", "int64"),
        ("amount", "double"),
    ]
    assert [f.path for f in m.files] == [a, b]
    assert [f.sha256 for f in m.files] == [
        hashlib.sha256(Path(p).read_bytes()).hexdigest() for p in (a, b)
    ]
    assert [f.size_bytes for f in m.files] == [Path(p).stat().st_size for p in (a, b)]
    assert [f.rows for f in m.files] == [3, 1]
    assert m.row_count == 4
    assert m.time_column == "event_time"
    assert m.schema_version == "mf.DatasetManifest.v0"


def test_default_time_column_follows_the_kind(tmp_path):
    schema = pa.schema(
        [
            ("customer_id", pa.int64()),
            ("available_at", UTC_US),
            ("valid_from", UTC_US),
            ("spend", pa.float64()),
        ]
    )
    table = pa.table(
        {
            "customer_id": [1, 2],
            "available_at": [MONDAY, MONDAY],
            "valid_from": [MONDAY, MONDAY],
            "spend": [1.0, 2.0],
        },
        schema=schema,
    )
    pq.write_table(table, tmp_path / "fg.parquet")

    m = create_manifest(
        [str(tmp_path / "fg.parquet")],
        kind="feature_group",
        name="spend",
        version="v1",
        keys=["customer_id"],
        valid_from_column="valid_from",
        ttl_seconds=3600,
    )

    assert m.time_column == "available_at"
    assert m.ttl_seconds == 3600


def test_window_is_derived_as_the_whole_utc_days_the_data_spans(tmp_path):
    uri = _events(
        tmp_path / "e.parquet",
        [MONDAY + timedelta(hours=10), MONDAY + timedelta(days=2, hours=23, minutes=59)],
    )

    m = create_manifest([uri], kind="events", name="transactions", version="v1", keys=["event_id"])

    assert m.time_window == TimeWindow(start=MONDAY, end=MONDAY + timedelta(days=3))


def test_derived_window_contains_a_row_at_exact_midnight(tmp_path):
    # Half-open windows: a row at 00:00 of day d needs the window to run to d + 1.
    uri = _events(tmp_path / "e.parquet", [MONDAY, MONDAY + timedelta(days=3)])

    m = create_manifest([uri], kind="events", name="transactions", version="v1", keys=["event_id"])

    assert m.time_window == TimeWindow(start=MONDAY, end=MONDAY + timedelta(days=4))


def test_explicit_window_holding_every_row_is_kept(tmp_path):
    w = _week(0)
    uri = _events(tmp_path / "e.parquet", [w.start, w.end - timedelta(microseconds=1)])

    m = create_manifest(
        [uri], kind="events", name="transactions", version="v1", keys=["event_id"], window=w
    )

    assert m.time_window == w


@pytest.mark.parametrize(
    "outside",
    [
        pytest.param(_week(0).end, id="at-the-exclusive-end"),
        pytest.param(_week(0).start - timedelta(microseconds=1), id="before-the-start"),
        pytest.param(_week(3).start, id="weeks-later"),
    ],
)
def test_row_outside_the_given_window_is_a_manifest_error(tmp_path, outside):
    uri = _events(tmp_path / "e.parquet", [MONDAY + timedelta(hours=1), outside])

    with pytest.raises(ManifestError) as info:
        create_manifest(
            [uri],
            kind="events",
            name="transactions",
            version="v1",
            keys=["event_id"],
            window=_week(0),
        )

    assert info.value.field == "time_window"
    assert "time_window" in str(info.value)
    assert uri in str(info.value)


def test_row_with_a_null_time_is_not_inside_any_window(tmp_path):
    # The docstring promises every row lies inside the window; a null time lies in none.
    uri = _events(tmp_path / "e.parquet", [MONDAY + timedelta(hours=1), None])

    with pytest.raises(ManifestError) as info:
        create_manifest(
            [uri],
            kind="events",
            name="transactions",
            version="v1",
            keys=["event_id"],
            window=_week(0),
        )

    assert info.value.field in ("time_window", "event_time")


def test_files_with_differing_schemas_are_a_schema_mismatch(tmp_path):
    a = _events(tmp_path / "a.parquet", [MONDAY])
    other = pa.schema(
        [*(f for f in EVENT_SCHEMA if f.name != "amount"), pa.field("amount", pa.float32())]
    )
    b = _events(tmp_path / "b.parquet", [MONDAY], schema=other)

    with pytest.raises(SchemaMismatchError) as info:
        create_manifest([a, b], kind="events", name="transactions", version="v1", keys=["event_id"])

    assert info.value.source == b
    assert info.value.field == "columns"
    assert info.value.detail == f"schema differs from {a}: 'amount' is float, not double"

    # a missing and an unexpected column are named too, on one line
    c = str(tmp_path / "c.parquet")
    pq.write_table(pq.read_table(a).rename_columns([*EVENT_SCHEMA.names[:-1], "amt"]), c)
    with pytest.raises(SchemaMismatchError) as info:
        create_manifest([a, c], kind="events", name="transactions", version="v1", keys=["event_id"])
    assert info.value.detail == f"schema differs from {a}: missing ['amount']; unexpected ['amt']"


@pytest.mark.parametrize(
    "time_type",
    [
        pytest.param(pa.timestamp("us", tz="Europe/Paris"), id="other-zone"),
        pytest.param(pa.timestamp("us"), id="naive"),
        pytest.param(pa.string(), id="text"),
    ],
)
def test_time_column_that_is_not_a_utc_timestamp_is_a_schema_mismatch(tmp_path, time_type):
    schema = pa.schema(
        [pa.field("event_time", time_type) if f.name == "event_time" else f for f in EVENT_SCHEMA]
    )
    table = pa.table(
        {
            "event_id": ["tx-1"],
            "event_time": pa.array([MONDAY]).cast(time_type),
            "customer_id": [1],
            "amount": [1.0],
        },
        schema=schema,
    )
    pq.write_table(table, tmp_path / "e.parquet")
    uri = str(tmp_path / "e.parquet")

    with pytest.raises(SchemaMismatchError) as info:
        create_manifest([uri], kind="events", name="transactions", version="v1", keys=["event_id"])

    assert info.value.field == "event_time"
    assert "event_time" in str(info.value)
    assert uri in str(info.value)


def _timed_table(kind: str, naive: str) -> tuple[pa.Table, dict]:
    """A one-row table of ``kind`` whose column ``naive`` (if any) is a naive timestamp, every
    other time a UTC one; plus the manifest arguments the kind needs."""

    def time(name: str) -> pa.Array:
        return pa.array([MONDAY], pa.timestamp("us") if name == naive else UTC_US)

    if kind == "feature_group":
        table = pa.table(
            {
                "customer_id": pa.array([1], pa.int64()),
                "available_at": time("available_at"),
                "valid_from": time("valid_from"),
            }
        )
        return table, {"keys": ["customer_id"], "valid_from_column": "valid_from"}
    table = pa.table(
        {
            "event_id": pa.array(["tx-1"]),
            "observed_time": time("observed_time"),
            "reported_at": time("reported_at"),
        }
    )
    return table, {"keys": ["event_id"], "label_family": "fraud"}


@pytest.mark.parametrize(
    ("kind", "naive", "time_column"),
    [
        pytest.param("feature_group", "available_at", "valid_from", id="available_at"),
        pytest.param("feature_group", "valid_from", "available_at", id="valid_from"),
        pytest.param("labels", "observed_time", "reported_at", id="observed_time"),
    ],
)
def test_every_time_the_builder_reads_must_be_utc_whatever_the_window_is_on(
    tmp_path, kind, naive, time_column
):
    """A naive time would be read as UTC wall-clock: a snapshot or label written hours later
    in local time would pass for one known in time, and the audit would measure the same lie."""
    table, extra = _timed_table(kind, naive)
    uri = str(tmp_path / "d.parquet")
    pq.write_table(table, uri)

    with pytest.raises(SchemaMismatchError) as info:
        create_manifest([uri], kind=kind, name="d", version="v1", time_column=time_column, **extra)

    assert info.value.field == naive
    assert "UTC" in str(info.value) and uri in str(info.value)


def test_verify_refuses_a_filed_manifest_whose_builder_time_is_naive(tmp_path):
    """Manifests filed before the check: verifying (as intake does) refuses them too."""
    good, extra = _timed_table("feature_group", "none")
    pq.write_table(good, tmp_path / "d.parquet")
    m = create_manifest(
        [str(tmp_path / "d.parquet")],
        kind="feature_group",
        name="d",
        version="v1",
        time_column="valid_from",
        relative_to=str(tmp_path),
        **extra,
    )
    bad, _ = _timed_table("feature_group", "available_at")
    pq.write_table(bad, tmp_path / "d.parquet")
    data = (tmp_path / "d.parquet").read_bytes()
    filed = m.model_copy(
        update={
            "files": [
                m.files[0].model_copy(
                    update={"sha256": hashlib.sha256(data).hexdigest(), "size_bytes": len(data)}
                )
            ],
            "columns": [
                c.model_copy(update={"dtype": "timestamp[us]"}) if c.name == "available_at" else c
                for c in m.columns
            ],
        }
    )
    manifest_uri = str(tmp_path / "manifest.json")

    with pytest.raises(SchemaMismatchError) as info:
        verify_manifest_files(filed, manifest_uri)

    assert info.value.field == "available_at"
    assert info.value.source == manifest_uri


def test_missing_time_column_is_a_schema_mismatch_naming_it(tmp_path):
    uri = _events(tmp_path / "e.parquet", [MONDAY])

    with pytest.raises(SchemaMismatchError) as info:
        create_manifest(
            [uri],
            kind="events",
            name="transactions",
            version="v1",
            keys=["event_id"],
            time_column="occurred_at",
        )

    assert info.value.field == "occurred_at"
    assert "occurred_at" in str(info.value)


def test_missing_key_column_is_a_schema_mismatch_naming_it(tmp_path):
    uri = _events(tmp_path / "e.parquet", [MONDAY])

    with pytest.raises(SchemaMismatchError) as info:
        create_manifest(
            [uri], kind="events", name="transactions", version="v1", keys=["terminal_id"]
        )

    assert info.value.field == "terminal_id"


def test_missing_data_file_is_a_missing_input_error(tmp_path):
    uri = str(tmp_path / "nowhere.parquet")

    with pytest.raises(MissingInputError) as info:
        create_manifest([uri], kind="events", name="transactions", version="v1", keys=["event_id"])

    assert info.value.source == uri


def test_relative_to_stores_paths_relative_to_the_manifest_folder(tmp_path):
    catalog = Catalog(str(tmp_path / "catalog"))
    w = _week(0)
    folder = catalog.slice_dir("events", "transactions", "v1", w)
    uri = _events(Path(folder) / "part-0.parquet", [w.start])

    m = create_manifest(
        [uri],
        kind="events",
        name="transactions",
        version="v1",
        keys=["event_id"],
        window=w,
        relative_to=catalog.manifest_dir("events", "transactions", "v1"),
    )
    entry = catalog.write(m)

    assert m.files[0].path == f"{Catalog.window_stem(w)}/part-0.parquet"
    verify_manifest_files(read_manifest(entry.uri), entry.uri)


# ---------------------------------------------------------------------------- identities


def test_manifest_digest_is_sha256_of_the_canonical_json(tmp_path):
    m = _events_manifest(tmp_path, 0, description="Zahlungen — démo")
    canonical = json.dumps(
        m.model_dump(mode="json"), sort_keys=True, separators=(",", ":"), ensure_ascii=False
    ).encode("utf-8")

    assert manifest_digest(m) == hashlib.sha256(canonical).hexdigest()


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
def test_canonical_json_refuses_numbers_json_has_not_naming_where(bad):
    """Python wrote NaN, which strict JSON parsers reject (a readiness document held it; found
    in review): every stored document and digest goes through canonical_json."""
    with pytest.raises(ValueError, match=r"at \$\.per_day\[1\]\.delta"):
        canonical_json({"per_day": [{"delta": 1.0}, {"delta": bad}]})
    assert canonical_json({"a": [1.5, {"b": None}]}) == b'{"a":[1.5,{"b":null}]}'
    # a document stored before the refusal still has a digest (verification reads it back)
    assert (
        content_digest({"per_day": [{"delta": bad}]})
        == hashlib.sha256(
            json.dumps({"per_day": [{"delta": bad}]}, separators=(",", ":")).encode()
        ).hexdigest()
    )


def test_manifest_digest_is_stable_across_rebuilds_and_round_trips(tmp_path):
    first = _events_manifest(tmp_path, 0)
    again = create_manifest(
        [f.path for f in first.files],
        kind="events",
        name="transactions",
        version="v1",
        keys=["event_id"],
        window=first.time_window,
    )
    entry = Catalog(str(tmp_path / "catalog")).write(first)
    reread = read_manifest(entry.uri)
    pretty = tmp_path / "pretty.json"
    pretty.write_text(first.model_dump_json(indent=4))

    assert manifest_digest(again) == manifest_digest(first)
    assert manifest_digest(reread) == manifest_digest(first) == entry.digest
    assert manifest_digest(read_manifest(str(pretty))) == manifest_digest(first)
    # The catalog stores the canonical bytes themselves, so the file's sha256 is the identity.
    assert hashlib.sha256(Path(entry.uri).read_bytes()).hexdigest() == entry.digest


def test_manifest_digest_of_a_fixed_manifest_is_pinned():
    # A golden value: if this changes, every manifest id (and train run id) in the field changes.
    m = DatasetManifest(
        kind="events",
        name="transactions",
        version="v1",
        time_column="event_time",
        time_window=TimeWindow(start=MONDAY, end=MONDAY + timedelta(days=7)),
        keys=["event_id"],
        columns=[
            {"name": "event_id", "dtype": "string"},
            {"name": "event_time", "dtype": "timestamp[us, tz=UTC]"},
        ],
        files=[{"path": "w/part-0.parquet", "sha256": "a" * 64, "rows": 2, "size_bytes": 10}],
        row_count=2,
    )
    expected = (
        '{"columns":[{"dtype":"string","name":"event_id"},'
        '{"dtype":"timestamp[us, tz=UTC]","name":"event_time"}],"description":"",'
        '"files":[{"path":"w/part-0.parquet","rows":2,"sha256":"' + "a" * 64 + '",'
        '"size_bytes":10}],"keys":["event_id"],"kind":"events","label_family":null,'
        '"name":"transactions","row_count":2,"schema_version":"mf.DatasetManifest.v0",'
        '"time_column":"event_time","time_window":{"end":"2026-01-12T00:00:00Z",'
        '"start":"2026-01-05T00:00:00Z"},"ttl_seconds":null,"valid_from_column":null,'
        '"version":"v1"}'
    ).encode()

    assert manifest_digest(m) == hashlib.sha256(expected).hexdigest()


def test_manifest_digest_changes_with_any_field(tmp_path):
    m = _events_manifest(tmp_path, 0)
    changed = m.model_copy(update={"description": "other"})

    assert manifest_digest(changed) != manifest_digest(m)


# ------------------------------------------------------------------------------- catalog


def test_catalog_write_of_the_same_manifest_is_a_no_op(tmp_path):
    catalog = Catalog(str(tmp_path / "catalog"))
    m = _events_manifest(tmp_path, 0)

    first = catalog.write(m)
    before = Path(first.uri).read_bytes()
    second = catalog.write(m)

    assert second.uri == first.uri
    assert second.digest == first.digest == manifest_digest(m)
    assert Path(first.uri).read_bytes() == before
    folder = Path(catalog.manifest_dir("events", "transactions", "v1"))
    assert sorted(p.name for p in folder.iterdir()) == [Path(first.uri).name]


def test_catalog_write_of_another_manifest_for_the_same_window_is_refused(tmp_path):
    catalog = Catalog(str(tmp_path / "catalog"))
    first = catalog.write(_events_manifest(tmp_path, 0))
    before = Path(first.uri).read_bytes()
    other = _events_manifest(tmp_path, 0, description="a corrected copy")

    with pytest.raises(ImmutabilityError) as info:
        catalog.write(other)

    assert info.value.source == first.uri
    assert info.value.field == "time_window"
    assert "give the changed data a new --version" in str(info.value)  # the way out
    assert Path(first.uri).read_bytes() == before
    assert catalog.entries("events", "transactions", "v1")[0].digest == first.digest


def test_catalog_files_manifests_by_kind_name_version_and_window(tmp_path):
    catalog = Catalog(str(tmp_path / "catalog"))
    entry = catalog.write(_events_manifest(tmp_path, 1))

    assert entry.uri == str(
        tmp_path / "catalog/datasets/events/transactions/v1/20260112T000000Z_20260119T000000Z.json"
    )
    assert entry.ref.digest == entry.digest
    assert (entry.ref.kind, entry.ref.name, entry.ref.version) == ("events", "transactions", "v1")
    assert entry.ref.time_window == _week(1)


@pytest.fixture
def three_weeks(tmp_path) -> Catalog:
    """Weeks 0, 1 and 2 of events 'transactions' v1, plus week 0 of 'refunds' v1."""
    catalog = Catalog(str(tmp_path / "catalog"))
    for k in (2, 0, 1):
        catalog.write(_events_manifest(tmp_path, k))
    catalog.write(_events_manifest(tmp_path, 0, name="refunds"))
    return catalog


def test_catalog_entries_are_sorted_by_window(three_weeks):
    entries = three_weeks.entries("events", "transactions", "v1")

    assert [e.manifest.time_window for e in entries] == [_week(0), _week(1), _week(2)]
    assert all(e.digest == manifest_digest(e.manifest) for e in entries)


def test_catalog_find_returns_the_manifests_overlapping_the_window(three_weeks):
    inside = three_weeks.find(
        "events",
        "transactions",
        "v1",
        _week(1).start + timedelta(days=1),
        _week(1).end - timedelta(days=1),
    )
    across = three_weeks.find(
        "events",
        "transactions",
        "v1",
        _week(0).end - timedelta(hours=1),
        _week(2).start + timedelta(hours=1),
    )
    everything = three_weeks.find("events", "transactions", "v1", None, _week(2).end)

    assert [e.manifest.time_window for e in inside] == [_week(1)]
    assert [e.manifest.time_window for e in across] == [_week(0), _week(1), _week(2)]
    assert [e.manifest.time_window for e in everything] == [_week(0), _week(1), _week(2)]
    # Half-open: a window ending where week 1 starts does not need week 1.
    assert [
        e.manifest.time_window
        for e in three_weeks.find("events", "transactions", "v1", _week(0).start, _week(1).start)
    ] == [_week(0)]


@pytest.mark.parametrize(
    ("kind", "name", "version"),
    [
        pytest.param("labels", "transactions", "v1", id="other-kind"),
        pytest.param("events", "payments", "v1", id="other-name"),
        pytest.param("events", "transactions", "v2", id="other-version"),
    ],
)
def test_catalog_find_of_an_unknown_dataset_is_a_missing_input(three_weeks, kind, name, version):
    with pytest.raises(MissingInputError) as info:
        three_weeks.find(kind, name, version, _week(0).start, _week(1).end)

    assert info.value.field == f"{kind}:{name}/{version}"
    assert info.value.source == three_weeks.url


def test_catalog_find_beyond_the_last_week_is_a_coverage_gap(three_weeks):
    with pytest.raises(MissingInputError) as info:
        three_weeks.find(
            "events", "transactions", "v1", _week(1).start, _week(2).end + timedelta(hours=1)
        )

    assert info.value.field == "events:transactions/v1 time_window"


def test_catalog_find_before_the_first_week_is_a_coverage_gap(three_weeks):
    with pytest.raises(MissingInputError):
        three_weeks.find(
            "events", "transactions", "v1", _week(0).start - timedelta(days=1), _week(1).end
        )


def test_a_window_no_manifest_overlaps_is_reported_with_what_the_catalog_holds(three_weeks):
    with pytest.raises(MissingInputError) as info:
        three_weeks.find("events", "transactions", "v1", _week(5).start, _week(6).end)

    message = str(info.value)
    # not "only up to 2026-02-09", the start of the window asked for
    assert "no manifest of events:transactions/v1 overlaps [2026-02-09, 2026-02-23)" in message
    assert "cover [2026-01-05 00:00, 2026-01-26 00:00)" in message
    assert "only up to" not in message
    assert info.value.field == "events:transactions/v1 time_window"


def test_a_window_starting_before_the_first_manifest_says_where_coverage_starts(three_weeks):
    with pytest.raises(MissingInputError) as info:
        three_weeks.find("events", "transactions", "v1", _week(-1).start, _week(0).end)

    assert "only from 2026-01-05 00:00, need [2025-12-29, 2026-01-12)" in str(info.value)


def test_catalog_find_across_a_missing_week_is_a_coverage_gap(tmp_path):
    catalog = Catalog(str(tmp_path / "catalog"))
    catalog.write(_events_manifest(tmp_path, 0))
    catalog.write(_events_manifest(tmp_path, 2))

    with pytest.raises(MissingInputError) as info:
        catalog.find("events", "transactions", "v1", _week(0).start, _week(2).end)
    partial = catalog.find(
        "events", "transactions", "v1", _week(0).start, _week(2).end, require_coverage=False
    )

    assert "2026-01-12" in str(info.value)  # covered only up to the start of the gap
    assert [e.manifest.time_window for e in partial] == [_week(0), _week(2)]


def test_overlapping_manifests_of_one_dataset_are_a_manifest_error(tmp_path):
    catalog = Catalog(str(tmp_path / "catalog"))
    catalog.write(_events_manifest(tmp_path, 0))
    shifted = TimeWindow(
        start=_week(0).start + timedelta(days=3), end=_week(0).end + timedelta(days=3)
    )
    uri = _events(tmp_path / "data" / "shifted.parquet", [shifted.start], first_id=900)
    overlapping = create_manifest(
        [uri], kind="events", name="transactions", version="v1", keys=["event_id"], window=shifted
    )

    # refused when written through the catalog ...
    with pytest.raises(ManifestError) as refused:
        catalog.write(overlapping)
    assert refused.value.field == "time_window"
    assert not Path(catalog.manifest_path(overlapping)).exists()

    # ... and when copied in behind its back, every reader refuses the dataset
    Path(catalog.manifest_path(overlapping)).write_bytes(canonical_json(overlapping))
    with pytest.raises(ManifestError) as info:
        catalog.entries("events", "transactions", "v1")
    with pytest.raises(ManifestError):
        catalog.find("events", "transactions", "v1", _week(0).start, _week(0).end)

    assert info.value.field == "time_window"
    assert Catalog.window_stem(shifted) in str(info.value.source)


def test_manifest_filed_under_another_dataset_is_a_manifest_error(tmp_path):
    catalog = Catalog(str(tmp_path / "catalog"))
    entry = catalog.write(_events_manifest(tmp_path, 0))
    wrong_folder = Path(catalog.manifest_dir("events", "payments", "v1"))
    wrong_folder.mkdir(parents=True)
    (wrong_folder / Path(entry.uri).name).write_bytes(Path(entry.uri).read_bytes())

    with pytest.raises(ManifestError) as info:
        catalog.entries("events", "payments", "v1")

    assert info.value.field == "name"


def test_catalog_entries_ignore_leftover_hidden_temp_files(tmp_path):
    catalog = Catalog(str(tmp_path / "catalog"))
    entry = catalog.write(_events_manifest(tmp_path, 0))
    folder = Path(entry.uri).parent
    stem = Path(entry.uri).name
    # What a crash between writing the temp file and renaming it leaves behind.
    (folder / f".tmp-{'0' * 32}-{stem}.partial").write_bytes(b'{"kind": "ev')
    (folder / f".tmp-{'1' * 32}-{stem}").write_bytes(b"not json")

    entries = catalog.entries("events", "transactions", "v1")

    assert [e.uri for e in entries] == [entry.uri]
    assert catalog.write(_events_manifest(tmp_path, 0)).digest == entry.digest


def test_a_misspelt_required_key_is_named_with_the_key_it_nearly_spells(tmp_path):
    """Found in review: `time_colum` was reported as "field 'time_column': Field required", a
    field the file does not hold, and the key it does hold was never shown."""
    raw = json.loads(_events_manifest(tmp_path, 0).model_dump_json())
    raw["time_colum"] = raw.pop("time_column")
    path = tmp_path / "typo.json"
    path.write_text(json.dumps(raw))

    with pytest.raises(ManifestError) as info:
        read_manifest(str(path))

    assert info.value.field == "time_colum"
    assert "did you mean 'time_column'?" in str(info.value)
    # a key far from every missing one is still the missing field, as pydantic says
    raw["nothing_like_it"] = raw.pop("time_colum")
    path.write_text(json.dumps(raw))
    with pytest.raises(ManifestError) as info:
        read_manifest(str(path))
    assert info.value.field == "time_column" and "Field required" in str(info.value)
