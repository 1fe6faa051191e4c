"""Dataset intake: find the manifests a train run needs, verify every file, pin them."""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass

import polars as pl

from model_factory.contracts import (
    ChampionRef,
    DatasetManifest,
    DatasetManifestRef,
    GovernancePolicy,
    IntakeReceipt,
    LeakagePolicy,
    Provenance,
    TrainingConfig,
    WeekReportRef,
)
from model_factory.core.governance import (
    check_data_window,
    check_gate_policy,
    check_leakage_checks,
    check_model_family,
    check_no_pii,
    check_triggerer,
    check_vetted_features,
    policy_digest,
)
from model_factory.core.identity import code_version, config_hash, train_run_id
from model_factory.core.manifests import (
    Catalog,
    CatalogEntry,
    check_file_locations,
    file_uris,
    manifest_digest,
    read_manifest,
    scan_files,
    verify_manifest_files,
)
from model_factory.core.windows import data_span, resolve_windows
from model_factory.errors import DigestMismatchError, MissingInputError, SchemaMismatchError

RESERVED_FEATURE_COLUMNS = ("available_at", "valid_from")
ID_COLUMNS = ("event_id", "event_time", "split", "label")  # every frame's own columns
# Columns the builder adds to the events while it works (the label cut per row; row numbers,
# join times, label times and availability all start with "__"), and the feature groups'
# "<group>__<feature>" columns. An events column of such a name would be overwritten by them,
# unseen: a label's observed time could become a feature.
WORKING_COLUMNS = ("split", "label", "label_cut")


def _id_kind(dtype: str) -> str:
    """What a join on an id column needs to agree on: text with text (string, large_string,
    string_view: one type to the join), integers of one signedness with each other (any width:
    they join by value). Not signed with unsigned: ids of 2**63 and more, stored as negative
    int64 by a system without unsigned types, would match no event, unseen."""
    if dtype in ("string", "large_string", "string_view", "utf8", "large_utf8"):
        return "text"
    if re.fullmatch(r"int(8|16|32|64)", dtype):
        return "signed integer"
    if re.fullmatch(r"uint(8|16|32|64)", dtype):
        return "unsigned integer"
    return dtype


def _values_type(dtype: str) -> str:
    """The type of a dictionary-encoded column's values (``dictionary<values=string, ...>``, a
    pandas category), else the type itself."""
    return dtype.split("values=", 1)[1].split(",", 1)[0] if "values=" in dtype else dtype


def _keys_join(a: str, b: str) -> bool:
    """Whether a group's key of type ``a`` joins the events' key of type ``b`` by value: one
    kind (``_id_kind``), or unsigned integers against strictly wider signed ones (every value
    fits, and no id can be the other's two's-complement reading)."""
    if _id_kind(a) == _id_kind(b):
        return True
    width = {d: int(m.group(2)) for d in (a, b) if (m := re.fullmatch(r"(u?)int(8|16|32|64)", d))}
    if len(width) < 2:
        return False
    unsigned, signed = (a, b) if a.startswith("u") else (b, a)
    return (
        unsigned.startswith("u") and not signed.startswith("u") and width[signed] > width[unsigned]
    )


def is_working_column(name: str, groups: list[str]) -> bool:
    return (
        name in WORKING_COLUMNS
        or name.startswith("__")
        or any(name.startswith(f"{g}__") for g in groups)
    )


# What the model trains on: numbers and booleans (cast to float32, null as missing). A string or
# categorical column would get through the frame and fail in training; these refuse it first.
_NUMERIC = re.compile(r"(u?int(8|16|32|64)|halffloat|float|double|bool)")
_XGBOOST_REFUSES = re.compile(r"[\[\]<]")  # in feature names
LABEL_VALUES = frozenset({0, 1})


@dataclass(frozen=True)
class FrameInputs:
    """The manifests of one train run, by role."""

    events: list[CatalogEntry]
    labels: list[CatalogEntry]
    feature_groups: dict[str, list[CatalogEntry]]

    def all_entries(self) -> list[CatalogEntry]:
        return [*self.events, *self.labels, *(e for g in self.feature_groups.values() for e in g)]


