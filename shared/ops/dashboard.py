"""A live terminal dashboard of checkpoint traffic: rates, latency, size, alerts, decision.

    stop = threading.Event()
    frames = run_live(MetricsWindow(from_url(url)), load_thresholds(), stop)  # until stop.set()

Each refresh samples the window (a scrape of /metrics, or a registry in this process),
evaluates the same two alerts as the Prometheus rules (``decide.evaluate_alerts``) and the
migrate-or-not decision (``decide.decide``), and redraws one frame. ``render_frame`` is a
pure function of those three, so a test can render it with ``Console(record=True)``.

``ckpt watch URL ...`` (``shared.cli.watch``) watches any running service's /metrics
endpoints until Ctrl-C.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from rich.console import Console, Group, RenderableType
from rich.live import Live
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from shared.errors import CheckpointError
from shared.ops.decide import (
    MIGRATE_NOW,
    MIGRATE_SOON,
    NO_DATA,
    SUFFICIENT,
    Decision,
    Thresholds,
    decide,
    evaluate_alerts,
)
from shared.ops.window import MetricsWindow, WindowStats

VERDICT_STYLE = {MIGRATE_NOW: "bold white on red", MIGRATE_SOON: "bold black on yellow",
                 SUFFICIENT: "bold white on green", NO_DATA: "bold white on grey37"}


@dataclass
class Frame:
    """What one refresh saw."""

    at: float
    stats: WindowStats
    alerts: dict[str, bool]
    decision: Decision


def take_frame(window: MetricsWindow, th: Thresholds) -> Frame:
    """Sample the window once and judge it."""
    window.sample()
    stats = window.stats()
    return Frame(time.time(), stats, evaluate_alerts(stats, th), decide(stats, th))


def _ms(value: float | None) -> str:
    return "n/a" if value is None else f"{value:,.2f} ms"


def _bytes(value: float) -> str:
    for unit, size in (("GB", 1e9), ("MB", 1e6), ("KB", 1e3)):
        if value >= size:
            return f"{value / size:,.2f} {unit} ({value:,.0f} bytes)"
    return f"{value:,.0f} bytes"


def render_frame(stats: WindowStats, alerts: dict[str, bool], decision: Decision,
                 status: str = "") -> RenderableType:
    """One dashboard frame: traffic figures, alert states, the verdict and why."""
    figures = Table(show_header=False, box=None, pad_edge=False)
    figures.add_column(style="bold")
    figures.add_column(justify="right")
    figures.add_row("writes/s", f"{stats.writes_per_s:,.1f}")
    figures.add_row("error rate", f"{stats.error_rate:.2%} ({stats.errors:,.0f} errors, "
                    f"{stats.locked:,.0f} locked)")
    figures.add_row("p50 write latency", _ms(stats.p50_ms))
    figures.add_row("p99 write latency", _ms(stats.p99_ms))
    figures.add_row("database size", _bytes(stats.db_bytes))
    figures.add_row("window", f"last {stats.span_s:.1f} s (window {stats.window_s:g} s), "
                    f"{stats.writes + stats.errors:,.0f} write attempts")

    states = Table("alert", "state", box=None, pad_edge=False)
    for name, firing in alerts.items():
        states.add_row(name, Text("FIRING", "bold red") if firing else Text("ok", "green"))

    verdict = Text(f" {decision.verdict} ", VERDICT_STYLE.get(decision.verdict, "bold"))
    parts: list[RenderableType] = [figures, Text(""), states, Text(""),
                                   Text.assemble("decision ", verdict),
                                   Text(decision.justification, "dim")]
    if status:
        parts.insert(0, Text(status, "cyan"))
    return Panel(Group(*parts), title="[bold]checkpoint traffic[/]", title_align="left",
                 expand=False)


def monitor(window: MetricsWindow, thresholds: Thresholds, stop: threading.Event,
            refresh_s: float = 0.5,
            on_frame: Callable[[RenderableType], None] | None = None,
            status: Callable[[], str] | None = None) -> list[Frame]:
    """Take a frame every ``refresh_s`` until ``stop`` is set; hand each one, drawn, on."""
    frames: list[Frame] = []
    while True:
        note = status() if status else ""
        try:
            frame = take_frame(window, thresholds)
        except CheckpointError as exc:  # a failed scrape is shown, and the watch goes on
            if on_frame:
                on_frame(Panel(Text(str(exc), "red"), title="checkpoint traffic"))
        else:
            frames.append(frame)
            if on_frame:
                on_frame(render_frame(frame.stats, frame.alerts, frame.decision, note))
        if stop.wait(refresh_s):
            return frames


def run_live(window: MetricsWindow, thresholds: Thresholds, stop: threading.Event,
             refresh_s: float = 0.5, console: Console | None = None,
             status: Callable[[], str] | None = None) -> list[Frame]:
    """Redraw the dashboard in place until ``stop`` is set; return every frame taken.

    On a terminal the panel updates in place; written to a file or a pipe, rich prints
    only the last frame.
    """
    console = console or Console()
    with Live(Text("waiting for the first sample…"), console=console,
              refresh_per_second=max(1.0, 1 / refresh_s), transient=False) as live:
        frames = monitor(window, thresholds, stop, refresh_s,
                         on_frame=lambda r: live.update(r, refresh=True), status=status)
    if not console.is_terminal:
        console.line()  # rich ends the last frame without a newline when not on a terminal
    return frames
