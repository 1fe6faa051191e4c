"""Global explanations from XGBoost itself: total gain and mean |SHAP| (``pred_contribs``)."""

from __future__ import annotations

import numpy as np
import xgboost as xgb

from model_factory.contracts import Explainability, FeatureAttribution
from model_factory.core.training import TrainedModel


def shap_sample(rows: int, size: int, seed: int) -> np.ndarray:
    """Row indices of a seeded sample without replacement, in row order (all rows if fewer)."""
    if size >= rows:
        return np.arange(rows)
    return np.sort(np.random.default_rng([seed % (1 << 63), 4]).choice(rows, size, replace=False))


def mean_abs_shap(trained: TrainedModel, x: np.ndarray) -> np.ndarray:
    """Mean |SHAP value| per feature over the rows of x (log-odds units; bias column dropped)."""
    data = xgb.DMatrix(x, feature_names=trained.booster.feature_names)
    contribs = trained.booster.predict(
        data, pred_contribs=True, iteration_range=(0, trained.best_iteration + 1)
    )
    return np.abs(contribs[:, :-1]).mean(axis=0)


def explainability(
    trained: TrainedModel, features: list[str], x_test: np.ndarray, sample_rows: int, seed: int
) -> Explainability:
    """Gain and mean |SHAP| per feature, most important first."""
    gain = trained.booster.get_score(importance_type="total_gain")
    idx = shap_sample(x_test.shape[0], sample_rows, seed) if sample_rows > 0 else np.zeros(0, int)
    shap = mean_abs_shap(trained, x_test[idx]) if idx.size else None
    attributions = [
        FeatureAttribution(
            feature=f,
            gain=round(float(gain.get(f, 0.0)), 6),
            mean_abs_shap=None if shap is None else float(shap[i]),
        )
        for i, f in enumerate(features)
    ]
    attributions.sort(key=lambda a: (-(a.mean_abs_shap or 0.0), -a.gain, a.feature))
    return Explainability(shap_rows=int(idx.size), shap_seed=seed, features=attributions)
