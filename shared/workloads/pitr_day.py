"""A time-scaled "day" of chat traffic for the point-in-time recovery lesson (5.6).

    with mistake_day(url, wd, hour_s=1.0, backup_hour=2, mistake_hour=18) as day:
        day.info, day.target, day.traffic.ledger, day.reference   # then restore and compare

``live_chat`` writes all day. In ``backup_hour`` a base backup is taken while it writes; in
``mistake_hour`` a bad prune deletes every thread in one transaction, and the server clock
read inside it, before its COMMIT, is the recovery target. ``reference`` is a saver on a
REPEATABLE READ snapshot of the primary as it was before the prune: it sees every commit
whose timestamp is before the target, because it is taken only once every transaction that
was still running at the target has ended (a commit's timestamp is taken before its WAL is
flushed, which with fsync on takes milliseconds, and before it becomes visible).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import psycopg

from shared.errors import CheckpointError
from shared.ops import pitr
from shared.ops.backup import snapshot_view
from shared.workloads.chat_ledger import ChatTraffic, live_chat

BAD_PRUNE = ("DELETE FROM checkpoint_writes", "DELETE FROM checkpoint_blobs",
             "DELETE FROM checkpoints")


@dataclass
class Day:
    info: pitr.BackupInfo
    target: datetime  # just before the mistake: inside its transaction, before COMMIT
    traffic: ChatTraffic
    reference: Any  # PostgresSaver on the primary's snapshot before the mistake


def _settle(url: str, running: list[str], timeout: float = 10.0) -> None:
    """Wait until the transactions in ``running`` (xid8 as text) are no longer in progress."""
    with psycopg.connect(url, autocommit=True) as conn:
        deadline = time.monotonic() + timeout
        while conn.execute("SELECT coalesce(bool_or(pg_xact_status(x) = 'in progress'), false) "
                           "FROM unnest(%s::xid8[]) x", (running,)).fetchone()[0]:
            if time.monotonic() > deadline:
                raise CheckpointError(f"Transactions {running} still ran {timeout:g} s after the "
                                      "recovery target: cannot take the reference snapshot.")
            time.sleep(0.005)


@contextmanager
def mistake_day(url: str, wd: Path, hour_s: float, backup_hour: int, mistake_hour: int,
                workers: int = 2) -> Iterator[Day]:
    """A day of 24 "hours" of ``hour_s`` seconds; the block runs after the day, with the
    archive flushed and the reference snapshot still open."""
    from langgraph.checkpoint.postgres import PostgresSaver

    from shared.savers.serde import graph_serde

    def until(hour: int) -> None:
        time.sleep(max(0.0, start + hour * hour_s - time.monotonic()))

    with live_chat(url, workers) as traffic, psycopg.connect(url) as mistake:
        start = time.monotonic()
        until(backup_hour)
        info = pitr.base_backup(url, wd / "base")  # while the traffic writes
        until(mistake_hour)
        for statement in BAD_PRUNE:  # one transaction: every thread gone at once
            mistake.execute(statement)
        target = mistake.execute("SELECT clock_timestamp()").fetchone()[0]
        running = mistake.execute("SELECT ARRAY(SELECT x::text FROM pg_snapshot_xip("
                                  "pg_current_snapshot()) x)").fetchone()[0]
        _settle(url, running)  # every commit stamped before the target is visible now
        with snapshot_view(url) as before:  # sees everything but the uncommitted prune
            mistake.commit()
            until(24)  # the day goes on
            traffic.stop.set()
            pitr.flush_archive(url)  # the WAL with every commit so far is archived
            yield Day(info, target, traffic, PostgresSaver(before.conn, serde=graph_serde()))


__all__ = ["BAD_PRUNE", "Day", "mistake_day"]
