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
import tempfile
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table
from rich.text import Text

from shared.durations import parse_duration
from shared.errors import (
    NOTHING_CHANGED,
    CheckpointError,
    on_interrupt,
)
from shared.infra.urls import mask_url
from shared.ops.dashboard import VERDICT_STYLE
from shared.ops.decide import (
    CONFIG,
    Decision,
    Thresholds,
    load_thresholds,
)
from shared.ops.decide_sources import decide_file, decide_urls
from shared.ops.metrics import metrics_request

MAX_WINDOW_DAYS = 366  # a year of checkpoint ids; beyond, dates overflow


def parse_window(text: str) -> float:
    """``--window``: a duration (``5s``, ``500ms``, ``2m``, ``1h``; bare seconds) in seconds."""
    return parse_duration(text, "--window", max_days=MAX_WINDOW_DAYS).total_seconds()


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
    if window_s > MAX_WINDOW_DAYS * 86_400:  # from the config file
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
        epilog="URL|DB: one or more /metrics URLs (scraped twice, a window apart; summed), or "
               "one SQLite checkpoint file (read-only; the error rate cannot be seen in a file). "
               "Exit status 0 with a decision, 2 on bad input.")
    p.add_argument("target", nargs="+", metavar="URL|DB",
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


