"""Retention for the official ``PostgresSaver`` tables: the same plan, applied in short batches.

The rules are ``shared.savers.retention``'s (``plan_rows``): a checkpoint goes only when it
is older than the cutoff *and* not among the newest ``keep_last`` of its (thread, namespace),
and whatever a kept checkpoint needs stays (DeltaChannel ancestors back to the snapshot, the
parent holding a pre-v4 checkpoint's pending sends), each with its reason. ``PgRows`` is the
row source: it reads ids, parents, the metadata markers and, for the few rows the DeltaChannel
walk visits, the *keys* of ``checkpoint -> 'channel_values'`` / ``'channel_versions'`` and
whether a blob row exists for a (channel, version). Nothing stored is ever decoded: no
serializer runs, so a pickle or encrypted row cannot run code or stop the prune. One
difference from SQLite, by design: a checkpoint after a DeltaChannel snapshot whose version of
that channel did not change still references the snapshot's blob, so it loads without the
snapshot's checkpoint, and PostgreSQL may delete that ancestor where SQLite must keep it (the
blob stays, referenced). Every other plan is the SQLite engine's (tests/shared/test_prune_pg).

In PostgreSQL a channel value lives once in ``checkpoint_blobs`` under (thread, ns, channel,
version), and every checkpoint that has that version in its ``channel_versions`` uses it. A
blob is removed only when no remaining checkpoint of its namespace references that version:
the blobs of the deleted checkpoints minus those still referenced, computed after the
delete, inside the same transaction.

Applying. Live traffic keeps writing, so nothing is done in one long transaction. The
checkpoints to delete are cut into batches of ``batch_size`` (whole namespaces where they
fit); each batch is one short transaction with ``SET LOCAL lock_timeout`` and
``statement_timeout``. Inside it the batch's threads are planned again (what was written
since the first plan is seen: a new child of a deleted checkpoint gets its parent link cut,
and a row a fresh plan keeps stays), then writes, checkpoints and freed blobs are deleted
and the parent links below the deleted rows set to NULL, as PostgresSaver's own prune does.
A batch that meets a lock held by someone else gives up after ``lock_timeout``, rolls back
and is retried (with backoff) rather than making the application's writers queue behind it.
Ctrl-C or a lost connection rolls the current batch back; the committed ones stay, and the
same command run again finishes the job. Writes whose checkpoint does not exist and whose
uuid6 id is more than an hour old (orphans) go last, in batches too.

Space. ``DELETE`` leaves dead tuples; plain ``VACUUM`` (run after the prune unless
``vacuum=False``, and by autovacuum anyway) makes their space reusable by new rows, but it
does not return it to the operating system: the table files keep their size. Only ``VACUUM
FULL`` or ``pg_repack`` rewrite them smaller, at the cost of an exclusive lock (VACUUM FULL)
or a full copy of the table.
"""

from __future__ import annotations

import random
import time
from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import psycopg
from psycopg.rows import tuple_row

from shared.errors import CheckpointError
from shared.savers.retention import (
    ORPHAN_WRITES_GRACE,
    TASKS_CHANNEL,
    IndexRow,
    Key,
    PrunePlan,
    RetentionPolicy,
    _Body,
    aware,
    checked_thread_ids,
    plan_rows,
    uuid6_at,
)
from shared.savers.retention_apply import PruneCounts

TABLES = ("checkpoints", "checkpoint_blobs", "checkpoint_writes")
UUID6_RE = "^[0-9a-f]{8}-[0-9a-f]{4}-6[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$"
# Errors that mean "someone else's lock was in the way": roll back, wait, try the batch again.
RETRYABLE = (psycopg.errors.LockNotAvailable, psycopg.errors.QueryCanceled,
             psycopg.errors.DeadlockDetected, psycopg.errors.SerializationFailure)


def _scope(threads: tuple[str, ...] | None, column: str = "thread_id") -> tuple[str, list[Any]]:
    """WHERE fragment for the thread filter (``column`` is one of our constants)."""
    return ("true", []) if threads is None else (f"{column} = ANY(%s)", [list(threads)])


