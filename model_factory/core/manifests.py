"""Dataset manifests: create them from parquet files, validate them, and find them in a catalog.

A catalog is a folder on any fsspec URL holding ``datasets/<kind>/<name>/<version>/<window>.json``
manifests; each lists its parquet files, by default in the sibling folder ``<window>/`` and stored
relative to the manifest's folder (or as full URIs), so a dataset folder can be copied as a whole.
"""

from __future__ import annotations

import itertools
import os
import posixpath
import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq

from model_factory.contracts import (
    ColumnSpec,
    DataFile,
    DatasetKind,
    DatasetManifest,
    DatasetManifestRef,
    TimeWindow,
)
from model_factory.core.canonical import canonical_json, sha256_hex
from model_factory.core.documents import parse_document
from model_factory.core.storage import Location, file_sha256, join, open_uri, write_exclusive
from model_factory.errors import (
    DigestMismatchError,
    ImmutabilityError,
    ManifestError,
    MissingInputError,
    PolicyViolationError,
    SchemaMismatchError,
    first_line,
)

DEFAULT_TIME_COLUMN: dict[str, str] = {
    "events": "event_time",
    "feature_group": "available_at",
    "labels": "observed_time",
}


def manifest_digest(manifest: DatasetManifest) -> str:
    """The manifest's identity: sha256 of its canonical JSON."""
    return sha256_hex(canonical_json(manifest))


def resolve_file_uri(manifest_uri: str, path: str) -> str:
    if "://" in path or path.startswith("/"):
        return path
    return join(manifest_uri.rsplit("/", 1)[0], path)


_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.\-]*):")


def url_scheme(uri: str) -> str:
    """The scheme of a URL ('file' for a plain path); a chained URL ('simplecache::s3://...')
    is named by its outer layer, so it has to be allowed by that name."""
    match = _SCHEME.match(uri)
    return match.group(1).lower() if match else "file"


def _location_key(uri: str) -> tuple[str, str]:
    """(scheme, normalised path) for comparing locations; local paths with symlinks resolved,
    so a link inside the catalog that points outside it is outside."""
    scheme = url_scheme(uri)
    if scheme == "file":
        path = uri[len("file://") :] if uri.startswith("file://") else uri
        return scheme, os.path.realpath(path)
    rest = uri.split("://", 1)[1] if "://" in uri else uri.split(":", 1)[1]
    return scheme, posixpath.normpath("/" + rest.lstrip("/"))


def is_under(uri: str, root: str) -> bool:
    """Whether ``uri`` is ``root`` or lies inside it (local paths resolved, symlinks too)."""
    (scheme, path), (root_scheme, root_path) = _location_key(uri), _location_key(root)
    return scheme == root_scheme and (
        path == root_path or path.startswith(root_path.rstrip("/") + "/")
    )


def check_file_locations(
    manifest: DatasetManifest,
    manifest_uri: str,
    *,
    root: str,
    allowed_schemes: Sequence[str],
    data_roots: Sequence[str] = (),
) -> None:
    """Every data file uses an allowed URL scheme and lies under the catalog root (or one of
    ``data_roots``): no '..', no absolute path elsewhere, no symlink pointing out."""
    for i, entry in enumerate(manifest.files):
        field = f"files[{i}].path"
        scheme = url_scheme(entry.path)
        if scheme not in allowed_schemes:
            raise PolicyViolationError(
                f"data file '{entry.path}' uses the URL scheme '{scheme}', not among the "
                f"allowed {list(allowed_schemes)}",
                source=manifest_uri,
                field=field,
            )
        if ".." in re.split(r"[/\\]", entry.path):
            raise ManifestError(
                f"data file path '{entry.path}' contains '..': paths may not "
                "climb out of their folder",
                source=manifest_uri,
                field=field,
            )
        uri = resolve_file_uri(manifest_uri, entry.path)
        if not any(is_under(uri, r) for r in [root, *data_roots]):
            raise ManifestError(
                f"data file {uri} resolves to {_location_key(uri)[1]}, outside the catalog root "
                f"{root} and the policy's data_roots {list(data_roots)}",
                source=manifest_uri,
                field=field,
            )


