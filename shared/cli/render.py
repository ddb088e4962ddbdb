"""``ckpt render``: rewrite the alert rules and the Grafana dashboard from the thresholds.

    ckpt render                              # config/thresholds.toml -> deploy/
    ckpt render --config my-thresholds.toml  # another thresholds file
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from shared import ROOT
from shared.ops.decide import load_thresholds
from shared.ops.render import render_deploy_files


def cmd_render(args: argparse.Namespace) -> int:
    for path, text in render_deploy_files(load_thresholds(args.config)).items():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        print(f"wrote {path.relative_to(ROOT)}")
    return 0


def add_render_command(subparsers: Any) -> None:
    """Register ``render`` on the ``ckpt`` command's subparsers."""
    p = subparsers.add_parser(
        "render", help="rewrite deploy/ alert rules and Grafana dashboard from the thresholds",
        description="Render the thresholds (config/thresholds.toml, or --config) as "
        "deploy/prometheus/ckpt-alerts.yml and deploy/grafana/ckpt-dashboard.json.",
        epilog="Exit status 0 when written, 2 on bad input.")
    p.add_argument("--config", type=Path, default=None, help="thresholds TOML file")
    p.set_defaults(func=cmd_render)
