"""A model registry on any fsspec URL: one immutable record per bundle_id, PASS bundles only,
and a champion pointer per model family with an append-only history.

Layout: ``records/<bundle_id>.json`` (created exclusively) and
``champions/<family>/<sequence>.json`` (one file per change, created exclusively, never edited).
"""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime

from model_factory.contracts import (
    ArtifactRef,
    ChampionChange,
    ChampionRef,
    IntegrityProblem,
    IntegrityReport,
    PromotionReadiness,
    PublishBundleRequest,
    PublishBundleResponse,
    RegistryRecord,
)
from model_factory.core.bundles import (
    entry_pin,
    model_ref,
    not_journaled,
    smoke_test,
    stored_bundle_digest,
    verify_bundle,
)
from model_factory.core.canonical import canonical_json, content_digest, sha256_hex
from model_factory.core.documents import parse_document
from model_factory.core.faults import crash_point
from model_factory.core.journal import Journal, verify_chain
from model_factory.core.readiness import READINESS_NAME, readiness_uri_for
from model_factory.core.storage import Location, join, read_bytes, require_bucket, write_exclusive
from model_factory.errors import (
    DigestMismatchError,
    MissingInputError,
    ModelFactoryError,
    RegistryError,
)

_MAX_RACE_RETRIES = 64

# a publish writes a record or champion change and journals it within this, unless killed
_PUBLISH_STEP_SECONDS = 0.5


def _sequence_of(path: str) -> int | None:
    """The sequence a champion change file is named by (``.../00000003.json``), or None."""
    stem = path.rsplit("/", 1)[-1].removesuffix(".json")
    return int(stem) if stem.isdigit() else None


_NEVER = datetime.max.replace(tzinfo=UTC)  # a record without a time sorts after every other


def readiness_ref(bundle_uri: str, bundle_id: str, model_sha256: str) -> ArtifactRef | None:
    """The readiness document next to the bundle, referenced by its content digest; None when the
    bundle has none. One that speaks for another bundle or model is an error."""
    uri = readiness_uri_for(bundle_uri)
    try:
        data = read_bytes(uri)
    except MissingInputError:
        return None
    doc = parse_document(data, PromotionReadiness, source=uri)
    for name, found, expected in (
        ("bundle_id", doc.bundle_id, bundle_id),
        ("model_sha256", doc.model_sha256, model_sha256),
    ):
        if found != expected:
            raise DigestMismatchError(
                f"the document is bound to {found}, not this bundle's {expected}",
                source=uri,
                field=name,
            )
    # The digest of the JSON as stored, the one ArtifactStore.get_document checks.
    return ArtifactRef(
        name=READINESS_NAME,
        uri=uri,
        sha256=content_digest(json.loads(data)),
        size_bytes=len(data),
        media_type="application/json",
    )