def _obj(expr: str) -> str:
    """``expr`` if it is a JSON object, else an empty one (a malformed row plans, not fails)."""
    return f"CASE WHEN jsonb_typeof({expr}) = 'object' THEN {expr} ELSE '{{}}'::jsonb END"


class PgRows:
    """``RowSource`` over PostgresSaver's tables, scoped to ``threads`` (None: all)."""

    def __init__(self, conn: psycopg.Connection, threads: tuple[str, ...] | None) -> None:
        self.cur = conn.cursor(row_factory=tuple_row)
        self.threads = threads

    def index(self, cutoff_id: str | None) -> Iterable[IndexRow]:
        where, params = _scope(self.threads)
        counters = "metadata -> 'counters_since_delta_snapshot'"
        # COLLATE "C": ids compare byte by byte, as in SQLite and as uuid6 strings sort.
        self.cur.execute(
            f"""SELECT thread_id, checkpoint_ns, checkpoint_id, parent_checkpoint_id,
                       row_number() OVER (PARTITION BY thread_id, checkpoint_ns
                                          ORDER BY checkpoint_id COLLATE "C" DESC),
                       CASE jsonb_typeof({counters})
                            WHEN 'object' THEN ARRAY(SELECT jsonb_object_keys({counters}))
                            WHEN 'array' THEN ARRAY(SELECT jsonb_array_elements_text({counters}))
                       END,
                       coalesce(jsonb_typeof(metadata -> 'delta_writes_versioned'), 'null')
                            <> 'null',
                       CASE WHEN %(cut)s::text IS NULL THEN true
                            WHEN checkpoint_id ~ %(re)s THEN checkpoint_id COLLATE "C" < %(cut)s
                       END
                FROM checkpoints WHERE {where.replace('%s', '%(threads)s')}""",  # noqa: S608
            {"cut": cutoff_id, "re": UUID6_RE, "threads": params[0] if params else None},
            prepare=False)
        for t, ns, cid, parent, rank, names, js, is_old in self.cur.fetchall():
            yield IndexRow((t, ns, cid), parent, rank, frozenset(names or ()), bool(js), is_old)

    def body(self, key: Key) -> _Body | None:
        versions = _obj("c.checkpoint -> 'channel_versions'")
        row = self.cur.execute(
            f"""SELECT c.checkpoint ->> 'ts', c.checkpoint -> 'v',
                       ARRAY(SELECT jsonb_object_keys({_obj("c.checkpoint -> 'channel_values'")})),
                       ARRAY(SELECT jsonb_object_keys({versions})),
                       ARRAY(SELECT b.channel FROM jsonb_each_text({versions}) AS v
                             JOIN checkpoint_blobs b ON b.thread_id = c.thread_id
                              AND b.checkpoint_ns = c.checkpoint_ns AND b.channel = v.key
                              AND b.version = v.value WHERE b.type <> 'empty')
                FROM checkpoints c WHERE c.thread_id = %s AND c.checkpoint_ns = %s
                AND c.checkpoint_id = %s""",  # noqa: S608 -- constant fragments
            key).fetchone()
        if row is None:
            return None
        ts, v, inline, versioned, blobbed = row
        # A channel has a stored value here when it is inlined (a primitive, or the marker of
        # a _DeltaSnapshot) or its version has a blob row: what get_tuple would load.
        return _Body(ts, frozenset(inline) | frozenset(blobbed), frozenset(versioned),
                     v if isinstance(v, int) and not isinstance(v, bool) else 1)

    def sends_parents(self) -> set[Key]:
        where, params = _scope(self.threads)
        self.cur.execute(f"SELECT DISTINCT thread_id, checkpoint_ns, checkpoint_id FROM "  # noqa: S608
                         f"checkpoint_writes WHERE channel = %s AND {where}",
                         [TASKS_CHANNEL, *params])
        return {tuple(r) for r in self.cur.fetchall()}

    def count_writes(self, candidates: set[Key], grace_id: str) -> tuple[int, int, int]:
        where, params = _scope(self.threads, "w.thread_id")
        self.cur.execute(f"SELECT thread_id, checkpoint_ns, checkpoint_id, count(*) FROM "  # noqa: S608
                         f"checkpoint_writes w WHERE {where} GROUP BY 1, 2, 3", params)
        per = {(t, ns, c): n for t, ns, c, n in self.cur.fetchall()}
        orphans = self.cur.execute(
            f"SELECT count(*) FROM checkpoint_writes w WHERE {where} AND {ORPHANS}",  # noqa: S608
            [*params, UUID6_RE, grace_id]).fetchone()[0]
        return sum(per.values()), sum(per.get(k, 0) for k in candidates), orphans