def _schema_difference(first: pa.Schema, other: pa.Schema) -> str:
    """The columns in which ``other`` differs from ``first``, by name and type, in one line."""
    a = {f.name: str(f.type) for f in first}
    b = {f.name: str(f.type) for f in other}
    parts = [
        f"missing {[n for n in a if n not in b]}" if any(n not in b for n in a) else "",
        f"unexpected {[n for n in b if n not in a]}" if any(n not in a for n in b) else "",
        ", ".join(f"'{n}' is {b[n]}, not {a[n]}" for n in a if n in b and a[n] != b[n]),
    ]
    said = "; ".join(p for p in parts if p)
    # same names and types: the order, nullability or metadata differ
    return said or f"the same columns, but {list(b)} in another order or with other details"


def _arrow_schema(uri: str) -> pa.Schema:
    fs, path = open_uri(uri)
    try:
        with fs.open(path, "rb") as f:
            return pq.read_schema(f)
    except FileNotFoundError as exc:
        raise MissingInputError("data file does not exist", source=uri, field="files") from exc
    except (pa.ArrowException, OSError) as exc:  # truncated or corrupt: no footer, bad thrift
        raise ManifestError(
            f"not a readable parquet file ({exc})", source=uri, field="files"
        ) from exc


def _columns(schema: pa.Schema) -> list[ColumnSpec]:
    return [ColumnSpec(name=f.name, dtype=str(f.type)) for f in schema]


def scan_files(uris: Sequence[str]) -> pl.LazyFrame:
    """The listed files and nothing else. Polars reads ``*``, ``?`` and ``[...]`` in a path as a
    pattern: a file literally named ``part-*.parquet`` would also pull in every sibling, and
    whatever a symlink among them points to, none of it pinned, digested or location-checked."""
    return pl.scan_parquet(list(uris), glob=False)


def _time_range(uris: Sequence[str], column: str) -> tuple[datetime | None, datetime | None]:
    """Min and max of the time column; a null time belongs to no window and is refused."""

    def scan(files: list[str]) -> pl.DataFrame:
        return (
            scan_files(files)
            .select(
                pl.col(column).min().alias("lo"),
                pl.col(column).max().alias("hi"),
                pl.col(column).null_count().alias("nulls"),
            )
            .collect()
        )

    try:
        frame = scan(list(uris))
    except (pl.exceptions.PolarsError, OSError):
        for uri in uris:  # which file: the one that does not read alone
            try:
                scan([uri])
            except (pl.exceptions.PolarsError, OSError) as exc:
                raise ManifestError(
                    f"data file {uri}: its {column} cannot be read ({first_line(exc)})",
                    source=uri,
                    field=column,
                ) from exc
        raise
    if frame["nulls"][0]:
        raise ManifestError(
            f"{frame['nulls'][0]} row(s) have a null {column}: every row needs a time",
            source=uris[0],
            field=column,
        )
    return frame["lo"][0], frame["hi"][0]


def _check_time_column(schema: pa.Schema, column: str, source: str) -> None:
    field = schema.field(column) if column in schema.names else None
    if field is None:
        raise SchemaMismatchError(f"column '{column}' is missing", source=source, field=column)
    if not pa.types.is_timestamp(field.type) or field.type.tz not in ("UTC", "+00:00", "Etc/UTC"):
        raise SchemaMismatchError(
            f"must be a UTC timestamp, found {field.type}", source=source, field=column
        )


def _check_time_columns(
    schema: pa.Schema, kind: DatasetKind, valid_from_column: str | None, source: str
) -> None:
    """Every time the frame builder reads is a UTC timestamp, whichever column the window is on.

    A naive column would be read as UTC wall-clock time: a snapshot or a label written hours
    later in local time could then pass for one known before the event or the cut, and the
    audit, which measures the same values, would not see it.
    """
    for column in (DEFAULT_TIME_COLUMN[kind], valid_from_column):
        if column is not None and column in schema.names:  # a missing one is intake's to refuse
            _check_time_column(schema, column, source)


