"""What the benchmarks add to ``shared.bench``: whole runs interleaved round by round, and
the median with its spread over rounds."""

from __future__ import annotations

import statistics
from collections.abc import Callable
from typing import Any

from shared.bench import time_calls


def sample_ms(run: Callable[[], object], runs: int, warmup: int = 2) -> list[float]:
    """``runs`` wall-clock timings of ``run()`` in ms (``shared.bench.time_calls``)."""
    return time_calls(run, runs, warmup)


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
