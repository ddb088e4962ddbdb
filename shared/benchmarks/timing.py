"""Minimal timing for the benchmarks: warm-up, collector paused, percentiles, interleaving.

Kept here on purpose (small and self-contained); ``shared/bench.py`` is meant to be the
project's one set of timing helpers, and these should move to it.
"""

from __future__ import annotations

import gc
import math
import statistics
import time
from collections.abc import Callable
from typing import Any


def percentile(values: list[float], q: float) -> float:
    """The q-th percentile (0-100) by nearest rank; 0.0 for no values."""
    if not values:
        return 0.0
    ordered = sorted(values)
    rank = max(0, min(len(ordered) - 1, math.ceil(q / 100 * len(ordered)) - 1))
    return ordered[rank]


def sample_ms(run: Callable[[], object], runs: int, warmup: int = 2) -> list[float]:
    """``runs`` timings of ``run()`` in ms, after ``warmup`` untimed calls, collector paused."""
    for _ in range(warmup):
        run()
    times = []
    collecting = gc.isenabled()
    gc.collect()
    gc.disable()
    try:
        for _ in range(runs):
            start = time.perf_counter()
            run()
            times.append((time.perf_counter() - start) * 1000)
    finally:
        if collecting:
            gc.enable()
    return times


def spread(values: list[float]) -> dict[str, float]:
    """Median, min and max of per-round figures: the figure and how much it moved."""
    return {"median": statistics.median(values), "min": min(values), "max": max(values)}


def interleaved(candidates: dict[str, Callable[[], Any]], rounds: int) -> dict[str, list[Any]]:
    """Call each candidate once per round, in alternating order (AB, BA, AB...).

    Returns each candidate's results, one per round, so that a slow moment of the machine
    falls on every candidate alike rather than on whichever ran then.
    """
    names = list(candidates)
    results: dict[str, list[Any]] = {name: [] for name in names}
    for r in range(rounds):
        for name in names if r % 2 == 0 else reversed(names):
            results[name].append(candidates[name]())
    return results
