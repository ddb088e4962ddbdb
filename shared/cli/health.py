"""``ckpt health``: is this PostgreSQL fit to hold LangGraph checkpoints? (read-only)

    ckpt health postgresql://app:pw@db:5432/agents          # tables, exit 1 with the reasons
    ckpt health postgresql://app:pw@db:5432/agents --json   # the same as JSON
    ckpt health URL --samples 100 --config my-thresholds.toml

Exit status 0 when healthy, 1 when a threshold is crossed (each reason printed), 2 on bad
input (a wrong URL or credentials, an unreachable server: one sentence, password masked).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table
from rich.text import Text

from shared.errors import NOTHING_CHANGED, check_range, on_interrupt
from shared.ops.decide import load_thresholds
from shared.ops.pg_health import Health, check_health

MAX_SAMPLES = 100_000


def _bytes(n: int) -> str:
    for unit, size in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if n >= size:
            return f"{n / size:,.1f} {unit}"
    return f"{n:,} B"


def _ago(seconds: float | None) -> str:
    if seconds is None:
        return "never"
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60)):
        if seconds >= size:
            return f"{seconds / size:,.1f} {unit} ago"
    return f"{seconds:,.0f} s ago"


def print_health(h: Health, console: Console) -> None:
    server = Table(title=f"{h.url}: PostgreSQL {h.server_version}", show_header=False)
    server.add_column(style="bold")
    server.add_column()
    again = f" (the better of {h.rtt_rounds} rounds)" if h.rtt_rounds > 1 else ""
    server.add_row("round trip (SELECT 1)", f"p50 {h.rtt_ms_p50:.3f} ms, p99 "
                   f"{h.rtt_ms_p99:.3f} ms over {h.samples}{again}")
    by_state = ", ".join(f"{n} {state}" for state, n in sorted(h.connections.items()))
    server.add_row("client connections", f"{h.connections_total} of max_connections "
                   f"{h.max_connections} ({h.connections_used:.1%}): {by_state or 'none'}")
    server.add_row("buffer cache hit ratio",
                   "no blocks read yet" if h.cache_hit_ratio is None else
                   f"{h.cache_hit_ratio:.2%} over {h.cache_blocks:,} blocks")
    console.print(server)

    tables = Table(title="checkpoint tables")
    for col in ("table", "rows", "dead", "dead ratio", "table bytes", "index bytes",
                "last vacuum", "last autovacuum", "last analyze"):
        tables.add_column(col, justify="left" if col in ("table",) or "last" in col
                          else "right", no_wrap=col == "table")
    for t in h.tables.values():
        if not t.exists:
            tables.add_row(t.name, Text("missing", "bold red"), *[""] * 7)
            continue
        analyzed = t.last_analyze or t.last_autoanalyze
        tables.add_row(t.name, f"{t.rows:,}", f"{t.dead_tuples:,}", f"{t.dead_ratio:.1%}",
                       _bytes(t.table_bytes), _bytes(t.index_bytes),
                       _ago(t.seconds_since_vacuum), _ago(t.seconds_since_autovacuum),
                       (analyzed or "never")[:19])
    console.print(tables)

    indexes = Table(title="indexes")
    for col in ("table", "index", "bytes"):
        indexes.add_column(col, justify="right" if col == "bytes" else "left")
    for t in h.tables.values():
        for name, size in t.indexes.items():
            indexes.add_row(t.name, name, _bytes(size))
    if indexes.row_count:
        console.print(indexes)

    if h.healthy:
        console.print(Text("healthy", "bold green"))
        return
    console.print(Text(f"unhealthy: {len(h.problems)} problem(s)", "bold red"))
    for problem in h.problems:
        console.print(f"- {problem}", highlight=False)


def cmd_health(args: argparse.Namespace) -> int:
    on_interrupt(NOTHING_CHANGED)
    check_range("--samples", args.samples, 1, MAX_SAMPLES, 20)
    th = load_thresholds(args.config)
    health = check_health(args.url, samples=args.samples, thresholds=th)
    if args.json:
        print(json.dumps(health.to_dict(), indent=2))
    else:
        print_health(health, Console())
    return 0 if health.healthy else 1


def add_health_command(subparsers: Any) -> None:
    """Register ``health`` on the ``ckpt`` command's subparsers."""
    p = subparsers.add_parser(
        "health", help="check a PostgreSQL checkpoint database: latency, connections, bloat",
        description="Connect to a PostgreSQL checkpoint database (read-only) and print the "
        "server version, SELECT 1 round trip, client connections, the checkpoint tables' and "
        "indexes' sizes, dead tuples and last (auto)vacuum, and the buffer cache hit ratio; "
        "judged against the [postgres] thresholds of config/thresholds.toml.",
        epilog="Exit status 0 when healthy, 1 when unhealthy (the reasons are printed), 2 on "
        "bad input or when the server cannot be reached.")
    p.add_argument("url", metavar="URL", help="postgresql://USER:PASSWORD@HOST:5432/DBNAME")
    p.add_argument("--samples", type=int, default=20, metavar="N",
                   help="SELECT 1 round trips to time (default 20)")
    p.add_argument("--config", type=Path, default=None, help="thresholds TOML file")
    p.add_argument("--json", action="store_true", help="print JSON instead of tables")
    p.set_defaults(func=cmd_health)