def find_inputs(catalog: Catalog, config: TrainingConfig, windows: LeakagePolicy) -> FrameInputs:
    """Select the manifests covering the windows; coverage gaps are errors."""
    span = data_span(windows)
    events = catalog.find("events", config.events.name, config.events.version, span.start, span.end)
    labels = catalog.find(
        "labels", config.labels.name, config.labels.version, span.start, windows.cut
    )
    # Every snapshot written before the last event: the join needs only the TTL lookback, but
    # the audit must tell a stale snapshot (dropped by the TTL) from none at all.
    groups = {
        sel.name: catalog.find(
            "feature_group", sel.name, sel.version, None, span.end, require_coverage=False
        )
        for sel in config.feature_group_versions
    }
    return FrameInputs(events=events, labels=labels, feature_groups=groups)


def _drift(first: CatalogEntry, other: CatalogEntry) -> str | None:
    """How ``other``'s columns differ from ``first``'s (renamed, retyped, missing), or None."""
    a = {c.name: c.dtype for c in first.manifest.columns}
    b = {c.name: c.dtype for c in other.manifest.columns}
    if a == b:
        return None
    retyped = [f"{n}: {a[n]} -> {b[n]}" for n in a if n in b and a[n] != b[n]]
    return (
        f"missing {sorted(set(a) - set(b))}, new {sorted(set(b) - set(a))}, "
        f"retyped {retyped} (compared with {first.uri})"
    )


def check_same_schema(entries: list[CatalogEntry], what: str) -> None:
    """One dataset keeps one schema across its weeks: a renamed, retyped or dropped column in
    any week is refused here, not discovered half-way through a frame."""
    for e in entries[1:]:
        drift = _drift(entries[0], e)
        if drift:
            raise SchemaMismatchError(
                f"{what} schema drifts between weeks: {drift}", source=e.uri, field="columns"
            )


