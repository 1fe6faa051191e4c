"""Hostile and broken input (issue 7, item 3): every case is refused with a ModelFactoryError that
names the file and the field at fault, and nothing is written to the store, the registry or the
catalog. Manifests are fuzzed with hypothesis; files, schemas, paths and labels are broken by hand.

Extends ``core/test_bad_input.py`` (digest mismatch per dataset, missing file, wrong row count,
malformed and non-JSON manifests, unknown feature groups, PII features, policy windows), which
is not repeated here.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
from collections.abc import Callable
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from model_factory.contracts import GovernancePolicy, TrainingConfig
from model_factory.core.canonical import sha256_hex
from model_factory.core.frames import build_training_frame
from model_factory.core.intake import intake
from model_factory.core.manifests import Catalog, create_manifest
from model_factory.core.registry import FileRegistry
from model_factory.core.runs import (
    FactoryEnv,
    stage_evaluation,
    stage_frame,
    stage_gate,
    stage_intake,
    stage_model,
)
from model_factory.core.storage import ArtifactStore
from model_factory.errors import (
    ManifestError,
    MissingInputError,
    ModelFactoryError,
    PolicyViolationError,
    SchemaMismatchError,
)
from model_factory_tests.conftest import SMALL_DEMO

SPEC = SMALL_DEMO  # the `pristine` and `home` fixtures of conftest.py hold it
WEEK = "2026-03-09"  # the last trainable week of SPEC: train 02-02..03-02 (+gap), test 03-02..03-09
WINDOW = "20260202T000000Z_20260209T000000Z"  # a week inside that span for every dataset
TEST_WINDOW = "20260302T000000Z_20260309T000000Z"
DRIFT_WINDOW = "20260209T000000Z_20260216T000000Z"  # not the first week any dataset pins
EVENTS = "events/transactions/v1"
LABELS = "labels/chargebacks/v1"
TERMINAL = "feature_group/terminal_risk/v1"
# hypothesis examples per fuzz strategy; derandomized so CI runs the same inputs every time
EXAMPLES = 120


def _env(home: Path, policy: GovernancePolicy | None = None) -> FactoryEnv:
    return FactoryEnv(
        Catalog(str(home / "catalog")),
        ArtifactStore(str(home / "store")),
        FileRegistry(str(home / "registry")),
        policy or GovernancePolicy(),
    )


def _listing(root: Path) -> dict[str, tuple[int, int]]:
    """Every file (and link) under root with its size and mtime: what a writer would change."""
    return {
        str(p.relative_to(root)): (p.lstat().st_size, p.lstat().st_mtime_ns)
        for p in sorted(root.rglob("*"))
    }


def _manifest(home: Path, dataset: str, window: str = WINDOW) -> Path:
    return home / "catalog" / "datasets" / dataset / f"{window}.json"


def _data(home: Path, dataset: str, window: str = WINDOW) -> Path:
    return home / "catalog" / "datasets" / dataset / window / "part-0.parquet"


def _edit(path: Path, edit: Callable[[dict], Any]) -> None:
    doc = json.loads(path.read_bytes())
    edit(doc)
    path.write_text(json.dumps(doc))


def refused(
    home: Path,
    error: type[ModelFactoryError] = ModelFactoryError,
    policy: GovernancePolicy | None = None,
    config: TrainingConfig | None = None,
    listing: bool = True,
) -> ModelFactoryError:
    """The intake stage raises ``error`` naming a file and a field, and nothing is written:
    no store, no registry, every file of the catalog as it was (size and mtime; the fuzz
    compares the listing once per strategy instead of once per example)."""
    before = _listing(home) if listing else None
    with pytest.raises(error) as info:
        stage_intake(_env(home, policy), config or TrainingConfig(), WEEK)
    err = info.value
    assert err.source, f"no file named: {err}"
    assert err.field, f"no field named: {err}"
    assert err.source in str(err) and err.field in str(err)
    assert before is None or _listing(home) == before
    assert not (home / "store").exists() and not (home / "registry").exists()
    return err


def repin(
    home: Path,
    dataset: str,
    frame: pl.DataFrame | pa.Table | None = None,
    window: str = WINDOW,
    **manifest_fields: Any,
) -> Path:
    """Rewrite one week's data file (when given) and its manifest as an honest producer would:
    digests, rows and schema re-read from the new file. Only what the file says has changed."""
    data, manifest = _data(home, dataset, window), _manifest(home, dataset, window)
    if isinstance(frame, pl.DataFrame):
        frame.write_parquet(data)
    elif frame is not None:
        pq.write_table(frame, data)
    old = json.loads(manifest.read_bytes())
    kind, name, version = dataset.split("/")
    catalog = Catalog(str(home / "catalog"))
    fields = (
        dict(
            kind=kind,
            name=name,
            version=version,
            keys=old["keys"],
            time_column=old["time_column"],
            valid_from_column=old["valid_from_column"],
            ttl_seconds=old["ttl_seconds"],
            label_family=old["label_family"],
            description=old["description"],
        )
        | manifest_fields
    )
    from model_factory.contracts import TimeWindow

    m = create_manifest(
        [str(data)],
        window=TimeWindow.model_validate(old["time_window"]),
        relative_to=catalog.manifest_dir(kind, name, version),
        **fields,
    )
    manifest.write_text(m.model_dump_json())
    return manifest


def test_clean_catalog_passes_and_writes_only_the_receipt(home):
    # The control: the same call on the untouched copy does write (only its receipt and the
    # policy it pinned).
    result = stage_intake(_env(home), TrainingConfig(), WEEK)
    policy = _env(home).store.blob_uri(result.doc.policy_digest, ".json")
    assert sorted(str(p) for p in (home / "store").rglob("*") if p.is_file()) == sorted(
        [result.ref.uri, policy]
    )


# ------------------------------------------------------------------------- fuzzed manifests

_KINDS = {"events", "feature_group", "labels"}
_INTLIKE = re.compile(r"^\s*[+-]?[\d_]+(\.0*)?\s*$")
_garbage_text = st.text(max_size=12).filter(lambda t: not any(c.isdigit() for c in t))
_not_an_int = st.one_of(
    st.integers(max_value=-1),
    _garbage_text.filter(lambda t: not _INTLIKE.match(t)),
    st.floats(allow_nan=True).filter(lambda x: not float(x).is_integer()),
    st.lists(st.integers(), max_size=2),
    st.dictionaries(st.text(max_size=3), st.integers(), max_size=2),
    st.none(),
)
_not_a_str = st.one_of(
    st.integers(),
    st.floats(allow_nan=False),
    st.booleans(),
    st.lists(st.text(max_size=3), max_size=2),
    st.none(),
    st.dictionaries(st.text(max_size=3), st.integers(), max_size=2),
)
_not_a_list = st.one_of(
    st.integers(),
    _garbage_text,
    st.none(),
    st.just([]),
    st.dictionaries(st.text(max_size=3), st.integers(), max_size=2),
)
_not_a_time = st.one_of(
    _garbage_text,
    st.none(),
    st.lists(st.integers(), max_size=2),
    st.dictionaries(st.text(max_size=3), st.integers(), max_size=2),
)

# (path in the manifest, values that path can never validly hold)
WRONG_TYPES: list[tuple[tuple, st.SearchStrategy]] = [
    (
        ("schema_version",),
        st.one_of(_not_a_str, st.text().filter(lambda t: t != "mf.DatasetManifest.v0")),
    ),
    (("kind",), st.one_of(_not_a_str, st.text().filter(lambda t: t not in _KINDS))),
    (
        ("name",),
        st.one_of(_not_a_str, st.text().filter(lambda t: not re.fullmatch(r"[a-z][a-z0-9_]*", t))),
    ),
    (
        ("version",),
        st.one_of(
            _not_a_str,
            st.text().filter(lambda t: not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*", t)),
        ),
    ),
    # another column's name too: it is not a UTC time column
    (
        ("time_column",),
        st.one_of(
            _not_a_str,
            st.sampled_from(["event_id", "amount", "customer_id"]),
            st.text().filter(lambda t: t != "event_time"),
        ),
    ),
    (
        ("time_window",),
        st.one_of(_not_a_str.filter(lambda v: not isinstance(v, dict)), st.just({})),
    ),
    (("time_window", "start"), _not_a_time),
    (("time_window", "end"), _not_a_time),
    (("keys",), _not_a_list),
    (("keys", 0), st.one_of(_not_a_str, st.text(alphabet="!#%&*", min_size=1))),
    (("columns",), _not_a_list),
    (("columns", 0), st.one_of(_not_a_str.filter(lambda v: not isinstance(v, dict)), st.just({}))),
    (("columns", 0, "name"), _not_a_str),
    (
        ("columns", 1, "dtype"),
        st.one_of(_not_a_str, st.text().filter(lambda t: "timestamp" not in t)),
    ),
    (("files",), _not_a_list),
    (("files", 0, "path"), _not_a_str),
    (
        ("files", 0, "sha256"),
        st.one_of(_not_a_str, st.text().filter(lambda t: not re.fullmatch(r"[0-9a-f]{64}", t))),
    ),
    (("files", 0, "rows"), _not_an_int),
    (("files", 0, "size_bytes"), _not_an_int),
    (("row_count",), _not_an_int),
    # events carry no TTL: any value at all, or one that is no TTL
    (("ttl_seconds",), st.one_of(_not_an_int.filter(lambda v: v is not None), st.integers())),
    (("description",), _not_a_str.filter(lambda v: v is not None)),
]
REQUIRED = [
    ("kind",),
    ("name",),
    ("version",),
    ("time_column",),
    ("time_window",),
    ("keys",),
    ("columns",),
    ("files",),
    ("row_count",),
    ("time_window", "start"),
    ("time_window", "end"),
    ("files", 0, "path"),
    ("files", 0, "sha256"),
    ("files", 0, "rows"),
    ("files", 0, "size_bytes"),
    ("columns", 0, "name"),
    ("columns", 0, "dtype"),
]
CONTAINERS = [(), ("time_window",), ("files", 0), ("columns", 0)]


def _get(doc: Any, path: tuple) -> Any:
    for part in path:
        doc = doc[part]
    return doc


def _set(doc: dict, path: tuple, value: Any) -> None:
    _get(doc, path[:-1])[path[-1]] = value


def _delete(doc: dict, path: tuple) -> None:
    del _get(doc, path[:-1])[path[-1]]


@st.composite
def wrong_types(draw, base: dict) -> dict:
    path, values = draw(st.sampled_from(WRONG_TYPES))
    doc = json.loads(json.dumps(base))
    _set(doc, path, draw(values))
    return doc


@st.composite
def missing_fields(draw, base: dict) -> dict:
    doc = json.loads(json.dumps(base))
    for path in sorted(
        draw(st.sets(st.sampled_from(REQUIRED), min_size=1, max_size=3)), key=len, reverse=True
    ):
        with contextlib.suppress(KeyError, TypeError):  # its parent went first
            _delete(doc, path)
    return doc


@st.composite
def extra_fields(draw, base: dict) -> dict:
    doc = json.loads(json.dumps(base))
    container = draw(st.sampled_from(CONTAINERS))
    target = _get(doc, container)
    key = draw(st.text(min_size=1, max_size=20).filter(lambda k: k not in target))
    target[key] = draw(st.one_of(st.integers(), st.text(max_size=5), st.none(), st.booleans()))
    return doc


@st.composite
def huge_values(draw, base: dict) -> dict:
    doc = json.loads(json.dumps(base))
    big = draw(st.integers(min_value=10**12, max_value=2**256))
    choice = draw(
        st.sampled_from(
            [
                "rows",
                "size",
                "row_count",
                "name",
                "version",
                "keys",
                "window_end",
                "window_start",
                "float",
            ]
        )
    )
    if choice == "rows":  # consistent with row_count, so only the file can tell
        doc["files"][0]["rows"] = big
        doc["row_count"] = big
    elif choice == "size":
        doc["files"][0]["size_bytes"] = big
    elif choice == "row_count":
        doc["row_count"] = big
    elif choice == "name":
        doc["name"] = "n" * draw(st.integers(min_value=65, max_value=100_000))
    elif choice == "version":
        doc["version"] = "v" * draw(st.integers(min_value=33, max_value=100_000))
    elif choice == "keys":  # a huge key list: the same key many times
        doc["keys"] = ["event_id"] * draw(st.integers(min_value=2, max_value=100_000))
    elif choice == "window_end":
        doc["time_window"]["end"] = "9999-12-31T23:59:59.999999Z"
    elif choice == "window_start":
        doc["time_window"]["start"] = "0001-01-01T00:00:00Z"
    else:
        doc["row_count"] = draw(st.sampled_from([1e300, float("inf"), -1e300]))
    return doc


_instant = st.datetimes(min_value=datetime(1971, 1, 1), max_value=datetime(2200, 1, 1))


@st.composite
def non_utc_times(draw, base: dict) -> dict:
    doc = json.loads(json.dumps(base))
    bound = draw(st.sampled_from(["start", "end"]))
    if draw(st.booleans()):  # naive: no offset at all
        value = draw(_instant).isoformat()
    else:  # the very same instant, written with another offset
        minutes = draw(st.integers(min_value=-14 * 60, max_value=14 * 60).filter(bool))
        original = datetime.fromisoformat(doc["time_window"][bound])
        value = original.astimezone(timezone(timedelta(minutes=minutes))).isoformat()
    doc["time_window"][bound] = value
    return doc


@st.composite
def reversed_windows(draw, base: dict) -> dict:
    doc = json.loads(json.dumps(base))
    start = draw(_instant).replace(tzinfo=UTC)
    end = start - draw(st.timedeltas(min_value=timedelta(0), max_value=timedelta(days=3650)))
    doc["time_window"] = {"start": start.isoformat(), "end": end.isoformat()}
    return doc


@st.composite
def duplicate_files(draw, base: dict) -> dict:
    doc = json.loads(json.dumps(base))
    first = doc["files"][0]
    copies = draw(st.integers(min_value=1, max_value=5))
    spelling = draw(st.sampled_from(["same", "dot-slash", "absolute"]))
    path = {
        "same": first["path"],
        "dot-slash": "./" + first["path"],
        "absolute": str(Path(doc["__dir"]) / first["path"]),
    }[spelling]
    doc["files"] += [{**first, "path": path} for _ in range(copies)]
    doc["row_count"] = sum(f["rows"] for f in doc["files"])
    return doc


FUZZ = {
    "wrong_types": wrong_types,
    "missing_fields": missing_fields,
    "extra_fields": extra_fields,
    "huge_values": huge_values,
    "non_utc_times": non_utc_times,
    "reversed_windows": reversed_windows,
    "duplicate_files": duplicate_files,
}
FUZZ_COUNTS: dict[str, int] = {}


@pytest.fixture(scope="module")
def fuzz_home(tmp_path_factory: pytest.TempPathFactory, pristine: Path) -> Path:
    root = tmp_path_factory.mktemp("fuzz")
    shutil.copytree(pristine, root / "catalog")
    return root


@pytest.mark.parametrize("strategy", list(FUZZ))
def test_fuzzed_manifests_are_refused_naming_file_and_field(fuzz_home, strategy):
    """An events manifest of the week mangled by ``strategy``: every example is refused by the
    intake stage with the manifest's path and a field, and nothing is written."""
    manifest = _manifest(fuzz_home, EVENTS)
    original = manifest.read_bytes()
    base = json.loads(original) | {"__dir": str(manifest.parent)}
    tried = []
    before = {
        k: v for k, v in _listing(fuzz_home).items() if k != str(manifest.relative_to(fuzz_home))
    }

    @settings(max_examples=EXAMPLES, deadline=None, derandomize=True, database=None)
    @given(FUZZ[strategy](base))
    def check(doc: dict) -> None:
        doc.pop("__dir", None)
        try:
            manifest.write_text(json.dumps(doc))
            err = refused(fuzz_home, listing=False)
            # The mangled manifest is the one named (as the source, or in the message when a
            # neighbouring week's manifest is where the overlap was seen).
            assert str(manifest) in str(err), err
            tried.append(type(err).__name__)
        finally:
            manifest.write_bytes(original)

    check()
    FUZZ_COUNTS[strategy] = len(tried)
    print(f"\n{strategy}: {len(tried)} fuzzed manifests refused ({', '.join(sorted(set(tried)))})")
    # duplicate_files has only 15 distinct inputs (1-5 copies, 3 spellings of the path)
    assert len(tried) >= (15 if strategy == "duplicate_files" else EXAMPLES // 2), tried
    after = _listing(fuzz_home)
    assert {k: v for k, v in after.items() if k in before} == before and after.keys() == {
        *before,
        str(manifest.relative_to(fuzz_home)),
    }
    assert manifest.read_bytes() == original
    refused_control = stage_intake(_env(fuzz_home), TrainingConfig(), WEEK)  # restored: passes
    assert refused_control.doc is not None
    shutil.rmtree(fuzz_home / "store")


# ------------------------------------------------------------------------- broken data files


def test_truncated_parquet_with_repinned_digest_is_refused_naming_the_file(home):
    data = _data(home, EVENTS)
    data.write_bytes(data.read_bytes()[: data.stat().st_size // 2])
    _edit(
        _manifest(home, EVENTS),
        lambda d: d["files"][0].update(
            sha256=sha256_hex(data.read_bytes()), size_bytes=data.stat().st_size
        ),
    )

    err = refused(home, ManifestError)

    assert err.source == str(data) and err.field == "files"
    assert "parquet" in str(err)


def _first_page_offset(data: Path) -> int:
    return pq.ParquetFile(data).metadata.row_group(0).column(0).data_page_offset


@pytest.mark.parametrize("damage", ["data-pages", "garbage"])
def test_corrupt_parquet_with_repinned_digest_is_refused_naming_the_file(home, damage):
    # The producer pinned the digest after the damage, so only reading the file can tell.
    data = _data(home, EVENTS)
    raw = bytearray(data.read_bytes())
    if damage == "data-pages":  # footer intact: schema and row counts still read fine
        start = _first_page_offset(data) + 64
        raw[start : start + 2048] = os.urandom(2048)
    else:
        raw = bytearray(os.urandom(len(raw)))
    data.write_bytes(bytes(raw))
    manifest = _manifest(home, EVENTS)
    _edit(
        manifest, lambda d: d["files"][0].update(sha256=sha256_hex(bytes(raw)), size_bytes=len(raw))
    )

    err = refused(home, ManifestError)

    assert str(data) in str(err) and err.field in {"files", "files[0]"}
    assert "parquet" in str(err)


def test_size_in_the_manifest_that_is_not_the_files_is_refused(home):
    manifest = _manifest(home, TERMINAL)
    _edit(manifest, lambda d: d["files"][0].update(size_bytes=d["files"][0]["size_bytes"] + 1))

    err = refused(home, ManifestError)

    assert (err.source, err.field) == (str(manifest), "files[0].size_bytes")


# -------------------------------------------------------------------- schema drift by week


@pytest.mark.parametrize(
    ("dataset", "change", "column"),
    [
        pytest.param(
            EVENTS,
            lambda f: f.rename({"card_number": "pan_number"}),
            "card_number",
            id="events-renamed",
        ),
        pytest.param(
            EVENTS,
            lambda f: f.with_columns(pl.col("customer_id").cast(pl.Int32)),
            "customer_id",
            id="events-retyped",
        ),
        pytest.param(EVENTS, lambda f: f.drop("card_number"), "card_number", id="events-missing"),
        pytest.param(
            LABELS,
            lambda f: f.rename({"label_family": "family"}),
            "label_family",
            id="labels-renamed",
        ),
        pytest.param(
            LABELS,
            lambda f: f.with_columns(pl.col("event_id").cast(pl.Categorical)),
            "event_id",
            id="labels-retyped",
        ),
        pytest.param(
            TERMINAL,
            lambda f: f.with_columns(pl.col("terminal_id").cast(pl.Int32)),
            "terminal_id",
            id="feature-group-retyped",
        ),
        pytest.param(
            TERMINAL, lambda f: f.drop("term_risk_28d"), "term_risk_28d", id="feature-group-missing"
        ),
    ],
)
def test_schema_drift_between_weeks_is_refused_naming_the_week(home, dataset, change, column):
    # The drifted week's manifest is honest about its file: only the comparison with the other
    # weeks can find the drift (renamed, retyped or dropped column).
    data = _data(home, dataset, DRIFT_WINDOW)
    manifest = repin(home, dataset, change(pl.read_parquet(data)), window=DRIFT_WINDOW)

    err = refused(home, SchemaMismatchError)

    assert err.source == str(manifest) and err.field == "columns"
    assert column in str(err)


def test_label_value_retyped_to_text_is_refused(home):
    frame = pl.read_parquet(_data(home, LABELS)).with_columns(pl.col("label_value").cast(pl.String))
    repinned = [repin(home, LABELS, frame)]
    # every week retyped, so it is the type itself and not the drift that is refused
    for p in sorted((home / "catalog" / "datasets" / LABELS).glob("*.json")):
        window = p.stem
        if window != WINDOW:
            other = pl.read_parquet(_data(home, LABELS, window))
            repinned.append(
                repin(
                    home,
                    LABELS,
                    other.with_columns(pl.col("label_value").cast(pl.String)),
                    window=window,
                )
            )

    err = refused(home, SchemaMismatchError)

    assert err.field == "label_value" and err.source in {str(p) for p in repinned}


# ------------------------------------------------------------------- labels outside the family


@pytest.mark.parametrize("bad", [2, -1, None], ids=["two", "minus-one", "null"])
def test_label_value_outside_the_family_is_refused(home, bad):
    frame = pl.read_parquet(_data(home, LABELS))
    frame = frame.with_columns(
        label_value=pl.when(pl.int_range(pl.len()) == 3)
        .then(pl.lit(bad, pl.Int64))
        .otherwise(pl.col("label_value"))
        .cast(frame.schema["label_value"])
    )
    manifest = repin(home, LABELS, frame)

    err = refused(home, SchemaMismatchError)

    assert (err.source, err.field) == (str(manifest), "label_value")
    assert "fraud" in str(err)


def test_other_families_in_the_label_store_may_use_other_values(home):
    # A Label Store holds many families; a value foreign to 'fraud' in another family is not bad.
    frame = pl.read_parquet(_data(home, LABELS))
    extra = frame.head(5).with_columns(
        label_family=pl.lit("dispute_reason"), label_value=pl.lit(7, frame.schema["label_value"])
    )
    repin(home, LABELS, pl.concat([frame, extra]).sort("observed_time"))

    receipt, _ = intake(_env(home).catalog, TrainingConfig(), WEEK, GovernancePolicy())

    assert receipt.partition_key == WEEK


# ------------------------------------------------------------- feature-group versions


def test_a_feature_group_version_the_config_does_not_name_is_never_pinned(home):
    # terminal_risk v2 sits in the catalog beside v1; the config asks for v1 only.
    datasets = home / "catalog" / "datasets" / "feature_group" / "terminal_risk"
    shutil.copytree(datasets / "v1", datasets / "v2")
    for p in (datasets / "v2").glob("*.json"):
        _edit(p, lambda d: d.update(version="v2"))

    receipt, _ = intake(_env(home).catalog, TrainingConfig(), WEEK, GovernancePolicy())

    pinned = {
        (r.name, r.version) for r in receipt.input_dataset_manifests if r.kind == "feature_group"
    }
    assert ("terminal_risk", "v1") in pinned and ("terminal_risk", "v2") not in pinned


def test_a_manifest_filed_under_a_version_it_does_not_declare_is_refused(home):
    manifest = _manifest(home, TERMINAL)
    _edit(manifest, lambda d: d.update(version="v2"))

    err = refused(home, ManifestError)

    assert (err.source, err.field) == (str(manifest), "name")
    assert "v2" in str(err)


# ------------------------------------------------------------------ paths and URL schemes


def _point_at(home: Path, dataset: str, path: str) -> Path:
    manifest = _manifest(home, dataset)
    _edit(manifest, lambda d: d["files"][0].update(path=path))
    return manifest


@pytest.mark.parametrize(
    "path",
    [
        pytest.param("../20260209T000000Z_20260216T000000Z/part-0.parquet", id="dotdot-sibling"),
        pytest.param("../../../../../../../outside/part-0.parquet", id="dotdot-outside"),
        pytest.param(f"{WINDOW}/../{WINDOW}/part-0.parquet", id="dotdot-back-in"),
    ],
)
def test_a_path_with_dotdot_is_refused(home, path):
    manifest = _point_at(home, EVENTS, path)

    err = refused(home, ManifestError)

    assert (err.source, err.field) == (str(manifest), "files[0].path")
    assert ".." in str(err)


def _copy_outside(home: Path, dataset: str) -> Path:
    outside = home / "elsewhere" / "part-0.parquet"
    outside.parent.mkdir()
    shutil.copyfile(_data(home, dataset), outside)
    return outside


def test_an_absolute_path_outside_the_catalog_is_refused(home):
    # Same bytes, same digest: only where the file lives is wrong.
    outside = _copy_outside(home, EVENTS)
    manifest = _point_at(home, EVENTS, str(outside))

    err = refused(home, ManifestError)

    assert (err.source, err.field) == (str(manifest), "files[0].path")
    assert str(outside) in str(err)


def test_an_absolute_path_outside_is_allowed_under_a_policy_data_root(home):
    outside = _copy_outside(home, EVENTS)
    _point_at(home, EVENTS, f"file://{outside}")
    policy = GovernancePolicy(data_roots=[str(outside.parent)])

    receipt, _ = intake(_env(home, policy).catalog, TrainingConfig(), WEEK, policy)

    assert receipt.partition_key == WEEK


def test_an_absolute_path_inside_the_catalog_is_allowed(home):
    _point_at(home, EVENTS, str(_data(home, EVENTS)))
    receipt, _ = intake(_env(home).catalog, TrainingConfig(), WEEK, GovernancePolicy())
    assert receipt.partition_key == WEEK


def test_a_symlink_pointing_outside_the_catalog_is_refused(home):
    outside = _copy_outside(home, LABELS)
    link = _data(home, LABELS)
    link.unlink()
    link.symlink_to(outside)

    err = refused(home, ManifestError)

    assert (err.source, err.field) == (str(_manifest(home, LABELS)), "files[0].path")
    assert str(outside) in str(err)


def test_a_glob_character_in_a_path_reads_that_file_and_no_other(home):
    """Polars took '*' in a listed path as a pattern: a file literally named 'part-*.parquet'
    passed the location and digest checks, then its sibling (here a symlink to rows outside
    every root) was read into the frame too, unpinned (found in review)."""
    listed = _data(home, EVENTS).with_name("part-*.parquet")
    _data(home, EVENTS).rename(listed)
    _point_at(home, EVENTS, f"{WINDOW}/part-*.parquet")
    stranger = home / "elsewhere" / "part-0.parquet"
    stranger.parent.mkdir()
    rows = pl.read_parquet(listed, glob=False)
    rows.with_columns(
        pl.concat_str(pl.lit("OUTSIDE-"), "event_id").alias("event_id")
    ).write_parquet(stranger)
    listed.with_name("part-x.parquet").symlink_to(stranger)
    policy = GovernancePolicy()

    receipt, inputs = intake(_env(home, policy).catalog, TrainingConfig(), WEEK, policy)
    frame = build_training_frame(receipt, inputs, policy).frame

    assert frame.height > 0
    assert not frame["event_id"].str.starts_with("OUTSIDE-").any()


def test_a_symlinked_folder_pointing_outside_the_catalog_is_refused(home):
    folder = _data(home, TERMINAL).parent
    outside = home / "elsewhere"
    shutil.move(folder, outside)
    folder.symlink_to(outside, target_is_directory=True)

    err = refused(home, ManifestError)

    assert err.field == "files[0].path" and str(outside) in str(err)


@pytest.mark.parametrize(
    ("url", "scheme"),
    [
        ("http://example.com/part-0.parquet", "http"),
        ("https://example.com/part-0.parquet", "https"),
        ("ftp://example.com/part-0.parquet", "ftp"),
        ("data:application/octet-stream;base64,UEFSMQ==", "data"),
        ("simplecache::file:///etc/passwd", "simplecache"),
        ("github://org:repo@main/part-0.parquet", "github"),
    ],
)
def test_a_url_scheme_off_the_allowlist_is_refused_before_anything_is_fetched(home, url, scheme):
    manifest = _point_at(home, EVENTS, url)

    err = refused(home, PolicyViolationError)

    assert (err.source, err.field) == (str(manifest), "files[0].path")
    assert f"'{scheme}'" in str(err)


def test_the_allowlist_is_the_policys(home):
    # 'file' taken off the list: even the catalog's own plain paths are refused.
    err = refused(home, PolicyViolationError, policy=GovernancePolicy(allowed_url_schemes=["s3"]))
    assert err.field == "files[0].path" and "'file'" in str(err)


# --------------------------------------------------------------- empty weeks, no positives


def test_an_empty_test_week_is_refused_naming_its_manifest(home):
    empty = pl.read_parquet(_data(home, EVENTS, TEST_WINDOW)).head(0)
    manifest = repin(home, EVENTS, empty, window=TEST_WINDOW)

    err = refused(home, MissingInputError)

    assert (err.source, err.field) == (str(manifest), "row_count")
    assert "test window" in str(err)


def test_an_empty_week_inside_the_training_window_is_not_an_error(home):
    # Train spans four weeks: one of them empty (an outage) leaves enough to train on.
    repin(home, EVENTS, pl.read_parquet(_data(home, EVENTS)).head(0))
    receipt, _ = intake(_env(home).catalog, TrainingConfig(), WEEK, GovernancePolicy())
    assert receipt.partition_key == WEEK


def test_a_week_without_positives_fails_its_gate_with_the_reason(home):
    # Every label of a test-window event says 'genuine': the run completes, the gate says why not.
    test_events = pl.read_parquet(_data(home, EVENTS, TEST_WINDOW))["event_id"]
    for manifest in sorted((home / "catalog" / "datasets" / LABELS).glob("*.json")):
        frame = pl.read_parquet(_data(home, LABELS, manifest.stem))
        relabelled = frame.with_columns(
            label_value=pl.when(pl.col("event_id").is_in(test_events.implode()))
            .then(0)
            .otherwise(pl.col("label_value"))
            .cast(frame.schema["label_value"])
        )
        repin(home, LABELS, relabelled, window=manifest.stem)
    env = _env(home)
    config = TrainingConfig.model_validate(
        {
            "evaluation": {
                "bootstrap_resamples": 50,
                "slice_bootstrap_resamples": 0,
                "shap_sample_rows": 0,
                "latency_repeats": 1,
            }
        }
    )

    run = stage_intake(env, config, WEEK)
    frame = stage_frame(env, run.ref)
    model = stage_model(env, run.ref, frame.ref)
    report = stage_evaluation(env, run.ref, frame.ref, model.ref)
    gate = stage_gate(env, run.ref, frame.ref, model.ref, report.ref).doc

    assert frame.counts["test_rows"] > 0 and frame.counts["test_positives"] == 0
    assert report.counts["test_positives"] == 0
    assert gate.gate_status == "FAIL"
    assert any(r.startswith("test_positives") and "= 0" in r for r in gate.reasons), gate.reasons
    positives = next(c for c in gate.criteria if c.name == "test_positives")
    assert not positives.passed and positives.observed == 0
