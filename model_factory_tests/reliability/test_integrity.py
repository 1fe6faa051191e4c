"""Integrity over time: the registry's and the run ledger's hash chains after a real multi-week
run through the CLI, and each kind of tampering (record, document, journal entry, Dagster event
log) found and named by `registry verify` / `ledger verify`.

One module-scoped history: two `model-factory run`s of two weeks at the same time (as a backfill's
concurrent runs append to one ledger), then a week without data (a failed run); PASS bundles
published. Each tampering test changes that history, checks the verdict,
then puts every byte back and checks the verdict is clean again, so the tests stay independent.
"""

from __future__ import annotations

import json
import multiprocessing
import shutil
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from itertools import pairwise
from pathlib import Path

import dagster as dg
import jsonschema
import polars as pl
import pytest
from click.testing import CliRunner, Result

from model_factory.cli import main
from model_factory.contracts import IntegrityReport, JournalEntry, PublishBundleRequest
from model_factory.core.canonical import canonical_json, sha256_hex
from model_factory.core.journal import Journal
from model_factory.core.registry import FileRegistry
from model_factory.core.runs import FactoryEnv, journal_stage
from model_factory.ledger import STAGES, verify_ledger
from model_factory_tests.reliability.conftest import CLI, Home

pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("integrity")]

ROOT = Path(__file__).resolve().parents[2]
SCHEMA = json.loads((ROOT / "contracts" / "mf_public_contracts_v0.schema.json").read_text())
WEEKS = ("2026-02-23", "2026-03-02")
NO_DATA = "2026-03-16"  # 2026-03-09 is skipped: not needed, and each week costs a training
FAMILY = "fraud_xgb"


@pytest.fixture(scope="module")
def world(reliability_catalog, tmp_path_factory) -> dict:
    home = Home(tmp_path_factory.mktemp("integrity"), reliability_catalog)

    def run(week: str) -> subprocess.Popen:
        return subprocess.Popen(
            [CLI, "run", "--from", week, "--to", week, "--json", "--config", str(home.config)],
            env=home.env(),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )

    weeks = []
    for batch in (WEEKS, (NO_DATA,)):
        procs = [run(week) for week in batch]  # the two weeks at once
        for proc in procs:
            out, err = proc.communicate(timeout=900)
            weeks += [json.loads(line) for line in out.splitlines() if line.startswith("{")]
            assert proc.returncode == (1 if batch == (NO_DATA,) else 0), err[-3000:]
    assert [w["week"] for w in weeks] == [*WEEKS, NO_DATA]
    assert all(w["gate"] == "PASS" and w["published"] for w in weeks[:-1]), weeks
    return {"home": home, "weeks": weeks[:-1]}


def cli(home: Home, *args: str) -> Result:
    """The real `model-factory` command, in this process (the run itself was a subprocess)."""
    return CliRunner().invoke(main, list(args), env=home.env(), catch_exceptions=False)


def registry(home: Home) -> FileRegistry:
    return FileRegistry(str(home.registry))


def ledger_journal(home: Home) -> Journal:
    return Journal(str(home.store / "ledger"))


def ledger_report(home: Home, dagster_home: Path | None = None) -> IntegrityReport:
    instance = dg.DagsterInstance.from_config(str(dagster_home or home.dagster))
    try:
        return verify_ledger(instance, ledger_journal(home))
    finally:
        instance.dispose()


def found(report: IntegrityReport) -> set[tuple[str, str]]:
    """(problem kind, last two path parts of its source) of every problem."""
    return {(p.kind, "/".join(Path(p.source).parts[-2:])) for p in report.problems}


@contextmanager
def restored(*folders: Path) -> Iterator[None]:
    """Put every byte of the folders back afterwards, whatever the test did to them."""
    backups = []
    for folder in folders:
        backup = folder.with_name(folder.name + ".backup")
        shutil.copytree(folder, backup)
        backups.append((folder, backup))
    try:
        yield
    finally:
        for folder, backup in backups:
            shutil.rmtree(folder)
            backup.rename(folder)


def entry_file(journal: Journal, seq: int) -> Path:
    return Path(journal.entry_path(seq))


def stage_entry(home: Home, week: str, stage: str) -> JournalEntry:
    return next(
        e for e in ledger_journal(home).entries() if (e.partition_key, e.stage) == (week, stage)
    )


def edit_json(path: Path, **changes) -> None:
    doc = json.loads(path.read_bytes())
    doc.update(changes)
    path.write_bytes(canonical_json(doc))


# ------------------------------------------------------------------------------- clean history


def test_the_run_chained_every_stage_and_every_registry_change(world):
    home = world["home"]
    ledger = ledger_journal(home).entries()
    for week in WEEKS:  # each run's stages in order (the two runs' entries may interleave)
        assert [e.stage for e in ledger if e.partition_key == week] == list(STAGES)
    assert len(ledger) == len(STAGES) * len(WEEKS)
    assert len({e.dagster_run_id for e in ledger}) == len(WEEKS)
    reg = registry(home)
    entries = reg.journal.entries()
    records = sorted(f"records/{r.bundle_id}.json" for r in reg.records())
    champions = [f"champions/{FAMILY}/{c.sequence:08d}.json" for c in reg.history(FAMILY)]
    # Two champion changes if the earlier week was published first, else one (an older week never
    # displaces a newer champion).
    assert len(records) == len(WEEKS) and 1 <= len(champions) <= len(WEEKS)
    assert sorted(e.subject for e in entries) == sorted(records + champions)
    for journal in (ledger_journal(home), reg.journal):
        raw = [entry_file(journal, s).read_bytes() for s in journal.sequences()]
        assert JournalEntry.model_validate_json(raw[0]).prev_digest == "0" * 64
        for before, after in pairwise(raw):
            assert JournalEntry.model_validate_json(after).prev_digest == sha256_hex(before)


