"""Retention for LangGraph's SQLite checkpoint files: plan, apply, verify, schedule.

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

Apply runs in one ``BEGIN IMMEDIATE`` transaction and re-plans inside it, so a checkpoint
saved between planning and applying is seen (``replanned``) and never orphaned. Writes of
deleted checkpoints go with them; ``writes`` rows whose checkpoint does not exist at all
and whose id is more than an hour old are orphans and go too (younger ones may belong to a
checkpoint still being saved). Then VACUUM (or ``incremental_vacuum`` when the file uses
``auto_vacuum=INCREMENTAL``) and a WAL checkpoint give the space back to the file system.

The command (``ckpt prune``), and how to run it daily::

    ckpt prune DB --older-than 30d --keep-last 20 --dry-run   # what would go; changes nothing
    ckpt prune DB --older-than 30d --keep-last 20 --json      # do it, print the result as JSON
    ckpt prune DB --older-than 30d --every 24h                # stay up, prune once a day

    # crontab -e: every day at 03:17, appending the summary to a log
    17 3 * * * cd /srv/app && .venv/bin/ckpt prune /data/checkpoints.sqlite --older-than 30d --keep-last 20 >> /var/log/ckpt-prune.log 2>&1

Prune while the application runs if you must: the write lock is held while the plan is
remade and the rows deleted, then VACUUM rewrites the whole file under its own lock. The
application's writers wait up to their busy timeout (5 s for ``sqlite3.connect``) and then
fail, so schedule it off-peak.

A run goes through stages, in this order: plan and delete in one transaction, commit,
shrink the file (VACUUM and WAL truncation), then the ``after_prune`` hook (``--gc-s3``).
Interrupted (Ctrl-C, kill) or failing before the commit, nothing changed. After the commit
the deletions stay; the command says which stages completed and which did not, and the
same command run again finishes the job: it shrinks the file whenever it has free pages
or a WAL to fold in, even with nothing left to delete, then runs the hook. Ctrl-C stops a
VACUUM at once (it rolls back; the file is as before the VACUUM) and exits 130.
"""  # noqa: E501 -- a crontab line cannot be wrapped

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import shlex
import signal
import sqlite3
import stat
import sys
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, NamedTuple

from langgraph.checkpoint.serde.base import SerializerProtocol
from langgraph.checkpoint.sqlite import SqliteSaver
from rich.console import Console
from rich.table import Table

from shared.errors import CheckpointError, OneLineArgumentParser, run_command
from shared.savers.inert import UnreadableValue, split_checkpoint
from shared.savers.sqlite import require_checkpoint_tables

Key = tuple[str, str, str]  # (thread_id, checkpoint_ns, checkpoint_id)
AfterPrune = Callable[[sqlite3.Connection, bool], object]

RECENT = "newer than the cutoff"
DELTA = "DeltaChannel ancestor of a kept checkpoint"
SENDS = "parent holding a kept pre-v4 checkpoint's pending sends"
JS_DELTA = "LangGraph.js DeltaChannel namespace: not pruned"
NO_AGE = "age unknown: id is not uuid6 and ts unreadable"
ORPHAN_WRITES_GRACE = timedelta(hours=1)
TASKS_CHANNEL = "__pregel_tasks"  # where pre-v4 checkpoints kept their pending sends


def newest_reason(n: int) -> str:
    return f"newest {n} of thread"


# --- age: uuid6 ids carry their creation time ------------------------------------------------

_UUID_EPOCH_OFFSET = 0x01B21DD213814000  # 100 ns intervals from 1582-10-15 to 1970-01-01
_UNIX_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def _aware(moment: datetime) -> datetime:
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def uuid6_at(moment: datetime, clock_seq: int = 0, node: int = 0) -> str:
    """The uuid6 string LangGraph would have made at ``moment`` (exact to 100 ns).

    With ``clock_seq=0, node=0`` it is the smallest uuid6 of that instant: every id made at
    or after ``moment`` sorts at or above it, every earlier one below.
    """
    delta = _aware(moment) - _UNIX_EPOCH
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


def _scope(thread_ids: Sequence[str] | None, column: str = "thread_id") -> tuple[str, list[Any]]:
    """A WHERE fragment for the thread filter: one JSON parameter, however many threads."""
    if thread_ids is None:
        return "1", []
    # `column` is one of our constants; the thread ids travel as one JSON parameter.
    return f"{column} IN (SELECT value FROM json_each(?))", [json.dumps(list(thread_ids))]  # noqa: S608


