"""Weekly retraining on the week that just closed."""

import dagster as dg

from model_factory.defs.assets import TRAINING_ASSETS

weekly_training_job = dg.define_asset_job(
    "weekly_training",
    selection=TRAINING_ASSETS,
    description="All six stages of one week's train run.",
)

# A weekly partition exists once its week has ended, so Monday 03:00 UTC trains the week just closed.
weekly_training_schedule = dg.build_schedule_from_partitioned_job(
    weekly_training_job,
    hour_of_day=3,
    minute_of_hour=0,
    default_status=dg.DefaultScheduleStatus.RUNNING,
)