class FileRegistry:
    """The model registry: one record per published bundle, and each family's champion history.

    Given the store the factory builds in (``store_url``, as every run and command sets it), it
    publishes only that store's bundles whose bytes are those the run ledger journaled: a bundle
    is a digest of its own content, so one edited and re-digested (a FAIL receipt made to say
    PASS) is otherwise self-consistent.
    """

    def __init__(self, url: str, store_url: str | None = None):
        self.location = Location(url)
        self.url = url
        self.store_url = store_url
        # Every record and champion change is also an entry of this hash chain (`verify`).
        self.journal = Journal(self.location.uri(join(self.location.root, "journal")))

    # -- records ---------------------------------------------------------------------------

    def record_path(self, bundle_id: str) -> str:
        return join(self.location.root, "records", f"{bundle_id}.json")

    def publish(self, request: PublishBundleRequest) -> PublishBundleResponse:
        """Re-verify digests, receipt and a smoke test; record once; move the champion.

        A pure function of the bundle's content: any number of calls, from any number of
        concurrent publishers, leave exactly one record. Refusals come back with a reason.
        """

        def refused(reason: str) -> PublishBundleResponse:
            return PublishBundleResponse(
                status="refused", bundle_id=request.bundle_id, reason=reason
            )

        try:
            bundle = verify_bundle(request.bundle_uri)
            smoke_test(bundle)
        except ModelFactoryError as exc:
            return refused(f"bundle failed verification: {exc}")
        if bundle.bundle_id != request.bundle_id:
            return refused(
                f"the bundle at {request.bundle_uri} is {bundle.bundle_id}, not {request.bundle_id}"
            )
        if self.store_url is not None:
            pin = entry_pin(request.ledger_sequence, request.ledger_entry_sha256)
            problem = not_journaled(self.store_url, request.bundle_uri, bundle, pin)
            if problem is not None:
                return refused(problem)
        if bundle.gate_receipt.gate_status != "PASS":
            return refused(
                "only PASS bundles may be published; this one's gate says FAIL: "
                + "; ".join(bundle.gate_receipt.reasons)
            )
        try:
            readiness = readiness_ref(
                request.bundle_uri, bundle.bundle_id, model_ref(bundle).sha256
            )
        except ModelFactoryError as exc:
            return refused(f"promotion readiness: {exc}")
        record = RegistryRecord(
            bundle_id=bundle.bundle_id,
            bundle_uri=request.bundle_uri,
            bundle_sha256=stored_bundle_digest(request.bundle_uri),
            train_run_id=bundle.train_run_id,
            model_family=bundle.model_family,
            partition_key=bundle.partition_key,
            model_sha256=model_ref(bundle).sha256,
            gate_status="PASS",
            published_by=request.requested_by,
            published_at_utc=datetime.now(UTC),
            readiness_ref=readiness,
            dagster_run_id=request.dagster_run_id,
            gate_override=(
                bundle.gate_receipt.override
                if bundle.gate_receipt.judged_status == "FAIL"
                else None
            ),
        )
        fs, path = self.location.fs, self.record_path(bundle.bundle_id)
        # Every entry is read before the record is written: a damaged journal fails the publish
        # here, naming the entry, not after a record no entry will ever know
        self.journal.find("registry_record", self._subject(path))
        status = "published"
        if not write_exclusive(fs, path, canonical_json(record)):
            existing = self.get(bundle.bundle_id)
            if existing.bundle_sha256 != record.bundle_sha256:
                return refused("a different bundle is already registered under this id")
            record, status = existing, "already_published"
        # Also on a repeat, so a publisher that died before journaling its record is completed.
        self._journal_file("registry_record", path, request.dagster_run_id)
        crash_point("publish.recorded")
        # Also on a repeat: a publisher that died between the two writes is completed here.
        changed = self._maybe_promote(record, request.dagster_run_id)
        return PublishBundleResponse(
            status=status,
            bundle_id=record.bundle_id,
            record_uri=self.location.uri(path),
            record=record,
            champion_changed=changed,
        )

    def get(self, bundle_id: str) -> RegistryRecord:
        path = self.record_path(bundle_id)
        try:
            data = self.location.fs.cat_file(path)
        except FileNotFoundError as exc:
            raise RegistryError(
                "no such bundle in the registry", source=self.location.uri(path), field="bundle_id"
            ) from exc
        return parse_document(data, RegistryRecord, source=self.location.uri(path))

    def records(self, model_family: str | None = None) -> list[RegistryRecord]:
        fs = self.location.fs
        folder = join(self.location.root, "records")
        if not fs.exists(folder):
            return []
        recs = [
            parse_document(fs.cat_file(p), RegistryRecord, source=self.location.uri(p))
            for p in sorted(fs.glob(folder + "/*.json"))
            if not p.rsplit("/", 1)[-1].startswith(".")
        ]
        if model_family is not None:
            recs = [r for r in recs if r.model_family == model_family]
        return sorted(recs, key=lambda r: (r.partition_key, r.bundle_id))

    # -- champions -------------------------------------------------------------------------

    def _champion_dir(self, family: str) -> str:
        return join(self.location.root, "champions", family)

    def history(self, model_family: str) -> list[ChampionChange]:
        """Every champion change of a family, oldest first (append-only)."""
        return [change for _, change in self._champion_files(model_family)]

    def _champion_files(self, model_family: str) -> list[tuple[str, ChampionChange]]:
        """(path, change) of every champion change file of a family, by sequence."""
        fs, folder = self.location.fs, self._champion_dir(model_family)
        if not fs.exists(folder):
            return []
        changes = [
            (p, parse_document(fs.cat_file(p), ChampionChange, source=self.location.uri(p)))
            for p in fs.glob(folder + "/*.json")
            if not p.rsplit("/", 1)[-1].startswith(".")
        ]
        return sorted(changes, key=lambda pc: pc[1].sequence)

    def champion(self, model_family: str) -> ChampionChange | None:
        changes = self.history(model_family)
        return changes[-1] if changes else None

    def champion_at(self, model_family: str, when: datetime) -> ChampionChange | None:
        """The champion that was live at ``when``."""
        live = [
            c
            for c in self.history(model_family)
            if c.changed_at_utc is not None and c.changed_at_utc <= when
        ]
        return live[-1] if live else None

    def _champion_path(self, change: ChampionChange) -> str:
        return join(self._champion_dir(change.model_family), f"{change.sequence:08d}.json")

    def _maybe_promote(self, record: RegistryRecord, dagster_run_id: str | None = None) -> bool:
        """The newest week's PASS bundle becomes champion; an older week published late does not
        displace a newer champion. Concurrent promoters race on the sequence number. Journal
        entries name ``dagster_run_id``, the run writing them."""
        for _ in range(_MAX_RACE_RETRIES):
            files = self._champion_files(record.model_family)
            changes = [change for _, change in files]
            mine = [c for c in changes if c.bundle_id == record.bundle_id]
            if mine:
                self._journal_file("champion_change", self._champion_path(mine[0]), dagster_run_id)
                return False
            current = changes[-1] if changes else None
            if current is not None and current.partition_key >= record.partition_key:
                return False
            # After the highest sequence taken, by name or content, not after the count: with a
            # change file gone (a gap `verify` reports) the count would name a taken file forever.
            taken = [c.sequence for c in changes] + [
                n for p, _ in files if (n := _sequence_of(p)) is not None
            ]
            change = ChampionChange(
                model_family=record.model_family,
                sequence=max(taken, default=0) + 1,
                bundle_id=record.bundle_id,
                partition_key=record.partition_key,
                previous_bundle_id=current.bundle_id if current else None,
                reason=(
                    "first PASS bundle of the family"
                    if current is None
                    else f"PASS bundle for week {record.partition_key} is newer than the champion's "
                    f"week {current.partition_key}"
                ),
                changed_at_utc=datetime.now(UTC),
            )
            path = self._champion_path(change)
            if write_exclusive(self.location.fs, path, canonical_json(change)):
                self._journal_file("champion_change", path, dagster_run_id)
                return True
        raise RegistryError(
            "could not record the champion change: too many concurrent writers",
            source=self.url,
            field="champions",
        )

    def champion_before(self, model_family: str, partition_key: str) -> ChampionRef | None:
        """The champion a candidate for ``partition_key`` is compared with: the family's newest
        published bundle from an earlier week, among those published when this is called (in a
        backfill, an earlier week may not be published yet: intake pins what it found, so the
        train run id says which champion it was judged against). Of several bundles of that
        week (two configs),
        the one the champion history promoted, else the first published, as ``_maybe_promote``
        keeps it: never a bundle that was not live while another of its week was."""
        earlier = [r for r in self.records(model_family) if r.partition_key < partition_key]
        if not earlier:
            return None
        week = max(r.partition_key for r in earlier)
        promoted = {c.bundle_id for c in self.history(model_family)}
        best = min(
            (r for r in earlier if r.partition_key == week),
            key=lambda r: (r.bundle_id not in promoted, r.published_at_utc or _NEVER, r.bundle_id),
        )
        return ChampionRef(
            bundle_id=best.bundle_id,
            bundle_uri=best.bundle_uri,
            partition_key=best.partition_key,
            model_sha256=best.model_sha256,
        )

    # -- integrity -------------------------------------------------------------------------

    def _subject(self, path: str) -> str:
        return path[len(self.location.root.rstrip("/")) + 1 :]

    def _journal_file(self, kind: str, path: str, dagster_run_id: str | None = None) -> None:
        """Chain a registry file's digest into the journal, once per file (a repeat after a
        crash between writing the file and its entry adds the missing entry, never a second),
        naming the Dagster run writing the entry."""
        data = self.location.fs.cat_file(path)
        self.journal.append(
            kind=kind,
            subject=self._subject(path),
            uri=self.location.uri(path),
            sha256=sha256_hex(data),
            unique=True,
            dagster_run_id=dagster_run_id,
        )

    def _registry_files(self) -> dict[str, tuple[str, str]]:
        """subject -> (kind, path) of every record and champion file on disk."""
        fs, root = self.location.fs, self.location.root
        out: dict[str, tuple[str, str]] = {}
        for kind, pattern in (
            ("registry_record", "records/*.json"),
            ("champion_change", "champions/*/*.json"),
        ):
            for path in fs.glob(join(root, pattern)):
                if not path.rsplit("/", 1)[-1].startswith("."):
                    out[self._subject(path)] = (kind, path)
        return out

    def _bundles_behind_records(self, files: dict[str, tuple[str, str]]) -> list[IntegrityProblem]:
        """Each record's bundle is still where it says, with the content it recorded: a record
        whose bundle was deleted or changed would still be pinned as a champion by intake."""
        problems = []
        for kind, path in sorted(files.values()):
            if kind != "registry_record":
                continue
            try:
                record = parse_document(
                    self.location.fs.cat_file(path), RegistryRecord, source=self.location.uri(path)
                )
            except (ModelFactoryError, OSError):
                continue  # an unreadable record is reported against its journal entry
            record_uri = self.location.uri(path)
            try:
                digest = stored_bundle_digest(record.bundle_uri)
            except ModelFactoryError:
                digest = None
            if digest != record.bundle_sha256:
                problems.append(
                    IntegrityProblem(
                        kind="document_missing" if digest is None else "document_edited",
                        source=record.bundle_uri,
                        field="bundle_uri" if digest is None else "bundle_sha256",
                        detail=f"the bundle the record {record_uri} publishes is gone or unreadable"
                        if digest is None
                        else f"the bundle's content digest is {digest}; the record {record_uri} "
                        f"published {record.bundle_sha256}",
                    )
                )
        return problems

    def _history_gaps(
        self, files: dict[str, tuple[str, str]], already_reported: set[str]
    ) -> list[IntegrityProblem]:
        """A champion history numbers its changes 1, 2, 3...: a number below the highest with no
        file is a change deleted (reported here unless its journal entry already said so)."""
        taken: dict[str, set[int]] = {}
        for subject, (kind, _) in files.items():
            if kind != "champion_change":
                continue
            family, n = subject.split("/")[1], _sequence_of(subject)
            if n is not None:
                taken.setdefault(family, set()).add(n)
        problems = []
        for family, sequences in sorted(taken.items()):
            for n in sorted(set(range(1, max(sequences) + 1)) - sequences):
                subject = f"champions/{family}/{n:08d}.json"
                if subject not in already_reported:
                    problems.append(
                        IntegrityProblem(
                            kind="record_missing",
                            source=self.location.uri(join(self.location.root, subject)),
                            field="sequence",
                            detail=f"the champion history of {family} has no change {n} "
                            f"(it goes up to {max(sequences)}): a change file was deleted",
                        )
                    )
        return problems

    def verify(self, anchor: tuple[int, str] | None = None) -> IntegrityReport:
        """The journal's chain, then every file against its entry: an edited, deleted or
        unjournaled record or champion change, or an edited, deleted, reordered or inserted entry,
        is each a problem naming the file.

        A publish writes its file, then journals it: a file found unjournaled may be one in
        flight while this verify read. The whole check runs again at once, then once more after
        a moment, and the last verdict stands (a publisher killed between its two steps stays
        unjournaled: publishing again completes it)."""
        require_bucket(self.url)
        report = self._verify_once(anchor)
        for pause in (0.0, _PUBLISH_STEP_SECONDS):
            if not any(p.kind == "record_unjournaled" for p in report.problems):
                break
            time.sleep(pause)
            report = self._verify_once(anchor)
        return report

    def _verify_once(self, anchor: tuple[int, str] | None) -> IntegrityReport:
        chain = verify_chain(self.journal, anchor)
        problems = list(chain.problems)
        files = self._registry_files()
        seen: dict[str, int] = {}
        gone: set[str] = set()
        for e in chain.good:
            if e.kind not in ("registry_record", "champion_change"):
                continue
            path = join(self.location.root, e.subject)
            uri = self.location.uri(path)
            if e.subject in seen:
                problems.append(
                    IntegrityProblem(
                        kind="duplicate_entry",
                        source=self.journal.location.uri(self.journal.entry_path(e.sequence)),
                        field="subject",
                        detail=f"entries {seen[e.subject]} and {e.sequence} both record {e.subject}",
                    )
                )
                continue
            seen[e.subject] = e.sequence
            what = "record" if e.kind == "registry_record" else "champion change"
            if e.subject not in files:
                gone.add(e.subject)
                problems.append(
                    IntegrityProblem(
                        kind="record_missing",
                        source=uri,
                        field=e.subject,
                        detail=f"journal entry {e.sequence} records this {what}, but the file is gone "
                        "(deleted)",
                    )
                )
                continue
            actual = sha256_hex(self.location.fs.cat_file(path))
            if actual != e.sha256:
                problems.append(
                    IntegrityProblem(
                        kind="record_edited",
                        source=uri,
                        field="sha256",
                        detail=f"the {what} has sha256 {actual}; journal entry {e.sequence} recorded "
                        f"{e.sha256}: it was edited (or deleted and written again)",
                    )
                )
        journaled_files = set(seen)
        for subject, (kind, path) in sorted(files.items()):
            if subject not in journaled_files:
                what = "record" if kind == "registry_record" else "champion change"
                problems.append(
                    IntegrityProblem(
                        kind="record_unjournaled",
                        source=self.location.uri(path),
                        field=subject,
                        detail=f"a {what} no journal entry records: added by hand, its entry was "
                        "deleted, or its publisher died before journaling it (publishing the bundle "
                        "again completes it)",
                    )
                )
        problems += self._history_gaps(files, already_reported=gone)
        problems += self._bundles_behind_records(files)
        kinds = [kind for kind, _ in files.values()]
        return IntegrityReport(
            target="registry",
            journal=self.journal.url,
            entries=len(chain.entries),
            head_sequence=chain.head_sequence,
            head_digest=chain.head_digest,
            checked={
                "records": kinds.count("registry_record"),
                "champion_changes": kinds.count("champion_change"),
            },
            problems=problems,
            notes=self._unpromoted(),
            ok=not problems,
            verified_at_utc=datetime.now(UTC),
        )

    def _unpromoted(self) -> list[str]:
        """Records newer than their family's champion that no champion change promotes: their
        publish stopped between the record and the change (intake already takes such a record
        as the champion, as the completed publish will make it)."""
        try:
            records = self.records()
            notes = []
            for family in sorted({r.model_family for r in records}):
                history = self.history(family)
                promoted = {c.bundle_id for c in history}
                live = history[-1].partition_key if history else ""
                notes += [
                    f"{r.bundle_id} (week {r.partition_key}) is newer than the {family} "
                    f"champion's week ({live or 'none'}) but no champion change promotes it: its "
                    "publish did not finish; publishing it again completes it"
                    for r in records
                    if r.model_family == family
                    and r.partition_key > live
                    and r.bundle_id not in promoted
                ]
            return notes
        except ModelFactoryError:  # an unreadable file: reported as a problem above
            return []