ORPHANS = ("NOT EXISTS (SELECT 1 FROM checkpoints c WHERE c.thread_id = w.thread_id "
           "AND c.checkpoint_ns = w.checkpoint_ns AND c.checkpoint_id = w.checkpoint_id) "
           "AND w.checkpoint_id ~ %s AND w.checkpoint_id COLLATE \"C\" < %s")


def missing_tables(conn: psycopg.Connection) -> list[str]:
    """The PostgresSaver tables this database lacks (in the search path)."""
    cur = conn.cursor(row_factory=tuple_row)
    return [t for t in TABLES if cur.execute("SELECT to_regclass(%s) IS NULL", (t,)).fetchone()[0]]


def table_bytes(conn: psycopg.Connection) -> dict[str, int]:
    """``pg_total_relation_size`` of each checkpoint table (heap, TOAST and indexes)."""
    cur = conn.cursor(row_factory=tuple_row)
    return {t: cur.execute("SELECT pg_total_relation_size(%s::regclass)", (t,)).fetchone()[0]
            for t in TABLES}


def plan_pg(conn: psycopg.Connection, policy: RetentionPolicy,
            thread_ids: Sequence[str] | None = None, *, now: datetime | None = None
            ) -> PrunePlan:
    """The plan on one consistent snapshot (REPEATABLE READ, read only); changes nothing."""
    threads = checked_thread_ids(thread_ids)
    with conn.transaction():
        conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
        return plan_rows(PgRows(conn, threads), policy, threads, now=now)


# --- apply ---------------------------------------------------------------------------------

@dataclass
class PgProgress:
    """What is committed so far, updated batch by batch (read after Ctrl-C or a failure)."""

    stage: str = "not started"  # planning, deleting, orphans, vacuuming, done
    batches_done: int = 0
    batches_total: int = 0
    checkpoints_deleted: int = 0
    writes_deleted: int = 0
    blobs_deleted: int = 0
    retries: int = 0

    def done_text(self) -> str:
        if not self.batches_done and not self.writes_deleted:
            return "nothing was deleted yet (the batch in progress was rolled back)"
        return (f"{self.batches_done:,} of {self.batches_total:,} batches were committed "
                f"({self.checkpoints_deleted:,} checkpoints, {self.writes_deleted:,} writes and "
                f"{self.blobs_deleted:,} blobs deleted); the batch in progress was rolled back")


class PgPruneIncomplete(CheckpointError):
    def __init__(self, message: str, progress: PgProgress) -> None:
        super().__init__(message)
        self.progress = progress


@dataclass
class PgPruneResult(PruneCounts):
    blobs_deleted: int
    batches: int
    retries: int
    replanned_batches: int
    table_bytes_before: dict[str, int]
    table_bytes_after: dict[str, int]
    vacuum: str
    seconds: float
    plan: PrunePlan | None = field(default=None, repr=False)

    def to_dict(self) -> dict[str, Any]:
        more = ("blobs_deleted", "batches", "retries", "replanned_batches",
                "table_bytes_before", "table_bytes_after", "vacuum")
        return {**self.counts_dict(), **{k: getattr(self, k) for k in more},
                "seconds": round(self.seconds, 3)}