def test_both_verifies_pass_through_the_cli_after_a_real_run(world):
    home = world["home"]
    n = len(WEEKS)
    changes = len(registry(home).history(FAMILY))
    for target, checked in (
        ("ledger", {"ledger_entries": 6 * n, "documents": 6 * n, "materializations": 6 * n}),
        ("registry", {"records": n, "champion_changes": changes}),
    ):
        text = cli(home, target, "verify")
        assert text.exit_code == 0, text.output
        assert text.stdout.strip().splitlines()[-1].endswith(": OK")
        as_json = cli(home, target, "verify", "--json")
        assert as_json.exit_code == 0
        doc = json.loads(as_json.stdout)
        jsonschema.Draft202012Validator(
            {"$ref": "#/$defs/IntegrityReport", "$defs": SCHEMA["$defs"]}
        ).validate(doc)
        report = IntegrityReport.model_validate(doc)
        assert report.ok and report.problems == [] and report.checked == checked
        anchor = f"{report.head_sequence}:{report.head_digest}"
        assert cli(home, target, "verify", "--anchor", anchor).exit_code == 0
        wrong = f"{report.head_sequence}:{'0' * 64}"
        refused = cli(home, target, "verify", "--anchor", wrong)
        assert refused.exit_code == 1 and "anchor_mismatch" in refused.stdout


def test_the_cli_exits_1_naming_an_edited_record_and_an_edited_document(world):
    home = world["home"]
    [record] = list((home.registry / "records").glob("*.json"))[:1]
    gate_doc = Path(stage_entry(home, WEEKS[0], "gate_receipt").uri)
    with restored(home.registry, home.store / "sha256"):
        edit_json(record, published_by="mallory")
        edit_json(gate_doc, reasons=["all good, trust me"])
        reg = cli(home, "registry", "verify")
        assert reg.exit_code == 1
        assert "PROBLEM  record_edited" in reg.stdout and str(record) in reg.stdout
        led = cli(home, "ledger", "verify", "--json")
        assert led.exit_code == 1
        problems = json.loads(led.stdout)["problems"]
        assert [(p["kind"], p["source"]) for p in problems] == [("document_edited", str(gate_doc))]
    assert registry(home).verify().ok and ledger_report(home).ok


# ------------------------------------------------------------------------------ the registry


def _record(home: Home, i: int = 0) -> Path:
    return sorted((home.registry / "records").glob("*.json"))[i]


def _tamper_registry(home: Home, how: str) -> set[tuple[str, str]]:
    """Do one kind of tampering; returns the problems it must produce (at least)."""
    journal = registry(home).journal
    champions = home.registry / "champions" / FAMILY
    if how == "edit_record":
        rec = _record(home)
        edit_json(rec, published_by="mallory")
        return {("record_edited", f"records/{rec.name}")}
    if how == "delete_record":
        rec = _record(home, 1)
        rec.unlink()
        return {("record_missing", f"records/{rec.name}")}
    if how == "forge_record":
        forged = home.registry / "records" / "mfb-00000000000000000000.json"
        shutil.copyfile(_record(home), forged)
        return {("record_unjournaled", f"records/{forged.name}")}
    if how == "edit_champion_change":
        edit_json(champions / "00000001.json", reason="because")
        return {("record_edited", f"{FAMILY}/00000001.json")}
    if how == "delete_champion_change":
        last = sorted(champions.glob("*.json"))[-1]
        last.unlink()
        return {("record_missing", f"{FAMILY}/{last.name}")}
    if how == "edit_entry":
        edit_json(entry_file(journal, 2), recorded_at_utc="2020-01-01T00:00:00Z")
        return {("entry_edited", f"journal/{2:012d}.json")}
    if how == "delete_entry":
        subject = journal.read(2).subject
        entry_file(journal, 2).unlink()
        return {
            ("entry_missing", f"journal/{2:012d}.json"),
            ("record_unjournaled", "/".join(subject.split("/")[-2:])),
        }
    if how == "delete_last_entry":  # invisible to the chain; the file has no entry any more
        last = journal.sequences()[-1]
        subject = journal.read(last).subject
        entry_file(journal, last).unlink()
        return {("record_unjournaled", "/".join(subject.split("/")[-2:]))}
    if how == "reorder_entries":
        a, b, tmp = entry_file(journal, 1), entry_file(journal, 3), entry_file(journal, 99)
        a.rename(tmp), b.rename(a), tmp.rename(b)
        return {
            ("entry_out_of_place", f"journal/{a.name}"),
            ("entry_out_of_place", f"journal/{b.name}"),
        }
    if how == "insert_entry":
        last = journal.sequences()[-1]
        for seq in range(last, 2, -1):
            entry_file(journal, seq).rename(entry_file(journal, seq + 1))
        forged = journal.read(2).model_copy(
            update={
                "sequence": 3,
                "prev_digest": sha256_hex(entry_file(journal, 2).read_bytes()),
                "subject": "records/mfb-00000000000000000000.json",
            }
        )
        entry_file(journal, 3).write_bytes(canonical_json(forged))
        return {
            ("entry_out_of_place", f"journal/{4:012d}.json"),
            ("record_missing", "records/mfb-00000000000000000000.json"),
        }
    raise AssertionError(how)


