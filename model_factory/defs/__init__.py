"""Dagster shell over the core: assets, checks, resources, sensors and schedules."""
