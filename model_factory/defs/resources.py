"""Where runs read and write: catalog, artifact store, registry, governance policy."""

from __future__ import annotations

import dagster as dg
from pydantic import Field

from model_factory.core.runs import FactoryEnv
from model_factory.core.settings import Settings


class ModelFactoryResource(dg.ConfigurableResource):
    """Locations as fsspec URLs; unset fields fall back to the MODEL_FACTORY_* variables."""

    catalog_url: str | None = Field(None, description="Manifest catalog (MODEL_FACTORY_CATALOG).")
    store_url: str | None = Field(None, description="Artifact store (MODEL_FACTORY_STORE).")
    registry_url: str | None = Field(None, description="Model registry (MODEL_FACTORY_REGISTRY).")
    policy_path: str | None = Field(None, description="Governance policy (MODEL_FACTORY_POLICY).")

    def factory_env(self) -> FactoryEnv:
        s = Settings.from_env()
        return FactoryEnv.from_settings(
            Settings(home=s.home, catalog_url=self.catalog_url or s.catalog_url,
                     store_url=self.store_url or s.store_url,
                     registry_url=self.registry_url or s.registry_url,
                     start_week=s.start_week, policy_path=self.policy_path or s.policy_path,
                     dagster_home=s.dagster_home))
