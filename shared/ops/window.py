"""A sliding window over live checkpoint metrics: rates and quantiles, as Prometheus computes them.

``MetricsWindow(sources, window_s=5)`` samples one or more sources (a registry in this
process, or /metrics URLs of other processes: their counters are summed, as
``sum(rate(...))`` sums targets) and answers for the last ``window_s`` seconds: writes/s,
error rate, p50/p99 write latency (``histogram_quantile``'s linear interpolation over the
bucket increases) and the database size.
"""

from __future__ import annotations

import math
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from typing import Any

from prometheus_client import CollectorRegistry

from shared.ops.metrics import WRITE_OPS, Samples, registry_samples, scrape

Source = Callable[[], Samples]


def from_registry(registry: CollectorRegistry) -> Source:
    return lambda: registry_samples(registry)


def from_url(url: str, timeout: float = 2.0) -> Source:
    return lambda: scrape(url, timeout)


@dataclass
class Totals:
    """Cumulative counters at one moment, summed over every source."""

    t: float
    writes: float = 0.0
    errors: float = 0.0
    locked: float = 0.0
    buckets: dict[float, float] = field(default_factory=dict)  # le -> cumulative count
    db_bytes: float = 0.0


def totals_of(samples: Iterable[Samples], t: float) -> Totals:
    out = Totals(t)
    for s in samples:
        for (name, labels), value in s.items():
            lab = dict(labels)
            if name == "ckpt_writes_total":
                out.writes += value
            elif name == "ckpt_write_errors_total":
                out.errors += value
                out.locked += value if lab.get("reason") == "locked" else 0.0
            elif name == "ckpt_operation_seconds_bucket" and lab.get("operation") in WRITE_OPS:
                le = float(lab["le"])
                out.buckets[le] = out.buckets.get(le, 0.0) + value
            elif name == "ckpt_database_bytes":
                out.db_bytes = max(out.db_bytes, value)  # one file, seen by every process
    return out


def histogram_quantile(q: float, buckets: dict[float, float]) -> float | None:
    """Prometheus' ``histogram_quantile`` over cumulative bucket counts (``le`` -> count)."""
    edges = sorted(buckets)
    if not edges or buckets[edges[-1]] <= 0:
        return None
    rank = q * buckets[edges[-1]]
    lower_edge, lower_count = 0.0, 0.0
    for edge in edges:
        count = buckets[edge]
        if count >= rank:
            if math.isinf(edge):
                return lower_edge  # above the largest finite bucket: its upper bound
            width = count - lower_count
            return lower_edge + (edge - lower_edge) * ((rank - lower_count) / width
                                                       if width else 1.0)
        lower_edge, lower_count = edge, count
    return lower_edge


@dataclass
class WindowStats:
    """What the last ``window_s`` seconds looked like. ``empty``: no writes and no errors."""

    window_s: float
    span_s: float
    writes: float
    errors: float
    locked: float
    writes_per_s: float
    error_rate: float
    p50_ms: float | None
    p99_ms: float | None
    db_bytes: float

    @property
    def empty(self) -> bool:
        return self.span_s <= 0 or (self.writes + self.errors) == 0

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "empty": self.empty}


class MetricsWindow:
    """Keeps samples of ``sources`` for ``window_s`` seconds and summarises them."""

    def __init__(self, sources: Source | list[Source], window_s: float = 5.0) -> None:
        if window_s <= 0:
            raise ValueError(f"window_s must be positive, got {window_s}")
        self.sources = sources if isinstance(sources, list) else [sources]
        self.window_s = window_s
        self.history: deque[Totals] = deque()
        # A dashboard thread and a decision loop may sample one window at the same time.
        self._lock = threading.Lock()

    def sample(self, now: float | None = None) -> Totals:
        with self._lock:  # held while scraping, so the history stays in time order
            now = time.time() if now is None else now  # wall clock: comparable across processes
            totals = totals_of((source() for source in self.sources), now)
            self.history.append(totals)
            while len(self.history) > 2 and self.history[1].t <= now - self.window_s:
                self.history.popleft()  # keep one sample at or before the window's start
        return totals

    def stats(self) -> WindowStats:
        with self._lock:
            history = list(self.history)
        if not history:
            return WindowStats(self.window_s, 0.0, 0, 0, 0, 0.0, 0.0, None, None, 0.0)
        new = history[-1]
        old = next((s for s in reversed(history) if s.t <= new.t - self.window_s), history[0])
        span = new.t - old.t
        writes = max(0.0, new.writes - old.writes)  # a restarted process resets its counters
        errors = max(0.0, new.errors - old.errors)
        locked = max(0.0, new.locked - old.locked)
        delta = {le: max(0.0, c - old.buckets.get(le, 0.0)) for le, c in new.buckets.items()}
        p50, p99 = histogram_quantile(0.5, delta), histogram_quantile(0.99, delta)
        attempts = writes + errors
        return WindowStats(
            window_s=self.window_s, span_s=span, writes=writes, errors=errors, locked=locked,
            writes_per_s=writes / span if span > 0 else 0.0,
            error_rate=errors / attempts if attempts else 0.0,
            p50_ms=p50 * 1000 if p50 is not None else None,
            p99_ms=p99 * 1000 if p99 is not None else None, db_bytes=new.db_bytes)
