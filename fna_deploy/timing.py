"""The one timing harness: a host clock, CUDA events, interleaved rounds and their summary.

Used by ``fna-deploy bench`` (every backend) and by the scripts under scripts/ that time things
bench does not (single ops, device sweeps), so every number in the project is taken the same way.
"""

from __future__ import annotations

import statistics
import time
from typing import Any, Callable

import numpy as np

Timer = Callable[[Callable[[], Any]], float]


def host_timer(run: Callable[[], Any]) -> float:
    """Milliseconds of ``run()`` on the host clock (``run`` must return once its work is done)."""
    started = time.perf_counter()
    run()
    return (time.perf_counter() - started) * 1e3


def cuda_event_timer(run: Callable[[], Any]) -> float:
    """Milliseconds of ``run()`` on the GPU between two CUDA events, from an idle device."""
    import torch

    torch.cuda.synchronize()
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    run()
    end.record()
    end.synchronize()
    return start.elapsed_time(end)


def time_interleaved(runs: dict[str, Callable[[], Any]], iters: int, timer: Timer = host_timer) -> dict[str, list[float]]:
    """``iters`` rounds, each timing every run once in order: per key, the list of milliseconds."""
    times: dict[str, list[float]] = {k: [] for k in runs}
    for _ in range(iters):
        for key, run in runs.items():
            times[key].append(timer(run))
    return times


def summary(values: list[float]) -> dict[str, float]:
    """median_ms, p90_ms, min_ms of a list of milliseconds."""
    return {"median_ms": statistics.median(values), "p90_ms": float(np.percentile(values, 90)), "min_ms": min(values)}


def time_call(run: Callable[[], Any], *, warmup: int = 1, iters: int = 5, timer: Timer = host_timer) -> dict[str, float]:
    """Warm ``run`` up ``warmup`` times, time it ``iters`` times: :func:`summary` of the times."""
    for _ in range(warmup):
        run()
    return summary(time_interleaved({"run": run}, iters, timer)["run"])
