"""The artifact store and the registry on S3: the local store's guarantees, against a real
S3-compatible server (moto's, over HTTP on loopback; see ``s3_server.py``).

s3fs finds the server through the standard ``AWS_ENDPOINT_URL`` (what an operator sets for MinIO
or Ceph); the dummy credentials keep any real AWS profile out of reach.
"""

import json
import multiprocessing
import os
import subprocess
import sys
import uuid
from datetime import timedelta

import fsspec
import pytest

from model_factory.contracts import PublishBundleRequest
from model_factory.core.bundles import verify_bundle, write_bundle
from model_factory.core.canonical import canonical_json, sha256_hex
from model_factory.core.demo_data import DemoDataSpec, generate_demo_data
from model_factory.core.manifests import Catalog
from model_factory.core.registry import FileRegistry
from model_factory.core.runs import FactoryEnv
from model_factory.core.settings import Settings
from model_factory.core.storage import (
    S3_CONDITIONAL_WRITES_ENV,
    ArtifactStore,
    remove_partial,
    replace_from_file,
    stale_partials,
    write_exclusive,
)
from model_factory.errors import ConfigError, DigestMismatchError, ImmutabilityError
from model_factory_tests.core.test_bundles_registry import LENIENT, POINT_GATES_POLICY, build
from model_factory_tests.s3_server import (
    DENIES_DELETE,
    IGNORES_CONDITIONAL,
    REJECTS_CONDITIONAL,
    S3Server,
    race_publish,
    race_write,
)

pytestmark = pytest.mark.xdist_group("s3")

WEEK = "2026-02-23"


@pytest.fixture(scope="module")
def s3(tmp_path_factory):
    server = S3Server(tmp_path_factory.mktemp("s3")).start()
    saved = {k: os.environ.get(k) for k in server.env}
    os.environ.update(server.env)  # spawned publishers and the CLI inherit it too
    try:
        yield server
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        fsspec.get_filesystem_class("s3").clear_instance_cache()
        server.stop()


def new_bucket(prefix: str = "mf-") -> str:
    name = f"{prefix}{uuid.uuid4().hex[:10]}"
    fsspec.filesystem("s3").mkdir(name)
    return name


def keys(bucket: str) -> list[str]:
    return sorted(fsspec.filesystem("s3", use_listings_cache=False).find(bucket))


@pytest.fixture
def bucket(s3) -> str:
    return new_bucket()


# -- content-addressed blobs and exclusive create -------------------------------------------------


def test_blobs_are_content_addressed_and_a_changed_blob_is_detected(bucket):
    store = ArtifactStore(f"s3://{bucket}/store")
    ref = store.put_bytes("model.ubj", b"model bytes", suffix=".ubj")
    digest = sha256_hex(b"model bytes")
    assert ref.uri == f"s3://{bucket}/store/sha256/{digest[:2]}/{digest}.ubj"
    assert ref.sha256 == digest and ArtifactStore.get_bytes(ref) == b"model bytes"
    assert store.put_bytes("model.ubj", b"model bytes", suffix=".ubj") == ref
    assert keys(bucket) == [ref.uri.removeprefix("s3://")]  # no temporary or probe key left
    fsspec.filesystem("s3").pipe_file(ref.uri, b"model bytez")  # someone edits it behind our back
    with pytest.raises(DigestMismatchError) as info:
        ArtifactStore.get_bytes(ref)
    assert info.value.source == ref.uri
    # a writer finding another object under the address (by its size, on S3) refuses to pin it
    fsspec.filesystem("s3").pipe_file(ref.uri, b"model bytes, truncated")
    with pytest.raises(DigestMismatchError) as info:
        store.put_bytes("model.ubj", b"model bytes", suffix=".ubj")
    assert (info.value.source, info.value.field) == (ref.uri, "sha256")


