"""Retention as an operation: ``ckpt prune``, its schedule, and what a reader checks after.

The command (``ckpt prune``), and how to run it daily::

    ckpt prune DB --older-than 30d --keep-last 20 --dry-run   # what would go; changes nothing
    ckpt prune DB --older-than 30d --keep-last 20 --json      # do it, print the result as JSON
    ckpt prune DB --older-than 30d --every 24h                # stay up, prune once a day

    # crontab -e: every day at 03:17, appending the summary to a log
    17 3 * * * cd /srv/app && .venv/bin/ckpt prune /data/checkpoints.sqlite --older-than 30d --keep-last 20 >> /var/log/ckpt-prune.log 2>&1

Prune while the application runs if you must: the write lock is held while the plan is
remade and the rows deleted, then VACUUM rewrites the whole file under its own lock. The
application's writers wait up to their busy timeout (5 s for ``sqlite3.connect``) and then
fail, so schedule it off-peak.

The plan is ``shared.savers.retention``; applying it, ``shared.savers.retention_apply``.
"""  # noqa: E501 -- a crontab line cannot be wrapped

from __future__ import annotations

import hashlib
import sqlite3
from datetime import datetime
from typing import NamedTuple

from shared.savers.inert import split_checkpoint
from shared.savers.retention import (  # the engine, re-exported: see __all__
    DELTA,
    JS_DELTA,
    NO_AGE,
    RECENT,
    SENDS,
    Key,
    PrunePlan,
    RetentionPolicy,
    aware,
    newest_reason,
    plan_prune,
    uuid6_at,
    uuid6_time,
)
from shared.savers.retention_apply import (  # the stages a PruneProgress reports
    COLLECTING,
    COMMITTED,
    DELETING,
    DONE,
    PLANNING,
    ROLLED_BACK,
    SHRUNK,
    TRUNCATING,
    VACUUMING,
    AfterPrune,
    PruneIncomplete,
    PruneProgress,
    PruneResult,
    apply_prune,
    file_bytes,
    prune_now,
)

# --- audit: what a reader checks afterwards, without the planner -----------------------------

class AuditRow(NamedTuple):
    parent: str | None
    ts: datetime  # read from the serialized checkpoint, not from the id
    digest: str  # sha256 of checkpoint blob + metadata: did a kept row change?


def audit_rows(conn: sqlite3.Connection) -> dict[Key, AuditRow]:
    """Every checkpoint with its parent, its own ``ts`` and a digest of its bytes."""
    out = {}
    for t, ns, cid, parent, typ, blob, meta in conn.execute(
            "SELECT thread_id, checkpoint_ns, checkpoint_id, parent_checkpoint_id, type, "
            "checkpoint, metadata FROM checkpoints"):
        ts = aware(datetime.fromisoformat(split_checkpoint(typ, blob)[0]["ts"]))
        out[(t, ns, cid)] = AuditRow(parent, ts, hashlib.sha256(blob + (meta or b"")).hexdigest())
    return out


def audit_counts(conn: sqlite3.Connection) -> dict[str, int]:
    """Row counts, payload bytes (every column of every row), dangling parent links and
    orphaned writes, by plain SQL."""
    q = {
        "checkpoints": "SELECT count(*) FROM checkpoints",
        "writes": "SELECT count(*) FROM writes",
        "payload_bytes": "SELECT (SELECT coalesce(sum(length(thread_id) + length(checkpoint_ns) "
        "+ length(checkpoint_id) + coalesce(length(parent_checkpoint_id), 0) + length(type) "
        "+ length(checkpoint) + length(metadata)), 0) FROM checkpoints) + (SELECT "
        "coalesce(sum(length(thread_id) + length(checkpoint_ns) + length(checkpoint_id) "
        "+ length(task_id) + length(task_path) + 8 + length(channel) + length(type) "
        "+ coalesce(length(value), 0)), 0) FROM writes)",
        "dangling_parent_links": "SELECT count(*) FROM checkpoints c WHERE "
        "parent_checkpoint_id IS NOT NULL AND NOT EXISTS (SELECT 1 FROM checkpoints p WHERE "
        "p.thread_id = c.thread_id AND p.checkpoint_ns = c.checkpoint_ns "
        "AND p.checkpoint_id = c.parent_checkpoint_id)",
        "orphaned_writes": "SELECT count(*) FROM writes w WHERE NOT EXISTS (SELECT 1 FROM "
        "checkpoints c WHERE c.thread_id = w.thread_id AND c.checkpoint_ns = w.checkpoint_ns "
        "AND c.checkpoint_id = w.checkpoint_id)",
    }
    return {name: conn.execute(sql).fetchone()[0] for name, sql in q.items()}


__all__ = [
    "COLLECTING",
    "COMMITTED",
    "DELETING",
    "DELTA",
    "DONE",
    "JS_DELTA",
    "NO_AGE",
    "PLANNING",
    "RECENT",
    "ROLLED_BACK",
    "SENDS",
    "SHRUNK",
    "TRUNCATING",
    "VACUUMING",
    "AfterPrune",
    "AuditRow",
    "PruneIncomplete",
    "PrunePlan",
    "PruneProgress",
    "PruneResult",
    "RetentionPolicy",
    "apply_prune",
    "audit_counts",
    "audit_rows",
    "file_bytes",
    "newest_reason",
    "plan_prune",
    "prune_now",
    "uuid6_at",
    "uuid6_time",
]