def make_batches(keys: Sequence[Key], size: int) -> list[list[Key]]:
    """Whole namespaces per batch while they fit; a larger namespace in ``size`` chunks,
    oldest first."""
    by_ns: dict[tuple[str, str], list[Key]] = defaultdict(list)
    for k in sorted(keys):
        by_ns[k[:2]].append(k)
    batches: list[list[Key]] = [[]]
    for group in by_ns.values():
        for i in range(0, len(group), size):
            chunk = group[i:i + size]
            if batches[-1] and len(batches[-1]) + len(chunk) > size:
                batches.append([])
            batches[-1].extend(chunk)
    return [b for b in batches if b]


def _cols(keys: Iterable[tuple[str, ...]], n: int) -> list[list[str]]:
    rows = list(keys)
    return [[k[i] for k in rows] for i in range(n)]


def _versions(cur: psycopg.Cursor, sql: str, params: Sequence[Any]) -> set[tuple[str, ...]]:
    cur.execute(sql, params, prepare=False)
    return {tuple(r) for r in cur.fetchall()}


_DELETE_CHECKPOINTS = """
WITH d AS (
    DELETE FROM checkpoints c USING unnest(%s::text[], %s::text[], %s::text[]) AS x(t, ns, id)
    WHERE c.thread_id = x.t AND c.checkpoint_ns = x.ns AND c.checkpoint_id = x.id
    RETURNING c.thread_id, c.checkpoint_ns, c.checkpoint -> 'channel_versions' AS versions)
SELECT DISTINCT d.thread_id, d.checkpoint_ns, v.key, v.value
FROM d CROSS JOIN LATERAL jsonb_each_text(CASE WHEN jsonb_typeof(d.versions) = 'object'
                                          THEN d.versions ELSE '{}'::jsonb END) AS v"""
_REFERENCED = f"""
SELECT DISTINCT c.thread_id, c.checkpoint_ns, v.key, v.value
FROM checkpoints c JOIN unnest(%s::text[], %s::text[]) AS x(t, ns)
  ON c.thread_id = x.t AND c.checkpoint_ns = x.ns
CROSS JOIN LATERAL jsonb_each_text({_obj("c.checkpoint -> 'channel_versions'")}) AS v"""  # noqa: S608


def _batch(conn: psycopg.Connection, policy: RetentionPolicy, now: datetime, keys: list[Key],
           settings: Sequence[str]) -> tuple[int, int, int, int, bool]:
    """One batch, one transaction: replan its threads, delete, cut links, free blobs.
    Returns (checkpoints, writes, blobs, parents cut, replanned)."""
    cur = conn.cursor(row_factory=tuple_row)
    with conn.transaction():
        for statement in settings:
            cur.execute(statement)
        threads = tuple(sorted({k[0] for k in keys}))
        fresh = plan_rows(PgRows(conn, threads), policy, threads, now=now)
        delete = sorted(set(fresh.delete) & set(keys))
        if not delete:
            return 0, 0, 0, 0, True
        cols = _cols(delete, 3)
        cur.execute("DELETE FROM checkpoint_writes w USING unnest(%s::text[], %s::text[], "
                    "%s::text[]) AS x(t, ns, id) WHERE w.thread_id = x.t AND w.checkpoint_ns "
                    "= x.ns AND w.checkpoint_id = x.id", cols, prepare=False)
        writes = cur.rowcount
        freed = _versions(cur, _DELETE_CHECKPOINTS, cols)
        cur.execute("UPDATE checkpoints c SET parent_checkpoint_id = NULL FROM unnest(%s::text[], "
                    "%s::text[], %s::text[]) AS x(t, ns, id) WHERE c.thread_id = x.t AND "
                    "c.checkpoint_ns = x.ns AND c.parent_checkpoint_id = x.id", cols,
                    prepare=False)
        cut = cur.rowcount
        namespaces = sorted({k[:2] for k in delete})
        garbage = sorted(freed - _versions(cur, _REFERENCED, _cols(namespaces, 2)))
        blobs = 0
        if garbage:
            cur.execute("DELETE FROM checkpoint_blobs b USING unnest(%s::text[], %s::text[], "
                        "%s::text[], %s::text[]) AS x(t, ns, ch, ver) WHERE b.thread_id = x.t "
                        "AND b.checkpoint_ns = x.ns AND b.channel = x.ch AND b.version = x.ver",
                        _cols(garbage, 4), prepare=False)
            blobs = cur.rowcount
    return len(delete), writes, blobs, cut, delete != sorted(keys)


