"""``ckpt hot``: what the Redis hot tier of ``HybridSaver`` holds, and dropping all of it.

    ckpt hot redis://cache:6379/0                   # epoch, threads, checkpoints, bytes
    ckpt hot redis://cache:6379/0 --json
    ckpt hot redis://cache:6379/0 --drop            # after restoring PostgreSQL

``--drop`` begins a new epoch: every saver ignores what Redis held before (it expires by
``hot_ttl``) and the hot sets refill from PostgreSQL on use. Run it after ``ckpt restore``
or a point-in-time recovery: the restored history may be older than what Redis holds.
Exit status 0, or 2 on bad input (a wrong URL, an unreachable Redis: one sentence, password
masked).
"""

from __future__ import annotations

import argparse
import json
from typing import Any

from rich.console import Console
from rich.table import Table

from shared.errors import CheckpointError


def add_hot_command(subparsers: Any) -> None:
    """Register ``hot`` on the ``ckpt`` command's subparsers."""
    p = subparsers.add_parser(
        "hot", help="the Redis hot tier of HybridSaver: what it holds; --drop after a restore",
        description="Show what the Redis hot tier of HybridSaver holds (the current epoch, "
        "threads, checkpoints, bytes), or drop all of it with --drop.",
        epilog="Exit status 0, 2 on bad input.")
    p.add_argument("url", help="redis:// URL of the hot tier")
    p.add_argument("--prefix", default="ckpt:hot", help="the savers' key prefix "
                   "(default: ckpt:hot)")
    p.add_argument("--drop", action="store_true", help="begin a new epoch: nothing cached "
                   "before is served again")
    p.add_argument("--json", action="store_true", help="print the status as JSON")
    p.set_defaults(func=cmd_hot)


def cmd_hot(args: argparse.Namespace) -> int:
    from shared.infra.redis import check_redis_url, redis_client
    from shared.infra.urls import mask_url, redact
    from shared.savers.hybrid import drop_hot_tier, hot_tier_status

    if not args.prefix or any(c in args.prefix for c in "*?[]"):
        raise CheckpointError(f"--prefix {args.prefix!r}: give the savers' key prefix, without "
                              "glob characters (default ckpt:hot).")
    client = redis_client(check_redis_url(args.url), timeout=5.0, retry=None)
    try:
        dropped = drop_hot_tier(client, args.prefix) if args.drop else None
        status = hot_tier_status(client, args.prefix)
    except Exception as exc:
        reason = redact(" ".join(str(exc).split()) or type(exc).__name__, args.url)
        raise CheckpointError(f"Could not read the hot tier at {mask_url(args.url)} "
                              f"({reason}): check the URL and that Redis is running.") from None
    finally:
        client.close()
    if args.json:
        print(json.dumps({**status, "dropped": dropped is not None}))
        return 0
    console = Console()
    if dropped:
        console.print(f"New epoch {dropped}: nothing cached before is served again; the hot "
                      "sets refill from PostgreSQL on use.")
    table = Table(title=f"{mask_url(args.url)} {args.prefix}", show_header=False)
    table.add_column(style="bold")
    table.add_column()
    age = status["epoch_age_s"]
    table.add_row("epoch", f"{status['epoch'] or 'none yet'}"
                  + (f" (began {age:,.1f} s ago)" if age is not None else ""))
    table.add_row("epochs begun, by reason", ", ".join(
        f"{why} {n}" for why, n in sorted(status["epochs_begun"].items())) or "none")
    table.add_row("threads / hot sets", f"{status['threads']:,} / {status['hot_sets']:,}")
    table.add_row("checkpoints held", f"{status['checkpoints']:,}")
    table.add_row("bytes (MEMORY USAGE)", f"{status['bytes']:,}")
    console.print(table)
    return 0
