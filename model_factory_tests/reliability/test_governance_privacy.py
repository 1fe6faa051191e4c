"""Governance and privacy (issue 7, item 4).

The policy file is validated and versioned and its digest is pinned in every intake receipt (so
in the train run id) and every bundle; ``bundle reproduce`` refuses to call a bundle IDENTICAL
under another policy. PII columns (by name or pattern) never enter a frame, whether they sit in
the events, a feature group or the labels. Gate floors, the data window and who may trigger are
the policy's. Finally a real run of the demo through Dagster is scanned byte by byte: no bundle,
report, registry record, ledger entry or Dagster record holds a PII value or a raw event row.
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import dagster as dg
import polars as pl
import pytest
from click.testing import CliRunner

from model_factory.cli import main
from model_factory.contracts import (
    GovernancePolicy,
    ModelBundle,
    Provenance,
    TimeWindow,
    TrainingConfig,
)
from model_factory.core.bundles import load_bundle
from model_factory.core.canonical import sha256_hex
from model_factory.core.demo_data import DemoDataSpec, generate_demo_data
from model_factory.core.frames import build_training_frame
from model_factory.core.governance import pii_columns, policy_digest
from model_factory.core.intake import intake
from model_factory.core.manifests import Catalog, create_manifest
from model_factory.core.registry import FileRegistry
from model_factory.core.reproduce import reproduce_bundle
from model_factory.core.runs import (
    FactoryEnv,
    stage_bundle,
    stage_evaluation,
    stage_frame,
    stage_gate,
    stage_intake,
    stage_model,
)
from model_factory.core.settings import Settings, load_policy
from model_factory.core.storage import ArtifactStore
from model_factory.definitions import build_definitions
from model_factory.defs.resources import ModelFactoryResource
from model_factory.errors import PolicyViolationError
from model_factory.ledger import read_ledger
from model_factory.runner import run_week, run_weeks
from model_factory_tests.conftest import SMALL_DEMO

ROOT = Path(__file__).resolve().parents[2]
SPEC = SMALL_DEMO  # the `pristine` and `home` fixtures of conftest.py hold it
WEEK = "2026-03-09"
PII_IN_DEMO = ("card_number", "customer_email")


def _env(
    home: Path, policy: GovernancePolicy | None = None, source: str = "test policy"
) -> FactoryEnv:
    return FactoryEnv(
        Catalog(str(home / "catalog")),
        ArtifactStore(str(home / "store")),
        FileRegistry(str(home / "registry")),
        policy or GovernancePolicy(),
        source,
    )


def _nothing_written(home: Path) -> bool:
    return not (home / "store").exists() and not (home / "registry").exists()


# ----------------------------------------------------------------- the policy file itself


@pytest.mark.parametrize(
    ("content", "field"),
    [
        ({"pii_patterns": ["(card"]}, "pii_patterns[0]"),
        ({"policy_version": "v 2"}, "policy_version"),
        ({"allowed_url_schemes": ["HTTP://"]}, "allowed_url_schemes[0]"),
        ({"gate_floors": {"roc_auc_lower": "high"}}, "gate_floors.roc_auc_lower"),
        (
            {
                "allowed_data_window": {
                    "start": "2026-01-01T00:00:00",
                    "end": "2026-06-01T00:00:00Z",
                }
            },
            "allowed_data_window.start",
        ),
        (
            {
                "excluded_ranges": [
                    {"start": "2026-02-01T01:00:00+01:00", "end": "2026-02-02T00:00:00Z"}
                ]
            },
            "excluded_ranges[0].start",
        ),
        (
            {"excluded_ranges": [{"start": "2026-02-02T00:00:00Z", "end": "2026-02-01T00:00:00Z"}]},
            "excluded_ranges[0].end",
        ),
        ({"pii_colums": ["email"]}, "pii_colums"),
        ({"schema_version": "mf.GovernancePolicy.v1"}, "schema_version"),
    ],
    ids=[
        "bad-regex",
        "bad-version",
        "bad-scheme",
        "floor-not-a-number",
        "naive-window",
        "non-utc-range",
        "reversed-range",
        "misspelt-key",
        "other-contract-version",
    ],
)
def test_an_invalid_policy_file_is_refused_naming_file_and_field(tmp_path, content, field):
    path = tmp_path / "policy.json"
    path.write_text(json.dumps(content))

    with pytest.raises(PolicyViolationError) as info:
        Settings.from_env(
            {"MODEL_FACTORY_HOME": str(tmp_path), "MODEL_FACTORY_POLICY": str(path)}
        ).policy()

    assert (info.value.source, info.value.field) == (str(path), field)


def test_the_policy_digest_is_the_sha256_of_its_canonical_form(tmp_path):
    # Key order and format do not matter (JSON or YAML); any change of content does.
    (tmp_path / "a.json").write_text(json.dumps({"policy_version": "7", "pii_columns": ["x"]}))
    (tmp_path / "b.yaml").write_text("pii_columns: [x]\npolicy_version: '7'\n")
    a, b = load_policy(str(tmp_path / "a.json")), load_policy(str(tmp_path / "b.yaml"))
    assert policy_digest(a) == policy_digest(b)
    assert re.fullmatch(r"[0-9a-f]{64}", policy_digest(a))
    for change in (
        {"policy_version": "8"},
        {"pii_columns": ["x", "y"]},
        {"allow_override": False},
        {"allowed_url_schemes": ["file"]},
    ):
        assert policy_digest(a.model_copy(update=change)) != policy_digest(a), change


def test_the_policy_is_pinned_in_the_receipt_and_is_part_of_the_run_identity(home):
    catalog = Catalog(str(home / "catalog"))
    strict = GovernancePolicy(policy_version="2", pii_columns=["card_number", "ssn"])

    default_run, _ = intake(catalog, TrainingConfig(), WEEK, GovernancePolicy())
    again, _ = intake(catalog, TrainingConfig(), WEEK, GovernancePolicy())
    strict_run, _ = intake(catalog, TrainingConfig(), WEEK, strict)

    assert default_run.policy_digest == policy_digest(GovernancePolicy())
    assert strict_run.policy_digest == policy_digest(strict)
    assert again.train_run_id == default_run.train_run_id
    assert strict_run.train_run_id != default_run.train_run_id


def test_the_intake_stage_keeps_the_policy_it_pinned_under_its_digest(home, tmp_path):
    """Only the digest was kept: once the policy file changed, nothing told what the rules of a
    run had been (found in review). The policy's canonical form is stored by its sha256, which
    is the receipt's policy_digest, so the digest finds and proves it."""
    strict = GovernancePolicy(
        policy_version="2", pii_columns=["card_number", "ssn"], criterion_meanings={}
    )
    for policy in (GovernancePolicy(), strict):
        env = FactoryEnv(
            Catalog(str(home / "catalog")),
            ArtifactStore(str(tmp_path / "store")),
            FileRegistry(str(tmp_path / "registry")),
            policy,
        )
        receipt = stage_intake(env, TrainingConfig(), WEEK).doc
        kept = env.store.blob_uri(receipt.policy_digest, ".json")
        data = Path(kept).read_bytes()
        assert sha256_hex(data) == receipt.policy_digest
        assert GovernancePolicy.model_validate_json(data) == policy


