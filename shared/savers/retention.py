"""Retention for LangGraph's SQLite checkpoint files: the plan (what goes, what stays, why).

The official ``SqliteSaver`` never deletes anything; a busy assistant's file grows forever.
``RetentionPolicy(older_than=30 days, keep_last=20)`` says what may go: a checkpoint is
deleted only when it is older than the cutoff *and* not among the newest ``keep_last`` of
its (thread, namespace). Either bound may be left out (not both). Then the checkpoints the
survivors need are kept too, each with its reason:

- ``newer than the cutoff`` / ``newest N of thread``: the policy itself;
- ``DeltaChannel ancestor of a kept checkpoint``: a ``DeltaChannel`` stores only a sentinel
  in most checkpoints and rebuilds its value by replaying the ``writes`` of the ancestors
  back to the nearest ``_DeltaSnapshot``. Those ancestors (and their writes) are kept, so a
  kept checkpoint loads with the same value as before. (PostgresSaver refuses such threads
  instead; keeping the ancestors lets a DeltaChannel thread be pruned at all.)
- ``parent holding pending sends``: a pre-v4 checkpoint reads its pending ``Send``s from its
  parent's writes, as in PostgresSaver's ``keep_latest``.

Where the chain is cut (a kept checkpoint whose parent goes) the kept checkpoint's
``parent_checkpoint_id`` is set to NULL, as PostgresSaver does: history then ends cleanly
there instead of pointing at a row that no longer exists. Nothing else in a kept row changes.
"Newest" means the highest checkpoint id, the one ``get_tuple`` loads. Each namespace
(a subgraph's too) is pruned on its own; unlike PostgresSaver, a finished subgraph call's
namespace is not dropped together with the root checkpoint it started from.

Age. There is no ``ts`` column: the timestamp sits inside the serialized checkpoint. But
LangGraph's checkpoint ids are uuid6 (``uuid6(clock_seq=step)``), whose first 60 bits are
the creation time in 100 ns units, taken microseconds after ``ts`` (measured: 0.03 ms on
the chat graph's rows; with ``durability="exit"`` the saved checkpoint keeps the id of its
superstep and gets a slightly later ``ts``). The hex string sorts like that number, so the
cutoff becomes the smallest uuid6 string of that instant and "older than" is
``checkpoint_id < cutoff_id``: a string comparison on the primary key, no blob read. Ids
that are not uuid6 (hand-made) fall back to reading ``ts`` from the blob.

Applying a plan: ``shared.savers.retention_apply``; the operation and ``ckpt prune``:
``shared.ops.prune``.
"""

from __future__ import annotations

import json
import sqlite3
import uuid
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, NamedTuple, Protocol

from langgraph.checkpoint.serde.base import SerializerProtocol

from shared.durations import format_duration
from shared.errors import CheckpointError
from shared.savers.inert import UnreadableValue, split_checkpoint
from shared.savers.rows import in_list

Key = tuple[str, str, str]  # (thread_id, checkpoint_ns, checkpoint_id)
AfterPrune = Callable[[sqlite3.Connection, bool], object]

RECENT = "newer than the cutoff"
DELTA = "DeltaChannel ancestor of a kept checkpoint"
SENDS = "parent holding a kept pre-v4 checkpoint's pending sends"
JS_DELTA = "LangGraph.js DeltaChannel namespace: not pruned"
NO_AGE = "age unknown: id is not uuid6 and ts unreadable"
ORPHAN_WRITES_GRACE = timedelta(hours=1)
MAX_PARAMS = 30_000  # SQLite allows 32,766 parameters per statement; a few are ours
TASKS_CHANNEL = "__pregel_tasks"  # where pre-v4 checkpoints kept their pending sends


def newest_reason(n: int) -> str:
    return f"newest {n} of thread"


# --- age: uuid6 ids carry their creation time ------------------------------------------------

_UUID_EPOCH_OFFSET = 0x01B21DD213814000  # 100 ns intervals from 1582-10-15 to 1970-01-01
_UNIX_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def aware(moment: datetime) -> datetime:
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def uuid6_at(moment: datetime, clock_seq: int = 0, node: int = 0) -> str:
    """The uuid6 string LangGraph would have made at ``moment`` (exact to 100 ns).

    With ``clock_seq=0, node=0`` it is the smallest uuid6 of that instant: every id made at
    or after ``moment`` sorts at or above it, every earlier one below.
    """
    delta = aware(moment) - _UNIX_EPOCH
    ticks = ((delta.days * 86_400 + delta.seconds) * 10**6 + delta.microseconds) * 10
    ts = ticks + _UUID_EPOCH_OFFSET
    value = ((ts >> 12) & 0xFFFFFFFFFFFF) << 80 | (ts & 0x0FFF) << 64
    value |= (clock_seq & 0x3FFF) << 48 | (node & 0xFFFFFFFFFFFF)
    value = (value & ~(0xF000 << 64)) | 6 << 76  # version 6
    value = (value & ~(0xC000 << 48)) | 0x8000 << 48  # RFC 4122 variant
    return str(uuid.UUID(int=value))


