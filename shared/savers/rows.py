"""Checkpoint rows as stored: read, compared and written as bytes, never as objects.

``migrate`` and ``verify`` work on this view of ``SqliteSaver`` and ``PostgresSaver``
databases. A ``RawThread`` is one thread's checkpoints, each with its outer fields, one
``Value`` per channel (the serialized bytes of that value, type tag and payload, see
``shared.savers.inert``), its metadata (JSON) and its pending writes (``(type, bytes)`` as
stored). Both schemas map onto it without decoding a single application object:

- SQLite keeps the whole checkpoint as one msgpack body: ``split_checkpoint`` cuts it into
  fields and per-channel slices; the body and the metadata bytes are also kept verbatim, so
  SQLite -> SQLite writes the very same bytes.
- PostgreSQL keeps the outer fields and primitive channel values in JSONB and every other
  value as a ``checkpoint_blobs`` row per (channel, version), which is the per-channel form.

The row builders write exactly what ``put``/``put_writes`` would have written for the
application's objects, so the official savers read the copy as their own.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from langgraph.checkpoint.base import WRITES_IDX_MAP, BaseCheckpointSaver
from langgraph.checkpoint.postgres import PostgresSaver
from langgraph.checkpoint.sqlite import SqliteSaver
from psycopg.types.json import Jsonb

from shared.savers.inert import (
    EMBEDDABLE,
    UnreadableValue,
    Value,
    canonical,
    from_typed,
    is_snapshot,
    join_checkpoint,
    split_checkpoint,
    to_typed,
)

Key = tuple[str, str]  # (checkpoint_ns, checkpoint_id) inside one thread


class RawWrite(NamedTuple):
    task_id: str
    idx: int
    channel: str
    type: str
    blob: bytes
    task_path: str


@dataclass
class RawCheckpoint:
    ns: str
    id: str
    parent: str | None
    fields: dict[str, Any]  # v, ts, id, channel_versions, versions_seen, updated_channels...
    values: dict[str, Value]
    metadata: dict[str, Any]
    writes: list[RawWrite] = field(default_factory=list)
    body: tuple[str, bytes] | None = None  # SQLite: (type, checkpoint) exactly as stored
    meta_raw: bytes | None = None  # SQLite: the metadata bytes exactly as stored
    problem: str | None = None  # why the body could not be read safely (then fields are {})

    @property
    def key(self) -> Key:
        return self.ns, self.id

    def versions(self) -> dict[str, Any]:
        return dict(self.fields.get("channel_versions") or {})


@dataclass
class RawThread:
    thread_id: str
    checkpoints: list[RawCheckpoint] = field(default_factory=list)  # parents first

    def keys(self) -> set[Key]:
        return {c.key for c in self.checkpoints}

    def where(self, c: RawCheckpoint, channel: str | None = None) -> str:
        """thread/namespace/checkpoint[/channel], for reports."""
        return (f"thread {self.thread_id!r}, checkpoint {c.id}"
                + (f" (namespace {c.ns!r})" if c.ns else "")
                + (f", channel {channel!r}" if channel else ""))


def is_sql(saver: BaseCheckpointSaver) -> bool:
    return isinstance(saver, SqliteSaver | PostgresSaver)


def query(saver: BaseCheckpointSaver, sql: str, params: tuple[Any, ...] | list[Any] = ()
          ) -> list[tuple[Any, ...]]:
    """Run a read on a SQL saver's own connection (under its lock) and return plain tuples."""
    if isinstance(saver, SqliteSaver):
        with saver.lock:
            return [tuple(r) for r in saver.conn.execute(sql, params).fetchall()]
    assert isinstance(saver, PostgresSaver)
    with saver._cursor() as cur:
        cur.execute(sql, params)
        return [tuple(r.values()) if isinstance(r, dict) else tuple(r) for r in cur.fetchall()]


def in_list(ids: list[str]) -> str:
    """``(?, ?, ...)`` for SQLite: each id its own parameter (a JSON list stops at NUL)."""
    return "(" + ", ".join("?" * len(ids)) + ")"


# --- reading ---------------------------------------------------------------------------------