def test_an_export_to_s3_replaces_the_object(bucket, tmp_path):
    fs = fsspec.filesystem("s3")
    path = f"{bucket}/exports/frame.parquet"
    for data in (b"first export", b"second export"):
        local = tmp_path / "frame.parquet"
        local.write_bytes(data)
        replace_from_file(fs, path, str(local))
        fs.invalidate_cache()
        assert fs.cat_file(path) == data
    assert keys(bucket) == [path]


def test_exclusive_create_keeps_the_first_bytes(bucket):
    fs = fsspec.filesystem("s3")
    path = f"{bucket}/registry/records/x.json"
    assert write_exclusive(fs, path, b"first") is True
    assert write_exclusive(fs, path, b"second") is False
    assert fs.cat_file(path) == b"first"
    assert keys(bucket) == [path]


def test_a_sweep_removes_leftover_temporary_objects_only(bucket):
    """A probe object a bucket kept (its delete was denied once) is swept; a final key is not,
    and a young one waits for the margin."""
    fs = fsspec.filesystem("s3")
    final, probe = f"{bucket}/store/sha256/ab/abc", f"{bucket}/store/.tmp-probe-{'0' * 32}.partial"
    fs.pipe_file(final, b"kept")
    fs.pipe_file(probe, b"1")
    fs.invalidate_cache()
    assert stale_partials(f"s3://{bucket}/store", timedelta(hours=1)) == []  # written just now
    (left,) = stale_partials(f"s3://{bucket}/store", timedelta(0))
    assert (left.uri, left.bytes) == (f"s3://{probe}", 1)
    assert remove_partial(left) is True
    assert remove_partial(left) is False  # another sweep got it first
    assert keys(bucket) == [final]


def test_a_named_record_is_created_once_and_never_replaced(bucket, passed):
    bundle, _uri = passed
    store = ArtifactStore(f"s3://{bucket}/store")
    uri, created = store.put_named_once("bundles/run/bundle.json", bundle)
    assert created and uri == f"s3://{bucket}/store/bundles/run/bundle.json"
    before = fsspec.filesystem("s3").cat_file(uri)
    assert store.put_named_once("bundles/run/bundle.json", bundle) == (uri, False)
    with pytest.raises(ImmutabilityError) as info:
        store.put_named_once(
            "bundles/run/bundle.json", bundle.model_copy(update={"partition_key": "2026-03-02"})
        )
    assert info.value.source == uri and info.value.field == "content digest"
    assert fsspec.filesystem("s3").cat_file(uri) == before


def test_racing_processes_create_a_key_exactly_once(bucket):
    ctx = multiprocessing.get_context("spawn")
    barrier, results = ctx.Barrier(4), ctx.Queue()
    path = f"{bucket}/race/key.json"
    procs = [
        ctx.Process(target=race_write, args=(path, f"writer {i}".encode(), barrier, results))
        for i in range(4)
    ]
    for p in procs:
        p.start()
    outcomes = [results.get(timeout=180) for _ in procs]
    for p in procs:
        p.join(timeout=60)
    winners = [data for data, created in outcomes if created]
    assert len(winners) == 1, outcomes
    assert fsspec.filesystem("s3").cat_file(path) == winners[0]
    assert keys(bucket) == [path]


# -- bundles and the registry on S3 ---------------------------------------------------------------


@pytest.fixture(scope="module")
def catalog(tmp_path_factory):
    root = tmp_path_factory.mktemp("s3-catalog")
    generate_demo_data(str(root), DemoDataSpec(customers=600, terminals=1200, weeks=9))
    return root


@pytest.fixture(scope="module")
def s3_env(s3, catalog) -> FactoryEnv:
    """Catalog on disk; every artifact, bundle and record on S3."""
    name = new_bucket()
    return FactoryEnv(
        Catalog(str(catalog)),
        ArtifactStore(f"s3://{name}/store"),
        FileRegistry(f"s3://{name}/registry"),
        POINT_GATES_POLICY,  # the policy under which LENIENT's point criteria may stand
    )