def uuid6_time(checkpoint_id: str) -> datetime | None:
    """The creation time inside a uuid6 checkpoint id; None for any other id."""
    try:
        u = uuid.UUID(checkpoint_id)
    except ValueError:
        return None
    if u.version != 6 or str(u) != checkpoint_id:
        return None
    ts = (u.time_low << 28) | (u.time_mid << 12) | (u.time_hi_version & 0x0FFF)
    return _UNIX_EPOCH + timedelta(microseconds=(ts - _UUID_EPOCH_OFFSET) // 10)


# SQL form of "this id is a canonical uuid6", so the string comparison is only trusted there.
_IS_UUID6 = ("(length({c}) = 36 AND substr({c}, 15, 1) = '6' "
             "AND substr({c}, 20, 1) IN ('8', '9', 'a', 'b') AND lower({c}) = {c})")


# --- the policy and the plan ----------------------------------------------------------------

@dataclass(frozen=True)
class RetentionPolicy:
    """Delete a checkpoint only if it is older than ``older_than`` AND not among the newest
    ``keep_last`` of its (thread, namespace). A bound left as None does not protect."""

    older_than: timedelta | None = None
    keep_last: int | None = None

    def __post_init__(self) -> None:
        if self.older_than is None and self.keep_last is None:
            raise CheckpointError("A retention policy needs --older-than, --keep-last or both: "
                                  "with neither, every checkpoint would go.")
        if self.older_than is not None and self.older_than <= timedelta(0):
            raise CheckpointError(f"older_than must be positive, got {self.older_than}: "
                                  "give an age such as 30d.")
        if self.keep_last is not None and (isinstance(self.keep_last, bool)
                                           or not isinstance(self.keep_last, int)
                                           or self.keep_last < 1):
            raise CheckpointError(f"keep_last must be a whole number of at least 1, got "
                                  f"{self.keep_last!r}: use the strategy 'delete' to drop whole "
                                  "threads.")

    def describe(self) -> str:
        if self.older_than is None:
            return f"keep the newest {self.keep_last} checkpoints per thread"
        text = f"delete checkpoints older than {format_duration(self.older_than)}"
        return text + (f" except the newest {self.keep_last} per thread"
                       if self.keep_last is not None else "")

    def to_dict(self) -> dict[str, Any]:
        return {"older_than_seconds": None if self.older_than is None
                else self.older_than.total_seconds(), "keep_last": self.keep_last}


@dataclass
class PrunePlan:
    """What a policy would delete, what it keeps and why; computed, nothing changed."""

    policy: RetentionPolicy
    now: datetime
    cutoff: datetime | None
    thread_ids: tuple[str, ...] | None
    checkpoints_in_scope: int
    writes_in_scope: int
    delete: list[Key]
    keep_reasons: dict[Key, str]
    cut_parents: list[Key]  # kept checkpoints whose parent goes: parent id becomes NULL
    writes_to_delete: int
    orphan_writes: int
    ages_from_ts: int  # rows whose age came from the blob's ts (id not uuid6)

    def reason_counts(self) -> dict[str, int]:
        return dict(Counter(self.keep_reasons.values()).most_common())

    def kept_old(self) -> dict[Key, str]:
        """Kept checkpoints the cutoff alone would have deleted, with the reason."""
        return {k: r for k, r in self.keep_reasons.items() if r != RECENT}

    def summary(self) -> dict[str, Any]:
        return {"policy": self.policy.to_dict(), "now": self.now.isoformat(),
                "cutoff": self.cutoff.isoformat() if self.cutoff else None,
                "threads": list(self.thread_ids) if self.thread_ids is not None else "all",
                "checkpoints_in_scope": self.checkpoints_in_scope,
                "writes_in_scope": self.writes_in_scope,
                "checkpoints_to_delete": len(self.delete),
                "checkpoints_to_keep": len(self.keep_reasons),
                "kept_reasons": self.reason_counts(),
                "parents_to_cut": len(self.cut_parents),
                "writes_to_delete": self.writes_to_delete,
                "orphan_writes_to_delete": self.orphan_writes,
                "ages_read_from_ts": self.ages_from_ts}


class _Row(NamedTuple):
    parent: str | None
    rank: int
    counters: frozenset[str]  # DeltaChannel names in counters_since_delta_snapshot
    js_delta: bool


def thread_scope(thread_ids: Sequence[str] | None, column: str = "thread_id"
                 ) -> tuple[str, list[Any]]:
    """A WHERE fragment for the thread filter. Each id is its own parameter (a JSON list
    would stop at a NUL character), up to SQLite's limit; a longer list travels as one JSON
    parameter."""
    if thread_ids is None:
        return "1", []
    ids = list(thread_ids)
    # `column` is one of our constants; the thread ids are parameters.
    if len(ids) <= MAX_PARAMS:
        return f"{column} IN {in_list(ids)}", ids
    return f"{column} IN (SELECT value FROM json_each(?))", [json.dumps(ids)]  # noqa: S608


def checked_thread_ids(thread_ids: Sequence[str] | None) -> tuple[str, ...] | None:
    if thread_ids is None:
        return None
    if isinstance(thread_ids, str):
        raise TypeError("thread_ids must be a sequence of thread IDs, not a str")
    return tuple(str(t) for t in thread_ids)


class _Body(NamedTuple):
    """What the planner reads inside a checkpoint: nothing that could run code."""

    ts: str | None
    values: frozenset[str]  # channels with a stored value
    versions: frozenset[str]  # channels with a version
    v: int


class IndexRow(NamedTuple):
    """One checkpoint as the planner's first pass sees it: ids, parent, rank and markers."""

    key: Key
    parent: str | None
    rank: int  # 1 = newest (highest id) of its (thread, namespace)
    counters: frozenset[str]  # DeltaChannel names in counters_since_delta_snapshot
    js_delta: bool  # metadata has delta_writes_versioned (LangGraph.js DeltaChannel)
    is_old: bool | None  # id older than the cutoff; None when the id is not uuid6


class RowSource(Protocol):
    """Where the planner reads checkpoints from: a SQLite file (``SqliteRows``) or the
    PostgreSQL saver's tables (``shared.savers.retention_pg.PgRows``). Scoped to the
    threads it was made for; nothing it returns comes from decoding a stored value."""

    def index(self, cutoff_id: str | None) -> Iterable[IndexRow]: ...

    def body(self, key: Key) -> _Body | None: ...  # None: no row, or unreadable

    def sends_parents(self) -> set[Key]: ...  # checkpoints with pending-send writes

    def count_writes(self, candidates: set[Key], grace_id: str) -> tuple[int, int, int]: ...


def _counter_names(counters: Any) -> frozenset[str]:
    if isinstance(counters, str):
        counters = json.loads(counters)
    return frozenset(counters) if counters else frozenset()


class SqliteRows:
    """``RowSource`` over a SQLite checkpoint file (``checkpoints`` and ``writes``)."""

    def __init__(self, conn: sqlite3.Connection, threads: tuple[str, ...] | None,
                 serde: SerializerProtocol | None = None) -> None:
        self.conn, self.threads, self.serde = conn, threads, serde

    def index(self, cutoff_id: str | None) -> Iterable[IndexRow]:
        where, params = thread_scope(self.threads)
        meta = "CAST(metadata AS TEXT)"
        # One pass over the index: rank within (thread, ns), and the DeltaChannel markers that
        # LangGraph leaves in metadata (the same ones PostgresSaver's prune looks for).
        cur = self.conn.execute(
            f"""SELECT thread_id, checkpoint_ns, checkpoint_id, parent_checkpoint_id,
                       ROW_NUMBER() OVER (PARTITION BY thread_id, checkpoint_ns
                                          ORDER BY checkpoint_id DESC),
                       CASE WHEN json_valid({meta}) THEN
                            json_extract({meta}, '$.counters_since_delta_snapshot') END,
                       CASE WHEN json_valid({meta}) THEN
                            json_extract({meta}, '$.delta_writes_versioned') IS NOT NULL END,
                       CASE WHEN ? IS NULL THEN 0 WHEN {_IS_UUID6.format(c='checkpoint_id')}
                            THEN checkpoint_id < ? ELSE NULL END
                FROM checkpoints WHERE {where}""",  # noqa: S608 -- constant fragments
            [cutoff_id, cutoff_id, *params])
        for t, ns, cid, parent, rank, counters, js, is_old in cur:
            yield IndexRow((t, ns, cid), parent, rank, _counter_names(counters), bool(js),
                           None if is_old is None else bool(is_old))

    def body(self, key: Key) -> _Body | None:
        return _load(self.conn, self.serde, key)

    def sends_parents(self) -> set[Key]:
        w, p = thread_scope(self.threads)
        return {tuple(r) for r in self.conn.execute(
            f"SELECT DISTINCT thread_id, checkpoint_ns, checkpoint_id FROM writes "  # noqa: S608
            f"WHERE channel = ? AND {w}", [TASKS_CHANNEL, *p])}

    def count_writes(self, candidates: set[Key], grace_id: str) -> tuple[int, int, int]:
        return _count_writes(self.conn, self.threads, candidates, grace_id)


def _load(conn: sqlite3.Connection, serde: SerializerProtocol | None, key: Key) -> _Body | None:
    """The outer fields of a checkpoint, read without decoding a single value
    (``shared.savers.inert``); None if it has no row, or cannot be read that way and no
    ``serde`` of the application's own was given to read it."""
    row = conn.execute("SELECT type, checkpoint FROM checkpoints WHERE thread_id = ? AND "
                       "checkpoint_ns = ? AND checkpoint_id = ?", key).fetchone()
    if row is None:
        return None
    try:
        fields, values = split_checkpoint(row[0], row[1])
        versions = fields.get("channel_versions") or {}
    except UnreadableValue:
        if serde is None:  # the ops tool: never run what it cannot read
            return None
        # An application's own saver (e.g. encrypted rows) reads them with its own serializer.
        fields = serde.loads_typed((row[0], row[1]))
        values, versions = fields.get("channel_values") or {}, fields.get("channel_versions") or {}
    ts = fields.get("ts")
    return _Body(ts if isinstance(ts, str) else None, frozenset(values), frozenset(versions),
                 int(fields.get("v", 1)) if isinstance(fields.get("v", 1), int) else 1)


def _unreadable(key: Key) -> CheckpointError:
    return CheckpointError(
        f"Checkpoint {key[2]} of thread {key[0]!r} cannot be read without running its "
        "serializer (it is not plain msgpack), so the DeltaChannel values its successors need "
        "cannot be traced: nothing was deleted; prune it from code with "
        "PrunableSqliteSaver(conn, serde=...).")


def plan_prune(conn: sqlite3.Connection, policy: RetentionPolicy,
               thread_ids: Sequence[str] | None = None, *, now: datetime | None = None,
               serde: SerializerProtocol | None = None) -> PrunePlan:
    """Decide, without changing anything, which checkpoints ``policy`` deletes and why the
    others stay. ``now`` fixes the clock (tests and drills). Checkpoints are read without
    decoding their values; ``serde`` (an application's own) is used only for rows that are
    not plain msgpack, such as encrypted ones."""
    threads = checked_thread_ids(thread_ids)
    return plan_rows(SqliteRows(conn, threads, serde), policy, threads, now=now)


def plan_rows(source: RowSource, policy: RetentionPolicy, threads: tuple[str, ...] | None,
              *, now: datetime | None = None) -> PrunePlan:
    """The planning rules, over any ``RowSource`` (scoped to ``threads``)."""
    now = aware(now or datetime.now(UTC))
    cutoff = now - policy.older_than if policy.older_than is not None else None
    cutoff_id = uuid6_at(cutoff) if cutoff is not None else None
    rows: dict[Key, _Row] = {}
    old: set[Key] = set()
    unknown_age: list[Key] = []
    for r in source.index(cutoff_id):
        key = r.key
        rows[key] = _Row(r.parent, r.rank, r.counters, r.js_delta)
        if cutoff is None or r.is_old:
            old.add(key)
        elif r.is_old is None:
            unknown_age.append(key)
    ages_from_ts = 0
    no_age: set[Key] = set()
    for key in unknown_age:  # slow path: the id is not uuid6, read ts from the row
        body = source.body(key)
        try:
            ts = aware(datetime.fromisoformat(body.ts)) if body and body.ts else None
        except ValueError:
            ts = None
        if ts is None:
            no_age.add(key)
        else:
            ages_from_ts += 1
            if cutoff is not None and ts < cutoff:
                old.add(key)

    js_namespaces = {(k[0], k[1]) for k, r in rows.items() if r.js_delta}
    delta_names: dict[tuple[str, str], set[str]] = {}
    for k, r in rows.items():
        if r.counters:
            delta_names.setdefault((k[0], k[1]), set()).update(r.counters)

    keep: dict[Key, str] = {}
    candidates: set[Key] = set()
    for key, r in rows.items():
        if (key[0], key[1]) in js_namespaces:
            keep[key] = JS_DELTA
        elif key in no_age:
            keep[key] = NO_AGE
        elif key not in old:
            keep[key] = RECENT
        elif policy.keep_last is not None and r.rank <= policy.keep_last:
            keep[key] = newest_reason(policy.keep_last)
        else:
            candidates.add(key)

    def parent_of(key: Key) -> Key | None:
        p = rows[key].parent
        pk = (key[0], key[1], p) if p else None
        return pk if pk in rows else None

    # Rescue what the kept checkpoints need, until nothing changes (a rescued row may need
    # its own ancestors). `done[ch]` holds rows whose walk for channel ch is complete.
    sends_parents = source.sends_parents() if candidates else set()
    loaded: dict[Key, tuple[frozenset[str], frozenset[str], int]] = {}

    def info(key: Key) -> tuple[frozenset[str], frozenset[str], int]:
        if key not in loaded:
            body = source.body(key)
            if body is None:
                raise _unreadable(key)
            loaded[key] = (body.values, body.versions, body.v)
        return loaded[key]

    # Only namespaces that lose rows can break, so only their kept rows are read.
    losing = {(k[0], k[1]) for k in candidates}
    done: dict[str, set[Key]] = {}
    work = [k for k in keep if (k[0], k[1]) in losing
            and (rows[k].counters or parent_of(k) in sends_parents)]
    while work:
        key = work.pop()
        parent = parent_of(key)
        if parent in candidates and parent in sends_parents and info(key)[2] < 4:
            candidates.discard(parent)
            keep[parent] = SENDS
            work.append(parent)
        if not rows[key].counters:
            continue
        values, versions, _ = info(key)
        names = rows[key].counters | delta_names.get((key[0], key[1]), set())
        need = {ch for ch in names if ch in versions and ch not in values}
        path: dict[str, list[Key]] = {ch: [] for ch in need}
        cursor, seen = key, {key}
        while need and (cursor := parent_of(cursor)) is not None and cursor not in seen:
            seen.add(cursor)
            if cursor in candidates:
                candidates.discard(cursor)
                keep[cursor] = DELTA
                work.append(cursor)
            need -= {ch for ch in need if cursor in done.get(ch, ())}
            for ch in need:
                path[ch].append(cursor)
            if need:
                need -= info(cursor)[0]  # a stored value (the snapshot) ends the walk
        for ch, walked in path.items():
            done.setdefault(ch, set()).update(walked)

    delete = sorted(candidates)
    cut = sorted(k for k in keep if (p := parent_of(k)) is not None and p in candidates)
    writes_in_scope, writes_to_delete, orphans = source.count_writes(
        candidates, uuid6_at(now - ORPHAN_WRITES_GRACE))
    return PrunePlan(policy, now, cutoff, threads, len(rows), writes_in_scope, delete, keep,
                     cut, writes_to_delete, orphans, ages_from_ts)


# Constant fragments; the grace id is a parameter.
ORPHAN_WHERE = ("NOT EXISTS (SELECT 1 FROM checkpoints c WHERE c.thread_id = w.thread_id "  # noqa: S608
                 "AND c.checkpoint_ns = w.checkpoint_ns AND c.checkpoint_id = w.checkpoint_id) "
                 f"AND {_IS_UUID6.format(c='w.checkpoint_id')} AND w.checkpoint_id < ?")


def _count_writes(conn: sqlite3.Connection, threads: tuple[str, ...] | None,
                  candidates: set[Key], grace_id: str) -> tuple[int, int, int]:
    where, params = thread_scope(threads, "w.thread_id")
    per_ckpt = Counter((t, ns, c) for t, ns, c in conn.execute(
        f"SELECT thread_id, checkpoint_ns, checkpoint_id FROM writes w WHERE {where}",  # noqa: S608
        params))
    in_scope = sum(per_ckpt.values())
    to_delete = sum(per_ckpt[k] for k in candidates)
    orphans = conn.execute(
        f"SELECT count(*) FROM writes w WHERE {where} AND {ORPHAN_WHERE}",  # noqa: S608
        [*params, grace_id]).fetchone()[0]
    return in_scope, to_delete, orphans