_SQLITE_CHECKPOINTS = ("SELECT thread_id, checkpoint_ns, checkpoint_id, parent_checkpoint_id, "
                       "type, checkpoint, metadata FROM checkpoints WHERE thread_id IN {ids}")
_SQLITE_WRITES = ("SELECT thread_id, checkpoint_ns, checkpoint_id, task_id, idx, channel, type, "
                  "value, {path} FROM writes WHERE thread_id IN {ids}")
_PG_CHECKPOINTS = ("SELECT thread_id, checkpoint_ns, checkpoint_id, parent_checkpoint_id, "
                   "checkpoint, metadata FROM checkpoints WHERE thread_id = ANY(%s)")
_PG_BLOBS = ("SELECT thread_id, checkpoint_ns, channel, version, type, blob FROM "
             "checkpoint_blobs WHERE thread_id = ANY(%s)")
_PG_WRITES = ("SELECT thread_id, checkpoint_ns, checkpoint_id, task_id, idx, channel, type, "
              "blob, task_path FROM checkpoint_writes WHERE thread_id = ANY(%s)")


def _metadata(raw: Any) -> dict[str, Any]:
    data = json.loads(raw) if isinstance(raw, bytes | str) else raw
    if data is not None and not isinstance(data, dict):
        raise ValueError("not a JSON object")
    return data or {}


def _from_sqlite_row(row: tuple[Any, ...]) -> RawCheckpoint:
    _, ns, cid, parent, type_, body, meta = row
    body = bytes(body) if body is not None else b""
    meta_raw = bytes(meta) if isinstance(meta, bytes) else (meta or "").encode()
    c = RawCheckpoint(ns, cid, parent, {}, {}, {}, body=(type_, body), meta_raw=meta_raw)
    try:
        c.fields, c.values = split_checkpoint(type_, body)
    except UnreadableValue as exc:
        c.problem = f"the checkpoint cannot be read safely ({exc})"
    try:
        c.metadata = _metadata(meta_raw)
    except ValueError as exc:
        c.problem = c.problem or f"its metadata is not JSON ({exc})"
    return c


def _from_postgres_row(row: tuple[Any, ...], blobs: dict[tuple[str, str, str], Value | None]
                       ) -> RawCheckpoint:
    _, ns, cid, parent, body, meta = row
    body = dict(body or {})
    inline = body.pop("channel_values", None) or {}
    c = RawCheckpoint(ns, cid, parent, body, {}, _metadata(meta))
    # As PostgresSaver loads it: the blob of each channel's version wins over an inline value.
    for ch, value in inline.items():
        c.values[ch] = Value("value", value)
    for ch, ver in c.versions().items():
        key = (ns, ch, str(ver))
        if key in blobs:
            blob = blobs[key]
            if blob is not None:
                c.values[ch] = blob
    return c


def _group(copies: dict[str, RawThread], rows: list[RawCheckpoint], tids: list[str]) -> None:
    for tid, c in zip(tids, rows, strict=True):
        copies[tid].checkpoints.append(c)
    for copy in copies.values():
        copy.checkpoints.sort(key=lambda c: c.key)


