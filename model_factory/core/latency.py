"""Latency proxy: single-row and batch prediction time of the trained model on this machine.

Measurements vary from run to run, so they only ever go into a report's volatile ``timings``.
"""

from __future__ import annotations

import time

import numpy as np

from model_factory.core.training import TrainedModel


def latency_probe(
    trained: TrainedModel, x: np.ndarray, *, batch_rows: int, repeats: int, nthread: int
) -> dict[str, float]:
    """p50/p99 of ``inplace_predict`` on one row and on a batch (the serving path's call)."""
    if x.shape[0] == 0:
        return {}
    booster = trained.booster
    iterations = (0, trained.best_iteration + 1)
    x = np.ascontiguousarray(x, dtype=np.float32)
    batch = x[np.arange(batch_rows) % x.shape[0]]

    def timed(data: np.ndarray) -> float:
        started = time.perf_counter()
        booster.inplace_predict(data, iteration_range=iterations)
        return time.perf_counter() - started

    for i in range(min(5, repeats)):  # warm-up: first calls allocate
        timed(x[i % x.shape[0] :][:1])
    single = np.array([timed(x[i % x.shape[0] :][:1]) for i in range(repeats)])
    batches = np.array([timed(batch) for _ in range(max(3, repeats // 10))])
    return {
        "latency_single_row_p50_us": float(np.percentile(single, 50) * 1e6),
        "latency_single_row_p99_us": float(np.percentile(single, 99) * 1e6),
        "latency_batch_p50_ms": float(np.percentile(batches, 50) * 1e3),
        "latency_batch_p99_ms": float(np.percentile(batches, 99) * 1e3),
        "latency_batch_rows": float(batch_rows),
        "latency_threads": float(nthread),
        "latency_repeats": float(repeats),
    }