def _retrying(step: Callable[[], Any], progress: PgProgress, max_retries: int,
              what: str) -> Any:
    for attempt in range(max_retries + 1):
        try:
            return step()
        except RETRYABLE as exc:
            if attempt == max_retries:
                reason = " ".join(str(exc).split()) or type(exc).__name__
                raise PgPruneIncomplete(
                    f"PostgreSQL kept {what} waiting on locks held by other sessions "
                    f"({reason}; {max_retries + 1} tries): {progress.done_text()}; run the same "
                    "prune again when the database is less busy, or give a larger "
                    "--lock-timeout; nothing else is needed.", progress) from exc
            progress.retries += 1
            time.sleep(min(2.0, 0.05 * 2 ** attempt) * (0.5 + random.random()))
    raise AssertionError("unreachable")


def blob_garbage_count(conn: psycopg.Connection, delete: Sequence[Key]) -> int:
    """How many blob rows deleting ``delete`` would free (the dry run's figure)."""
    cur = conn.cursor(row_factory=tuple_row)
    gone = set(delete)
    namespaces = sorted({k[:2] for k in gone})
    cur.execute(f"""SELECT c.thread_id, c.checkpoint_ns, c.checkpoint_id, v.key, v.value
                    FROM checkpoints c JOIN unnest(%s::text[], %s::text[]) AS x(t, ns)
                      ON c.thread_id = x.t AND c.checkpoint_ns = x.ns
                    CROSS JOIN LATERAL jsonb_each_text(
                        {_obj("c.checkpoint -> 'channel_versions'")}) AS v""",  # noqa: S608
                _cols(namespaces, 2), prepare=False)
    freed, kept = set(), set()
    for t, ns, cid, ch, ver in cur.fetchall():
        (freed if (t, ns, cid) in gone else kept).add((t, ns, ch, ver))
    garbage = sorted(freed - kept)
    if not garbage:
        return 0
    return cur.execute("SELECT count(*) FROM checkpoint_blobs b JOIN unnest(%s::text[], "
                       "%s::text[], %s::text[], %s::text[]) AS x(t, ns, ch, ver) ON b.thread_id "
                       "= x.t AND b.checkpoint_ns = x.ns AND b.channel = x.ch AND b.version = "
                       "x.ver", _cols(garbage, 4), prepare=False).fetchone()[0]


