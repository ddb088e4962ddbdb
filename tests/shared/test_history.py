"""shared/workloads/history.py: the loader's counts by SQL, readable by PostgresSaver, seeded."""

from __future__ import annotations

import psycopg
import pytest

from shared.errors import CheckpointError
from shared.savers import open_postgres_saver
from shared.workloads.history import (
    CHAT_WRITES,
    HistoryPlan,
    load_history,
    reference_filtered,
    reference_latest,
    reference_page,
)

N, T = 600, 60


def _count(url: str, table: str) -> int:
    with psycopg.connect(url) as conn:
        return conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0]


def test_counts_by_sql_and_official_reads(pg_db: str) -> None:
    report = load_history(pg_db, checkpoints=N, threads=T, progress=False)
    assert (report.checkpoints, report.threads, report.users) == (N, T, T // 10)
    assert _count(pg_db, "checkpoints") == N
    assert _count(pg_db, "checkpoint_writes") == report.writes > 0
    assert _count(pg_db, "checkpoint_blobs") == report.blobs > 0
    assert report.seconds > 0 and report.checkpoints_per_s > 0
    with psycopg.connect(pg_db) as conn:  # the recorded conversations were removed
        assert conn.execute("SELECT count(DISTINCT thread_id) FROM checkpoints").fetchone()[0] == T
        meta = conn.execute("SELECT metadata FROM checkpoints LIMIT 1").fetchone()[0]
    assert {"user_id", "session_type", "step", "source", "parents"} <= set(meta)
    plan = HistoryPlan(N, T, T // 10)
    with open_postgres_saver(pg_db) as saver:
        for thread in plan.plans[:10]:
            config = {"configurable": {"thread_id": thread.thread_id, "checkpoint_ns": ""}}
            latest = saver.get_tuple(config)
            assert latest.config["configurable"]["checkpoint_id"] == reference_latest(plan, thread)
            assert latest.metadata["user_id"] == thread.user_id
            messages = latest.checkpoint["channel_values"].get("messages", [])
            assert all(m.content for m in messages)  # real messages, loaded by the saver
            history = [t.config["configurable"]["checkpoint_id"] for t in saver.list(config)]
            assert history == reference_page(plan, thread, None, thread.length)
            for step, t in enumerate(reversed(list(saver.list(config)))):
                assert tuple(sorted(c for _, c, _ in t.pending_writes)) == CHAT_WRITES[step % 3]
                if step:
                    assert t.parent_config["configurable"]["checkpoint_id"] == history[-step]
        user = plan.plans[0].user_id
        found = [t.config["configurable"]["checkpoint_id"]
                 for t in saver.list(None, filter={"user_id": user}, limit=10)]
        assert found == reference_filtered(plan, {"user_id": user}, 10)


def test_deterministic_by_seed(pg_url: str) -> None:
    from shared.infra.postgres import create_database

    def keys(seed: int, name: str) -> list[tuple]:
        url = create_database(pg_url, name)
        load_history(url, checkpoints=200, threads=20, seed=seed, progress=False)
        with psycopg.connect(url) as conn:
            return conn.execute(
                "SELECT thread_id, checkpoint_id, parent_checkpoint_id, metadata FROM checkpoints "
                "ORDER BY 1, 2").fetchall()

    assert keys(7, "t_history_seed_a") == keys(7, "t_history_seed_b")
    assert keys(7, "t_history_seed_a") != keys(8, "t_history_seed_c")


def test_plan_shape() -> None:
    plan = HistoryPlan(5000, 500, 50, seed=1)
    assert sum(t.length for t in plan.plans) == 5000
    assert all(1 <= t.length <= 48 for t in plan.plans)
    ids = plan.ids(plan.plans[0])
    assert ids == sorted(ids) and len(set(ids)) == len(ids)  # uuid6 in time order
    owners = sorted((len(v) for v in plan.by_user.values()), reverse=True)
    assert owners[0] >= 5 * owners[len(owners) // 2]  # Zipf-like: a few users own many


def test_bad_scale() -> None:
    with pytest.raises(CheckpointError, match="each thread holds 1 to 48"):
        HistoryPlan(10, 100, 10)
