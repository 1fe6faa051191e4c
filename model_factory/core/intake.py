"""Dataset intake: find the manifests a train run needs, verify every file, pin them."""

from __future__ import annotations

from dataclasses import dataclass

from model_factory.contracts import (
    ChampionRef,
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
    check_no_pii,
    check_triggerer,
)
from model_factory.core.identity import code_version, config_hash, train_run_id
from model_factory.core.manifests import (
    Catalog,
    CatalogEntry,
    manifest_digest,
    read_manifest,
    verify_manifest_files,
)
from model_factory.core.windows import data_span, resolve_windows
from model_factory.errors import DigestMismatchError, SchemaMismatchError

RESERVED_FEATURE_COLUMNS = ("available_at", "valid_from")


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
    labels = catalog.find("labels", config.labels.name, config.labels.version, span.start, windows.cut)
    # Every snapshot written before the last event: the join needs only the TTL lookback, but
    # the audit must tell a stale snapshot (dropped by the TTL) from none at all.
    groups = {
        sel.name: catalog.find("feature_group", sel.name, sel.version, None, span.end,
                               require_coverage=False)
        for sel in config.feature_group_versions
    }
    return FrameInputs(events=events, labels=labels, feature_groups=groups)


def check_compatibility(config: TrainingConfig, inputs: FrameInputs, policy: GovernancePolicy) -> None:
    """Manifests carry the columns, keys and label family the config asks for, and no PII
    column is selected."""
    for e in inputs.events:
        names = e.manifest.column_names()
        for field, cols in (("event_features", config.event_features), ("entity_keys", config.entity_keys)):
            missing = [c for c in cols if c not in names]
            if missing:
                raise SchemaMismatchError(f"events lack columns {missing} named in the config",
                                          source=e.uri, field=field)
        check_no_pii(policy, config.event_features, e.uri, "event_features")
    for e in inputs.labels:
        if e.manifest.label_family != config.label_family:
            raise SchemaMismatchError(
                f"label family '{e.manifest.label_family}' is not the config's '{config.label_family}'",
                source=e.uri, field="label_family")
        for col in ("event_id", "label_value", "observed_time"):
            if col not in e.manifest.column_names():
                raise SchemaMismatchError(f"labels lack column '{col}'", source=e.uri, field="columns")
    for name, entries in inputs.feature_groups.items():
        first = entries[0]
        for e in entries:
            if e.manifest.columns != first.manifest.columns or e.manifest.keys != first.manifest.keys:
                raise SchemaMismatchError(
                    f"feature group '{name}' changes schema between {first.uri} and this manifest",
                    source=e.uri, field="columns")
            if e.manifest.ttl_seconds != first.manifest.ttl_seconds:
                raise SchemaMismatchError(f"feature group '{name}' changes its TTL", source=e.uri,
                                          field="ttl_seconds")
        unknown = [k for k in first.manifest.keys if k not in config.entity_keys]
        if unknown:
            raise SchemaMismatchError(
                f"feature group '{name}' is keyed by {unknown}, not among the events' entity_keys",
                source=first.uri, field="keys")
        check_no_pii(policy, feature_columns(first), first.uri, "columns")


def feature_columns(entry: CatalogEntry) -> list[str]:
    m = entry.manifest
    skip = {*m.keys, m.time_column, m.valid_from_column, *RESERVED_FEATURE_COLUMNS}
    return [c for c in m.column_names() if c not in skip]


def intake(catalog: Catalog, config: TrainingConfig, partition_key: str, policy: GovernancePolicy,
           provenance: Provenance | None = None, policy_source: str = "built-in default policy",
           champion: ChampionRef | None = None, gate_history: list[WeekReportRef] | None = None,
           ) -> tuple[IntakeReceipt, FrameInputs]:
    """Resolve windows, check policy, find + verify every manifest file, pin the train run
    (with the champion and the earlier weeks its gate will compare with)."""
    windows = resolve_windows(partition_key, config.split_policy)
    check_gate_policy(config.gates, policy, source=policy_source)
    check_data_window(policy, windows, source=policy_source)
    if provenance is not None:
        check_triggerer(policy, provenance.triggered_by, source=policy_source)
    inputs = find_inputs(catalog, config, windows)
    check_compatibility(config, inputs, policy)
    for e in inputs.all_entries():
        verify_manifest_files(e.manifest, e.uri)
    refs = [e.ref for e in inputs.all_entries()]
    cfg_hash = config_hash(config)
    code = code_version()
    history = gate_history or []
    pins = {"champion": champion.bundle_id if champion else None,
            "history": [h.evaluation_report_ref.digest for h in history]}
    receipt = IntakeReceipt(
        train_run_id=train_run_id(partition_key, cfg_hash, [r.digest for r in refs], code, pins),
        partition_key=partition_key, config=config, config_hash=cfg_hash, code_version=code,
        windows=windows, input_dataset_manifests=refs, champion=champion, gate_history=history,
        provenance=provenance)
    return receipt, inputs


def reload_inputs(receipt: IntakeReceipt, *, verify_files: bool = True) -> FrameInputs:
    """The pinned manifests again, refusing any whose content changed since intake."""
    by_role: dict[str, list[CatalogEntry]] = {"events": [], "labels": []}
    groups: dict[str, list[CatalogEntry]] = {g.name: [] for g in receipt.config.feature_group_versions}
    for ref in receipt.input_dataset_manifests:
        m = read_manifest(ref.uri)
        digest = manifest_digest(m)
        if digest != ref.digest:
            raise DigestMismatchError(f"manifest changed since intake: sha256 {digest}, pinned {ref.digest}",
                                      source=ref.uri, field="digest")
        if verify_files:
            verify_manifest_files(m, ref.uri, check_window=False)
        entry = CatalogEntry(ref.uri, m, digest)
        if m.kind == "feature_group":
            groups[m.name].append(entry)
        else:
            by_role[m.kind].append(entry)
    return FrameInputs(events=by_role["events"], labels=by_role["labels"], feature_groups=groups)
