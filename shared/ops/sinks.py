"""Where a migration writes: the rows a destination saver's ``put``/``put_writes`` would write.

``sink_for(dst)`` picks ``PostgresSink`` or ``SqliteSink`` (a batch of whole threads in one
transaction, built from stored rows: ``shared.savers.rows``) for the library's own savers,
and ``ApiSink`` (``put_writes`` then ``put``, objects) for any other saver. Each sink can say
which of a page of threads the destination already holds (``keys``), build a batch (CPU work,
done while the previous batch is written) and commit it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from langgraph.checkpoint.base import BaseCheckpointSaver
from langgraph.checkpoint.postgres import PostgresSaver
from langgraph.checkpoint.sqlite import SqliteSaver

from shared.savers.copy import copy_history
from shared.savers.reading import ThreadCopy, has_tables, read_any
from shared.savers.rows import RawThread, in_list, is_sql, postgres_rows, query, sqlite_rows

Key = tuple[str, str]  # (checkpoint_ns, checkpoint_id) inside one thread


def _is_plain(saver: BaseCheckpointSaver, cls: type, *methods: str) -> bool:
    """``saver`` is a ``cls`` whose given methods are the library's own (not overridden)."""
    return isinstance(saver, cls) and all(
        getattr(type(saver), m) is getattr(cls, m) for m in methods)


# --- what each batch holds, and the sinks that write it ---------------------------------------

@dataclass
class Counts:
    checkpoints: int = 0
    writes: int = 0
    blobs: int = 0  # channel versions handed over in new_versions


@dataclass
class Batch:
    """Threads to write, with the rows a batched sink has built for them (CPU work, done)."""

    copies: list[Any]  # RawThread for the row sinks, ThreadCopy for the public API
    counts: Counts
    rows: dict[str, list[tuple[Any, ...]]] = field(default_factory=dict)


class ApiSink:
    """Any saver, through ``put_writes`` then ``put``: a visible checkpoint has its writes."""

    kind = "public API"
    background = False  # commit in the caller's thread: a foreign saver may expect that
    rows = False  # takes CheckpointTuples (objects), not stored rows

    def __init__(self, saver: BaseCheckpointSaver) -> None:
        self.saver = saver

    def keys(self, ids: list[str]) -> dict[str, set[Key]]:
        if is_sql(self.saver):
            return sql_keys(self.saver, ids)
        found = {t: c.keys() for t, c in read_any(self.saver, ids).items()}
        return {t: k for t, k in found.items() if k}

    def prepare(self) -> None:
        if is_sql(self.saver):
            self.saver.setup()  # other savers: the caller sets them up, as for a graph

    def build(self, copies: list[ThreadCopy]) -> Batch:
        counts = Counts()
        for copy in copies:
            for t in copy.history:
                counts.checkpoints += 1
                counts.writes += len(t.pending_writes or [])
        return Batch(list(copies), counts)

    def commit(self, batch: Batch) -> None:
        for copy in batch.copies:
            batch.counts.blobs += copy_history(self.saver, copy)


def sql_keys(saver: BaseCheckpointSaver, ids: list[str]) -> dict[str, set[Key]]:
    """(namespace, checkpoint id) of each of ``ids`` that ``saver`` already holds."""
    if not ids or not has_tables(saver):
        return {}
    sqlite = isinstance(saver, SqliteSaver)
    where = f"thread_id IN {in_list(ids)}" if sqlite else "thread_id = ANY(%s)"
    found: dict[str, set[Key]] = {}
    for t, ns, cid in query(saver, "SELECT thread_id, checkpoint_ns, checkpoint_id FROM "  # noqa: S608
                                   f"checkpoints WHERE {where}", ids if sqlite else (ids,)):
        found.setdefault(t, set()).add((ns, cid))
    return found


