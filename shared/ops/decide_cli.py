"""``ckpt decide``: migrate to PostgreSQL or not, decided on what a live target really did.

    ckpt decide http://127.0.0.1:9464/metrics            # scrape, wait the window, scrape again
    ckpt decide http://a:9464/metrics http://b:9464/metrics --servers 2   # summed, 2 servers
    ckpt decide checkpoints.sqlite --window 30s --json   # a database file, read-only
    ckpt decide URL --config my-thresholds.toml --log decisions.jsonl

A /metrics URL (``InstrumentedSaver`` + ``serve_metrics``) shows everything: writes/s, the
error rate (lock errors), latency and the file size. A database file shows less: its size on
disk, and the write rate over the last window from the checkpoint ids, which are uuid6 and
carry their creation time. A file keeps no record of failed writes, so the error rate is
reported as not observed there: point the command at the service's /metrics URL to judge it.
The file is opened read-only and never created or changed (no -wal/-shm left behind).
An empty window (no traffic yet) gives NOT ENOUGH DATA, never a decision.
"""

from __future__ import annotations

import argparse
import json
import re
import sqlite3
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table
from rich.text import Text

from shared.errors import (
    NOTHING_CHANGED,
    CheckpointError,
    OneLineArgumentParser,
    on_interrupt,
    run_command,
)
from shared.infra.urls import mask_url
from shared.ops.decide import (
    CONFIG,
    MIGRATE_NOW,
    MIGRATE_SOON,
    NO_DATA,
    SUFFICIENT,
    Decision,
    Thresholds,
    decide,
    load_thresholds,
)
from shared.ops.files import open_checkpoint_db
from shared.ops.metrics import Samples, metrics_request, scrape
from shared.ops.window import MetricsWindow, Source, WindowStats
from shared.savers.retention import uuid6_at, uuid6_time
from shared.savers.sqlite import file_bytes

NO_ERRORS_IN_FILE = ("a database file keeps no record of failed writes: run ckpt decide "
                     "against the service's /metrics URL to judge lock errors")
VERDICT_STYLE = {MIGRATE_NOW: "bold white on red", MIGRATE_SOON: "bold black on yellow",
                 SUFFICIENT: "bold white on green", NO_DATA: "bold white on grey37"}
_DURATION = re.compile(r"\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h)?\s*")
MAX_WINDOW_S = 366 * 86_400  # a year of checkpoint ids; beyond, dates overflow


def parse_window(text: str) -> float:
    """``"5s"``, ``"500ms"``, ``"2m"``, ``"1h"`` or plain seconds -> seconds (positive)."""
    m = _DURATION.fullmatch(text)
    seconds = float(m[1]) * {"ms": 0.001, "s": 1, "m": 60, "h": 3600}[m[2] or "s"] if m else 0
    if not m or seconds <= 0:
        raise CheckpointError(f"--window {text!r} is not a positive duration: write it like "
                              "5s, 500ms, 2m or 1h.")
    if seconds > MAX_WINDOW_S:
        raise CheckpointError(f"--window {text!r} is longer than 366 days: give a window such "
                              "as 5s, 2m or 1h.")
    return seconds


def plain(text: str) -> str:
    """A docstring for ``--help``: RST's ``literal`` markup dropped."""
    return re.sub(r"``(.+?)``", r"\1", text)


def check_log_file(path: Path) -> Path:
    """Refuse a --log FILE that cannot be appended to: checked before the window is spent
    watching, and without leaving anything behind."""
    if path.is_dir():
        raise CheckpointError(f"--log {path} is a directory: give a file name in it.")
    if not path.parent.is_dir():
        raise CheckpointError(f"The directory of --log {path} does not exist: create it or "
                              "choose another file.")
    try:
        if path.exists():
            with path.open("a"):  # opened, nothing written: content and mtime unchanged
                pass
        else:
            with tempfile.TemporaryFile(dir=path.parent):  # created and removed at once
                pass
    except OSError as exc:
        raise CheckpointError(f"--log {path} cannot be written ({exc.strerror}): choose a file "
                              "in a writable directory.") from None
    return path


# --- a /metrics URL: two scrapes, one window apart ---------------------------------------------

def _checked_source(url: str) -> Source:
    def source() -> Samples:
        samples = scrape(url)
        if not any(name == "ckpt_writes_total" for name, _ in samples):
            raise CheckpointError(f"{mask_url(url)} serves Prometheus metrics but no "
                                  "ckpt_writes_total: "
                                  "wrap the service's saver in InstrumentedSaver and serve "
                                  "its registry there.")
        return samples
    return source


