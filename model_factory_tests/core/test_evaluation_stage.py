"""The evaluation stage on demo data through the core (no Dagster): the report is complete,
its HTML view is stored content-addressed, a re-run gives the same digests, and the entity
precision reads customers from the pinned events."""

from __future__ import annotations

import json
from pathlib import Path

import polars as pl
import pytest

from model_factory.contracts import (
    EvaluationSettings,
    GovernancePolicy,
    TrainingConfig,
    XGBoostParams,
)
from model_factory.core.demo_data import DemoDataSpec, generate_demo_data
from model_factory.core.manifests import Catalog
from model_factory.core.registry import FileRegistry
from model_factory.core.runs import (
    FactoryEnv,
    stage_evaluation,
    stage_frame,
    stage_intake,
    stage_model,
)
from model_factory.core.storage import ArtifactStore
from model_factory.errors import PolicyViolationError, SchemaMismatchError

WEEK = "2026-02-23"
CONFIG = TrainingConfig(
    hyperparams=XGBoostParams(num_boost_round=60),
    evaluation=EvaluationSettings(bootstrap_resamples=300),
)


@pytest.fixture(scope="module")
def env(tmp_path_factory) -> FactoryEnv:
    root = tmp_path_factory.mktemp("evaluation_stage")
    generate_demo_data(str(root / "catalog"), DemoDataSpec(customers=600, terminals=1200, weeks=9))
    return FactoryEnv(
        Catalog(str(root / "catalog")),
        ArtifactStore(str(root / "store")),
        FileRegistry(str(root / "registry")),
        GovernancePolicy(),
    )


@pytest.fixture(scope="module")
def upstream(env):
    intake = stage_intake(env, CONFIG, WEEK)
    frame = stage_frame(env, intake.ref)
    model = stage_model(env, intake.ref, frame.ref)
    return intake, frame, model


@pytest.fixture(scope="module")
def evaluated(env, upstream):
    intake, frame, model = upstream
    return stage_evaluation(env, intake.ref, frame.ref, model.ref)


def test_a_rerun_gives_the_same_report_and_html(env, upstream, evaluated) -> None:
    intake, frame, model = upstream
    again = stage_evaluation(env, intake.ref, frame.ref, model.ref)
    assert again.ref.sha256 == evaluated.ref.sha256
    assert again.doc.html == evaluated.doc.html
    assert again.doc.timings != {} and "latency_single_row_p99_us" in again.doc.timings


def test_the_report_has_every_section_with_real_numbers(evaluated) -> None:
    r = evaluated.doc
    test = r.metrics["test"]
    assert test.positives > 0 and test.roc_auc_ci is not None and test.pr_auc_ci is not None
    assert r.policy.review_threshold is not None
    assert {p.name for p in r.operating_points} >= {"review", "decline", "alert_rate_1%"}
    assert {(t.unit, t.k) for t in r.top_k} == {
        (u, k) for u in ("transaction", "entity") for k in (20, 50)
    }
    entity = next(t for t in r.top_k if t.unit == "entity")
    assert entity.entity_column == "customer_id" and all(d.candidates > 0 for d in entity.days)
    assert {s.slice for s in r.slices} == {"amount_band", "night", "weekend", "customer_history"}
    assert all(s.status != "column_absent" for s in r.slices)
    assert len(r.drift.features) == len(r.feature_importance) and r.drift.score_psi is not None
    assert r.explainability.shap_rows > 0
    assert r.label_context.test_positives == test.positives
    assert set(r.curves) == {"val", "test"}


def test_the_html_view_is_stored_content_addressed_with_its_plots(evaluated) -> None:
    ref = evaluated.doc.html
    assert ref is not None and ref.media_type == "text/html"
    page = ArtifactStore.get_bytes(ref).decode()
    for plot in (
        "plot-roc",
        "plot-pr",
        "plot-calibration",
        "plot-scores",
        "plot-topk",
        "plot-drift",
    ):
        assert f'<svg id="{plot}"' in page
    stored = json.loads(Path(evaluated.ref.uri).read_text())
    assert stored["html"]["sha256"] == ref.sha256


def test_entity_precision_counts_customers_of_the_pinned_events(env, upstream, evaluated) -> None:
    _, frame, _ = upstream
    test = pl.read_parquet(frame.doc.frame.uri).filter(pl.col("split") == "test")
    events = pl.read_parquet(list(Path(env.catalog.url).glob("datasets/events/**/*.parquet")))
    customers = test.join(events.select("event_id", "customer_id"), on="event_id", how="left")
    entity = next(t for t in evaluated.doc.top_k if t.unit == "entity")
    by_day = customers.group_by(pl.col("event_time").dt.date().cast(pl.String).alias("day")).agg(
        pl.col("customer_id").n_unique().alias("n")
    )
    assert {d.day: d.candidates for d in entity.days} == dict(by_day.iter_rows())


def test_a_missing_or_pii_entity_column_is_refused_with_the_field(env, upstream) -> None:
    for column, error in (
        ("no_such_column", SchemaMismatchError),
        ("card_number", PolicyViolationError),
    ):
        cfg = CONFIG.model_copy(
            update={"evaluation": CONFIG.evaluation.model_copy(update={"entity_column": column})}
        )
        run = stage_intake(env, cfg, WEEK)
        run_frame = stage_frame(env, run.ref)
        run_model = stage_model(env, run.ref, run_frame.ref)
        with pytest.raises(error, match="entity_column"):
            stage_evaluation(env, run.ref, run_frame.ref, run_model.ref)