# PostgresSaver's own conflict rules, applied to a whole batch COPYed into session-private
# staging tables (COPY is formatted in C; one statement per table instead of one per row).
_PG_STAGE = (
    "CREATE TEMP TABLE IF NOT EXISTS ckpt_migrate_blobs (LIKE checkpoint_blobs) "
    "ON COMMIT DELETE ROWS",
    "CREATE TEMP TABLE IF NOT EXISTS ckpt_migrate_checkpoints (LIKE checkpoints) "
    "ON COMMIT DELETE ROWS",
    "CREATE TEMP TABLE IF NOT EXISTS ckpt_migrate_writes (LIKE checkpoint_writes, "
    "replace boolean NOT NULL) ON COMMIT DELETE ROWS",
)
_PG_TYPES = {"blobs": ["text", "text", "text", "text", "text", "bytea"],
             "checkpoints": ["text", "text", "text", "text", "jsonb", "jsonb"],
             "writes": ["text", "text", "text", "text", "text", "int4", "text", "text", "bytea"]}
_PG_COLUMNS = {
    "blobs": "(thread_id, checkpoint_ns, channel, version, type, blob)",
    "checkpoints": "(thread_id, checkpoint_ns, checkpoint_id, parent_checkpoint_id, checkpoint, "
                   "metadata)",
    "writes": "(thread_id, checkpoint_ns, checkpoint_id, task_id, task_path, idx, channel, type, "
              "blob{replace})",
}
_PG_TABLES = {"blobs": "checkpoint_blobs", "checkpoints": "checkpoints",
              "writes": "checkpoint_writes"}
_PG_APPLY = (  # UPSERT_CHECKPOINT_BLOBS_SQL, UPSERT_CHECKPOINTS_SQL, the two writes statements
    """INSERT INTO checkpoint_blobs (thread_id, checkpoint_ns, channel, version, type, blob)
    SELECT thread_id, checkpoint_ns, channel, version, type, blob FROM ckpt_migrate_blobs
    ON CONFLICT (thread_id, checkpoint_ns, channel, version) DO NOTHING""",
    """INSERT INTO checkpoints (thread_id, checkpoint_ns, checkpoint_id, parent_checkpoint_id,
        checkpoint, metadata)
    SELECT thread_id, checkpoint_ns, checkpoint_id, parent_checkpoint_id, checkpoint, metadata
    FROM ckpt_migrate_checkpoints
    ON CONFLICT (thread_id, checkpoint_ns, checkpoint_id)
    DO UPDATE SET checkpoint = EXCLUDED.checkpoint, metadata = EXCLUDED.metadata""",
    """INSERT INTO checkpoint_writes (thread_id, checkpoint_ns, checkpoint_id, task_id,
        task_path, idx, channel, type, blob)
    SELECT thread_id, checkpoint_ns, checkpoint_id, task_id, task_path, idx, channel, type, blob
    FROM ckpt_migrate_writes WHERE replace
    ON CONFLICT (thread_id, checkpoint_ns, checkpoint_id, task_id, idx)
    DO UPDATE SET channel = EXCLUDED.channel, type = EXCLUDED.type, blob = EXCLUDED.blob""",
    """INSERT INTO checkpoint_writes (thread_id, checkpoint_ns, checkpoint_id, task_id,
        task_path, idx, channel, type, blob)
    SELECT thread_id, checkpoint_ns, checkpoint_id, task_id, task_path, idx, channel, type, blob
    FROM ckpt_migrate_writes WHERE NOT replace
    ON CONFLICT (thread_id, checkpoint_ns, checkpoint_id, task_id, idx) DO NOTHING""",
)


class RowSink(ApiSink):
    """A saver of the library's own: stored rows in, the rows its ``put`` would write out."""

    rows = True
    tables: tuple[str, ...] = ()
    build_rows: Callable[[RawThread, dict[str, list[tuple[Any, ...]]]], int]

    def build(self, copies: list[RawThread]) -> Batch:
        batch = Batch(list(copies), Counts(), {t: [] for t in self.tables})
        for copy in copies:
            batch.counts.blobs += self.build_rows(copy, batch.rows)
            batch.counts.checkpoints += len(copy.checkpoints)
            batch.counts.writes += sum(len(c.writes) for c in copy.checkpoints)
        return batch


