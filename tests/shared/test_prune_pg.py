"""``ckpt prune URL``: retention on PostgresSaver's tables (shared.savers.retention_pg)."""

from __future__ import annotations

import json
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import psycopg
import pytest
from langgraph.checkpoint.postgres import PostgresSaver

from shared.cli import main as ckpt
from shared.ops.migrate import migrate
from shared.ops.prune import plan_prune
from shared.ops.prune_pg import audit_counts, prune_url, row_digests
from shared.savers import open_postgres_saver
from shared.savers.prunable import open_prunable_saver
from shared.savers.retention import DELTA, RetentionPolicy
from shared.savers.retention_pg import make_batches, plan_pg, prune_pg
from shared.workloads.chat_days import write_chat_days
from shared.workloads.delta_graph import build_delta_graph, history

NOW = datetime.now(UTC)


@pytest.fixture
def chat_pg(pg_db: str) -> str:
    """20 days of chat traffic (3 conversations a day) in a PostgresSaver database."""
    with open_postgres_saver(pg_db, setup=True) as saver:
        write_chat_days(saver, NOW - timedelta(days=20, hours=-1), 20, 3, seed=2)
    return pg_db


def test_dry_run_changes_nothing_and_json(chat_pg: str, capsys: pytest.CaptureFixture[str]
                                          ) -> None:
    with psycopg.connect(chat_pg, autocommit=True) as conn:
        before = row_digests(conn)
        assert ckpt(["prune", chat_pg, "--older-than", "10d", "--keep-last", "2", "--dry-run",
                     "--json"]) == 0
        assert row_digests(conn) == before
        out = json.loads(capsys.readouterr().out)
        assert out["dry_run"] is True and out["checkpoints_deleted"] > 0
        assert out["blobs_deleted"] > 0 and out["batches"] == 0
        assert ckpt(["prune", chat_pg, "--older-than", "10d", "--keep-last", "2", "--json"]) == 0
        done = json.loads(capsys.readouterr().out)
        assert (done["checkpoints_deleted"], done["blobs_deleted"], done["writes_deleted"]) == (
            out["checkpoints_deleted"], out["blobs_deleted"], out["writes_deleted"])
        assert done["checkpoints_after"] == done["checkpoints_before"] - done[
            "checkpoints_deleted"]
        assert audit_counts(conn) == {"orphan_blobs": 0, "orphan_writes": 0,
                                      "dangling_parent_links": 0}


@pytest.mark.parametrize("policy", [RetentionPolicy(timedelta(days=7), 2),
                                    RetentionPolicy(timedelta(days=7)),
                                    RetentionPolicy(keep_last=3)])
def test_same_plan_as_the_sqlite_engine(tmp_path: Path, pg_db: str,
                                        policy: RetentionPolicy) -> None:
    """The same history in SQLite and (migrated) in PostgreSQL: the same checkpoints go, for
    the same reasons. A DeltaChannel thread may lose more in PostgreSQL, never less: there a
    checkpoint after a snapshot whose channel version did not change still references the
    snapshot's blob, so the snapshot's own checkpoint is not needed to load it."""
    with open_prunable_saver(tmp_path / "src.sqlite") as src:
        write_chat_days(src, NOW - timedelta(days=14, hours=-1), 14, 2, seed=4)
        graph, config = build_delta_graph(src), {"configurable": {"thread_id": "delta"}}
        for i in range(9):
            graph.invoke({"n": i}, config)
        lite = plan_prune(src.conn, policy, now=NOW)
        with PostgresSaver.from_conn_string(pg_db) as pg:
            pg.setup()
            migrate(src, pg)
            before = history(build_delta_graph(pg), config)
    with psycopg.connect(pg_db, autocommit=True) as conn:
        plan = plan_pg(conn, policy, now=NOW)

    def chat(keys: object) -> list:
        return [k for k in keys if k[0] != "delta"]  # type: ignore[attr-defined]

    assert chat(plan.delete) == chat(lite.delete) and chat(plan.delete)
    assert {k: r for k, r in plan.keep_reasons.items() if k[0] != "delta"} == {
        k: r for k, r in lite.keep_reasons.items() if k[0] != "delta"}
    assert chat(plan.cut_parents) == chat(lite.cut_parents)
    extra = set(plan.delete) - set(lite.delete)
    assert set(lite.delete) <= set(plan.delete)
    assert all(lite.keep_reasons[k] == DELTA for k in extra)
    result = prune_url(pg_db, policy, now=NOW)
    with PostgresSaver.from_conn_string(pg_db) as pg:
        after = history(build_delta_graph(pg), config)
    assert result.checkpoints_deleted == len(plan.delete)
    assert after and all(after[k] == before[k] for k in after)  # every kept one, unchanged