def read_raw(saver: BaseCheckpointSaver, ids: list[str]) -> dict[str, RawThread]:
    """Each requested thread's rows (an empty ``RawThread`` if it has none), parents first."""
    copies = {t: RawThread(t) for t in ids}
    if not ids:
        return copies
    writes: dict[tuple[str, str, str], list[RawWrite]] = {}
    if isinstance(saver, SqliteSaver):
        with saver.lock:
            columns = {r[1] for r in saver.conn.execute("PRAGMA table_info(writes)")}
        path = "task_path" if "task_path" in columns else "''"  # a file from before task paths
        rows = query(saver, _SQLITE_CHECKPOINTS.format(ids=in_list(ids)), ids)
        checkpoints = [_from_sqlite_row(r) for r in rows]
        for t, ns, cid, task, idx, ch, type_, blob, tpath in query(
                saver, _SQLITE_WRITES.format(ids=in_list(ids), path=path), ids):
            if not isinstance(idx, int):  # SQLite stores whatever it is given
                raise UnreadableValue(f"thread {t!r}, checkpoint {cid}: a pending write of task "
                                      f"{task!r} has the index {idx!r}, not a whole number")
            writes.setdefault((t, ns, cid), []).append(
                RawWrite(task, idx, ch, type_, bytes(blob or b""), tpath or ""))
    elif isinstance(saver, PostgresSaver):
        blobs: dict[str, dict[tuple[str, str, str], Value | None]] = {t: {} for t in ids}
        for t, ns, ch, ver, type_, blob in query(saver, _PG_BLOBS, (ids,)):
            blobs[t][(ns, ch, ver)] = from_typed(type_, blob)
        rows = query(saver, _PG_CHECKPOINTS, (ids,))
        checkpoints = [_from_postgres_row(r, blobs[r[0]]) for r in rows]
        for t, ns, cid, task, idx, ch, type_, blob, tpath in query(saver, _PG_WRITES, (ids,)):
            writes.setdefault((t, ns, cid), []).append(
                RawWrite(task, idx, ch, type_, bytes(blob or b""), tpath or ""))
    else:
        raise TypeError(f"{type(saver).__name__} keeps no SQL rows to read")
    for r, c in zip(rows, checkpoints, strict=True):
        c.writes = sorted(writes.get((r[0], c.ns, c.id), []),
                          key=lambda w: (w.task_path, w.task_id, w.idx))
    _group(copies, checkpoints, [r[0] for r in rows])
    return copies


# --- comparing -------------------------------------------------------------------------------

PARTS = ("checkpoint", "metadata", "parent", "pending_writes")


def _snapshot_fill(copy: RawThread) -> dict[Key, dict[str, Value]]:
    """Each checkpoint's channel values, each DeltaChannel snapshot shown at every checkpoint
    that carries its channel version.

    ``PostgresSaver`` stores one value per (channel, version) and loads it into every
    checkpoint that names that version; ``SqliteSaver`` keeps a ``_DeltaSnapshot`` only in the
    checkpoint that took it. Both rebuild the same state. Each side is filled from its OWN
    snapshots only, so a snapshot lost in the copy is still a difference.
    """
    snapshots = {(c.ns, ch, str(c.versions().get(ch))): v for c in copy.checkpoints
                 for ch, v in c.values.items() if is_snapshot(v)}
    out = {}
    for c in copy.checkpoints:
        fill = {ch: snapshots[(c.ns, ch, str(ver))] for ch, ver in c.versions().items()
                if ch not in c.values and (c.ns, ch, str(ver)) in snapshots}
        out[c.key] = {**c.values, **fill}
    return out


def comparable(copy: RawThread) -> dict[Key, tuple[Any, ...]]:
    """Per checkpoint: (body, metadata, parent, writes) in a form equal exactly when the data
    is. Values compare by their serialized bytes, so a changed type or a lost value differs."""
    values = _snapshot_fill(copy)
    out = {}
    for c in copy.checkpoints:
        if c.problem:  # unreadable: only the stored bytes themselves can be compared
            body: Any = ("raw", c.body)
        else:
            body = (canonical(c.fields), sorted((ch, v.key()) for ch, v in values[c.key].items()))
        metadata = canonical({k: v for k, v in c.metadata.items() if k != "writes"})
        writes = sorted((w.task_id, w.idx, w.channel, w.type, w.blob, w.task_path)
                        for w in c.writes)
        out[c.key] = (body, metadata, c.parent, writes)
    return out


def differences(a: tuple[Any, ...], b: tuple[Any, ...]) -> list[str]:
    """Which parts of two ``comparable`` entries differ."""
    return [n for n, x, y in zip(PARTS, a, b, strict=True) if x != y]


def unreadable_in(copy: RawThread, *, embeddable_only: bool) -> str | None:
    """The first value of ``copy`` that cannot be moved across schemas without decoding."""
    for c in copy.checkpoints:
        if c.problem:
            return f"{copy.where(c)}: {c.problem}"
        for ch, v in c.values.items():
            if embeddable_only and v.type not in (*EMBEDDABLE, "value"):
                return f"{copy.where(c, ch)} is stored as {v.type!r}"
    return None


