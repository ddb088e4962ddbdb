"""Move every checkpoint from one saver to another as stored bytes; ``verify`` proves the copy.

    report = migrate(SqliteSaver(conn), PostgresSaver(pg_conn))     # SQLite <-> PostgreSQL
    assert verify(src, dst).ok                                       # shared.ops.verify

What is moved, per thread and namespace (subgraphs too), oldest first so a parent always
lands before its children: every checkpoint with its metadata and parent, and the pending
writes stored against it, each with its index and task path.

Bytes, never objects. Between ``SqliteSaver`` and ``PostgresSaver`` databases nothing is
decoded (``shared.ops.rows``): an application type the migrator cannot import arrives as the
application stored it, and a tampered row cannot run code here. SQLite -> SQLite writes the
same bytes; between SQLite and PostgreSQL each channel value keeps its serialized bytes (type
tag and payload), split into ``checkpoint_blobs`` or joined into one msgpack body exactly as
``put`` would have done. What cannot cross without being decoded (a ``pickle`` or encrypted
body bound for PostgreSQL, a ``pickle`` blob bound for SQLite) and text PostgreSQL cannot hold
(a NUL character in an id) are found before anything is written, and refused with the list.

new_versions. ``PostgresSaver`` stores a channel's value once per version. For each
checkpoint the migrator hands over every channel version it has not yet written for that
thread and namespace, so each blob is written once.

Batches, one transaction each. ``batch`` checkpoints (whole threads) go in ONE transaction:
on PostgreSQL COPYed (binary) straight into the tables for threads that have no row there
yet, else into temporary staging tables applied with the saver's own ``ON CONFLICT`` rules;
while PostgreSQL writes batch N, batch N+1 is read and built. A SIGKILL rolls the batch back,
so the destination only ever holds complete threads. Other savers go through the public API
(``put_writes`` then ``put``, so a visible checkpoint has its writes): that path decodes with
the savers' own serializers, which is the caller's choice of what to trust.

Idempotent, and safe to point at a database in use. Before writing anything, the migrator
reads which source threads the destination already holds. A thread holding exactly the
source's checkpoints was copied before: skipped. A thread holding a part of them, equal so
far, is completed. A thread holding anything else is refused with ``MigrationConflict``
naming it, before a single row is written. ``progress_file`` (optional) records finished
threads so that a third run does not even compare them. Memory stays flat: thread ids are
paged, histories are read a few dozen threads at a time, and at most two batches are held.
"""

from __future__ import annotations

import json
import operator
import os
import queue
import threading
import time
from collections.abc import Callable, Iterable
from contextlib import suppress
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Annotated, Any, TypedDict

from langchain_core.runnables import RunnableConfig
from langgraph.checkpoint.base import BaseCheckpointSaver
from langgraph.checkpoint.postgres import PostgresSaver
from langgraph.checkpoint.sqlite import SqliteSaver
from langgraph.graph import START, StateGraph
from langgraph.graph.state import CompiledStateGraph

from shared.errors import CheckpointError
from shared.graph import Ledger, build_approval_graph, build_chat_graph
from shared.ops.rows import (
    RawThread,
    comparable,
    differences,
    in_list,
    is_sql,
    postgres_rows,
    query,
    read_raw,
    sqlite_rows,
)
from shared.ops.threads import (
    PAGE,
    READ_CHUNK,
    Progress,
    ThreadCopy,
    as_rows,
    count_rows,
    has_tables,
    iter_thread_ids,
    pages,
    read_any,
    read_objects,
    sample_thread_ids,
    thread_ids,
)
from shared.ops.verify import VerifyReport, duplicate_rows, row_digests, verify
from shared.proc import child_result, start_child
from shared.savers.inert import EMBEDDABLE
from shared.savers.sqlite import open_sqlite_saver

Key = tuple[str, str]  # (checkpoint_ns, checkpoint_id) inside one thread


class MigrationConflict(CheckpointError):
    """The destination already holds different data for a thread; nothing was written."""


class MigrationRefused(CheckpointError):
    """The source holds data the destination cannot take without decoding; nothing written."""


def _is_plain(saver: BaseCheckpointSaver, cls: type, *methods: str) -> bool:
    """``saver`` is a ``cls`` whose given methods are the library's own (not overridden)."""
    return isinstance(saver, cls) and all(
        getattr(type(saver), m) is getattr(cls, m) for m in methods)


# --- what each batch holds, and the sinks that write it ---------------------------------------

@dataclass
class _Counts:
    checkpoints: int = 0
    writes: int = 0
    blobs: int = 0  # channel versions handed over in new_versions


