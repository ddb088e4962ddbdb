"""``ckpt prune DB``: delete old checkpoints by a retention policy, then give the space back.

    ckpt prune DB --older-than 30d --keep-last 20 --dry-run   # what would go; changes nothing
    ckpt prune DB --older-than 30d --keep-last 20 --json      # do it, print the result as JSON
    ckpt prune DB --older-than 30d --every 24h                # stay up, prune once a day
    ckpt prune DB --keep-last 20 --gc-s3                      # and collect unreferenced S3 blobs
    ckpt prune postgresql://app:secret@db:5432/agents --older-than 30d --keep-last 20

DB is a SQLite checkpoint file or a ``postgresql://`` URL of a PostgresSaver database: on
PostgreSQL the same policies run in short batched transactions (``shared.ops.prune_pg``).

What a run does and says on interruption or failure: ``shared.ops.prune``.
"""

from __future__ import annotations

import argparse
import json
import re
import shlex
import sqlite3
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from shared.durations import format_duration, parse_duration
from shared.errors import CheckpointError
from shared.infra.urls import mask_url
from shared.ops.files import open_checkpoint_db
from shared.ops.prune_pg import print_pg_result, prune_url
from shared.progress import progress_bar
from shared.savers.retention import (  # the engine, re-exported: see __all__
    RetentionPolicy,
    thread_scope,
)
from shared.savers.retention_apply import (
    COLLECTING,
    COMMITTED,
    DELETING,
    PLANNING,
    ROLLED_BACK,
    SHRUNK,
    TRUNCATING,
    VACUUMING,
    AfterPrune,
    PruneIncomplete,
    PruneProgress,
    PruneResult,
    failed_stage,
    prune_now,
)
from shared.savers.retention_pg import PgProgress, PgPruneResult

# One number per unit, largest unit first (1d12h): "1d1d" or "12h1d" are refused, not summed.
MAX_KEEP_LAST = 1_000_000_000


def parse_keep_last(text: str) -> int:
    if not re.fullmatch(r"\s*\d+\s*", text) or not 1 <= int(text) <= MAX_KEEP_LAST:
        raise CheckpointError(f"--keep-last {text!r} must be a whole number of at least 1 "
                              f"(at most {MAX_KEEP_LAST:,}), such as 20.")
    return int(text)


def is_postgres_url(text: str) -> bool:
    return re.match(r"(?i)postgres(ql)?://", text) is not None


def _db_or_url(text: str) -> Path | str:
    """A ``postgresql://`` URL stays a string (a Path would fold its ``//``)."""
    return text if is_postgres_url(text) else Path(text)


def _shown(db: Path | str) -> str:
    return mask_url(db) if isinstance(db, str) else str(db)


def _add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("db", metavar="DB", type=_db_or_url,
                   help="a SQLite checkpoint file, or the postgresql://USER:PASSWORD@HOST:5432/"
                   "DBNAME URL of a PostgresSaver database")
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
    p.add_argument("--batch-size", type=int, default=500, metavar="N",
                   help="PostgreSQL: checkpoints deleted per transaction (default 500)")
    p.add_argument("--lock-timeout", type=int, default=2000, metavar="MS",
                   help="PostgreSQL: a batch waiting longer than MS for another session's lock "
                   "rolls back and is retried (default 2000)")
    p.add_argument("--no-vacuum", action="store_true",
                   help="PostgreSQL: skip the plain VACUUM after the deletions (autovacuum "
                   "will do it later)")
    p.add_argument("--gc-grace", metavar="AGE", default="1h",
                   help="with --gc-s3: spare blobs younger than AGE, which a checkpoint being "
                   "written right now may need (default 1h)")
    p.set_defaults(func=cmd_prune)


def add_prune_command(subparsers: Any) -> None:
    """Register ``prune`` on an argparse subparsers object (``ckpt prune``)."""
    p = subparsers.add_parser(
        "prune", help="delete old checkpoints by a retention policy (SQLite file or "
        "PostgreSQL URL)",
        description="Delete checkpoints older than --older-than except the newest --keep-last "
        "of each thread, keeping what the kept ones need (DeltaChannel ancestors); orphaned "
        "writes go too; then VACUUM. DB is a SQLite file or a postgresql:// URL (PostgresSaver "
        "tables: deleted in short batched transactions, unreferenced blobs removed). Exit "
        "status 2 on bad input.",
        epilog="Daily with cron: 17 3 * * * cd /srv/app && .venv/bin/ckpt prune "
        "/data/checkpoints.sqlite --older-than 30d --keep-last 20 >> /var/log/ckpt-prune.log 2>&1")
    _add_arguments(p)


def _print_result(console: Console, db: Path, result: PruneResult) -> None:
    table = Table(title=f"ckpt prune {db}{' (dry run: nothing changed)' if result.dry_run else ''}"
                  f" — {result.policy.describe()}", title_justify="left")
    table.add_column("")
    table.add_column("", justify="right")
    rows = result.count_rows()
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
    parts = ["ckpt", "prune", _shown(args.db)]
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
    failed, missing = failed_stage(progress, bool(args.gc_s3))
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


@contextmanager
def _pg_progress_bar(args: argparse.Namespace) -> Iterator[Callable[[int, int], object] | None]:
    """A progress bar on stderr while batches commit (a terminal only, not with --json)."""
    console = Console(stderr=True)
    if args.json or args.dry_run or not console.is_terminal:
        yield None
        return
    with progress_bar("checkpoints", description="deleting", console=console) as bar:
        task = bar.add_task("deleting", total=None)
        yield lambda done, total: bar.update(task, completed=done, total=total)


def _run_once_pg(args: argparse.Namespace, policy: RetentionPolicy,
                 progress: PgProgress) -> PgPruneResult:
    with _pg_progress_bar(args) as on_batch:
        return prune_url(args.db, policy, args.threads, dry_run=args.dry_run,
                         batch_size=args.batch_size, lock_timeout_ms=args.lock_timeout,
                         vacuum=not args.no_vacuum, on_batch=on_batch, progress=progress)


def _run_once(args: argparse.Namespace, policy: RetentionPolicy,
              progress: PruneProgress) -> PruneResult:
    gc = _s3_gc(args)  # S3 is checked before anything is deleted
    conn = open_checkpoint_db(args.db, writable=not args.dry_run)
    try:
        if args.threads:
            where, params = thread_scope(args.threads)
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
    pg = isinstance(args.db, str)
    if pg and args.gc_s3:
        raise CheckpointError("--gc-s3 collects the blobs offloaded from a SQLite file; a "
                              "PostgreSQL prune removes its unreferenced checkpoint_blobs itself: "
                              "drop --gc-s3.")
    policy = RetentionPolicy(older, keep)
    console = Console()
    runs, progress = 0, None
    try:
        while True:
            if pg:
                progress = PgProgress()
                result = _run_once_pg(args, policy, progress)
            else:
                progress = PruneProgress(on_stage=_stage_printer(args))
                result = _run_once(args, policy, progress)
            progress, runs = None, runs + 1
            if args.json:
                print(json.dumps({"db": _shown(args.db), "run": runs, **result.to_dict()}),
                      flush=True)
            elif pg:
                print_pg_result(console, args.db, result)
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
        elif isinstance(progress, PgProgress):
            print(f"ckpt: interrupted: {progress.done_text()}: the database is consistent; "
                  f"run `{_command(args)}` to finish.", file=sys.stderr)
        else:
            print(interrupted_message(args, progress), file=sys.stderr)
        return 130