def create_manifest(
    file_uris: Sequence[str],
    *,
    kind: DatasetKind,
    name: str,
    version: str,
    keys: Sequence[str],
    time_column: str | None = None,
    window: TimeWindow | None = None,
    valid_from_column: str | None = None,
    ttl_seconds: int | None = None,
    label_family: str | None = None,
    description: str = "",
    relative_to: str | None = None,
) -> DatasetManifest:
    """Build a manifest from parquet files: schema from the files, sha256 and rows per file.

    The time window is checked against the data (every row must lie inside it); without one the
    window is the whole UTC days the data spans. ``relative_to`` stores paths relative to it.
    """
    if not file_uris:
        raise ManifestError("at least one data file is needed", field="files")
    time_column = time_column or DEFAULT_TIME_COLUMN[kind]
    schema = _arrow_schema(file_uris[0])
    files: list[DataFile] = []
    for uri in file_uris:
        other = _arrow_schema(uri)
        if not other.equals(schema):
            raise SchemaMismatchError(
                f"schema differs from {file_uris[0]}: {_schema_difference(schema, other)}",
                source=uri,
                field="columns",
            )
        fs, path = open_uri(uri)
        digest, size = file_sha256(fs, path)
        with fs.open(path, "rb") as f:
            rows = pq.ParquetFile(f).metadata.num_rows
        _decode_all(uri, uri, "files")  # every page of every column, as intake will read it
        stored = uri
        if relative_to is not None and uri.startswith(relative_to.rstrip("/") + "/"):
            stored = uri[len(relative_to.rstrip("/")) + 1 :]
        files.append(DataFile(path=stored, sha256=digest, rows=rows, size_bytes=size))
    _check_time_column(schema, time_column, file_uris[0])
    _check_time_columns(schema, kind, valid_from_column, file_uris[0])
    for col in [*keys, valid_from_column]:
        if col is not None and col not in schema.names:
            raise SchemaMismatchError(f"column '{col}' is missing", source=file_uris[0], field=col)
    lo, hi = _time_range(file_uris, time_column)
    if window is None:
        if lo is None:
            raise ManifestError(
                f"the files hold no rows, so no window can be read from {time_column}: give "
                "--start and --end",
                source=file_uris[0],
                field="time_window",
            )
        start = datetime(lo.year, lo.month, lo.day, tzinfo=UTC)
        end = datetime(hi.year, hi.month, hi.day, tzinfo=UTC) + timedelta(days=1)
        window = TimeWindow(start=start, end=end)
    elif lo is not None and not (window.start <= lo and hi < window.end):
        raise ManifestError(
            f"data spans [{lo}, {hi}] which is not inside [{window.start}, {window.end})",
            source=file_uris[0],
            field="time_window",
        )
    return _build(
        dict(
            kind=kind,
            name=name,
            version=version,
            time_column=time_column,
            time_window=window,
            keys=list(keys),
            columns=_columns(schema),
            files=files,
            row_count=sum(f.rows for f in files),
            valid_from_column=valid_from_column,
            ttl_seconds=ttl_seconds,
            label_family=label_family,
            description=description,
        ),
        source=file_uris[0],
    )


def _build(fields: dict, source: str) -> DatasetManifest:
    return parse_document(fields, DatasetManifest, source=source, error=ManifestError)


def read_manifest(uri: str) -> DatasetManifest:
    fs, path = open_uri(uri)
    try:
        data = fs.cat_file(path)
    except FileNotFoundError as exc:
        raise MissingInputError("manifest does not exist", source=uri) from exc
    except OSError as exc:  # a folder, no permission
        raise ManifestError(
            f"the manifest cannot be read ({type(exc).__name__}: {exc.strerror or exc})",
            source=uri,
        ) from exc
    return parse_document(data, DatasetManifest, source=uri, error=ManifestError)


def _decode_all(uri: str, manifest_uri: str, field: str) -> None:
    """Decode every page once: a file pinned corrupt (its digest re-taken after the damage)
    is refused here, not half-way through a frame."""
    fs, path = open_uri(uri)
    try:
        with fs.open(path, "rb") as f:
            for _ in pq.ParquetFile(f).iter_batches(batch_size=1 << 16):
                pass
    except (pa.ArrowException, OSError) as exc:
        raise ManifestError(
            f"data file {uri} is not readable parquet ({first_line(exc)})",
            source=manifest_uri,
            field=field,
        ) from exc