@dataclass
class _Batch:
    """Threads to write, with the rows a batched sink has built for them (CPU work, done)."""

    copies: list[Any]  # RawThread for the row sinks, ThreadCopy for the public API
    counts: _Counts
    rows: dict[str, list[tuple[Any, ...]]] = field(default_factory=dict)


class _ApiSink:
    """Any saver, through ``put_writes`` then ``put``: a visible checkpoint has its writes."""

    kind = "public API"
    background = False  # commit in the caller's thread: a foreign saver may expect that
    rows = False  # takes CheckpointTuples (objects), not stored rows

    def __init__(self, saver: BaseCheckpointSaver) -> None:
        self.saver = saver

    def keys(self, ids: list[str]) -> dict[str, set[Key]]:
        if is_sql(self.saver):
            return _sql_keys(self.saver, ids)
        found = {t: c.keys() for t, c in read_any(self.saver, ids).items()}
        return {t: k for t, k in found.items() if k}

    def prepare(self) -> None:
        if is_sql(self.saver):
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
                conf = t.config["configurable"]
                ns, cid = conf["checkpoint_ns"], conf["checkpoint_id"]
                config = {"configurable": {"thread_id": copy.thread_id, "checkpoint_ns": ns,
                                           "checkpoint_id": cid}}
                by_task: dict[str, list[tuple[str, Any]]] = {}
                for task_id, channel, value in t.pending_writes or []:
                    by_task.setdefault(task_id, []).append((channel, value))
                for task_id, task_writes in by_task.items():
                    self.saver.put_writes(config, task_writes, task_id,
                                          copy.paths.get((ns, cid, task_id), ""))
                versions = {ch: v for ch, v in t.checkpoint["channel_versions"].items()
                            if (ns, ch, str(v)) not in written}
                written.update((ns, ch, str(v)) for ch, v in versions.items()
                               if ch in t.checkpoint["channel_values"])
                parent = t.parent_config["configurable"]["checkpoint_id"] if t.parent_config \
                    else None
                target = {"configurable": {"thread_id": copy.thread_id, "checkpoint_ns": ns,
                                           **({"checkpoint_id": parent} if parent else {})}}
                self.saver.put(target, t.checkpoint, t.metadata, versions)
                batch.counts.blobs += len(versions)


def _sql_keys(saver: BaseCheckpointSaver, ids: list[str]) -> dict[str, set[Key]]:
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


class _PostgresSink(_ApiSink):
    """``PostgresSaver``: the rows ``put``/``put_writes`` would write, one transaction a batch."""

    kind = "batched (PostgreSQL)"
    background = True  # the next batch is read and built while this one is written
    rows = True
    saver: PostgresSaver

    def __init__(self, saver: BaseCheckpointSaver) -> None:
        super().__init__(saver)
        self.clean: set[str] = set()  # threads without a single row in any table

    def keys(self, ids: list[str]) -> dict[str, set[Key]]:
        if not has_tables(self.saver):
            self.clean.update(ids)
            return {}
        found = _sql_keys(self.saver, ids)
        # Writes or blobs without a checkpoint (an older copy killed half way) are not clean.
        self.clean.update(set(ids) - set(found) - {r[0] for r in query(
            self.saver, "SELECT thread_id FROM checkpoint_writes WHERE thread_id = ANY(%s) "
                        "UNION SELECT thread_id FROM checkpoint_blobs WHERE thread_id = ANY(%s)",
            (ids, ids))})
        return found

    def build(self, copies: list[RawThread]) -> _Batch:
        batch = _Batch(list(copies), _Counts(), {"blobs": [], "checkpoints": [], "writes": []})
        for copy in copies:
            batch.counts.blobs += postgres_rows(copy, batch.rows)
            batch.counts.checkpoints += len(copy.checkpoints)
            batch.counts.writes += sum(len(c.writes) for c in copy.checkpoints)
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


class _SqliteSink(_ApiSink):
    """``SqliteSaver``: the rows ``put``/``put_writes`` would write, one transaction a batch."""

    kind = "batched (SQLite)"
    rows = True
    saver: SqliteSaver
    _COLUMNS = ("(thread_id, checkpoint_ns, checkpoint_id, task_id, task_path, idx, channel, "
                "type, value) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)")

    def build(self, copies: list[RawThread]) -> _Batch:
        batch = _Batch(list(copies), _Counts(), {"checkpoints": [], "upserts": [], "inserts": []})
        for copy in copies:
            batch.counts.blobs += sqlite_rows(copy, batch.rows)
            batch.counts.checkpoints += len(copy.checkpoints)
            batch.counts.writes += sum(len(c.writes) for c in copy.checkpoints)
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


def _reads_bytes(src: BaseCheckpointSaver, sink: _ApiSink, objects: bool) -> bool:
    return sink.rows and is_sql(src) and not objects


