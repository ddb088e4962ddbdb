"""Move every checkpoint from one saver to another, and verify the copy by deep equality.

    report = migrate(SqliteSaver(conn), PostgresSaver(pg_conn))     # any saver to any saver
    assert verify(src, dst).ok                                       # every CheckpointTuple equal

What is moved, per thread and namespace (subgraphs too), oldest first so a parent always
lands before its children: every checkpoint with its metadata and parent, and the pending
writes stored against it, one ``put_writes`` per task in the source's order (each write keeps
its index), with the task path where the source keeps one (SQLite and PostgreSQL do).

new_versions. ``put(config, checkpoint, metadata, {})``, as a naive copy does, loses data:
``PostgresSaver`` keeps channel values in ``checkpoint_blobs`` and stores only the channels
named in ``new_versions``. The migrator passes, for each checkpoint, every channel version
it has not yet handed over for that thread and namespace, so each blob is written once.

Two ways to write, one result (``row_digests`` shows the rows are byte-identical):

- batched, for ``PostgresSaver`` and ``SqliteSaver`` destinations whose ``put``/``put_writes``
  are the library's own: the rows are built by the saver's own code (``_dump_blobs``,
  ``_dump_writes``, its serde, the same metadata rules), exactly what ``put`` would write,
  and a batch of threads (``batch`` checkpoints, 1,000 by default) goes in ONE transaction.
  On PostgreSQL the batch is COPYed (binary): straight into the tables for threads that have
  no row there yet, else into temporary staging tables and applied with the saver's own
  ``ON CONFLICT`` rules. While PostgreSQL writes batch N, batch N+1 is read and built.
- public API, for any other saver: ``put_writes`` then ``put`` for each checkpoint.

Interrupted, resumed, never half-written. A batched run commits whole threads or nothing:
a SIGKILL in the middle of a batch rolls that batch back, so the destination only ever holds
complete threads. On the public-API path a checkpoint's writes are stored BEFORE the
checkpoint row, so a checkpoint that is visible has all of its writes; a kill leaves at most
writes of a checkpoint not yet stored, invisible, rewritten identically by the next run.

Idempotent, and safe to point at a database in use. Before writing anything, the migrator
reads which source threads the destination already holds. A thread holding exactly the
source's checkpoints, equal by deep comparison, was copied before: skipped. A thread holding
a part of them, equal so far, is completed. A thread holding anything else (a checkpoint the
source does not have, or a different one) is refused with ``MigrationConflict`` naming it,
before a single row is written. Every write is an upsert on its primary key, so running the
migration twice creates nothing twice. ``progress_file`` (optional) records finished threads
so that a third run does not even compare them.

Memory stays flat: thread ids are paged, histories are read a few dozen threads at a time,
and at most two batches are held. ``verify`` compares every ``CheckpointTuple``
(checkpoint, metadata, parent, pending writes) of the source with the destination's, thread
by thread; ``sample=N`` checks N threads drawn with a seeded RNG. Two differences that are
storage, not data, are not counted: metadata's legacy ``writes`` key, which ``PostgresSaver``
never stores, and a DeltaChannel snapshot that ``PostgresSaver`` shows at every checkpoint
sharing its channel version (see ``_by_key``).
"""

from __future__ import annotations

import json
import operator
import os
import queue
import random
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import suppress
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Annotated, Any, TypedDict

from langchain_core.runnables import RunnableConfig
from langgraph.checkpoint.base import (
    WRITES_IDX_MAP,
    BaseCheckpointSaver,
    CheckpointTuple,
    get_checkpoint_metadata,
    get_serializable_checkpoint_metadata,
    writes_sort_key,
)
from langgraph.checkpoint.postgres import PostgresSaver
from langgraph.checkpoint.serde.types import _DeltaSnapshot
from langgraph.checkpoint.sqlite import SqliteSaver
from langgraph.graph import START, StateGraph
from langgraph.graph.state import CompiledStateGraph
from psycopg.types.json import Jsonb

from shared.errors import CheckpointError
from shared.graph import Ledger, build_approval_graph, build_chat_graph
from shared.proc import child_result, start_child
from shared.savers.sqlite import open_sqlite_saver

Progress = Callable[[int], None]
Key = tuple[str, str]  # (checkpoint_ns, checkpoint_id) inside one thread
PAGE = 500  # thread ids per page when listing and when asking the destination what it has
READ_CHUNK = 32  # threads whose histories are read (and decoded) at a time


class MigrationConflict(CheckpointError):
    """The destination already holds different data for a thread; nothing was written."""


@dataclass
class ThreadCopy:
    """One thread as read from a saver: its history (parents first) and its task paths."""

    thread_id: str
    history: list[CheckpointTuple]
    paths: dict[tuple[str, str, str], str] = field(default_factory=dict)

    def keys(self) -> set[Key]:
        return {_key(t) for t in self.history}


def _key(t: CheckpointTuple) -> Key:
    conf = t.config["configurable"]
    return conf["checkpoint_ns"], conf["checkpoint_id"]


def _is_plain(saver: BaseCheckpointSaver, cls: type, *methods: str) -> bool:
    """``saver`` is a ``cls`` whose given methods are the library's own (not overridden)."""
    return isinstance(saver, cls) and all(
        getattr(type(saver), m) is getattr(cls, m) for m in methods)


# --- reading: thread ids, histories, task paths ---------------------------------------------