REGISTRY_TAMPERING = [
    "edit_record",
    "delete_record",
    "forge_record",
    "edit_champion_change",
    "delete_champion_change",
    "edit_entry",
    "delete_entry",
    "delete_last_entry",
    "reorder_entries",
    "insert_entry",
]


@pytest.mark.parametrize("how", REGISTRY_TAMPERING)
def test_registry_verify_names_each_tampering(world, how):
    home = world["home"]
    assert registry(home).verify().ok
    with restored(home.registry):
        expected = _tamper_registry(home, how)
        report = registry(home).verify()
        assert not report.ok
        assert expected <= found(report), report.problems
    assert registry(home).verify().ok


def _publish_all(args: tuple[str, list[tuple[str, str]]]) -> list[str]:
    url, bundles = args
    reg = FileRegistry(url)
    return [reg.publish(PublishBundleRequest(bundle_uri=u, bundle_id=b)).status for u, b in bundles]


def test_concurrent_publishers_leave_one_unbroken_chain(world, tmp_path):
    home = world["home"]
    bundles = [(r.bundle_uri, r.bundle_id) for r in registry(home).records()]
    url = str(tmp_path / "registry")
    orders = [bundles, bundles[::-1], bundles]
    with multiprocessing.get_context("spawn").Pool(len(orders)) as pool:
        statuses = [s for out in pool.map(_publish_all, [(url, o) for o in orders]) for s in out]
    assert sorted(statuses).count("published") == len(bundles)
    reg = FileRegistry(url)
    report = reg.verify()
    assert report.ok, report.problems
    assert report.checked["records"] == len(bundles)
    subjects = [e.subject for e in reg.journal.entries()]
    assert len(subjects) == len(set(subjects)) == len(bundles) + report.checked["champion_changes"]


def test_a_publisher_that_died_before_journaling_is_completed_by_the_next_publish(world, tmp_path):
    home = world["home"]
    [first] = registry(home).records()[:1]
    url = str(tmp_path / "registry")
    reg = FileRegistry(url)
    request = PublishBundleRequest(bundle_uri=first.bundle_uri, bundle_id=first.bundle_id)
    assert reg.publish(request).status == "published"
    for seq in reg.journal.sequences():  # as if it had died right after writing its files
        entry_file(reg.journal, seq).unlink()
    assert {k for k, _ in found(FileRegistry(url).verify())} == {"record_unjournaled"}
    assert FileRegistry(url).publish(request).status == "already_published"
    assert FileRegistry(url).verify().ok
    assert len(FileRegistry(url).journal.sequences()) == 2  # the record and the champion, once


# -------------------------------------------------------------------------------- the ledger


def _tamper_ledger(home: Home, how: str) -> set[tuple[str, str]]:
    journal = ledger_journal(home)
    entries = journal.entries()
    if how == "edit_document":
        doc = Path(stage_entry(home, WEEKS[1], "evaluation_report").uri)
        edit_json(doc, notes="edited")
        return {("document_edited", "/".join(doc.parts[-2:]))}
    if how == "delete_document":
        doc = Path(stage_entry(home, WEEKS[0], "model").uri)
        doc.unlink()
        return {("document_missing", "/".join(doc.parts[-2:]))}
    if how == "edit_entry":
        edit_json(entry_file(journal, 5), recorded_at_utc="2020-01-01T00:00:00Z")
        return {("entry_edited", f"ledger/{5:012d}.json")}
    if how == "edit_last_entry":  # the chain cannot see it; the materialization's digest does
        last = journal.sequences()[-1]
        edit_json(entry_file(journal, last), recorded_at_utc="2020-01-01T00:00:00Z")
        return {("entry_edited", f"ledger/{last:012d}.json")}
    if how == "delete_entry":
        entry_file(journal, 7).unlink()
        return {
            ("entry_missing", f"ledger/{7:012d}.json"),
            ("materialization_unjournaled", f"ledger/{7:012d}.json"),
        }
    if how == "delete_last_entry":
        last = journal.sequences()[-1]
        entry_file(journal, last).unlink()
        return {("materialization_unjournaled", f"ledger/{last:012d}.json")}
    if how == "reorder_entries":
        a, b, tmp = entry_file(journal, 2), entry_file(journal, 8), entry_file(journal, 99)
        a.rename(tmp), b.rename(a), tmp.rename(b)
        return {
            ("entry_out_of_place", f"ledger/{a.name}"),
            ("entry_out_of_place", f"ledger/{b.name}"),
        }
    if how == "forge_entry":  # a well-chained entry for a stage that never ran
        fake = entries[0].model_copy(update={"dagster_run_id": "f" * 36})
        journal.append(
            **fake.model_dump(
                exclude={"schema_version", "sequence", "prev_digest", "recorded_at_utc"}
            )
        )
        return {("entry_unmaterialized", f"ledger/{len(entries) + 1:012d}.json")}
    raise AssertionError(how)


