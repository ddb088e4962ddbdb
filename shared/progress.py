"""One progress bar for long work (migrate, prune, loading a history): count, elapsed, left."""

from __future__ import annotations

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)


def progress_bar(unit: str = "checkpoints", *, description: str = "{task.description}",
                 console: Console | None = None, transient: bool = True,
                 disable: bool | None = None) -> Progress:
    """A bar reading ``description [=====] 1,200/5,000 unit 0:00:03 0:00:09``.

    ``disable`` defaults to "not a terminal" (a pipe, a log, cron): no bar, no stray line.
    """
    console = console or Console(stderr=True)
    return Progress(TextColumn(description), BarColumn(), MofNCompleteColumn(),
                    TextColumn(unit), TimeElapsedColumn(), TimeRemainingColumn(),
                    console=console, transient=transient,
                    disable=not console.is_terminal if disable is None else disable)