# --------------------------------------------------------------------- PII never in a frame


def _add_column(home: Path, dataset: str, column: pl.Expr) -> None:
    """Add a column to every week of a dataset, re-pinning each manifest honestly."""
    kind, name, version = dataset.split("/")
    catalog = Catalog(str(home / "catalog"))
    for path in sorted((home / "catalog" / "datasets" / dataset).glob("*.json")):
        old = json.loads(path.read_bytes())
        data = path.parent / path.stem / "part-0.parquet"
        pl.read_parquet(data).with_columns(column).write_parquet(data)
        m = create_manifest(
            [str(data)],
            kind=kind,
            name=name,
            version=version,
            keys=old["keys"],  # type: ignore[arg-type]
            time_column=old["time_column"],
            window=TimeWindow.model_validate(old["time_window"]),
            valid_from_column=old["valid_from_column"],
            ttl_seconds=old["ttl_seconds"],
            label_family=old["label_family"],
            relative_to=catalog.manifest_dir(kind, name, version),
        )
        path.write_text(m.model_dump_json())


@pytest.mark.parametrize(
    ("config", "field"),
    [
        (TrainingConfig(event_features=["amount", "customer_email"]), "event_features"),
        (TrainingConfig(entity_keys=["customer_id", "terminal_id", "card_number"]), "entity_keys"),
    ],
    ids=["feature-by-pattern", "join-key-by-name"],
)
def test_a_config_asking_for_a_pii_event_column_is_refused(home, config, field):
    with pytest.raises(PolicyViolationError) as info:
        stage_intake(_env(home), config, WEEK)

    assert info.value.field == field
    assert "datasets/events/transactions/v1/" in (info.value.source or "")
    assert _nothing_written(home)