LEDGER_TAMPERING = [
    "edit_document",
    "delete_document",
    "edit_entry",
    "edit_last_entry",
    "delete_entry",
    "delete_last_entry",
    "reorder_entries",
    "forge_entry",
]


@pytest.mark.parametrize("how", LEDGER_TAMPERING)
def test_ledger_verify_names_each_tampering(world, how):
    home = world["home"]
    with restored(home.store / "ledger", home.store / "sha256"):
        expected = _tamper_ledger(home, how)
        report = ledger_report(home)
        assert not report.ok
        if how == "reorder_entries":  # the chain also names each broken link's neighbours
            assert expected <= found(report), report.problems
            assert not {k for k, _ in found(report)} - {"entry_out_of_place", "entry_edited"}
        else:  # exactly these: a tampered entry is not also misreported as, say, a wiped one
            assert found(report) == expected, report.problems
    assert ledger_report(home).ok


def _run_of(home: Home, week: str) -> str:
    return next(e.dagster_run_id for e in ledger_journal(home).entries() if e.partition_key == week)


@pytest.mark.parametrize("how", ["delete_run", "wipe_materializations"])
def test_ledger_verify_names_records_deleted_from_the_dagster_instance(world, tmp_path, how):
    home = world["home"]
    copy = tmp_path / "dagster"
    shutil.copytree(home.dagster, copy)
    instance = dg.DagsterInstance.from_config(str(copy))
    run_id = _run_of(home, WEEKS[1])
    journal = ledger_journal(home).entries()
    if how == "delete_run":
        instance.delete_run(run_id)
    else:
        # (SQLite storage cannot wipe single partitions: every week's model goes.)
        instance.wipe_assets([dg.AssetKey("model")])
    instance.dispose()
    report = ledger_report(home, copy)
    expected_seqs = [
        e.sequence
        for e in journal
        if ((e.dagster_run_id == run_id) if how == "delete_run" else e.stage == "model")
    ]
    assert {(p.kind, Path(p.source).name) for p in report.problems} == {
        ("entry_unmaterialized", f"{s:012d}.json") for s in expected_seqs
    }
    detail = report.problems[0].detail
    assert ("not in this Dagster instance" if how == "delete_run" else "was wiped") in detail


def test_ledger_verify_names_a_wiped_materialization_of_a_run_that_failed_later(world, tmp_path):
    """A stage can materialize and a later step of its run fail: the entry's materialization
    then exists although the run failed. Wiped, it is a problem, not a note about a run that
    "ended before materializing"."""
    home = world["home"]
    copy = tmp_path / "dagster"
    shutil.copytree(home.dagster, copy)
    instance = dg.DagsterInstance.from_config(str(copy))
    run_id = _run_of(home, WEEKS[1])
    # the run's status only: its events (the model's materialization among them) stay as they were
    instance.report_run_failed(instance.get_run_by_id(run_id))
    assert instance.get_run_by_id(run_id).status == dg.DagsterRunStatus.FAILURE
    instance.wipe_assets([dg.AssetKey("model")])
    instance.dispose()
    report = ledger_report(home, copy)
    journal = ledger_journal(home).entries()
    wiped = {e.sequence for e in journal if e.stage == "model"}
    assert {(p.kind, Path(p.source).name) for p in report.problems} == {
        ("entry_unmaterialized", f"{s:012d}.json") for s in wiped
    }
    failed = next(e.sequence for e in journal if e.stage == "model" and e.dagster_run_id == run_id)
    detail = next(p.detail for p in report.problems if Path(p.source).name == f"{failed:012d}.json")
    assert "was wiped" in detail and "(FAILURE)" in detail, detail


def test_an_entry_of_a_run_still_going_is_a_note_even_when_its_event_log_shows_it(world, tmp_path):
    """A run still going may store a materialization after verify read them: its event log
    showing one is no proof it was wiped, so the entry is a note (as before it ended)."""
    home = world["home"]
    copy = tmp_path / "dagster"
    shutil.copytree(home.dagster, copy)
    instance = dg.DagsterInstance.from_config(str(copy))
    run = instance.get_run_by_id(_run_of(home, WEEKS[1]))
    instance.report_dagster_event(
        dg.DagsterEvent(
            event_type_value=dg.DagsterEventType.RUN_START.value, job_name=run.job_name
        ),
        run_id=run.run_id,
    )
    assert instance.get_run_by_id(run.run_id).status == dg.DagsterRunStatus.STARTED
    instance.wipe_assets([dg.AssetKey("model")])
    instance.dispose()
    report = ledger_report(home, copy)
    journal = ledger_journal(home).entries()
    going = next(e for e in journal if e.stage == "model" and e.dagster_run_id == run.run_id)
    # the other week's model (its run succeeded) is still reported as wiped
    assert {Path(p.source).name for p in report.problems} == {
        f"{e.sequence:012d}.json"
        for e in journal
        if e.stage == "model" and e.dagster_run_id != run.run_id
    }
    assert any(n.startswith(f"entry {going.sequence} ") and "STARTED" in n for n in report.notes)


