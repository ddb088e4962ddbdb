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


@pytest.fixture(scope="session")
def pg_url(tmp_path_factory: pytest.TempPathFactory):
    """One PostgreSQL for the whole run: DATABASE_URL, or the embedded server, stopped after."""
    import shutil
    import tempfile

    from shared.infra.postgres import postgres_server

    # Not under pytest's base temp: another pytest session starting as root resets that to
    # 0700, and the server (as ``nobody`` when we are root) could no longer reach its data.
    home = Path(tempfile.mkdtemp(prefix="ckpt-test-pg-"))
    try:
        with postgres_server(home / "data") as url:
            yield url
    finally:
        shutil.rmtree(home, ignore_errors=True)


@pytest.fixture
def pg_db(pg_url: str, request: pytest.FixtureRequest) -> str:
    """A fresh database of its own for one test, on the shared server."""
    import re

    from shared.infra.postgres import create_database

    name = "t_" + re.sub(r"[^a-z0-9_]", "_", request.node.name.lower())[:50]
    return create_database(pg_url, name)
