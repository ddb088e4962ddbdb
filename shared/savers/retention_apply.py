"""Apply a retention plan to a SQLite checkpoint file, then give the space back.

Apply runs in one ``BEGIN IMMEDIATE`` transaction and re-plans inside it, so a checkpoint
saved between planning and applying is seen (``replanned``) and never orphaned. Writes of
deleted checkpoints go with them; ``writes`` rows whose checkpoint does not exist at all
and whose id is more than an hour old are orphans and go too (younger ones may belong to a
checkpoint still being saved). Then VACUUM (or ``incremental_vacuum`` when the file uses
``auto_vacuum=INCREMENTAL``) and a WAL checkpoint give the space back to the file system.

A run goes through stages, in this order: plan and delete in one transaction, commit,
shrink the file (VACUUM and WAL truncation), then the ``after_prune`` hook (``--gc-s3``).
Interrupted (Ctrl-C, kill) or failing before the commit, nothing changed. After the commit
the deletions stay; the command says which stages completed and which did not, and the
same command run again finishes the job: it shrinks the file whenever it has free pages
or a WAL to fold in, even with nothing left to delete, then runs the hook. Ctrl-C stops a
VACUUM at once (it rolls back; the file is as before the VACUUM) and exits 130.
"""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from langgraph.checkpoint.serde.base import SerializerProtocol
from langgraph.checkpoint.sqlite import SqliteSaver

from shared.errors import CheckpointError
from shared.savers.retention import (
    ORPHAN_WHERE,
    ORPHAN_WRITES_GRACE,
    PrunePlan,
    RetentionPolicy,
    aware,
    checked_thread_ids,
    plan_prune,
    thread_scope,
    uuid6_at,
)

AfterPrune = Callable[[sqlite3.Connection, bool], object]


# --- apply -----------------------------------------------------------------------------------

@dataclass
class PruneCounts:
    """What every prune reports, on SQLite or PostgreSQL: its policy and the rows it removed."""

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

    def count_rows(self) -> list[tuple[str, str]]:
        """The report's rows, for a table: (label, figure), each with "deleted" or "would
        delete" as the run was real or dry."""
        verb = "would delete" if self.dry_run else "deleted"
        return [("cutoff", self.cutoff.isoformat(timespec="seconds") if self.cutoff else "-"),
                ("checkpoints before", f"{self.checkpoints_before:,}"),
                (f"checkpoints {verb}", f"{self.checkpoints_deleted:,}"),
                ("checkpoints after", f"{self.checkpoints_after:,}"),
                (f"writes {verb}", f"{self.writes_deleted:,} "
                                   f"({self.orphan_writes_deleted:,} orphaned)"),
                ("parent links cut", f"{self.parents_cut:,}"),
                *((f"kept: {reason}", f"{n:,}") for reason, n in self.kept_reasons.items())]

    def counts_dict(self) -> dict[str, Any]:
        return {"dry_run": self.dry_run, "policy": self.policy.to_dict(),
                "cutoff": self.cutoff.isoformat() if self.cutoff else None,
                **{k: getattr(self, k) for k in (
                    "checkpoints_before", "checkpoints_deleted", "checkpoints_after",
                    "writes_deleted", "orphan_writes_deleted", "parents_cut", "kept_reasons")}}


@dataclass
class PruneResult(PruneCounts):
    """What a prune did (or, for a dry run, would do), with sizes read from the file."""

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
        return {**self.counts_dict(), "file_bytes_before": self.file_bytes_before,
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
    return _run(target, policy, checked_thread_ids(thread_ids),
                aware(now or datetime.now(UTC)), None, dry_run, vacuum, after_prune, progress)


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
            where, params = thread_scope(threads, "w.thread_id")
            orphans = conn.execute(
                f"DELETE FROM writes AS w WHERE {where} AND {ORPHAN_WHERE}",  # noqa: S608
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


def failed_stage(progress: PruneProgress, hook: bool) -> tuple[str, str]:
    """(the stage that failed, what did not run after it) for a PruneIncomplete."""
    if progress.stage == COLLECTING:
        return "S3 blob collection", ""
    return "shrinking the file (VACUUM)", "S3 blob collection did not run" if hook else ""


def _incomplete(progress: PruneProgress, hook: bool, reason: str) -> str:
    """One sentence: what is committed, which stage failed and why, how to finish."""
    failed, missing = failed_stage(progress, hook)
    return (f"Pruned partly: {progress.done_text()}; {failed} failed ({reason.rstrip('.')})"
            f"{'; ' + missing if missing else ''}: run the same prune again once that is "
            "fixed, which finishes the job and deletes nothing else that was not already due.")