def iter_thread_ids(saver: BaseCheckpointSaver, page: int = PAGE) -> Iterator[str]:
    """Every thread of ``saver`` in sorted order, paged for SQL savers (flat memory)."""
    if isinstance(saver, SqliteSaver | PostgresSaver):
        sqlite = isinstance(saver, SqliteSaver)
        mark = "?" if sqlite else "%s"
        sql = (f"SELECT DISTINCT thread_id FROM checkpoints WHERE thread_id > {mark} "  # noqa: S608
               f"ORDER BY thread_id LIMIT {int(page)}")
        last = ""
        while True:
            rows = _query(saver, sql, (last,))
            yield from (r[0] for r in rows)
            if len(rows) < page:
                return
            last = rows[-1][0]
    else:  # the public API has no "list threads": one streaming pass over every checkpoint
        yield from sorted({t.config["configurable"]["thread_id"] for t in saver.list(None)})


def thread_ids(saver: BaseCheckpointSaver) -> list[str]:
    """Every thread of ``saver``, sorted."""
    return list(iter_thread_ids(saver))


def sample_thread_ids(saver: BaseCheckpointSaver, n: int, seed: int = 0) -> list[str]:
    """``n`` threads drawn uniformly with a seeded RNG (reservoir sampling: flat memory)."""
    rng, chosen = random.Random(seed), []
    for i, thread_id in enumerate(iter_thread_ids(saver)):
        if i < n:
            chosen.append(thread_id)
        elif (j := rng.randrange(i + 1)) < n:
            chosen[j] = thread_id
    return sorted(chosen)


def count_rows(saver: BaseCheckpointSaver) -> dict[str, int] | None:
    """SELECT COUNT(*) of the saver's tables (checkpoints, writes, blobs); None if not SQL."""
    if isinstance(saver, SqliteSaver):
        tables = {"checkpoints": "checkpoints", "writes": "writes"}
    elif isinstance(saver, PostgresSaver):
        tables = {"checkpoints": "checkpoints", "writes": "checkpoint_writes",
                  "blobs": "checkpoint_blobs"}
    else:
        return None
    if not _has_tables(saver):
        return dict.fromkeys(tables, 0)
    # Table names are the constants above, never user text.
    return {k: _query(saver, f"SELECT count(*) FROM {t}", ())[0][0]  # noqa: S608
            for k, t in tables.items()}


def _query(saver: BaseCheckpointSaver, sql: str, params: tuple[Any, ...]) -> list[tuple[Any, ...]]:
    """Run a read on a SQL saver's own connection (under its lock) and return plain tuples."""
    if isinstance(saver, SqliteSaver):
        with saver.lock:
            return [tuple(r) for r in saver.conn.execute(sql, params).fetchall()]
    assert isinstance(saver, PostgresSaver)
    with saver._cursor() as cur:
        cur.execute(sql, params)
        return [tuple(r.values()) for r in cur.fetchall()]


def _has_tables(saver: BaseCheckpointSaver) -> bool:
    if isinstance(saver, SqliteSaver):
        names = {r[0] for r in _query(saver, "SELECT name FROM sqlite_master WHERE "
                                              "type = 'table'", ())}
        return {"checkpoints", "writes"} <= names
    found = _query(saver, "SELECT to_regclass('checkpoints') IS NOT NULL AND "
                          "to_regclass('checkpoint_writes') IS NOT NULL AND "
                          "to_regclass('checkpoint_blobs') IS NOT NULL", ())
    return bool(found[0][0])


def thread_history(saver: BaseCheckpointSaver, thread_id: str) -> list[CheckpointTuple]:
    """Every checkpoint of a thread, every namespace, parents before children (public API)."""
    history = list(saver.list({"configurable": {"thread_id": thread_id}}))
    history.sort(key=_key)
    return history


# The thread ids travel as one JSON parameter, however many there are.
_SQLITE_CHECKPOINTS = """SELECT thread_id, checkpoint_ns, checkpoint_id, parent_checkpoint_id,
    type, checkpoint, metadata FROM checkpoints WHERE thread_id IN (SELECT value FROM json_each(?))
    ORDER BY thread_id, checkpoint_ns, checkpoint_id"""
_SQLITE_WRITES = """SELECT thread_id, checkpoint_ns, checkpoint_id, task_id, channel, type, value,
    {path}, idx FROM writes WHERE thread_id IN (SELECT value FROM json_each(?))"""


def _sqlite_threads(saver: SqliteSaver, ids: list[str]) -> dict[str, ThreadCopy]:
    """What ``list()`` returns for these threads, in two queries instead of one per checkpoint."""
    arg = (json.dumps(ids),)
    with saver.lock:
        conn = saver.conn
        columns = {r[1] for r in conn.execute("PRAGMA table_info(writes)")}
        path = "task_path" if "task_path" in columns else "''"  # a file from before task paths
        rows = conn.execute(_SQLITE_CHECKPOINTS, arg).fetchall()
        write_rows = conn.execute(_SQLITE_WRITES.format(path=path), arg).fetchall()
    writes: dict[tuple[str, str, str], list[tuple[Any, ...]]] = {}
    for r in write_rows:
        writes.setdefault(r[:3], []).append(r[3:])
    out = {t: ThreadCopy(t, []) for t in ids}
    loads = saver.serde.loads_typed
    for thread_id, ns, cid, parent, type_, blob, metadata in rows:
        mine = sorted(writes.get((thread_id, ns, cid), []),
                      key=lambda w: writes_sort_key(w[4], w[0], w[5]))
        copy = out[thread_id]
        copy.paths.update(((ns, cid, w[0]), w[4]) for w in mine)
        copy.history.append(CheckpointTuple(
            {"configurable": {"thread_id": thread_id, "checkpoint_ns": ns,
                              "checkpoint_id": cid}},
            loads((type_, blob)),
            json.loads(metadata) if metadata is not None else {},
            {"configurable": {"thread_id": thread_id, "checkpoint_ns": ns,
                              "checkpoint_id": parent}} if parent else None,
            [(w[0], w[1], loads((w[2], w[3]))) for w in mine]))
    return out


