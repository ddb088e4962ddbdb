"""One way to write a duration everywhere: ``500ms``, ``45s``, ``90m``, ``12h``, ``30d``, or
several units largest first (``1d12h``, ``1m30s``); a bare number means seconds."""

from __future__ import annotations

import re
from datetime import timedelta

from shared.errors import CheckpointError

_UNITS = {"d": 86_400.0, "h": 3_600.0, "m": 60.0, "s": 1.0, "ms": 0.001}
# Each unit at most once, largest first; the last part may carry a decimal point.
_PART = r"\s*(?:(\d+(?:\.\d+)?)\s*{})?"
_DURATION = re.compile("".join(_PART.format(u + ("(?!s)" if u == "m" else ""))
                               for u in _UNITS) + r"\s*")
_BARE = re.compile(r"\s*(\d+(?:\.\d+)?)\s*")
MAX_DAYS = 36_500  # a century: any longer and a cutoff date itself overflows


def parse_duration(text: str, option: str = "duration", *, max_days: float = MAX_DAYS
                   ) -> timedelta:
    """``text`` as a positive timedelta, or one sentence naming the option and the fix."""
    example = "such as 500ms, 45s, 90m, 12h or 30d (several units largest first: 1d12h)"
    bare = _BARE.fullmatch(text)
    m = None if bare else _DURATION.fullmatch(text.lower())
    if bare:
        seconds = float(bare[1])
    elif m is not None and any(m.groups()):
        seconds = sum(float(n) * f for n, f in zip(m.groups(), _UNITS.values(), strict=True)
                      if n)
    else:
        raise CheckpointError(f"{option} {text!r} is not a duration: write a number with a unit "
                              f"d, h, m, s or ms, {example}.")
    if seconds <= 0:
        raise CheckpointError(f"{option} {text!r} must be longer than zero: {example}.")
    if seconds > max_days * _UNITS["d"]:
        raise CheckpointError(f"{option} {text!r} is longer than {max_days:,g} days: {example}.")
    return timedelta(seconds=seconds)


def format_duration(delta: timedelta) -> str:
    """The shortest whole-unit form: ``30d``, ``12h``, ``90m``, ``45s``, ``500ms``."""
    ms = round(delta.total_seconds() * 1000)
    for unit in ("d", "h", "m", "s"):
        size = round(_UNITS[unit] * 1000)
        if ms >= size and ms % size == 0:
            return f"{ms // size}{unit}"
    return f"{ms}ms"


__all__ = ["MAX_DAYS", "format_duration", "parse_duration"]