def test_the_ledger_of_another_instance_warns_that_the_journal_has_entries(world, tmp_path):
    """Pointed at an instance that did not run the store's train runs, `ledger` says so
    instead of only printing an empty table."""
    home = world["home"]
    env = {**home.env(), "DAGSTER_HOME": str(tmp_path / "other-instance")}
    result = CliRunner().invoke(main, ["ledger"], env=env, catch_exceptions=False)
    assert result.exit_code == 0
    entries = len(ledger_journal(home).entries())
    assert f"warning: the store's ledger journal has {entries} entries" in result.stderr
    assert "warning" not in cli(home, "ledger").stderr  # the right instance: no warning


def test_an_entry_of_an_attempt_that_died_before_materializing_is_a_note(world):
    """A crash between journaling a stage and Dagster storing its materialization leaves an
    entry whose run never succeeded: reported, but not a problem."""
    home = world["home"]
    instance = dg.DagsterInstance.from_config(str(home.dagster))
    failed = instance.get_run_records(
        filters=dg.RunsFilter(
            statuses=[dg.DagsterRunStatus.FAILURE], tags={"dagster/partition": NO_DATA}
        )
    )[0]
    instance.dispose()
    first = ledger_journal(home).entries()[0]
    with restored(home.store / "ledger"):
        env = FactoryEnv.from_settings(_settings(home))
        entry = journal_stage(
            env, first.stage, first.document, first.train_run_id, NO_DATA, failed.dagster_run.run_id
        )
        report = ledger_report(home)
        assert report.ok, report.problems
        assert [n for n in report.notes if n.startswith(f"entry {entry.sequence} ")]


def _settings(home: Home):
    from model_factory.core.settings import Settings

    return Settings.from_env(home.env())


# ------------------------------------------------------------------ verifies during a live run


@contextmanager
def _tail_written_after_the_first_read(module, journal: Journal) -> Iterator[JournalEntry]:
    """The journal's last entry is appended just after the verify's first read of the chain,
    as a stage or a publish in flight appends its entry while a verify runs."""
    tail = journal.entries()[-1]
    path = entry_file(journal, tail.sequence)
    original, reads = module.verify_chain, []

    def read(journal_: Journal, anchor=None):
        reads.append(anchor)
        if len(reads) > 1:
            return original(journal_, anchor)
        written = path.read_bytes()
        path.unlink()
        try:
            return original(journal_, anchor)
        finally:
            path.write_bytes(written)

    module.verify_chain = read
    try:
        yield tail
    finally:
        module.verify_chain = original


def test_ledger_verify_while_a_stage_journals_is_no_deleted_entry(world):
    """A stage journals and then materializes: a verify reading the chain before and the
    materializations after reported the entry 'missing (deleted)' and exited 1 (found in
    review: one verify in three during a `model-factory run`)."""
    import model_factory.ledger as ledger_module

    home = world["home"]
    assert ledger_report(home).ok
    with _tail_written_after_the_first_read(ledger_module, ledger_journal(home)) as tail:
        report = ledger_report(home)
    assert report.ok, report.problems
    assert report.head_sequence == tail.sequence


def test_registry_verify_while_a_publish_journals_is_no_unjournaled_record(world):
    """A publish writes its record, then journals it: a verify between the two reported an
    unjournaled record (found in review: 24 of 27,373 verifies while publishing)."""
    import model_factory.core.registry as registry_module

    home = world["home"]
    assert registry(home).verify().ok
    with _tail_written_after_the_first_read(registry_module, registry(home).journal) as tail:
        report = registry(home).verify()
    assert report.ok, report.problems
    assert report.head_sequence == tail.sequence


def _missed_by_the_first_read(monkeypatch, sequence: int) -> list:
    """The verify's first read of the materializations misses the one naming entry
    ``sequence``, as if it were stored just after; returns the list of reads."""
    import model_factory.ledger as ledger_module

    original, reads = ledger_module.stage_materializations, []

    def read(instance, *args, **kwargs):
        reads.append(args)
        found = original(instance, *args, **kwargs)
        if len(reads) > 1:
            return found
        return [m for m in found if m.meta.get("ledger_sequence") != sequence]

    monkeypatch.setattr(ledger_module, "stage_materializations", read)
    return reads


def test_ledger_verify_while_a_run_finishes_is_no_wiped_materialization(world, monkeypatch):
    """The other order: the last stage journals and materializes, and its run succeeds, after
    the verify read the materializations. Its entry is not 'wiped' for that."""
    home = world["home"]
    reads = _missed_by_the_first_read(monkeypatch, ledger_journal(home).entries()[-1].sequence)
    report = ledger_report(home)
    assert report.ok, report.problems
    assert len(reads) == 2
    assert any(n.endswith("while this verify ran") for n in report.notes), report.notes


