"""``ckpt migrate`` and ``ckpt verify``: move a checkpoint database to another, prove the copy.

    ckpt migrate checkpoints.sqlite postgresql://app:secret@db:5432/agents   # SQLite -> PostgreSQL
    ckpt verify  checkpoints.sqlite postgresql://app:secret@db:5432/agents   # every checkpoint
    ckpt verify  checkpoints.sqlite postgresql://... --sample 500            # 500 random threads
    ckpt migrate postgresql://app:secret@db:5432/agents rollback.sqlite      # the way back

SRC and DST are each a SQLite file (``path`` or ``sqlite:///path``) or a ``postgresql://`` URL.
The source is opened read-only. The destination's tables are created if missing. A run that
is interrupted (Ctrl-C, SIGKILL, a lost connection) is resumed by running the same command
again: finished threads are skipped, nothing is written twice. Bad input (an unreachable or
malformed URL, a source that is not a checkpoint database, a destination that already holds
different data for a thread) is one sentence on stderr, exit status 2, and nothing written.
``verify`` exits 0 when every checkpoint is equal, 1 when it found a difference.
"""

from __future__ import annotations

import argparse
import json
import re
import sqlite3
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from langgraph.checkpoint.base import BaseCheckpointSaver
from langgraph.checkpoint.postgres import PostgresSaver
from langgraph.checkpoint.serde.jsonplus import JsonPlusSerializer
from langgraph.checkpoint.sqlite import SqliteSaver
from rich.console import Console
from rich.progress import Progress
from rich.table import Table

from shared.errors import (
    NOTHING_CHANGED,
    CheckpointError,
    on_interrupt,
)
from shared.infra.postgres import connect
from shared.infra.urls import mask_url, redact
from shared.ops.files import SQLITE_MAGIC, open_checkpoint_db
from shared.ops.migrate import count_rows, migrate, verify
from shared.ops.store_migrate import (
    StoreMigrationReport,
    StorePlan,
    migrate_store,
    plan_store,
    store_info,
    verify_store,
)
from shared.progress import progress_bar
from shared.savers.inert import UnreadableValue
from shared.savers.sqlite import check_database_location, open_sqlite_saver

Role = Literal["source", "destination", "copy to check"]
# Defence in depth: the tools move bytes, but should anything load a row, only LangGraph's safe
# types could be built from it.
_STRICT = JsonPlusSerializer(allowed_msgpack_modules=None)
MAX_BATCH = 1_000_000
RESUME = "threads committed so far are kept; run the same command again to resume"
STORE_RESUME = ("every checkpoint was copied, and the store items committed so far are kept; "
                "run the same command again to resume")


@dataclass
class Endpoint:
    """One side of a migration: the saver, how to name it in messages, what it is."""

    saver: BaseCheckpointSaver
    name: str  # password masked
    identity: tuple[str, ...]  # to refuse SRC == DST


def _is_postgres(text: str) -> bool:
    # Read off the text, not urlsplit: a malformed URL (a bad IPv6 bracket) must still be
    # recognised as PostgreSQL's, so that check_url can say what is wrong with it.
    return re.match(r"(?i)postgres(ql)?://", text) is not None


def _sqlite_path(text: str, role: Role) -> Path:
    if text.startswith("sqlite:"):
        return Path(text.removeprefix("sqlite:").removeprefix("//").removeprefix("/"))
    if "://" in text:
        raise CheckpointError(f"The {role} {mask_url(text)!r} is neither a SQLite file nor a "
                              "postgresql:// URL: give a path, sqlite:///PATH or "
                              "postgresql://USER:PASSWORD@HOST:5432/DBNAME.")
    return Path(text)


@contextmanager
def _postgres(url: str, role: Role) -> Iterator[Endpoint]:
    from psycopg.rows import dict_row

    conn = connect(url, f"the {role}", autocommit=True, prepare_threshold=0,
                   row_factory=dict_row)
    with conn:
        saver = PostgresSaver(conn, serde=_STRICT)  # rows are moved as bytes, never loaded
        if role != "destination":
            if not _pg_tables(conn):
                raise CheckpointError(f"The {role} {mask_url(url)} has no LangGraph checkpoint "
                                      "tables: it is not a PostgresSaver database, or setup() "
                                      "never ran on it.")
            conn.execute("SET default_transaction_read_only = on")  # only ever read from
        yield Endpoint(saver, mask_url(url), ("postgres", str(conn.info.host),
                                              str(conn.info.port), conn.info.dbname))


def _pg_tables(conn: Any) -> bool:
    row = conn.execute("SELECT to_regclass('checkpoints') IS NOT NULL AND "
                       "to_regclass('checkpoint_writes') IS NOT NULL AS ok").fetchone()
    return bool(row["ok"])