def read_threads(saver: BaseCheckpointSaver, ids: Iterable[str]) -> Iterator[ThreadCopy]:
    """Each requested thread's history and task paths, a few dozen threads per read."""
    ids = list(ids)
    for i in range(0, len(ids), READ_CHUNK):
        chunk = ids[i:i + READ_CHUNK]
        if _is_plain(saver, SqliteSaver, "list"):
            yield from _sqlite_threads(saver, chunk).values()  # type: ignore[arg-type]
            continue
        paths: dict[str, dict[tuple[str, str, str], str]] = {t: {} for t in chunk}
        if isinstance(saver, PostgresSaver):  # task paths are not in CheckpointTuple
            for t, ns, cid, task, path in _query(
                    saver, "SELECT DISTINCT thread_id, checkpoint_ns, checkpoint_id, task_id, "
                           "task_path FROM checkpoint_writes WHERE thread_id = ANY(%s)",
                    (chunk,)):
                paths[t][(ns, cid, task)] = path
        for t in chunk:
            yield ThreadCopy(t, thread_history(saver, t), paths[t])


# --- writing: what each checkpoint hands over ------------------------------------------------

def _target(thread_id: str, t: CheckpointTuple) -> dict[str, Any]:
    """The config ``put`` receives: the thread, the namespace and the PARENT's id."""
    ns = t.config["configurable"]["checkpoint_ns"]
    parent = t.parent_config["configurable"]["checkpoint_id"] if t.parent_config else None
    return {"configurable": {"thread_id": thread_id, "checkpoint_ns": ns,
                             **({"checkpoint_id": parent} if parent else {})}}


def _new_versions(t: CheckpointTuple, written: set[tuple[str, str, str]]) -> dict[str, Any]:
    """Channel versions not yet handed over for this thread and namespace (and mark them)."""
    ns = t.config["configurable"]["checkpoint_ns"]
    versions = {ch: v for ch, v in t.checkpoint["channel_versions"].items()
                if (ns, ch, str(v)) not in written}
    # Marked only when the value is here to be stored; an absent one may come later.
    written.update((ns, ch, str(v)) for ch, v in versions.items()
                   if ch in t.checkpoint["channel_values"])
    return versions


def _writes_by_task(t: CheckpointTuple) -> dict[str, list[tuple[str, Any]]]:
    by_task: dict[str, list[tuple[str, Any]]] = {}
    for task_id, channel, value in t.pending_writes or []:
        by_task.setdefault(task_id, []).append((channel, value))
    return by_task


@dataclass
class _Counts:
    checkpoints: int = 0
    writes: int = 0
    blobs: int = 0  # channel versions handed over in new_versions


@dataclass
class _Batch:
    """Threads to write, with the rows a batched sink has built for them (CPU work, done)."""

    copies: list[ThreadCopy]
    counts: _Counts
    rows: dict[str, list[tuple[Any, ...]]] = field(default_factory=dict)


class _ApiSink:
    """Any saver, through ``put_writes`` then ``put``: a visible checkpoint has its writes."""

    kind = "public API"
    background = False  # commit in the caller's thread: a foreign saver may expect that

    def __init__(self, saver: BaseCheckpointSaver) -> None:
        self.saver = saver

    def keys(self, ids: list[str]) -> dict[str, set[Key]]:
        if isinstance(self.saver, SqliteSaver | PostgresSaver) and not _has_tables(self.saver):
            return {}
        found = {c.thread_id: c.keys() for c in read_threads(self.saver, ids)}
        return {t: k for t, k in found.items() if k}

    def prepare(self) -> None:
        if isinstance(self.saver, SqliteSaver | PostgresSaver):
            self.saver.setup()  # other savers: the caller sets them up, as for a graph

    def build(self, copies: list[ThreadCopy]) -> _Batch:
        counts = _Counts()
        for copy in copies:
            for t in copy.history:
                counts.checkpoints += 1
                counts.writes += len(t.pending_writes or [])
        return _Batch(list(copies), counts)

    def commit(self, batch: _Batch) -> None:
        for copy in batch.copies:
            written: set[tuple[str, str, str]] = set()
            for t in copy.history:
                ns, cid = _key(t)
                config = {"configurable": {"thread_id": copy.thread_id, "checkpoint_ns": ns,
                                           "checkpoint_id": cid}}
                for task_id, task_writes in _writes_by_task(t).items():
                    self.saver.put_writes(config, task_writes, task_id,
                                          copy.paths.get((ns, cid, task_id), ""))
                versions = _new_versions(t, written)
                self.saver.put(_target(copy.thread_id, t), t.checkpoint, t.metadata, versions)
                batch.counts.blobs += len(versions)


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
_PG_COPY_INTO = {  # straight into the saver's tables: for threads without a row there
    "blobs": "COPY checkpoint_blobs (thread_id, checkpoint_ns, channel, version, type, blob) "
             "FROM STDIN (FORMAT BINARY)",
    "checkpoints": "COPY checkpoints (thread_id, checkpoint_ns, checkpoint_id, "
                   "parent_checkpoint_id, checkpoint, metadata) FROM STDIN (FORMAT BINARY)",
    "writes": "COPY checkpoint_writes (thread_id, checkpoint_ns, checkpoint_id, task_id, "
              "task_path, idx, channel, type, blob) FROM STDIN (FORMAT BINARY)",
}
_PG_COPY_STAGE = {  # into the staging tables, then _PG_APPLY with the saver's conflict rules
    "blobs": "COPY ckpt_migrate_blobs (thread_id, checkpoint_ns, channel, version, type, blob) "
             "FROM STDIN (FORMAT BINARY)",
    "checkpoints": "COPY ckpt_migrate_checkpoints (thread_id, checkpoint_ns, checkpoint_id, "
                   "parent_checkpoint_id, checkpoint, metadata) FROM STDIN (FORMAT BINARY)",
    "writes": "COPY ckpt_migrate_writes (thread_id, checkpoint_ns, checkpoint_id, task_id, "
              "task_path, idx, channel, type, blob, replace) FROM STDIN (FORMAT BINARY)",
}
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


