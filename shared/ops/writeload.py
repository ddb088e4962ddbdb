"""Several OS processes writing checkpoints into one SQLite file: the limit that matters.

``measure_process_writers(db, processes=4, seconds=1.5, busy_timeout_ms=5000)`` forks
``processes`` writers that start together and call ``SqliteSaver.put`` in a loop for
``seconds``; each records every write's latency and every "database is locked" error.
Milestone 2 prints the table; Milestone 3 reuses it to raise real lock errors.
"""

from __future__ import annotations

import json
import math
import sqlite3
import statistics
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from langgraph.checkpoint.base import empty_checkpoint
from langgraph.checkpoint.base.id import uuid6

from shared.proc import fork_child
from shared.savers import open_sqlite_saver

SQLITE_DEFAULT_BUSY_TIMEOUT_MS = 5000  # sqlite3.connect(timeout=5.0), what SqliteSaver gets


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

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def percentile(values: list[float], q: float) -> float:
    """The q-th percentile (0-100) by nearest rank; 0.0 for no values."""
    if not values:
        return 0.0
    ordered = sorted(values)
    rank = max(0, min(len(ordered) - 1, math.ceil(q / 100 * len(ordered)) - 1))
    return ordered[rank]


def _writer(db: str, out: str, start_at: float, seconds: float, busy_timeout_ms: int,
            payload_bytes: int) -> None:
    """One writer process: ``put`` small checkpoints until the time is up."""
    latencies: list[float] = []
    locked = other = 0
    thread = f"writer-{Path(out).stem}"
    with open_sqlite_saver(db, busy_timeout_ms=busy_timeout_ms) as saver:
        config: dict[str, Any] = {"configurable": {"thread_id": thread, "checkpoint_ns": ""}}
        while time.time() < start_at:
            time.sleep(0.001)
        while time.time() < start_at + seconds:
            cp = empty_checkpoint()
            cp["id"] = str(uuid6())
            cp["channel_values"] = {"doc": "x" * payload_bytes}
            t0 = time.perf_counter()
            try:
                config = saver.put(config, cp, {"source": "loop", "step": len(latencies)}, {})
                latencies.append((time.perf_counter() - t0) * 1000)
            except sqlite3.OperationalError as exc:
                saver.conn.rollback()
                if "locked" in str(exc) or "busy" in str(exc):
                    locked += 1
                else:
                    other += 1
    Path(out).write_text(json.dumps({"latencies": latencies, "locked": locked, "other": other}))


def measure_process_writers(db: Path, processes: int, seconds: float = 1.5,
                            busy_timeout_ms: int = SQLITE_DEFAULT_BUSY_TIMEOUT_MS,
                            payload_bytes: int = 1024) -> WriterStats:
    """Fork ``processes`` writers on ``db``; they start together and write for ``seconds``."""
    with open_sqlite_saver(db):  # create the tables once, before the writers race
        pass
    outs = [db.parent / f"{db.stem}-w{processes}-{busy_timeout_ms}-{i}.json"
            for i in range(processes)]
    start_at = time.time() + 0.3  # leave the forks time to open their connections
    children = [fork_child(_writer, str(db), str(o), start_at, seconds, busy_timeout_ms,
                           payload_bytes) for o in outs]
    for child in children:
        child.join(timeout=seconds + 60)
        if child.is_alive():
            child.kill()
            child.join()
    results = [json.loads(o.read_text()) for o in outs if o.exists()]
    for o in outs:
        o.unlink(missing_ok=True)
    if len(results) != processes:
        raise RuntimeError(f"{processes - len(results)} of {processes} writer processes died")
    latencies = [v for r in results for v in r["latencies"]]
    return WriterStats(
        processes=processes, busy_timeout_ms=busy_timeout_ms, seconds=seconds,
        writes=len(latencies), lock_errors=sum(r["locked"] for r in results),
        other_errors=sum(r["other"] for r in results),
        writes_per_s=len(latencies) / seconds,
        p50_ms=statistics.median(latencies) if latencies else 0.0,
        p99_ms=percentile(latencies, 99))
