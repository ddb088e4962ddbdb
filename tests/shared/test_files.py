"""Issue 8, item 5: reading a SQLite checkpoint file that another process is writing.

``open_checkpoint_db`` (inspect, decide, verify, migrate's source) must read correctly while
a separate process commits checkpoints, and must leave no file behind on a quiet file.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
from langgraph.checkpoint.base import empty_checkpoint
from langgraph.checkpoint.sqlite import SqliteSaver

from shared import ROOT
from shared.ops.files import open_checkpoint_db

# The writer: a real, separate process saving checkpoints through SqliteSaver.put. It opens
# and closes its connection every few saves, as short-lived workers and CLI tools do, so the
# file is sometimes quiet (no -wal) when a reader opens it, then written during the read.
WRITER = r"""
import random, sqlite3, sys, time
from langgraph.checkpoint.base import empty_checkpoint
from langgraph.checkpoint.sqlite import SqliteSaver

path, mode = sys.argv[1], sys.argv[2]
rng = random.Random(7)
saved = 0
while True:
    conn = sqlite3.connect(path, timeout=30)
    saver = SqliteSaver(conn)
    saver.is_setup = mode == "rollback"  # setup() would switch the file to WAL
    for _ in range(rng.randint(1, 12)):
        ckpt = empty_checkpoint()
        ckpt["channel_values"] = {"blob": rng.randbytes(rng.randint(500, 16_000))}
        config = {"configurable": {"thread_id": f"t{rng.randint(0, 40)}", "checkpoint_ns": ""}}
        saver.put(config, ckpt, {"step": saved}, {})
        saved += 1
        if saved == 50:
            print("writing", flush=True)
        time.sleep(0.003)  # a busy service, not a bulk load: readers get their turn
    conn.close()
"""


def _make_db(path: Path, mode: str, n: int = 1500) -> None:
    """A file with ``n`` checkpoints of 0.5-16 KB, in WAL or rollback-journal mode, closed."""
    rng = random.Random(3)
    conn = sqlite3.connect(path)
    saver = SqliteSaver(conn)
    saver.setup()  # WAL
    for i in range(n):
        ckpt = empty_checkpoint()
        ckpt["channel_values"] = {"blob": rng.randbytes(rng.randint(500, 16_000))}
        saver.put({"configurable": {"thread_id": f"t{i % 40}", "checkpoint_ns": ""}}, ckpt,
                  {"step": i}, {})
    if mode == "rollback":
        conn.execute("PRAGMA journal_mode=DELETE")
    conn.close()
    assert path.read_bytes()[18] == (2 if mode == "wal" else 1)
    assert not Path(f"{path}-wal").exists() and not Path(f"{path}-shm").exists()


def _read_all(conn: sqlite3.Connection) -> int:
    """Every row of both tables, every byte, in one read transaction; the checkpoint count."""
    conn.execute("BEGIN")
    try:
        rows = conn.execute("SELECT thread_id, checkpoint_ns, checkpoint_id, "
                            "parent_checkpoint_id, type, checkpoint, metadata "
                            "FROM checkpoints").fetchall()
        conn.execute("SELECT * FROM writes").fetchall()
        count = conn.execute("SELECT count(*) FROM checkpoints").fetchone()[0]
        assert count == len(rows), (count, len(rows))
        assert all(len(r[5]) > 0 for r in rows)
    finally:
        conn.rollback()
    return count


def _inspect(db: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "shared.cli", "inspect", str(db), "--json"],
                          cwd=ROOT, capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize("mode", ["wal", "rollback"])
def test_read_while_another_process_writes(tmp_path: Path, mode: str) -> None:
    db = tmp_path / "live.sqlite"
    _make_db(db, mode)
    writer = subprocess.Popen([sys.executable, "-c", WRITER, str(db), mode], cwd=ROOT,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    errors: list[str] = []
    fresh: list[int] = []
    held_counts: list[int] = []
    inspected: list[subprocess.CompletedProcess[str]] = []
    try:
        assert writer.stdout is not None
        assert writer.stdout.readline() == "writing\n", writer.communicate()[1]
        held = open_checkpoint_db(db)  # one connection kept open across the writer's commits
        try:
            deadline = time.monotonic() + 8
            while time.monotonic() < deadline:
                try:
                    conn = open_checkpoint_db(db)
                    try:
                        fresh.append(_read_all(conn))
                    finally:
                        conn.close()
                    held_counts.append(_read_all(held))
                except Exception as exc:  # collected, asserted below
                    errors.append(f"{type(exc).__name__}: {exc}")
                if len(fresh) % 20 == 1:
                    inspected.append(_inspect(db))
        finally:
            held.close()
        assert writer.poll() is None, writer.communicate()[1]
    finally:
        writer.terminate()
        writer.communicate(timeout=30)
    assert errors == [], errors[:5]
    assert len(fresh) >= 10
    # The reads saw the writer's commits (not a frozen snapshot), and never went backwards.
    assert fresh == sorted(fresh) and fresh[-1] > fresh[0]
    assert held_counts == sorted(held_counts) and held_counts[-1] > held_counts[0]
    assert inspected
    for done in inspected:
        assert done.returncode == 0, done.stderr
        assert json.loads(done.stdout)["threads"]


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.mark.parametrize("mode", ["wal", "rollback"])
def test_quiet_file_left_as_it_was(tmp_path: Path, mode: str) -> None:
    """A quiet file (WAL mode with its -wal checkpointed away, or rollback journal): the
    reader, inspect and a SqliteSaver on the reader's connection create nothing, change
    nothing, and never switch the journal mode (SqliteSaver.setup asks for WAL)."""
    db = tmp_path / "quiet.sqlite"
    _make_db(db, mode, n=50)
    before, digest = sorted(os.listdir(tmp_path)), _digest(db)

    conn = open_checkpoint_db(db)
    assert _read_all(conn) == 50
    assert len(list(SqliteSaver(conn).list(None))) == 50  # what migrate and verify do
    conn.close()
    assert sorted(os.listdir(tmp_path)) == before
    done = _inspect(db)
    assert done.returncode == 0, done.stderr
    assert sorted(os.listdir(tmp_path)) == before
    assert _digest(db) == digest


def test_reader_closing_last_leaves_no_wal(tmp_path: Path) -> None:
    """A writer opens the WAL file while the reader holds it, and closes first: the reader,
    now the last connection, checkpoints and removes the -wal/-shm like any SQLite client."""
    db = tmp_path / "w.sqlite"
    _make_db(db, "wal", n=10)
    reader = open_checkpoint_db(db)
    assert _read_all(reader) == 10
    writer = sqlite3.connect(db)
    saver = SqliteSaver(writer)
    saver.put({"configurable": {"thread_id": "x", "checkpoint_ns": ""}}, empty_checkpoint(),
              {}, {})
    writer.close()
    assert Path(f"{db}-wal").exists()  # the writer was not last: its WAL stays
    assert _read_all(reader) == 11
    with pytest.raises(sqlite3.OperationalError, match="readonly"):
        reader.execute("DELETE FROM checkpoints")
    reader.close()
    assert sorted(os.listdir(tmp_path)) == ["w.sqlite"]
    with sqlite3.connect(db) as check:
        assert check.execute("SELECT count(*) FROM checkpoints").fetchone()[0] == 11
    check.close()