class _PostgresSink(_ApiSink):
    """``PostgresSaver``: the rows ``put``/``put_writes`` would write, one transaction a batch."""

    kind = "batched (PostgreSQL)"
    background = True  # the next batch is read and built while this one is written
    saver: PostgresSaver

    def __init__(self, saver: BaseCheckpointSaver) -> None:
        super().__init__(saver)
        self.clean: set[str] = set()  # threads without a single row in any table

    def keys(self, ids: list[str]) -> dict[str, set[Key]]:
        if not _has_tables(self.saver):
            self.clean.update(ids)
            return {}
        found: dict[str, set[Key]] = {}
        for t, ns, cid in _query(self.saver, "SELECT thread_id, checkpoint_ns, checkpoint_id "
                                             "FROM checkpoints WHERE thread_id = ANY(%s)", (ids,)):
            found.setdefault(t, set()).add((ns, cid))
        # Writes or blobs without a checkpoint (an older copy killed half way) are not clean.
        self.clean.update(set(ids) - set(found) - {r[0] for r in _query(
            self.saver, "SELECT thread_id FROM checkpoint_writes WHERE thread_id = ANY(%s) "
                        "UNION SELECT thread_id FROM checkpoint_blobs WHERE thread_id = ANY(%s)",
            (ids, ids))})
        return found

    def build(self, copies: list[ThreadCopy]) -> _Batch:
        s, batch = self.saver, _Batch(list(copies), _Counts(),
                                      {"blobs": [], "checkpoints": [], "writes": []})
        for copy in copies:
            written: set[tuple[str, str, str]] = set()
            for t in copy.history:
                ns, cid = _key(t)
                config = _target(copy.thread_id, t)
                versions = _new_versions(t, written)
                # As PostgresSaver.put: primitives stay inline, the rest become blobs.
                inline = t.checkpoint.copy()
                inline["channel_values"] = dict(t.checkpoint["channel_values"])
                values: dict[str, Any] = {}
                for k, v in t.checkpoint["channel_values"].items():
                    if isinstance(v, _DeltaSnapshot):
                        values[k] = inline["channel_values"].pop(k)
                        inline["channel_values"][k] = True
                    elif not (v is None or isinstance(v, str | int | float | bool)):
                        values[k] = inline["channel_values"].pop(k)
                if blob_versions := {k: v for k, v in versions.items() if k in values}:
                    batch.rows["blobs"].extend(
                        s._dump_blobs(copy.thread_id, ns, values, blob_versions))
                batch.rows["checkpoints"].append((
                    copy.thread_id, ns, cid, config["configurable"].get("checkpoint_id"),
                    Jsonb(inline), Jsonb(get_serializable_checkpoint_metadata(config,
                                                                              t.metadata))))
                for task_id, task_writes in _writes_by_task(t).items():
                    # put_writes' own choice: special channels replace, others never do
                    replace = all(w[0] in WRITES_IDX_MAP for w in task_writes)
                    batch.rows["writes"].extend((*row, replace) for row in s._dump_writes(
                        copy.thread_id, ns, cid, task_id,
                        copy.paths.get((ns, cid, task_id), ""), task_writes))
                    batch.counts.writes += len(task_writes)
                batch.counts.checkpoints += 1
                batch.counts.blobs += len(versions)
        return batch

    def commit(self, batch: _Batch) -> None:
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
                with cur.copy((_PG_COPY_INTO if direct else _PG_COPY_STAGE)[table]) as copy:
                    copy.set_types([*types, "bool"] if staged else types)
                    for row in batch.rows[table]:
                        copy.write_row(row if staged or table != "writes" else row[:-1])
            if not direct:
                for sql in _PG_APPLY:
                    cur.execute(sql)
        self.clean -= ids


