"""The Dagster Definitions of the Model Factory (loaded by workspace.yaml and `dg`)."""

import dagster as dg

from model_factory.defs.assets import TRAINING_ASSETS
from model_factory.defs.publishing import publish_bundle_job, publish_pass_bundles
from model_factory.defs.resources import ModelFactoryResource
from model_factory.defs.schedules import weekly_training_job, weekly_training_schedule


def build_definitions(resource: ModelFactoryResource | None = None) -> dg.Definitions:
    """All assets, jobs, the schedule and the sensor, over one set of locations."""
    return dg.Definitions(
        assets=TRAINING_ASSETS,
        jobs=[weekly_training_job, publish_bundle_job],
        schedules=[weekly_training_schedule],
        sensors=[publish_pass_bundles],
        resources={"model_factory": resource or ModelFactoryResource()},
    )


@dg.definitions
def defs() -> dg.Definitions:
    return build_definitions()
