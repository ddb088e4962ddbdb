"""Move every checkpoint from one saver to another, through the savers' public API, and verify.

    report = migrate(SqliteSaver(conn), PostgresSaver(pg_conn), progress_file=Path("m.json"))
    assert verify(src, dst).mismatches == 0

What is moved, per thread and namespace, oldest first (a parent before its children):
every checkpoint with its metadata and parent, and the pending writes stored against it,
one ``put_writes`` per task in the source's order (so each write keeps its index).

Why not ``dst.put(config, checkpoint, metadata, {})``, as a naive copy does: savers that
keep channel values apart from the checkpoint (``PostgresSaver``'s ``checkpoint_blobs``)
store only the channels named in ``new_versions`` and silently drop the rest. The migrator
passes, for each checkpoint, every channel version that it has not yet written for that
thread, so each (channel, version) blob is written exactly once.

Task paths: ``CheckpointTuple.pending_writes`` carries (task_id, channel, value) but not the
task path, which orders the writes of parallel tasks. When the source is a ``SqliteSaver``
the migrator reads the paths from its ``writes`` table; other sources get "" (the order of
their writes then follows task ids, as for a database written before task paths existed).

Resumable and idempotent: every write is an upsert keyed by its primary key, and the threads
finished are recorded in ``progress_file`` after each batch; a run killed at any point and
started again skips the finished threads and redoes the unfinished one, creating nothing twice.
"""

from __future__ import annotations

import json
import os
import sqlite3
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from langgraph.checkpoint.base import BaseCheckpointSaver, CheckpointTuple
from langgraph.checkpoint.sqlite import SqliteSaver

Progress = Callable[[int], None]


def thread_ids(saver: BaseCheckpointSaver) -> list[str]:
    """Every thread of ``saver``, sorted (one streaming pass over ``list(None)``)."""
    if isinstance(saver, SqliteSaver):  # the same answer, without decoding every checkpoint
        with saver.lock:
            return [r[0] for r in saver.conn.execute(
                "SELECT DISTINCT thread_id FROM checkpoints ORDER BY thread_id")]
    return sorted({t.config["configurable"]["thread_id"] for t in saver.list(None)})


def thread_history(saver: BaseCheckpointSaver, thread_id: str) -> list[CheckpointTuple]:
    """Every checkpoint of a thread, every namespace, parents before children."""
    history = list(saver.list({"configurable": {"thread_id": thread_id}}))
    history.sort(key=lambda t: (t.config["configurable"]["checkpoint_ns"],
                                t.config["configurable"]["checkpoint_id"]))
    return history


def _task_paths(saver: BaseCheckpointSaver, thread_id: str) -> dict[tuple[str, str, str], str]:
    """(checkpoint_ns, checkpoint_id, task_id) -> task_path, where the source can tell."""
    if not isinstance(saver, SqliteSaver):
        return {}
    with saver.lock:
        try:
            rows = saver.conn.execute(
                "SELECT DISTINCT checkpoint_ns, checkpoint_id, task_id, task_path FROM writes "
                "WHERE thread_id = ?", (thread_id,)).fetchall()
        except sqlite3.OperationalError:  # a file from before task_path existed
            return {}
    return {(ns, cid, tid): path for ns, cid, tid, path in rows}


@dataclass
class MigrationReport:
    threads: int = 0
    threads_skipped: int = 0  # finished by an earlier, interrupted run
    checkpoints: int = 0
    writes: int = 0
    blobs: int = 0  # channel versions handed over in new_versions
    seconds: float = 0.0
    thread_errors: dict[str, str] = field(default_factory=dict)

    @property
    def checkpoints_per_s(self) -> float:
        return self.checkpoints / self.seconds if self.seconds else 0.0

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "checkpoints_per_s": round(self.checkpoints_per_s, 1)}


