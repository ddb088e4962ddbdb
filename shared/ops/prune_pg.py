"""``ckpt prune postgresql://...``: retention on a PostgresSaver database, as an operation.

    ckpt prune postgresql://app:secret@db:5432/agents --older-than 30d --keep-last 20 --dry-run
    ckpt prune postgresql://app:secret@db:5432/agents --older-than 30d --keep-last 20 --json
    ckpt prune "$DATABASE_URL" --older-than 30d --keep-last 20 --batch-size 500 --lock-timeout 2000

``prune_url`` is what the command runs (and what the lessons call): connect (one sentence
with the password masked if the URL, the server or the credentials are wrong), check the
tables, then ``shared.savers.retention_pg.prune_pg``: plan once, delete in short batched
transactions with a lock timeout, retry a batch that met a lock, remove freed blobs and
orphaned writes, plain VACUUM. Safe while the application writes; run it off-peak anyway,
since it reads every checkpoint id once.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime

import psycopg
from psycopg.rows import tuple_row
from rich.console import Console
from rich.table import Table

from shared.errors import CheckpointError
from shared.infra.postgres import check_url
from shared.infra.urls import mask_url, redact
from shared.savers.retention import RetentionPolicy, aware
from shared.savers.retention_pg import (
    PgProgress,
    PgPruneResult,
    missing_tables,
    prune_pg,
)


@contextmanager
def connect_checkpoint_db(url: str) -> Iterator[psycopg.Connection]:
    """An autocommit connection to a database holding PostgresSaver's tables, or one
    sentence saying what is wrong (password masked)."""
    check_url(url)
    try:
        conn = psycopg.Connection.connect(url, autocommit=True, prepare_threshold=0,
                                          connect_timeout=5)
    except psycopg.Error as exc:
        reason = redact(" ".join(str(exc).split()) or type(exc).__name__, url)
        raise CheckpointError(f"Could not connect to {mask_url(url)} ({reason}): check the URL, "
                              "the credentials, the server and the network; nothing was "
                              "changed.") from None
    with conn:
        if missing := missing_tables(conn):
            raise CheckpointError(f"{mask_url(url)} has no LangGraph checkpoint tables (no "
                                  f"{', '.join(missing)}): it is not a PostgresSaver database, "
                                  "or setup() never ran on it; nothing was changed.")
        yield conn


def prune_url(url: str, policy: RetentionPolicy, thread_ids: Sequence[str] | None = None, *,
              now: datetime | None = None, dry_run: bool = False, batch_size: int = 500,
              lock_timeout_ms: int = 2000, vacuum: bool = True,
              on_batch: Callable[[int, int], object] | None = None,
              progress: PgProgress | None = None) -> PgPruneResult:
    """``ckpt prune URL``: the whole run on ``url``; a database error becomes one sentence."""
    if batch_size < 1 or lock_timeout_ms < 1:
        raise CheckpointError("--batch-size and --lock-timeout must be at least 1 (e.g. "
                              "--batch-size 500 --lock-timeout 2000).")
    progress = progress if progress is not None else PgProgress()
    with connect_checkpoint_db(url) as conn:
        if thread_ids:
            known = {r[0] for r in conn.execute("SELECT DISTINCT thread_id FROM checkpoints "
                                                "WHERE thread_id = ANY(%s)", (list(thread_ids),))}
            if missing := [t for t in thread_ids if t not in known]:
                raise CheckpointError(f"Thread {missing[0]!r} has no checkpoints in "
                                      f"{mask_url(url)}: nothing was changed.")
        try:
            return prune_pg(conn, policy, thread_ids, now=now, dry_run=dry_run,
                            batch_size=batch_size, lock_timeout_ms=lock_timeout_ms,
                            vacuum=vacuum, on_batch=on_batch, progress=progress)
        except psycopg.Error as exc:
            reason = redact(" ".join(str(exc).split()) or type(exc).__name__, url)
            fix = ("GRANT SELECT, UPDATE, DELETE ON the checkpoint tables to this role"
                   if isinstance(exc, psycopg.errors.InsufficientPrivilege)
                   else "check the server and the network")
            raise CheckpointError(f"PostgreSQL failed during the prune of {mask_url(url)} "
                                  f"({reason}): {progress.done_text()}; {fix}, then run the "
                                  "same prune again to finish.") from None


def print_pg_result(console: Console, url: str, result: PgPruneResult) -> None:
    verb = "would delete" if result.dry_run else "deleted"
    table = Table(title=f"ckpt prune {mask_url(url)}"
                  f"{' (dry run: nothing changed)' if result.dry_run else ''}"
                  f" — {result.policy.describe()}", title_justify="left")
    table.add_column("")
    table.add_column("", justify="right")
    before, after = result.table_bytes_before, result.table_bytes_after
    rows = [*result.count_rows(), (f"blobs {verb}", f"{result.blobs_deleted:,}")]
    rows += [("batches (retried)", f"{result.batches:,} ({result.retries:,})"),
             ("table bytes", f"{sum(before.values()):,} → {sum(after.values()):,}"),
             ("vacuum", result.vacuum), ("seconds", f"{result.seconds:.2f}")]
    for row in rows:
        table.add_row(*row)
    console.print(table)


# --- audit: what a reader checks afterwards, by SQL and plain Python, without the planner ------

DIGESTS = {  # every row of the three tables: its key, and a digest of everything else
    "checkpoints": "SELECT thread_id, checkpoint_ns, checkpoint_id, md5(coalesce(type, '') || "
                   "checkpoint::text || metadata::text) FROM checkpoints",
    "checkpoint_blobs": "SELECT thread_id, checkpoint_ns, channel, version, md5(convert_to("
                        "type, 'UTF8') || coalesce(blob, ''::bytea)) FROM checkpoint_blobs",
    "checkpoint_writes": "SELECT thread_id, checkpoint_ns, checkpoint_id, task_id, idx::text, "
                         "md5(convert_to(channel || '|' || coalesce(type, '') || '|' || task_path,"
                         " 'UTF8') || blob) FROM checkpoint_writes",
}
AUDIT = {
    "orphan_blobs": "SELECT count(*) FROM checkpoint_blobs b WHERE NOT EXISTS (SELECT 1 FROM "
    "checkpoints c WHERE c.thread_id = b.thread_id AND c.checkpoint_ns = b.checkpoint_ns AND "
    "c.checkpoint -> 'channel_versions' ->> b.channel = b.version)",
    "orphan_writes": "SELECT count(*) FROM checkpoint_writes w WHERE NOT EXISTS (SELECT 1 FROM "
    "checkpoints c WHERE c.thread_id = w.thread_id AND c.checkpoint_ns = w.checkpoint_ns AND "
    "c.checkpoint_id = w.checkpoint_id)",
    "dangling_parent_links": "SELECT count(*) FROM checkpoints c WHERE parent_checkpoint_id IS "
    "NOT NULL AND NOT EXISTS (SELECT 1 FROM checkpoints p WHERE p.thread_id = c.thread_id AND "
    "p.checkpoint_ns = c.checkpoint_ns AND p.checkpoint_id = c.parent_checkpoint_id)",
}


def row_digests(conn: psycopg.Connection) -> dict[str, dict[tuple[str, ...], str]]:
    """Table -> {primary key: md5 of the rest of the row} (parent links are not hashed: a
    prune cuts them on purpose, and the audit counts those apart)."""
    cur = conn.cursor(row_factory=tuple_row)
    return {t: {tuple(r[:-1]): r[-1] for r in cur.execute(q).fetchall()}
            for t, q in DIGESTS.items()}


def audit_counts(conn: psycopg.Connection) -> dict[str, int]:
    cur = conn.cursor(row_factory=tuple_row)
    return {name: cur.execute(q).fetchone()[0] for name, q in AUDIT.items()}


def expected_after(conn: psycopg.Connection, cutoff: datetime | None, keep_last: int | None,
                   digests: dict[str, dict[tuple[str, ...], str]]) -> dict[str, set[tuple]]:
    """What a policy without DeltaChannel threads must leave, computed in plain Python from
    each checkpoint's own ``ts`` (not its id): the checkpoints newer than ``cutoff`` or among
    the newest ``keep_last`` of their (thread, ns); the blobs they reference; their writes."""
    by_ns: dict[tuple[str, str], list[tuple[datetime, str, dict[str, str]]]] = {}
    for t, ns, cid, ts, versions in conn.cursor(row_factory=tuple_row).execute(
            "SELECT thread_id, checkpoint_ns, checkpoint_id, checkpoint ->> 'ts', "
            "checkpoint -> 'channel_versions' FROM checkpoints"):
        by_ns.setdefault((t, ns), []).append((aware(datetime.fromisoformat(ts)), cid,
                                              versions or {}))
    kept, refs = set(), set()
    for (t, ns), rows in by_ns.items():
        for rank, (ts, cid, versions) in enumerate(sorted(rows, reverse=True), 1):
            if (cutoff is not None and ts >= cutoff) or (keep_last is not None
                                                         and rank <= keep_last):
                kept.add((t, ns, cid))
                refs.update((t, ns, ch, str(v)) for ch, v in versions.items())
    return {"checkpoints": kept,
            "checkpoint_blobs": {k for k in digests["checkpoint_blobs"] if k in refs},
            "checkpoint_writes": {k for k in digests["checkpoint_writes"] if k[:3] in kept}}


__all__ = ["audit_counts", "connect_checkpoint_db", "expected_after", "print_pg_result",
           "prune_url", "row_digests"]
