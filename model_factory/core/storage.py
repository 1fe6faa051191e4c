"""Write-once storage on any fsspec URL: content-addressed blobs and exclusively created records.

Nothing is ever written under a final name until it is complete: bytes go to a temporary
sibling first and are then renamed (local: an atomic hard link that fails if the name exists).
"""

from __future__ import annotations

import hashlib
import json
import os
import uuid
from dataclasses import dataclass
from functools import cached_property
from typing import Any

import fsspec
from fsspec.implementations.local import LocalFileSystem
from pydantic import BaseModel

from model_factory.contracts import ArtifactRef
from model_factory.core.canonical import canonical_json, content_digest, sha256_hex
from model_factory.core.documents import parse_document
from model_factory.errors import (
    DigestMismatchError,
    ImmutabilityError,
    MissingInputError,
    ModelFactoryError,
)

_CHUNK = 8 << 20


def file_sha256(fs: fsspec.AbstractFileSystem, path: str) -> tuple[str, int]:
    """Stream a file through sha256; returns (hex digest, size in bytes)."""
    h = hashlib.sha256()
    size = 0
    with fs.open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            h.update(chunk)
            size += len(chunk)
    return h.hexdigest(), size


def join(root: str, *parts: str) -> str:
    return "/".join([root.rstrip("/"), *(p.strip("/") for p in parts)])


@dataclass(frozen=True)
class Location:
    """A filesystem plus a root path inside it, made from one URL."""

    url: str

    @cached_property
    def fs(self) -> fsspec.AbstractFileSystem:
        return fsspec.core.url_to_fs(self.url)[0]

    @cached_property
    def root(self) -> str:
        return fsspec.core.url_to_fs(self.url)[1]

    def uri(self, path: str) -> str:
        """The full URI of a path in this location (keeps the protocol for remote stores)."""
        fs = self.fs
        if isinstance(fs, LocalFileSystem):
            return path
        return fs.unstrip_protocol(path)


def open_uri(uri: str) -> tuple[fsspec.AbstractFileSystem, str]:
    return fsspec.core.url_to_fs(uri)


def read_bytes(uri: str) -> bytes:
    fs, path = open_uri(uri)
    try:
        return fs.cat_file(path)
    except FileNotFoundError as exc:
        raise MissingInputError("file does not exist", source=uri) from exc


def read_json(uri: str) -> dict[str, Any]:
    data = read_bytes(uri)
    try:
        return json.loads(data)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ModelFactoryError(f"not valid JSON ({exc})", source=uri, field="(document)") from exc


def write_exclusive(fs: fsspec.AbstractFileSystem, path: str, data: bytes) -> bool:
    """Create ``path`` with ``data`` unless it exists; returns False when it already existed.

    Readers never see a partial file: the bytes are complete under a temporary name first.
    """
    parent = path.rsplit("/", 1)[0]
    fs.makedirs(parent, exist_ok=True)
    if fs.exists(path):
        return False
    # Hidden and with a suffix of its own, so no glob for final names ever matches it.
    tmp = f"{parent}/.tmp-{uuid.uuid4().hex}-{path.rsplit('/', 1)[-1]}.partial"
    with fs.open(tmp, "wb") as f:
        f.write(data)
    try:
        if isinstance(fs, LocalFileSystem):
            with open(tmp, "rb+") as f:
                os.fsync(f.fileno())
            try:
                os.link(tmp, path)  # atomic, and fails if another writer won the race
            except FileExistsError:
                return False
            return True
        if fs.exists(path):
            return False
        fs.mv(tmp, path)
        return True
    finally:
        if fs.exists(tmp):
            fs.rm(tmp)


class ArtifactStore:
    """Content-addressed, immutable artifacts under ``<url>/sha256/<aa>/<digest>``."""

    def __init__(self, url: str):
        self.location = Location(url)
        self.url = url

    def _blob_path(self, digest: str, suffix: str = "") -> str:
        return join(self.location.root, "sha256", digest[:2], digest + suffix)

    def put_bytes(self, name: str, data: bytes, media_type: str = "application/octet-stream",
                  suffix: str = "") -> ArtifactRef:
        digest = sha256_hex(data)
        path = self._blob_path(digest, suffix)
        write_exclusive(self.location.fs, path, data)
        return ArtifactRef(name=name, uri=self.location.uri(path), sha256=digest,
                           size_bytes=len(data), media_type=media_type)

    def put_document(self, name: str, doc: BaseModel) -> ArtifactRef:
        """Store a JSON document addressed by its content digest (volatile fields left out).

        The first attempt's bytes are kept: a re-run with other timestamps is the same document.
        """
        digest = content_digest(doc)
        data = canonical_json(doc)
        path = self._blob_path(digest, ".json")
        write_exclusive(self.location.fs, path, data)
        return ArtifactRef(name=name, uri=self.location.uri(path), sha256=digest,
                           size_bytes=len(data), media_type="application/json")

    @staticmethod
    def get_bytes(ref: ArtifactRef) -> bytes:
        data = read_bytes(ref.uri)
        if sha256_hex(data) != ref.sha256:
            raise DigestMismatchError(
                f"content sha256 {sha256_hex(data)} differs from pinned {ref.sha256}",
                source=ref.uri, field="sha256")
        return data

    @staticmethod
    def get_document(uri: str, model: type[BaseModel], expected_digest: str | None = None) -> Any:
        """Read a document, checking its digest over the JSON as stored (not as re-dumped by
        today's model, which may have gained optional fields since it was written)."""
        raw = read_json(uri)
        if expected_digest is not None and content_digest(raw) != expected_digest:
            raise DigestMismatchError(
                f"document digest {content_digest(raw)} differs from pinned {expected_digest}",
                source=uri, field="digest")
        return parse_document(raw, model, source=uri)

    def put_named_once(self, relpath: str, doc: BaseModel) -> tuple[str, bool]:
        """Create a named record once. Same content again is a no-op; other content is an error."""
        fs, path = self.location.fs, join(self.location.root, relpath)
        data = canonical_json(doc)
        created = write_exclusive(fs, path, data)
        if not created:
            existing = parse_document(fs.cat_file(path), type(doc), source=self.location.uri(path))
            if content_digest(existing) != content_digest(doc):
                raise ImmutabilityError(
                    "exists with different content: not reproducible, refusing to overwrite",
                    source=self.location.uri(path), field="content digest")
        return self.location.uri(path), created