@pytest.mark.parametrize("event", ["RUN_START", "RUN_STARTING"])
def test_a_run_whose_process_is_gone_reads_as_failed_not_running(world, tmp_path, event):
    """A SIGKILLed `model-factory run` stays STARTED in Dagster until the next CLI run on its
    host marks it failed: `ledger` showed it 'running' for good (found in review)."""
    import os
    import socket

    from model_factory.ledger import read_ledger
    from model_factory.runner import HOST_TAG, PID_TAG

    home = world["home"]
    copy = tmp_path / "dagster"
    shutil.copytree(home.dagster, copy)
    gone = subprocess.Popen(["true"])
    gone.wait()
    instance = dg.DagsterInstance.from_config(str(copy))
    try:
        run = instance.get_run_by_id(_run_of(home, WEEKS[1]))
        instance.add_run_tags(run.run_id, {PID_TAG: str(gone.pid), HOST_TAG: socket.gethostname()})
        instance.report_dagster_event(
            dg.DagsterEvent(
                event_type_value=dg.DagsterEventType[event].value, job_name=run.job_name
            ),
            run_id=run.run_id,
        )
        [record] = read_ledger(instance, week=WEEKS[1])
        still = instance.get_run_by_id(run.run_id).status
    finally:
        instance.dispose()
    attempt = next(a for a in record.attempts if a.dagster_run_id == run.run_id)
    assert attempt.status == "failed" and f"pid {gone.pid}" in (attempt.error or "")
    assert record.status == "succeeded"  # every stage had materialized: no longer "running"
    # reading changes nothing in the instance
    assert still == dg.DagsterRunStatus[{"RUN_START": "STARTED", "RUN_STARTING": "STARTING"}[event]]
    assert os.getpid() != gone.pid


def test_the_ledger_summary_counts_attempts_before_intake_by_what_they_are(world, tmp_path):
    """An attempt not yet past intake was counted as one that 'failed before intake', next to
    a row saying 'running' (found in review)."""
    import os
    import socket

    from model_factory.runner import HOST_TAG, PID_TAG

    home = world["home"]
    assert ", 1 attempt(s) that failed before intake" in cli(home, "ledger").stderr
    copy = tmp_path / "dagster"
    shutil.copytree(home.dagster, copy)
    instance = dg.DagsterInstance.from_config(str(copy))
    try:
        [failed] = instance.get_run_records(
            filters=dg.RunsFilter(tags={"dagster/partition": NO_DATA})
        )
        run = failed.dagster_run
        # as if still running in this very process
        instance.add_run_tags(
            run.run_id, {PID_TAG: str(os.getpid()), HOST_TAG: socket.gethostname()}
        )
        instance.report_dagster_event(
            dg.DagsterEvent(
                event_type_value=dg.DagsterEventType.RUN_START.value, job_name=run.job_name
            ),
            run_id=run.run_id,
        )
    finally:
        instance.dispose()
    result = CliRunner().invoke(
        main, ["ledger"], env={**home.env(), "DAGSTER_HOME": str(copy)}, catch_exceptions=False
    )
    assert "failed before intake" not in result.stderr
    assert ", 1 attempt(s) not yet past intake" in result.stderr
    assert any(NO_DATA in line and "running" in line for line in result.stdout.splitlines())


def test_ledger_verify_while_a_run_fails_after_a_stage_is_no_wiped_materialization(
    world, tmp_path, monkeypatch
):
    """A stage materializes after the verify read the materializations, then a later step of
    its run fails: the run's event log shows the stage, and the entry was called wiped (found
    in the diff review)."""
    home = world["home"]
    copy = tmp_path / "dagster"
    shutil.copytree(home.dagster, copy)
    instance = dg.DagsterInstance.from_config(str(copy))
    run = instance.get_run_by_id(_run_of(home, WEEKS[1]))
    instance.report_run_failed(run, "a later step failed")
    instance.dispose()
    last = [e for e in ledger_journal(home).entries() if e.dagster_run_id == run.run_id][-1]
    reads = _missed_by_the_first_read(monkeypatch, last.sequence)
    report = ledger_report(home, copy)
    assert report.ok, report.problems
    assert len(reads) == 2
    assert any(n.endswith("while this verify ran") for n in report.notes), report.notes


# ------------------------------------------------------------ a bundle edited and re-digested


def _redigested(path: Path, **receipt_changes) -> str:
    """Edit the bundle at ``path`` as a forger would: change its receipt, recompute its id (so
    it verifies against itself). Returns the new id."""
    from model_factory.core.bundles import bundle_id_of

    doc = json.loads(path.read_bytes())
    doc["gate_receipt"].update(receipt_changes)
    doc["bundle_id"] = bundle_id_of(doc)
    path.write_bytes(canonical_json(doc))
    return doc["bundle_id"]


def test_bundle_verify_catches_an_edit_the_bundle_digest_was_recomputed_for(world):
    """Found in review: `bundle verify ID` followed the registry record to an edited bundle and
    said VALID under the edit's own id, and a path verified against itself alone."""
    home = world["home"]
    published = world["weeks"][0]
    path = home.store / "bundles" / published["train_run_id"] / "bundle.json"
    assert cli(home, "bundle", "verify", published["bundle_id"]).exit_code == 0
    with restored(home.store):
        forged = _redigested(path, reasons=["edited"])
        by_id = CliRunner().invoke(
            main, ["bundle", "verify", published["bundle_id"]], env=home.env()
        )
        assert by_id.exit_code == 2
        assert f"file {path}, field 'bundle_id'" in by_id.stderr
        assert f"now {forged}" in by_id.stderr
        by_path = cli(home, "bundle", "verify", str(path))
        assert by_path.exit_code == 1
        assert "mismatch  ledger_journal" in by_path.stdout
        assert f"{forged}: INVALID" in by_path.stdout
    ok = cli(home, "bundle", "verify", str(path))
    assert ok.exit_code == 0 and "ok        ledger_journal" in ok.stdout


