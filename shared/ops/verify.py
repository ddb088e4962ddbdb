"""Verify a copy: every checkpoint of the source, compared with the copy's by its stored bytes.

    report = verify(src, dst)            # SqliteSaver / PostgresSaver, in any combination
    assert report.ok, report.examples

Between SQL savers nothing is decoded: each checkpoint's outer fields, each channel value's
serialized bytes (type tag and payload), its metadata (JSON), its parent and its pending
writes (type, bytes, index and task path) are compared, so a value whose type changed, or an
object that came back as a plain dict, is a difference. A row that cannot be read safely
(a ``pickle`` or encrypted body) is compared by its stored bytes and counted as
``unreadable``. Threads that exist only in the copy are counted too (a full verify only).
Savers that keep no SQL rows are read through ``list()`` (their own serializer) and compared
in the same form.

Two differences that are storage, not data, are not counted: metadata's legacy ``writes``
key, which ``PostgresSaver`` never stores, and a DeltaChannel snapshot that ``PostgresSaver``
shows at every checkpoint sharing its channel version (``rows.comparable``).
"""

from __future__ import annotations

import hashlib
import time
from dataclasses import asdict, dataclass, field
from typing import Any

from langgraph.checkpoint.base import BaseCheckpointSaver
from langgraph.checkpoint.postgres import PostgresSaver
from langgraph.checkpoint.sqlite import SqliteSaver

from shared.errors import CheckpointError
from shared.savers.reading import (
    READ_CHUNK,
    Progress,
    existing_threads,
    iter_thread_ids,
    pages,
    read_any,
    sample_thread_ids,
)
from shared.savers.rows import comparable, differences, in_list, query


@dataclass
class VerifyReport:
    threads: int = 0
    checkpoints: int = 0
    pending_writes: int = 0
    missing: int = 0  # in the source, not in the destination
    extra: int = 0  # in the destination's copy of a source thread, not in the source
    mismatches: int = 0  # in both, not equal
    extra_threads: int = 0  # threads only the destination has (full verify only)
    unreadable: int = 0  # source checkpoints compared by their stored bytes only
    sampled: bool = False
    seconds: float = 0.0
    examples: list[str] = field(default_factory=list)

    @property
    def bad(self) -> int:
        """Checkpoints missing, extra or different, and threads only the copy has."""
        return self.missing + self.extra + self.mismatches + self.extra_threads

    @property
    def ok(self) -> bool:
        return self.bad == 0

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "ok": self.ok}


def verify(src: BaseCheckpointSaver, dst: BaseCheckpointSaver, *,
           threads: list[str] | None = None, sample: int | None = None, seed: int = 0,
           examples: int = 5, on_checkpoints: Progress | None = None) -> VerifyReport:
    """Compare every checkpoint of ``src`` with ``dst``'s.

    ``threads`` limits the check to those threads; ``sample`` to that many seeded-random ones.
    """
    started = time.perf_counter()
    report = VerifyReport(sampled=sample is not None)
    if threads is None and sample is not None:
        threads = sample_thread_ids(src, sample, seed)

    def example(text: str) -> None:
        if len(report.examples) < examples:
            report.examples.append(text)

    for page in pages(threads if threads is not None else iter_thread_ids(src), READ_CHUNK):
        theirs = read_any(dst, page, pair=src)
        for mine in read_any(src, page, pair=dst).values():
            report.threads += 1
            other = comparable(theirs[mine.thread_id])
            for c in mine.checkpoints:
                report.unreadable += c.problem is not None
                if c.problem:
                    example(f"{mine.where(c)}: compared by its stored bytes only ({c.problem})")
            for key, entry in comparable(mine).items():
                report.checkpoints += 1
                report.pending_writes += len(entry[3])
                got = other.pop(key, None)
                where = f"{mine.thread_id}/{key[0] or '-'}/{key[1]}"
                if got is None:
                    report.missing += 1
                    example(f"{where}: missing")
                elif diff := differences(entry, got):
                    report.mismatches += 1
                    example(f"{where}: {', '.join(diff)} differ")
            report.extra += len(other)
            for ns, cid in sorted(other):
                example(f"{mine.thread_id}/{ns or '-'}/{cid}: not in the source")
            if on_checkpoints:
                on_checkpoints(len(mine.checkpoints))
    if threads is None:  # a full verify: the copy must not hold threads the source lacks
        for page in pages(iter_thread_ids(dst)):
            for thread_id in sorted(set(page) - existing_threads(src, page)):
                report.extra_threads += 1
                example(f"thread {thread_id!r}: only in the copy")
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
        out[table] = query(saver, sql)[0][0]
    return out


def row_digests(saver: BaseCheckpointSaver, threads: list[str] | None = None) -> dict[str, str]:
    """A SHA-256 of every row of every table (of ``threads``, or all), in key order.

    Two databases with equal digests hold byte-for-byte the same rows: how the batched path
    is shown to write exactly what ``put``/``put_writes`` write.
    """
    out = {}
    sqlite = isinstance(saver, SqliteSaver)
    for table in _tables(saver):
        where, arg = "", ()
        if threads is not None:
            where = f"WHERE thread_id IN {in_list(threads)}" if sqlite else \
                "WHERE thread_id = ANY(%s)"
            arg = tuple(threads) if sqlite else (threads,)
        digest = hashlib.sha256()
        # Table and key names come from _PK; the thread ids are parameters.
        for row in query(saver, f"SELECT * FROM {table} {where} ORDER BY {_PK[table]}",  # noqa: S608
                         arg):
            digest.update(repr(row).encode())
        out[table] = digest.hexdigest()
    return out


__all__ = ["VerifyReport", "duplicate_rows", "row_digests", "verify"]