# --- writing: the rows put/put_writes would write --------------------------------------------

def new_versions(c: RawCheckpoint, written: set[tuple[str, str, str]]) -> dict[str, Any]:
    """Channel versions not yet handed over for this thread and namespace (and mark them)."""
    versions = {ch: v for ch, v in c.versions().items() if (c.ns, ch, str(v)) not in written}
    # Marked only when the value is here to be stored; an absent one may come later.
    written.update((c.ns, ch, str(v)) for ch, v in versions.items() if ch in c.values)
    return versions


def _by_task(writes: Iterable[RawWrite]) -> dict[str, list[RawWrite]]:
    out: dict[str, list[RawWrite]] = {}
    for w in writes:
        out.setdefault(w.task_id, []).append(w)
    return out


def _replace(task_writes: list[RawWrite]) -> bool:
    """put_writes' own choice: a task's special channels replace, others never do."""
    return all(w.channel in WRITES_IDX_MAP for w in task_writes)


def sqlite_rows(copy: RawThread, rows: dict[str, list[tuple[Any, ...]]]) -> int:
    """Append ``copy``'s SqliteSaver rows to ``rows``; returns the channel versions handed over."""
    written: set[tuple[str, str, str]] = set()
    handed = 0
    for c in copy.checkpoints:
        handed += len(new_versions(c, written))
        if c.body is not None:  # from SQLite: the same bytes
            type_, body = c.body
        else:
            type_, body = "msgpack", join_checkpoint(c.fields, c.values, copy.where(c))
        meta = c.meta_raw if c.meta_raw is not None else json.dumps(
            c.metadata, ensure_ascii=False).encode("utf-8", "ignore")
        rows["checkpoints"].append((copy.thread_id, c.ns, c.id, c.parent, type_, body, meta))
        for task_writes in _by_task(c.writes).values():
            rows["upserts" if _replace(task_writes) else "inserts"].extend(
                (copy.thread_id, c.ns, c.id, w.task_id, w.task_path, w.idx, w.channel, w.type,
                 w.blob) for w in task_writes)
    return handed


def postgres_rows(copy: RawThread, rows: dict[str, list[tuple[Any, ...]]]) -> int:
    """Append ``copy``'s PostgresSaver rows to ``rows``; returns the channel versions handed over.

    As ``PostgresSaver.put``: primitives stay inline in the JSONB, a DeltaChannel snapshot
    leaves ``true`` there, every other value becomes a blob row per new (channel, version).
    """
    written: set[tuple[str, str, str]] = set()
    handed = 0
    for c in copy.checkpoints:
        if c.problem:
            raise UnreadableValue(f"{copy.where(c)}: {c.problem}")
        inline: dict[str, Any] = {}
        blobs: dict[str, Value] = {}
        for ch, v in c.values.items():
            if is_snapshot(v):
                blobs[ch], inline[ch] = v, True
            elif v.type == "value":
                inline[ch] = v.data
            else:
                blobs[ch] = v
        versions = new_versions(c, written)
        handed += len(versions)
        rows["blobs"].extend((copy.thread_id, c.ns, ch, str(ver), *to_typed(blobs[ch]))
                             for ch, ver in versions.items() if ch in blobs)
        body = {**c.fields, "channel_values": inline}
        metadata = {k: v for k, v in c.metadata.items() if k != "writes"}
        rows["checkpoints"].append((copy.thread_id, c.ns, c.id, c.parent, Jsonb(body),
                                    Jsonb(metadata)))
        for task_writes in _by_task(c.writes).values():
            replace = _replace(task_writes)
            rows["writes"].extend((copy.thread_id, c.ns, c.id, w.task_id, w.task_path, w.idx,
                                   w.channel, w.type, w.blob, replace) for w in task_writes)
    return handed


__all__ = ["PARTS", "RawCheckpoint", "RawThread", "RawWrite", "comparable", "differences",
           "in_list", "is_sql", "new_versions", "postgres_rows", "query", "read_raw",
           "sqlite_rows", "unreadable_in"]
