"""The hash-chained journal on its own: links, every kind of tampering, concurrent appenders."""

import multiprocessing
import shutil
from collections import Counter
from pathlib import Path

import pytest

from model_factory.contracts import GENESIS_DIGEST, JournalEntry
from model_factory.core.canonical import canonical_json, sha256_hex
from model_factory.core.journal import Journal, entry_digest, verify_chain

DIGEST = "ab" * 32


def fill(journal: Journal, n: int) -> list[JournalEntry]:
    return [
        journal.append(kind="ledger_stage", subject=f"s{i}", uri=f"/x/{i}", sha256=DIGEST)[0]
        for i in range(1, n + 1)
    ]


def kinds(journal: Journal, anchor=None) -> list[tuple[str, str]]:
    """(problem kind, file name) of every problem verify finds."""
    return [(p.kind, Path(p.source).name) for p in verify_chain(journal, anchor).problems]


@pytest.fixture
def journal(tmp_path) -> Journal:
    j = Journal(str(tmp_path / "journal"))
    fill(j, 5)
    return j


def path(journal: Journal, seq: int) -> Path:
    return Path(journal.entry_path(seq))


def test_each_entry_carries_the_digest_of_its_predecessor(journal):
    files = [path(journal, s) for s in range(1, 6)]
    assert [f.name for f in files] == [f"{s:012d}.json" for s in range(1, 6)]
    entries = journal.entries()
    assert [e.sequence for e in entries] == [1, 2, 3, 4, 5]
    assert entries[0].prev_digest == GENESIS_DIGEST
    for before, file, entry in zip(files, files[1:], entries[1:], strict=False):
        assert entry.prev_digest == sha256_hex(before.read_bytes()) != GENESIS_DIGEST
        assert file.read_bytes() == canonical_json(entry)
    check = verify_chain(journal)
    assert check.problems == []
    assert (check.head_sequence, check.head_digest) == (5, entry_digest(entries[-1]))


def test_an_empty_journal_verifies_with_the_genesis_head(tmp_path):
    check = verify_chain(Journal(str(tmp_path / "none")))
    assert (check.problems, check.head_sequence, check.head_digest) == ([], 0, GENESIS_DIGEST)


def test_unique_append_returns_the_existing_entry(journal):
    first, created = journal.append(
        kind="registry_record", subject="records/a.json", uri="/a", sha256=DIGEST, unique=True
    )
    again, created_again = Journal(journal.url).append(
        kind="registry_record", subject="records/a.json", uri="/a", sha256="cd" * 32, unique=True
    )
    assert (created, created_again) == (True, False)
    assert again == first and len(journal.sequences()) == 6


def test_an_edited_entry_is_named(journal):
    f = path(journal, 3)
    f.write_bytes(f.read_bytes().replace(b'"s3"', b'"s9"'))  # still a valid entry
    assert kinds(journal) == [("entry_edited", f.name)]


def test_an_edited_entry_that_is_rechained_breaks_the_next_link(journal):
    # Editing entry 3 and fixing entry 4's prev_digest only moves the break to entry 4 -> 5.
    f3, f4 = path(journal, 3), path(journal, 4)
    f3.write_bytes(f3.read_bytes().replace(b'"s3"', b'"s9"'))
    e4 = JournalEntry.model_validate_json(f4.read_bytes())
    f4.write_bytes(
        canonical_json(e4.model_copy(update={"prev_digest": sha256_hex(f3.read_bytes())}))
    )
    assert kinds(journal) == [("entry_edited", f4.name)]


def test_a_deleted_entry_is_named(journal):
    path(journal, 2).unlink()
    assert kinds(journal) == [("entry_missing", path(journal, 2).name)]


def test_deleting_the_first_entries_is_detected(journal):
    path(journal, 1).unlink()
    path(journal, 2).unlink()
    assert kinds(journal) == [
        ("entry_missing", path(journal, 1).name),
        ("entry_missing", path(journal, 2).name),
    ]


def test_reordered_entries_are_named(journal):
    a, b, tmp = path(journal, 2), path(journal, 4), path(journal, 99)
    a.rename(tmp)
    b.rename(a)
    tmp.rename(b)
    found = kinds(journal)
    assert ("entry_out_of_place", a.name) in found and ("entry_out_of_place", b.name) in found
    assert any(k == "entry_edited" for k, _ in found)