def test_a_feature_group_carrying_a_pii_column_is_refused(home):
    # Every non-key column of a group is a feature, so a PII column in it refuses the group.
    _add_column(
        home, "feature_group/customer_spending/v1", pl.lit("x@y.example").alias("holder_email")
    )

    with pytest.raises(PolicyViolationError) as info:
        stage_intake(_env(home), TrainingConfig(), WEEK)

    assert info.value.field == "columns" and "holder_email" in str(info.value)
    assert "datasets/feature_group/customer_spending/v1/" in (info.value.source or "")
    assert _nothing_written(home)


def test_pii_columns_in_events_and_labels_are_never_selected_into_the_frame(home):
    # The events carry card numbers and e-mails; here the labels carry an e-mail too. Neither is
    # a feature, so the frame is built, and none of their values is in it.
    _add_column(
        home,
        "labels/chargebacks/v1",
        (pl.lit("reporter-") + pl.col("event_id") + "@bank.example").alias("reporter_email"),
    )
    env = _env(home)
    run = stage_intake(env, TrainingConfig(), WEEK)
    record = stage_frame(env, run.ref).doc
    frame = pl.read_parquet(record.frame.uri)  # type: ignore[union-attr]

    assert pii_columns(env.policy, frame.columns) == []
    assert not any("email" in c or "card_number" in c for c in frame.columns)
    assert record.leakage_audit.passed  # type: ignore[union-attr]
    events = pl.read_parquet(list((home / "catalog" / "datasets" / "events").rglob("*.parquet")))
    pii = set(events["card_number"]) | set(events["customer_email"])
    strings = [c for c, t in frame.schema.items() if t == pl.String]
    assert not any(frame[c].is_in(list(pii)).any() for c in strings)
    assert not any(frame[c].str.contains("@").any() for c in strings)


def test_the_frame_builder_refuses_a_pii_column_whatever_the_receipt_says(home):
    # A receipt pinned under a policy that did not call the column PII (or forged): the frame
    # stage refuses to run under another policy than the one pinned, and the builder itself,
    # running under the real policy, still never reads the column.
    config = TrainingConfig(event_features=["amount", "is_night"])
    run = stage_intake(_env(home), config, WEEK)
    strict = GovernancePolicy(pii_columns=["is_night"])

    with pytest.raises(PolicyViolationError) as info:
        stage_frame(_env(home, strict), run.ref)
    assert info.value.field == "policy_digest" and info.value.source == run.ref.uri

    receipt, inputs = intake(Catalog(str(home / "catalog")), config, WEEK, GovernancePolicy())
    with pytest.raises(PolicyViolationError) as info:
        build_training_frame(receipt, inputs, strict)
    assert info.value.field == "event_features" and "is_night" in str(info.value)
    assert info.value.source == receipt.train_run_id
    assert list((home / "store").rglob("*.parquet")) == []


def test_every_stage_that_reads_the_policy_refuses_another_than_the_pinned_one(home):
    """Only the frame stage checked: a policy swapped after it (no overrides, higher floors)
    was not the one the gate judged by, and the bundle named the pinned policy's digest over
    a verdict reached under the other (found in review)."""
    env = _env(home)
    run = stage_intake(env, TrainingConfig(), WEEK)
    frame = stage_frame(env, run.ref)
    model = stage_model(env, run.ref, frame.ref)
    report = stage_evaluation(env, run.ref, frame.ref, model.ref)
    gate = stage_gate(env, run.ref, frame.ref, model.ref, report.ref)
    other = _env(home, GovernancePolicy(allow_override=False))
    stages = {
        "evaluation": lambda: stage_evaluation(other, run.ref, frame.ref, model.ref),
        "gate": lambda: stage_gate(other, run.ref, frame.ref, model.ref, report.ref),
        "bundle": lambda: stage_bundle(
            other, run.ref, frame.ref, model.ref, report.ref, gate.ref, write=False
        ),
    }
    for name, stage in stages.items():
        with pytest.raises(PolicyViolationError) as info:
            stage()
        assert (info.value.field, info.value.source) == ("policy_digest", run.ref.uri), name
    assert not list((home / "store").rglob("bundle*.json"))