def verify_manifest_files(
    manifest: DatasetManifest, manifest_uri: str, *, check_window: bool = True, decode: bool = False
) -> None:
    """Every file exists, has its pinned sha256, size, row count and the declared schema (and,
    with ``decode``, every page decodes)."""
    declared = [(c.name, c.dtype) for c in manifest.columns]
    uris = []
    seen: dict[str, int] = {}
    for i, entry in enumerate(manifest.files):
        uri = resolve_file_uri(manifest_uri, entry.path)
        # The same file (or the same bytes under another name) twice would count its rows twice.
        for key, field in ((uri, "path"), (entry.sha256, "sha256")):
            if key in seen:
                raise ManifestError(
                    f"files[{i}] repeats files[{seen[key]}] ({key})",
                    source=manifest_uri,
                    field=f"files[{i}].{field}",
                )
            seen[key] = i
        fs, path = open_uri(uri)
        if not fs.exists(path):
            raise MissingInputError(
                f"data file {uri} does not exist", source=manifest_uri, field=f"files[{i}].path"
            )
        try:
            digest, size = file_sha256(fs, path)
        except OSError as exc:  # a folder, no permission
            raise ManifestError(
                f"data file {uri} cannot be read ({type(exc).__name__}: {exc.strerror or exc})",
                source=manifest_uri,
                field=f"files[{i}].path",
            ) from exc
        if digest != entry.sha256:
            raise DigestMismatchError(
                f"data file {uri} has sha256 {digest}, manifest pins {entry.sha256}",
                source=manifest_uri,
                field=f"files[{i}].sha256",
            )
        if size != entry.size_bytes:
            raise ManifestError(
                f"data file {uri} has {size} bytes, manifest says {entry.size_bytes}",
                source=manifest_uri,
                field=f"files[{i}].size_bytes",
            )
        schema = _arrow_schema(uri)
        if i == 0:  # the window is checked on this column: it must be a UTC time (all files match)
            _check_time_column(schema, manifest.time_column, manifest_uri)
            _check_time_columns(schema, manifest.kind, manifest.valid_from_column, manifest_uri)
        found = [(f.name, str(f.type)) for f in schema]
        if found != declared:
            missing = sorted(set(declared) - set(found))
            extra = sorted(set(found) - set(declared))
            raise SchemaMismatchError(
                f"data file {uri} schema differs from the manifest: missing {missing}, unexpected {extra}",
                source=manifest_uri,
                field=f"files[{i}] columns",
            )
        with fs.open(path, "rb") as f:
            rows = pq.ParquetFile(f).metadata.num_rows
        if rows != entry.rows:
            raise ManifestError(
                f"data file {uri} has {rows} rows, manifest says {entry.rows}",
                source=manifest_uri,
                field=f"files[{i}].rows",
            )
        if decode:
            _decode_all(uri, manifest_uri, f"files[{i}]")
        uris.append(uri)
    if check_window and manifest.row_count:
        lo, hi = _time_range(uris, manifest.time_column)
        w = manifest.time_window
        if lo is not None and not (w.start <= lo and hi < w.end):
            raise ManifestError(
                f"{manifest.time_column} spans [{lo}, {hi}], outside the window [{w.start}, {w.end})",
                source=manifest_uri,
                field="time_window",
            )


def file_uris(manifest: DatasetManifest, manifest_uri: str) -> list[str]:
    return [resolve_file_uri(manifest_uri, f.path) for f in manifest.files]


@dataclass(frozen=True)
class CatalogEntry:
    uri: str
    manifest: DatasetManifest
    digest: str

    @property
    def ref(self) -> DatasetManifestRef:
        m = self.manifest
        return DatasetManifestRef(
            uri=self.uri,
            digest=self.digest,
            kind=m.kind,
            name=m.name,
            version=m.version,
            time_window=m.time_window,
        )