def test_an_inserted_entry_is_detected(journal):
    # A forged entry 3, well chained to entry 2, with the old 3..5 shifted up by one.
    for seq in (5, 4, 3):
        path(journal, seq).rename(path(journal, seq + 1))
    forged = JournalEntry(
        sequence=3,
        prev_digest=sha256_hex(path(journal, 2).read_bytes()),
        kind="ledger_stage",
        subject="forged",
        uri="/f",
        sha256=DIGEST,
        recorded_at_utc=journal.read(2).recorded_at_utc,
    )
    path(journal, 3).write_bytes(canonical_json(forged))
    found = kinds(journal)
    assert {("entry_out_of_place", path(journal, s).name) for s in (4, 5, 6)} <= set(found)
    assert ("entry_edited", path(journal, 3).name) in found  # 4 was not chained to the forgery


def test_a_corrupt_entry_and_a_stray_file_are_named(journal):
    path(journal, 3).write_bytes(b'{"truncated": ')
    (path(journal, 1).parent / "notes.txt").write_text("hello")
    found = kinds(journal)
    assert ("entry_corrupt", path(journal, 3).name) in found
    assert ("stray_file", "notes.txt") in found


def test_a_removed_or_rewritten_tail_is_caught_by_an_anchor(journal, tmp_path):
    head = verify_chain(journal)
    anchor = (head.head_sequence, head.head_digest)
    assert kinds(journal, anchor) == []
    backup = tmp_path / "backup"
    shutil.copytree(Path(journal.entry_path(1)).parent, backup)
    path(journal, 5).unlink()  # the chain alone cannot see a shorter tail ...
    assert kinds(journal) == []
    assert kinds(journal, anchor) == [
        ("anchor_mismatch", path(journal, 5).name)
    ]  # ... the anchor does
    fill(journal, 1)  # a new entry 5 in its place
    assert kinds(journal, anchor) == [("anchor_mismatch", path(journal, 5).name)]


# ---------------------------------------------------------------------------- concurrency

WRITERS, EACH = 6, 20


def _append_many(url: str, writer: int, go) -> None:
    go.wait()
    journal = Journal(url)
    for i in range(EACH):
        journal.append(
            kind="ledger_stage", subject=f"w{writer}/{i}", uri=f"/w/{writer}/{i}", sha256=DIGEST
        )


def _append_same(url: str, writer: int, go) -> None:
    go.wait()
    Journal(url).append(
        kind="registry_record", subject="records/same.json", uri="/same", sha256=DIGEST, unique=True
    )


def _race(target, url: str) -> None:
    ctx = multiprocessing.get_context("spawn")
    go = ctx.Event()
    procs = [ctx.Process(target=target, args=(url, w, go)) for w in range(WRITERS)]
    for p in procs:
        p.start()
    go.set()  # all started and importing; they append as soon as each is ready
    for p in procs:
        p.join(120)
        assert p.exitcode == 0


def test_concurrent_processes_lose_no_entry_and_never_fork_the_chain(tmp_path):
    url = str(tmp_path / "journal")
    _race(_append_many, url)
    journal = Journal(url)
    check = verify_chain(journal)
    assert check.problems == []
    entries = journal.entries()
    assert [e.sequence for e in entries] == list(range(1, WRITERS * EACH + 1))
    assert Counter(e.subject for e in entries) == Counter(
        f"w{w}/{i}" for w in range(WRITERS) for i in range(EACH)
    )  # none lost, none twice
    for w in range(WRITERS):  # each writer's own entries stay in its order
        mine = [int(e.subject.split("/")[1]) for e in entries if e.subject.startswith(f"w{w}/")]
        assert mine == sorted(mine)
    assert not [p for p in Path(url).iterdir() if p.name.startswith(".")]  # no temp file left


def test_concurrent_unique_appends_of_one_subject_leave_one_entry(tmp_path):
    url = str(tmp_path / "journal")
    fill(Journal(url), 3)
    _race(_append_same, url)
    entries = Journal(url).entries()
    assert [e.subject for e in entries].count("records/same.json") == 1
    assert verify_chain(Journal(url)).problems == []
