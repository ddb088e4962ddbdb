"""Several OS processes writing checkpoints into one SQLite file: the limit that matters.

``measure_process_writers(db, processes=4, seconds=1.5, busy_timeout_ms=5000)`` forks
``processes`` writers that start together and call ``SqliteSaver.put`` in a loop for
``seconds``; each records every write's latency and every "database is locked" error.
Milestone 2 prints the table.

Milestone 3 watches the same contention from outside: ``start_process_writers(...,
serve=True)`` gives each writer an ``InstrumentedSaver`` and its own /metrics endpoint on
127.0.0.1 (``fleet.urls``), optionally paces it (``rate_per_process``), and records the wall
clock time of its first lock error, so a decision engine scraping those URLs can be timed
against when the errors really began::

    with start_process_writers(db, 4, seconds=3, busy_timeout_ms=1, serve=True) as fleet:
        window = MetricsWindow([from_url(u) for u in fleet.urls])
        ...                                   # sample while they write
    stats = fleet.stats()                     # WriterStats, first_lock_error_at included
"""

from __future__ import annotations

import json
import random
import sqlite3
import statistics
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from langgraph.checkpoint.base import Checkpoint, empty_checkpoint
from langgraph.checkpoint.base.id import uuid6

from shared.bench import pause_tracing, percentile
from shared.proc import child_ready, close_gate, fork_child, join_children, open_gate
from shared.savers import open_sqlite_saver

SQLITE_DEFAULT_BUSY_TIMEOUT_MS = 5000  # sqlite3.connect(timeout=5.0), what SqliteSaver gets
SERVE_GRACE_S = 60.0  # a serving writer waits this long for the parent's stop, then exits


@dataclass
class WriterStats:
    """What ``processes`` writers achieved together on one file."""

    processes: int
    busy_timeout_ms: int
    seconds: float
    writes: int
    lock_errors: int
    other_errors: int
    writes_per_s: float
    p50_ms: float
    p99_ms: float
    first_lock_error_at: float | None = None  # wall clock (time.time()), earliest writer

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def write_json(path: Path, data: dict[str, Any]) -> None:
    """A writer process's results, for its parent (written whole, then renamed)."""
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(data))
    tmp.replace(path)  # the parent never reads a half-written file


def small_checkpoint(payload_bytes: int) -> Checkpoint:
    """A fresh checkpoint with a new uuid6 id and one ``payload_bytes`` string channel."""
    cp = empty_checkpoint()
    cp["id"] = str(uuid6())
    cp["channel_values"] = {"doc": "x" * payload_bytes}
    return cp


def _writer(db: str, out: str, gate: str, seconds: float, busy_timeout_ms: int,
            payload_bytes: int, rate: float | None = None, serve: bool = False,
            stop_file: str | None = None, seed: int = 0) -> None:
    """One writer process: ``put`` small checkpoints until the time is up."""
    latencies: list[float] = []
    locked = other = 0
    first_locked: float | None = None
    thread = f"writer-{Path(out).stem}"
    server = None
    with open_sqlite_saver(db, busy_timeout_ms=busy_timeout_ms) as inner:
        saver: Any = inner
        if serve:  # imported here: Milestone 2's plain writers need no Prometheus
            from shared.ops.metrics import CheckpointMetrics, InstrumentedSaver, serve_metrics
            from shared.savers.sqlite import file_bytes

            metrics = CheckpointMetrics("sqlite", size_of=lambda: file_bytes(db))
            saver = InstrumentedSaver(inner, metrics, measure_size=False)
            server = serve_metrics(metrics.registry)
            write_json(Path(out + ".url"), {"url": server.url})
        config: dict[str, Any] = {"configurable": {"thread_id": thread, "checkpoint_ns": ""}}
        start_at = child_ready(gate, seed)  # every writer connected: all start together
        pause_tracing()  # timed from here: no coverage tracer in the way (see shared.bench)
        while time.time() < start_at:
            time.sleep(0.001)
        rng = random.Random(seed)
        due = start_at + (rng.expovariate(rate) if rate else 0.0)
        while (now := time.time()) < start_at + seconds:
            if rate is not None and due > now:
                time.sleep(due - now)
                continue
            if rate is not None:  # independent clients: Poisson arrivals, seeded per writer
                due += rng.expovariate(rate)
            cp = small_checkpoint(payload_bytes)
            t0 = time.perf_counter()
            try:
                config = saver.put(config, cp, {"source": "loop", "step": len(latencies)}, {})
                latencies.append((time.perf_counter() - t0) * 1000)
            except sqlite3.OperationalError as exc:
                inner.conn.rollback()
                if "locked" in str(exc) or "busy" in str(exc):
                    locked += 1
                    first_locked = first_locked or time.time()
                else:
                    other += 1
        write_json(Path(out), {"latencies": latencies, "locked": locked, "other": other,
                                "first_locked": first_locked})
        if server is not None:  # keep /metrics up until the parent has taken its last scrape
            deadline = time.time() + SERVE_GRACE_S
            while stop_file and not Path(stop_file).exists() and time.time() < deadline:
                time.sleep(0.02)
            server.close()