def _check_sqlite_destination(path: Path) -> None:
    """A new file, an empty one, or a SQLite checkpoint database; never someone else's data."""
    check_database_location(path)
    if not path.exists() or path.stat().st_size == 0:
        return
    with path.open("rb") as f:
        if f.read(len(SQLITE_MAGIC)) != SQLITE_MAGIC:
            raise CheckpointError(f"The destination {path} exists and is not a SQLite database: "
                                  "give a new file name.")
    conn = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True)
    try:
        tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE "
                                             "type = 'table'")}
    finally:
        conn.close()
    if tables and not {"checkpoints", "writes"} <= tables:
        raise CheckpointError(f"The destination {path} is a SQLite database of something else "
                              f"(tables: {', '.join(sorted(tables))}): give a new file name.")


@contextmanager
def open_endpoint(text: str, role: Role) -> Iterator[Endpoint]:
    """Open SRC (read-only, must be a checkpoint database) or DST (created if missing)."""
    if _is_postgres(text):
        with _postgres(text, role) as endpoint:
            yield endpoint
        return
    path = _sqlite_path(text, role)
    if role == "destination":
        _check_sqlite_destination(path)
        with open_sqlite_saver(path) as saver:
            yield Endpoint(saver, str(path), ("sqlite", str(path.resolve())))
        return
    # Read-only; creates nothing; refuses other databases. (Not opened with Python first:
    # closing any descriptor of a file drops this process's SQLite locks on it.)
    conn = open_checkpoint_db(path, name=f"The {role} {path}", other="a postgresql:// URL")
    try:
        yield Endpoint(SqliteSaver(conn, serde=_STRICT), str(path), ("sqlite", str(path.resolve())))
    finally:
        conn.close()


def _open_pair(stack: ExitStack, src: str, dst: str, dst_role: Role
               ) -> tuple[Endpoint, Endpoint, dict[str, int] | None]:
    """Both ends and the source's row counts (``count_rows``)."""
    # The source is checked first, and read once (a damaged file, a role that may not
    # SELECT): a bad source must not create a destination file.
    source = stack.enter_context(open_endpoint(src, "source"))
    rows = count_rows(source.saver)
    if not _is_postgres(dst):
        path = _sqlite_path(dst, dst_role)
        if source.identity == ("sqlite", str(path.resolve())):
            raise CheckpointError(f"SRC and DST are the same file ({path}): give a different "
                                  "destination.")
        if dst_role == "copy to check" and not path.is_file():
            raise CheckpointError(f"The copy to check {path} does not exist: give the "
                                  "destination you migrated to.")
    target = stack.enter_context(open_endpoint(dst, dst_role))
    if source.identity == target.identity:
        raise CheckpointError(f"SRC and DST are the same database ({target.name}): give "
                              "a different destination.")
    return source, target, rows


def _progress(console: Console) -> Progress:
    return progress_bar("checkpoints", console=console)


@contextmanager
def database_errors(what: str, *urls: str, after: str) -> Iterator[None]:
    """A driver's error (SQLite or PostgreSQL) while ``what`` runs: one sentence, password
    redacted, naming the likely fix (a role without privileges, a damaged file)."""
    import psycopg

    try:
        yield
    except NotImplementedError as exc:  # the serializer met a type it refuses (pickle)
        if "serialization type" not in str(exc):
            raise
        raise CheckpointError(f"A stored value could not be decoded during {what} ({exc}): "
                              "pickle rows are refused, since loading one can run code; "
                              f"re-save or delete those checkpoints; {after}.") from None
    except (psycopg.Error, sqlite3.DatabaseError) as exc:
        reason = redact(" ".join(str(exc).split()) or type(exc).__name__, *urls)
        if isinstance(exc, psycopg.errors.InsufficientPrivilege):
            fix = ("the role lacks a privilege: GRANT SELECT (and, on the destination, INSERT, "
                   "UPDATE) ON the checkpoint tables to it, or use a role that has them")
        elif isinstance(exc, psycopg.Error):
            fix = "check the server and the network"
        else:
            fix = ("if the file is damaged (malformed), restore it from a backup; if it is "
                   "locked, try again later")
        where = "PostgreSQL" if isinstance(exc, psycopg.Error) else "SQLite"
        raise CheckpointError(f"{where} failed during {what} ({reason}): {fix}; {after}."
                              ) from None


def _migrate_store(source: Endpoint, target: Endpoint, plan: StorePlan | None,
                   args: argparse.Namespace, err: Console) -> StoreMigrationReport | None:
    """After the checkpoints: the store's items and embeddings, ``--batch`` items a
    transaction (each batch whole or absent; a second run skips what is there)."""
    if plan is None:
        return None
    on_interrupt(STORE_RESUME)
    with progress_bar("store items", console=err) as progress, database_errors(
            "the store's migration", args.src, args.dst,
            after=f"{STORE_RESUME} once the cause is fixed"):
        task = progress.add_task("migrating the store", total=len(plan.items))
        return migrate_store(source.saver.conn, target.saver.conn, batch=args.batch,
                             plan=plan, on_items=lambda n: progress.advance(task, n))


