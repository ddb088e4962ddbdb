"""Paced checkpoint traffic with its own clock: the ground truth a decision is timed against.

``LoadGenerator(saver, [Stage(40, 2), Stage(70, 2), Stage(150, 2)])`` writes real
checkpoints through ``saver.put`` (give it an ``InstrumentedSaver`` and the metrics see every
write) from a background thread, paced to each stage's target rate, and records the wall
clock time (``time.time()``, the clock ``MetricsWindow`` uses) of every completed write. So
the true rate of each stage, and the moment a condition began, are known from the writes
themselves, independently of the metrics a decision engine reads::

    with instrumented_sqlite(db) as (saver, metrics):
        load = LoadGenerator(saver, ramp).start()
        engine = DecisionEngine(MetricsWindow(from_registry(metrics.registry)), th)
        first = engine.watch(lambda d: "writes_per_s" in d.fired, timeout_s=20)
        load.join()
        start = load.first_stage_above(100)          # StageResult, measured

``FileSizePoller(db, threshold)`` is the same idea for the file size: a thread that reads the
size on disk every 20 ms and records when it first exceeded ``threshold``.
"""

from __future__ import annotations

import random
import sqlite3
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from langgraph.checkpoint.base import BaseCheckpointSaver, empty_checkpoint
from langgraph.checkpoint.base.id import uuid6

from shared.ops.decide import Decision
from shared.ops.metrics import CheckpointMetrics, InstrumentedSaver
from shared.savers.sqlite import file_bytes, open_sqlite_saver


@dataclass(frozen=True)
class Stage:
    """Write at ``rate`` checkpoints per second for ``seconds``."""

    rate: float
    seconds: float


@dataclass
class StageResult:
    """What a stage really did, from the generator's own timestamps."""

    target_rate: float
    start: float  # wall clock
    end: float
    writes: int

    @property
    def measured_rate(self) -> float:
        return self.writes / (self.end - self.start) if self.end > self.start else 0.0


class LoadGenerator:
    """Writes ``stages`` of paced checkpoints through ``saver`` in a background thread.

    Checkpoints go round-robin to ``threads`` conversation threads, each chained to its
    parent as a graph would; ``payload_bytes`` of seeded random text per checkpoint.
    """

    def __init__(self, saver: BaseCheckpointSaver, stages: Sequence[Stage], *,
                 payload_bytes: int = 256, threads: int = 8, prefix: str = "load",
                 seed: int = 0) -> None:
        if not stages or any(s.rate <= 0 or s.seconds <= 0 for s in stages):
            raise ValueError("every stage needs a positive rate and duration")
        self.saver, self.stages = saver, list(stages)
        rng = random.Random(seed)
        # A few distinct payloads, made once: generating them must not slow the pacing.
        self._payloads = [rng.randbytes(max(1, payload_bytes // 2)).hex()[:payload_bytes]
                          for _ in range(16)]
        self._configs: list[dict[str, Any]] = [
            {"configurable": {"thread_id": f"{prefix}-{i}", "checkpoint_ns": ""}}
            for i in range(threads)]
        self.write_times: list[float] = []
        self.errors: list[str] = []
        self.results: list[StageResult] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="load-generator", daemon=True)

    def start(self) -> LoadGenerator:
        self._thread.start()
        return self

    def stop(self) -> None:
        """End the current stage now; later stages do not run."""
        self._stop.set()

    def join(self, timeout: float | None = None) -> list[StageResult]:
        self._thread.join(timeout)
        if self._thread.is_alive():
            raise RuntimeError("the load generator did not finish in time")
        return self.results

    def __enter__(self) -> LoadGenerator:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
        self.join()

    @property
    def done(self) -> bool:
        """Every stage has run (or ``stop`` ended them)."""
        return self._thread.ident is not None and not self._thread.is_alive()

    @property
    def total_seconds(self) -> float:
        return sum(s.seconds for s in self.stages)

    def _write(self, n: int) -> None:
        k = n % len(self._configs)
        cp = empty_checkpoint()
        cp["id"] = str(uuid6(clock_seq=n))
        cp["channel_values"] = {"doc": self._payloads[n % len(self._payloads)]}
        try:
            self._configs[k] = self.saver.put(self._configs[k], cp,
                                              {"source": "loop", "step": n}, {})
        except sqlite3.Error as exc:  # counted, never hidden; the next write goes on
            self.errors.append(f"{type(exc).__name__}: {exc}")
            return
        self.write_times.append(time.time())

    def _run(self) -> None:
        n = 0
        for stage in self.stages:
            start = time.time()
            before, i = len(self.write_times), 0
            while not self._stop.is_set():
                now = time.time()
                if now >= start + stage.seconds:
                    break
                due = start + i / stage.rate  # behind schedule: write at once, no burst cap
                if due > now:
                    time.sleep(min(due - now, start + stage.seconds - now))
                    continue
                self._write(n)
                n, i = n + 1, i + 1
            end = min(time.time(), start + stage.seconds)
            self.results.append(StageResult(stage.rate, start, end,
                                            sum(start <= t < end for t in
                                                self.write_times[before:])))
            if self._stop.is_set():
                return

    def first_stage_above(self, rate: float) -> StageResult | None:
        """The first stage whose measured rate exceeded ``rate`` (None: none did)."""
        return next((r for r in self.results if r.measured_rate > rate), None)

    def rate_between(self, start: float, end: float) -> float:
        """Writes per second completed in ``[start, end)``, from the recorded times."""
        return sum(start <= t < end for t in self.write_times) / (end - start)


class FileSizePoller:
    """Reads ``file_bytes(path)`` every ``period_s``; records when it first exceeded
    ``threshold`` (``crossed_at``, wall clock) and the size it saw then."""

    def __init__(self, path: Path, threshold: float, period_s: float = 0.02) -> None:
        self.path, self.threshold, self.period_s = Path(path), threshold, period_s
        self.crossed_at: float | None = None
        self.crossed_bytes: int | None = None
        self.polls = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="size-poller", daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            size = file_bytes(self.path) if self.path.exists() else 0
            self.polls += 1
            if size > self.threshold and self.crossed_at is None:
                self.crossed_at, self.crossed_bytes = time.time(), size
            self._stop.wait(self.period_s)

    def __enter__(self) -> FileSizePoller:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


@contextmanager
def instrumented_sqlite(db: Path, **saver_kwargs: Any
                        ) -> Iterator[tuple[InstrumentedSaver, CheckpointMetrics]]:
    """A ``SqliteSaver`` on ``db`` wrapped in ``InstrumentedSaver``; the gauge reads the file."""
    metrics = CheckpointMetrics("sqlite", size_of=lambda: file_bytes(db))
    with open_sqlite_saver(db, **saver_kwargs) as saver:
        yield InstrumentedSaver(saver, metrics), metrics


# --- timing decisions against the ground truth ------------------------------------------------

def first_firing(decisions: Sequence[Decision], rule: str, after: float = float("-inf"),
                 ) -> Decision | None:
    """The first decision at or after ``after`` in which ``rule`` fired."""
    return next((d for d in decisions if rule in d.fired and d.at >= after), None)


def firings_before(decisions: Sequence[Decision], rule: str, moment: float) -> int:
    """How many decisions fired ``rule`` before ``moment``: false alarms."""
    return sum(rule in d.fired and d.at < moment for d in decisions)