def test_delta_channel_thread_loads_the_same_after_prune(pg_db: str) -> None:
    with open_postgres_saver(pg_db, setup=True) as saver:
        graph, config = build_delta_graph(saver), {"configurable": {"thread_id": "d"}}
        for i in range(6):
            graph.invoke({"n": i}, config)
        before = history(graph, config)
        result = prune_url(pg_db, RetentionPolicy(keep_last=2))
        after = history(graph, config)
    assert result.kept_reasons[DELTA] > 0 and result.blobs_deleted > 0
    assert len(after) == result.checkpoints_after < len(before)
    assert all(after[k] == before[k] for k in after)


def test_a_locked_row_times_out_and_the_batch_is_retried(chat_pg: str) -> None:
    """Another session holds a row lock on a checkpoint the prune deletes: the batch gives
    up after lock_timeout, rolls back, and succeeds once the lock is gone; no error."""
    policy = RetentionPolicy(timedelta(days=10), 2)
    with psycopg.connect(chat_pg, autocommit=True) as conn, psycopg.connect(chat_pg) as holder:
        victim = plan_pg(conn, policy, now=NOW).delete[0]
        holder.execute("SELECT 1 FROM checkpoints WHERE thread_id = %s AND checkpoint_ns = %s "
                       "AND checkpoint_id = %s FOR UPDATE", victim)  # an open transaction
        release = threading.Timer(0.8, holder.commit)
        release.start()
        try:
            started = time.perf_counter()
            result = prune_pg(conn, policy, now=NOW, batch_size=100, lock_timeout_ms=100)
        finally:
            release.join()
        assert result.retries > 0 and result.batches > 1
        assert time.perf_counter() - started >= 0.5  # it did wait for the lock to go
        gone = conn.execute("SELECT count(*) FROM checkpoints WHERE thread_id = %s AND "
                            "checkpoint_ns = %s AND checkpoint_id = %s", victim).fetchone()[0]
        assert gone == 0 and audit_counts(conn)["orphan_blobs"] == 0


def test_batches_keep_namespaces_whole_when_they_fit() -> None:
    keys = [(t, "", f"{i:03d}") for t in "abc" for i in range(4)] + [("d", "", f"{i:03d}")
                                                                    for i in range(9)]
    batches = make_batches(keys, 5)
    assert sorted(k for b in batches for k in b) == sorted(keys)
    assert all(len(b) <= 5 for b in batches)
    assert [len({k[0] for k in b}) for b in batches[:3]] == [1, 1, 1]


def test_bad_input_is_one_sentence_with_the_password_masked(
        pg_url: str, pg_db: str, capsys: pytest.CaptureFixture[str]) -> None:
    secret = pg_url.replace("postgres@", "postgres:Sup3rSecretPw@").rsplit("/", 1)[0]
    for target, words in ((f"{secret}/no_such_db", "Could not connect"),
                          (pg_db, "has no LangGraph checkpoint tables"),
                          ("postgresql://u:Sup3rSecretPw@", "is not a PostgreSQL URL")):
        assert ckpt(["prune", target, "--keep-last", "2"]) == 2
        err = capsys.readouterr().err
        assert words in err and "Sup3rSecretPw" not in err, err
        assert len(err.strip().splitlines()) == 1
    assert ckpt(["prune", pg_db, "--keep-last", "2", "--gc-s3"]) == 2
    assert "drop --gc-s3" in capsys.readouterr().err