def test_intake_admits_only_the_policys_vetted_features(home):
    """The audit checks times, not what a value means: a hindsight column stamped as known at
    the payment passed it and the gate (second leakage review). A policy can name the features
    someone has vetted; any other is refused before anything is read."""
    config = TrainingConfig()
    receipt, inputs = intake(Catalog(str(home / "catalog")), config, WEEK, GovernancePolicy())
    names = [
        f.name for f in build_training_frame(receipt, inputs, GovernancePolicy()).feature_schema
    ]
    some = [n for n in names if "__" in n][:2]
    vetted = GovernancePolicy(vetted_features=[*config.event_features, *some])
    with pytest.raises(PolicyViolationError) as info:
        stage_intake(_env(home, vetted, "policy.yaml"), config, WEEK)
    assert (info.value.source, info.value.field) == ("policy.yaml", "vetted_features")
    refused = set(names) - set(config.event_features) - set(some)
    assert refused and all(n in str(info.value) for n in refused)
    assert _nothing_written(home)
    stage_intake(_env(home, GovernancePolicy(vetted_features=names)), config, WEEK)


def test_intake_refuses_a_family_the_policy_does_not_name(home):
    policy = GovernancePolicy(model_families=["fraud_xgb"])
    config = TrainingConfig(model_family="fraud_xgb_b")
    with pytest.raises(PolicyViolationError) as info:
        stage_intake(_env(home, policy, "policy.yaml"), config, WEEK)
    assert (info.value.source, info.value.field) == ("policy.yaml", "model_family")
    assert _nothing_written(home)


def test_no_snapshot_from_outside_the_allowed_data_window_is_joined(home):
    """Intake checks the windows events and labels are read in; snapshots reach back before
    them (card_status has no TTL: to its first one). The policy's window binds them too."""
    from datetime import UTC, datetime, timedelta

    from model_factory.core.windows import data_span

    catalog = Catalog(str(home / "catalog"))
    receipt, inputs = intake(catalog, TrainingConfig(), WEEK, GovernancePolicy())
    start = data_span(receipt.windows).start
    far = datetime(2100, 1, 1, tzinfo=UTC)
    ages = {}
    for name, policy in (
        ("open", GovernancePolicy()),
        ("window", GovernancePolicy(allowed_data_window=TimeWindow(start=start, end=far))),
        # the same rule through an excluded range: everything before the span
        (
            "excluded",
            GovernancePolicy(
                excluded_ranges=[TimeWindow(start=far - timedelta(days=365 * 200), end=start)]
            ),
        ),
    ):
        receipt, inputs = intake(catalog, TrainingConfig(), WEEK, policy)
        built = build_training_frame(receipt, inputs, policy)
        (group,) = [g for g in built.audit.feature_groups if g.name == "card_status"]
        ages[name] = group.max_snapshot_age_seconds
        # every used snapshot was available at or after the start: no event is older than the
        # span's end, so no age can exceed end - start
        if name != "open":
            assert (
                group.max_snapshot_age_seconds
                <= (data_span(receipt.windows).end - start).total_seconds()
            )
    assert ages["open"] > ages["window"] == ages["excluded"]


def test_a_feature_group_column_denied_after_intake_never_reaches_a_frame(home):
    # Intake under the default policy; the policy then calls a feature group's column PII.
    run = stage_intake(_env(home), TrainingConfig(), WEEK)
    strict = GovernancePolicy(pii_columns=["card_flagged"])

    with pytest.raises(PolicyViolationError) as info:
        stage_frame(_env(home, strict), run.ref)
    assert info.value.field == "policy_digest"

    receipt, inputs = intake(
        Catalog(str(home / "catalog")), TrainingConfig(), WEEK, GovernancePolicy()
    )
    with pytest.raises(PolicyViolationError) as info:
        build_training_frame(receipt, inputs, strict)
    assert info.value.field == "columns" and "card_flagged" in str(info.value)
    assert "feature_group/card_status/" in (info.value.source or "")
    assert list((home / "store").rglob("*.parquet")) == []