def check_compatibility(
    config: TrainingConfig, inputs: FrameInputs, policy: GovernancePolicy
) -> None:
    """Manifests carry the columns, keys and label family the config asks for, keep one schema
    across weeks, and no PII column is selected (as a feature or as a join key)."""
    check_same_schema(inputs.events, "events")
    check_same_schema(inputs.labels, "labels")
    for e in inputs.events:
        names = e.manifest.column_names()
        for col in ("event_id", "event_time"):
            if col not in names:
                raise SchemaMismatchError(
                    f"events lack column '{col}'", source=e.uri, field="columns"
                )
        groups = [g.name for g in config.feature_group_versions]
        for field, cols in (
            ("event_features", config.event_features),
            # the event id may key a group (event-level features); the event time, the join's
            # own time, never does
            ("entity_keys", [k for k in config.entity_keys if k != "event_id"]),
        ):
            reserved = [
                c
                for c in cols
                if is_working_column(c, groups) or (field == "entity_keys" and c == "event_time")
            ]
            if reserved:
                raise SchemaMismatchError(
                    f"{reserved} are names the frame builder uses for its own columns (split, "
                    "label, label_cut, __*, <feature group>__*; event_time is the join's time, "
                    "never a key): it would overwrite such an events column; rename it",
                    source=e.uri,
                    field=field,
                )
        for field, cols in (
            ("event_features", config.event_features),
            ("entity_keys", config.entity_keys),
        ):
            missing = [c for c in cols if c not in names]
            if missing:
                raise SchemaMismatchError(
                    f"events lack columns {missing} named in the config", source=e.uri, field=field
                )
        check_no_pii(policy, config.event_features, e.uri, "event_features")
        check_no_pii(policy, config.entity_keys, e.uri, "entity_keys")
        taken = [c for c in config.event_features if c in ID_COLUMNS]
        if taken:
            raise SchemaMismatchError(
                f"event_features {taken} are the frame's own columns {list(ID_COLUMNS)}, "
                "not features",
                source=e.uri,
                field="event_features",
            )
        dtypes = {c.name: c.dtype for c in e.manifest.columns}
        for c in config.event_features:
            _check_feature(c, c, dtypes[c], e.uri, "event_features")
    event_id_kinds = {
        _id_kind(c.dtype) for e in inputs.events for c in e.manifest.columns if c.name == "event_id"
    }
    for e in inputs.labels:
        label_id = next((c.dtype for c in e.manifest.columns if c.name == "event_id"), None)
        if label_id is not None and event_id_kinds and _id_kind(label_id) not in event_id_kinds:
            raise SchemaMismatchError(
                f"event_id is {label_id} here but {' or '.join(sorted(event_id_kinds))} in the "
                "events: labels are joined to events by it",
                source=e.uri,
                field="event_id",
            )
        family = next((c.dtype for c in e.manifest.columns if c.name == "label_family"), None)
        if family is not None and _id_kind(_values_type(family)) != "text":
            raise SchemaMismatchError(
                f"the label_family column is {family}: a family is a name (text)",
                source=e.uri,
                field="label_family",
            )
        if e.manifest.label_family != config.label_family:
            raise SchemaMismatchError(
                f"label family '{e.manifest.label_family}' is not the config's '{config.label_family}'",
                source=e.uri,
                field="label_family",
            )
        for col in ("event_id", "label_value", "observed_time"):
            if col not in e.manifest.column_names():
                raise SchemaMismatchError(
                    f"labels lack column '{col}'", source=e.uri, field="columns"
                )
        dtype = next(c.dtype for c in e.manifest.columns if c.name == "label_value")
        if not dtype.startswith(("int", "uint", "bool")):
            raise SchemaMismatchError(
                f"label_value must be an integer column, found {dtype}",
                source=e.uri,
                field="label_value",
            )
    for name, entries in inputs.feature_groups.items():
        first = entries[0]
        if "available_at" not in first.manifest.column_names():
            raise SchemaMismatchError(
                f"feature group '{name}' lacks column 'available_at', the time from which a "
                "snapshot may be joined",
                source=first.uri,
                field="columns",
            )
        for e in entries:
            if (
                e.manifest.columns != first.manifest.columns
                or e.manifest.keys != first.manifest.keys
            ):
                raise SchemaMismatchError(
                    f"feature group '{name}' changes schema between weeks: "
                    f"{_drift(first, e) or f'keys {first.manifest.keys} -> {e.manifest.keys}'}",
                    source=e.uri,
                    field="columns",
                )
            if e.manifest.ttl_seconds != first.manifest.ttl_seconds:
                raise SchemaMismatchError(
                    f"feature group '{name}' changes its TTL", source=e.uri, field="ttl_seconds"
                )
        unknown = [k for k in first.manifest.keys if k not in config.entity_keys]
        if unknown:
            raise SchemaMismatchError(
                f"feature group '{name}' is keyed by {unknown}, not among the events' entity_keys",
                source=first.uri,
                field="keys",
            )
        event_dtypes = {c.name: c.dtype for e in inputs.events[:1] for c in e.manifest.columns}
        dtypes = {c.name: c.dtype for c in first.manifest.columns}
        for key in first.manifest.keys:
            if key in event_dtypes and not _keys_join(dtypes[key], event_dtypes[key]):
                raise SchemaMismatchError(
                    f"key '{key}' is {dtypes[key]} here but {event_dtypes[key]} "
                    f"({_id_kind(event_dtypes[key])}) in the events: snapshots are joined to "
                    "events by it",
                    source=first.uri,
                    field="keys",
                )
        vf = first.manifest.valid_from_column
        for c, field in [*((c, c) for c in feature_columns(first)), (vf, "valid_from_column")]:
            if c and c.startswith("__"):  # beside the group's columns: __join_at, __tiebreak
                raise SchemaMismatchError(
                    f"column '{c}': names starting with '__' are the frame builder's own "
                    "columns; rename it",
                    source=first.uri,
                    field=field,
                )
        check_no_pii(policy, feature_columns(first), first.uri, "columns")
        for c in feature_columns(first):
            _check_feature(c, group_feature(name, c), dtypes[c], first.uri, c)


