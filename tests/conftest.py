"""Shared fixtures: every test must leave no child process behind."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest


def _children() -> set[int]:
    """Live (non-zombie) child processes of this test process, from /proc."""
    pids: set[int] = set()
    for children in Path(f"/proc/{os.getpid()}/task").glob("*/children"):
        try:  # a thread may end between the listing and the read
            pids.update(int(p) for p in children.read_text().split())
        except (FileNotFoundError, ProcessLookupError):
            continue
    alive = set()
    for pid in pids:
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except FileNotFoundError:
            continue
        if state != "Z":
            alive.add(pid)
    return alive


@pytest.fixture(autouse=True)
def no_leftover_processes():
    if not Path("/proc/self/task").exists():  # not Linux: nothing to check with
        yield
        return
    before = _children()
    yield
    deadline = time.monotonic() + 5
    while (left := _children() - before) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not left, f"test left child processes running: {sorted(left)}"
