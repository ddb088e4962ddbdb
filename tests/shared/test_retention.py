"""2.4 Pruning: the witness, the saver's conformance, DeltaChannel safety and ``ckpt prune``."""

from __future__ import annotations

import argparse
import hashlib
import json
import random
import signal
import sqlite3
import subprocess
import sys
from collections.abc import AsyncGenerator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TypedDict

import pytest
from langgraph.checkpoint.base import Checkpoint
from langgraph.checkpoint.base.id import uuid6
from langgraph.graph import START, StateGraph

from shared import ROOT
from shared.cli import main as ckpt
from shared.cli.prune import add_prune_command, cmd_prune
from shared.conformance import detected_capabilities, report_failures, run_conformance
from shared.errors import CheckpointError
from shared.ops import prune
from shared.savers.prunable import PrunableSqliteSaver, open_prunable_saver
from shared.workloads import chat_days
from shared.workloads.delta_graph import build_delta_graph, history

# --- the witness --------------------------------------------------------------------------


# --- the saver: conformance and LangGraph's prune semantics --------------------------------


def test_conformance_including_prune(tmp_path: Path) -> None:
    made = []

    async def factory() -> AsyncGenerator[PrunableSqliteSaver, None]:
        conn = sqlite3.connect(tmp_path / f"c{len(made)}.sqlite", check_same_thread=False)
        made.append(conn)
        saver = PrunableSqliteSaver(conn)
        saver.setup()
        yield saver
        conn.close()

    report = run_conformance("PrunableSqliteSaver", factory)
    assert report.passed_all(), report_failures(report)
    assert detected_capabilities(report) == ["delete_thread", "get_tuple", "list", "prune",
                                             "put", "put_writes"]


def test_prune_arguments_and_delete_strategy(tmp_path: Path) -> None:
    with open_prunable_saver(tmp_path / "c.sqlite") as saver:
        moment = datetime.now(UTC) - timedelta(days=3)
        for t in ("a", "b"):
            chat_days.write_chat_conversation(saver, t, moment, 2, random.Random(1))
        with pytest.raises(TypeError):
            saver.prune("a")
        with pytest.raises(ValueError, match="Unknown prune strategy"):
            saver.prune(["a"], strategy="oldest")
        saver.prune(["a"], strategy="delete")
        counts = dict(saver.conn.execute("SELECT thread_id, count(*) FROM checkpoints "
                                         "GROUP BY thread_id").fetchall())
        assert counts == {"b": 6}
        assert saver.conn.execute("SELECT count(*) FROM writes WHERE thread_id = 'a'"
                                  ).fetchone()[0] == 0


# --- DeltaChannel: a kept checkpoint must load with the value it had ----------------------


@pytest.mark.parametrize("how", ["keep_latest", "keep_last_2", "naive"])
def test_delta_channel_survives_prune(tmp_path: Path, how: str) -> None:
    with open_prunable_saver(tmp_path / "delta.sqlite") as saver:
        graph, config = build_delta_graph(saver), {"configurable": {"thread_id": "d"}}
        for i in range(6):
            graph.invoke({"n": i}, config)
        before = history(graph, config)
        assert graph.get_state(config).values["items"] == [0, 1, 2, 3, 4, 5]
        if how == "naive":  # the control: keep only the head row, as a naive keep_latest does
            head = graph.get_state(config).config["configurable"]["checkpoint_id"]
            saver.conn.execute("DELETE FROM writes WHERE checkpoint_id != ?", (head,))
            saver.conn.execute("DELETE FROM checkpoints WHERE checkpoint_id != ?", (head,))
            saver.conn.commit()
            assert graph.get_state(config).values["items"] == []  # silently lost
            return
        if how == "keep_latest":
            result = saver.prune_report(["d"])
        else:
            result = prune.prune_now(saver, prune.RetentionPolicy(keep_last=2))
        assert result is not None
        assert result.checkpoints_deleted > 0
        assert result.kept_reasons[prune.DELTA] > 0  # the ancestors back to the snapshot
        after = history(graph, config)
        assert len(after) == result.checkpoints_after < len(before)
        assert all(after[cid] == before[cid] for cid in after)  # every kept one, unchanged
        assert graph.get_state(config).values["items"] == [0, 1, 2, 3, 4, 5]
        graph.invoke({"n": 6}, config)  # and the thread goes on
        assert graph.get_state(config).values["items"] == [0, 1, 2, 3, 4, 5, 6]


