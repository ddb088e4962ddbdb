"""Witness and Metric: what a lesson measured, against which target, and how it is shown.

A witness script exposes ``main(workdir=None, **scale) -> Witness``. Every value put in a
``Metric`` must come from what actually ran; the target says what the value must satisfy.
"""

from __future__ import annotations

import argparse
import inspect
import json
import operator
import shutil
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from shared import ROOT

_OPS: dict[str, Callable[[Any, Any], bool]] = {
    "<=": operator.le,
    ">=": operator.ge,
    "==": operator.eq,
    "!=": operator.ne,
    "<": operator.lt,
    ">": operator.gt,
}

Value = int | float | str | bool


def _parse_operand(text: str, like: Value) -> Value:
    """Read the target's right-hand side with the type of the measured value."""
    if isinstance(like, bool):
        if text.lower() in {"yes", "true"}:
            return True
        if text.lower() in {"no", "false"}:
            return False
        raise ValueError(f"boolean target must be yes/no, got {text!r}")
    if isinstance(like, int | float):
        return float(text)
    return text


@dataclass
class Metric:
    """One measured value. ``target`` is ``"<op> <operand>"`` (e.g. ``"<= 5"``) or None."""

    name: str
    value: Value
    unit: str = ""
    target: str | None = None

    def __post_init__(self) -> None:
        if self.target is not None:
            self._split()  # fail at construction on a malformed target, not at render time

    def _split(self) -> tuple[str, Value]:
        assert self.target is not None
        for op in sorted(_OPS, key=len, reverse=True):
            if self.target.startswith(op):
                return op, _parse_operand(self.target[len(op) :].strip(), self.value)
        raise ValueError(f"metric {self.name!r}: target {self.target!r} must start with one of "
                         f"{', '.join(_OPS)}")

    @property
    def met(self) -> bool | None:
        """True/False against the target; None when the metric is informational."""
        if self.target is None:
            return None
        op, operand = self._split()
        return bool(_OPS[op](self.value, operand))

    def shown(self) -> str:
        """The value as a reader sees it: yes/no for booleans, trimmed floats."""
        if isinstance(self.value, bool):
            return "yes" if self.value else "no"
        if isinstance(self.value, float):
            text = f"{self.value:,.3f}" if abs(self.value) < 100 else f"{self.value:,.1f}"
            text = text.rstrip("0").rstrip(".") if "." in text else text
        else:
            text = f"{self.value:,}" if isinstance(self.value, int) else str(self.value)
        return f"{text} {self.unit}".strip()

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "value": self.value, "unit": self.unit,
                "target": self.target, "met": self.met}


