"""Move every checkpoint from one saver to another as stored bytes; ``verify`` proves the copy.

    report = migrate(SqliteSaver(conn), PostgresSaver(pg_conn))     # SQLite <-> PostgreSQL
    assert verify(src, dst).ok                                       # shared.ops.verify

What is moved, per thread and namespace (subgraphs too), oldest first so a parent always
lands before its children: every checkpoint with its metadata and parent, and the pending
writes stored against it, each with its index and task path.

Bytes, never objects. Between ``SqliteSaver`` and ``PostgresSaver`` databases nothing is
decoded (``shared.savers.rows``): an application type the migrator cannot import arrives as the
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
import os
import queue
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from langgraph.checkpoint.base import BaseCheckpointSaver
from langgraph.checkpoint.postgres import PostgresSaver
from langgraph.checkpoint.sqlite import SqliteSaver

from shared.errors import CheckpointError
from shared.ops.sinks import ApiSink, Batch, sink_for
from shared.ops.verify import VerifyReport, duplicate_rows, row_digests, verify
from shared.savers.copy import copy_thread
from shared.savers.inert import EMBEDDABLE
from shared.savers.reading import (
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
from shared.savers.rows import (
    RawThread,
    comparable,
    differences,
    is_sql,
    query,
    read_raw,
)

Key = tuple[str, str]  # (checkpoint_ns, checkpoint_id) inside one thread


class MigrationConflict(CheckpointError):
    """The destination already holds different data for a thread; nothing was written."""


class MigrationRefused(CheckpointError):
    """The source holds data the destination cannot take without decoding; nothing written."""


def _reads_bytes(src: BaseCheckpointSaver, sink: ApiSink, objects: bool) -> bool:
    return sink.rows and is_sql(src) and not objects


def _read(sink: ApiSink, src: BaseCheckpointSaver, ids: list[str], objects: bool
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
    sink, skip, incomplete = sink_for(dst, batched), skip or set(), set()
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


class Committer:
    """Commits batches in order, in a background thread when the sink allows it.

    The queue holds one batch: while batch N is written (PostgreSQL works in its own process,
    the client waits on the socket without the GIL), batch N+1 is read and built here, so
    both CPUs work and memory stays at about two batches.
    """

    def __init__(self, sink: ApiSink, done: Callable[[Batch], None]) -> None:
        self.sink, self.done = sink, done
        self.error: BaseException | None = None
        self.discard = False
        self.queue: queue.Queue[Batch | None] = queue.Queue(maxsize=1)
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

    def _commit(self, batch: Batch) -> None:
        self.sink.commit(batch)
        self.done(batch)

    def submit(self, batch: Batch) -> None:
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
    sink = sink_for(dst, batched)
    report = MigrationReport(path=sink.kind + ("" if not sink.rows else ", stored bytes"
                                               if _reads_bytes(src, sink, objects)
                                               else ", decoded objects"))
    done = _load_progress(progress_file)
    incomplete = preflight(src, dst, threads=threads, skip=done, batched=batched,
                           objects=objects)
    sink.prepare()

    def committed(b: Batch) -> None:  # runs after each commit, in the committing thread
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

    committer, pending, size = Committer(sink, committed), [], 0
    try:
        for page in pages(threads if threads is not None else iter_thread_ids(src)):
            report.threads_skipped += sum(t in done for t in page)
            todo = [t for t in page if t not in done]
            existing = sink.keys(todo)
            for copy in _read(sink, src, todo, objects):
                if not _size(copy):
                    continue
                if existing.get(copy.thread_id) == copy.keys() and copy.thread_id not in incomplete:
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


def iter_checkpoints(saver: BaseCheckpointSaver, threads: list[str]) -> Iterable[Any]:
    """Every checkpoint of ``threads`` as ``CheckpointTuple`` (the saver's own objects)."""
    for copy in read_objects(saver, threads):
        yield from copy.history


__all__ = [
    "PAGE",
    "Committer",
    "MigrationConflict",
    "MigrationRefused",
    "MigrationReport",
    "ThreadCopy",
    "VerifyReport",
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
