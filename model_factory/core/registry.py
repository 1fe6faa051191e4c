"""A model registry on any fsspec URL: one immutable record per bundle_id, PASS bundles only."""

from __future__ import annotations

from datetime import UTC, datetime

from model_factory.contracts import PublishBundleRequest, PublishBundleResponse, RegistryRecord
from model_factory.core.bundles import bundle_digest, verify_bundle
from model_factory.core.canonical import canonical_json
from model_factory.core.documents import parse_document
from model_factory.core.storage import Location, join, write_exclusive
from model_factory.errors import DigestMismatchError, RegistryError


class FileRegistry:
    """``<url>/records/<bundle_id>.json``, created exclusively; publishing again returns it."""

    def __init__(self, url: str):
        self.location = Location(url)
        self.url = url

    def record_path(self, bundle_id: str) -> str:
        return join(self.location.root, "records", f"{bundle_id}.json")

    def publish(self, request: PublishBundleRequest) -> PublishBundleResponse:
        """Re-verify the bundle and its receipt, refuse FAIL or tampered ones, record it once."""
        try:
            bundle = verify_bundle(request.bundle_uri)
        except DigestMismatchError as exc:
            raise RegistryError(f"bundle failed verification: {exc}", source=request.bundle_uri,
                                field=exc.field) from exc
        if bundle.bundle_id != request.bundle_id:
            raise RegistryError(f"bundle at this URI is {bundle.bundle_id}, not {request.bundle_id}",
                                source=request.bundle_uri, field="bundle_id")
        if bundle.gate_receipt.gate_status != "PASS":
            raise RegistryError("only PASS bundles may be published; this one's gate says FAIL",
                                source=request.bundle_uri, field="gate_receipt.gate_status")
        record = RegistryRecord(
            bundle_id=bundle.bundle_id, bundle_uri=request.bundle_uri,
            bundle_sha256=bundle_digest(bundle), train_run_id=bundle.train_run_id,
            model_family=bundle.model_family, partition_key=bundle.partition_key,
            gate_status="PASS", published_by=request.requested_by,
            published_at_utc=datetime.now(UTC))
        fs, path = self.location.fs, self.record_path(bundle.bundle_id)
        if write_exclusive(fs, path, canonical_json(record)):
            return PublishBundleResponse(status="published", record_uri=self.location.uri(path),
                                         record=record)
        existing = self.get(bundle.bundle_id)
        if existing.bundle_sha256 != record.bundle_sha256:
            raise RegistryError("a different bundle is registered under this id",
                                source=self.location.uri(path), field="bundle_sha256")
        return PublishBundleResponse(status="already_published", record_uri=self.location.uri(path),
                                     record=existing)

    def get(self, bundle_id: str) -> RegistryRecord:
        path = self.record_path(bundle_id)
        return parse_document(self.location.fs.cat_file(path), RegistryRecord,
                              source=self.location.uri(path))

    def records(self) -> list[RegistryRecord]:
        fs = self.location.fs
        folder = join(self.location.root, "records")
        if not fs.exists(folder):
            return []
        recs = [parse_document(fs.cat_file(p), RegistryRecord, source=p)
                for p in sorted(fs.glob(folder + "/*.json"))]
        return sorted(recs, key=lambda r: (r.partition_key, r.bundle_id))