class _SqliteSink(_ApiSink):
    """``SqliteSaver``: the rows ``put``/``put_writes`` would write, one transaction a batch."""

    kind = "batched (SQLite)"
    saver: SqliteSaver
    _COLUMNS = ("(thread_id, checkpoint_ns, checkpoint_id, task_id, task_path, idx, channel, "
                "type, value) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)")

    def keys(self, ids: list[str]) -> dict[str, set[Key]]:
        if not _has_tables(self.saver):
            return {}
        found: dict[str, set[Key]] = {}
        for t, ns, cid in _query(self.saver, "SELECT thread_id, checkpoint_ns, checkpoint_id "
                                             "FROM checkpoints WHERE thread_id IN "
                                             "(SELECT value FROM json_each(?))",
                                 (json.dumps(ids),)):
            found.setdefault(t, set()).add((ns, cid))
        return found

    def build(self, copies: list[ThreadCopy]) -> _Batch:
        s, batch = self.saver, _Batch(list(copies), _Counts(),
                                      {"checkpoints": [], "upserts": [], "inserts": []})
        for copy in copies:
            written: set[tuple[str, str, str]] = set()
            for t in copy.history:
                ns, cid = _key(t)
                config = _target(copy.thread_id, t)
                batch.counts.blobs += len(_new_versions(t, written))
                type_, blob = s.serde.dumps_typed(t.checkpoint)
                metadata = json.dumps(get_checkpoint_metadata(config, t.metadata),
                                      ensure_ascii=False).encode("utf-8", "ignore")
                batch.rows["checkpoints"].append((
                    copy.thread_id, ns, cid, config["configurable"].get("checkpoint_id"), type_,
                    blob, metadata))
                for task_id, task_writes in _writes_by_task(t).items():
                    path = copy.paths.get((ns, cid, task_id), "")
                    replace = all(w[0] in WRITES_IDX_MAP for w in task_writes)
                    batch.rows["upserts" if replace else "inserts"].extend(
                        (copy.thread_id, ns, cid, task_id, path, WRITES_IDX_MAP.get(ch, i), ch,
                         *s.serde.dumps_typed(v)) for i, (ch, v) in enumerate(task_writes))
                    batch.counts.writes += len(task_writes)
                batch.counts.checkpoints += 1
        return batch

    def commit(self, batch: _Batch) -> None:
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


def _sink(dst: BaseCheckpointSaver, batched: bool) -> _ApiSink:
    if batched and _is_plain(dst, PostgresSaver, "put", "put_writes") and dst.pipe is None:
        return _PostgresSink(dst)
    if batched and _is_plain(dst, SqliteSaver, "put", "put_writes"):
        return _SqliteSink(dst)
    return _ApiSink(dst)


def copy_thread(src: BaseCheckpointSaver, dst: BaseCheckpointSaver, thread_id: str
                ) -> tuple[int, int, int]:
    """Copy one thread through the public API; returns (checkpoints, writes, versions)."""
    sink = _ApiSink(dst)
    batch = sink.build(list(read_threads(src, [thread_id])))
    sink.commit(batch)
    return batch.counts.checkpoints, batch.counts.writes, batch.counts.blobs


# --- comparing -------------------------------------------------------------------------------

def _comparable(t: CheckpointTuple) -> tuple[Any, ...]:
    parent = t.parent_config["configurable"]["checkpoint_id"] if t.parent_config else None
    metadata = {k: v for k, v in t.metadata.items() if k != "writes"}
    return t.checkpoint, metadata, parent, list(t.pending_writes or [])


def differences(a: CheckpointTuple, b: CheckpointTuple) -> list[str]:
    """Which parts of two checkpoint tuples differ: checkpoint, metadata, parent, writes."""
    names = ("checkpoint", "metadata", "parent", "pending_writes")
    return [n for n, x, y in zip(names, _comparable(a), _comparable(b), strict=True) if x != y]


def _by_key(copy: ThreadCopy) -> dict[Key, CheckpointTuple]:
    """The thread's checkpoints by key, each DeltaChannel snapshot shown at every checkpoint
    that carries its channel version.

    ``PostgresSaver`` stores one value per (channel, version) and loads it into every
    checkpoint that names that version; ``SqliteSaver`` keeps a ``_DeltaSnapshot`` only in
    the checkpoint that took it, the next ones carry the version without the value. Both
    rebuild the same state. Each side is filled from its OWN snapshots only, so a snapshot
    lost in the copy is still a difference.
    """
    snapshots = {(_key(t)[0], ch, str(t.checkpoint["channel_versions"].get(ch))): v
                 for t in copy.history for ch, v in t.checkpoint["channel_values"].items()
                 if isinstance(v, _DeltaSnapshot)}
    out = {}
    for t in copy.history:
        ns, values = _key(t)[0], t.checkpoint["channel_values"]
        fill = {ch: snapshots[(ns, ch, str(v))]
                for ch, v in t.checkpoint["channel_versions"].items()
                if ch not in values and (ns, ch, str(v)) in snapshots}
        if fill:
            t = t._replace(checkpoint={**t.checkpoint, "channel_values": {**values, **fill}})
        out[_key(t)] = t
    return out


def _conflict(src: ThreadCopy, dst: ThreadCopy) -> str | None:
    """Why ``dst``'s copy of a thread is not (a part of) ``src``'s; None if it is."""
    if extra := dst.keys() - src.keys():
        return f"{len(extra)} checkpoint(s) the source does not have, e.g. {min(extra)[1]}"
    mine = _by_key(src)
    for key, t in _by_key(dst).items():
        diff = differences(mine[key], t)
        # Writes the destination lacks are completed; writes the source lacks are a conflict.
        if diff == ["pending_writes"] and all(w in (mine[key].pending_writes or [])
                                              for w in t.pending_writes or []):
            continue
        if diff:
            return f"checkpoint {key[1]} differs in {', '.join(diff)}"
    return None


def _same(src: ThreadCopy, dst: ThreadCopy) -> bool:
    """Both copies hold the same checkpoints, each deep-equal."""
    if src.keys() != dst.keys():
        return False
    theirs = _by_key(dst)
    return not any(differences(t, theirs[k]) for k, t in _by_key(src).items())


