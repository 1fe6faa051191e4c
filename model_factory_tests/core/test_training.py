"""Training inputs XGBoost cannot take, and models it cannot load, as errors naming them."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest
import xgboost as xgb
from pydantic import ValidationError

from model_factory.contracts import TrainingConfig, XGBoostParams
from model_factory.core.training import TrainedModel, feature_matrix, train_xgboost
from model_factory.errors import ModelFactoryError, SchemaMismatchError
from model_factory_tests.core.test_canaries import FEATURES, separable_frame

PARAMS = XGBoostParams(num_boost_round=20, early_stopping_rounds=5, nthread=1)


@pytest.mark.parametrize(
    ("column", "value", "split"),
    [
        ("x", float("inf"), "test"),  # a ratio over zero, only where the model is scored
        ("noise", -float("inf"), "train"),
        ("noise", 1e300, "val"),  # finite in float64, infinite as the float32 XGBoost reads
    ],
)
def test_an_infinite_feature_value_is_refused_naming_column_and_split(column, value, split):
    """A raw XGBoostError with a C++ trace before, at training or only later when the test
    rows were scored (found in review)."""
    frame = separable_frame(2_000)
    row = frame.with_row_index().filter(pl.col("split") == split)["index"][0]
    frame = frame.with_columns(
        pl.when(pl.int_range(pl.len()) == row).then(value).otherwise(pl.col(column)).alias(column)
    )

    with pytest.raises(SchemaMismatchError) as info:
        train_xgboost(frame, FEATURES, PARAMS, source="frame.parquet")

    assert (info.value.source, info.value.field) == ("frame.parquet", column)
    assert f"split {split}" in str(info.value)


def test_nulls_stay_missing_values_and_train():
    frame = separable_frame(2_000).with_columns(
        pl.when(pl.int_range(pl.len()) % 7 == 0)
        .then(None)
        .otherwise(pl.col("noise"))
        .alias("noise")
    )
    assert train_xgboost(frame, FEATURES, PARAMS).best_iteration >= 0


def test_bytes_xgboost_cannot_load_are_a_model_factory_error():
    with pytest.raises(ModelFactoryError) as info:
        TrainedModel.from_bytes(b"not a model at all", nthread=1)
    assert info.value.field == "(model)" and "can load" in str(info.value)


def test_a_model_saved_without_early_stopping_scores_with_all_its_rounds():
    """A champion trained elsewhere has no best_iteration attribute: an AttributeError before."""
    frame = separable_frame(2_000)
    train = frame.filter(pl.col("split") == "train")
    x = feature_matrix(train, FEATURES)
    booster = xgb.train(
        {"objective": "binary:logistic", "nthread": 1},
        xgb.DMatrix(x, label=train["label"].to_numpy(), feature_names=FEATURES),
        num_boost_round=7,
    )
    model = TrainedModel.from_bytes(bytes(booster.save_raw("ubj")), nthread=1)
    assert model.best_iteration == 6
    expected = booster.predict(xgb.DMatrix(x, feature_names=FEATURES))
    np.testing.assert_allclose(model.predict(x), expected, rtol=1e-6)


@pytest.mark.parametrize(
    "config",
    [
        {"hyperparams": {"seed": 2**63}},  # "expect long" from xgb.train, after intake and frame
        {"hyperparams": {"seed": -1}},
        {"evaluation": {"bootstrap_seed": -5}},  # NumPy refuses negative seeds
    ],
)
def test_a_seed_outside_what_numpy_and_xgboost_take_is_refused_at_the_config(config):
    with pytest.raises(ValidationError):
        TrainingConfig.model_validate(config)


def test_scoring_refuses_inputs_in_another_order_than_the_model_was_trained_on():
    """XGBoost checks the names of what it scores against the model's own, but the matrix was
    labelled with the model's names whatever its columns were: features in another order
    were scored silently, each read as its neighbour (found in review)."""
    frame = separable_frame(4_000)
    trained = train_xgboost(frame, FEATURES, PARAMS)
    test = frame.filter(pl.col("split") == "test")

    expected = trained.predict(feature_matrix(test, FEATURES))
    assert np.array_equal(trained.score(test, FEATURES, source="frame.parquet"), expected)
    for wrong in ([*reversed(FEATURES)], FEATURES[:1], [*FEATURES, "split_day"]):
        with pytest.raises(SchemaMismatchError) as info:
            trained.score(test.with_columns(split_day=pl.lit(1.0)), wrong, source="frame.parquet")
        assert info.value.source == "frame.parquet" and info.value.field == "feature_names"
        assert str(FEATURES) in str(info.value)


@pytest.mark.parametrize("max_bin", [16, 1024])
def test_a_max_bin_other_than_xgboosts_default_trains_with_those_bins(max_bin):
    """The validation matrix is binned like the training one (XGBoost refused a mismatch)."""
    import json

    frame = separable_frame(4_000)
    model = train_xgboost(frame, FEATURES, XGBoostParams(max_bin=max_bin, num_boost_round=20))
    config = json.loads(model.booster.save_config())
    assert int(config["learner"]["gradient_booster"]["tree_train_param"]["max_bin"]) == max_bin


@pytest.mark.parametrize(
    "field, value",
    [
        ("reg_lambda", float("inf")),  # YAML's .inf: a constant model
        ("min_child_weight", 1e39),  # beyond float32: XGBoost refuses it mid-run
        ("learning_rate", 1e-40),  # below float32's smallest normal: refused mid-run
        ("subsample", 1e-300),
    ],
)
def test_a_hyperparameter_xgboost_cannot_parse_is_refused_at_the_config(field, value):
    with pytest.raises(ValidationError) as refused:
        TrainingConfig.model_validate({"hyperparams": {field: value}})
    assert refused.value.errors()[0]["loc"] == ("hyperparams", field)
    # the smallest and largest float32 values XGBoost takes are taken
    XGBoostParams(learning_rate=1.2e-38, reg_lambda=3.0e38, min_child_weight=0.0)
