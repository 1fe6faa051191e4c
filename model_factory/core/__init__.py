"""Pure-Python core of the Model Factory: no Dagster imports here (ARCHITECTURE §3)."""