@dataclass
class WriterFleet:
    """Writer processes started by ``start_process_writers``; ``close()`` stops them all."""

    db: Path
    processes: int
    seconds: float
    busy_timeout_ms: int
    start_at: float  # wall clock when every writer begins
    outs: list[Path]
    stop_file: Path
    children: list[Any]
    urls: list[str] = field(default_factory=list)
    gate: str = ""

    @property
    def end_at(self) -> float:
        return self.start_at + self.seconds

    def wait_written(self, timeout: float = 60.0) -> None:
        """Wait until every writer has finished writing (its counters are final)."""
        deadline = time.time() + max(0.0, self.end_at - time.time()) + timeout
        while not all(o.exists() for o in self.outs):
            if time.time() > deadline or not any(c.is_alive() for c in self.children):
                return
            time.sleep(0.01)

    def close(self) -> None:
        """Let the writers finish (and stop serving), then join; kill any that hang."""
        self.stop_file.touch()
        join_children(self.children, timeout=max(0.0, self.end_at - time.time()) + 60)
        if self.gate:
            close_gate(self.gate, self.processes)

    def __enter__(self) -> WriterFleet:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def stats(self) -> WriterStats:
        """The writers' own measurements (call after ``close``); the files are removed."""
        results = [json.loads(o.read_text()) for o in self.outs if o.exists()]
        for o in self.outs:
            for p in (o, Path(f"{o}.url")):
                p.unlink(missing_ok=True)
        self.stop_file.unlink(missing_ok=True)
        if len(results) != self.processes:
            raise RuntimeError(f"{self.processes - len(results)} of {self.processes} writer "
                               "processes died")
        latencies = [v for r in results for v in r["latencies"]]
        firsts = [r["first_locked"] for r in results if r.get("first_locked")]
        return WriterStats(
            processes=self.processes, busy_timeout_ms=self.busy_timeout_ms,
            seconds=self.seconds, writes=len(latencies),
            lock_errors=sum(r["locked"] for r in results),
            other_errors=sum(r["other"] for r in results),
            writes_per_s=len(latencies) / self.seconds,
            p50_ms=statistics.median(latencies) if latencies else 0.0,
            p99_ms=percentile(latencies, 99), first_lock_error_at=min(firsts, default=None))


def start_process_writers(db: Path, processes: int, seconds: float = 1.5,
                          busy_timeout_ms: int = SQLITE_DEFAULT_BUSY_TIMEOUT_MS,
                          payload_bytes: int = 1024, *, rate_per_process: float | None = None,
                          serve: bool = False, start_delay_s: float = 0.05) -> WriterFleet:
    """Fork ``processes`` writers on ``db`` that start together ``start_delay_s`` after the
    last one is connected (each says so; see ``shared.proc.open_gate``).

    With ``serve`` each one serves its metrics; this returns once every URL is known. With
    ``rate_per_process`` each writes at that mean rate, Poisson arrivals (independent
    clients), instead of flat out.
    """
    if rate_per_process is not None and not rate_per_process > 0:
        raise ValueError(f"rate_per_process must be positive, got {rate_per_process}")
    with open_sqlite_saver(db):  # create the tables once, before the writers race
        pass
    outs = [db.parent / f"{db.stem}-w{processes}-{busy_timeout_ms}-{i}.json"
            for i in range(processes)]
    stop_file = db.parent / f"{db.stem}-w{processes}-{busy_timeout_ms}.stop"
    stop_file.unlink(missing_ok=True)
    gate = str(db.parent / f"{db.stem}-w{processes}-{busy_timeout_ms}.gate")
    close_gate(gate, processes)  # a killed earlier run's files
    children = [fork_child(_writer, str(db), str(o), gate, seconds, busy_timeout_ms,
                           payload_bytes, rate_per_process, serve, str(stop_file), i)
                for i, o in enumerate(outs)]
    start_at = open_gate(gate, children, lead_s=start_delay_s)
    fleet = WriterFleet(db, processes, seconds, busy_timeout_ms, start_at, outs, stop_file,
                        children, gate=gate)
    if serve:
        deadline = time.time() + 30
        ready = [Path(f"{o}.url") for o in outs]
        while not all(p.exists() for p in ready):
            if time.time() > deadline or not all(c.is_alive() for c in children):
                fleet.close()
                raise RuntimeError("a writer process did not start its /metrics endpoint")
            time.sleep(0.01)
        fleet.urls = [json.loads(p.read_text())["url"] for p in ready]
    return fleet


def measure_process_writers(db: Path, processes: int, seconds: float = 1.5,
                            busy_timeout_ms: int = SQLITE_DEFAULT_BUSY_TIMEOUT_MS,
                            payload_bytes: int = 1024) -> WriterStats:
    """Fork ``processes`` writers on ``db``; they start together and write for ``seconds``."""
    with start_process_writers(db, processes, seconds, busy_timeout_ms, payload_bytes) as fleet:
        pass
    return fleet.stats()
