"""Settings from environment variables, with local defaults under one home folder."""

from __future__ import annotations

import hashlib
import os
import shutil
from dataclasses import dataclass
from datetime import date
from pathlib import Path

from model_factory.contracts import GovernancePolicy
from model_factory.core.documents import parse_document
from model_factory.core.storage import other_fs_writes_mode, read_bytes, s3_conditional_writes_mode
from model_factory.errors import ConfigError, PolicyViolationError

DEFAULT_START_WEEK = "2026-02-23"  # first trainable week of the default demo data (7 weeks in)
_PROJECT_ROOT = Path(__file__).resolve().parents[2]
FRAME_MODES = ("auto", "memory", "streaming")
DEFAULT_STREAM_ABOVE_BYTES = 2 << 30  # of input parquet: about 5M events with 60 features
# MODEL_FACTORY_INSTANCE -> the instance settings copied into $DAGSTER_HOME/dagster.yaml.
INSTANCE_TEMPLATES = {"sqlite": "dagster.yaml", "postgres": "dagster.postgres.yaml"}
# sha256 of every version the instance templates have had (the current ones included: a test
# checks it): a $DAGSTER_HOME/dagster.yaml equal to one of them is an unedited copy, which is
# brought up to the current template, so a home made by an earlier release gets settings added
# since (e.g. freeing a dead run's pool slots). Add the new digest whenever a template changes.
TEMPLATE_VERSIONS = {
    "13e516778772b6f7c01a44718732a2be199a1d17861f6e3a3f82e0ef77f918ce": "sqlite",  # d11f9f9
    "32758910c9dff661cd8f7c0a1dc9344484a30d65282aa95afd4234e97746a819": "sqlite",  # c523fc4
    "ec52e77694d87484b6d04c4341aec4fbdb79e4ad30c69dfaa233d131296f63fb": "sqlite",  # 1e7b836
    "13b661ad8462644448886df19d7a0700cb92fd4a9c07ca45b404c3fa673e8925": "sqlite",  # e8ca5f4
    "cb2b8b3d09f5413ca3ab43e2b072b7d13a98e44256b40e318c780d9ede23a925": "postgres",  # 56513be
    "252b8b217acf54a88b84b6d27218c9faa8c4eb8dd242e72f67bf30f8c939bdaf": "postgres",  # 1e7b836
    "97d4e8f2ca5af42e6f45c02edeaeb698a5601f16724cbdd79ae52a66ee60d67f": "sqlite",  # slots freed after 60 s
    "a235eef979487928a691e83321d4dfb5a164273a918620085268b2a606340a1f": "postgres",  # slots freed after 60 s
}
# What dagster.postgres.yaml reads from the environment when the instance loads.
POSTGRES_ENV = (
    "DAGSTER_PG_HOST",
    "DAGSTER_PG_PORT",
    "DAGSTER_PG_USER",
    "DAGSTER_PG_PASSWORD",
    "DAGSTER_PG_DB",
)