class Catalog:
    """Manifests on an fsspec URL, found by kind, name, version and time window."""

    def __init__(self, url: str):
        self.location = Location(url)
        self.url = url

    def dataset_dir(self, kind: str, name: str, version: str) -> str:
        return join(self.location.root, "datasets", kind, name, version)

    @staticmethod
    def window_stem(window: TimeWindow) -> str:
        return f"{window.start:%Y%m%dT%H%M%SZ}_{window.end:%Y%m%dT%H%M%SZ}"

    def manifest_path(self, m: DatasetManifest) -> str:
        return join(
            self.dataset_dir(m.kind, m.name, m.version), self.window_stem(m.time_window) + ".json"
        )

    def slice_dir(self, kind: str, name: str, version: str, window: TimeWindow) -> str:
        """Folder (URI) for the data files of one manifest; paths inside are stored relative."""
        folder = self.dataset_dir(kind, name, version)
        return self.location.uri(join(folder, self.window_stem(window)))

    def manifest_dir(self, kind: str, name: str, version: str) -> str:
        return self.location.uri(self.dataset_dir(kind, name, version))

    def write(self, manifest: DatasetManifest) -> CatalogEntry:
        """Add a manifest once; the same manifest again is a no-op, a different one an error."""
        fs, path = self.location.fs, self.manifest_path(manifest)
        data = canonical_json(manifest)
        for other in self.entries(manifest.kind, manifest.name, manifest.version):
            w = other.manifest.time_window
            if w != manifest.time_window and w.overlaps(manifest.time_window):
                raise ManifestError(
                    f"overlaps {other.uri}: one dataset's manifests may not share time",
                    source=self.location.uri(path),
                    field="time_window",
                )
        if not write_exclusive(fs, path, data) and fs.cat_file(path) != data:
            raise ImmutabilityError(
                "a different manifest for this window already exists: a dataset version is "
                "immutable once train runs may pin it, so give the changed data a new --version "
                "(or, if no run has used this one, remove the file and create it again)",
                source=self.location.uri(path),
                field="time_window",
            )
        return CatalogEntry(self.location.uri(path), manifest, sha256_hex(data))

    def has(self, kind: str, name: str, version: str) -> bool:
        """Whether any manifest of this dataset version is in the catalog (none is read)."""
        fs = self.location.fs
        folder = self.dataset_dir(kind, name, version)
        return fs.exists(folder) and any(
            not p.rsplit("/", 1)[-1].startswith(".") for p in fs.glob(folder + "/*.json")
        )

    def entries(self, kind: str, name: str, version: str) -> list[CatalogEntry]:
        fs = self.location.fs
        folder = self.dataset_dir(kind, name, version)
        paths = (
            sorted(
                p for p in fs.glob(folder + "/*.json") if not p.rsplit("/", 1)[-1].startswith(".")
            )
            if fs.exists(folder)
            else []
        )
        out = []
        for p in paths:
            uri = self.location.uri(p)
            m = read_manifest(uri)
            if (m.kind, m.name, m.version) != (kind, name, version):
                raise ManifestError(
                    f"is filed under {kind}/{name}/{version} but declares {m.kind}/{m.name}/{m.version}",
                    source=uri,
                    field="name",
                )
            out.append(CatalogEntry(uri, m, sha256_hex(canonical_json(m))))
        out.sort(key=lambda e: e.manifest.time_window.start)
        for a, b in itertools.pairwise(out):
            if a.manifest.time_window.overlaps(b.manifest.time_window):
                raise ManifestError(
                    f"overlaps {a.uri}: two manifests of one dataset may not cover the same time",
                    source=b.uri,
                    field="time_window",
                )
        return out

    def find(
        self,
        kind: str,
        name: str,
        version: str,
        start: datetime | None,
        end: datetime,
        *,
        require_coverage: bool = True,
    ) -> list[CatalogEntry]:
        """Manifests whose window overlaps ``[start, end)``; coverage gaps are errors."""
        all_entries = self.entries(kind, name, version)
        if not all_entries:
            raise MissingInputError(
                f"no {kind} manifests for {name}/{version} in the catalog",
                source=self.url,
                field=f"{kind}:{name}/{version}",
            )
        lo = start or min(e.manifest.time_window.start for e in all_entries)
        chosen = [
            e
            for e in all_entries
            if e.manifest.time_window.start < end and e.manifest.time_window.end > lo
        ]
        if require_coverage:
            _check_coverage(chosen, lo, end, f"{kind}:{name}/{version}", self.url, all_entries)
        return chosen


def _check_coverage(
    entries: list[CatalogEntry],
    start: datetime,
    end: datetime,
    what: str,
    source: str,
    catalog: list[CatalogEntry],
) -> None:
    need = f"need [{start:%Y-%m-%d}, {end:%Y-%m-%d})"
    field = f"{what} time_window"
    if not entries:
        held = (
            f"[{min(e.manifest.time_window.start for e in catalog):%Y-%m-%d %H:%M}, "
            f"{max(e.manifest.time_window.end for e in catalog):%Y-%m-%d %H:%M})"
        )
        raise MissingInputError(
            f"no manifest of {what} overlaps [{start:%Y-%m-%d}, {end:%Y-%m-%d}): the catalog's "
            f"manifests of it cover {held}",
            source=source,
            field=field,
        )
    if entries[0].manifest.time_window.start > start:
        raise MissingInputError(
            f"manifests cover {what} only from "
            f"{entries[0].manifest.time_window.start:%Y-%m-%d %H:%M}, {need}",
            source=source,
            field=field,
        )
    cursor = start
    for e in entries:
        w = e.manifest.time_window
        if w.start > cursor:
            break
        cursor = max(cursor, w.end)
    if cursor < end:
        raise MissingInputError(
            f"manifests cover {what} only up to {cursor:%Y-%m-%d %H:%M}, {need}",
            source=source,
            field=field,
        )