# --- migrate ---------------------------------------------------------------------------------

@dataclass
class MigrationReport:
    threads: int = 0  # copied by this run
    threads_skipped: int = 0  # already complete in the destination
    checkpoints: int = 0
    writes: int = 0
    blobs: int = 0  # channel versions handed over in new_versions
    batches: int = 0  # destination transactions (batched path) or flushes (public API)
    path: str = ""
    seconds: float = 0.0

    @property
    def checkpoints_per_s(self) -> float:
        return self.checkpoints / self.seconds if self.seconds else 0.0

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "checkpoints_per_s": round(self.checkpoints_per_s, 1)}


def _pages(items: Iterable[str], size: int = PAGE) -> Iterator[list[str]]:
    page: list[str] = []
    for item in items:
        page.append(item)
        if len(page) >= size:
            yield page
            page = []
    if page:
        yield page


def _load_progress(path: Path | None) -> set[str]:
    if path is None or not path.exists():
        return set()
    return set(json.loads(path.read_text()).get("done", []))


def _save_progress(path: Path | None, done: set[str]) -> None:
    if path is None:
        return
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps({"done": sorted(done)}))
    os.replace(tmp, path)  # atomic: a kill leaves the old file or the new one, never half


def preflight(src: BaseCheckpointSaver, dst: BaseCheckpointSaver, *,
              threads: list[str] | None = None, skip: set[str] | None = None,
              batched: bool = True) -> set[str]:
    """Refuse (``MigrationConflict``) if ``dst`` holds different data for a source thread.

    Reads only. Returns the threads ``dst`` holds a part of, equal so far, to complete.
    """
    sink, skip, incomplete = _sink(dst, batched), skip or set(), set()
    for page in _pages(threads if threads is not None else iter_thread_ids(src)):
        existing = sink.keys([t for t in page if t not in skip])
        if not existing:
            continue
        theirs = {c.thread_id: c for c in read_threads(dst, existing)}
        for mine in read_threads(src, existing):
            other = theirs[mine.thread_id]
            if reason := _conflict(mine, other):
                raise MigrationConflict(
                    f"The destination already holds different data for thread "
                    f"{mine.thread_id!r} ({reason}): nothing was written; migrate into an "
                    "empty database, or delete that thread from the destination first.")
            if not _same(mine, other):
                incomplete.add(mine.thread_id)
    return incomplete


class _Committer:
    """Commits batches in order, in a background thread when the sink allows it.

    The queue holds one batch: while batch N is written (PostgreSQL works in its own process,
    the client waits on the socket without the GIL), batch N+1 is read and built here, so
    both CPUs work and memory stays at about two batches.
    """

    def __init__(self, sink: _ApiSink, done: Callable[[_Batch], None]) -> None:
        self.sink, self.done = sink, done
        self.error: BaseException | None = None
        self.discard = False
        self.queue: queue.Queue[_Batch | None] = queue.Queue(maxsize=1)
        self.thread = threading.Thread(target=self._run, name="ckpt-migrate-commit", daemon=True)
        if sink.background:
            self.thread.start()

    def _run(self) -> None:
        while (batch := self.queue.get()) is not None:
            if self.error is None and not self.discard:  # after a failure: drain, write nothing
                try:
                    self._commit(batch)
                except BaseException as exc:  # re-raised in the caller's thread
                    self.error = exc

    def _commit(self, batch: _Batch) -> None:
        self.sink.commit(batch)
        self.done(batch)

    def submit(self, batch: _Batch) -> None:
        if self.error is not None:
            raise self.error
        if self.thread.is_alive():
            self.queue.put(batch)
        else:
            self._commit(batch)

    def close(self, discard: bool = False) -> None:
        """Wait for the queued batches; ``discard`` drops those not yet started (Ctrl-C)."""
        self.discard = discard
        if self.thread.is_alive():
            self.queue.put(None)
            self.thread.join()
        if self.error is not None and not discard:
            raise self.error


def migrate(src: BaseCheckpointSaver, dst: BaseCheckpointSaver, *,
            progress_file: Path | None = None, batch: int = 1000,
            on_checkpoints: Progress | None = None, threads: list[str] | None = None,
            batched: bool = True) -> MigrationReport:
    """Copy every thread of ``src`` into ``dst``, ``batch`` checkpoints per transaction.

    Raises ``MigrationConflict`` before writing anything if ``dst`` holds different data.
    ``batched=False`` forces the public-API path (``put_writes`` + ``put``) on any saver.
    """
    if batch < 1:
        raise CheckpointError(f"batch must be at least 1 checkpoint, got {batch}.")
    started = time.perf_counter()
    sink = _sink(dst, batched)
    report = MigrationReport(path=sink.kind)
    done = _load_progress(progress_file)
    incomplete = preflight(src, dst, threads=threads, skip=done, batched=batched)
    sink.prepare()

    def committed(b: _Batch) -> None:  # runs after each commit, in the committing thread
        report.threads += len(b.copies)
        report.checkpoints += b.counts.checkpoints
        report.writes += b.counts.writes
        report.blobs += b.counts.blobs
        report.batches += 1
        done.update(c.thread_id for c in b.copies)
        _save_progress(progress_file, done)
        if on_checkpoints:
            on_checkpoints(b.counts.checkpoints)

    committer, pending, size = _Committer(sink, committed), [], 0
    try:
        for page in _pages(threads if threads is not None else iter_thread_ids(src)):
            report.threads_skipped += sum(t in done for t in page)
            todo = [t for t in page if t not in done]
            existing = sink.keys(todo)
            for copy in read_threads(src, todo):
                if not copy.history:
                    continue
                if (existing.get(copy.thread_id) == copy.keys()
                        and copy.thread_id not in incomplete):  # complete: preflight compared it
                    report.threads_skipped += 1
                    if on_checkpoints:
                        on_checkpoints(len(copy.history))
                    continue
                pending.append(copy)
                size += len(copy.history)
                if size >= batch:
                    committer.submit(sink.build(pending))
                    pending, size = [], 0
        if pending:
            committer.submit(sink.build(pending))
    except BaseException:
        committer.close(discard=True)
        raise
    committer.close()
    report.seconds = time.perf_counter() - started
    return report