def _check_feature(column: str, feature: str, dtype: str, source: str, field: str) -> None:
    """A column the model will train on: numeric or boolean, under a name XGBoost accepts and
    that holds nothing a reader cannot see (zero-width or control characters, blanks at its
    ends): such a name can pass the policy's PII names and patterns while it reads as one."""
    if any(unicodedata.category(c) in ("Cf", "Cc") for c in column) or column != column.strip():
        raise SchemaMismatchError(
            f"feature column {column!r} holds invisible characters or blanks at its ends, which "
            "can hide a name from the policy's PII rules: rename it in the data",
            source=source,
            field=field,
        )
    if not _NUMERIC.fullmatch(dtype):
        raise SchemaMismatchError(
            f"feature column '{column}' is {dtype}: features must be numeric or boolean "
            "(encode categories as numbers before writing the dataset)",
            source=source,
            field=field,
        )
    if _XGBOOST_REFUSES.search(feature):
        raise SchemaMismatchError(
            f"feature '{feature}' has '[', ']' or '<' in its name, which XGBoost refuses",
            source=source,
            field=field,
        )


def check_label_values(entries: list[CatalogEntry], label_family: str) -> None:
    """The family's labels are 0 (genuine) or 1 (fraud) and never null: every family trains a
    binary classifier, so any other value is bad data, refused before it can become a label."""
    for e in entries:
        frame = scan_files(file_uris(e.manifest, e.uri))
        if "label_family" in e.manifest.column_names():
            frame = frame.filter(pl.col("label_family") == label_family)
        found = frame.select(pl.col("label_value").unique().sort(nulls_last=True)).collect()
        bad = [v for v in found["label_value"].to_list() if v not in LABEL_VALUES]
        if bad:
            raise SchemaMismatchError(
                f"label family '{label_family}' takes values {sorted(LABEL_VALUES)}, found "
                f"{bad[:5]}",
                source=e.uri,
                field="label_value",
            )


def check_event_ids(entries: list[CatalogEntry]) -> None:
    """Every event of the run has an id, and no two share one (across files and weeks too): a
    labels join matches by id, so a repeated id would count one event twice in training and
    evaluation, or give two events one label, and a null id could never take a label."""
    ids = []
    for e in entries:
        column = scan_files(file_uris(e.manifest, e.uri)).select("event_id").collect()
        found = column.select(
            nulls=pl.col("event_id").null_count(), unique=pl.col("event_id").n_unique()
        ).row(0, named=True)
        if found["nulls"]:
            raise SchemaMismatchError(
                f"{found['nulls']} events have no event_id", source=e.uri, field="event_id"
            )
        if found["unique"] != column.height:
            raise SchemaMismatchError(
                f"{column.height - found['unique']} event_id values repeat within this dataset",
                source=e.uri,
                field="event_id",
            )
        ids.append(column.with_columns(manifest=pl.lit(e.uri)))
    every = pl.concat(ids) if ids else pl.DataFrame()
    if every.height and every["event_id"].n_unique() != every.height:
        repeated = every.filter(pl.col("event_id").is_duplicated()).sort("event_id", "manifest")
        first = repeated.filter(pl.col("event_id") == repeated["event_id"][0])
        raise SchemaMismatchError(
            f"event_id {first['event_id'][0]!r} is also an event of {first['manifest'][1]}: ids "
            "must be unique across the run's events",
            source=first["manifest"][0],
            field="event_id",
        )


def check_not_empty(events: list[CatalogEntry], windows: LeakagePolicy) -> None:
    """Every split has events by the manifests' own row counts: an empty week that would leave a
    split without rows is refused before the frame, the model and a report about nothing."""
    splits = {"train": windows.train_window, **windows.eval_windows}
    for split, window in splits.items():
        covering = [e for e in events if e.manifest.time_window.overlaps(window)]
        if covering and not sum(e.manifest.row_count for e in covering):
            raise MissingInputError(
                f"no events in the {split} window [{window.start:%Y-%m-%d}, {window.end:%Y-%m-%d}): "
                f"every manifest covering it has 0 rows",
                source=covering[0].uri,
                field="row_count",
            )


def check_manifest_location(
    catalog: Catalog, manifest: DatasetManifest, uri: str, policy: GovernancePolicy
) -> None:
    """The manifest's data files use the policy's URL schemes and lie under the catalog root or
    one of the policy's data_roots (the rule intake applies; `manifest validate` applies it too)."""
    check_file_locations(
        manifest,
        uri,
        root=catalog.location.uri(catalog.location.root),
        allowed_schemes=policy.allowed_url_schemes,
        data_roots=policy.data_roots,
    )


def check_locations(catalog: Catalog, inputs: FrameInputs, policy: GovernancePolicy) -> None:
    for e in inputs.all_entries():
        check_manifest_location(catalog, e.manifest, e.uri, policy)


