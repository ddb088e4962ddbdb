"""Which threads a checkpoint database holds, and reading them a page at a time.

Thread ids are paged in the database's own order, the first page without a lower bound, so
the empty thread id ``''`` is listed like any other; on SQLite every id travels as its own
parameter, so an id holding a NUL character is read whole. Between SQL savers threads are
read as stored rows (``rows.read_raw``); with any other saver, both sides of a comparison
are read through ``list()`` and re-serialized, so the two sides stay comparable.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

from langgraph.checkpoint.base import WRITES_IDX_MAP, BaseCheckpointSaver, CheckpointTuple
from langgraph.checkpoint.postgres import PostgresSaver
from langgraph.checkpoint.serde.jsonplus import JsonPlusSerializer
from langgraph.checkpoint.sqlite import SqliteSaver

from shared.savers.inert import from_typed
from shared.savers.rows import RawCheckpoint, RawThread, RawWrite, in_list, is_sql, query, read_raw

Progress = Callable[[int], None]
PAGE = 500  # thread ids per page when listing and when asking the destination what it has
READ_CHUNK = 32  # threads whose histories are read at a time


def pages(items: Iterable[str], size: int = PAGE) -> Iterator[list[str]]:
    page: list[str] = []
    for item in items:
        page.append(item)
        if len(page) >= size:
            yield page
            page = []
    if page:
        yield page


def has_tables(saver: BaseCheckpointSaver) -> bool:
    if isinstance(saver, SqliteSaver):
        names = {r[0] for r in query(saver, "SELECT name FROM sqlite_master WHERE "
                                            "type = 'table'")}
        return {"checkpoints", "writes"} <= names
    found = query(saver, "SELECT to_regclass('checkpoints') IS NOT NULL AND "
                         "to_regclass('checkpoint_writes') IS NOT NULL AND "
                         "to_regclass('checkpoint_blobs') IS NOT NULL")
    return bool(found[0][0])


def iter_thread_ids(saver: BaseCheckpointSaver, page: int = PAGE) -> Iterator[str]:
    """Every thread of ``saver`` in the database's order, paged for SQL savers (flat memory)."""
    if not is_sql(saver):  # the public API has no "list threads": one pass over every checkpoint
        yield from sorted({t.config["configurable"]["thread_id"] for t in saver.list(None)})
        return
    if not has_tables(saver):
        return
    mark = "?" if isinstance(saver, SqliteSaver) else "%s"
    first = f"SELECT DISTINCT thread_id FROM checkpoints ORDER BY thread_id LIMIT {int(page)}"  # noqa: S608
    after = (f"SELECT DISTINCT thread_id FROM checkpoints WHERE thread_id > {mark} "  # noqa: S608
             f"ORDER BY thread_id LIMIT {int(page)}")
    rows = query(saver, first)
    while True:
        yield from (r[0] for r in rows)
        if len(rows) < page:
            return
        rows = query(saver, after, (rows[-1][0],))


def thread_ids(saver: BaseCheckpointSaver) -> list[str]:
    """Every thread of ``saver``."""
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


def existing_threads(saver: BaseCheckpointSaver, ids: list[str]) -> set[str]:
    """Which of ``ids`` have at least one checkpoint in ``saver``."""
    if not ids:
        return set()
    if isinstance(saver, SqliteSaver):
        if not has_tables(saver):
            return set()
        return {r[0] for r in query(saver, "SELECT DISTINCT thread_id FROM checkpoints WHERE "  # noqa: S608
                                           f"thread_id IN {in_list(ids)}", ids)}
    if isinstance(saver, PostgresSaver):
        if not has_tables(saver):
            return set()
        return {r[0] for r in query(saver, "SELECT DISTINCT thread_id FROM checkpoints WHERE "
                                           "thread_id = ANY(%s)", (ids,))}
    return {t for t in ids if saver.get_tuple({"configurable": {"thread_id": t}})}


