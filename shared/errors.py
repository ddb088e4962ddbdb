"""User-facing errors: one sentence that names the problem and the fix."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any


class CheckpointError(Exception):
    """Bad input or an impossible request; the message is meant for the user as is."""


class DatabaseLocationError(CheckpointError):
    """The SQLite file cannot be created or opened where it was asked for."""


class NothingToResume(CheckpointError):
    """A resume was asked for a thread that is unknown or has no pending work."""


def run_command(func: Callable[[Any], int], args: Any, prog: str = "ckpt") -> int:
    """Run a command: a CheckpointError becomes one line on stderr and exit status 2."""
    import sys

    try:
        return int(func(args))
    except CheckpointError as exc:
        print(f"{prog}: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"{prog}: interrupted.", file=sys.stderr)
        return 130