def prune_pg(conn: psycopg.Connection, policy: RetentionPolicy,
             thread_ids: Sequence[str] | None = None, *, now: datetime | None = None,
             dry_run: bool = False, batch_size: int = 500, lock_timeout_ms: int = 2000,
             statement_timeout_ms: int = 30_000, max_retries: int = 8, vacuum: bool = True,
             on_batch: Callable[[int, int], object] | None = None,
             progress: PgProgress | None = None) -> PgPruneResult:
    """Plan, then (unless ``dry_run``) delete in short batched transactions, remove the
    orphaned writes, and run a plain VACUUM on the three tables. ``conn`` must be in
    autocommit mode (VACUUM cannot run in a transaction). ``on_batch(done, total)`` follows
    the checkpoints deleted; ``progress`` says what is committed if the run is stopped."""
    started = time.perf_counter()
    progress = progress if progress is not None else PgProgress()
    if not conn.autocommit or conn.info.transaction_status != psycopg.pq.TransactionStatus.IDLE:
        raise CheckpointError("prune_pg needs a connection in autocommit mode with no open "
                              "transaction: each batch is its own transaction.")
    if missing := missing_tables(conn):
        raise CheckpointError(f"This database has no {', '.join(missing)} table: it is not a "
                              "PostgresSaver database, or setup() never ran on it; nothing was "
                              "changed.")
    threads = checked_thread_ids(thread_ids)
    now = aware(now or datetime.now(UTC))
    bytes_before = table_bytes(conn)
    progress.stage = "planning"
    plan = plan_pg(conn, policy, threads, now=now)
    deleted = writes = blobs = cut = orphans = replanned = 0
    how = "none (dry run)" if dry_run else "none (vacuum=False)"
    if dry_run:
        deleted, writes, orphans = len(plan.delete), plan.writes_to_delete, plan.orphan_writes
        blobs, cut = blob_garbage_count(conn, plan.delete), len(plan.cut_parents)
    else:
        settings = (f"SET LOCAL lock_timeout = {int(lock_timeout_ms)}",
                    f"SET LOCAL statement_timeout = {int(statement_timeout_ms)}")
        batches = make_batches(plan.delete, batch_size)
        progress.stage, progress.batches_total = "deleting", len(batches)
        for keys in batches:
            n, w, b, c, again = _retrying(
                lambda keys=keys: _batch(conn, policy, now, keys, settings), progress,
                max_retries, f"batch {progress.batches_done + 1} of {len(batches)}")
            deleted, writes, blobs, cut, replanned = (deleted + n, writes + w, blobs + b,
                                                      cut + c, replanned + again)
            progress.batches_done += 1
            progress.checkpoints_deleted, progress.writes_deleted = deleted, writes
            progress.blobs_deleted = blobs
            if on_batch is not None:
                on_batch(deleted, len(plan.delete))
        progress.stage = "orphans"
        where, params = _scope(threads, "w.thread_id")
        grace = uuid6_at(now - ORPHAN_WRITES_GRACE)

        def orphan_batch() -> int:
            cur = conn.cursor(row_factory=tuple_row)
            with conn.transaction():
                for statement in settings:
                    cur.execute(statement)
                cur.execute(f"DELETE FROM checkpoint_writes WHERE ctid = ANY(ARRAY("  # noqa: S608
                            f"SELECT ctid FROM checkpoint_writes w WHERE {where} AND {ORPHANS} "
                            f"LIMIT %s))", [*params, UUID6_RE, grace, batch_size])
                return cur.rowcount

        while n := _retrying(orphan_batch, progress, max_retries, "the orphaned writes"):
            orphans += n
            progress.writes_deleted = writes + orphans
        if vacuum and (deleted or orphans):
            progress.stage = "vacuuming"
            conn.execute("VACUUM (ANALYZE) checkpoints, checkpoint_blobs, checkpoint_writes")
            how = "VACUUM (ANALYZE): space reusable, files not shrunk"
        elif vacuum:
            how = "none (nothing deleted)"
    progress.stage = "done"
    return PgPruneResult(
        dry_run=dry_run, policy=policy, cutoff=plan.cutoff,
        checkpoints_before=plan.checkpoints_in_scope, checkpoints_deleted=deleted,
        checkpoints_after=plan.checkpoints_in_scope - deleted, writes_deleted=writes + orphans,
        orphan_writes_deleted=orphans, blobs_deleted=blobs, parents_cut=cut,
        kept_reasons=plan.reason_counts(), batches=progress.batches_done,
        retries=progress.retries, replanned_batches=replanned,
        table_bytes_before=bytes_before, table_bytes_after=table_bytes(conn), vacuum=how,
        seconds=time.perf_counter() - started, plan=plan)


__all__ = ["PgProgress", "PgPruneIncomplete", "PgPruneResult", "PgRows", "blob_garbage_count",
           "make_batches", "missing_tables", "plan_pg", "prune_pg", "table_bytes"]
