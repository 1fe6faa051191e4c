"""Frames beyond memory (issue 8): the streaming build writes the same frame, byte for byte.

The streaming build keeps only the narrow rows and the match indices in memory and writes the
features chunk by chunk; its audit scans the written file. Both modes write fixed row groups, so
the content-addressed frame (and with it every id downstream) does not depend on the mode.
"""

from __future__ import annotations

import io
import threading
from dataclasses import replace
from pathlib import Path

import polars as pl
import pyarrow.parquet as pq
import pytest

from model_factory.contracts import GovernancePolicy, TrainingConfig
from model_factory.core import frames
from model_factory.core.canonical import sha256_hex
from model_factory.core.demo_data import DemoDataSpec, generate_demo_data
from model_factory.core.frames import (
    build_training_frame,
    frame_from_parquet,
    frame_to_parquet,
    write_training_frame,
)
from model_factory.core.intake import intake, reload_inputs
from model_factory.core.manifests import Catalog
from model_factory.core.registry import FileRegistry
from model_factory.core.runs import FactoryEnv, stage_frame, stage_intake
from model_factory.core.storage import ArtifactStore
from model_factory.errors import SchemaMismatchError
from model_factory_tests.core.test_frames_asof import (
    PARTITION,
    config,
    random_catalog_data,
    write_catalog,
)
from model_factory_tests.core.test_leakage_audit import unsafe_valid_from_snapshots


def both_modes(root: Path, seed: int, chunk_rows: int, missing_label: str = "negative"):
    catalog = write_catalog(root / "catalog", random_catalog_data(seed))
    receipt, inputs = intake(catalog, config(missing_label), PARTITION, GovernancePolicy())
    built = build_training_frame(receipt, inputs, GovernancePolicy())
    written = write_training_frame(
        receipt, inputs, GovernancePolicy(), str(root / "frame.parquet"), chunk_rows=chunk_rows
    )
    return built, written


