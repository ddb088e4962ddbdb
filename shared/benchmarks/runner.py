"""Run the benchmarks and write the report: ``python -m shared.benchmarks`` (``make bench``).

    python -m shared.benchmarks                 # full sizes, about 7 minutes on 2 cores
    python -m shared.benchmarks --quick         # small sizes, seconds (the tests use it)
    python -m shared.benchmarks --only filters --out /tmp/reports
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import sqlite3
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from shared import ROOT
from shared.benchmarks.budget import measure_budget
from shared.benchmarks.cost import measure_cost
from shared.benchmarks.filters import measure_filters
from shared.benchmarks.memory import measure_memory
from shared.benchmarks.report import write_report
from shared.benchmarks.writes import measure_writes
from shared.errors import CheckpointError

BENCHMARKS: dict[str, Callable[..., dict[str, Any]]] = {
    "writes": measure_writes,
    "filters": measure_filters,
    "budget": measure_budget,
    "memory": measure_memory,
    "cost": measure_cost,
}
SCALES: dict[str, dict[str, dict[str, Any]]] = {
    "full": {"writes": {"processes": (1, 2, 4, 8), "seconds": 2.0, "rounds": 3,
                        "warmup_s": 1.0},
             "filters": {"sizes": (1_000, 10_000, 100_000, 300_000), "rounds": 3,
                         "runs": 100},
             "budget": {"sizes": (10_000, 100_000, 1_000_000), "processes": (1, 2, 4, 8),
                        "rounds": 3, "seconds": 3.0},
             "memory": {"turns": 200},
             "cost": {"threads": 40, "turns": 10,
                      "scales": (1_000, 3_000, 10_000, 30_000, 100_000, 300_000, 1_000_000)}},
    "quick": {"writes": {"processes": (1, 2), "seconds": 0.4, "rounds": 2, "warmup_s": 0.2},
              "filters": {"sizes": (200, 2_000), "rounds": 2, "runs": 10},
              "budget": {"sizes": (500, 2_000), "processes": (1, 2), "rounds": 2,
                         "seconds": 0.5},
              "memory": {"turns": 30},
              "cost": {"threads": 6, "turns": 4, "scales": (1_000, 100_000)}},
}


def _machine() -> dict[str, Any]:
    return {"cpu_count": os.cpu_count(), "python": platform.python_version(),
            "platform": platform.platform(), "sqlite": sqlite3.sqlite_version}


def run(out: Path, workdir: Path, quick: bool = False, only: list[str] | None = None,
        console: Console | None = None) -> Path:
    """Run the chosen benchmarks in ``workdir`` (removed after), report into ``out``."""
    console = console or Console()
    scale = "quick" if quick else "full"
    names = only or list(BENCHMARKS)
    shutil.rmtree(workdir, ignore_errors=True)
    workdir.mkdir(parents=True)
    started = time.monotonic()
    results: dict[str, Any] = {"generated_at": datetime.now(UTC).isoformat(timespec="seconds"),
                               "scale": scale, "machine": _machine(), "benchmarks": {}}
    try:
        for name in names:
            console.rule(f"[bold]{name}")
            t0 = time.monotonic()
            results["benchmarks"][name] = BENCHMARKS[name](
                workdir / name, **SCALES[scale][name],
                on_step=lambda msg: console.print(f"[dim]{msg}"))
            results["benchmarks"][name]["duration_s"] = round(time.monotonic() - t0, 1)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    results["duration_s"] = round(time.monotonic() - started, 1)
    path = write_report(results, out)
    _print_summary(results, console)
    console.print(f"Wrote {path} and {', '.join(c for cs in _charts(path) for c in cs)} "
                  f"in {results['duration_s']:.0f} s.")
    return path


def _charts(path: Path) -> list[list[str]]:
    import json

    return list(json.loads(path.read_text())["charts"].values())


def _budget_table(budget: dict[str, Any]) -> Table:
    table = Table(title="PostgreSQL checkpoint operations, p99 ms: median over rounds")
    for col in ("checkpoints", "processes", "setup", *budget["ops"], "errors"):
        table.add_column(col, justify="right" if col != "setup" else "left")
    seen = []
    for s in budget["by_size"] + budget["by_processes"]:
        if (s["checkpoints"], s["processes"]) in seen:
            continue
        seen.append((s["checkpoints"], s["processes"]))
        for setup in ("baseline", "tuned"):
            table.add_row(f"{s['checkpoints']:,}", str(s["processes"]), setup,
                          *(f"{s[setup][op]['p99_ms']['median']:.2f}" for op in budget["ops"]),
                          str(s[setup]["errors"]))
    return table


def _print_summary(results: dict[str, Any], console: Console) -> None:
    if budget := results["benchmarks"].get("budget"):
        console.print(_budget_table(budget))
    writes = results["benchmarks"].get("writes")
    if writes:
        table = Table(title="Writers: median over rounds (min-max)")
        for col in ("store", "processes", "writes/s", "p50 ms", "p99 ms", "errors"):
            table.add_column(col, justify="right" if col != "store" else "left")
        for store, series in writes["series"].items():
            for s in series:
                w, p50, p99 = s["writes_per_s"], s["p50_ms"], s["p99_ms"]
                table.add_row(store, str(s["processes"]),
                              f"{w['median']:,.0f} ({w['min']:,.0f}-{w['max']:,.0f})",
                              f"{p50['median']:.2f}",
                              f"{p99['median']:.1f} ({p99['min']:.1f}-{p99['max']:.1f})",
                              str(s["errors"]))
        console.print(table)
    filters = results["benchmarks"].get("filters")
    if filters:
        table = Table(title="SqliteSaver.list(filter=...): median over rounds (min-max)")
        for col in ("checkpoints", "filter", "answer", "index", "p50 ms", "p99 ms"):
            table.add_column(col, justify="right" if col != "filter" else "left")
        for s in filters["series"]:
            for query, q in s["queries"].items():
                for variant in ("no_index", "expression_index"):
                    v = q[variant]
                    table.add_row(f"{s['checkpoints']:,}", query, str(q["answer_rows"]),
                                  "used" if v["index_used"] else "none",
                                  f"{v['p50_ms']['median']:.2f}",
                                  f"{v['p99_ms']['median']:.2f} ({v['p99_ms']['min']:.2f}-"
                                  f"{v['p99_ms']['max']:.2f})")
        console.print(table)


def _names(text: str) -> list[str]:
    names = [n.strip() for n in text.split(",") if n.strip()]
    unknown = [n for n in names if n not in BENCHMARKS]
    if unknown or not names:
        raise argparse.ArgumentTypeError(f"unknown benchmark {', '.join(unknown) or text!r}: "
                                         f"choose from {', '.join(BENCHMARKS)}")
    return names


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m shared.benchmarks",
        description="Long measurements with charts: SQLite vs PostgreSQL writers by number of "
                    "processes, metadata-filter latency by table size, PostgreSQL operation "
                    "latency by table size and concurrency with and without pool and indexes. "
                    "Writes DIR/bench.json "
                    "and DIR/bench-*.png.",
        epilog="PostgreSQL is DATABASE_URL if set (a database ckpt_bench_writes is created "
               "there, replacing one of that name), else an embedded server, stopped after. "
               "Exit status: 0 done, 1 a benchmark failed, 2 bad arguments.")
    parser.add_argument("--quick", action="store_true",
                        help="small sizes and short runs (seconds; for tests)")
    parser.add_argument("--out", type=Path, default=ROOT / "reports", metavar="DIR",
                        help="where bench.json and the charts go (default: reports/)")
    parser.add_argument("--workdir", type=Path, default=ROOT / ".data" / "bench", metavar="DIR",
                        help="scratch space, removed after (default: .data/bench)")
    parser.add_argument("--only", type=_names, metavar="NAMES",
                        help=f"comma-separated subset of: {', '.join(BENCHMARKS)}")
    args = parser.parse_args(argv)
    console = Console()
    try:
        run(args.out, args.workdir, quick=args.quick, only=args.only, console=console)
    except CheckpointError as exc:
        console.print(f"[red]{exc}")
        return 1
    return 0
