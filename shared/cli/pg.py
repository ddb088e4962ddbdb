"""``ckpt pg``: operations on a PostgreSQL checkpoint database.

    ckpt pg indexes postgresql://app:secret@db:5432/agents            # what would be built
    ckpt pg indexes postgresql://app:secret@db:5432/agents --dry-run  # the same, said plainly
    ckpt pg indexes postgresql://app:secret@db:5432/agents --apply    # build them, live-safe

``indexes`` adds the indexes ``PostgresSaver``'s queries need beyond its own ``setup()``
(``shared.ops.pg_indexes``) with ``CREATE INDEX CONCURRENTLY IF NOT EXISTS``: writers keep
writing, a second run changes nothing, an index left INVALID by an interrupted build is
rebuilt. Without ``--apply`` nothing is changed and the SQL that would run is printed.
"""

from __future__ import annotations

import argparse
import json
from typing import Any

from rich.console import Console
from rich.table import Table

from shared.errors import NOTHING_CHANGED, on_interrupt
from shared.ops.pg_indexes import SERVED_BY_SETUP, apply_indexes


def cmd_indexes(args: argparse.Namespace) -> int:
    on_interrupt(NOTHING_CHANGED if not args.apply else
                 "a concurrent build may have left an INVALID index; run the same command "
                 "again to rebuild it")
    results = apply_indexes(args.url, dry_run=not args.apply)
    if args.json:
        print(json.dumps({"applied": bool(args.apply),
                          "indexes": [r.to_dict() for r in results],
                          "served_by_setup": dict(SERVED_BY_SETUP)}, indent=2))
        return 0
    console = Console()
    table = Table(title="indexes for PostgresSaver's queries" +
                  ("" if args.apply else " (dry run: nothing changed)"))
    for column in ("index", "serves", "was", "action", "bytes"):
        table.add_column(column)
    for r in results:
        table.add_row(r.name, r.serves, r.state, r.action,
                      f"{r.bytes:,}" if r.bytes is not None else "")
    console.print(table)
    todo = [s for r in results for s in r.sql]
    if todo:
        console.print(("ran:" if args.apply else "would run:"), style="bold")
        for statement in todo:
            console.print(statement + ";", markup=False, highlight=False)
    else:
        console.print("nothing to do: every index exists and is valid.")
    for call, index in SERVED_BY_SETUP:
        console.print(f"{call}: served by setup()'s {index} already (no index to add)",
                      markup=False)
    return 0


def add_pg_commands(subparsers: Any) -> None:
    """Register ``pg`` (with ``indexes``) on the ``ckpt`` command's subparsers."""
    p = subparsers.add_parser("pg", help="operations on a PostgreSQL checkpoint database",
                              description="Operations on a database written by PostgresSaver.")
    sub = p.add_subparsers(dest="pg_command", required=True)
    i = sub.add_parser(
        "indexes", help="add the indexes PostgresSaver's queries need (CONCURRENTLY)",
        description="Show, or with --apply build, the indexes that PostgresSaver's queries "
        "need beyond setup(): a GIN (jsonb_path_ops) index on checkpoints.metadata for "
        "list(filter=...) across threads. CREATE INDEX CONCURRENTLY IF NOT EXISTS: safe on a "
        "live database, idempotent; an INVALID index from an interrupted build is rebuilt. "
        "Needs the role that owns the tables.",
        epilog="Exit status 0 when done, 2 on bad input (nothing changed).")
    i.add_argument("url", metavar="URL", help="postgresql://USER:PASSWORD@HOST:5432/DBNAME")
    mode = i.add_mutually_exclusive_group()
    mode.add_argument("--apply", action="store_true", help="build the missing indexes")
    mode.add_argument("--dry-run", action="store_true",
                      help="print the SQL that --apply would run (the default)")
    i.add_argument("--json", action="store_true", help="print the result as JSON")
    i.set_defaults(func=cmd_indexes)


__all__ = ["add_pg_commands", "cmd_indexes"]