def test_a_champion_edited_in_its_place_is_not_scored_as_the_champion(world):
    """A week pinned as its champion the first week's bundle; a bundle now there under another
    id (an edit re-digested) is not that champion's evidence, though it verifies."""
    from model_factory.contracts import ChampionRef, TrainingFrameRecord
    from model_factory.core.bundles import load_bundle, model_ref
    from model_factory.core.runs import _champion_scores, load_document, load_frame

    home = world["home"]
    first_uri = str(home.store / "bundles" / world["weeks"][0]["train_run_id"] / "bundle.json")
    first = load_bundle(first_uri)
    champion = ChampionRef(
        bundle_id=first.bundle_id,
        bundle_uri=first_uri,
        partition_key=first.partition_key,
        model_sha256=model_ref(first).sha256,
    )
    # the second week's frame record, as its run journaled it
    frame = stage_entry(home, world["weeks"][1]["week"], "training_frame").document
    record = load_document(frame, TrainingFrameRecord)
    test = load_frame(record).filter(pl.col("split") == "test")
    scores, problem = _champion_scores(champion, test, record)
    assert scores is not None and problem is None
    with restored(home.store):
        forged = _redigested(Path(champion.bundle_uri), reasons=["edited"])
        scores, problem = _champion_scores(champion, test, record)
    assert scores is None and f"now holds {forged}, not the champion" in problem


def test_a_bundle_published_by_a_relative_path_is_recorded_by_its_absolute_one(
    world, tmp_path, monkeypatch
):
    """Found in review: the record kept the relative path, which later resolved elsewhere."""
    home = world["home"]
    first = world["weeks"][0]
    with restored(home.registry):
        shutil.rmtree(home.registry)
        monkeypatch.chdir(home.store)
        relative = f"bundles/{first['train_run_id']}/bundle.json"
        published = cli(home, "registry", "publish", relative)
        assert published.exit_code == 0, published.output
        monkeypatch.chdir(tmp_path)
        record = registry(home).get(first["bundle_id"])
        assert record.bundle_uri == str(home.store / relative)
        assert cli(home, "bundle", "verify", first["bundle_id"]).exit_code == 0


def test_registry_verify_checks_the_bundle_behind_each_record(world):
    """Found in review: with a published bundle deleted and another edited, registry verify said
    OK, and the next intake would have pinned that champion."""
    home = world["home"]
    first, second = (
        home.store / "bundles" / w["train_run_id"] / "bundle.json" for w in world["weeks"]
    )
    assert registry(home).verify().ok
    with restored(home.store):
        first.unlink()
        _redigested(second, reasons=["edited"])
        report = registry(home).verify()
    assert not report.ok
    assert {(p.kind, p.source, p.field) for p in report.problems} == {
        ("document_missing", str(first), "bundle_uri"),
        ("document_edited", str(second), "bundle_sha256"),
    }
    assert registry(home).verify().ok


def test_registry_verify_notes_a_record_its_publish_did_not_promote(world, tmp_path, monkeypatch):
    """A publish that stopped between its record and its champion change (review): the record
    is newer than the champion, and only a note says so until publishing again completes it."""
    home = world["home"]
    fresh = FileRegistry(str(tmp_path / "registry"), str(home.store))

    def publish(week: dict) -> str:
        uri = str(home.store / "bundles" / week["train_run_id"] / "bundle.json")
        request = PublishBundleRequest(
            bundle_uri=uri, bundle_id=week["bundle_id"], requested_by="t"
        )
        return fresh.publish(request).status

    first, second = world["weeks"]
    assert publish(first) == "published"

    def stopped(*args, **kwargs):
        raise RuntimeError("killed between the record and the champion change")

    with monkeypatch.context() as patched:
        patched.setattr(FileRegistry, "_maybe_promote", stopped)
        with pytest.raises(RuntimeError):
            publish(second)
    report = fresh.verify()
    assert report.ok  # a note, not a problem: intake already takes it as the champion
    [note] = report.notes
    assert second["bundle_id"] in note and "publishing it again completes it" in note
    assert publish(second) == "already_published"
    assert fresh.verify().notes == []
    assert [c.bundle_id for c in fresh.history(FAMILY)] == [first["bundle_id"], second["bundle_id"]]


def test_a_damaged_bundle_does_not_hide_another_found_by_id(world):
    """Found in review: the lookup by id parsed every bundle and stopped at the first bad one."""
    from model_factory.core.bundles import find_bundle
    from model_factory.errors import ModelFactoryError

    home = world["home"]
    # the damaged one is the one the lookup reads first
    (damaged, damaged_id), (other, other_id) = sorted(
        (home.store / "bundles" / w["train_run_id"] / "bundle.json", w["bundle_id"])
        for w in world["weeks"]
    )
    with restored(home.store):
        damaged.write_text("{not json")
        assert find_bundle(str(home.store), other_id) == str(other)
        with pytest.raises(ModelFactoryError) as missing:
            find_bundle(str(home.store), damaged_id)
        assert f"unreadable, so not searched: {damaged}" in str(missing.value)