def count_rows(saver: BaseCheckpointSaver) -> dict[str, int] | None:
    """SELECT COUNT(*) of the saver's tables (checkpoints, writes, blobs); None if not SQL."""
    if isinstance(saver, SqliteSaver):
        tables = {"checkpoints": "checkpoints", "writes": "writes"}
    elif isinstance(saver, PostgresSaver):
        tables = {"checkpoints": "checkpoints", "writes": "checkpoint_writes",
                  "blobs": "checkpoint_blobs"}
    else:
        return None
    if not has_tables(saver):
        return dict.fromkeys(tables, 0)
    # Table names are the constants above, never user text.
    return {k: query(saver, f"SELECT count(*) FROM {t}")[0][0]  # noqa: S608
            for k, t in tables.items()}


# --- through the public API: objects, built by the saver's own serializer -------------------

@dataclass
class ThreadCopy:
    """One thread as ``list()`` returns it (parents first), with its task paths."""

    thread_id: str
    history: list[CheckpointTuple]
    paths: dict[tuple[str, str, str], str] = field(default_factory=dict)

    def keys(self) -> set[tuple[str, str]]:
        return {_key(t) for t in self.history}


def _key(t: CheckpointTuple) -> tuple[str, str]:
    conf = t.config["configurable"]
    return conf["checkpoint_ns"], conf["checkpoint_id"]


def read_objects(saver: BaseCheckpointSaver, ids: Iterable[str]) -> Iterator[ThreadCopy]:
    """Each thread's ``CheckpointTuple``s and task paths (for ``put``/``put_writes``)."""
    ids = list(ids)
    paths: dict[str, dict[tuple[str, str, str], str]] = {t: {} for t in ids}
    if ids and is_sql(saver) and has_tables(saver):  # task paths are not in CheckpointTuple
        sqlite = isinstance(saver, SqliteSaver)
        table = "writes" if sqlite else "checkpoint_writes"
        where = f"thread_id IN {in_list(ids)}" if sqlite else "thread_id = ANY(%s)"
        columns = {r[1] for r in query(saver, "PRAGMA table_info(writes)")} if sqlite else {
            "task_path"}
        if "task_path" in columns:
            for t, ns, cid, task, path in query(
                    saver, f"SELECT DISTINCT thread_id, checkpoint_ns, checkpoint_id, task_id, "  # noqa: S608
                           f"task_path FROM {table} WHERE {where}", ids if sqlite else (ids,)):
                paths[t][(ns, cid, task)] = path
    for t in ids:
        history = sorted(saver.list({"configurable": {"thread_id": t}}), key=_key)
        yield ThreadCopy(t, history, paths[t])


def as_rows(copy: ThreadCopy) -> RawThread:
    """The objects re-serialized into the stored-row form (to compare or to write them)."""
    serde = JsonPlusSerializer()
    out = RawThread(copy.thread_id)
    for t in copy.history:
        ns, cid = _key(t)
        values = {ch: v for ch, v in ((ch, from_typed(*serde.dumps_typed(x)))
                                      for ch, x in t.checkpoint["channel_values"].items()) if v}
        writes, seen = [], {}
        for task, ch, x in t.pending_writes or []:
            i = seen[task] = seen.get(task, -1) + 1
            writes.append(RawWrite(task, WRITES_IDX_MAP.get(ch, i), ch, *serde.dumps_typed(x),
                                   copy.paths.get((ns, cid, task), "")))
        parent = t.parent_config["configurable"]["checkpoint_id"] if t.parent_config else None
        fields = {k: v for k, v in t.checkpoint.items() if k != "channel_values"}
        out.checkpoints.append(RawCheckpoint(ns, cid, parent, fields, values, dict(t.metadata),
                                             writes))
    return out


def read_any(saver: BaseCheckpointSaver, ids: list[str], pair: Any = None
             ) -> dict[str, RawThread]:
    """Threads as stored rows when both ``saver`` and ``pair`` are SQL savers, else through
    ``list()``, re-serialized into the same form."""
    if is_sql(saver) and (pair is None or is_sql(pair)):
        if not has_tables(saver):
            return {t: RawThread(t) for t in ids}
        return read_raw(saver, ids)
    # Task paths only count when both sides are SQL rows: list() does not return them.
    return {c.thread_id: as_rows(ThreadCopy(c.thread_id, c.history)) for c in
            read_objects(saver, ids)}


__all__ = ["PAGE", "READ_CHUNK", "Progress", "ThreadCopy", "as_rows", "count_rows",
           "existing_threads", "has_tables", "iter_thread_ids", "pages", "read_any", "read_objects",
           "sample_thread_ids", "thread_ids"]
