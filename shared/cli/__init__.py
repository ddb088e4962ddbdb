"""The ``ckpt`` command: one module per subcommand, every one with ``--help``.

    ckpt inspect DB                 # bytes by table, threads, largest rows (read-only)
    ckpt prune DB|URL --older-than 30d --keep-last 20 [--dry-run] [--gc-s3]
    ckpt decide URL|DB              # migrate or not, from live metrics or a database file
    ckpt migrate SRC DST            # then: ckpt verify SRC DST
    ckpt watch URL                  # the live terminal dashboard
    ckpt render                     # alert rules and Grafana dashboard from config/
    ckpt health URL                 # PostgreSQL: latency, connections, bloat; exit 1 if unhealthy
    ckpt pg indexes URL [--apply]   # the indexes PostgresSaver's queries need (CONCURRENTLY)
    ckpt backup URL DIR [--verify]  # pg_dump of the checkpoint tables, then: ckpt restore DIR URL
    ckpt backup URL DIR --physical  # pg_basebackup; ckpt restore DIR PGDATA --physical --to-time T
    ckpt hot REDIS_URL [--drop]     # what HybridSaver's hot tier holds; --drop after a restore

``DB`` is a SQLite checkpoint file; ``SRC``/``DST`` a file or a ``postgresql://`` URL. Bad
input is one sentence on stderr and exit status 2; Ctrl-C is ``ckpt: interrupted``, exit 130.
"""

from __future__ import annotations

import argparse

from shared.errors import OneLineArgumentParser, run_command


def build_parser() -> argparse.ArgumentParser:
    from shared.cli.backup import add_backup_commands
    from shared.cli.decide import add_decide_command
    from shared.cli.health import add_health_command
    from shared.cli.hot import add_hot_command
    from shared.cli.inspect import add_inspect_command
    from shared.cli.migrate import add_migrate_commands
    from shared.cli.pg import add_pg_commands
    from shared.cli.prune import add_prune_command
    from shared.cli.render import add_render_command
    from shared.cli.watch import add_watch_command

    parser = OneLineArgumentParser(prog="ckpt", description="Inspect and operate LangGraph "
                                   "checkpoint databases.")
    sub = parser.add_subparsers(dest="command", required=True)
    add_inspect_command(sub)
    add_prune_command(sub)
    add_decide_command(sub)
    add_migrate_commands(sub)
    add_watch_command(sub)
    add_render_command(sub)
    add_health_command(sub)
    add_pg_commands(sub)
    add_backup_commands(sub)
    add_hot_command(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return run_command(args.func, args)


__all__ = ["build_parser", "main"]