def copy_thread(src: BaseCheckpointSaver, dst: BaseCheckpointSaver, thread_id: str
                ) -> tuple[int, int, int]:
    """Copy one thread; returns (checkpoints, writes, channel versions) written."""
    paths = _task_paths(src, thread_id)
    written: set[tuple[str, str, str]] = set()  # (ns, channel, version) already handed over
    checkpoints = writes = blobs = 0
    for t in thread_history(src, thread_id):
        conf = t.config["configurable"]
        ns, cid = conf["checkpoint_ns"], conf["checkpoint_id"]
        parent = t.parent_config["configurable"]["checkpoint_id"] if t.parent_config else None
        target = {"configurable": {"thread_id": thread_id, "checkpoint_ns": ns,
                                   **({"checkpoint_id": parent} if parent else {})}}
        versions = {ch: v for ch, v in t.checkpoint["channel_versions"].items()
                    if (ns, ch, str(v)) not in written}
        saved = dst.put(target, t.checkpoint, t.metadata, versions)
        written.update((ns, ch, str(v)) for ch, v in versions.items())
        checkpoints, blobs = checkpoints + 1, blobs + len(versions)
        by_task: dict[str, list[tuple[str, Any]]] = {}
        for task_id, channel, value in t.pending_writes or []:
            by_task.setdefault(task_id, []).append((channel, value))
        for task_id, task_writes in by_task.items():
            dst.put_writes(saved, task_writes, task_id, paths.get((ns, cid, task_id), ""))
            writes += len(task_writes)
    return checkpoints, writes, blobs


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


def migrate(src: BaseCheckpointSaver, dst: BaseCheckpointSaver, *,
            progress_file: Path | None = None, batch: int = 1000,
            on_checkpoints: Progress | None = None,
            threads: list[str] | None = None) -> MigrationReport:
    """Copy every thread of ``src`` into ``dst``; resumable through ``progress_file``."""
    started = time.perf_counter()
    report = MigrationReport()
    done = _load_progress(progress_file)
    pending_since_save = 0
    for thread_id in threads if threads is not None else thread_ids(src):
        if thread_id in done:
            report.threads_skipped += 1
            continue
        c, w, b = copy_thread(src, dst, thread_id)
        report.threads, report.checkpoints = report.threads + 1, report.checkpoints + c
        report.writes, report.blobs = report.writes + w, report.blobs + b
        done.add(thread_id)
        pending_since_save += c
        if on_checkpoints:
            on_checkpoints(c)
        if pending_since_save >= batch:
            _save_progress(progress_file, done)
            pending_since_save = 0
    _save_progress(progress_file, done)
    report.seconds = time.perf_counter() - started
    return report


# --- verification -------------------------------------------------------------------------------

@dataclass
class VerifyReport:
    threads: int = 0
    checkpoints: int = 0
    missing: int = 0
    mismatches: int = 0
    examples: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _comparable(t: CheckpointTuple) -> tuple[Any, ...]:
    parent = t.parent_config["configurable"]["checkpoint_id"] if t.parent_config else None
    return (t.checkpoint, dict(t.metadata), parent, list(t.pending_writes or []))


def _differences(a: CheckpointTuple, b: CheckpointTuple) -> list[str]:
    names = ("checkpoint", "metadata", "parent", "pending_writes")
    return [n for n, x, y in zip(names, _comparable(a), _comparable(b), strict=True) if x != y]


def iter_checkpoints(saver: BaseCheckpointSaver, threads: list[str]
                     ) -> Iterator[CheckpointTuple]:
    for thread_id in threads:
        yield from thread_history(saver, thread_id)


def verify(src: BaseCheckpointSaver, dst: BaseCheckpointSaver, *,
           threads: list[str] | None = None, examples: int = 5,
           on_checkpoints: Progress | None = None) -> VerifyReport:
    """Compare every ``CheckpointTuple`` of ``src`` with ``dst``'s by deep equality."""
    report = VerifyReport()
    for thread_id in threads if threads is not None else thread_ids(src):
        report.threads += 1
        history = thread_history(src, thread_id)
        for t in history:
            report.checkpoints += 1
            got = dst.get_tuple(t.config)
            if got is None:
                report.missing += 1
                if len(report.examples) < examples:
                    report.examples.append(f"{thread_id}/{t.config['configurable']['checkpoint_id']}"
                                           ": missing")
                continue
            diff = _differences(t, got)
            if diff:
                report.mismatches += 1
                if len(report.examples) < examples:
                    report.examples.append(f"{thread_id}/{t.config['configurable']['checkpoint_id']}"
                                           f": {', '.join(diff)} differ")
        if on_checkpoints:
            on_checkpoints(len(history))
    return report