# --- verify ----------------------------------------------------------------------------------

@dataclass
class VerifyReport:
    threads: int = 0
    checkpoints: int = 0
    pending_writes: int = 0
    missing: int = 0  # in the source, not in the destination
    extra: int = 0  # in the destination's copy of a source thread, not in the source
    mismatches: int = 0  # in both, not deep-equal
    sampled: bool = False
    seconds: float = 0.0
    examples: list[str] = field(default_factory=list)

    @property
    def bad(self) -> int:
        """Checkpoints missing, extra or different."""
        return self.missing + self.extra + self.mismatches

    @property
    def ok(self) -> bool:
        return self.bad == 0

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "ok": self.ok}


def verify(src: BaseCheckpointSaver, dst: BaseCheckpointSaver, *,
           threads: list[str] | None = None, sample: int | None = None, seed: int = 0,
           examples: int = 5, on_checkpoints: Progress | None = None) -> VerifyReport:
    """Compare every ``CheckpointTuple`` of ``src`` with ``dst``'s by deep equality.

    ``threads`` limits the check to those threads; ``sample`` to that many seeded-random ones.
    """
    started = time.perf_counter()
    report = VerifyReport(sampled=sample is not None)
    if threads is None and sample is not None:
        threads = sample_thread_ids(src, sample, seed)

    def example(text: str) -> None:
        if len(report.examples) < examples:
            report.examples.append(text)

    for page in _pages(threads if threads is not None else iter_thread_ids(src), READ_CHUNK):
        theirs = {c.thread_id: c for c in read_threads(dst, page)}
        for mine in read_threads(src, page):
            report.threads += 1
            other = _by_key(theirs[mine.thread_id])
            for key, t in _by_key(mine).items():
                report.checkpoints += 1
                report.pending_writes += len(t.pending_writes or [])
                got = other.pop(key, None)
                where = f"{mine.thread_id}/{key[0] or '-'}/{key[1]}"
                if got is None:
                    report.missing += 1
                    example(f"{where}: missing")
                elif diff := differences(t, got):
                    report.mismatches += 1
                    example(f"{where}: {', '.join(diff)} differ")
            report.extra += len(other)
            for ns, cid in sorted(other):
                example(f"{mine.thread_id}/{ns or '-'}/{cid}: not in the source")
            if on_checkpoints:
                on_checkpoints(len(mine.history))
    report.seconds = time.perf_counter() - started
    return report


# Each table with its primary key: what "no duplicates" and "the same rows" are checked on.
_PK = {"checkpoints": "thread_id, checkpoint_ns, checkpoint_id",
       "writes": "thread_id, checkpoint_ns, checkpoint_id, task_id, idx",
       "checkpoint_writes": "thread_id, checkpoint_ns, checkpoint_id, task_id, idx",
       "checkpoint_blobs": "thread_id, checkpoint_ns, channel, version"}


def _tables(saver: BaseCheckpointSaver) -> tuple[str, ...]:
    if isinstance(saver, SqliteSaver):
        return "checkpoints", "writes"
    if isinstance(saver, PostgresSaver):
        return "checkpoints", "checkpoint_blobs", "checkpoint_writes"
    raise CheckpointError(f"{type(saver).__name__} keeps no SQL tables to count: row checks "
                          "work on SqliteSaver and PostgresSaver.")


def duplicate_rows(saver: BaseCheckpointSaver) -> dict[str, int]:
    """Per table, COUNT(*) minus COUNT(DISTINCT primary key): rows stored twice."""
    out = {}
    for table in _tables(saver):
        # Table and key names come from _PK, never from user text.
        sql = (f"SELECT count(*) - (SELECT count(*) FROM (SELECT DISTINCT {_PK[table]} "  # noqa: S608
               f"FROM {table}) AS k) FROM {table}")
        out[table] = _query(saver, sql, ())[0][0]
    return out


def row_digests(saver: BaseCheckpointSaver, threads: list[str] | None = None) -> dict[str, str]:
    """A SHA-256 of every row of every table (of ``threads``, or all), in key order.

    Two databases with equal digests hold byte-for-byte the same rows: how the batched path
    is shown to write exactly what ``put``/``put_writes`` write.
    """
    import hashlib

    out = {}
    sqlite = isinstance(saver, SqliteSaver)
    for table in _tables(saver):
        where = ("" if threads is None else "WHERE thread_id IN (SELECT value FROM json_each(?))"
                 if sqlite else "WHERE thread_id = ANY(%s)")
        arg: tuple[Any, ...] = () if threads is None else (
            json.dumps(threads) if sqlite else threads,)
        digest = hashlib.sha256()
        # Table and key names come from _PK; the thread ids are a parameter.
        for row in _query(saver, f"SELECT * FROM {table} {where} ORDER BY {_PK[table]}",  # noqa: S608
                          arg):
            digest.update(repr(row).encode())
        out[table] = digest.hexdigest()
    return out