def _store_rows(store: StoreMigrationReport) -> list[tuple[str, object]]:
    return [("store items copied", store.items),
            ("store items already there (skipped)", store.items_skipped),
            ("store namespaces", store.namespaces),
            ("store embeddings", store.embeddings
             + (f" ({store.dims} dims)" if store.dims else "")),
            ("embeddings copied", store.vectors_copied),
            ("embeddings re-created", store.vectors_reembedded),
            ("store seconds", f"{store.seconds:.2f}")]


def cmd_migrate(args: argparse.Namespace) -> int:
    on_interrupt(NOTHING_CHANGED)
    if not 1 <= args.batch <= MAX_BATCH:
        raise CheckpointError(f"--batch {args.batch}: give a number of checkpoints from 1 to "
                              f"{MAX_BATCH:,}, such as 1000.")
    out, err = Console(), Console(stderr=True)
    with ExitStack() as stack:
        with database_errors("the checks", args.src, args.dst, after=NOTHING_CHANGED):
            source, target, rows = _open_pair(stack, args.src, args.dst, "destination")
            # The store is checked before a checkpoint is copied: a refusal writes nothing.
            plan = None if args.no_store else plan_store(
                source.saver.conn, target.saver.conn, reembed=args.reembed,
                src_name=source.name, dst_name=target.name)
        total = (rows or {}).get("checkpoints")
        on_interrupt(RESUME)
        with _progress(err) as progress, database_errors(
                "the migration", args.src, args.dst,
                after=f"{RESUME} once the cause is fixed"):
            task = progress.add_task("migrating", total=total)
            try:
                report = migrate(source.saver, target.saver, batch=args.batch,
                                 on_checkpoints=lambda n: progress.advance(task, n))
            except UnreadableValue as exc:
                raise CheckpointError(f"Stopped at a value that cannot be read without running "
                                      f"it ({exc}): the threads before it were committed and are "
                                      "kept; delete or repair that thread in the source, then "
                                      "run the same command again to resume.") from None
            counts = count_rows(target.saver)
        store = _migrate_store(source, target, plan, args, err)
    if args.json:
        print(json.dumps({**report.to_dict(), "destination_rows": counts,
                          "store": store.to_dict() if store else None}))
        return 0
    table = Table(title="ckpt migrate", title_justify="left", show_header=False)
    table.add_column("")
    table.add_column("", justify="right")
    for name, value in (("from", source.name), ("to", target.name),
                        ("threads copied", report.threads),
                        ("threads already there (skipped)", report.threads_skipped),
                        ("checkpoints copied", report.checkpoints),
                        ("pending writes copied", report.writes),
                        ("transactions", report.batches), ("path", report.path),
                        ("seconds", f"{report.seconds:.2f}"),
                        ("checkpoints/s", f"{report.checkpoints_per_s:,.0f}"),
                        *(((f"destination {k} rows", v) for k, v in counts.items())
                          if counts else ()),
                        *(_store_rows(store) if store else ())):
        table.add_row(name, f"{value:,}" if isinstance(value, int) else str(value))
    out.print(table)
    out.print("Next: ckpt verify SRC DST compares every checkpoint of the two"
              + (" and every store item." if store else "."))
    return 0


