"""Where runs read and write: catalog, artifact store, registry, governance policy."""

from __future__ import annotations

from dataclasses import replace

import dagster as dg
from pydantic import Field

from model_factory.core.runs import FactoryEnv
from model_factory.core.settings import FRAME_MODES, Settings
from model_factory.errors import ConfigError


class ModelFactoryResource(dg.ConfigurableResource):
    """Locations as fsspec URLs; unset fields fall back to the MODEL_FACTORY_* variables."""

    catalog_url: str | None = Field(None, description="Manifest catalog (MODEL_FACTORY_CATALOG).")
    store_url: str | None = Field(None, description="Artifact store (MODEL_FACTORY_STORE).")
    registry_url: str | None = Field(None, description="Model registry (MODEL_FACTORY_REGISTRY).")
    policy_path: str | None = Field(None, description="Governance policy (MODEL_FACTORY_POLICY).")
    frame_mode: str | None = Field(
        None,
        description="How training frames are built: auto, memory or streaming "
        "(MODEL_FACTORY_FRAME_MODE); the frame's bytes are the same in every mode.",
    )

    def factory_env(self) -> FactoryEnv:
        s = Settings.from_env()
        if self.frame_mode is not None and self.frame_mode not in FRAME_MODES:
            raise ConfigError(
                f"'{self.frame_mode}' is not one of {', '.join(FRAME_MODES)}",
                field="resources.model_factory.config.frame_mode",
            )
        # replace(), so every other setting from the environment is kept
        return FactoryEnv.from_settings(
            replace(
                s,
                catalog_url=self.catalog_url or s.catalog_url,
                store_url=self.store_url or s.store_url,
                registry_url=self.registry_url or s.registry_url,
                policy_path=self.policy_path or s.policy_path,
                frame_mode=self.frame_mode or s.frame_mode,
            )
        )