# ----------------------------------------------------- gate floors, window, who may trigger


def _policy_file(tmp_path: Path, **content) -> tuple[str, GovernancePolicy]:
    path = tmp_path / "policy.yaml"
    path.write_text(json.dumps(content))  # JSON is YAML
    return str(path), load_policy(str(path))


def test_a_config_weaker_than_a_floor_is_refused_naming_the_policy_file(home):
    path, policy = _policy_file(home, policy_version="3", gate_floors={"roc_auc_lower": 0.8})
    config = TrainingConfig()
    criteria = [
        c.model_copy(update={"threshold": 0.7}) if c.name == "roc_auc_lower" else c
        for c in config.gates.criteria
    ]
    relaxed = config.model_copy(
        update={"gates": config.gates.model_copy(update={"criteria": criteria})}
    )
    index = [c.name for c in criteria].index("roc_auc_lower")

    with pytest.raises(PolicyViolationError) as info:
        stage_intake(_env(home, policy, path), relaxed, WEEK)

    assert (info.value.source, info.value.field) == (path, f"gates.criteria[{index}].threshold")
    dropped = config.model_copy(
        update={
            "gates": config.gates.model_copy(
                update={"criteria": [c for c in criteria if c.name != "test_positives"]}
            )
        }
    )
    with pytest.raises(PolicyViolationError) as info:
        stage_intake(_env(home, policy, path), dropped, WEEK)
    assert info.value.field == "gates.criteria" and "test_positives" in str(info.value)
    assert _nothing_written(home)


def test_data_outside_the_policy_window_is_refused_naming_the_policy_file(home):
    path, policy = _policy_file(
        home, allowed_data_window={"start": "2026-02-09T00:00:00Z", "end": "2026-12-31T00:00:00Z"}
    )
    with pytest.raises(PolicyViolationError) as info:
        stage_intake(_env(home, policy, path), TrainingConfig(), WEEK)
    assert (info.value.source, info.value.field) == (path, "allowed_data_window")
    assert _nothing_written(home)


def test_who_may_trigger_is_checked_at_intake(home):
    policy = GovernancePolicy(allowed_triggerers=["schedule:*", "user:alice"])
    with pytest.raises(PolicyViolationError) as info:
        stage_intake(
            _env(home, policy), TrainingConfig(), WEEK, Provenance(triggered_by="user:mallory")
        )
    assert info.value.field == "allowed_triggerers" and "user:mallory" in str(info.value)
    assert _nothing_written(home)
    allowed = stage_intake(
        _env(home, policy), TrainingConfig(), WEEK, Provenance(triggered_by="user:alice")
    )
    assert allowed.doc.provenance.triggered_by == "user:alice"  # type: ignore[union-attr]


# ------------------------------------------------ through Dagster, then a scan of every byte

E2E_SPEC = DemoDataSpec(customers=600, terminals=1200, weeks=10)
E2E_WEEKS = ["2026-02-23", "2026-03-02"]
REFUSED_WEEK = "2026-03-09"
POLICY = {
    "policy_version": "2026-11-29.1",
    "allowed_triggerers": ["cli", "schedule:*", "backfill:*", "sensor:*", "user:alice"],
}


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    root = tmp_path_factory.mktemp("governed")
    generate_demo_data(str(root / "catalog"), E2E_SPEC)
    policy_path = root / "policy.json"
    policy_path.write_text(json.dumps(POLICY))
    resource = ModelFactoryResource(
        catalog_url=str(root / "catalog"),
        store_url=str(root / "store"),
        registry_url=str(root / "registry"),
        policy_path=str(policy_path),
    )
    defs = build_definitions(resource)
    home = root / "dagster"
    home.mkdir()
    shutil.copyfile(ROOT / "dagster.yaml", home / "dagster.yaml")
    instance = dg.DagsterInstance.from_config(str(home))
    summaries = run_weeks(instance, defs, E2E_WEEKS, FileRegistry(str(root / "registry")))
    store_before = sorted(p for p in (root / "store").rglob("*"))
    refused = run_week(instance, defs, REFUSED_WEEK, tags={"dagster/user": "mallory"})
    yield {
        "root": root,
        "defs": defs,
        "instance": instance,
        "home": home,
        "summaries": summaries,
        "refused": refused,
        "policy_path": policy_path,
        "store_unchanged": sorted(p for p in (root / "store").rglob("*")) == store_before,
    }
    instance.dispose()