def _checked_thread_ids(thread_ids: Sequence[str] | None) -> tuple[str, ...] | None:
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
    threads = _checked_thread_ids(thread_ids)
    now = _aware(now or datetime.now(UTC))
    cutoff = now - policy.older_than if policy.older_than is not None else None
    cutoff_id = uuid6_at(cutoff) if cutoff is not None else None
    where, params = _scope(threads)
    meta = "CAST(metadata AS TEXT)"
    # One pass over the index: rank within (thread, ns), and the DeltaChannel markers that
    # LangGraph leaves in metadata (the same ones PostgresSaver's prune looks for).
    cur = conn.execute(
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
    rows: dict[Key, _Row] = {}
    old: set[Key] = set()
    unknown_age: list[Key] = []
    for t, ns, cid, parent, rank, counters, js, is_old in cur:
        key = (t, ns, cid)
        names = frozenset(json.loads(counters)) if counters else frozenset()
        rows[key] = _Row(parent, rank, names, bool(js))
        if cutoff is None or is_old:
            old.add(key)
        elif is_old is None:
            unknown_age.append(key)
    ages_from_ts = 0
    no_age: set[Key] = set()
    for key in unknown_age:  # slow path: the id is not uuid6, read ts from the blob
        body = _load(conn, serde, key)
        try:
            ts = _aware(datetime.fromisoformat(body.ts)) if body and body.ts else None
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
    sends_parents = set()
    if candidates:
        w, p = _scope(threads)
        sends_parents = {tuple(r) for r in conn.execute(
            f"SELECT DISTINCT thread_id, checkpoint_ns, checkpoint_id FROM writes "  # noqa: S608
            f"WHERE channel = ? AND {w}", [TASKS_CHANNEL, *p])}
    loaded: dict[Key, tuple[frozenset[str], frozenset[str], int]] = {}

    def info(key: Key) -> tuple[frozenset[str], frozenset[str], int]:
        if key not in loaded:
            body = _load(conn, serde, key)
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
    writes_in_scope, writes_to_delete, orphans = _count_writes(conn, threads, candidates,
                                                               uuid6_at(now - ORPHAN_WRITES_GRACE))
    return PrunePlan(policy, now, cutoff, threads, len(rows), writes_in_scope, delete, keep,
                     cut, writes_to_delete, orphans, ages_from_ts)


# Constant fragments; the grace id is a parameter.
_ORPHAN_WHERE = ("NOT EXISTS (SELECT 1 FROM checkpoints c WHERE c.thread_id = w.thread_id "  # noqa: S608
                 "AND c.checkpoint_ns = w.checkpoint_ns AND c.checkpoint_id = w.checkpoint_id) "
                 f"AND {_IS_UUID6.format(c='w.checkpoint_id')} AND w.checkpoint_id < ?")


def _count_writes(conn: sqlite3.Connection, threads: tuple[str, ...] | None,
                  candidates: set[Key], grace_id: str) -> tuple[int, int, int]:
    where, params = _scope(threads, "w.thread_id")
    per_ckpt = Counter((t, ns, c) for t, ns, c in conn.execute(
        f"SELECT thread_id, checkpoint_ns, checkpoint_id FROM writes w WHERE {where}",  # noqa: S608
        params))
    in_scope = sum(per_ckpt.values())
    to_delete = sum(per_ckpt[k] for k in candidates)
    orphans = conn.execute(
        f"SELECT count(*) FROM writes w WHERE {where} AND {_ORPHAN_WHERE}",  # noqa: S608
        [*params, grace_id]).fetchone()[0]
    return in_scope, to_delete, orphans


# --- apply -----------------------------------------------------------------------------------

@dataclass
class PruneResult:
    """What a prune did (or, for a dry run, would do), with sizes read from the file."""

    dry_run: bool
    policy: RetentionPolicy
    cutoff: datetime | None
    checkpoints_before: int
    checkpoints_deleted: int
    checkpoints_after: int
    writes_deleted: int
    orphan_writes_deleted: int
    parents_cut: int
    kept_reasons: dict[str, int]
    file_bytes_before: int  # the database file plus its -wal and -shm
    file_bytes_after: int
    db_bytes_before: int  # the database file alone
    db_bytes_after: int
    shrink: str
    replanned: bool
    seconds: float
    after_prune: object = None
    plan: PrunePlan | None = field(default=None, repr=False)

    def to_dict(self) -> dict[str, Any]:
        hook = self.after_prune
        try:
            json.dumps(hook)
        except (TypeError, ValueError):
            hook = repr(hook)
        return {"dry_run": self.dry_run, "policy": self.policy.to_dict(),
                "cutoff": self.cutoff.isoformat() if self.cutoff else None,
                "checkpoints_before": self.checkpoints_before,
                "checkpoints_deleted": self.checkpoints_deleted,
                "checkpoints_after": self.checkpoints_after,
                "writes_deleted": self.writes_deleted,
                "orphan_writes_deleted": self.orphan_writes_deleted,
                "parents_cut": self.parents_cut, "kept_reasons": self.kept_reasons,
                "file_bytes_before": self.file_bytes_before,
                "file_bytes_after": self.file_bytes_after,
                "db_bytes_before": self.db_bytes_before, "db_bytes_after": self.db_bytes_after,
                "shrink": self.shrink, "replanned": self.replanned,
                "seconds": round(self.seconds, 3), "after_prune": hook}


def database_path(conn: sqlite3.Connection) -> Path | None:
    """The main database file of ``conn``; None for an in-memory database."""
    for _, name, file in conn.execute("PRAGMA database_list"):
        if name == "main":
            return Path(file) if file else None
    return None


def file_bytes(conn: sqlite3.Connection) -> tuple[int, int]:
    """(database file alone, database file + -wal + -shm) in bytes, from the file system."""
    path = database_path(conn)
    if path is None:
        return 0, 0
    main = path.stat().st_size if path.exists() else 0
    extra = sum(p.stat().st_size for p in (Path(f"{path}-wal"), Path(f"{path}-shm"))
                if p.exists())
    return main, main + extra


# Stages of a run, in order; PruneProgress.stage holds the one in progress (or the last done).
PLANNING = "planning"  # in the transaction: nothing committed yet
DELETING = "deleting"  # in the transaction: nothing committed yet
ROLLED_BACK = "rolled back"
COMMITTED = "committed"
VACUUMING = "vacuuming"
TRUNCATING = "truncating the WAL"
SHRUNK = "shrunk"
COLLECTING = "collecting"  # the after_prune hook (--gc-s3)
DONE = "done"


@dataclass
class PruneProgress:
    """How far a run got, updated as it goes: after an interruption or a failure it says
    truthfully what was committed and what did not run. ``on_stage(progress)`` is called
    when a stage starts (the CLI prints a line)."""

    stage: str = "not started"
    checkpoints_deleted: int = 0
    writes_deleted: int = 0
    vacuumed: str | None = None  # how the free pages were given back, once they were
    shrink: str | None = None  # the whole shrink (with the WAL truncation), once done
    on_stage: Callable[[PruneProgress], object] | None = field(default=None, repr=False)

    def enter(self, stage: str) -> None:
        self.stage = stage
        if self.on_stage is not None:
            self.on_stage(self)

    @property
    def committed(self) -> bool:
        return self.stage not in ("not started", PLANNING, DELETING, ROLLED_BACK)

    def done_text(self) -> str:
        """What is done, as a clause: 'the deletions were committed (...)' and more."""
        if not self.committed:
            return "nothing was changed (the transaction was rolled back)"
        text = (f"the deletions were committed ({self.checkpoints_deleted:,} checkpoints and "
                f"{self.writes_deleted:,} writes deleted)")
        if self.shrink is not None:
            text += f" and the file was shrunk ({self.shrink})"
        elif self.vacuumed is not None:
            text += f" and {self.vacuumed} completed"
        return text

    def not_done_text(self, hook: bool) -> str:
        """What did not run, as a clause; empty when everything ran."""
        missing = []
        if self.shrink is None:
            missing.append("the file was not shrunk" if self.vacuumed is None
                           else "the WAL was not folded into the file yet")
        if hook and self.stage != DONE:
            missing.append("S3 blob collection did not finish")
        return " and ".join(missing)


class PruneIncomplete(CheckpointError):
    """The deletions were committed but a later stage (shrink, hook) failed; the message
    says what is done, what is not and how to finish. ``progress`` has the details."""

    def __init__(self, message: str, progress: PruneProgress) -> None:
        super().__init__(message)
        self.progress = progress


@contextmanager
def _ctrl_c_stops_statements(conn: sqlite3.Connection) -> Iterator[None]:
    """Let Ctrl-C stop a long statement (VACUUM) at once instead of after it.

    Python runs signal handlers between bytecodes only, so a SIGINT arriving during VACUUM
    would wait until the whole file is rewritten, and then report it as interrupted. Here
    SIGINT only records itself and a progress handler, which SQLite calls during the
    statement, asks SQLite to abort: VACUUM rolls back (the file stays as it was) and
    KeyboardInterrupt is raised. Only in the main thread with Python's default SIGINT
    handler or ``run_command``'s (the ``ckpt`` command); elsewhere the statement runs to its
    end.
    """
    handler = signal.getsignal(signal.SIGINT)
    if (threading.current_thread() is not threading.main_thread()
            or (handler is not signal.default_int_handler
                and not getattr(handler, "ckpt_command", False))):
        yield
        return
    hit: list[int] = []
    previous = signal.signal(signal.SIGINT, lambda *_: hit.append(1))
    conn.set_progress_handler(lambda: bool(hit), 10_000)
    try:
        yield
    except sqlite3.OperationalError:
        if hit:
            raise KeyboardInterrupt from None
        raise
    finally:
        conn.set_progress_handler(None, 0)
        signal.signal(signal.SIGINT, previous)
    if hit:
        raise KeyboardInterrupt


def _fold_wal(conn: sqlite3.Connection) -> str | None:
    """Checkpoint the WAL into the file and truncate it (WAL mode only); says how."""
    if conn.execute("PRAGMA journal_mode").fetchone()[0] != "wal":
        return None
    busy = conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()[0]
    return "WAL truncated" if not busy else "WAL busy: readers kept it"


def _shrink(conn: sqlite3.Connection, progress: PruneProgress | None = None) -> str:
    """Give freed pages back to the file system; says how."""
    progress = progress or PruneProgress()
    mode = conn.execute("PRAGMA auto_vacuum").fetchone()[0]
    progress.enter(VACUUMING)
    # Progress is recorded inside each block: a Ctrl-C that lands as the statement ends is
    # raised on leaving the block, after the record says the statement completed.
    with _ctrl_c_stops_statements(conn):
        if mode == 2:
            conn.execute("PRAGMA incremental_vacuum").fetchall()
            how = "incremental_vacuum"
        elif mode == 1:
            how = "auto_vacuum=FULL (at commit)"
        else:
            conn.execute("VACUUM")
            how = "VACUUM"
        progress.vacuumed = how
    progress.enter(TRUNCATING)
    with _ctrl_c_stops_statements(conn):
        folded = _fold_wal(conn)
        progress.shrink = f"{how} + {folded}" if folded else how
    return progress.shrink


def _wal_has_frames(conn: sqlite3.Connection) -> bool:
    path = database_path(conn)
    return path is not None and os.path.exists(f"{path}-wal") and os.path.getsize(
        f"{path}-wal") > 0


def apply_prune(target: sqlite3.Connection | SqliteSaver, plan: PrunePlan, *,
                dry_run: bool = False, vacuum: bool = True,
                after_prune: AfterPrune | None = None,
                progress: PruneProgress | None = None) -> PruneResult:
    """Carry out ``plan`` in one transaction, then shrink the file, then ``after_prune``.

    The plan is recomputed inside the write lock (same policy, clock and threads); if the
    database changed since it was made, the fresh plan is applied and ``replanned`` is True,
    so a checkpoint saved in between is never orphaned. ``dry_run`` changes nothing and
    reports what would go. ``after_prune(conn, dry_run)`` runs after the commit and the
    shrink, e.g. to garbage-collect offloaded blobs that no row references any more; its
    return value is kept in the result. A failure after the commit raises
    ``PruneIncomplete`` saying what was committed and what did not run; ``progress`` (if
    given) follows the stages, for a caller interrupted by Ctrl-C. A saver's lock is held
    throughout, so its other callers in this process wait instead of interleaving (the hook
    must use ``conn``, not the saver).
    """
    return _run(target, plan.policy, plan.thread_ids, plan.now, plan, dry_run, vacuum,
                after_prune, progress)


def prune_now(target: sqlite3.Connection | SqliteSaver, policy: RetentionPolicy,
              thread_ids: Sequence[str] | None = None, *, now: datetime | None = None,
              dry_run: bool = False, vacuum: bool = True,
              after_prune: AfterPrune | None = None,
              progress: PruneProgress | None = None) -> PruneResult:
    """Plan and apply in one step: the plan is made inside the transaction."""
    return _run(target, policy, _checked_thread_ids(thread_ids),
                _aware(now or datetime.now(UTC)), None, dry_run, vacuum, after_prune, progress)


def _run(target: sqlite3.Connection | SqliteSaver, policy: RetentionPolicy,
         threads: tuple[str, ...] | None, now: datetime, expected: PrunePlan | None,
         dry_run: bool, vacuum: bool, after_prune: AfterPrune | None,
         progress: PruneProgress | None) -> PruneResult:
    progress = progress if progress is not None else PruneProgress()
    if isinstance(target, SqliteSaver):
        target.setup()
        with target.lock:
            return _apply(target.conn, policy, threads, now, expected, target.serde, dry_run,
                          vacuum, after_prune, progress)
    return _apply(target, policy, threads, now, expected, None, dry_run, vacuum, after_prune,
                  progress)


def _apply(conn: sqlite3.Connection, policy: RetentionPolicy, threads: tuple[str, ...] | None,
           now: datetime, expected: PrunePlan | None, serde: SerializerProtocol | None,
           dry_run: bool, vacuum: bool, after_prune: AfterPrune | None,
           progress: PruneProgress) -> PruneResult:
    started = time.perf_counter()
    db_before, bytes_before = file_bytes(conn)
    if conn.in_transaction:
        raise CheckpointError("The connection has an open transaction: commit or roll it back "
                              "before pruning, so the prune is not mixed into it.")
    if dry_run:
        progress.enter(PLANNING)
        plan = plan_prune(conn, policy, threads, now=now, serde=serde)
        deleted, writes, orphans = len(plan.delete), plan.writes_to_delete, plan.orphan_writes
    else:
        conn.execute("BEGIN IMMEDIATE")  # the write lock first: nothing changes under the plan
        try:
            progress.enter(PLANNING)
            plan = plan_prune(conn, policy, threads, now=now, serde=serde)
            progress.enter(DELETING)
            writes = conn.executemany(
                "DELETE FROM writes WHERE thread_id = ? AND checkpoint_ns = ? "
                "AND checkpoint_id = ?", plan.delete).rowcount
            deleted = conn.executemany(
                "DELETE FROM checkpoints WHERE thread_id = ? AND checkpoint_ns = ? "
                "AND checkpoint_id = ?", plan.delete).rowcount
            conn.executemany(
                "UPDATE checkpoints SET parent_checkpoint_id = NULL WHERE thread_id = ? "
                "AND checkpoint_ns = ? AND checkpoint_id = ?", plan.cut_parents)
            where, params = _scope(threads, "w.thread_id")
            orphans = conn.execute(
                f"DELETE FROM writes AS w WHERE {where} AND {_ORPHAN_WHERE}",  # noqa: S608
                [*params, uuid6_at(now - ORPHAN_WRITES_GRACE)]).rowcount
            progress.checkpoints_deleted, progress.writes_deleted = deleted, writes + orphans
            conn.commit()
        except BaseException:
            # A Ctrl-C landing just after commit() returned finds no open transaction: the
            # deletions are committed, and the progress must say so.
            if conn.in_transaction:
                conn.rollback()
                progress.checkpoints_deleted = progress.writes_deleted = 0
                progress.stage = ROLLED_BACK
            else:
                progress.stage = COMMITTED
            raise
        progress.enter(COMMITTED)
    hook = after_prune is not None
    try:
        if dry_run:
            how = "none (dry run)"
        elif not vacuum:
            how = "none (vacuum=False)"
        elif deleted or writes or orphans or conn.execute("PRAGMA freelist_count").fetchone()[0]:
            how = progress.shrink = _shrink(conn, progress)  # free pages (a rerun's too)
        elif _wal_has_frames(conn):
            # Nothing to free, but the WAL may hold a VACUUM committed by a run killed before
            # its WAL truncation: fold it in now, so the sizes reported are the real ones.
            progress.enter(TRUNCATING)
            with _ctrl_c_stops_statements(conn):
                folded = _fold_wal(conn)
                how = progress.shrink = "none (nothing freed)" + (f" + {folded}" if folded
                                                                 else "")
        else:
            how = "none (nothing freed)"
        progress.enter(SHRUNK)
        if hook:
            progress.enter(COLLECTING)
        hook_result = after_prune(conn, dry_run) if after_prune is not None else None
    except CheckpointError as exc:
        if dry_run:
            raise
        raise PruneIncomplete(_incomplete(progress, hook, str(exc)), progress) from exc
    except sqlite3.Error as exc:
        if dry_run:
            raise
        raise PruneIncomplete(_incomplete(progress, hook, f"SQLite: {exc}"), progress) from exc
    progress.enter(DONE)
    db_after, bytes_after = file_bytes(conn)  # after the VACUUM and the WAL truncation
    replanned = expected is not None and (plan.delete != expected.delete
                                          or plan.cut_parents != expected.cut_parents)
    return PruneResult(
        dry_run=dry_run, policy=policy, cutoff=plan.cutoff,
        checkpoints_before=plan.checkpoints_in_scope, checkpoints_deleted=deleted,
        checkpoints_after=plan.checkpoints_in_scope - deleted,
        writes_deleted=writes + orphans, orphan_writes_deleted=orphans,
        parents_cut=len(plan.cut_parents), kept_reasons=plan.reason_counts(),
        file_bytes_before=bytes_before, file_bytes_after=bytes_after,
        db_bytes_before=db_before, db_bytes_after=db_after, shrink=how, replanned=replanned,
        seconds=time.perf_counter() - started, after_prune=hook_result, plan=plan)


def _failed_stage(progress: PruneProgress, hook: bool) -> tuple[str, str]:
    """(the stage that failed, what did not run after it) for a PruneIncomplete."""
    if progress.stage == COLLECTING:
        return "S3 blob collection", ""
    return "shrinking the file (VACUUM)", "S3 blob collection did not run" if hook else ""


def _incomplete(progress: PruneProgress, hook: bool, reason: str) -> str:
    """One sentence: what is committed, which stage failed and why, how to finish."""
    failed, missing = _failed_stage(progress, hook)
    return (f"Pruned partly: {progress.done_text()}; {failed} failed ({reason.rstrip('.')})"
            f"{'; ' + missing if missing else ''}: run the same prune again once that is "
            "fixed, which finishes the job and deletes nothing else that was not already due.")


# --- audit: what a reader checks afterwards, without the planner -----------------------------

class AuditRow(NamedTuple):
    parent: str | None
    ts: datetime  # read from the serialized checkpoint, not from the id
    digest: str  # sha256 of checkpoint blob + metadata: did a kept row change?


def audit_rows(conn: sqlite3.Connection) -> dict[Key, AuditRow]:
    """Every checkpoint with its parent, its own ``ts`` and a digest of its bytes."""
    out = {}
    for t, ns, cid, parent, typ, blob, meta in conn.execute(
            "SELECT thread_id, checkpoint_ns, checkpoint_id, parent_checkpoint_id, type, "
            "checkpoint, metadata FROM checkpoints"):
        ts = _aware(datetime.fromisoformat(split_checkpoint(typ, blob)[0]["ts"]))
        out[(t, ns, cid)] = AuditRow(parent, ts, hashlib.sha256(blob + (meta or b"")).hexdigest())
    return out


def audit_counts(conn: sqlite3.Connection) -> dict[str, int]:
    """Row counts, payload bytes (every column of every row), dangling parent links and
    orphaned writes, by plain SQL."""
    q = {
        "checkpoints": "SELECT count(*) FROM checkpoints",
        "writes": "SELECT count(*) FROM writes",
        "payload_bytes": "SELECT (SELECT coalesce(sum(length(thread_id) + length(checkpoint_ns) "
        "+ length(checkpoint_id) + coalesce(length(parent_checkpoint_id), 0) + length(type) "
        "+ length(checkpoint) + length(metadata)), 0) FROM checkpoints) + (SELECT "
        "coalesce(sum(length(thread_id) + length(checkpoint_ns) + length(checkpoint_id) "
        "+ length(task_id) + length(task_path) + 8 + length(channel) + length(type) "
        "+ coalesce(length(value), 0)), 0) FROM writes)",
        "dangling_parent_links": "SELECT count(*) FROM checkpoints c WHERE "
        "parent_checkpoint_id IS NOT NULL AND NOT EXISTS (SELECT 1 FROM checkpoints p WHERE "
        "p.thread_id = c.thread_id AND p.checkpoint_ns = c.checkpoint_ns "
        "AND p.checkpoint_id = c.parent_checkpoint_id)",
        "orphaned_writes": "SELECT count(*) FROM writes w WHERE NOT EXISTS (SELECT 1 FROM "
        "checkpoints c WHERE c.thread_id = w.thread_id AND c.checkpoint_ns = w.checkpoint_ns "
        "AND c.checkpoint_id = w.checkpoint_id)",
    }
    return {name: conn.execute(sql).fetchone()[0] for name, sql in q.items()}


# --- the command line ------------------------------------------------------------------------

# One number per unit, largest unit first (1d12h): "1d1d" or "12h1d" are refused, not summed.
_DURATION = re.compile(r"\s*(?:(\d+)\s*d)?\s*(?:(\d+)\s*h)?\s*(?:(\d+)\s*m)?\s*(?:(\d+)\s*s)?\s*")
_UNIT = {"d": 86_400, "h": 3_600, "m": 60, "s": 1}
MAX_DURATION_DAYS = 36_500  # a century: any longer and the cutoff date itself overflows


def parse_duration(text: str, option: str = "duration") -> timedelta:
    """``30d``, ``12h``, ``90m``, ``45s`` (or combined, ``1d12h``) as a positive timedelta."""
    m = _DURATION.fullmatch(text.lower())
    if m is None or not any(m.groups()):
        raise CheckpointError(f"{option} {text!r} is not a duration: write a number with a unit "
                              "d, h, m or s, such as 30d, 12h, 90m or 45s (each unit once, "
                              "largest first: 1d12h).")
    seconds = sum(int(n) * _UNIT[u] for n, u in zip(m.groups(), "dhms", strict=True) if n)
    if seconds <= 0:
        raise CheckpointError(f"{option} {text!r} must be longer than zero: such as 30d.")
    if seconds > MAX_DURATION_DAYS * _UNIT["d"]:
        raise CheckpointError(f"{option} {text!r} is longer than {MAX_DURATION_DAYS:,} days: "
                              "give an age such as 30d.")
    return timedelta(seconds=seconds)


def format_duration(delta: timedelta) -> str:
    seconds = int(delta.total_seconds())
    for unit in "dhm":
        if seconds % _UNIT[unit] == 0 and seconds >= _UNIT[unit]:
            return f"{seconds // _UNIT[unit]}{unit}"
    return f"{seconds}s"


MAX_KEEP_LAST = 1_000_000_000


def parse_keep_last(text: str) -> int:
    if not re.fullmatch(r"\s*\d+\s*", text) or not 1 <= int(text) <= MAX_KEEP_LAST:
        raise CheckpointError(f"--keep-last {text!r} must be a whole number of at least 1 "
                              f"(at most {MAX_KEEP_LAST:,}), such as 20.")
    return int(text)


def open_checkpoint_db(path: Path, *, read_only: bool = False) -> sqlite3.Connection:
    """Open an existing SqliteSaver file for pruning (``read_only``: for a dry run, with the
    read-only opener of inspect); never creates a file.

    Before SQLite opens it for writing, this user must be allowed to write the file and its
    directory (SQLite creates the -journal, or -wal and -shm, beside it): otherwise SQLite
    would open it read-only, leave -wal/-shm behind, and fail later with a misleading error.
    ``os.access`` also sees ``chattr +i`` and read-only mounts, even for root.
    """
    if not path.is_file():
        raise CheckpointError(f"{path} does not exist or is not a file: give the path of a "
                              "SQLite checkpoint database.")
    if read_only:
        from shared.ops.decide_cli import open_checkpoint_db as open_read_only

        return open_read_only(path)
    resolved = path.resolve()
    if not os.access(resolved, os.W_OK):
        st = resolved.stat()
        raise CheckpointError(
            f"{path} is not writable by this user (mode {stat.filemode(st.st_mode)}, owner uid "
            f"{st.st_uid}), and pruning deletes rows and rewrites the file: run it as a user "
            f"who may write the file, or make it writable (chmod u+w {shlex.quote(str(path))}); "
            "nothing was changed, and --dry-run works on a read-only file.")
    if not os.access(resolved.parent, os.W_OK | os.X_OK):
        raise CheckpointError(
            f"The directory {resolved.parent} is not writable by this user, and SQLite must "
            f"create its journal (-wal, -shm or -journal) beside {path.name} to prune it: run "
            "it as a user who may write the directory, or make it writable (chmod u+w "
            f"{shlex.quote(str(resolved.parent))}); nothing was changed, and --dry-run works "
            "on a read-only file.")
    try:
        conn = sqlite3.connect(f"{resolved.as_uri()}?mode=rw", uri=True, timeout=30,
                               check_same_thread=False)
        tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    except sqlite3.DatabaseError as exc:
        raise CheckpointError(f"{path} is not a writable SQLite database ({exc}).") from exc
    return require_checkpoint_tables(conn, path, tables)


def _add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("db", type=Path, help="path of the SQLite checkpoint file")
    p.add_argument("--older-than", metavar="AGE",
                   help="delete checkpoints older than AGE (30d, 12h, 90m, 45s)")
    p.add_argument("--keep-last", metavar="N",
                   help="but always keep the newest N checkpoints of every thread")
    p.add_argument("--thread", action="append", metavar="T", dest="threads",
                   help="only these threads (repeat the option for several)")
    p.add_argument("--dry-run", action="store_true",
                   help="report what would be deleted; change nothing")
    p.add_argument("--every", metavar="INTERVAL",
                   help="keep running: prune, sleep INTERVAL (e.g. 24h), repeat; Ctrl-C stops")
    p.add_argument("--runs", type=int, default=None, metavar="N",
                   help="with --every: stop after N runs (default: until interrupted)")
    p.add_argument("--json", action="store_true", help="print the result as JSON (one line "
                   "per run with --every)")
    p.add_argument("--gc-s3", action="store_true",
                   help="also delete offloaded blobs in S3 that no checkpoint references any "
                   "more (S3_ENDPOINT_URL, AWS credentials, CKPT_S3_BUCKET); with --dry-run, "
                   "list the ones unreferenced now")
    p.add_argument("--gc-grace", metavar="AGE", default="1h",
                   help="with --gc-s3: spare blobs younger than AGE, which a checkpoint being "
                   "written right now may need (default 1h)")
    p.set_defaults(func=cmd_prune)


def add_prune_command(subparsers: Any) -> None:
    """Register ``prune`` on an argparse subparsers object (``ckpt prune``)."""
    p = subparsers.add_parser(
        "prune", help="delete old checkpoints by a retention policy, then shrink the file",
        description="Delete checkpoints older than --older-than except the newest --keep-last "
        "of each thread, keeping what the kept ones need (DeltaChannel ancestors); orphaned "
        "writes go too; then VACUUM. Exit status 2 on bad input.",
        epilog="Daily with cron: 17 3 * * * cd /srv/app && .venv/bin/ckpt prune "
        "/data/checkpoints.sqlite --older-than 30d --keep-last 20 >> /var/log/ckpt-prune.log 2>&1")
    _add_arguments(p)


def _print_result(console: Console, db: Path, result: PruneResult) -> None:
    verb = "would delete" if result.dry_run else "deleted"
    table = Table(title=f"ckpt prune {db}{' (dry run: nothing changed)' if result.dry_run else ''}"
                  f" — {result.policy.describe()}", title_justify="left")
    table.add_column("")
    table.add_column("", justify="right")
    rows = [("cutoff", result.cutoff.isoformat(timespec="seconds") if result.cutoff else "-"),
            ("checkpoints before", f"{result.checkpoints_before:,}"),
            (f"checkpoints {verb}", f"{result.checkpoints_deleted:,}"),
            ("checkpoints after", f"{result.checkpoints_after:,}"),
            (f"writes {verb}", f"{result.writes_deleted:,} ({result.orphan_writes_deleted:,} "
                               "orphaned)"),
            ("parent links cut", f"{result.parents_cut:,}")]
    rows += [(f"kept: {reason}", f"{n:,}") for reason, n in result.kept_reasons.items()]
    if isinstance(result.after_prune, list):
        rows.append((f"S3 blobs {'unreferenced' if result.dry_run else 'deleted'}",
                     f"{len(result.after_prune):,}"))
    rows += [("file bytes (with -wal)", f"{result.file_bytes_before:,} → "
                                         f"{result.file_bytes_after:,}"),
             ("shrink", result.shrink), ("seconds", f"{result.seconds:.2f}")]
    for row in rows:
        table.add_row(*row)
    console.print(table)


def _command(args: argparse.Namespace) -> str:
    """The command to run again to finish an interrupted or failed run (no --every)."""
    parts = ["ckpt", "prune", str(args.db)]
    if args.older_than:
        parts += ["--older-than", args.older_than]
    if args.keep_last is not None:
        parts += ["--keep-last", args.keep_last]
    for thread in args.threads or []:
        parts += ["--thread", thread]
    if args.gc_s3:
        parts.append("--gc-s3")
        if args.gc_grace != "1h":
            parts += ["--gc-grace", args.gc_grace]
    return shlex.join(parts)


_DURING = {COMMITTED: "after the commit", VACUUMING: "during VACUUM",
           TRUNCATING: "while truncating the WAL", SHRUNK: "after shrinking the file",
           COLLECTING: "during S3 blob collection", PLANNING: "while planning",
           DELETING: "while deleting", ROLLED_BACK: "while deleting"}


def interrupted_message(args: argparse.Namespace, progress: PruneProgress) -> str:
    """What a Ctrl-C in the middle of a run leaves, and the command that finishes it."""
    during = _DURING.get(progress.stage, "before the run started")
    if progress.stage == VACUUMING and progress.vacuumed:
        during = "as VACUUM ended"
    if not progress.committed:
        return (f"ckpt: interrupted {during}: nothing was changed (the transaction was rolled "
                f"back): run `{_command(args)}` again.")
    missing = progress.not_done_text(bool(args.gc_s3))
    if not missing:  # the stage in progress had just completed
        return (f"ckpt: interrupted at the end of the run: {progress.done_text()}; nothing is "
                "left to do.")
    return (f"ckpt: interrupted {during}: {progress.done_text()}; {missing}: run "
            f"`{_command(args)}` to finish (it shrinks the file even with nothing left to "
            "delete).")


def _incomplete_message(args: argparse.Namespace, exc: PruneIncomplete) -> str:
    progress, cause = exc.progress, exc.__cause__
    failed, missing = _failed_stage(progress, bool(args.gc_s3))
    once = "S3 is reachable" if progress.stage == COLLECTING else "that is fixed"
    code = getattr(cause, "sqlite_errorcode", 0) & 0xFF
    if code == sqlite3.SQLITE_FULL:
        once = "the disk has free space (VACUUM needs about the file's size)"
    elif code in (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED):
        once = "no other process is reading or writing the file"
    return (f"{args.db}: {progress.done_text()}; {failed} failed ({str(cause).rstrip('.')})"
            f"{'; ' + missing if missing else ''}: run `{_command(args)}` again once {once}, "
            "nothing else is needed.")


def _refused(db: Path, exc: sqlite3.DatabaseError) -> CheckpointError:
    """A SQLite error before the commit (nothing changed), as one sentence."""
    code = getattr(exc, "sqlite_errorcode", 0) & 0xFF
    if code == sqlite3.SQLITE_READONLY:
        return CheckpointError(
            f"SQLite cannot write {db} ({exc}): the file, its directory or the file system is "
            "read-only for this process (permissions, chattr +i, a read-only mount): make it "
            "writable, then run the prune again; nothing was changed.")
    if code in (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED):
        return CheckpointError(f"SQLite refused the prune of {db} ({exc}): another process "
                               "holds the write lock; nothing was changed: try again later.")
    return CheckpointError(f"SQLite refused the prune of {db} ({exc}); nothing was changed: "
                           f"check the file with sqlite3 {shlex.quote(str(db))} "
                           "'PRAGMA integrity_check'.")


def _stage_printer(args: argparse.Namespace) -> Callable[[PruneProgress], None] | None:
    """Stage lines on stderr for a person (not with --json or --dry-run): a long VACUUM
    is then visibly the VACUUM, and a log shows how far a run got."""
    if args.json or args.dry_run:
        return None

    def show(progress: PruneProgress) -> None:
        line = {COMMITTED: f"committed: {progress.checkpoints_deleted:,} checkpoints and "
                           f"{progress.writes_deleted:,} writes deleted",
                VACUUMING: "VACUUM: rewriting the file to give the freed space back (Ctrl-C "
                           "stops it; the deletions stay)",
                COLLECTING: "collecting unreferenced S3 blobs"}.get(progress.stage)
        if line:
            print(f"ckpt prune: {line}", file=sys.stderr, flush=True)
    return show


def _run_once(args: argparse.Namespace, policy: RetentionPolicy,
              progress: PruneProgress) -> PruneResult:
    gc = _s3_gc(args)  # S3 is checked before anything is deleted
    conn = open_checkpoint_db(args.db, read_only=args.dry_run)
    try:
        if args.threads:
            where, params = _scope(args.threads)
            known = {r[0] for r in conn.execute(
                f"SELECT DISTINCT thread_id FROM checkpoints WHERE {where}",  # noqa: S608
                params)}
            if missing := [t for t in args.threads if t not in known]:
                raise CheckpointError(f"Thread {missing[0]!r} has no checkpoints in {args.db}: "
                                      "run `ckpt inspect DB` to list the threads.")
        try:
            result = prune_now(conn, policy, args.threads, dry_run=args.dry_run,
                               after_prune=gc, progress=progress)
        except PruneIncomplete as exc:
            raise CheckpointError(_incomplete_message(args, exc)) from exc
        except sqlite3.DatabaseError as exc:
            raise _refused(args.db, exc) from exc
    finally:
        conn.close()
        wal = Path(f"{args.db.resolve()}-wal")
        if progress.vacuumed and progress.shrink is None and (
                not wal.exists() or not wal.stat().st_size):
            # Interrupted after VACUUM: closing, the last connection folded the WAL in.
            progress.shrink = f"{progress.vacuumed} + WAL folded in at close"
    if not args.dry_run:  # the sizes once the last connection is closed: what is on disk
        path = args.db.resolve()
        result.db_bytes_after = path.stat().st_size
        result.file_bytes_after = result.db_bytes_after + sum(
            p.stat().st_size for p in (Path(f"{path}-wal"), Path(f"{path}-shm")) if p.exists())
    return result


def _s3_gc(args: argparse.Namespace) -> AfterPrune | None:
    """The ``--gc-s3`` hook: collect offloaded blobs that no row references any more."""
    if not args.gc_s3:
        return None
    from shared.infra.s3 import s3_settings_from_env
    from shared.savers.offload import S3BlobStore, collect_unreferenced_blobs

    settings = s3_settings_from_env()
    if settings is None:
        raise CheckpointError("--gc-s3 needs S3_ENDPOINT_URL (and AWS_ACCESS_KEY_ID, "
                              "AWS_SECRET_ACCESS_KEY, CKPT_S3_BUCKET) to know which store to "
                              "clean: set them, or drop --gc-s3.")
    store = S3BlobStore.from_settings(settings)
    grace = parse_duration(args.gc_grace, "--gc-grace").total_seconds()
    if not args.dry_run:  # S3 down at the start: refuse before deleting anything
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            store.client.head_bucket(Bucket=store.bucket)
        except (ClientError, BotoCoreError) as exc:
            raise store._fail(exc, "nothing was pruned (drop --gc-s3 to prune without "
                              "collecting blobs)", store.bucket) from None

    def collect(conn: sqlite3.Connection, dry_run: bool) -> list[str]:
        return collect_unreferenced_blobs(conn, store, dry_run=dry_run, grace_seconds=grace)

    return collect


def cmd_prune(args: argparse.Namespace) -> int:
    """``ckpt prune``: validate everything first, then prune once or every INTERVAL."""
    # `is not None`: an empty value is refused, not taken for an absent option.
    older = (parse_duration(args.older_than, "--older-than") if args.older_than is not None
             else None)
    keep = parse_keep_last(args.keep_last) if args.keep_last is not None else None
    if older is None and keep is None:
        raise CheckpointError("Give --older-than, --keep-last or both, e.g. --older-than 30d "
                              "--keep-last 20: with neither, every checkpoint would go.")
    every = parse_duration(args.every, "--every") if args.every is not None else None
    if args.runs is not None and (args.runs < 1 or every is None):
        raise CheckpointError("--runs N needs --every and N of at least 1.")
    if args.gc_s3:  # checked now, not after the prune has run
        parse_duration(args.gc_grace, "--gc-grace")
    policy = RetentionPolicy(older, keep)
    console = Console()
    runs, progress = 0, None
    try:
        while True:
            progress = PruneProgress(on_stage=_stage_printer(args))
            result = _run_once(args, policy, progress)
            progress, runs = None, runs + 1
            if args.json:
                print(json.dumps({"db": str(args.db), "run": runs, **result.to_dict()}),
                      flush=True)
            else:
                _print_result(console, args.db, result)
            if every is None or (args.runs is not None and runs >= args.runs):
                return 0
            if not args.json:
                console.print(f"next run in {format_duration(every)} (Ctrl-C stops)")
            time.sleep(every.total_seconds())
    except KeyboardInterrupt:
        if progress is None:  # asleep between runs (--every)
            print(f"ckpt prune: stopped by Ctrl-C after {runs} complete run(s).",
                  file=sys.stderr)
        else:
            print(interrupted_message(args, progress), file=sys.stderr)
        return 130


def prune_main(argv: Sequence[str] | None = None) -> int:
    """``ckpt prune`` on its own: returns 0, or 2 with one line on stderr for bad input."""
    parser = OneLineArgumentParser(prog="ckpt prune", description=__doc__.splitlines()[0])
    _add_arguments(parser)
    args = parser.parse_args(list(argv) if argv is not None else None)
    return run_command(cmd_prune, args)


if __name__ == "__main__":
    raise SystemExit(prune_main())
