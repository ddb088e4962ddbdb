"""The ``ckpt`` command: look into a checkpoint database without writing to it.

    ckpt inspect checkpoints.sqlite              # bytes by table, threads, largest rows
                                                 # (and the Store's namespaces, if it has one)
    ckpt inspect checkpoints.sqlite --thread T   # one thread's history, newest first
    ckpt prune checkpoints.sqlite --older-than 30d --keep-last 20 [--dry-run] [--gc-s3]
    ckpt decide http://127.0.0.1:9464/metrics    # migrate or not, from live metrics
    ckpt migrate checkpoints.sqlite postgresql://user:pw@host/db   # then: ckpt verify SRC DST
"""

from __future__ import annotations

import argparse
import json
import sqlite3
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from shared.errors import (
    NOTHING_CHANGED,
    CheckpointError,
    check_range,
    on_interrupt,
)
from shared.ops.files import open_checkpoint_db
from shared.ops.store_migrate import inspect_store
from shared.savers.sqlite import file_bytes, largest_checkpoints, table_bytes

MAX_LARGEST = 1_000_000
MAX_DEPTH = 100


def open_readonly(path: Path) -> sqlite3.Connection:
    """Open a LangGraph SQLite checkpoint file read-only; creates nothing (not even -wal)."""
    return open_checkpoint_db(path, other=None)  # inspect takes a file only


def damaged(path: Path, exc: sqlite3.DatabaseError) -> CheckpointError:
    """A database whose pages cannot be read: one sentence, nothing written."""
    return CheckpointError(f"SQLite could not read {path} ({exc}): the file is damaged; restore "
                           "it from a backup (sqlite3 DB .recover saves what is left).")


def inspect_threads(conn: sqlite3.Connection) -> list[dict[str, Any]]:
    rows = conn.execute(
        """
        SELECT c.thread_id, count(*), sum(length(c.checkpoint) + length(c.metadata)),
               max(c.checkpoint_id),
               (SELECT count(*) FROM writes w WHERE w.thread_id = c.thread_id)
        FROM checkpoints c GROUP BY c.thread_id ORDER BY c.thread_id
        """).fetchall()
    return [{"thread_id": r[0], "checkpoints": r[1], "checkpoint_bytes": r[2],
             "latest_checkpoint_id": r[3], "writes": r[4]} for r in rows]


def inspect_history(conn: sqlite3.Connection, thread_id: str) -> list[dict[str, Any]]:
    rows = conn.execute(
        """
        SELECT checkpoint_id, parent_checkpoint_id,
               json_extract(CAST(metadata AS TEXT), '$.source'),
               json_extract(CAST(metadata AS TEXT), '$.step'),
               length(checkpoint) + length(metadata)
        FROM checkpoints WHERE thread_id = ? ORDER BY checkpoint_id DESC
        """, (thread_id,)).fetchall()
    if not rows:
        raise CheckpointError(f"Thread {thread_id!r} has no checkpoints in this database: run "
                              "`ckpt inspect DB` without --thread to list the threads.")
    return [{"checkpoint_id": r[0], "parent_checkpoint_id": r[1], "source": r[2],
             "step": r[3], "bytes": r[4]} for r in rows]


def _print_table(console: Console, title: str, rows: list[dict[str, Any]]) -> None:
    table = Table(title=title)
    for key in rows[0] if rows else ["(empty)"]:
        table.add_column(key)
    for row in rows:
        table.add_row(*(str(v) if v is not None else "" for v in row.values()))
    console.print(table)


def cmd_inspect(args: argparse.Namespace) -> int:
    on_interrupt(NOTHING_CHANGED)
    check_range("--largest", args.largest, 0, MAX_LARGEST, 5)
    check_range("--depth", args.depth, 1, MAX_DEPTH, 2)
    conn = open_readonly(args.db)
    try:
        if args.thread is not None:  # '' is a thread id too
            report: dict[str, Any] = {"thread": args.thread,
                                      "history": inspect_history(conn, args.thread)}
        else:
            report = {"file_bytes": file_bytes(args.db), "tables": table_bytes(conn),
                      "threads": inspect_threads(conn),
                      "largest_checkpoints": largest_checkpoints(conn, args.largest),
                      "store": inspect_store(conn, args.depth)}
    except sqlite3.DatabaseError as exc:
        raise damaged(args.db, exc) from None
    finally:
        conn.close()
    if args.json:
        print(json.dumps(report, indent=2))
        return 0
    console = Console()
    if args.thread is not None:
        _print_table(console, f"thread {args.thread!r}, newest first", report["history"])
        return 0
    tables = [{"table": t, **v} for t, v in report["tables"].items()]
    _print_table(console, f"{args.db}: {report['file_bytes']:,} bytes on disk "
                 "(with -wal/-shm)", tables)
    _print_table(console, "threads", report["threads"])
    _print_table(console, f"largest {args.largest} checkpoints", report["largest_checkpoints"])
    if store := report["store"]:
        dims = f", {store['dims']} dims" if store["dims"] else ""
        _print_table(console, f"store: {store['items']:,} items, {store['embeddings']:,} "
                     f"embeddings{dims}; namespaces by their first {args.depth} labels",
                     store["by_prefix"])
    return 0


def add_inspect_command(subparsers: Any) -> None:
    """Register ``inspect`` on the ``ckpt`` command's subparsers."""
    p = subparsers.add_parser(
        "inspect", help="list threads, or one thread's checkpoint history",
        description="Read-only view of a SqliteSaver database: bytes by table, the file's "
        "size, threads, the largest checkpoints, and, when the file holds a LangGraph Store "
        "(SqliteStore), its namespaces by prefix with item counts, JSON bytes and "
        "embeddings; or one thread's history.",
        epilog="Exit status 0 when done, 2 on bad input (nothing is ever changed).")
    p.add_argument("db", metavar="DB", type=Path, help="path of the SQLite checkpoint file")
    p.add_argument("--thread", help="show this thread's checkpoints, newest first")
    p.add_argument("--largest", type=int, default=5, metavar="N",
                   help="how many of the largest checkpoints to list (default 5)")
    p.add_argument("--depth", type=int, default=2, metavar="N",
                   help="group the Store's namespaces by their first N labels (default 2: "
                   "users.alice, company.knowledge)")
    p.add_argument("--json", action="store_true", help="print JSON instead of tables")
    p.set_defaults(func=cmd_inspect)