def _bundles(root: Path) -> list[ModelBundle]:
    return [load_bundle(str(p)) for p in sorted((root / "store" / "bundles").glob("*/bundle.json"))]


@pytest.mark.slow
@pytest.mark.xdist_group("governance_privacy")
def test_every_bundle_pins_the_policy_and_records_who_triggered(world):
    bundles = _bundles(world["root"])
    assert [s.status for s in world["summaries"]] == ["succeeded", "succeeded"]
    assert len(bundles) == len(E2E_WEEKS)
    expected = policy_digest(load_policy(str(world["policy_path"])))
    for b in bundles:
        assert b.policy_digest == expected
        assert b.training_run_record.provenance is not None
        assert b.training_run_record.provenance.triggered_by == "cli"


@pytest.mark.slow
@pytest.mark.xdist_group("governance_privacy")
def test_a_trigger_the_policy_does_not_allow_fails_and_is_recorded(world):
    assert world["refused"].status == "failed"
    assert "allowed_triggerers" in (world["refused"].error or "")
    assert world["store_unchanged"]
    records = read_ledger(world["instance"], week=REFUSED_WEEK)
    [record] = records
    assert record.status == "failed" and record.train_run_id is None
    assert [a.triggered_by for a in record.attempts] == ["user:mallory"]
    assert "allowed_triggerers" in (record.error or "")
    trained = read_ledger(world["instance"], week=E2E_WEEKS[0])
    assert all(a.triggered_by == "cli" for r in trained for a in r.attempts)


@pytest.mark.slow
@pytest.mark.xdist_group("governance_privacy")
def test_reproduce_under_another_policy_is_different_and_rebuilds_nothing(world):
    uri = str(sorted((world["root"] / "store" / "bundles").glob("*/bundle.json"))[0])
    other = GovernancePolicy.model_validate({**POLICY, "pii_columns": ["card_number", "iban"]})
    env = FactoryEnv(
        Catalog(str(world["root"] / "catalog")),
        ArtifactStore(str(world["root"] / "store")),
        FileRegistry(str(world["root"] / "registry")),
        other,
    )
    before = sorted((world["root"] / "store").rglob("*"))

    report = reproduce_bundle(uri, env)

    assert report.verdict == "DIFFERENT"
    [check] = report.comparisons
    assert (check.name, check.status) == ("policy_digest", "mismatch")
    assert check.expected == load_bundle(uri).policy_digest and check.actual == policy_digest(other)
    assert sorted((world["root"] / "store").rglob("*")) == before


# What a leaked value would look like in any byte stream (JSON, HTML, SVG, UBJ, SQLite pages).
CARD = re.compile(rb"(?<!\d)\d{16}(?!\d)")
EMAIL = re.compile(rb"[A-Za-z0-9._+-]+@[A-Za-z0-9.-]+\.example")
EVENT_ID = re.compile(rb"tx-\d{9}")


def _pii_values(catalog: Path) -> tuple[set[bytes], set[bytes], set[bytes]]:
    events = pl.read_parquet(list((catalog / "datasets" / "events").rglob("*.parquet")))
    return (
        {v.encode() for v in events["card_number"].unique()},
        {v.encode() for v in events["customer_email"].unique()},
        {v.encode() for v in events["event_id"]},
    )


