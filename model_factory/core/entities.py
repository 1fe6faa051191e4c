"""The card/customer of each test row, read from the pinned events (the frame carries no entity).

Only the event files overlapping the test window are read, and each is re-verified against its
pinned sha256 first; the entity column never enters the report, only counts do.
"""

from __future__ import annotations

import polars as pl

from model_factory.contracts import GovernancePolicy, IntakeReceipt
from model_factory.core.governance import check_no_pii
from model_factory.core.intake import reload_inputs
from model_factory.core.manifests import file_uris, scan_files, verify_manifest_files
from model_factory.errors import SchemaMismatchError

FIELD = "evaluation.entity_column"


def entities_of(
    receipt: IntakeReceipt, event_ids: pl.Series, column: str, policy: GovernancePolicy
) -> pl.Series:
    """``column`` of the events ``event_ids`` (in that order; null where an event is not found)."""
    check_no_pii(policy, [column], None, FIELD)
    window = receipt.windows.eval_windows["test"]
    entries = [
        e
        for e in reload_inputs(receipt, verify_files=False).events
        if e.manifest.time_window.overlaps(window)
    ]
    for e in entries:
        if column not in e.manifest.column_names():
            raise SchemaMismatchError(
                f"events lack the column '{column}' named as the evaluation's entity column",
                source=e.uri,
                field=FIELD,
            )
        verify_manifest_files(e.manifest, e.uri, check_window=False)
    uris = [u for e in entries for u in file_uris(e.manifest, e.uri)]
    ids = pl.DataFrame({"event_id": event_ids})
    if not uris:
        return pl.Series("entity", [None] * len(event_ids))
    found = (
        scan_files(uris)
        .select("event_id", pl.col(column).alias("entity"))
        .join(ids.lazy(), on="event_id", how="semi")
        .unique("event_id", keep="first", maintain_order=True)
        .collect()
    )
    return ids.join(found, on="event_id", how="left", maintain_order="left")["entity"]
