"""Model Factory: leakage-safe frames, deterministic XGBoost, evidence-gated immutable bundles."""

__version__ = "0.1.0"