def scan(
    files: list[Path], cards: set[bytes], emails: set[bytes], event_ids: set[bytes] | None
) -> tuple[list[str], int]:
    """Leaks found (file: value) and bytes read. ``event_ids`` None: rows may be referenced."""
    leaks, read = [], 0
    for path in files:
        data = path.read_bytes()
        read += len(data)
        found = {m.group() for m in CARD.finditer(data)} & cards
        found |= {m.group() for m in EMAIL.finditer(data)} & emails
        if event_ids is not None:
            found |= {m.group() for m in EVENT_ID.finditer(data)} & event_ids
        leaks += [f"{path}: {v.decode()}" for v in sorted(found)]
    return leaks, read


def test_the_scan_finds_a_planted_value(tmp_path, pristine):
    # The control that makes the scan below mean something: one leaked value in any file shows.
    cards, emails, ids = _pii_values(pristine)
    card, email, event = sorted(cards)[0], sorted(emails)[0], sorted(ids)[0]
    clean = tmp_path / "clean.json"
    clean.write_bytes(b'{"rows": 3, "auc": 0.91}')
    planted = [tmp_path / f"leak{i}.bin" for i in range(3)]
    planted[0].write_bytes(b"\x00\x01ubj" + card + b"\x00")
    planted[1].write_bytes(b"<td>" + email + b"</td>")
    planted[2].write_bytes(b'{"top": ["' + event + b'"]}')
    leaks, _ = scan([clean, *planted], cards, emails, ids)
    assert len(leaks) == 3 and all(str(p) in " ".join(leaks) for p in planted)


@pytest.mark.slow
@pytest.mark.xdist_group("governance_privacy")
def test_no_bundle_report_record_or_ledger_entry_holds_pii_or_raw_rows(world, monkeypatch, capsys):
    root = world["root"]
    cards, emails, event_ids = _pii_values(root / "catalog")
    policy = load_policy(str(world["policy_path"]))

    # The ledger as the command line prints it, every record in full.
    monkeypatch.setenv("DAGSTER_HOME", str(world["home"]))
    monkeypatch.setenv("MODEL_FACTORY_HOME", str(root / "home"))
    result = CliRunner().invoke(main, ["ledger", "--json"])
    assert result.exit_code == 0, result.output
    ledger = root / "ledger.jsonl"
    ledger.write_text(result.stdout)
    assert len(result.stdout.splitlines()) == len(E2E_WEEKS) + 1  # two trained, one refused

    store = sorted(p for p in (root / "store").rglob("*") if p.is_file())
    frames = [p for p in store if p.suffix == ".parquet"]
    documents = [p for p in store if p.suffix in {".json", ".html", ".svg"}]
    models = [p for p in store if p.suffix == ".ubj"]
    registry = sorted(p for p in (root / "registry").rglob("*") if p.is_file())
    dagster = sorted(p for p in world["home"].rglob("*") if p.is_file())
    assert {
        p.name
        for p in store
        if p.parent.name != "bundles"
        and p.suffix not in {".parquet", ".json", ".html", ".svg", ".ubj"}
    } == set()
    assert len(documents) > 10 and models and frames and registry and dagster
    assert any(p.suffix == ".html" for p in documents)
    assert any(p.name.endswith(".db") for p in dagster)

    # Documents people read and pass on: no PII value and no raw event row (not even its id).
    leaks, read = scan([*documents, *registry, ledger], cards, emails, event_ids)
    # Model files and Dagster's own storage (event log, run config, compute logs): no PII value.
    more, more_read = scan([*models, *dagster], cards, emails, None)
    leaks += more
    # Frames are compressed: decode them, then no PII column and no PII value in any column.
    frame_values = 0
    for path in frames:
        frame = pl.read_parquet(path)
        assert pii_columns(policy, frame.columns) == [], path
        for column, dtype in frame.schema.items():
            if dtype == pl.String:
                values = frame[column].cast(pl.Binary)
                frame_values += frame.height
                leaks += [
                    f"{path}:{column}: {v}"
                    for v in values.filter(values.is_in(list(cards | emails))).head(3).to_list()
                ]
    checked = {
        "files": len(documents) + len(registry) + 1 + len(models) + len(dagster) + len(frames),
        "bytes": read + more_read,
        "frame_string_values": frame_values,
        "pii_values": len(cards) + len(emails),
        "event_ids": len(event_ids),
    }
    with capsys.disabled():
        print(f"\nprivacy scan: {json.dumps(checked)}; leaks: {len(leaks)}")
    assert leaks == []