@pytest.fixture(scope="module")
def passed(s3_env):
    bundle, uri, created = build(s3_env, LENIENT)
    assert created and uri.startswith("s3://")
    assert bundle.gate_receipt.gate_status == "PASS", bundle.gate_receipt.reasons
    return bundle, uri


def test_a_bundle_on_s3_verifies_and_rebuilds_identically(s3_env, passed):
    bundle, uri = passed
    assert verify_bundle(uri) == bundle
    assert all(ref.uri.startswith(s3_env.store.url + "/sha256/") for ref in bundle.artifact_refs)
    again, again_uri, created = build(s3_env, LENIENT)
    assert not created and again_uri == uri and again.artifact_refs == bundle.artifact_refs
    with pytest.raises(ImmutabilityError):
        write_bundle(s3_env.store, bundle.model_copy(update={"partition_key": "2026-03-02"}))
    assert verify_bundle(uri) == bundle


def test_publishing_twice_keeps_one_record_and_names_the_champion(bucket, passed):
    bundle, uri = passed
    registry = FileRegistry(f"s3://{bucket}/registry")
    request = PublishBundleRequest(bundle_uri=uri, bundle_id=bundle.bundle_id)
    first, second = registry.publish(request), registry.publish(request)
    assert (first.status, second.status) == ("published", "already_published")
    assert (first.champion_changed, second.champion_changed) == (True, False)
    assert first.record_uri == f"s3://{bucket}/registry/records/{bundle.bundle_id}.json"
    assert second.record == first.record == registry.get(bundle.bundle_id)
    assert [r.bundle_id for r in registry.records()] == [bundle.bundle_id]
    assert [c.bundle_id for c in registry.history(bundle.model_family)] == [bundle.bundle_id]


def test_concurrent_publishers_leave_exactly_one_record(bucket, passed):
    bundle, uri = passed
    url = f"s3://{bucket}/registry"
    with multiprocessing.get_context("spawn").Pool(3) as pool:
        statuses = sorted(pool.map(race_publish, [(url, uri, bundle.bundle_id)] * 3))
    assert statuses == ["already_published"] * 2 + ["published"]
    stored = keys(bucket)
    assert [k for k in stored if "/records/" in k] == [
        f"{bucket}/registry/records/{bundle.bundle_id}.json"
    ]
    assert [k for k in stored if "/champions/" in k] == [
        f"{bucket}/registry/champions/{bundle.model_family}/00000001.json"
    ]
    assert len(FileRegistry(url).history(bundle.model_family)) == 1


def test_the_registry_sees_what_other_processes_wrote_since_it_last_listed(bucket, passed):
    """s3fs caches listings per client; a cached one would hide other publishers' records and
    champion changes (and a promoter retrying a lost sequence number would spin on it)."""
    bundle, uri = passed
    registry = FileRegistry(f"s3://{bucket}/registry")
    registry.publish(PublishBundleRequest(bundle_uri=uri, bundle_id=bundle.bundle_id))
    assert len(registry.records()) == 1 and len(registry.history(bundle.model_family)) == 1
    other = fsspec.filesystem("s3", skip_instance_cache=True)  # another process's own client
    later = "mfb-" + "f" * 20
    record = registry.get(bundle.bundle_id).model_copy(update={"bundle_id": later})
    other.pipe_file(registry.record_path(later), canonical_json(record))
    change = registry.champion(bundle.model_family).model_copy(
        update={"sequence": 2, "bundle_id": later, "previous_bundle_id": bundle.bundle_id}
    )
    other.pipe_file(
        f"{bucket}/registry/champions/{bundle.model_family}/00000002.json", canonical_json(change)
    )
    assert [r.bundle_id for r in registry.records()] == [bundle.bundle_id, later]
    assert registry.champion(bundle.model_family).bundle_id == later