class PostgresSink(RowSink):
    """``PostgresSaver``: the rows ``put``/``put_writes`` would write, one transaction a batch."""

    kind = "batched (PostgreSQL)"
    background = True  # the next batch is read and built while this one is written
    saver: PostgresSaver

    def __init__(self, saver: BaseCheckpointSaver) -> None:
        super().__init__(saver)
        self.clean: set[str] = set()  # threads without a single row in any table

    def keys(self, ids: list[str]) -> dict[str, set[Key]]:
        if not has_tables(self.saver):
            self.clean.update(ids)
            return {}
        found = sql_keys(self.saver, ids)
        # Writes or blobs without a checkpoint (an older copy killed half way) are not clean.
        self.clean.update(set(ids) - set(found) - {r[0] for r in query(
            self.saver, "SELECT thread_id FROM checkpoint_writes WHERE thread_id = ANY(%s) "
                        "UNION SELECT thread_id FROM checkpoint_blobs WHERE thread_id = ANY(%s)",
            (ids, ids))})
        return found

    tables = ("blobs", "checkpoints", "writes")
    build_rows = staticmethod(postgres_rows)

    def commit(self, batch: Batch) -> None:
        ids = {c.thread_id for c in batch.copies}
        # Threads with no row anywhere cannot conflict: COPY straight into the tables.
        direct = ids <= self.clean
        with self.saver._cursor() as cur, cur.connection.transaction():
            if not direct:
                for sql in _PG_STAGE:
                    cur.execute(sql)
            for table, types in _PG_TYPES.items():
                # the writes rows end with put_writes' replace flag, which only staging keeps
                staged = not direct and table == "writes"
                name = _PG_TABLES[table] if direct else f"ckpt_migrate_{table}"
                columns = _PG_COLUMNS[table].format(replace=", replace" if staged else "")
                with cur.copy(f"COPY {name} {columns} FROM STDIN (FORMAT BINARY)") as copy:
                    copy.set_types([*types, "bool"] if staged else types)
                    for row in batch.rows[table]:
                        copy.write_row(row if staged or table != "writes" else row[:-1])
            if not direct:
                for sql in _PG_APPLY:
                    cur.execute(sql)
        self.clean -= ids


class SqliteSink(RowSink):
    """``SqliteSaver``: the rows ``put``/``put_writes`` would write, one transaction a batch."""

    kind = "batched (SQLite)"
    saver: SqliteSaver
    _COLUMNS = ("(thread_id, checkpoint_ns, checkpoint_id, task_id, task_path, idx, channel, "
                "type, value) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)")

    tables = ("checkpoints", "upserts", "inserts")
    build_rows = staticmethod(sqlite_rows)

    def commit(self, batch: Batch) -> None:
        s = self.saver
        with s.lock:
            s.setup()
            conn = s.conn
            if conn.in_transaction:
                conn.commit()
            conn.execute("BEGIN IMMEDIATE")  # take the write lock once for the whole batch
            try:
                conn.executemany("INSERT OR REPLACE INTO checkpoints (thread_id, checkpoint_ns, "
                                 "checkpoint_id, parent_checkpoint_id, type, checkpoint, "
                                 "metadata) VALUES (?, ?, ?, ?, ?, ?, ?)",
                                 batch.rows["checkpoints"])
                conn.executemany("INSERT OR REPLACE INTO writes " + self._COLUMNS,
                                 batch.rows["upserts"])
                conn.executemany("INSERT OR IGNORE INTO writes " + self._COLUMNS,
                                 batch.rows["inserts"])
                conn.commit()
            except BaseException:
                conn.rollback()
                raise


def sink_for(dst: BaseCheckpointSaver, batched: bool) -> ApiSink:
    if batched and _is_plain(dst, PostgresSaver, "put", "put_writes") and dst.pipe is None:
        return PostgresSink(dst)
    if batched and _is_plain(dst, SqliteSaver, "put", "put_writes"):
        return SqliteSink(dst)
    return ApiSink(dst)


__all__ = ["ApiSink", "Batch", "Counts", "PostgresSink", "SqliteSink", "sink_for", "sql_keys"]
