"""The evaluation_report asset's metadata in a real Dagster instance: headline numbers the UI can
plot across partitions, Markdown tables, and the HTML views (with earlier weeks)."""

from __future__ import annotations

from pathlib import Path

import dagster as dg
import pytest

from model_factory.contracts import EvaluationReport
from model_factory.core.demo_data import DemoDataSpec, generate_demo_data
from model_factory.core.storage import ArtifactStore
from model_factory.definitions import build_definitions
from model_factory.defs.resources import ModelFactoryResource
from model_factory.runner import run_week

pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("evaluation_asset")]
WEEKS = ["2026-02-23", "2026-03-02"]
NUMBERS = (
    "roc_auc",
    "pr_auc",
    "brier",
    "ece",
    "ece_quantile",
    "roc_auc_ci_lower",
    "roc_auc_ci_upper",
    "pr_auc_ci_lower",
    "pr_auc_ci_upper",
    "review_threshold",
)


def _materialize_two_weeks(root: Path) -> dict[str, dict]:
    generate_demo_data(str(root / "catalog"), DemoDataSpec(customers=600, terminals=1200, weeks=10))
    resource = ModelFactoryResource(
        catalog_url=str(root / "catalog"),
        store_url=str(root / "store"),
        registry_url=str(root / "registry"),
    )
    defs = build_definitions(resource)
    (root / "dagster").mkdir()
    out = {}
    with dg.instance_for_test(temp_dir=str(root / "dagster")) as instance:
        for week in WEEKS:
            assert run_week(instance, defs, week).status == "succeeded"
            rec = instance.fetch_materializations(
                dg.AssetRecordsFilter(
                    asset_key=dg.AssetKey("evaluation_report"), asset_partitions=[week]
                ),
                limit=1,
            ).records[0]
            out[week] = rec.asset_materialization.metadata
    return out


# One test, not three: the two weekly runs are its whole cost, and xdist may interleave modules
# on a worker, which would rebuild a module fixture.
def test_materialization_carries_headline_numbers_markdown_tables_and_html_views(tmp_path) -> None:
    metadata = _materialize_two_weeks(tmp_path)
    # headline metrics are numbers, so the UI plots them across partitions
    for meta in metadata.values():
        for key in NUMBERS:
            assert isinstance(meta[key], dg.FloatMetadataValue), key
        assert (
            meta["roc_auc_ci_lower"].value
            <= meta["roc_auc"].value
            <= meta["roc_auc_ci_upper"].value
        )
    first, second = metadata[WEEKS[0]], metadata[WEEKS[1]]
    # operating points and slices as Markdown tables
    for key in ("operating_points", "slices"):
        assert isinstance(first[key], dg.MarkdownMetadataValue)
        assert first[key].value.startswith("| ")
    assert "| review |" in first["operating_points"].value
    assert "amount_band" in first["slices"].value
    # the report references its own deterministic page; the linked view adds earlier weeks
    report = EvaluationReport.model_validate_json(Path(second["output_uri"].value).read_text())
    assert second["report_html_pinned"].value == report.html.uri
    ArtifactStore.get_bytes(report.html)  # digest-verified
    view = Path(second["report_html"].value).read_text()
    assert '<svg id="plot-history"' in view and WEEKS[0] in view
    assert "latency_single_row_p50_us" in view  # the view shows the volatile latency
    assert '<svg id="plot-history"' not in Path(first["report_html"].value).read_text()