def group_feature(group: str, column: str) -> str:
    """A feature group column's name in the frame (and to the model)."""
    return f"{group}__{column}"


def feature_columns(entry: CatalogEntry) -> list[str]:
    m = entry.manifest
    skip = {*m.keys, m.time_column, m.valid_from_column, *RESERVED_FEATURE_COLUMNS}
    return [c for c in m.column_names() if c not in skip]


def intake(
    catalog: Catalog,
    config: TrainingConfig,
    partition_key: str,
    policy: GovernancePolicy,
    provenance: Provenance | None = None,
    policy_source: str = "built-in default policy",
    champion: ChampionRef | None = None,
    gate_history: list[WeekReportRef] | None = None,
) -> tuple[IntakeReceipt, FrameInputs]:
    """Resolve windows, check policy, find + verify every manifest file, pin the train run
    (with the champion and the earlier weeks its gate will compare with)."""
    windows = resolve_windows(partition_key, config.split_policy)
    check_gate_policy(config.gates, policy, source=policy_source)
    check_model_family(policy, config.model_family, source=policy_source)
    check_leakage_checks(config, policy, source=policy_source)
    check_data_window(policy, windows, source=policy_source)
    if provenance is not None:
        check_triggerer(policy, provenance.triggered_by, source=policy_source)
    inputs = find_inputs(catalog, config, windows)
    check_compatibility(config, inputs, policy)
    features = [
        *config.event_features,
        *(
            group_feature(g, c)
            for g, entries in inputs.feature_groups.items()
            for c in feature_columns(entries[0])
        ),
    ]
    check_vetted_features(policy, features, source=policy_source)
    check_not_empty(inputs.events, windows)
    # Where the files are is checked before any of them is opened.
    check_locations(catalog, inputs, policy)
    for e in inputs.all_entries():
        verify_manifest_files(e.manifest, e.uri, decode=True)
    check_label_values(inputs.labels, config.label_family)
    check_event_ids(inputs.events)
    refs = [e.ref for e in inputs.all_entries()]
    cfg_hash = config_hash(config)
    code = code_version()
    history = gate_history or []
    policy_sha = policy_digest(policy)
    # The policy is a pin like the champion: other rules, another train run.
    pins = {
        "champion": champion.bundle_id if champion else None,
        "history": [h.evaluation_report_ref.digest for h in history],
        "policy": policy_sha,
    }
    receipt = IntakeReceipt(
        train_run_id=train_run_id(partition_key, cfg_hash, [r.digest for r in refs], code, pins),
        partition_key=partition_key,
        config=config,
        config_hash=cfg_hash,
        code_version=code,
        windows=windows,
        input_dataset_manifests=refs,
        champion=champion,
        gate_history=history,
        policy_digest=policy_sha,
        provenance=provenance,
    )
    return receipt, inputs


def pinned_manifest(ref: DatasetManifestRef, *, verify_files: bool = True) -> CatalogEntry:
    """A manifest as pinned: refused if its content changed since, and (``verify_files``) if
    any of its data files did."""
    m = read_manifest(ref.uri)
    digest = manifest_digest(m)
    if digest != ref.digest:
        raise DigestMismatchError(
            f"manifest changed since intake: sha256 {digest}, pinned {ref.digest}",
            source=ref.uri,
            field="digest",
        )
    if verify_files:
        verify_manifest_files(m, ref.uri, check_window=False)
    return CatalogEntry(ref.uri, m, digest)


def reload_inputs(receipt: IntakeReceipt, *, verify_files: bool = True) -> FrameInputs:
    """The pinned manifests again, refusing any whose content changed since intake."""
    by_role: dict[str, list[CatalogEntry]] = {"events": [], "labels": []}
    groups: dict[str, list[CatalogEntry]] = {
        g.name: [] for g in receipt.config.feature_group_versions
    }
    for ref in receipt.input_dataset_manifests:
        entry = pinned_manifest(ref, verify_files=verify_files)
        m = entry.manifest
        if m.kind == "feature_group":
            groups[m.name].append(entry)
        else:
            by_role[m.kind].append(entry)
    return FrameInputs(events=by_role["events"], labels=by_role["labels"], feature_groups=groups)
