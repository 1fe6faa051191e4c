"""Concurrency pools: the stranded-step repair, and the sensor that applies it to daemon runs."""

from __future__ import annotations

import dagster as dg

TRAINING_POOL = "training"  # the XGBoost fit: one slot, so two fits never share the 2 cores
POOLS = (TRAINING_POOL,)  # the pools the training job's steps wait on
SENSOR_NAME = "training_pool_watch"


def release_stranded_steps(instance: dg.DagsterInstance, pools: tuple[str, ...] = POOLS) -> int:
    """Hand a free pool slot to a step left waiting for it; returns how many pools needed it.

    Dagster's SQL event log queues a step after a separate check for free slots, so a slot freed
    (and handed to the queue) between the two goes to nobody: the step then waits forever while
    its run busy-polls (seen with two `model-factory run` processes on one SQLite instance).
    Assigning the oldest waiting step of a pool with a free slot is what freeing the slot would
    have done; the slot rows stay the semaphore, so no two steps ever hold one slot. Racing
    Dagster's own hand-over at worst assigns one step too many, which then waits for the slot
    like any assigned step."""
    storage = instance.event_log_storage
    if not storage.supports_global_concurrency_limits or not hasattr(
        storage, "assign_pending_steps"
    ):
        return 0
    released = 0
    for pool in pools:
        info = storage.get_concurrency_info(pool)
        waiting = [p for p in info.pending_steps if p.assigned_timestamp is None]
        if waiting and storage.has_unassigned_slots(pool):  # type: ignore[attr-defined]
            storage.assign_pending_steps([pool])  # type: ignore[attr-defined]
            released += 1
    return released


@dg.sensor(
    name=SENSOR_NAME,
    minimum_interval_seconds=30,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Hands a free `training` slot to a step Dagster left waiting for it (a race in "
    "its SQL event log); without it such a run would wait forever. Requests no runs.",
)
def training_pool_watch(context: dg.SensorEvaluationContext) -> dg.SkipReason:
    # Runs launched by the daemon (UI, backfills, the schedule) execute in run workers that the
    # CLI's own watch (runner.run_week) does not wrap; this sensor is their watch.
    released = release_stranded_steps(context.instance)
    if released:
        context.log.warning(f"released a stranded step in {released} pool(s)")
        return dg.SkipReason(f"handed a free slot to a stranded step in {released} pool(s)")
    return dg.SkipReason(pools_waiting(context.instance) or "no step waits for a free slot")


def pools_waiting(instance: dg.DagsterInstance, pools: tuple[str, ...] = POOLS) -> str:
    """Which steps wait for which pool and who holds its slots ('' if none waits): a step
    waiting behind a slot a dead run still holds reads as such (Dagster frees it later)."""
    storage = instance.event_log_storage
    if not storage.supports_global_concurrency_limits:
        return ""
    said = []
    for pool in pools:
        info = storage.get_concurrency_info(pool)
        waiting = [
            f"{p.run_id[:8]} {p.step_key}" for p in info.pending_steps if not p.assigned_timestamp
        ]
        if waiting:
            held = [f"{c.run_id[:8]} {c.step_key}" for c in info.claimed_slots] or ["nobody"]
            said.append(
                f"{pool}: {', '.join(waiting)} waiting; its slot(s) held by {', '.join(held)}"
            )
    return "; ".join(said)
