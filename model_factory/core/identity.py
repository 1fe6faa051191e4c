"""Identities: config hash, code version, train run id (ARCHITECTURE §5)."""

from __future__ import annotations

import sys
from functools import cache
from importlib.metadata import version
from pathlib import Path

from model_factory import __version__
from model_factory.contracts import TrainingConfig
from model_factory.core.canonical import canonical_json, sha256_hex, short_id


def config_hash(config: TrainingConfig) -> str:
    return sha256_hex(canonical_json(config))


NOT_RUN_CODE = frozenset({"demo_data.py", "settings.py"})
# Libraries whose release changes what a run writes: Polars and pyarrow the frame's parquet
# bytes (its created_by, its encoding), NumPy and XGBoost the numbers and the model.
RUNTIME = ("numpy", "polars", "pyarrow", "xgboost")


@cache
def code_version() -> str:
    """Package version plus a digest of the code that decides what a run produces: our
    sources and the releases of the libraries in ``RUNTIME``.

    Hashing the sources (not a git sha) means an edited checkout never reuses an old run id;
    hashing the releases means an upgraded Polars (other frame bytes) is another train run,
    not a re-run refused for writing a different bundle under the same id.
    """
    root = Path(__file__).resolve().parent.parent
    # The demo simulator produces inputs, not runs: editing it must not rename train runs.
    core = [p for p in (root / "core").glob("*.py") if p.name not in NOT_RUN_CODE]
    # errors.py words the messages a gate receipt quotes (a champion that could not be scored)
    files = sorted([root / "contracts.py", root / "errors.py", *core])
    # and the Python release: its float formatting and hashing reach the documents too
    python = f"python=={sys.version_info.major}.{sys.version_info.minor}\n"
    runtime = (python + "".join(f"{name}=={version(name)}\n" for name in RUNTIME)).encode()
    digest = sha256_hex(b"".join(p.name.encode() + b"\0" + p.read_bytes() for p in files) + runtime)
    return f"{__version__}+{digest[:12]}"


def train_run_id(
    partition_key: str,
    cfg_hash: str,
    manifest_digests: list[str],
    code: str,
    gate_pins: dict | None = None,
) -> str:
    """Same week + config + inputs + code ⇒ same train run; anything else ⇒ a new one.

    ``gate_pins`` (the champion and earlier weeks the gate compares with) are inputs too.
    """
    payload = {
        "partition_key": partition_key,
        "config_hash": cfg_hash,
        "input_manifests": sorted(manifest_digests),
        "code_version": code,
        "gate_pins": gate_pins or {},
    }
    return short_id("mfr", sha256_hex(canonical_json(payload)))
