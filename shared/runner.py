"""Run milestones' witness scripts in order, summarise, and write the reports.

    python -m shared.runner m1            # one milestone (make m1)
    python -m shared.runner all --readme  # every milestone, reports, README table (make all)

Each milestone's results go to ``reports/<milestone>.json``; ``all`` also writes
``reports/witnesses.json`` and ``reports/witnesses.md`` and, with ``--readme``, replaces the
README's witness table between its markers with the figures of this run.
"""

from __future__ import annotations

import argparse
import importlib
import json
import platform
import time
import traceback
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from shared import ROOT
from shared.witness import Witness

REPORTS = ROOT / "reports"
README_START = "<!-- witness-table:start -->"
README_END = "<!-- witness-table:end -->"


def milestones() -> dict[str, Path]:
    """``{"m1": Path("m1_foundation"), ...}`` for every milestone folder that exists."""
    found = sorted(p for p in ROOT.glob("m[0-9]_*") if (p / "__init__.py").exists())
    return {p.name.split("_")[0]: p for p in found}


def scripts(folder: Path) -> list[str]:
    """The witness modules of a milestone, in task order (s1_…, s2_…)."""
    return [f"{folder.name}.{p.stem}" for p in sorted(folder.glob("s[0-9]*_*.py"))]


def run_script(module_name: str, workdir: Path | None = None) -> Witness:
    """Import and run one witness; a crash becomes a failed witness, not a lost run."""
    try:
        module = importlib.import_module(module_name)
        return module.main(workdir=workdir)
    except Exception as exc:  # report every script, even after one breaks
        w = Witness(module_name.rsplit(".", 1)[-1], module_name,
                    error=f"{type(exc).__name__}: {exc}")
        w.notes.append(traceback.format_exc(limit=3))
        return w


def run_milestone(key: str, console: Console) -> list[dict[str, Any]]:
    folder = milestones()[key]
    console.rule(f"[bold]{folder.name}")
    results = []
    for name in scripts(folder):
        start = time.perf_counter()
        witness = run_script(name)
        seconds = time.perf_counter() - start
        witness.render(console)
        results.append({**witness.to_dict(), "module": name, "seconds": round(seconds, 2)})
    REPORTS.mkdir(exist_ok=True)
    (REPORTS / f"{folder.name}.json").write_text(json.dumps(results, indent=2, default=str))
    return results


def summary_table(results: dict[str, list[dict[str, Any]]]) -> Table:
    table = Table(title="witness summary")
    for col in ("milestone", "task", "title", "metrics met", "time", "result"):
        table.add_column(col)
    for milestone, rows in results.items():
        for r in rows:
            targets = [m for m in r["metrics"] if m["met"] is not None]
            met = sum(bool(m["met"]) for m in targets)
            table.add_row(milestone, r["task"], r["title"], f"{met}/{len(targets)}",
                          f"{r['seconds']:.1f} s",
                          "[green]PASSED[/]" if r["passed"] else "[red]FAILED[/]")
    return table


def markdown(results: dict[str, list[dict[str, Any]]]) -> str:
    """The witness table as Markdown, one row per metric, grouped by milestone and task."""
    lines = []
    for milestone, rows in results.items():
        lines += [f"#### {milestone}", "", "| task | metric | measured | target | |",
                  "|---|---|---|---|---|"]
        for r in rows:
            w = Witness.from_dict(r)
            for i, m in enumerate(w.metrics):
                mark = {True: "✅", False: "❌", None: ""}[m.met]
                task = f"{w.task} {w.title}" if i == 0 else ""
                lines.append(f"| {task} | `{m.name}` | {m.shown()} | {m.target or ''} | {mark} |")
            if w.error:
                lines.append(f"| {w.task} | error | {w.error} | | ❌ |")
        lines.append("")
    return "\n".join(lines)


def update_readme(md: str, stamp: str) -> None:
    readme = ROOT / "README.md"
    text = readme.read_text()
    if README_START not in text or README_END not in text:
        raise SystemExit(f"README.md lacks the {README_START} / {README_END} markers")
    head, rest = text.split(README_START, 1)
    _, tail = rest.split(README_END, 1)
    readme.write_text(f"{head}{README_START}\n{stamp}\n\n{md}{README_END}{tail}")


def main(argv: list[str] | None = None) -> int:
    available = milestones()
    parser = argparse.ArgumentParser(prog="python -m shared.runner",
                                     description="Run witness scripts and write reports.")
    parser.add_argument("targets", nargs="+", metavar="MILESTONE",
                        help=f"one or more of {', '.join(available)}, or 'all'")
    parser.add_argument("--readme", action="store_true",
                        help="refresh the README witness table from this run")
    args = parser.parse_args(argv)
    keys = list(available) if args.targets == ["all"] else args.targets
    unknown = [k for k in keys if k not in available]
    if unknown:
        parser.error(f"no milestone {', '.join(unknown)}: choose from {', '.join(available)}")

    console = Console()
    results = {available[k].name: run_milestone(k, console) for k in keys}
    console.print(summary_table(results))
    if args.targets == ["all"]:
        stamp = (f"_Measured by `make all` on {datetime.now(UTC):%Y-%m-%d %H:%M} UTC, "
                 f"{platform.system()} {platform.machine()}, Python {platform.python_version()}"
                 f", {sum(len(v) for v in results.values())} witnesses._")
        md = markdown(results)
        (REPORTS / "witnesses.json").write_text(json.dumps(
            {"measured": stamp, "milestones": results}, indent=2, default=str))
        (REPORTS / "witnesses.md").write_text(f"# Witnesses\n\n{stamp}\n\n{md}")
        console.print(f"wrote {REPORTS / 'witnesses.json'} and {REPORTS / 'witnesses.md'}")
        if args.readme:
            update_readme(md, stamp)
            console.print("refreshed the witness table in README.md")
    failed = [r["module"] for rows in results.values() for r in rows if not r["passed"]]
    if failed:
        console.print(f"[red]failed: {', '.join(failed)}")
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