@dataclass
class Witness:
    """What one task proved: its metrics, the evidence a reader should see, and pass/fail."""

    task: str
    title: str
    metrics: list[Metric] = field(default_factory=list)
    evidence: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    error: str | None = None

    def metric(self, name: str, value: Value, unit: str = "", target: str | None = None) -> Metric:
        """Record a measured value and return it."""
        if any(m.name == name for m in self.metrics):
            raise ValueError(f"metric {name!r} recorded twice in witness {self.task}")
        m = Metric(name, value, unit, target)
        self.metrics.append(m)
        return m

    def show(self, line: str) -> None:
        """Add an evidence line: something the reader should see with their own eyes."""
        self.evidence.append(line)

    def note(self, line: str) -> None:
        """Add an explanation: why a number is what it is, what a seed claimed."""
        self.notes.append(line)

    def __getitem__(self, name: str) -> Metric:
        for m in self.metrics:
            if m.name == name:
                return m
        raise KeyError(f"witness {self.task} has no metric {name!r}; it has "
                       f"{[m.name for m in self.metrics]}")

    @property
    def passed(self) -> bool:
        """Every target met, at least one target present, and no error."""
        targets = [m.met for m in self.metrics if m.met is not None]
        return self.error is None and bool(targets) and all(targets)

    def to_dict(self) -> dict[str, Any]:
        return {"task": self.task, "title": self.title, "passed": self.passed,
                "error": self.error, "metrics": [m.to_dict() for m in self.metrics],
                "evidence": self.evidence, "notes": self.notes}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Witness:
        w = cls(data["task"], data["title"], evidence=list(data.get("evidence", [])),
                notes=list(data.get("notes", [])), error=data.get("error"))
        for m in data.get("metrics", []):
            w.metrics.append(Metric(m["name"], m["value"], m.get("unit", ""), m.get("target")))
        return w

    def render(self, console: Console | None = None) -> None:
        """One panel: the metrics table with pass/fail marks, then evidence and notes."""
        console = console or Console()
        table = Table(show_edge=False, expand=False, pad_edge=False)
        table.add_column("metric")
        table.add_column("value", justify="right")
        table.add_column("target")
        table.add_column("", justify="center")
        for m in self.metrics:
            mark = {True: "[green]✔[/]", False: "[red]✘[/]", None: "[dim]·[/]"}[m.met]
            table.add_row(m.name, m.shown(), m.target or "", mark)
        parts: list[Any] = [table]
        if self.evidence:
            parts.append(Text("\nevidence", style="bold"))
            parts.extend(Text("  " + line, style="cyan") for line in self.evidence)
        if self.notes:
            parts.append(Text("\nnotes", style="bold"))
            parts.extend(Text("  " + line, style="dim") for line in self.notes)
        if self.error:
            parts.append(Text(f"\nerror: {self.error}", style="bold red"))
        from rich.console import Group

        status = "[green]PASSED[/]" if self.passed else "[red]FAILED[/]"
        console.print(Panel(Group(*parts), title=f"[bold]{self.task} {self.title}[/]",
                            subtitle=status, title_align="left", subtitle_align="right"))


def fresh_workdir(workdir: Path | None, name: str) -> Path:
    """A clean directory for one witness run: ``workdir/name``, or ``.data/name`` by default.

    Only the ``name`` sub-directory is wiped, never the directory the caller passed.
    """
    base = Path(workdir) if workdir is not None else ROOT / ".data"
    wd = base / name
    if wd.exists():
        shutil.rmtree(wd)
    wd.mkdir(parents=True)
    return wd


def _scale_options(main: Callable[..., Witness]) -> dict[str, Any]:
    """The keyword parameters of ``main`` besides workdir: the script's scale knobs."""
    params = inspect.signature(main).parameters
    return {n: p.default for n, p in params.items()
            if n != "workdir" and p.default is not inspect.Parameter.empty}


def cli(main: Callable[..., Witness], argv: list[str] | None = None) -> int:
    """Run a witness script from the command line; exit status 1 when it failed."""
    module = sys.modules.get(main.__module__)
    doc = (module.__doc__ or "").strip() if module else ""
    # run as ``python -m pkg.lesson``, the module is ``__main__``: its spec has the real name
    spec = getattr(module, "__spec__", None)
    parser = argparse.ArgumentParser(
        prog=f"python -m {spec.name if spec else main.__module__}",
        description=doc.splitlines()[0] if doc else None,
        epilog="Every figure printed is measured from this run.")
    parser.add_argument("--workdir", type=Path, default=None,
                        help="where to put databases and files (default: .data/)")
    parser.add_argument("--json", type=Path, default=None, metavar="FILE",
                        help="also write the witness as JSON to FILE")
    for name, default in _scale_options(main).items():
        kind = type(default) if default is not None else str
        if kind is bool:
            parser.add_argument(f"--{name.replace('_', '-')}", dest=name,
                                action=argparse.BooleanOptionalAction, default=default)
        else:
            parser.add_argument(f"--{name.replace('_', '-')}", dest=name, type=kind,
                                default=default, help=f"(default: {default})")
    args = vars(parser.parse_args(argv))
    json_path = args.pop("json")
    witness = main(**args)
    witness.render()
    if json_path:
        json_path.write_text(json.dumps(witness.to_dict(), indent=2, default=str))
    return 0 if witness.passed else 1