# --- age, orphans, replanning, the hook ----------------------------------------------------


def test_uuid6_time_matches_langgraph_ids() -> None:
    t0 = datetime.now(UTC)
    made = str(uuid6(clock_seq=5))
    assert abs(prune.uuid6_time(made) - t0) < timedelta(seconds=1)
    assert prune.uuid6_at(t0 - timedelta(seconds=1)) < made < prune.uuid6_at(
        t0 + timedelta(seconds=5))
    moment = datetime(2025, 3, 1, 12, 30, 15, 123456, tzinfo=UTC)
    assert prune.uuid6_time(prune.uuid6_at(moment, clock_seq=7, node=99)) == moment
    assert prune.uuid6_time("not-a-uuid") is None
    assert prune.uuid6_time("0b1e6f2a-0000-4000-8000-000000000000") is None  # uuid4


def _put(saver: PrunableSqliteSaver, thread: str, cid: str, moment: datetime,
         parent: dict[str, Any] | None = None) -> dict[str, Any]:
    config = parent or {"configurable": {"thread_id": thread, "checkpoint_ns": ""}}
    ckpt = Checkpoint(v=4, id=cid, ts=moment.isoformat(), channel_values={"x": cid},
                      channel_versions={}, versions_seen={}, updated_channels=None)
    return saver.put(config, ckpt, {"source": "loop", "step": 0, "parents": {}}, {})


def test_orphans_non_uuid6_ids_replan_and_hook(tmp_path: Path) -> None:
    now = datetime.now(UTC)
    calls: list[bool] = []
    with open_prunable_saver(tmp_path / "c.sqlite") as saver:
        old = now - timedelta(days=40)
        cfg = _put(saver, "t", prune.uuid6_at(old), old)
        day = now - timedelta(days=1)
        cfg = _put(saver, "t", prune.uuid6_at(day), day, cfg)
        _put(saver, "legacy", "custom-id-1", old)  # not uuid6: age comes from its ts
        orphan = {"configurable": {"thread_id": "t", "checkpoint_ns": "",
                                   "checkpoint_id": prune.uuid6_at(now - timedelta(days=2))}}
        young = {"configurable": {"thread_id": "t", "checkpoint_ns": "",
                                  "checkpoint_id": prune.uuid6_at(now)}}
        saver.put_writes(orphan, [("x", 1)], "task-1")  # its checkpoint never existed
        saver.put_writes(young, [("x", 2)], "task-2")  # may still be on its way: stays
        policy = prune.RetentionPolicy(older_than=timedelta(days=30))
        plan = prune.plan_prune(saver.conn, policy, now=now)
        assert plan.ages_from_ts == 1 and plan.orphan_writes == 1 and len(plan.delete) == 2
        dry = prune.apply_prune(saver, plan, dry_run=True, after_prune=lambda c, d: calls.append(d))
        assert dry.checkpoints_deleted == 2 and calls == [True]
        # a checkpoint saved after planning is seen by the apply (which re-plans in its lock)
        _put(saver, "legacy", "custom-id-2", now, {"configurable": {
            "thread_id": "legacy", "checkpoint_ns": "", "checkpoint_id": "custom-id-1"}})
        done = prune.apply_prune(saver, plan, after_prune=lambda c, d: calls.append(d) or 7)
        assert calls == [True, False] and done.after_prune == 7
        assert done.replanned is True  # custom-id-2's parent goes: its link must be cut
        assert done.checkpoints_deleted == 2 and done.orphan_writes_deleted == 1
        assert done.parents_cut == 2
        counts = prune.audit_counts(saver.conn)
        assert counts["dangling_parent_links"] == 0
        assert saver.conn.execute("SELECT count(*) FROM writes").fetchone()[0] == 1  # young
        assert prune.prune_now(saver, policy, now=now).checkpoints_deleted == 0