def iter_checkpoints(saver: BaseCheckpointSaver, threads: list[str]
                     ) -> Iterator[CheckpointTuple]:
    """Every checkpoint of ``threads``, thread by thread, parents first."""
    for copy in read_threads(saver, threads):
        yield from copy.history


# --- a demo source: real graph runs, for the lesson, the tests and a first trial ------------

DEMO_NAMES = ("Alice", "Bruno", "Chen", "Dana", "Emeka", "Farah", "Goran", "Hana")
DEMO_CITIES = ("Lisbon", "Osaka", "Lima", "Oslo", "Accra", "Quito", "Riga")
DEMO_SPECIAL = ["failed", "paused", "subgraph"]  # thread ids besides chat-NNNNN


def _cfg(thread: str) -> dict[str, Any]:
    return {"configurable": {"thread_id": thread}}


class Fan(TypedDict, total=False):
    done: Annotated[list[str], operator.add]
    x: int


def fan_graph(saver: Any, ledger: Ledger) -> CompiledStateGraph:
    """``good`` and ``flaky`` run in one superstep; ``flaky`` fails on its first attempt."""
    def good(state: Fan, config: RunnableConfig) -> Fan:
        ledger.record(config["configurable"]["thread_id"], "good", "start")
        return {"done": ["good"]}

    def flaky(state: Fan, config: RunnableConfig) -> Fan:
        thread = config["configurable"]["thread_id"]
        ledger.record(thread, "flaky", "start")
        if ledger.count(thread)["flaky"] == 1:
            raise RuntimeError("flaky: the first attempt fails")
        return {"done": ["flaky"]}

    builder = StateGraph(Fan).add_node("good", good).add_node("flaky", flaky)
    return builder.add_edge(START, "good").add_edge(START, "flaky").compile(checkpointer=saver)


def sub_graph(saver: Any) -> CompiledStateGraph:
    """A node that is a compiled graph: its checkpoints are stored under its own namespace."""
    inner = StateGraph(Fan).add_node("inc", lambda s: {"x": s["x"] + 1}).add_edge(START, "inc")
    return StateGraph(Fan).add_node("sub", inner.compile()).add_edge(START, "sub").compile(
        checkpointer=saver)


def chat_shard(db: str, first: int, count: int, turns: int) -> None:
    """Real chat-graph runs on threads chat-<first>... into one shard file (one process)."""
    with open_sqlite_saver(db) as saver:
        saver.conn.execute("PRAGMA synchronous = NORMAL")
        graph = build_chat_graph(saver)
        for i in range(first, first + count):
            for text in (f"Hi, my name is {DEMO_NAMES[i % 8]}.", f"I live in {DEMO_CITIES[i % 7]}.",
                         "What's my name?")[:turns]:
                graph.invoke({"messages": [("user", text)]}, _cfg(f"chat-{i:05d}"))


def build_demo_source(db: Path, ledger: Ledger, threads: int, turns: int = 3) -> None:
    """A SQLite checkpoint file from real graph runs: ``threads`` chat conversations (two
    processes, merged row for row), a paused approval, a failed step, a subgraph."""
    shards, half = [str(db.with_name(f"shard{k}.sqlite")) for k in (0, 1)], (threads + 1) // 2
    # Two fresh interpreters (nothing inherited, no __main__ guard needed), one shard each.
    children = [start_child("shared.ops.migrate:chat_shard", db=shard, first=first,
                            count=count, turns=turns)
                for shard, first, count in zip(shards, (0, half), (half, threads - half),
                                               strict=True)]
    try:
        for child in children:
            child_result(child, "shared.ops.migrate:chat_shard", timeout=1800)
    finally:
        for child in children:  # one failed: do not leave the other running
            if child.poll() is None:
                child.kill()
                child.communicate()
    with open_sqlite_saver(db) as saver:
        for shard in shards:  # the rows exactly as the graph wrote them
            saver.conn.execute("ATTACH ? AS shard", (shard,))
            saver.conn.execute("INSERT INTO checkpoints SELECT * FROM shard.checkpoints")
            saver.conn.execute("INSERT INTO writes SELECT * FROM shard.writes")
            saver.conn.commit()
            saver.conn.execute("DETACH shard")
            for leftover in Path(shard).parent.glob(Path(shard).name + "*"):
                leftover.unlink()  # merged: the shard (and any -wal/-shm) is not needed
        build_approval_graph(saver, ledger, "interrupt").invoke(
            {"request": "Refund order 7 for 30 EUR"}, _cfg("paused"))
        with suppress(RuntimeError):  # the failure: "good"'s writes stay as pending writes
            fan_graph(saver, ledger).invoke({"done": []}, _cfg("failed"))
        sub_graph(saver).invoke({"x": 1}, _cfg("subgraph"))


__all__ = [
    "DEMO_NAMES",
    "DEMO_SPECIAL",
    "MigrationConflict",
    "MigrationReport",
    "ThreadCopy",
    "VerifyReport",
    "build_demo_source",
    "copy_thread",
    "count_rows",
    "differences",
    "duplicate_rows",
    "iter_checkpoints",
    "iter_thread_ids",
    "migrate",
    "preflight",
    "read_threads",
    "row_digests",
    "sample_thread_ids",
    "thread_history",
    "thread_ids",
    "verify",
]
