"""Write-once storage on any fsspec URL: content-addressed blobs and exclusively created records.

Nothing is ever written under a final name until it is complete: bytes go to a temporary
sibling first and are then renamed (local: an atomic hard link that fails if the name exists).
On S3 (s3fs) a PUT is already atomic, and exclusive create is a conditional PUT
(``If-None-Match: *``); a bucket that does not honour it is refused (see ``write_exclusive``).
Any other filesystem has no exclusive create at all, so it is refused for writing unless the
operator opts in to one writer at a time (``MODEL_FACTORY_OTHER_FS_WRITES``).
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import shutil
import threading
import time
import uuid
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import cached_property
from typing import Any, BinaryIO, NoReturn

import fsspec
from fsspec.implementations.local import LocalFileSystem
from pydantic import BaseModel

from model_factory.contracts import ArtifactRef
from model_factory.core.canonical import canonical_json, content_digest, sha256_hex
from model_factory.core.documents import parse_document, require_object
from model_factory.core.faults import crash_point
from model_factory.errors import (
    ConfigError,
    DigestMismatchError,
    ImmutabilityError,
    MissingInputError,
    ModelFactoryError,
    StorageError,
)

_CHUNK = 8 << 20
_S3_PROTOCOLS = ("s3", "s3a")


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


def url_to_fs(url: str) -> tuple[fsspec.AbstractFileSystem, str]:
    """fsspec's url_to_fs, without s3fs's listings cache: a cached listing would hide records and
    champion changes that other processes wrote since (the registry lists to find them)."""
    if fsspec.core.split_protocol(url)[0] in _S3_PROTOCOLS:
        return fsspec.core.url_to_fs(url, use_listings_cache=False)
    return fsspec.core.url_to_fs(url)


@dataclass(frozen=True)
class Location:
    """A filesystem plus a root path inside it, made from one URL."""

    url: str

    @cached_property
    def fs(self) -> fsspec.AbstractFileSystem:
        return url_to_fs(self.url)[0]

    @cached_property
    def root(self) -> str:
        return url_to_fs(self.url)[1]

    def uri(self, path: str) -> str:
        """The full URI of a path in this location (keeps the protocol for remote stores)."""
        fs = self.fs
        if isinstance(fs, LocalFileSystem):
            return path
        return fs.unstrip_protocol(path)


def require_bucket(url: str) -> None:
    """An ``s3://`` location's bucket exists: a mistyped or deleted bucket lists as empty, and a
    verify of it would read as a healthy registry or ledger with nothing in it."""
    scheme, path = fsspec.core.split_protocol(url)
    if scheme not in _S3_PROTOCOLS:
        return
    bucket = path.split("/", 1)[0]
    if not url_to_fs(url)[0].exists(bucket):
        raise StorageError(
            f"the bucket '{bucket}' does not exist (mistyped, or deleted?)", source=url
        )


def absolute_uri(uri: str) -> str:
    """One spelling per location, as the stores write theirs: an absolute local path (relative
    paths, ``file://`` and ``..`` resolved), or the full URI of a remote object."""
    location = Location(uri)
    if isinstance(location.fs, LocalFileSystem):
        return os.path.normpath(location.root)
    return location.uri(location.root)


def open_uri(uri: str) -> tuple[fsspec.AbstractFileSystem, str]:
    return url_to_fs(uri)


def read_bytes(uri: str) -> bytes:
    """The bytes at ``uri``; whatever keeps them from being read is an error naming the URI."""
    try:
        fs, path = open_uri(uri)
    except (ImportError, ValueError) as exc:  # fsspec: backend not installed, or unknown protocol
        raise ConfigError(f"no installed filesystem opens this URL ({exc})", source=uri) from exc
    try:
        return fs.cat_file(path)
    except FileNotFoundError as exc:
        raise MissingInputError("file does not exist", source=uri) from exc
    except OSError as exc:
        # Not MissingInputError: callers take "missing" as "absent, carry on without it", and a
        # directory or a denied read is something there that cannot be checked.
        raise ModelFactoryError(
            f"cannot be read ({type(exc).__name__}: {exc})", source=uri
        ) from exc


def read_json(uri: str) -> dict[str, Any]:
    """The JSON object at ``uri`` (every document's top level is one)."""
    data = read_bytes(uri)
    try:
        obj = json.loads(data)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ModelFactoryError(f"not valid JSON ({exc})", source=uri, field="(document)") from exc
    return require_object(obj, source=uri)


def write_exclusive(fs: fsspec.AbstractFileSystem, path: str, data: bytes) -> bool:
    """Create ``path`` with ``data`` unless it exists; returns False when it already existed.

    Readers never see a partial file: the bytes are complete under a temporary name first.
    On S3 see ``_write_exclusive_s3``.
    """
    if _is_s3(fs):
        return _write_exclusive_s3(fs, path, data)
    if isinstance(fs, LocalFileSystem):
        return _create_local(path, lambda f: f.write(data))
    return _write_single_writer(fs, path, data)


def _temporary_name(parent: str, path: str) -> str:
    # Hidden and with a suffix of its own, so no glob for final names ever matches it.
    return f"{parent}/.tmp-{uuid.uuid4().hex}-{path.rsplit('/', 1)[-1]}.partial"


def is_partial_name(name: str) -> bool:
    """Whether a file name is one of our temporary names (``_temporary_name``, the S3 probe)."""
    return name.startswith(".tmp-") and name.endswith(".partial")


@dataclass(frozen=True)
class StalePartial:
    """A temporary file a writer left behind (killed between writing and renaming it)."""

    uri: str
    bytes: int
    modified_utc: datetime


def stale_partials(root_uri: str, older_than: timedelta) -> list[StalePartial]:
    """Every temporary file under ``root_uri`` last modified more than ``older_than`` ago.

    A writer links (or renames) and then removes its temporary file within the seconds its
    write takes, so one older than that belongs to a writer that was killed: before the link, its
    final file was never created (the write failed, and was retried or reported); after it, the
    temporary name is a second link to the final file, which removing it leaves intact. Younger
    ones may be a write in flight and are left alone."""
    location = Location(root_uri)
    try:
        fs, root = location.fs, location.root
    except (ImportError, ValueError) as exc:
        raise ConfigError(
            f"no installed filesystem opens this URL ({exc})", source=root_uri
        ) from exc
    try:
        listing = fs.find(root, withdirs=False, detail=True) if fs.exists(root) else {}
    except OSError as exc:
        raise ModelFactoryError(
            f"cannot be listed ({type(exc).__name__}: {exc})", source=root_uri
        ) from exc
    cutoff = datetime.now(UTC) - older_than
    found = []
    for path, info in sorted(listing.items()):
        if not is_partial_name(path.rsplit("/", 1)[-1]):
            continue
        modified = fs.modified(path)
        modified = modified.replace(tzinfo=UTC) if modified.tzinfo is None else modified
        if modified < cutoff:
            found.append(StalePartial(location.uri(path), int(info.get("size") or 0), modified))
    return found


def remove_partial(partial: StalePartial) -> bool:
    """Remove one stale temporary file; False if it was already gone (another sweep)."""
    fs, path = open_uri(partial.uri)
    if not is_partial_name(path.rsplit("/", 1)[-1]):  # never a final name, whatever the caller
        raise ConfigError("not a temporary file of the store", source=partial.uri)
    fs.invalidate_cache(path)
    if not fs.exists(path):  # S3 deletes a missing key without complaint: ask first
        return False
    try:
        fs.rm_file(path)
    except FileNotFoundError:
        return False
    except OSError as exc:
        raise ModelFactoryError(
            f"cannot be removed ({type(exc).__name__}: {exc})", source=partial.uri
        ) from exc
    return True


# -- other filesystems ---------------------------------------------------------------------------
# fsspec gives no atomic create-if-absent on its other backends (memory, GCS, Azure, SFTP, ...):
# exists() then rename is check-then-act, so two racing writers would both "create" the name and
# one's bytes (a journal entry, a champion change) would be silently lost. Such a store is refused
# for writing unless the operator opts in to single-writer mode, as for an S3 bucket without
# conditional writes.

OTHER_FS_WRITES_ENV = "MODEL_FACTORY_OTHER_FS_WRITES"
OTHER_FS_WRITE_MODES = ("refuse", "single-writer")


def _write_mode(env: dict[str, str] | None, name: str, modes: tuple[str, ...]) -> str:
    """One of ``modes`` (the first is the default) from the environment variable ``name``."""
    value = (os.environ if env is None else env).get(name) or modes[0]
    if value not in modes:
        raise ConfigError(f"'{value}' is not one of {', '.join(modes)}", field=name)
    return value


def other_fs_writes_mode(env: dict[str, str] | None = None) -> str:
    """``refuse`` (default) or ``single-writer`` from MODEL_FACTORY_OTHER_FS_WRITES."""
    return _write_mode(env, OTHER_FS_WRITES_ENV, OTHER_FS_WRITE_MODES)


def _write_single_writer(fs: fsspec.AbstractFileSystem, path: str, data: bytes) -> bool:
    """Check that ``path`` is absent, write a temporary name, rename: exclusive only while no
    other process writes to the store, which the operator vouches for by opting in."""
    if other_fs_writes_mode() != "single-writer":
        raise ConfigError(
            f"this filesystem ({type(fs).__name__}) has no exclusive create, so two writers "
            "could overwrite each other; refusing to write. Use a local disk or S3, or set "
            f"{OTHER_FS_WRITES_ENV}=single-writer if only one process ever writes to this store "
            "at a time",
            source=fs.unstrip_protocol(path),
            field=OTHER_FS_WRITES_ENV,
        )
    parent = path.rsplit("/", 1)[0]
    fs.makedirs(parent, exist_ok=True)
    if fs.exists(path):
        return False
    tmp = _temporary_name(parent, path)
    with fs.open(tmp, "wb") as f:
        f.write(data)
    try:
        crash_point("link", path)
        if fs.exists(path):
            return False
        fs.mv(tmp, path)
        return True
    finally:
        if fs.exists(tmp):
            fs.rm(tmp)


def _create_local(path: str, fill: Callable[[BinaryIO], object]) -> bool:
    """Exclusive create on a local disk: ``fill`` writes the bytes under a temporary name, they
    are fsynced, then linked to ``path`` (atomic, and fails if another writer won the race)."""
    parent = os.path.dirname(path)
    tmp = _temporary_name(parent, path)
    try:
        os.makedirs(parent, exist_ok=True)
        if os.path.exists(path):
            return False
        with open(tmp, "wb") as f:
            fill(f)
            f.flush()
            os.fsync(f.fileno())
        crash_point("link", path)
        try:
            os.link(tmp, path)
        except FileExistsError:
            return False
        _fsync_folder(parent)  # the new name itself survives a power loss
        return True
    except OSError as exc:
        _writing_failed(exc, path, tmp)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def _writing_failed(exc: OSError, path: str, tmp: str) -> NoReturn:
    """A failure to write ``path`` (a full disk, no permission) as an error naming it; one
    about another file (the source a copy reads) goes on as it was."""
    name = None if exc.filename is None else str(exc.filename)
    # a folder on the way to path (makedirs) is ours too
    ours = name is None or name in (path, tmp) or path.startswith(name.rstrip("/") + "/")
    if not ours:
        raise exc
    raise StorageError(f"could not be written: {exc.strerror or exc}", source=path) from exc


def _fsync_folder(folder: str) -> None:
    """Make a new name in ``folder`` durable, where the filesystem can: some network and FUSE
    filesystems cannot fsync a folder (EINVAL), and the file is complete and named already."""
    try:
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
    except OSError as exc:
        if exc.errno not in (errno.EINVAL, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EBADF):
            raise


def replace_from_file(fs: fsspec.AbstractFileSystem, path: str, local_path: str) -> None:
    """Put a local file at ``path``, replacing whatever is there (exports a user names, not
    the write-once store). Readers see the old file or the new one, never a part: on a local
    disk the copy is complete and fsynced under a temporary name before an atomic rename; an
    object store's upload becomes visible only once complete."""
    if not isinstance(fs, LocalFileSystem):
        if "/" in path.strip("/"):
            fs.makedirs(path.rstrip("/").rsplit("/", 1)[0], exist_ok=True)
        fs.put_file(local_path, path)
        return
    parent = os.path.dirname(path) or "."
    os.makedirs(parent, exist_ok=True)
    tmp = _temporary_name(parent, path)
    try:
        with open(tmp, "wb") as f:
            _copy_from(local_path)(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
        _fsync_folder(parent)
    except OSError as exc:
        _writing_failed(exc, path, tmp)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def _copy_from(source: str) -> Callable[[BinaryIO], object]:
    def fill(f: BinaryIO) -> None:
        with open(source, "rb") as src:
            shutil.copyfileobj(src, f, _CHUNK)

    return fill


# -- S3 ------------------------------------------------------------------------------------------
# Exclusive create on S3 is a conditional PUT, `If-None-Match: *`: the server stores the object
# only if the key is absent and answers 412 PreconditionFailed otherwise, atomically. A server or
# bucket that does not implement it either answers 501 NotImplemented or, worse, ignores the header
# and overwrites. Since S3 has no other compare-and-swap, no client-side scheme (exists() then PUT,
# PUT then read back) can keep two racing writers from overwriting each other, so such a bucket is
# refused, unless the operator opts in to single-writer mode (one writer per store at a time,
# e.g. a Dagster pool of 1): then a write checks that the key is absent and PUTs.

S3_CONDITIONAL_WRITES_ENV = "MODEL_FACTORY_S3_CONDITIONAL_WRITES"
S3_CONDITIONAL_WRITE_MODES = ("require", "single-writer")
_NOT_IMPLEMENTED = {"NotImplemented"}
# AWS answers 409 ConditionalRequestConflict while another conditional write to the key is in flight.
_CONFLICT = {"ConditionalRequestConflict", "OperationAborted"}
_CONFLICT_RETRIES = 8
# (filesystem token, bucket) -> whether the bucket honours If-None-Match, probed once per process.
_conditional_support: dict[tuple[str, str], bool] = {}
_probe_lock = threading.Lock()


def s3_conditional_writes_mode(env: dict[str, str] | None = None) -> str:
    """``require`` (default) or ``single-writer`` from MODEL_FACTORY_S3_CONDITIONAL_WRITES."""
    return _write_mode(env, S3_CONDITIONAL_WRITES_ENV, S3_CONDITIONAL_WRITE_MODES)


def _is_s3(fs: fsspec.AbstractFileSystem) -> bool:
    protocols = (fs.protocol,) if isinstance(fs.protocol, str) else fs.protocol
    return any(p in _S3_PROTOCOLS for p in protocols)


def _s3_error(exc: BaseException) -> tuple[str | None, int | None]:
    """The S3 error code and HTTP status behind an exception s3fs translated from botocore's."""
    for e in (exc, exc.__cause__, exc.__context__):
        response = getattr(e, "response", None)
        if isinstance(response, dict):
            return (
                response.get("Error", {}).get("Code"),
                response.get("ResponseMetadata", {}).get("HTTPStatusCode"),
            )
    return None, None


def _not_implemented(exc: BaseException) -> bool:
    code, status = _s3_error(exc)
    return code in _NOT_IMPLEMENTED or status == 501


def _conditional_put(fs: fsspec.AbstractFileSystem, path: str, data: bytes) -> bool:
    """PUT with If-None-Match: * ; False on 412 (the key exists), retried on 409 conflicts."""
    for attempt in range(_CONFLICT_RETRIES):
        try:
            fs.pipe_file(path, data, mode="create")
            return True
        except FileExistsError:  # s3fs's translation of 412 PreconditionFailed on If-None-Match
            return False
        except OSError as exc:
            if _s3_error(exc)[0] == "PreconditionFailed":  # s3fs releases that map 412 to EINVAL
                return False
            if _s3_error(exc)[0] not in _CONFLICT or attempt == _CONFLICT_RETRIES - 1:
                raise
            time.sleep(0.05 * 2**attempt)
        finally:
            fs.invalidate_cache(path)
    raise AssertionError("unreachable")


def _honours_if_none_match(fs: fsspec.AbstractFileSystem, path: str) -> bool:
    """Probe once per bucket: create a fresh key, then create it again; the second must fail.

    A 501 on the first shows a server that rejects conditional writes; a second create that
    succeeds shows one that ignores the header (and would overwrite). The probe key is hidden
    and temporary, like the local store's partial files, and is removed again.
    """
    bucket = path.split("/", 1)[0]
    key = (str(getattr(fs, "_fs_token", id(fs))), bucket)
    with _probe_lock:
        if key in _conditional_support:
            return _conditional_support[key]
        parent = path.rsplit("/", 1)[0]
        probe = f"{parent}/.tmp-probe-{uuid.uuid4().hex}.partial"
        try:
            supported = _conditional_put(fs, probe, b"1") and not _conditional_put(fs, probe, b"2")
        except OSError as exc:
            if not _not_implemented(exc):
                with contextlib.suppress(OSError):
                    fs.rm_file(probe)
                raise  # access denied, no such bucket...: not an answer about conditional writes
            supported = False
        # Cached before the clean-up: the answer stands whether or not the probe can be removed.
        _conditional_support[key] = supported
        _remove_probe(fs, probe)
        return supported


def _remove_probe(fs: fsspec.AbstractFileSystem, probe: str) -> None:
    """Best effort: a write-once bucket may allow PutObject but deny DeleteObject. The key is
    hidden and named as temporary, so it is left behind with a warning (once per bucket, as the
    probe runs once) rather than failing a write the bucket does allow."""
    try:
        fs.rm_file(probe)
    except FileNotFoundError:
        pass
    except OSError as exc:
        warnings.warn(
            f"could not remove the conditional-write probe {fs.unstrip_protocol(probe)} "
            f"({type(exc).__name__}: {exc}); it is a hidden temporary key and may be deleted by hand",
            RuntimeWarning,
            stacklevel=2,
        )


def _write_exclusive_s3(fs: fsspec.AbstractFileSystem, path: str, data: bytes) -> bool:
    """A conditional PUT; 412 means another writer created the key first (callers then compare
    the content). A PUT is atomic on S3, so no temporary key is needed for readers' sake."""
    if fs.exists(path):  # saves uploading a large blob again; the conditional PUT decides
        return False
    if not _honours_if_none_match(fs, path):
        if s3_conditional_writes_mode() != "single-writer":
            raise ConfigError(
                "this S3 bucket does not honour conditional writes (If-None-Match: *), so two "
                "writers could overwrite each other; refusing to write. Use a server that "
                "supports them (AWS S3, recent MinIO, Ceph RGW...), or set "
                f"{S3_CONDITIONAL_WRITES_ENV}=single-writer if only one process ever writes "
                "to this store at a time",
                source=fs.unstrip_protocol(path),
                field=S3_CONDITIONAL_WRITES_ENV,
            )
        fs.pipe_file(path, data)
        fs.invalidate_cache(path)
        return True
    try:
        return _conditional_put(fs, path, data)
    except OSError as exc:
        if not _not_implemented(exc):
            raise
        raise ConfigError(
            "the S3 server rejected a conditional write (If-None-Match: *) with "
            "501 NotImplemented; nothing was written",
            source=fs.unstrip_protocol(path),
            field=S3_CONDITIONAL_WRITES_ENV,
        ) from exc


class ArtifactStore:
    """Content-addressed, immutable artifacts under ``<url>/sha256/<aa>/<digest>``."""

    def __init__(self, url: str):
        self.location = Location(url)
        self.url = url

    def _blob_path(self, digest: str, suffix: str = "") -> str:
        return join(self.location.root, "sha256", digest[:2], digest + suffix)

    def blob_uri(self, digest: str, suffix: str = "") -> str:
        """Where the blob of this sha256 is (or would be) kept."""
        return self.location.uri(self._blob_path(digest, suffix))

    def put_bytes(
        self, name: str, data: bytes, media_type: str = "application/octet-stream", suffix: str = ""
    ) -> ArtifactRef:
        digest = sha256_hex(data)
        path = self._blob_path(digest, suffix)
        if not write_exclusive(self.location.fs, path, data):
            self._check_existing(path, digest, size=len(data))
        return ArtifactRef(
            name=name,
            uri=self.location.uri(path),
            sha256=digest,
            size_bytes=len(data),
            media_type=media_type,
        )

    def put_file(
        self,
        name: str,
        local_path: str,
        media_type: str = "application/octet-stream",
        suffix: str = "",
    ) -> ArtifactRef:
        """Store a local file by content; on a local store it is never read into memory whole
        (frames built in streaming mode)."""
        digest, size = file_sha256(LocalFileSystem(), local_path)
        path = self._blob_path(digest, suffix)
        fs = self.location.fs
        if isinstance(fs, LocalFileSystem):
            created = _create_local(path, _copy_from(local_path))
        else:  # remote stores create an object in one conditional PUT: write_exclusive's rules
            with open(local_path, "rb") as f:
                created = write_exclusive(fs, path, f.read())
        if not created:
            self._check_existing(path, digest, size=size)
        return ArtifactRef(
            name=name,
            uri=self.location.uri(path),
            sha256=digest,
            size_bytes=size,
            media_type=media_type,
        )

    def put_document(self, name: str, doc: BaseModel) -> ArtifactRef:
        """Store a JSON document addressed by its content digest (volatile fields left out).

        The first attempt's bytes are kept: a re-run with other timestamps is the same document.
        """
        digest = content_digest(doc)
        data = canonical_json(doc)
        path = self._blob_path(digest, ".json")
        created = write_exclusive(self.location.fs, path, data)
        if not created:
            self._check_existing(path, digest)
        # An earlier attempt's bytes (other volatile fields, so maybe another length) are kept:
        # the ref describes the blob it names.
        size = len(data) if created else self.location.fs.size(path)
        return ArtifactRef(
            name=name,
            uri=self.location.uri(path),
            sha256=digest,
            size_bytes=size,
            media_type="application/json",
        )

    def _check_existing(self, path: str, digest: str, size: int | None = None) -> None:
        """The blob already under a content address must hold that content. Write-once keeps
        it, so a corrupted one would otherwise be pinned by every re-run (and fail every reader)
        while the stage that "wrote" it reports success.

        A document (``size`` None: its digest is over its content, not its bytes) is small and
        always re-read. A blob is hashed again on a local disk; on an object store, whose objects
        carry their own checksums, its size is compared instead (hashing would download a frame
        of gigabytes on every re-run)."""
        fs = self.location.fs
        fs.invalidate_cache(path)
        uri = self.location.uri(path)
        if size is None:
            try:
                found = content_digest(read_json(uri))
            except ModelFactoryError:
                found = "(not a JSON document)"
        elif isinstance(fs, LocalFileSystem):
            found, _ = file_sha256(fs, path)
        else:
            stored = fs.size(path)
            found = digest if stored == size else f"(an object of {stored} bytes, not {size})"
        if found != digest:
            raise DigestMismatchError(
                f"the store already holds other bytes under this content address (sha256 "
                f"{found}, the name says {digest}): the file is corrupt; move it away (keep it "
                "for inspection) and run again, which writes it anew",
                source=uri,
                field="sha256",
            )

    @staticmethod
    def get_bytes(ref: ArtifactRef) -> bytes:
        data = read_bytes(ref.uri)
        if sha256_hex(data) != ref.sha256:
            raise DigestMismatchError(
                f"content sha256 {sha256_hex(data)} differs from pinned {ref.sha256}",
                source=ref.uri,
                field="sha256",
            )
        return data

    @staticmethod
    def get_document(uri: str, model: type[BaseModel], expected_digest: str | None = None) -> Any:
        """Read a document, checking its digest over the JSON as stored (not as re-dumped by
        today's model, which may have gained optional fields since it was written)."""
        raw = read_json(uri)
        if expected_digest is not None and content_digest(raw) != expected_digest:
            raise DigestMismatchError(
                f"document digest {content_digest(raw)} differs from pinned {expected_digest}",
                source=uri,
                field="digest",
            )
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
                    source=self.location.uri(path),
                    field="content digest",
                )
        return self.location.uri(path), created
