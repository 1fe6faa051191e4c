"""An append-only, hash-chained journal on any fsspec URL (the registry's and the run ledger's).

Entry N is ``<root>/<N:012d>.json`` (canonical JSON of a ``JournalEntry``) and carries the sha256
of entry N-1's stored bytes (64 zeros for entry 1). Entries are created with ``write_exclusive``:
claiming sequence N is creating its file, which exactly one writer can do, so any number of
concurrent appenders leave one unbroken chain: a loser re-reads the tail and tries N+1. Nothing
is ever rewritten, so editing, deleting, reordering or inserting an entry shows as a broken link.

What the chain alone cannot show is a removed or rewritten *last* entry; the registry's files and
Dagster's materializations are cross-checked against the entries for that (see
``FileRegistry.verify`` and ``model_factory.ledger.verify_ledger``), and a head digest remembered
from an earlier verify (``anchor``) pins everything up to it.
"""

from __future__ import annotations

import random
import re
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from model_factory.contracts import GENESIS_DIGEST, IntegrityProblem, JournalEntry
from model_factory.core.canonical import canonical_json, sha256_hex
from model_factory.core.documents import parse_document
from model_factory.core.storage import Location, join, write_exclusive
from model_factory.errors import ModelFactoryError

_NAME = re.compile(r"^(\d{12})\.json$")
# Each lost race means another writer appended, so the journal moved on; only a pathological
# number of simultaneous writers exhausts this.
_MAX_ATTEMPTS = 10_000


def entry_digest(entry: JournalEntry) -> str:
    """sha256 of an entry's bytes as the journal stores them (canonical JSON)."""
    return sha256_hex(canonical_json(entry))


@dataclass
class StoredEntry:
    sequence: int
    path: str
    digest: str
    entry: JournalEntry | None  # None when the file does not parse as an entry


@dataclass
class ChainCheck:
    """The entries read back in order, and every way the chain is broken."""

    entries: list[StoredEntry] = field(default_factory=list)
    problems: list[IntegrityProblem] = field(default_factory=list)
    head_sequence: int = 0
    head_digest: str = GENESIS_DIGEST

    @property
    def good(self) -> list[JournalEntry]:
        return [s.entry for s in self.entries if s.entry is not None]


class Journal:
    def __init__(self, url: str):
        self.location = Location(url)
        self.url = url
        # sequence -> (kind, subject) of entries already read: entries never change, so an
        # appender that searches for a subject reads each one once.
        self._subjects: dict[int, tuple[str, str]] = {}

    def entry_path(self, sequence: int) -> str:
        return join(self.location.root, f"{sequence:012d}.json")

    def _names(self) -> list[str]:
        fs, root = self.location.fs, self.location.root
        if not fs.exists(root):
            return []
        return sorted(p.rstrip("/").rsplit("/", 1)[-1] for p in fs.ls(root, detail=False))

    def sequences(self) -> list[int]:
        return sorted(int(m.group(1)) for n in self._names() if (m := _NAME.match(n)))

    def _read(self, sequence: int) -> bytes:
        return self.location.fs.cat_file(self.entry_path(sequence))

    def read(self, sequence: int) -> JournalEntry:
        path = self.entry_path(sequence)
        return parse_document(self._read(sequence), JournalEntry, source=self.location.uri(path))

    def entries(self) -> list[JournalEntry]:
        """Every entry, in sequence order (no checks: see ``verify_chain``)."""
        return [self.read(s) for s in self.sequences()]

    def find(
        self, kind: str, subject: str, sequences: list[int] | None = None
    ) -> JournalEntry | None:
        for seq in sequences if sequences is not None else self.sequences():
            if seq not in self._subjects:
                e = self.read(seq)
                self._subjects[seq] = (e.kind, e.subject)
            if self._subjects[seq] == (kind, subject):
                return self.read(seq)
        return None

    def append(
        self,
        *,
        kind: str,
        subject: str,
        uri: str,
        sha256: str,
        unique: bool = False,
        **details: Any,
    ) -> tuple[JournalEntry, bool]:
        """Append an entry after the current tail; returns (entry, appended).

        With ``unique``, an entry of the same kind and subject already in the journal is returned
        instead (appended False): a writer completing an interrupted publish adds no duplicate,
        even racing another, because it searched every entry before the sequence it claims.
        """
        for attempt in range(_MAX_ATTEMPTS):
            seqs = self.sequences()
            if unique and (found := self.find(kind, subject, seqs)) is not None:
                return found, False
            tail = seqs[-1] if seqs else 0
            prev = sha256_hex(self._read(tail)) if tail else GENESIS_DIGEST
            entry = JournalEntry(
                sequence=tail + 1,
                prev_digest=prev,
                kind=kind,
                subject=subject,
                uri=uri,
                sha256=sha256,
                recorded_at_utc=datetime.now(UTC),
                **details,
            )
            if write_exclusive(
                self.location.fs, self.entry_path(entry.sequence), canonical_json(entry)
            ):
                return entry, True
            # Another writer took that sequence: back off a little so a crowd spreads out.
            time.sleep(random.uniform(0, 0.001 * min(attempt + 1, 20)))
        raise ModelFactoryError(
            "could not append to the journal: too many concurrent writers",
            source=self.url,
            field="sequence",
        )


