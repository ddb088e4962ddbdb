"""op_mix: the five operations from several processes, pooled or a connection per call;
pg_stat_statements: what the server spent its time on."""

from __future__ import annotations

from pathlib import Path

import psycopg
import pytest
from langgraph.checkpoint.postgres import PostgresSaver

from shared.graph import build_chat_graph
from shared.llm import OfflineChatModel
from shared.ops.pg_statements import enable_statements, reset_statements, top_statements
from shared.savers.serde import graph_serde
from shared.workloads.op_mix import (
    ALL_OPS,
    OPS,
    PAGES,
    WARMUP_TURNS,
    measure_op_mix,
    sample_targets,
)
from shared.workloads.postgres_writers import pg_pool, setup_postgres


@pytest.fixture
def chats(pg_db: str) -> str:
    setup_postgres(pg_db)
    with pg_pool(pg_db) as pool:
        graph = build_chat_graph(PostgresSaver(pool, serde=graph_serde()), OfflineChatModel())
        for t in range(12):
            config = {"configurable": {"thread_id": f"t{t}"}, "metadata": {"user_id": f"u{t % 3}"}}
            for turn in range(2):
                graph.invoke({"messages": [("user", f"turn {turn}")]}, config)
    return pg_db


def _sessions(url: str) -> int:
    with psycopg.connect(url) as conn:
        return conn.execute("SELECT sessions FROM pg_stat_database WHERE datname = "
                            "current_database()").fetchone()[0]


def test_sample_targets_finds_threads_and_their_users(chats: str) -> None:
    threads, user_of = sample_targets(chats, 5)
    assert len(threads) == 5 and len(set(threads)) == 5
    assert set(user_of) == set(threads)  # every user owns few checkpoints: all selective
    assert set(user_of.values()) <= {"u0", "u1", "u2"}
    _, selective = sample_targets(chats, 12, max_user_checkpoints=20)
    assert selective == {}  # each user owns 4 threads x 6 checkpoints: none under 20


@pytest.mark.parametrize("mode", ["pool", "connect"])
def test_every_operation_is_timed_and_a_pool_opens_few_connections(
        chats: str, tmp_path: Path, mode: str) -> None:
    threads, user_of = sample_targets(chats, 12)
    with psycopg.connect(chats) as conn:
        before_rows = conn.execute("SELECT count(*) FROM checkpoints").fetchone()[0]
    sessions = _sessions(chats)
    out = measure_op_mix(chats, tmp_path, mode=mode, processes=2, seconds=0.8, rate=10,
                         thread_ids=threads, user_of=user_of, start_delay_s=0.3)
    opened = _sessions(chats) - sessions - 1  # minus our own reading session
    assert out["errors"] == 0, out["examples"]
    assert out["turns"] >= 4
    assert all(len(out["times"][op]) == out["turns"] for op in OPS if op not in PAGES)
    # a page of 10 checkpoints of long conversations is timed apart, never lost
    assert len(out["times"]["list"]) + len(out["times"]["list_long"]) == out["turns"]
    assert all(v > 0 for op in ALL_OPS for v in out["times"][op])
    with psycopg.connect(chats) as conn:  # every turn stored one checkpoint
        after_rows = conn.execute("SELECT count(*) FROM checkpoints").fetchone()[0]
    assert after_rows - before_rows == out["turns"] + 2 * WARMUP_TURNS  # and untimed turns
    if mode == "pool":
        assert opened <= 2 * 2  # at most the pools' max_size per process
    else:
        assert opened >= len(OPS) * out["turns"]  # one connection per call


def test_top_statements_name_the_checkpoint_queries(chats: str) -> None:
    assert enable_statements(chats) is True
    reset_statements(chats)
    with PostgresSaver.from_conn_string(chats) as saver:
        for _ in range(5):
            list(saver.list({"configurable": {"thread_id": "t1"}}, limit=3))
    db = chats.rsplit("/", 1)[1]
    top = top_statements(chats, 5, [db])
    assert top and all(s.database == db for s in top)
    assert any("from checkpoints" in s.query.lower() and s.calls >= 5 for s in top)
    assert top == sorted(top, key=lambda s: -s.total_ms)
    assert "calls" in top[0].line()