def decide_urls(urls: list[str], window_s: float, th: Thresholds,
                console: Console | None = None) -> Decision:
    """Scrape every URL (summed, as ``sum(rate())``), wait ``window_s``, scrape again, decide."""
    window = MetricsWindow([_checked_source(u) for u in urls], window_s)
    window.sample()
    if console is not None:
        with console.status(f"watching {len(urls)} endpoint(s) for {window_s:g} s..."):
            time.sleep(window_s)
    else:
        time.sleep(window_s)
    window.sample()
    decision = decide(window.stats(), th.with_(window_s=window_s))
    decision.inputs["source"] = {"kind": "metrics", "urls": [mask_url(u) for u in urls]}
    return decision


# --- a database file: read-only, its size and its checkpoint ids -------------------------------

def file_window(path: Path, window_s: float, now: float | None = None,
                ) -> tuple[WindowStats, dict[str, Any]]:
    """The last ``window_s`` seconds of a database file, dated by its checkpoint ids.

    Writes are counted as the metrics count them: each checkpoint (a ``put``) plus each
    task's batch of writes (a ``put_writes``), dated by the checkpoint id they belong to.
    Returns the stats and what was counted (puts, put_writes, the newest checkpoint's age).
    """
    now = time.time() if now is None else now
    lower = uuid6_at(datetime.fromtimestamp(now - window_s, UTC))
    since = datetime.fromtimestamp(now - window_s, UTC)
    conn = open_checkpoint_db(path, other="a /metrics URL")
    try:  # the string bound uses the primary key; uuid6_time drops ids that are not uuid6
        ids = [r[0] for r in conn.execute(
            "SELECT checkpoint_id FROM checkpoints WHERE checkpoint_id >= ?", (lower,))]
        batches = [r[2] for r in conn.execute(
            "SELECT DISTINCT thread_id, checkpoint_ns, checkpoint_id, task_id FROM writes "
            "WHERE checkpoint_id >= ?", (lower,))]
        newest = conn.execute("SELECT max(checkpoint_id) FROM checkpoints").fetchone()[0]
    finally:
        conn.close()
    puts = sum((t := uuid6_time(i)) is not None and t >= since for i in ids)
    put_writes = sum((t := uuid6_time(i)) is not None and t >= since for i in batches)
    writes = float(puts + put_writes)
    newest_at = uuid6_time(newest) if newest else None
    counted = {"puts": puts, "put_writes": put_writes, "newest_checkpoint_age_s":
               now - newest_at.timestamp() if newest_at else None}
    return WindowStats(window_s=window_s, span_s=window_s, writes=writes, errors=0.0, locked=0.0,
                       writes_per_s=writes / window_s, error_rate=0.0, p50_ms=None,
                       p99_ms=None, db_bytes=float(file_bytes(path))), counted


def decide_file(path: Path, window_s: float, th: Thresholds) -> Decision:
    """Decide on a database file: size from disk, writes from ids; errors not observable."""
    stats, counted = file_window(path, window_s)
    decision = decide(stats, th.with_(window_s=window_s), {"error_rate": NO_ERRORS_IN_FILE})
    decision.inputs["source"] = {"kind": "sqlite_file", "path": str(path), **counted}
    return decision


# --- the command -------------------------------------------------------------------------------

def _thresholds(args: argparse.Namespace) -> Thresholds:
    th = load_thresholds(args.config)
    if args.servers is not None:
        if not args.servers.isdigit() or int(args.servers) < 1:
            raise CheckpointError(f"--servers {args.servers!r} must be a whole number of 1 or "
                                  "more: how many servers write this database.")
        th = th.with_(servers=int(args.servers))
    return th


def _check_targets(targets: list[str]) -> str:
    urls = [t for t in targets if "://" in t]
    if urls and len(urls) != len(targets):
        raise CheckpointError("Give either /metrics URLs or one database path, not both.")
    for u in urls:
        metrics_request(u)  # an http(s) URL with a valid host and port, or one sentence
    if not urls and len(targets) != 1:
        raise CheckpointError("Give one database path (several /metrics URLs are summed, "
                              "several files are not).")
    return "metrics" if urls else "file"