@dataclass(frozen=True)
class Settings:
    home: Path
    catalog_url: str
    store_url: str
    registry_url: str
    start_week: str
    policy_path: str | None
    dagster_home: Path
    # None: keep whatever $DAGSTER_HOME/dagster.yaml holds (SQLite on first use).
    instance: str | None = None
    # How training frames are built: "memory", "streaming" (features gathered chunk by chunk to
    # a file), or "auto": streaming when the run's input files exceed stream_frames_above_bytes.
    # Both give the same bytes, so this is an execution choice, not part of any run identity.
    frame_mode: str = "auto"
    stream_frames_above_bytes: int = DEFAULT_STREAM_ABOVE_BYTES

    @classmethod
    def from_env(cls, env: dict[str, str] | None = None) -> Settings:
        env = dict(os.environ if env is None else env)
        home = Path(env.get("MODEL_FACTORY_HOME") or Path.cwd() / ".model_factory").resolve()
        start = env.get("MODEL_FACTORY_START_WEEK") or DEFAULT_START_WEEK
        try:
            if date.fromisoformat(start).weekday() != 0:
                raise ValueError("not a Monday")
        except ValueError as exc:
            raise ConfigError(
                f"'{start}' must be a Monday as YYYY-MM-DD ({exc})",
                field="MODEL_FACTORY_START_WEEK",
            ) from exc
        s3_conditional_writes_mode(env)  # a typo fails here, not at the first write to S3
        other_fs_writes_mode(env)
        instance = env.get("MODEL_FACTORY_INSTANCE") or None
        if instance is not None and instance not in INSTANCE_TEMPLATES:
            raise ConfigError(
                f"'{instance}' is not one of {', '.join(INSTANCE_TEMPLATES)}",
                field="MODEL_FACTORY_INSTANCE",
            )
        frame_mode = env.get("MODEL_FACTORY_FRAME_MODE") or "auto"
        if frame_mode not in FRAME_MODES:
            raise ConfigError(
                f"'{frame_mode}' is not one of {', '.join(FRAME_MODES)}",
                field="MODEL_FACTORY_FRAME_MODE",
            )
        above = env.get("MODEL_FACTORY_STREAM_FRAMES_ABOVE_BYTES") or str(
            DEFAULT_STREAM_ABOVE_BYTES
        )
        if not above.isdigit():
            raise ConfigError(
                f"'{above}' is not a number of bytes",
                field="MODEL_FACTORY_STREAM_FRAMES_ABOVE_BYTES",
            )
        folders = {
            "MODEL_FACTORY_CATALOG": env.get("MODEL_FACTORY_CATALOG") or str(home / "catalog"),
            "MODEL_FACTORY_STORE": env.get("MODEL_FACTORY_STORE") or str(home / "store"),
            "MODEL_FACTORY_REGISTRY": env.get("MODEL_FACTORY_REGISTRY") or str(home / "registry"),
        }
        for name, url in {"MODEL_FACTORY_HOME": str(home), **folders}.items():
            if "://" not in url and Path(url).exists() and not Path(url).is_dir():
                # else a NotADirectoryError from the first write, perhaps after work was done
                raise ConfigError("is a file; it must be a folder", source=url, field=name)
        return cls(
            home=home,
            catalog_url=folders["MODEL_FACTORY_CATALOG"],
            store_url=folders["MODEL_FACTORY_STORE"],
            registry_url=folders["MODEL_FACTORY_REGISTRY"],
            start_week=start,
            policy_path=env.get("MODEL_FACTORY_POLICY") or None,
            dagster_home=Path(env.get("DAGSTER_HOME") or home / "dagster").resolve(),
            instance=instance,
            frame_mode=frame_mode,
            stream_frames_above_bytes=int(above),
        )

    def policy(self) -> GovernancePolicy:
        return load_policy(self.policy_path)

    def ensure_dagster_home(self, env: dict[str, str] | None = None) -> Path:
        """Create DAGSTER_HOME with the project's instance settings (telemetry off): dagster.yaml
        (persistent SQLite) by default, dagster.postgres.yaml with MODEL_FACTORY_INSTANCE=postgres.

        A file copied from a project template (of any release) is brought up to the selected one
        as this release has it (unset: the same kind); a dagster.yaml of the user's own is kept,
        but refused when it cannot be the selected PostgreSQL instance.
        """
        env = dict(os.environ if env is None else env)
        self.dagster_home.mkdir(parents=True, exist_ok=True)
        target = self.dagster_home / "dagster.yaml"
        if self.instance == "postgres":
            missing = [name for name in POSTGRES_ENV if not env.get(name)]
            if missing:
                raise ConfigError(
                    f"MODEL_FACTORY_INSTANCE=postgres needs {', '.join(missing)} "
                    "set (dagster.postgres.yaml reads them)",
                    field=missing[0],
                )
        templates = {name: _PROJECT_ROOT / file for name, file in INSTANCE_TEMPLATES.items()}
        wanted = templates[self.instance or "sqlite"]
        if not target.exists():
            if wanted.exists():
                shutil.copyfile(wanted, target)
            elif self.instance == "postgres":
                raise ConfigError(
                    "dagster.postgres.yaml is not next to the package (installed "
                    "without the repository): put its storage block in "
                    f"{target} yourself",
                    source=str(wanted),
                    field="MODEL_FACTORY_INSTANCE",
                )
            else:  # installed without the repository: the essentials of that file
                target.write_text("telemetry:\n  enabled: false\n")
            return self.dagster_home
        current = target.read_bytes()
        # this checkout's own template files too: they may differ from the committed bytes
        # (line endings, a local edit) and a copy of them is as unedited
        copied_from = TEMPLATE_VERSIONS.get(hashlib.sha256(current).hexdigest()) or next(
            (name for name, t in templates.items() if t.exists() and current == t.read_bytes()),
            None,
        )
        if copied_from is not None:
            # An unedited copy of a template, of this release or an earlier one: the selected
            # template (unset: the same kind) as this release has it.
            latest = templates[self.instance or copied_from]
            if latest.exists() and current != latest.read_bytes():
                shutil.copyfile(latest, target)
        elif self.instance == "postgres" and b"postgres" not in current:
            raise ConfigError(
                "MODEL_FACTORY_INSTANCE=postgres, but this dagster.yaml (not a copy "
                "of the project's) has no PostgreSQL storage: add the storage block "
                "of dagster.postgres.yaml or remove the file",
                source=str(target),
                field="MODEL_FACTORY_INSTANCE",
            )
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
            detail = " ".join(str(exc).split())  # one line: the CLI prints one per error
            raise PolicyViolationError(f"not valid YAML ({detail})", source=path) from exc
    return parse_document(raw, GovernancePolicy, source=path, error=PolicyViolationError)
