"""shared/ops/backup.py and ``ckpt backup`` / ``ckpt restore``: round trip, refusals, exit codes."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import psycopg
import pytest

from shared import ROOT
from shared.errors import CheckpointError
from shared.graph import build_chat_graph
from shared.infra.postgres import create_database
from shared.ops.backup import DUMP, MANIFEST, TABLES, backup, read_manifest, restore, verify_backup
from shared.ops.verify import row_digests, verify
from shared.savers.postgres import open_postgres_saver
from shared.workloads.postgres_writers import setup_postgres

DEAD = "postgresql://app:hunter2-secret@127.0.0.1:1/agents"  # nothing listens on port 1


def _fill(url: str, turns: int = 6) -> None:
    setup_postgres(url)
    with open_postgres_saver(url) as saver:
        graph = build_chat_graph(saver)
        for i in range(turns):
            graph.invoke({"messages": [("user", f"turn {i}")]},
                         {"configurable": {"thread_id": f"t{i % 3}"}})


def _ckpt(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "shared.cli", *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=120)


@pytest.fixture
def source(pg_db: str) -> str:
    _fill(pg_db)
    return pg_db


def test_round_trip_equal_by_verify(source: str, pg_url: str, tmp_path: Path) -> None:
    manifest = backup(source, tmp_path / "b")
    assert manifest.tables["checkpoints"] == 18  # 3 per turn (input, then the two steps)
    assert set(manifest.tables) == set(TABLES)
    saved = json.loads((tmp_path / "b" / MANIFEST).read_text())
    assert saved["sha256"] == manifest.sha256 and saved["size_bytes"] > 0
    target = create_database(pg_url, "t_backup_round_trip_target")
    done = restore(tmp_path / "b", target)
    assert done.tables == manifest.tables
    with open_postgres_saver(source) as src, open_postgres_saver(target) as dst:
        report = verify(src, dst)
        assert report.ok and report.checkpoints == manifest.tables["checkpoints"]
        assert row_digests(src) == row_digests(dst)
    check = verify_backup(tmp_path / "b", pg_url, source_url=source)
    assert check.ok, check.problems
    assert check.verify is not None and check.verify["mismatches"] == 0
    with psycopg.connect(pg_url) as conn:  # the scratch database was dropped
        left = conn.execute("SELECT count(*) FROM pg_database WHERE datname LIKE "
                            "'ckpt_verify_%'").fetchone()[0]
    assert left == 0


def test_flipped_byte_refused(source: str, pg_url: str, tmp_path: Path) -> None:
    manifest = backup(source, tmp_path / "b")
    dump = tmp_path / "b" / DUMP
    data = bytearray(dump.read_bytes())
    data[len(data) // 2] ^= 0x01
    dump.write_bytes(data)
    target = create_database(pg_url, "t_backup_flipped_target")
    with pytest.raises(CheckpointError) as err:
        restore(tmp_path / "b", target)
    message = str(err.value)
    assert str(dump) in message and manifest.sha256 in message and "corrupted" in message
    assert "\n" not in message
    with psycopg.connect(target) as conn:  # nothing was restored
        assert conn.execute("SELECT count(*) FROM information_schema.tables WHERE "
                            "table_schema = 'public'").fetchone()[0] == 0


def test_target_with_data_refused_and_unchanged(source: str, tmp_path: Path) -> None:
    backup(source, tmp_path / "b")
    with open_postgres_saver(source) as saver:
        before = row_digests(saver)
    with pytest.raises(CheckpointError, match="already holds checkpoint tables"):
        restore(tmp_path / "b", source)
    with open_postgres_saver(source) as saver:
        assert row_digests(saver) == before


def test_not_a_backup_refused(tmp_path: Path) -> None:
    (tmp_path / "x").mkdir()
    (tmp_path / "x" / "notes.txt").write_text("hello")
    with pytest.raises(CheckpointError, match="is not a checkpoint backup"):
        read_manifest(tmp_path / "x")
    (tmp_path / "x" / MANIFEST).write_text("{not json")
    with pytest.raises(CheckpointError, match="is not a checkpoint backup"):
        read_manifest(tmp_path / "x")


def test_backup_into_non_empty_dir_refused(source: str, tmp_path: Path) -> None:
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "keep.txt").write_text("mine")
    with pytest.raises(CheckpointError, match="not an empty directory"):
        backup(source, tmp_path / "b")
    assert (tmp_path / "b" / "keep.txt").read_text() == "mine"


def test_password_masked_unreachable(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError) as err:
        backup(DEAD, tmp_path / "b")
    assert "hunter2" not in str(err.value) and "***" in str(err.value)
    assert not (tmp_path / "b").exists()
    out = _ckpt("backup", DEAD, str(tmp_path / "b"))
    assert out.returncode == 2
    assert "hunter2" not in out.stderr + out.stdout and "Could not connect" in out.stderr


def test_cli_exit_codes(source: str, pg_url: str, tmp_path: Path) -> None:
    assert _ckpt("backup", "--help").returncode == 0
    assert _ckpt("restore", "--help").returncode == 0
    ok = _ckpt("backup", source, str(tmp_path / "b"), "--verify")
    assert ok.returncode == 0, ok.stderr
    assert "verified:" in ok.stdout and "0 differences" in ok.stdout
    target = create_database(pg_url, "t_backup_cli_target")
    done = _ckpt("restore", str(tmp_path / "b"), target, "--verify")
    assert done.returncode == 0, done.stderr
    again = _ckpt("restore", str(tmp_path / "b"), target)
    assert again.returncode == 2 and "already holds checkpoint tables" in again.stderr
    assert len(again.stderr.strip().splitlines()) == 1
    empty = tmp_path / "empty"
    empty.mkdir()
    nob = _ckpt("restore", str(empty), target)
    assert nob.returncode == 2 and "is not a checkpoint backup" in nob.stderr
    # verification failed: the manifest's counts disagree with what the dump holds (exit 1)
    manifest = json.loads((tmp_path / "b" / MANIFEST).read_text())
    manifest["tables"]["checkpoints"] += 1
    (tmp_path / "b" / MANIFEST).write_text(json.dumps(manifest))
    other = create_database(pg_url, "t_backup_cli_target2")
    bad = _ckpt("restore", str(tmp_path / "b"), other, "--verify")
    assert bad.returncode == 1 and "verification FAILED" in bad.stdout


def test_client_tools_get_the_password_in_the_environment_not_the_command_line(
        monkeypatch: pytest.MonkeyPatch) -> None:
    import subprocess

    from shared.ops import backup as backup_module

    seen: dict[str, object] = {}

    def fake_run(cmd: list[str], **kwargs: object) -> subprocess.CompletedProcess[str]:
        seen["cmd"], seen["env"] = cmd, kwargs["env"]
        return subprocess.CompletedProcess(cmd, 0, "", "")

    monkeypatch.setattr(backup_module.subprocess, "run", fake_run)
    url = "postgresql://app:s3cr%40t@127.0.0.1:5432/agents"
    backup_module._tool("pg_dump", ["-Fc", f"--dbname={url}"], url)
    assert not any("s3cr" in part for part in seen["cmd"])  # ps shows a command line
    assert "--dbname=postgresql://app@127.0.0.1:5432/agents" in seen["cmd"]
    assert seen["env"]["PGPASSWORD"] == "s3cr@t"