def test_policy_refuses_nonsense() -> None:
    with pytest.raises(CheckpointError, match="needs --older-than, --keep-last or both"):
        prune.RetentionPolicy()
    with pytest.raises(CheckpointError, match="at least 1"):
        prune.RetentionPolicy(keep_last=0)
    with pytest.raises(CheckpointError, match="positive"):
        prune.RetentionPolicy(older_than=timedelta(0))


# --- the command line ----------------------------------------------------------------------


@pytest.fixture
def chat_db(tmp_path: Path) -> Path:
    db = tmp_path / "ckpt.sqlite"
    with open_prunable_saver(db) as saver:
        chat_days.write_chat_days(saver, datetime.now(UTC) - timedelta(days=45), 45, 1, seed=5)
    return db  # closed: the -wal is folded back into the file


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_cli_help() -> None:
    out = subprocess.run([sys.executable, "-m", "shared.cli", "prune", "--help"], cwd=ROOT,
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    for option in ("--older-than", "--keep-last", "--thread", "--dry-run", "--every", "--json"):
        assert option in out.stdout


def test_cli_dry_run_json_changes_nothing(chat_db: Path, capsys: pytest.CaptureFixture[str]
                                          ) -> None:
    digest, size = _digest(chat_db), chat_db.stat().st_size
    code = ckpt(["prune", str(chat_db), "--older-than", "30d", "--keep-last", "2",
                             "--dry-run", "--json"])
    result = json.loads(capsys.readouterr().out)
    assert code == 0
    assert result["dry_run"] is True and result["checkpoints_deleted"] > 0
    assert result["kept_reasons"]["newest 2 of thread"] > 0
    assert (_digest(chat_db), chat_db.stat().st_size) == (digest, size)

    code = ckpt(["prune", str(chat_db), "--older-than", "30d", "--keep-last", "2", "--json"])
    done = json.loads(capsys.readouterr().out)
    assert code == 0 and done["checkpoints_deleted"] == result["checkpoints_deleted"]
    assert done["file_bytes_after"] < done["file_bytes_before"]
    assert chat_db.stat().st_size < size


def test_cli_every_runs_again_and_deletes_nothing(chat_db: Path,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    code = ckpt(["prune", str(chat_db), "--older-than", "30d", "--every", "1s", "--runs",
                             "2", "--json"])
    runs = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert code == 0 and [r["run"] for r in runs] == [1, 2]
    assert runs[0]["checkpoints_deleted"] > 0 and runs[1]["checkpoints_deleted"] == 0


def test_cli_every_stops_on_ctrl_c(chat_db: Path) -> None:
    proc = subprocess.Popen([sys.executable, "-m", "shared.cli", "prune", str(chat_db),
                             "--older-than", "30d", "--every", "1h", "--json"], cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        first = json.loads(proc.stdout.readline())  # the first run is done; now it sleeps
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=30)
    finally:
        proc.kill()
    assert first["run"] == 1 and first["checkpoints_deleted"] > 0
    assert proc.returncode == 130
    assert err == "ckpt prune: stopped by Ctrl-C after 1 complete run(s).\n"


def test_cli_table_and_thread_filter(chat_db: Path, capsys: pytest.CaptureFixture[str]) -> None:
    thread = sqlite3.connect(chat_db).execute("SELECT min(thread_id) FROM checkpoints"
                                              ).fetchone()[0]
    assert ckpt(["prune", str(chat_db), "--keep-last", "1", "--thread", thread]) == 0
    out = capsys.readouterr().out
    assert "checkpoints deleted" in out and "file bytes" in out
    with sqlite3.connect(chat_db) as conn:
        per_thread = dict(conn.execute("SELECT thread_id, count(*) FROM checkpoints "
                                       "GROUP BY thread_id"))
    assert per_thread[thread] == 1 and max(per_thread.values()) > 1


@pytest.mark.parametrize("argv, message", [
    (["--older-than", "30x"], "is not a duration"),
    (["--older-than=-5d"], "is not a duration"),
    (["--older-than", "0d"], "longer than zero"),
    (["--keep-last", "-3"], "at least 1"),
    (["--keep-last", "two"], "at least 1"),
    ([], "Give --older-than, --keep-last or both"),
    (["--keep-last", "2", "--thread", "nobody"], "has no checkpoints"),
    (["--keep-last", "2", "--every", "soon"], "is not a duration"),
])
def test_cli_bad_input_one_line_exit_2(chat_db: Path, capsys: pytest.CaptureFixture[str],
                                       argv: list[str], message: str) -> None:
    digest = _digest(chat_db)
    assert ckpt(["prune", str(chat_db), *argv]) == 2
    err = capsys.readouterr().err
    assert err.startswith("ckpt: ") and message in err and err.count("\n") == 1
    assert _digest(chat_db) == digest


@pytest.mark.parametrize("kind", ["missing", "text", "no_tables", "directory"])
def test_cli_bad_database_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                 kind: str) -> None:
    path = tmp_path / "x.sqlite"
    if kind == "text":
        path.write_text("hello, not a database\n")
    elif kind == "no_tables":
        sqlite3.connect(path).execute("CREATE TABLE t (x)").connection.close()
    elif kind == "directory":
        path.mkdir()
    before = sorted(tmp_path.rglob("*"))
    assert ckpt(["prune", str(path), "--older-than", "30d"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("ckpt: ") and err.count("\n") == 1
    assert sorted(tmp_path.rglob("*")) == before  # nothing created


def test_add_prune_command_registers_on_ckpt_style_parser(chat_db: Path) -> None:
    parser = argparse.ArgumentParser(prog="ckpt")
    add_prune_command(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["prune", str(chat_db), "--keep-last", "3", "--dry-run"])
    assert args.func is cmd_prune and args.keep_last == "3" and args.dry_run


def test_ckpt_prune_gc_s3_end_to_end(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                     capsys: pytest.CaptureFixture[str]) -> None:
    """`ckpt prune --gc-s3` through the real ckpt entry point, against moto over HTTP."""
    import random

    from shared import cli
    from shared.infra.s3 import s3_client, s3_server
    from shared.savers.offload import OffloadingSerializer, S3BlobStore
    from shared.savers.prunable import open_prunable_saver

    class Upload(TypedDict):
        attachment: bytes

    db = tmp_path / "gc.sqlite"
    with s3_server(bucket="ckpt-cli-gc") as s3:
        store = S3BlobStore(s3_client(s3), s3.bucket)
        with open_prunable_saver(db, serde=OffloadingSerializer(store=store)) as saver:
            graph = StateGraph(Upload).add_node("keep", lambda s: {})
            graph = graph.add_edge(START, "keep").compile(checkpointer=saver)
            for seed in (11, 12):
                graph.invoke({"attachment": random.Random(seed).randbytes(300 * 1024)},
                             {"configurable": {"thread_id": "u"}})
        assert len(store.keys()) == 2
        for key, value in (("S3_ENDPOINT_URL", s3.endpoint_url), ("CKPT_S3_BUCKET", s3.bucket),
                           ("AWS_ACCESS_KEY_ID", s3.access_key_id or "testing"),
                           ("AWS_SECRET_ACCESS_KEY", s3.secret_access_key or "testing")):
            monkeypatch.setenv(key, value)
        argv = ["prune", str(db), "--keep-last", "1", "--gc-s3", "--gc-grace", "1s", "--json"]
        import time
        time.sleep(1.1)  # past the grace period
        assert cli.main([*argv, "--dry-run"]) == 0
        assert json.loads(capsys.readouterr().out)["after_prune"] == []  # nothing unreferenced yet
        assert len(store.keys()) == 2
        assert cli.main(argv) == 0
        assert len(json.loads(capsys.readouterr().out)["after_prune"]) == 1
        assert len(store.keys()) == 1


def test_ckpt_prune_gc_s3_without_endpoint(chat_db: Path, monkeypatch: pytest.MonkeyPatch,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.delenv("S3_ENDPOINT_URL", raising=False)
    digest = _digest(chat_db)
    assert ckpt(["prune", str(chat_db), "--keep-last", "2", "--gc-s3"]) == 2
    err = capsys.readouterr().err
    assert "--gc-s3 needs S3_ENDPOINT_URL" in err and err.count("\n") == 1
    assert _digest(chat_db) == digest
