"""The Dagster Definitions of the Model Factory (loaded by workspace.yaml and `dg`)."""

import dagster as dg

from model_factory.defs.assets import TRAINING_ASSETS
from model_factory.defs.backtest import backtest_automation, backtest_job, backtest_summary
from model_factory.defs.pools import training_pool_watch
from model_factory.defs.publishing import publish_bundle_job, publish_pass_bundles
from model_factory.defs.resources import ModelFactoryResource
from model_factory.defs.schedules import weekly_training_job, weekly_training_schedule


def build_definitions(resource: ModelFactoryResource | None = None) -> dg.Definitions:
    """All assets, jobs, the schedule and the sensors, over one set of locations."""
    return dg.Definitions(
        assets=[*TRAINING_ASSETS, backtest_summary],
        jobs=[weekly_training_job, publish_bundle_job, backtest_job],
        schedules=[weekly_training_schedule],
        sensors=[publish_pass_bundles, backtest_automation, training_pool_watch],
        resources={"model_factory": resource or ModelFactoryResource()},
        # One process per run, as the CLI runs weeks: a subprocess per step (the multiprocess
        # default) spent ~5 s importing for each stage of ~1 s. Pools still apply per step.
        executor=dg.in_process_executor,
    )


@dg.definitions
def defs() -> dg.Definitions:
    return build_definitions()