def test_a_bundle_and_its_ledger_entry_edited_together_are_caught_by_dagsters_record(world):
    """Found in the diff review: the store's ledger entry is a file too; rewriting its sha256
    to the edited bundle's let the edit be published. The Dagster instance (outside the store)
    recorded which entry the run wrote and that entry's digest: publish and verify check it."""
    from model_factory.core.readiness import READINESS_NAME
    from model_factory.core.storage import file_sha256, open_uri

    home = world["home"]
    week = world["weeks"][0]
    path = home.store / "bundles" / week["train_run_id"] / "bundle.json"
    entry = stage_entry(home, week["week"], "model_bundle")
    with restored(home.store, home.registry):
        forged = _redigested(path, reasons=["edited"])
        # the readiness document names the old id; a forger removes it (a bundle may have none)
        (path.parent / READINESS_NAME).unlink()
        fs, local = open_uri(str(path))
        edit_json(
            entry_file(ledger_journal(home), entry.sequence), sha256=file_sha256(fs, local)[0]
        )
        published = CliRunner().invoke(main, ["registry", "publish", str(path)], env=home.env())
        assert published.exit_code == 1, published.output
        assert f"entry {entry.sequence} is not the one the Dagster instance recorded" in (
            published.output
        )
        assert not (home.registry / "records" / f"{forged}.json").exists()
        verified = cli(home, "bundle", "verify", str(path))
        assert verified.exit_code == 1 and "missing   ledger_journal" in verified.stdout


def test_a_forged_copy_outside_the_store_is_checked_against_its_runs_ledger_entry(world, tmp_path):
    home = world["home"]
    week = world["weeks"][0]
    copy = tmp_path / "bundle.json"
    shutil.copyfile(home.store / "bundles" / week["train_run_id"] / "bundle.json", copy)
    genuine = cli(home, "bundle", "verify", str(copy))
    assert genuine.exit_code == 0 and "ok        ledger_journal" in genuine.stdout
    forged = _redigested(copy, reasons=["edited"])
    verified = cli(home, "bundle", "verify", str(copy))
    assert verified.exit_code == 1
    assert "mismatch  ledger_journal" in verified.stdout
    assert f"{forged}: INVALID" in verified.stdout


def test_reproduce_by_id_reports_an_edit_that_kept_the_id_as_different(world):
    """`bundle reproduce ID` reports the edit itself (bundle_content DIFFERENT), instead of
    stopping at the registry record's check as `bundle verify ID` does."""
    home = world["home"]
    week = world["weeks"][0]
    path = home.store / "bundles" / week["train_run_id"] / "bundle.json"
    with restored(home.store, home.dagster):
        edit_json(path, model_family="edited")  # the id kept: the content no longer gives it
        result = CliRunner().invoke(
            main, ["bundle", "reproduce", week["bundle_id"], "--json"], env=home.env()
        )
    assert result.exit_code == 1, result.output
    report = json.loads(result.stdout)
    assert report["verdict"] == "DIFFERENT"
    [content] = [c for c in report["comparisons"] if c["name"] == "bundle_content"]
    assert content["status"] != "ok"


def test_bundle_verify_of_another_stores_bundle_checks_it_against_itself_only(
    world, reliability_catalog, tmp_path
):
    """Found in review: a genuine bundle verified in another home (same train run, its own
    ledger) read as tampered, and with no store at all as INVALID."""
    week = world["weeks"][0]
    bundle = world["home"].store / "bundles" / week["train_run_id"] / "bundle.json"
    elsewhere = Home(tmp_path / "elsewhere", reliability_catalog)
    result = CliRunner().invoke(main, ["bundle", "verify", str(bundle)], env=elsewhere.env())
    assert result.exit_code == 0, result.output
    assert "ledger_journal" not in result.stdout and f"{week['bundle_id']}: VALID" in result.stdout


def test_bundle_verify_reads_the_instance_as_it_is_and_goes_on_without_it(world, tmp_path):
    """Found in review: looking the ledger entry up set the instance up (MODEL_FACTORY_INSTANCE
    =postgres without its server settings failed verify); now it is only read, and one that
    cannot be read is said and passed over (the store's ledger is searched)."""
    home = world["home"]
    week = world["weeks"][0]
    bundle = home.store / "bundles" / week["train_run_id"] / "bundle.json"
    as_postgres = CliRunner().invoke(
        main, ["bundle", "verify", str(bundle)], env=home.env(MODEL_FACTORY_INSTANCE="postgres")
    )
    assert as_postgres.exit_code == 0, as_postgres.output
    assert "ok        ledger_journal" in as_postgres.stdout
    unreachable = tmp_path / "dagster"
    unreachable.mkdir()
    (unreachable / "dagster.yaml").write_text(
        "storage:\n  postgres:\n    postgres_url: postgresql://nobody@127.0.0.1:1/none\n"
    )
    before = (unreachable / "dagster.yaml").read_bytes()
    result = CliRunner().invoke(
        main, ["bundle", "verify", str(bundle)], env=home.env(DAGSTER_HOME=str(unreachable))
    )
    assert result.exit_code == 0, result.output
    assert f"the Dagster instance at {unreachable} could not be read" in result.stderr
    assert "ok        ledger_journal" in result.stdout  # found by searching the store's ledger
    assert (unreachable / "dagster.yaml").read_bytes() == before  # left as it was