def test_a_different_bundle_under_a_registered_id_is_refused(bucket, passed):
    """Another writer's record for this id names other bundle content: publishing refuses, and
    the record stays as that writer left it."""
    bundle, uri = passed
    registry = FileRegistry(f"s3://{bucket}/registry")
    theirs = (
        FileRegistry(f"s3://{bucket}/theirs")
        .publish(PublishBundleRequest(bundle_uri=uri, bundle_id=bundle.bundle_id))
        .record
    )
    other = theirs.model_copy(update={"bundle_sha256": "0" * 64})
    fs = fsspec.filesystem("s3")
    path = registry.record_path(bundle.bundle_id)
    assert write_exclusive(fs, path, canonical_json(other))
    response = registry.publish(PublishBundleRequest(bundle_uri=uri, bundle_id=bundle.bundle_id))
    assert response.status == "refused" and "different bundle" in response.reason
    assert fs.cat_file(path) == canonical_json(other)
    assert registry.history(bundle.model_family) == []


# -- buckets without conditional writes -----------------------------------------------------------


@pytest.mark.parametrize(
    "prefix", [REJECTS_CONDITIONAL, IGNORES_CONDITIONAL], ids=["rejects-501", "ignores-header"]
)
def test_a_bucket_without_conditional_writes_is_refused_and_nothing_is_overwritten(
    s3, prefix, monkeypatch
):
    monkeypatch.delenv(S3_CONDITIONAL_WRITES_ENV, raising=False)
    name = new_bucket(prefix)
    fs = fsspec.filesystem("s3")
    if prefix == IGNORES_CONDITIONAL:  # the fixture really is a bucket that would overwrite
        fs.pipe_file(f"{name}/demo", b"1", mode="create")
        fs.pipe_file(f"{name}/demo", b"2", mode="create")
        assert fs.cat_file(f"{name}/demo") == b"2"
        fs.rm_file(f"{name}/demo")
    store = ArtifactStore(f"s3://{name}/store")
    with pytest.raises(ConfigError) as info:
        store.put_bytes("model.ubj", b"model bytes")
    digest = sha256_hex(b"model bytes")
    assert info.value.source == f"s3://{name}/store/sha256/{digest[:2]}/{digest}"
    assert info.value.field == S3_CONDITIONAL_WRITES_ENV and "If-None-Match" in str(info.value)
    assert keys(name) == []  # nothing written, the probe removed
    # A record that exists already is never replaced: refused by content, not overwritten.
    path = f"{name}/registry/records/b.json"
    fs.pipe_file(path, b"the first writer's bytes")
    assert write_exclusive(fs, path, b"another writer's bytes") is False
    assert fs.cat_file(path) == b"the first writer's bytes"


def test_single_writer_opt_in_writes_once_without_conditional_writes(s3, monkeypatch):
    monkeypatch.setenv(S3_CONDITIONAL_WRITES_ENV, "single-writer")
    name = new_bucket(REJECTS_CONDITIONAL)
    fs = fsspec.filesystem("s3")
    path = f"{name}/records/a.json"
    assert write_exclusive(fs, path, b"first") is True
    assert write_exclusive(fs, path, b"second") is False
    assert fs.cat_file(path) == b"first" and keys(name) == [path]


def test_a_bucket_that_denies_deletes_is_probed_once_and_written_to(s3, monkeypatch):
    """A write-once bucket (DeleteObject denied) honours If-None-Match: the probe's answer is
    kept though its key cannot be removed, so writes succeed, with one warning and one probe key
    left behind, not one per write."""
    monkeypatch.delenv(S3_CONDITIONAL_WRITES_ENV, raising=False)
    name = new_bucket(DENIES_DELETE)
    store = ArtifactStore(f"s3://{name}/store")
    with pytest.warns(RuntimeWarning, match="probe") as warned:
        refs = [store.put_bytes("blob", data) for data in (b"first", b"second", b"third")]
    assert len(warned) == 1 and f"s3://{name}/store/sha256/" in str(warned[0].message)
    blobs = sorted(ref.uri.removeprefix("s3://") for ref in refs)
    probes = [k for k in keys(name) if k not in blobs]
    assert len(probes) == 1 and probes[0].rsplit("/", 1)[-1].startswith(".tmp-probe-")
    assert [ArtifactStore.get_bytes(r) for r in refs] == [b"first", b"second", b"third"]