def _read(sink: _ApiSink, src: BaseCheckpointSaver, ids: list[str], objects: bool
          ) -> Iterable[RawThread | ThreadCopy]:
    """What the sink takes: stored rows as they are, or the source's objects (re-serialized
    for a row sink: a source that keeps no SQL rows, or ``objects=True``)."""
    for i in range(0, len(ids), READ_CHUNK):
        chunk = ids[i:i + READ_CHUNK]
        if _reads_bytes(src, sink, objects):
            yield from read_raw(src, chunk).values()
        elif sink.rows:
            yield from (as_rows(c) for c in read_objects(src, chunk))
        else:
            yield from read_objects(src, chunk)


def _size(copy: RawThread | ThreadCopy) -> int:
    return len(copy.checkpoints) if isinstance(copy, RawThread) else len(copy.history)


def copy_thread(src: BaseCheckpointSaver, dst: BaseCheckpointSaver, thread_id: str
                ) -> tuple[int, int, int]:
    """Copy one thread through the public API; returns (checkpoints, writes, versions)."""
    sink = _ApiSink(dst)
    batch = sink.build(list(read_objects(src, [thread_id])))
    sink.commit(batch)
    return batch.counts.checkpoints, batch.counts.writes, batch.counts.blobs


# --- before anything is written: what the destination cannot take, what it already has -------

def _examples(rows: list[tuple[Any, ...]], describe: Callable[[tuple[Any, ...]], str]) -> str:
    shown = "; ".join(describe(r) for r in rows[:5])
    return shown + (f"; and {len(rows) - 5} more" if len(rows) > 5 else "")


def _sqlite_nul_rows(src: SqliteSaver) -> list[tuple[Any, ...]]:
    nul = "instr(CAST({} AS BLOB), X'00') > 0"
    ids = " OR ".join(nul.format(c) for c in ("thread_id", "checkpoint_ns", "checkpoint_id"))
    w = " OR ".join(nul.format(c) for c in ("thread_id", "checkpoint_ns", "checkpoint_id",
                                            "task_id", "channel"))
    return query(src, f"SELECT DISTINCT thread_id FROM checkpoints WHERE {ids} UNION "  # noqa: S608
                      f"SELECT DISTINCT thread_id FROM writes WHERE {w} ORDER BY 1")


def refuse_unmovable(src: BaseCheckpointSaver, dst: BaseCheckpointSaver) -> None:
    """Refuse (``MigrationRefused``) data the destination cannot store without decoding it,
    listing where it is; reads only (one pass over the id and type columns)."""
    if isinstance(src, SqliteSaver) and isinstance(dst, PostgresSaver) and has_tables(src):
        if bad := _sqlite_nul_rows(src):
            raise MigrationRefused(
                f"{len(bad)} thread(s) hold a NUL character in an id, which PostgreSQL cannot "
                f"store in text ({_examples(bad, lambda r: repr(r[0]))}): nothing was written; "
                "rename or delete those threads in the source, or keep them on SQLite.")
        if bad := query(src, "SELECT thread_id, checkpoint_id, type FROM checkpoints WHERE "
                             "type IS NOT 'msgpack' ORDER BY 1, 2"):
            raise MigrationRefused(
                f"{len(bad)} checkpoint(s) are stored in a form that cannot be split into "
                "PostgreSQL's per-channel rows without running the serializer ("
                + _examples(bad, lambda r: f"thread {r[0]!r} checkpoint {r[1]} as {r[2]!r}")
                + "): nothing was written; migrate from code with the application's serializer.")
    if isinstance(src, PostgresSaver) and isinstance(dst, SqliteSaver) and has_tables(src):
        allowed = sorted(EMBEDDABLE | {"empty"})
        if bad := query(src, "SELECT thread_id, channel, version, type FROM checkpoint_blobs "
                             "WHERE NOT type = ANY(%s) ORDER BY 1, 2, 3", (allowed,)):
            raise MigrationRefused(
                f"{len(bad)} channel value(s) are stored in a form that cannot be embedded in "
                "a SQLite msgpack checkpoint without running the serializer ("
                + _examples(bad, lambda r: f"thread {r[0]!r} channel {r[1]!r} version {r[2]} "
                                           f"as {r[3]!r}")
                + "): nothing was written; migrate from code with the application's serializer.")


