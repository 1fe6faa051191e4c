"""Deterministic XGBoost training: hist, fixed seed and threads, early stopping on validation."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import polars as pl
import xgboost as xgb

from model_factory.contracts import XGBoostParams
from model_factory.errors import ModelFactoryError, SchemaMismatchError, first_line


@dataclass(frozen=True)
class TrainedModel:
    booster: xgb.Booster
    model_bytes: bytes
    best_iteration: int

    @classmethod
    def from_bytes(
        cls, model_bytes: bytes, nthread: int, source: str | None = None
    ) -> TrainedModel:
        """A saved model (UBJ keeps the early-stopping best iteration with the trees)."""
        booster = xgb.Booster(params={"nthread": nthread})
        try:
            booster.load_model(bytearray(model_bytes))
        except xgb.core.XGBoostError as exc:  # another release's format, damaged bytes
            raise ModelFactoryError(
                f"not a model this XGBoost {xgb.__version__} can load ({first_line(exc)})",
                source=source,
                field="(model)",
            ) from exc
        # a model saved without early stopping has no best iteration: all its rounds count
        best = booster.attr("best_iteration")
        best_iteration = int(best) if best is not None else booster.num_boosted_rounds() - 1
        return cls(booster=booster, model_bytes=model_bytes, best_iteration=best_iteration)

    def check_inputs(self, features: list[str], source: str | None = None) -> None:
        """``features`` are the model's inputs in its order. ``predict`` labels its matrix with
        the model's own names, so XGBoost's check of names never sees a reordered matrix."""
        own = self.booster.feature_names
        if own is not None and list(own) != list(features):
            raise SchemaMismatchError(
                f"the model was trained on {list(own)} in that order, and is asked to score "
                f"{list(features)}",
                source=source,
                field="feature_names",
            )

    def score(
        self, frame: pl.DataFrame, features: list[str], source: str | None = None
    ) -> np.ndarray:
        """Scores of ``frame``'s rows, read from its columns ``features`` (the model's inputs)."""
        self.check_inputs(features, source)
        return self.predict(feature_matrix(frame, features))

    def predict(self, x: np.ndarray) -> np.ndarray:
        """Scores from the trees up to the best iteration, of a matrix whose columns are the
        model's inputs in its order (``score`` checks that from the names)."""
        data = xgb.DMatrix(x, feature_names=self.booster.feature_names)
        return self.booster.predict(data, iteration_range=(0, self.best_iteration + 1)).astype(
            np.float64
        )


def check_finite(frame: pl.DataFrame, features: list[str], source: str) -> None:
    """Every feature value is missing or a finite float32: XGBoost refuses inf (a ratio over
    zero), and a float64 beyond float32's range becomes inf on the way in."""
    bad = frame.select(pl.col(features).cast(pl.Float32, strict=False).is_infinite().any()).row(
        0, named=True
    )
    for name in [f for f in features if bad[f]]:
        splits = (
            frame.filter(pl.col(name).cast(pl.Float32, strict=False).is_infinite())["split"]
            .unique()
            .sort()
            .to_list()
        )
        raise SchemaMismatchError(
            f"feature '{name}' holds infinite values or values beyond float32's range (in "
            f"split {', '.join(map(str, splits))}), which XGBoost cannot take; make them null "
            "(missing) or finite in the data",
            source=source,
            field=name,
        )


def feature_matrix(frame: pl.DataFrame, features: list[str]) -> np.ndarray:
    """Float32 matrix straight from Polars (nulls become NaN, XGBoost's missing value)."""
    return frame.select(pl.col(features).cast(pl.Float32)).to_numpy()


def booster_params(p: XGBoostParams) -> dict:
    return {
        "objective": "binary:logistic",
        "eval_metric": "aucpr",
        "tree_method": "hist",
        "max_depth": p.max_depth,
        "eta": p.learning_rate,
        "min_child_weight": p.min_child_weight,
        "subsample": p.subsample,
        "colsample_bytree": p.colsample_bytree,
        "lambda": p.reg_lambda,
        "max_bin": p.max_bin,
        "seed": p.seed,
        "nthread": p.nthread,
        "verbosity": 0,
    }


def train_xgboost(
    frame: pl.DataFrame, features: list[str], params: XGBoostParams, source: str = "training_frame"
) -> TrainedModel:
    """Train on split 'train', stop early on split 'val'; returns the booster and its bytes."""
    check_finite(frame, features, source)  # every split: the test rows are scored next
    train = frame.filter(pl.col("split") == "train")
    val = frame.filter(pl.col("split") == "val")
    for name, part in (("train", train), ("val", val)):
        positives = int(part["label"].sum())
        if part.height == 0 or positives == 0 or positives == part.height:
            raise ModelFactoryError(
                f"the {name} split has {part.height} rows and {positives} positives: "
                "both classes are needed to train",
                source=source,
                field=f"split={name}",
            )
    dtrain = xgb.QuantileDMatrix(
        feature_matrix(train, features),
        label=train["label"].to_numpy(),
        feature_names=features,
        max_bin=params.max_bin,
        nthread=params.nthread,
    )
    dval = xgb.QuantileDMatrix(
        feature_matrix(val, features),
        label=val["label"].to_numpy(),
        feature_names=features,
        ref=dtrain,
        max_bin=params.max_bin,  # XGBoost refuses a reference built with other bins
        nthread=params.nthread,
    )
    booster = xgb.train(
        booster_params(params),
        dtrain,
        num_boost_round=params.num_boost_round,
        evals=[(dval, "val")],
        early_stopping_rounds=params.early_stopping_rounds,
        verbose_eval=False,
    )
    best = int(booster.best_iteration)
    # The model stored is the model evaluated: the rounds early stopping grew past the best are
    # cut, so whoever loads the bundle's model (Booster.predict, a serving runtime, gain
    # importance) gets the scores the gate judged, without knowing about best_iteration.
    kept = booster[: best + 1]
    kept.set_attr(**booster.attributes())  # best_iteration, best_score
    return TrainedModel(booster=kept, model_bytes=bytes(kept.save_raw("ubj")), best_iteration=best)