def test_an_unknown_conditional_write_mode_is_a_config_error():
    with pytest.raises(ConfigError) as info:
        Settings.from_env({S3_CONDITIONAL_WRITES_ENV: "sometimes"})
    assert info.value.field == S3_CONDITIONAL_WRITES_ENV and "single-writer" in str(info.value)


# -- a whole partition through Dagster with catalog, store and registry on S3 --------------------


@pytest.mark.slow
def test_a_week_runs_end_to_end_on_s3(s3, tmp_path):
    name = new_bucket()
    env = {
        **s3.environ(),
        "MODEL_FACTORY_HOME": str(tmp_path / "home"),
        "MODEL_FACTORY_CATALOG": f"s3://{name}/catalog",
        "MODEL_FACTORY_STORE": f"s3://{name}/store",
        "MODEL_FACTORY_REGISTRY": f"s3://{name}/registry",
        "OMP_WAIT_POLICY": "PASSIVE",
    }
    for var in ("DAGSTER_HOME", S3_CONDITIONAL_WRITES_ENV):
        env.pop(var, None)
    policy = tmp_path / "policy.json"  # under which LENIENT's point criteria may stand
    policy.write_text(POINT_GATES_POLICY.model_dump_json())
    env["MODEL_FACTORY_POLICY"] = str(policy)
    cli = [sys.executable, "-m", "model_factory.cli"]
    made = subprocess.run(
        [*cli, "demo-data", "--weeks", "9", "--customers", "600", "--terminals", "1200"],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert made.returncode == 0, made.stderr[-3000:]
    config = tmp_path / "config.json"  # point gates: this small week passes, so it is published
    config.write_text(LENIENT.model_dump_json())
    ran = subprocess.run(
        [*cli, "run", "--from", WEEK, "--to", WEEK, "--config", str(config), "--json"],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert ran.returncode == 0, ran.stderr[-3000:]
    week = json.loads(ran.stdout.strip().splitlines()[-1])
    assert week["week"] == WEEK and week["gate"] == "PASS" and week["published"], week
    registry = FileRegistry(f"s3://{name}/registry")
    record = registry.get(week["bundle_id"])
    assert record.bundle_uri.startswith(f"s3://{name}/store/bundles/")
    bundle = verify_bundle(record.bundle_uri)
    assert (
        bundle.partition_key == WEEK
        and registry.champion(bundle.model_family).bundle_id == bundle.bundle_id
    )
    stored = keys(name)
    assert any(k.startswith(f"{name}/catalog/") for k in stored)
    assert not [k for k in stored if ".tmp-" in k or k.endswith(".partial")]
    # Nothing went to the local defaults: only the Dagster instance lives under the home folder.
    assert sorted(p.name for p in (tmp_path / "home").iterdir()) == ["dagster"]


def test_verify_of_a_bucket_that_does_not_exist_is_an_error_naming_it(s3, tmp_path):
    """Found in review: a mistyped bucket read as a healthy, empty registry (and ledger)."""
    import dagster as dg

    from model_factory.core.journal import Journal
    from model_factory.errors import StorageError
    from model_factory.ledger import verify_ledger

    missing = f"mf-missing-{uuid.uuid4().hex[:8]}"
    with pytest.raises(StorageError) as info:
        FileRegistry(f"s3://{missing}/registry").verify()
    assert info.value.source == f"s3://{missing}/registry" and missing in str(info.value)
    with dg.instance_for_test(temp_dir=str(tmp_path)) as instance, pytest.raises(StorageError):
        verify_ledger(instance, Journal(f"s3://{missing}/store/ledger"))
    # an existing bucket with nothing in it yet is an empty registry, as before
    assert FileRegistry(f"s3://{new_bucket()}/registry").verify().ok