def cmd_verify(args: argparse.Namespace) -> int:
    on_interrupt(NOTHING_CHANGED)
    out, err = Console(), Console(stderr=True)
    if args.sample is not None and args.sample < 1:
        raise CheckpointError(f"--sample {args.sample}: give a number of threads of at least 1.")
    if not 0 <= args.examples <= MAX_BATCH:
        raise CheckpointError(f"--examples {args.examples}: give a number of differences to "
                              f"list from 0 to {MAX_BATCH:,}, such as 5.")
    with ExitStack() as stack, database_errors("the verification", args.src, args.dst,
                                               after=NOTHING_CHANGED):
        source, target, rows = _open_pair(stack, args.src, args.dst, "copy to check")
        total = None if args.sample else (rows or {}).get("checkpoints")
        with _progress(err) as progress:
            task = progress.add_task("verifying", total=total)
            report = verify(source.saver, target.saver, sample=args.sample, seed=args.seed,
                            examples=args.examples,
                            on_checkpoints=lambda n: progress.advance(task, n))
        store = None
        if not args.no_store and store_info(source.saver.conn, source.name) is not None:
            store = verify_store(source.saver.conn, target.saver.conn, examples=args.examples,
                                 reembedded=args.reembed, src_name=source.name,
                                 dst_name=target.name)
    ok = report.ok and (store is None or store.ok)
    if args.json:
        print(json.dumps({**report.to_dict(), "ok": ok,
                          "store": store.to_dict() if store else None}))
        return 0 if ok else 1
    scope = (f"{report.threads:,} sampled (seed {args.seed})" if report.sampled
             else f"all {report.threads:,}")
    table = Table(title="ckpt verify", title_justify="left", show_header=False)
    table.add_column("")
    table.add_column("", justify="right")
    for name, value in (("source", source.name), ("copy", target.name), ("threads", scope),
                        ("checkpoints compared", report.checkpoints),
                        ("pending writes compared", report.pending_writes),
                        ("missing in the copy", report.missing),
                        ("extra in the copy", report.extra),
                        ("different", report.mismatches),
                        ("threads only in the copy", report.extra_threads),
                        ("unreadable, compared as stored bytes", report.unreadable),
                        ("seconds", f"{report.seconds:.2f}"),
                        *((("store items compared", store.items),
                           ("store items missing", store.missing),
                           ("store items only in the copy", store.extra),
                           ("store items different", store.different),
                           ("embeddings compared", store.vectors),
                           ("embeddings checked against WordLlama", store.vectors_reembedded),
                           ("embeddings missing", store.vectors_missing),
                           ("embeddings different", store.vectors_different),
                           ("store seconds", f"{store.seconds:.2f}")) if store else ())):
        table.add_row(name, f"{value:,}" if isinstance(value, int) else value)
    out.print(table)
    for line in report.examples + (store.examples if store else []):
        out.print(f"  {line}")
    out.print("[green]IDENTICAL[/]" if ok else "[red]DIFFERENT[/]")
    return 0 if ok else 1


def add_migrate_commands(subparsers: Any) -> None:
    """Register ``migrate`` and ``verify`` on the ``ckpt`` command's subparsers."""
    where = ("SRC and DST: a SQLite file (PATH or sqlite:///PATH) or a PostgreSQL URL "
             "(postgresql://USER:PASSWORD@HOST:5432/DBNAME).")
    p = subparsers.add_parser(
        "migrate", help="copy every checkpoint from SRC to DST (resumable, verified by verify)",
        description="Copy every thread, namespace, checkpoint and pending write from SRC to "
        "DST, parents first, in batches (one transaction each on SQLite and PostgreSQL), then "
        "the LangGraph Store if SRC holds one (items and embeddings, --batch items a "
        "transaction). Run it again after an interruption: it resumes, and writes nothing "
        "twice. " + where,
        epilog="Exit status 0 when done, 2 on bad input (nothing written).")
    p.add_argument("src", metavar="SRC", help="the checkpoint database to copy (read-only)")
    p.add_argument("dst", metavar="DST", help="where to copy it (tables created if missing)")
    p.add_argument("--batch", type=int, default=1000, metavar="N",
                   help="checkpoints per transaction (default 1000)")
    p.add_argument("--no-store", action="store_true",
                   help="leave the LangGraph Store behind (by default, a source holding a "
                   "store table moves it too: memories are part of the application's state, "
                   "and copying checkpoints without them would lose them unnoticed)")
    p.add_argument("--reembed", action="store_true",
                   help="re-create the store's embeddings with WordLlama (256 dims) instead of "
                   "copying them; done anyway when the destination's vectors are 256-dimension "
                   "and the source's are not; other dims mismatches are refused")
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p.set_defaults(func=cmd_migrate)

    v = subparsers.add_parser(
        "verify", help="compare every checkpoint of SRC with DST by its stored bytes",
        description="Read every checkpoint of SRC and the same one from DST, without decoding "
        "any value, and compare them "
        "(checkpoint, metadata, parent, pending writes); then the Store's items and "
        "embeddings, if SRC holds a store. " + where,
        epilog="Exit status 0 when identical, 1 when a difference was found, 2 on bad input.")
    v.add_argument("src", metavar="SRC", help="the original database")
    v.add_argument("dst", metavar="DST", help="the copy to check")
    v.add_argument("--sample", type=int, metavar="N",
                   help="check N random threads instead of all (for very large databases)")
    v.add_argument("--seed", type=int, default=0, help="seed of the --sample draw (default 0)")
    v.add_argument("--examples", type=int, default=5, metavar="N",
                   help="how many differences to list (default 5)")
    v.add_argument("--no-store", action="store_true",
                   help="compare checkpoints only (by default a source's store is compared "
                   "too: every item by namespace and key, its value, timestamps, expiry and "
                   "TTL, and an embedding for every indexed field)")
    v.add_argument("--reembed", action="store_true",
                   help="the copy's embeddings were re-created (migrate --reembed): check each "
                   "against WordLlama's embedding of its text instead of bit for bit")
    v.add_argument("--json", action="store_true", help="print the report as JSON")
    v.set_defaults(func=cmd_verify)