@pytest.mark.parametrize(
    ("seed", "chunk_rows", "missing_label"),
    [(1, 5, "negative"), (2, 16, "exclude"), (3, 37, "negative"), (5, 10_000, "exclude")],
)
def test_streaming_frame_is_byte_identical_to_the_in_memory_frame(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    seed: int,
    chunk_rows: int,
    missing_label: str,
) -> None:
    # small row groups, so chunks straddle them and the last one is partial
    monkeypatch.setattr(frames, "FRAME_ROW_GROUP", 16)
    built, written = both_modes(tmp_path, seed, chunk_rows, missing_label)
    data = Path(written.path).read_bytes()
    assert built.frame.height > 40
    assert sha256_hex(data) == sha256_hex(frame_to_parquet(built.frame))
    assert frame_from_parquet(data).equals(built.frame)
    # the split is an Enum while the frame is built; the frame holds (and stores) a String
    assert built.frame.schema["split"] == pl.String
    assert pl.read_parquet_schema(written.path)["split"] == pl.String
    assert pq.ParquetFile(written.path).metadata.num_row_groups == -(-built.frame.height // 16)
    assert written.audit == built.audit and written.audit.passed
    assert written.feature_schema == built.feature_schema
    counts = built.frame.group_by("split").agg(n=pl.len(), p=pl.col("label").sum())
    assert written.rows == {r["split"]: r["n"] for r in counts.iter_rows(named=True)}
    assert written.positives == {r["split"]: r["p"] for r in counts.iter_rows(named=True)}
    # no temporary file is left next to the frame
    assert sorted(p.name for p in tmp_path.iterdir()) == ["catalog", "frame.parquet"]


def test_frame_bytes_do_not_depend_on_how_rows_were_chunked(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr(frames, "FRAME_ROW_GROUP", 7)
    frame = pl.DataFrame({"a": range(100), "b": [float(i) / 3 for i in range(100)]})
    whole = frame_to_parquet(frame)
    for k, sizes in enumerate(([1] * 100, [7, 7, 86], [99, 1], [3, 50, 47], [100])):
        starts = [sum(sizes[:i]) for i in range(len(sizes))]
        chunks = (frame.slice(start, n) for start, n in zip(starts, sizes, strict=True))
        frames._sink_frame(chunks, frame.schema, str(tmp_path / f"{k}.parquet"))
        assert (tmp_path / f"{k}.parquet").read_bytes() == whole, sizes
    assert pq.ParquetFile(io.BytesIO(whole)).metadata.num_row_groups == 15  # 14 of 7, then 2


def test_streaming_audit_still_catches_the_valid_from_trap(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The audit in streaming mode reads the written evidence, so a wrong join is still caught."""
    monkeypatch.setattr(frames, "_snapshots", unsafe_valid_from_snapshots)
    built, written = both_modes(tmp_path, 4, 97)
    assert not written.audit.passed
    assert any(v.startswith("features_available_before_event") for v in written.audit.violations)
    assert written.audit == built.audit


@pytest.mark.parametrize("mode", ["memory", "streaming"])
def test_a_group_whose_match_fails_fails_the_build_and_leaves_no_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, mode: str
) -> None:
    """Matches still run in worker threads when the first group is gathered: an error in a
    later one reaches the caller as raised, and the streaming build removes its file."""
    catalog = write_catalog(tmp_path / "catalog", random_catalog_data(6))
    receipt, inputs = intake(catalog, config("negative"), PARTITION, GovernancePolicy())
    match_group, calls, lock = frames._match_group, [], threading.Lock()

    def one_fails(frame, prepared, keys, ttl):
        with lock:
            calls.append(keys)
            nth = len(calls)
        if nth == 2:  # one group matched, the next one fails
            raise SchemaMismatchError("planted", source="snapshots", field=keys[0])
        return match_group(frame, prepared, keys, ttl)

    monkeypatch.setattr(frames, "_match_group", one_fails)
    path = tmp_path / "frame.parquet"
    with pytest.raises(SchemaMismatchError, match="planted"):
        if mode == "memory":
            build_training_frame(receipt, inputs, GovernancePolicy())
        else:
            write_training_frame(receipt, inputs, GovernancePolicy(), str(path), chunk_rows=16)
    assert len(inputs.feature_groups) > 1 and len(calls) >= 2
    assert sorted(p.name for p in tmp_path.iterdir()) == ["catalog"]


def test_an_error_while_chunks_are_written_is_raised_as_itself_and_leaves_no_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A chunk fails after others were written: the streaming sink stops, the builder's own
    error reaches the caller (not the writer's wrapper around it), and no file is left."""
    catalog = write_catalog(tmp_path / "catalog", random_catalog_data(7))
    receipt, inputs = intake(catalog, config("negative"), PARTITION, GovernancePolicy())
    gather, calls = frames._FeatureSource.gather, []

    def fails_on_the_third_chunk(self, used):
        calls.append(used.size)
        if sum(1 for n in calls if n) == 3:
            raise SchemaMismatchError("planted", source="snapshots", field="f")
        return gather(self, used)

    monkeypatch.setattr(frames._FeatureSource, "gather", fails_on_the_third_chunk)
    with pytest.raises(SchemaMismatchError, match="planted"):
        write_training_frame(
            receipt, inputs, GovernancePolicy(), str(tmp_path / "frame.parquet"), chunk_rows=16
        )
    assert sum(1 for n in calls if n) == 3
    assert sorted(p.name for p in tmp_path.iterdir()) == ["catalog"]


def test_an_empty_frame_is_written_with_its_columns(tmp_path: Path) -> None:
    empty = pl.DataFrame({"event_id": [], "x": []}, schema={"event_id": pl.Int64, "x": pl.Float32})
    back = frame_from_parquet(frame_to_parquet(empty))
    assert back.height == 0 and back.schema == empty.schema


def test_the_frame_stage_stores_the_same_frame_in_either_mode(tmp_path: Path) -> None:
    """On demo data, through the stage: streaming (forced, and chosen by `auto` above a size)
    stores the very blob and record the in-memory build stores, so no id depends on the mode."""

    generate_demo_data(
        str(tmp_path / "catalog"), DemoDataSpec(customers=400, terminals=800, weeks=8)
    )
    results = {}
    for mode, above in (("memory", 0), ("streaming", 0), ("auto", 1), ("auto", 1 << 40)):
        env = FactoryEnv(
            Catalog(str(tmp_path / "catalog")),
            ArtifactStore(str(tmp_path / "store")),
            FileRegistry(str(tmp_path / "registry")),
            GovernancePolicy(),
        )
        env = replace(env, frame_mode=mode, stream_frames_above_bytes=above)
        intake_result = stage_intake(env, TrainingConfig(), "2026-02-23")
        streams = env.streams_frame(reload_inputs(intake_result.doc))
        results[(mode, above)] = (stage_frame(env, intake_result.ref), streams)
    assert [s for _, s in results.values()] == [False, True, True, False]
    refs = {(r.ref.sha256, r.doc.frame.sha256) for r, _ in results.values()}
    assert len(refs) == 1, refs  # one record and one frame blob, whatever the mode
    assert len(list((tmp_path / "store").rglob("*.parquet"))) == 1
    record = results[("streaming", 0)][0].doc
    assert record.rows["train"] > 1000 and record.leakage_audit.passed


def test_the_dagster_resource_keeps_the_frame_mode_from_the_environment(monkeypatch) -> None:
    """The resource overrides only what it is given: the mode set in the environment (or on the
    launchpad) reaches the run, and a wrong one is refused naming the field."""
    from model_factory.defs.resources import ModelFactoryResource
    from model_factory.errors import ConfigError

    monkeypatch.setenv("MODEL_FACTORY_FRAME_MODE", "streaming")
    monkeypatch.setenv("MODEL_FACTORY_STREAM_FRAMES_ABOVE_BYTES", "123")
    env = ModelFactoryResource().factory_env()
    assert (env.frame_mode, env.stream_frames_above_bytes) == ("streaming", 123)
    assert ModelFactoryResource(frame_mode="memory").factory_env().frame_mode == "memory"
    with pytest.raises(ConfigError, match="frame_mode"):
        ModelFactoryResource(frame_mode="fast").factory_env()


def test_a_full_disk_while_the_frame_is_written_is_a_storage_error_naming_it(
    tmp_path: Path, monkeypatch
) -> None:
    """Polars' parquet writer reports a full $TMPDIR as a ComputeError naming the OS error (the
    streaming review found it escaping unwrapped in memory mode); another ComputeError is not
    a storage problem and goes on as it is."""
    from model_factory.core import runs
    from model_factory.errors import StorageError

    generate_demo_data(str(tmp_path / "catalog"), DemoDataSpec(customers=300, weeks=8))
    env = FactoryEnv(
        Catalog(str(tmp_path / "catalog")),
        ArtifactStore(str(tmp_path / "store")),
        FileRegistry(str(tmp_path / "registry")),
        GovernancePolicy(),
    )
    intake = stage_intake(env, TrainingConfig(), "2026-02-23")
    store_before = sorted(p for p in (tmp_path / "store").rglob("*") if p.is_file())

    def full(*args, **kwargs):
        raise pl.exceptions.ComputeError(
            "parquet: File out of specification: underlying IO error: No space left on device "
            "(os error 28)"
        )

    monkeypatch.setattr(runs, "frame_file", full)
    with pytest.raises(StorageError) as info:
        stage_frame(env, intake.ref)
    assert info.value.source.endswith("/frame.parquet") and "os error 28" in str(info.value)
    assert sorted(p for p in (tmp_path / "store").rglob("*") if p.is_file()) == store_before

    def other(*args, **kwargs):
        raise pl.exceptions.ComputeError("a bug of our own")

    monkeypatch.setattr(runs, "frame_file", other)
    with pytest.raises(pl.exceptions.ComputeError):
        stage_frame(env, intake.ref)