def verify_chain(journal: Journal, anchor: tuple[int, str] | None = None) -> ChainCheck:
    """Read every entry and check each link; problems name the entry file at fault.

    ``anchor`` = (sequence, digest) of a head seen earlier: that entry must still be there with
    that digest (a truncated or rewritten tail is otherwise indistinguishable from a shorter one).
    """
    fs, loc = journal.location.fs, journal.location
    check = ChainCheck()

    def problem(kind: str, path: str, detail: str, field_: str | None = None) -> None:
        check.problems.append(
            IntegrityProblem(kind=kind, source=loc.uri(path), field=field_, detail=detail)
        )

    names = journal._names()
    for name in names:
        if not _NAME.match(name) and not name.startswith("."):
            problem(
                "stray_file",
                join(loc.root, name),
                "a file in the journal that is not an entry (entries are <12 digits>.json)",
            )
    present = set(journal.sequences())
    last = max(present, default=0)
    prev: StoredEntry | None = None
    for seq in range(1, last + 1):
        path = journal.entry_path(seq)
        if seq not in present:
            problem(
                "entry_missing",
                path,
                f"entry {seq} is missing: it was deleted (entries {seq + 1}..{last} follow it)",
                "sequence",
            )
            prev = None
            continue
        data = fs.cat_file(path)
        stored = StoredEntry(seq, path, sha256_hex(data), None)
        try:
            stored.entry = parse_document(data, JournalEntry, source=loc.uri(path))
        except ModelFactoryError as exc:
            problem("entry_corrupt", path, f"not a journal entry: {exc.detail}", exc.field)
        check.entries.append(stored)
        e = stored.entry
        if e is not None and e.sequence != seq:
            problem(
                "entry_out_of_place",
                path,
                f"the entry in file {seq} says it is entry {e.sequence}: entries were "
                "reordered, renamed or inserted",
                "sequence",
            )
        expected_prev = GENESIS_DIGEST if seq == 1 else (prev.digest if prev else None)
        if e is not None and expected_prev is not None and e.prev_digest != expected_prev:
            if seq == 1:
                problem(
                    "entry_edited",
                    path,
                    "the first entry's prev_digest is not the genesis "
                    "digest (64 zeros): entries before it were removed or it was replaced",
                    "prev_digest",
                )
            else:
                # The link says which of the two changed only up to this: entry seq-1's bytes are
                # not what entry seq was chained to.
                problem(
                    "entry_edited",
                    prev.path,  # type: ignore[union-attr]
                    f"entry {seq - 1} has sha256 {prev.digest}, but entry {seq} was "  # type: ignore[union-attr]
                    f"chained to {e.prev_digest}: entry {seq - 1} was edited or replaced, or "
                    f"entry {seq} was inserted after it",
                    "prev_digest",
                )
        prev = stored
    if check.entries:
        check.head_sequence, check.head_digest = (
            check.entries[-1].sequence,
            check.entries[-1].digest,
        )
    if anchor is not None:
        seq, digest = anchor
        found = next((s for s in check.entries if s.sequence == seq), None)
        if found is None or found.digest != digest:
            problem(
                "anchor_mismatch",
                journal.entry_path(seq),
                f"the anchor says entry {seq} has sha256 {digest}; "
                + ("it is gone" if found is None else f"it now has {found.digest}")
                + ": the journal was truncated or rewritten since the anchor was taken",
                "sequence",
            )
    return check


def ledger_journal(store_url: str) -> Journal:
    """The run ledger's hash chain, beside the documents it points at: ``<store>/ledger/``."""
    return Journal(join(store_url, "ledger"))