def print_decision(decision: Decision, console: Console) -> None:
    """The decision matrix (rule, threshold, current value, fired), the verdict and why."""
    table = Table(title="decision matrix", title_justify="left")
    for col in ("rule", "threshold", "current", "fired", "verdict if fired"):
        table.add_column(col)
    for r in decision.matrix:
        fired = {True: Text("yes", "bold red"), False: Text("no", "green")}.get(
            r["fired"], Text("not observed" if not r["observable"] else "not enough data",
                             "dim"))
        table.add_row(r["name"], r["threshold"], r["current"], fired, r["verdict"])
    console.print(table)
    console.print(Text.assemble("verdict ", Text(f" {decision.verdict} ",
                                                 VERDICT_STYLE.get(decision.verdict, "bold"))))
    console.print(Text(decision.justification))


def cmd_decide(args: argparse.Namespace) -> int:
    """Run ``ckpt decide`` from parsed arguments; bad input raises ``CheckpointError``."""
    on_interrupt(NOTHING_CHANGED)
    kind = _check_targets(args.target)
    th = _thresholds(args)
    window_s = parse_window(args.window) if args.window is not None else th.window_s
    if window_s > MAX_WINDOW_S:  # from the config file
        raise CheckpointError(f"The decision window_s {window_s:g} in {args.config} is longer "
                              "than 366 days: set it to seconds such as 300.")
    if args.log is not None:
        check_log_file(args.log)
    console = Console()
    if kind == "metrics":
        decision = decide_urls(args.target, window_s, th, None if args.json else console)
    else:
        path = Path(args.target[0])
        try:
            decision = decide_file(path, window_s, th)
        except sqlite3.DatabaseError as exc:
            raise CheckpointError(f"SQLite could not read {path} ({exc}): the file is damaged; "
                                  "restore it from a backup.") from None
    if args.log is not None:
        with args.log.open("a") as f:
            f.write(decision.to_json() + "\n")
    if args.json:
        print(json.dumps(decision.to_dict(), indent=2, default=str))
        return 0
    source: dict[str, Any] = decision.inputs["source"]
    if kind == "metrics":
        how = f"scraped twice, {window_s:g} s apart, summed over {len(args.target)} endpoint(s)"
    else:
        age = source["newest_checkpoint_age_s"]
        how = (f"read-only; size on disk, {source['puts']} checkpoints and "
               f"{source['put_writes']} write batches dated by their ids in the last "
               f"{window_s:g} s; newest checkpoint "
               + (f"{age:,.1f} s old" if age is not None else "none"))
    shown = ", ".join(mask_url(t) if kind == "metrics" else t for t in args.target)
    console.print(Text.assemble((shown, "bold"), f": {how}"))
    print_decision(decision, console)
    return 0


def add_decide_command(subparsers: Any) -> argparse.ArgumentParser:
    """Add ``decide`` to the ``ckpt`` command's subparsers."""
    p = subparsers.add_parser(
        "decide", help="migrate to PostgreSQL or not, from live metrics or a database file",
        description=plain(__doc__.split("\n\n")[0]) if __doc__ else None,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="TARGET: one or more /metrics URLs (scraped twice, a window apart; summed), or "
               "one SQLite checkpoint file (read-only; the error rate cannot be seen in a file). "
               "Exit status 0 with a decision, 2 on bad input.")
    p.add_argument("target", nargs="+", metavar="TARGET",
                   help="http(s)://HOST:PORT/metrics, or the path of a SqliteSaver database")
    p.add_argument("--window", metavar="DURATION",
                   help="how long to observe, e.g. 5s, 500ms, 2m (default: the config's "
                        "decision window_s)")
    p.add_argument("--servers", metavar="N",
                   help="how many servers write this database (more than 1: MIGRATE NOW)")
    p.add_argument("--config", type=Path, default=CONFIG, metavar="FILE",
                   help=f"threshold config (default: {CONFIG.name} in config/)")
    p.add_argument("--json", action="store_true", help="print the decision as JSON")
    p.add_argument("--log", type=Path, metavar="FILE",
                   help="also append the decision to FILE as one JSON line")
    p.set_defaults(func=cmd_decide)
    return p


def decide_main(argv: list[str] | None = None) -> int:
    """``ckpt decide`` on its own: exit 0 with a decision, 2 with one sentence on bad input."""
    parser = OneLineArgumentParser(prog="ckpt")
    add_decide_command(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["decide", *(sys.argv[1:] if argv is None else argv)])
    return run_command(args.func, args)


if __name__ == "__main__":
    raise SystemExit(decide_main())
