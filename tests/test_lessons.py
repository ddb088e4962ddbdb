"""Every lesson the runner finds (``make m1`` … ``make m4``): importing it does nothing,
``python -m <lesson> --help`` works, and ``main()`` at small scale passes.

The small-scale run is shared with the lesson's own test file (the ``lesson_run`` fixture in
conftest.py), which asserts its metrics one by one: each lesson runs once a session.
"""

from __future__ import annotations

import inspect
import io
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from rich.console import Console

from shared import ROOT, runner
from tests.conftest import SMALL_SCALE, RunLesson

LESSONS = [name for folder in runner.milestones().values() for name in runner.scripts(folder)]

# Run in a fresh interpreter: an audit hook records every event by which an import could reach
# outside itself (a file written, a directory made, a process started, a socket, a database),
# then the module is imported and what the process holds afterwards is reported as JSON.
PROBE = r"""
import importlib, json, os, sys, threading
from pathlib import Path

WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_APPEND
WATCHED = ("subprocess.", "os.fork", "os.forkpty", "os.posix_spawn", "os.exec", "os.spawn",
           "os.system", "os.kill", "os.mkdir", "os.remove", "os.rmdir", "os.rename",
           "os.truncate", "os.link", "os.symlink", "shutil.", "socket.bind", "socket.connect",
           "socket.listen", "sqlite3.connect", "signal.")
events = []

def hook(event, args):
    if event == "open":
        path, mode, flags = args
        writes = (mode is not None and any(c in mode for c in "wax+")) or (
            mode is None and isinstance(flags, int) and flags & WRITE_FLAGS)
        if writes:
            events.append(f"open for writing {path!r}")
    elif event.startswith(WATCHED) and not _ipv6_probe():
        events.append(f"{event} {args!r}"[:300])

def _ipv6_probe():
    # urllib3 binds a socket to ::1 and closes it at once when imported, to learn whether
    # the machine has IPv6: the library's probe, no server of ours
    frame = sys._getframe(2)
    return frame.f_code.co_name == "_has_ipv6" and "urllib3" in frame.f_code.co_filename

sys.addaudithook(hook)
importlib.import_module(sys.argv[1])
children = [pid for f in Path(f"/proc/{os.getpid()}/task").glob("*/children")
            for pid in f.read_text().split()]
sockets = []
for fd in os.listdir("/proc/self/fd") if os.path.isdir("/proc/self/fd") else []:
    try:  # the listing's own descriptor is gone by now
        if os.readlink(f"/proc/self/fd/{fd}").startswith("socket:"):
            sockets.append(fd)
    except FileNotFoundError:
        pass
print("PROBE " + json.dumps({"events": events, "children": children, "sockets": sockets,
                             "threads": [t.name for t in threading.enumerate()]}))
"""


def _env(home: Path) -> dict[str, str]:
    """This environment with HOME and TMPDIR of the test's own, so that a write shows."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("COVERAGE_")}
    home.mkdir()
    (home / "tmp").mkdir()
    return {**env, "HOME": str(home), "TMPDIR": str(home / "tmp"), "PYTHONPATH": str(ROOT),
            "PYTHONDONTWRITEBYTECODE": "1", "COLUMNS": "200"}


def _paths(*dirs: Path) -> list[Path]:
    return sorted(p for d in dirs for p in d.rglob("*"))


def test_every_lesson_has_a_small_scale_and_a_readme_entry() -> None:
    assert len(LESSONS) >= 17  # m1 … m4 at least
    assert sorted(LESSONS) == sorted(SMALL_SCALE), "SMALL_SCALE in conftest.py: one per lesson"
    for module in LESSONS:  # the milestone's README names each of its scripts
        folder, stem = module.split(".")
        assert f"{stem}.py" in (ROOT / folder / "README.md").read_text(), module


@pytest.mark.parametrize("module", LESSONS)
def test_import_has_no_side_effect(module: str, tmp_path: Path) -> None:
    cwd, home = tmp_path / "cwd", tmp_path / "home"
    cwd.mkdir()
    env = _env(home)
    data = ROOT / ".data"
    before = {p: p.stat().st_mtime_ns for p in data.rglob("*")} if data.exists() else {}
    out = subprocess.run([sys.executable, "-c", PROBE, module], cwd=cwd, env=env,
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-3000:]
    printed, _, report = out.stdout.rpartition("PROBE ")
    assert printed == "", f"importing {module} printed {printed!r}"
    probe = json.loads(report)
    assert probe["events"] == [], f"importing {module} reached outside itself"
    assert probe["children"] == [], "importing started a child process"
    assert probe["sockets"] == [], "importing opened a socket (a server, a client)"
    assert probe["threads"] == ["MainThread"], "importing started a thread"
    assert _paths(cwd, home) == [home / "tmp"]  # nothing in the cwd, HOME or TMPDIR
    # ... nor in the lessons' default data directory (compared per file: tests may add theirs)
    after = {p: p.stat().st_mtime_ns for p in data.rglob("*")} if data.exists() else {}
    assert {p: t for p, t in after.items() if before.get(p) != t} == {}


@pytest.mark.parametrize("module", LESSONS)
def test_help(module: str, tmp_path: Path) -> None:
    out = subprocess.run([sys.executable, "-m", module, "--help"], cwd=tmp_path,
                         env=_env(tmp_path / "home"), capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, out.stderr[-3000:]
    assert out.stdout.startswith(f"usage: python -m {module} "), out.stdout[:300]
    lesson = __import__(module, fromlist=["main"])
    summary = lesson.__doc__.strip().splitlines()[0]
    assert " ".join(summary.split()) in " ".join(out.stdout.split())  # what it proves
    options = ["--workdir", "--json"] + [
        f"--{name.replace('_', '-')}" for name in inspect.signature(lesson.main).parameters
        if name != "workdir"]
    missing = [o for o in options if o not in out.stdout.split()
               and f"{o}," not in out.stdout.split()]
    assert missing == [], f"--help does not offer {missing}"
    assert _paths(tmp_path) == [tmp_path / "home", tmp_path / "home" / "tmp"]  # ran nothing


@pytest.mark.parametrize("module", LESSONS)
def test_main_at_small_scale_passes(module: str, lesson_run: RunLesson) -> None:
    w = lesson_run(module).witness
    assert w.error is None, w.error
    milestone = module.split("_")[0].removeprefix("m")
    assert w.task.split(".")[0] == milestone, (w.task, module)
    targets = [m for m in w.metrics if m.target is not None]
    assert targets, "a witness with no target proves nothing"
    unmet = [f"{m.name} = {m.shown()} (target {m.target})" for m in targets if not m.met]
    assert unmet == []
    assert w.passed
    console = Console(file=io.StringIO(), width=160)
    w.render(console)  # the panel the reader sees, as the runner prints it
    shown = console.file.getvalue()
    assert f"{w.task} {w.title}" in shown and "PASSED" in shown
