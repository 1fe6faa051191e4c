"""Settings from environment variables, with local defaults under one home folder."""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from datetime import date
from pathlib import Path

from model_factory.contracts import GovernancePolicy
from model_factory.core.documents import parse_document
from model_factory.core.storage import read_bytes
from model_factory.errors import ConfigError, PolicyViolationError

DEFAULT_START_WEEK = "2026-02-23"  # first trainable week of the default demo data (7 weeks in)
_PROJECT_ROOT = Path(__file__).resolve().parents[2]


@dataclass(frozen=True)
class Settings:
    home: Path
    catalog_url: str
    store_url: str
    registry_url: str
    start_week: str
    policy_path: str | None
    dagster_home: Path

    @classmethod
    def from_env(cls, env: dict[str, str] | None = None) -> Settings:
        env = dict(os.environ if env is None else env)
        home = Path(env.get("MODEL_FACTORY_HOME") or Path.cwd() / ".model_factory").resolve()
        start = env.get("MODEL_FACTORY_START_WEEK") or DEFAULT_START_WEEK
        try:
            if date.fromisoformat(start).weekday() != 0:
                raise ValueError("not a Monday")
        except ValueError as exc:
            raise ConfigError(f"'{start}' must be a Monday as YYYY-MM-DD ({exc})",
                              field="MODEL_FACTORY_START_WEEK") from exc
        return cls(
            home=home,
            catalog_url=env.get("MODEL_FACTORY_CATALOG") or str(home / "catalog"),
            store_url=env.get("MODEL_FACTORY_STORE") or str(home / "store"),
            registry_url=env.get("MODEL_FACTORY_REGISTRY") or str(home / "registry"),
            start_week=start,
            policy_path=env.get("MODEL_FACTORY_POLICY") or None,
            dagster_home=Path(env.get("DAGSTER_HOME") or home / "dagster").resolve(),
        )

    def policy(self) -> GovernancePolicy:
        return load_policy(self.policy_path)

    def ensure_dagster_home(self) -> Path:
        """Create DAGSTER_HOME with the project's dagster.yaml (persistent SQLite, telemetry off)."""
        self.dagster_home.mkdir(parents=True, exist_ok=True)
        target = self.dagster_home / "dagster.yaml"
        if not target.exists():
            template = _PROJECT_ROOT / "dagster.yaml"
            if template.exists():
                shutil.copyfile(template, target)
            else:  # installed without the repository: the essentials of that file
                target.write_text("telemetry:\n  enabled: false\n")
        return self.dagster_home


def load_policy(path: str | None) -> GovernancePolicy:
    """The governance policy file (JSON or YAML); without one, the built-in defaults."""
    if not path:
        return GovernancePolicy()
    raw = read_bytes(path)
    if path.endswith((".yaml", ".yml")):
        import yaml  # dagster depends on PyYAML

        try:
            raw = yaml.safe_load(raw)
        except yaml.YAMLError as exc:
            raise PolicyViolationError(f"not valid YAML ({exc})", source=path) from exc
    return parse_document(raw, GovernancePolicy, source=path, error=PolicyViolationError)
