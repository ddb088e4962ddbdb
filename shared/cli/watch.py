"""``ckpt watch URL...``: the live terminal dashboard over running services' /metrics.

    ckpt watch http://127.0.0.1:9464/metrics                         # one service
    ckpt watch http://a:9464/metrics http://b:9464/metrics --refresh 1   # summed

Each frame: writes/s, errors, latency, size, the two alerts of the Prometheus rules and the
migrate-or-not decision (``shared.ops.dashboard``). Ctrl-C stops it.
"""

from __future__ import annotations

import argparse
import threading
from pathlib import Path
from typing import Any

from shared.errors import CheckpointError
from shared.ops.dashboard import run_live
from shared.ops.decide import load_thresholds
from shared.ops.window import MetricsWindow, from_url


def cmd_watch(args: argparse.Namespace) -> int:
    if not 0.05 <= args.refresh <= 3600:
        raise CheckpointError(f"--refresh {args.refresh:g} must be between 0.05 and 3600 "
                              "seconds: such as 0.5.")
    th = load_thresholds(args.config)
    stop = threading.Event()
    try:
        run_live(MetricsWindow([from_url(u) for u in args.urls], th.window_s), th, stop,
                 args.refresh)
    except KeyboardInterrupt:
        stop.set()
    return 0


def add_watch_command(subparsers: Any) -> None:
    """Register ``watch`` on the ``ckpt`` command's subparsers."""
    p = subparsers.add_parser(
        "watch", help="live dashboard over one or more /metrics endpoints (summed)",
        description="Live checkpoint dashboard over one or more /metrics endpoints (summed): "
        "rates, latency, size, alerts and the migrate-or-not decision. Ctrl-C stops it.",
        epilog="Exit status 0 when stopped, 2 on bad input.")
    p.add_argument("urls", nargs="+", metavar="URL", help="/metrics URLs of the services")
    p.add_argument("--config", type=Path, default=None, help="thresholds TOML file")
    p.add_argument("--refresh", type=float, default=0.5, metavar="S",
                   help="seconds between frames (default 0.5)")
    p.set_defaults(func=cmd_watch)
