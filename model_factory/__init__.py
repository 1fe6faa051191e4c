"""Model Factory: leakage-safe frames, deterministic XGBoost, evidence-gated immutable bundles."""

import os

__version__ = "0.1.0"

# libgomp reads this when XGBoost loads it; the default spinning policy made training 1.6x
# slower on a busy 2-core machine (ARCHITECTURE §5). A user's explicit setting still wins.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
