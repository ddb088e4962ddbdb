"""Running a function in another OS process: a fresh interpreter, or a fork.

``run_child("pkg.module:function", key=value)`` starts ``python -m shared.proc`` with the
arguments as JSON and returns the function's JSON result. The child shares nothing with the
parent but the files on disk, which is what a persistence lesson needs to prove.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import subprocess
import sys
import time
from importlib import import_module
from pathlib import Path
from typing import Any

from shared import ROOT

_MARK = "__CHILD_RESULT__ "


class ChildProcessError(RuntimeError):
    """The child exited non-zero; the message carries the tail of its stderr."""


def _command(target: str, kwargs: dict[str, Any]) -> list[str]:
    return [sys.executable, "-m", "shared.proc", target, json.dumps(kwargs)]


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH")) if p)
    return env


def start_child(target: str, **kwargs: Any) -> subprocess.Popen[str]:
    """Start ``target`` in a fresh interpreter and return at once (to wait on, or to kill)."""
    return subprocess.Popen(_command(target, kwargs), cwd=ROOT, env=_env(), text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def child_result(proc: subprocess.Popen[str], target: str, timeout: float = 120) -> Any:
    """Wait for a child started by ``start_child`` and return its JSON result."""
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.communicate()
        raise ChildProcessError(f"{target} did not finish within {timeout:.0f} s") from None
    if proc.returncode != 0:
        tail = "\n".join(err.strip().splitlines()[-5:])
        raise ChildProcessError(f"{target} exited with status {proc.returncode}: {tail}")
    for line in reversed(out.splitlines()):
        if line.startswith(_MARK):
            return json.loads(line[len(_MARK):])
    raise ChildProcessError(f"{target} printed no result")


def run_child(target: str, /, *, timeout: float = 120, **kwargs: Any) -> Any:
    """Run ``module:function(**kwargs)`` in a fresh Python interpreter; return its result."""
    return child_result(start_child(target, **kwargs), target, timeout)


def fork_child(func: Any, *args: Any) -> multiprocessing.process.BaseProcess:
    """Start ``func(*args)`` in a forked child (spawned where fork is unavailable).

    A fork starts in milliseconds, which makes a hundred crash trials affordable; the child
    still dies alone when killed, and the parent only ever reads what it left on disk.
    """
    method = "fork" if "fork" in multiprocessing.get_all_start_methods() else "spawn"
    proc = multiprocessing.get_context(method).Process(target=func, args=args, daemon=True)
    proc.start()
    return proc


def child_ready(gate: str, index: int, timeout: float = 120.0) -> float:
    """In a forked child: say it is ready (set up, connected), wait for the start, return the
    wall-clock start time the parent chose (``open_gate``)."""
    Path(f"{gate}.ready{index}").touch()
    go = Path(f"{gate}.go")
    deadline = time.time() + timeout
    while not go.exists():
        if time.time() > deadline:
            raise RuntimeError(f"no start signal at {go} within {timeout:g} s")
        time.sleep(0.002)
    return float(go.read_text())


def open_gate(gate: str, children: list[multiprocessing.process.BaseProcess],
              lead_s: float = 0.05, timeout: float = 120.0) -> float:
    """Start ``children`` together once every one is ready (a slow or busy machine can take
    seconds to fork and connect them all: a fixed delay would start the clock without them).
    Returns the start time; the files are removed by ``close_gate``."""
    ready = [Path(f"{gate}.ready{i}") for i in range(len(children))]
    deadline = time.time() + timeout
    while not all(p.exists() for p in ready):
        if time.time() > deadline or not all(c.is_alive() for c in children):
            break  # start anyway: a child that died is reported by its missing results
        time.sleep(0.005)
    start_at = time.time() + lead_s
    tmp = Path(f"{gate}.go.tmp")
    tmp.write_text(repr(start_at))
    tmp.replace(f"{gate}.go")  # whole or not at all: a child never reads half a number
    return start_at


def close_gate(gate: str, count: int) -> None:
    for path in (f"{gate}.go", *(f"{gate}.ready{i}" for i in range(count))):
        Path(path).unlink(missing_ok=True)


def join_children(children: list[multiprocessing.process.BaseProcess], timeout: float) -> None:
    """Wait for forked children, each up to ``timeout`` seconds; kill and reap any that hang."""
    for child in children:
        child.join(timeout=timeout)
        if child.is_alive():
            child.kill()
            child.join()


def read_results(outs: list[Path], what: str) -> list[dict[str, Any]]:
    """The JSON file each child wrote (removed once read); one sentence if some never did."""
    results = [json.loads(o.read_text()) for o in outs if o.exists()]
    for o in outs:
        o.unlink(missing_ok=True)
    if len(results) != len(outs):
        raise RuntimeError(f"{len(outs) - len(results)} of {len(outs)} {what} died")
    return results


def _main(argv: list[str]) -> int:
    target, payload = argv
    module_name, _, func_name = target.partition(":")
    func = getattr(import_module(module_name), func_name)
    result = func(**json.loads(payload))
    print(_MARK + json.dumps(result, default=str), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(_main(sys.argv[1:]))
