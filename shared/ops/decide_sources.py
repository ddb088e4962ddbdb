"""Where ``ckpt decide`` gets its figures: live /metrics endpoints, or a database file.

``decide_urls`` scrapes every URL (summed, as ``sum(rate())``), waits the window and scrapes
again. ``decide_file`` reads a SqliteSaver file read-only: its size on disk, and the write
rate over the last window from the checkpoint ids, which are uuid6 and carry their creation
time. A file keeps no record of failed writes, so the error rate is reported as not
observed there.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from rich.console import Console

from shared.errors import CheckpointError
from shared.infra.urls import mask_url
from shared.ops.decide import Decision, Thresholds, decide
from shared.ops.files import open_checkpoint_db
from shared.ops.metrics import Samples, scrape
from shared.ops.window import MetricsWindow, Source, WindowStats
from shared.savers.retention import uuid6_at, uuid6_time
from shared.savers.sqlite import file_bytes

NO_ERRORS_IN_FILE = ("a database file keeps no record of failed writes: run ckpt decide "
                     "against the service's /metrics URL to judge lock errors")


def _checked_source(url: str) -> Source:
    def source() -> Samples:
        samples = scrape(url)
        if not any(name == "ckpt_writes_total" for name, _ in samples):
            raise CheckpointError(f"{mask_url(url)} serves Prometheus metrics but no "
                                  "ckpt_writes_total: "
                                  "wrap the service's saver in InstrumentedSaver and serve "
                                  "its registry there.")
        return samples
    return source


def decide_urls(urls: list[str], window_s: float, th: Thresholds,
                console: Console | None = None) -> Decision:
    """Scrape every URL (summed, as ``sum(rate())``), wait ``window_s``, scrape again, decide."""
    window = MetricsWindow([_checked_source(u) for u in urls], window_s)
    window.sample()
    if console is not None:
        with console.status(f"watching {len(urls)} endpoint(s) for {window_s:g} s..."):
            time.sleep(window_s)
    else:
        time.sleep(window_s)
    window.sample()
    decision = decide(window.stats(), th.with_(window_s=window_s))
    decision.inputs["source"] = {"kind": "metrics", "urls": [mask_url(u) for u in urls]}
    return decision


def file_window(path: Path, window_s: float, now: float | None = None,
                ) -> tuple[WindowStats, dict[str, Any]]:
    """The last ``window_s`` seconds of a database file, dated by its checkpoint ids.

    Writes are counted as the metrics count them: each checkpoint (a ``put``) plus each
    task's batch of writes (a ``put_writes``), dated by the checkpoint id they belong to.
    Returns the stats and what was counted (puts, put_writes, the newest checkpoint's age).
    """
    now = time.time() if now is None else now
    lower = uuid6_at(datetime.fromtimestamp(now - window_s, UTC))
    since = datetime.fromtimestamp(now - window_s, UTC)
    conn = open_checkpoint_db(path, other="a /metrics URL")
    try:  # the string bound uses the primary key; uuid6_time drops ids that are not uuid6
        ids = [r[0] for r in conn.execute(
            "SELECT checkpoint_id FROM checkpoints WHERE checkpoint_id >= ?", (lower,))]
        batches = [r[2] for r in conn.execute(
            "SELECT DISTINCT thread_id, checkpoint_ns, checkpoint_id, task_id FROM writes "
            "WHERE checkpoint_id >= ?", (lower,))]
        newest = conn.execute("SELECT max(checkpoint_id) FROM checkpoints").fetchone()[0]
    finally:
        conn.close()
    puts = sum((t := uuid6_time(i)) is not None and t >= since for i in ids)
    put_writes = sum((t := uuid6_time(i)) is not None and t >= since for i in batches)
    writes = float(puts + put_writes)
    newest_at = uuid6_time(newest) if newest else None
    counted = {"puts": puts, "put_writes": put_writes, "newest_checkpoint_age_s":
               now - newest_at.timestamp() if newest_at else None}
    return WindowStats(window_s=window_s, span_s=window_s, writes=writes, errors=0.0, locked=0.0,
                       writes_per_s=writes / window_s, error_rate=0.0, p50_ms=None,
                       p99_ms=None, db_bytes=float(file_bytes(path))), counted


def decide_file(path: Path, window_s: float, th: Thresholds) -> Decision:
    """Decide on a database file: size from disk, writes from ids; errors not observable."""
    stats, counted = file_window(path, window_s)
    decision = decide(stats, th.with_(window_s=window_s), {"error_rate": NO_ERRORS_IN_FILE})
    decision.inputs["source"] = {"kind": "sqlite_file", "path": str(path), **counted}
    return decision


# --- the command -------------------------------------------------------------------------------
