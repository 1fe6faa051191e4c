"""Monday weeks (UTC) from the configured first week."""

import dagster as dg

from model_factory.core.settings import Settings

# day_offset=1 makes weeks start on Monday (Dagster's default is Sunday).
WEEKLY_PARTITIONS = dg.WeeklyPartitionsDefinition(
    start_date=Settings.from_env().start_week, day_offset=1, timezone="UTC"
)