def preflight(src: BaseCheckpointSaver, dst: BaseCheckpointSaver, *,
              threads: list[str] | None = None, skip: set[str] | None = None,
              batched: bool = True, objects: bool = False) -> set[str]:
    """Refuse (``MigrationConflict``, ``MigrationRefused``) before anything is written.

    Reads only. Returns the threads ``dst`` holds a part of, equal so far, to complete.
    """
    sink, skip, incomplete = _sink(dst, batched), skip or set(), set()
    if _reads_bytes(src, sink, objects):
        refuse_unmovable(src, dst)
    for page in pages(threads if threads is not None else iter_thread_ids(src)):
        existing = sink.keys([t for t in page if t not in skip])
        if not existing:
            continue
        ids = list(existing)
        for i in range(0, len(ids), READ_CHUNK):
            chunk = ids[i:i + READ_CHUNK]
            theirs = read_any(dst, chunk, pair=src)
            for mine in read_any(src, chunk, pair=dst).values():
                if reason := _conflict(mine, theirs[mine.thread_id]):
                    raise MigrationConflict(
                        f"The destination already holds different data for thread "
                        f"{mine.thread_id!r} ({reason}): nothing was written; migrate into an "
                        "empty database, or delete that thread from the destination first.")
                if comparable(mine) != comparable(theirs[mine.thread_id]):
                    incomplete.add(mine.thread_id)
    return incomplete


def _conflict(src: RawThread, dst: RawThread) -> str | None:
    """Why ``dst``'s copy of a thread is not (a part of) ``src``'s; None if it is."""
    if extra := dst.keys() - src.keys():
        return f"{len(extra)} checkpoint(s) the source does not have, e.g. {min(extra)[1]}"
    mine = comparable(src)
    for key, entry in comparable(dst).items():
        diff = differences(mine[key], entry)
        # Writes the destination lacks are completed; writes the source lacks are a conflict.
        if diff == ["pending_writes"] and all(w in mine[key][3] for w in entry[3]):
            continue
        if diff:
            return f"checkpoint {key[1]} differs in {', '.join(diff)}"
    return None


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
            batched: bool = True, objects: bool = False,
            on_commit: Callable[[MigrationReport], None] | None = None) -> MigrationReport:
    """Copy every thread of ``src`` into ``dst``, ``batch`` checkpoints per transaction.

    Raises ``MigrationConflict`` / ``MigrationRefused`` before writing anything if ``dst``
    holds different data or cannot take the source's. ``batched=False`` forces the
    public-API path (``put_writes`` + ``put``, objects) on any saver. ``objects=True`` reads
    the source through ``list()`` (its serializer decodes every value, which is then
    serialized again), as a source that keeps no SQL rows is read; it is how the migrator
    worked before it moved bytes, kept to measure the difference. ``on_commit`` sees the
    report after each committed batch (what an interrupted run has kept).
    """
    if batch < 1:
        raise CheckpointError(f"batch must be at least 1 checkpoint, got {batch}.")
    started = time.perf_counter()
    sink = _sink(dst, batched)
    report = MigrationReport(path=sink.kind + ("" if not sink.rows else ", stored bytes"
                                               if _reads_bytes(src, sink, objects)
                                               else ", decoded objects"))
    done = _load_progress(progress_file)
    incomplete = preflight(src, dst, threads=threads, skip=done, batched=batched,
                           objects=objects)
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
        if on_commit:
            on_commit(report)

    committer, pending, size = _Committer(sink, committed), [], 0
    try:
        for page in pages(threads if threads is not None else iter_thread_ids(src)):
            report.threads_skipped += sum(t in done for t in page)
            todo = [t for t in page if t not in done]
            existing = sink.keys(todo)
            for copy in _read(sink, src, todo, objects):
                if not _size(copy):
                    continue
                keys = {(k[0], k[1]) for k in (copy.keys() if isinstance(copy, RawThread) else
                                               _object_keys(copy))}
                if existing.get(copy.thread_id) == keys and copy.thread_id not in incomplete:
                    report.threads_skipped += 1  # complete: preflight compared it
                    if on_checkpoints:
                        on_checkpoints(_size(copy))
                    continue
                pending.append(copy)
                size += _size(copy)
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


def _object_keys(copy: ThreadCopy) -> set[Key]:
    return {(t.config["configurable"]["checkpoint_ns"], t.config["configurable"]["checkpoint_id"])
            for t in copy.history}


def iter_checkpoints(saver: BaseCheckpointSaver, threads: list[str]) -> Iterable[Any]:
    """Every checkpoint of ``threads`` as ``CheckpointTuple`` (the saver's own objects)."""
    for copy in read_objects(saver, threads):
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
    "PAGE",
    "MigrationConflict",
    "MigrationRefused",
    "MigrationReport",
    "ThreadCopy",
    "VerifyReport",
    "build_demo_source",
    "copy_thread",
    "count_rows",
    "duplicate_rows",
    "iter_checkpoints",
    "iter_thread_ids",
    "migrate",
    "preflight",
    "refuse_unmovable",
    "row_digests",
    "sample_thread_ids",
    "thread_ids",
    "verify",
]
