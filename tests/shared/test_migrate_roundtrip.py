"""shared/ops/migrate.py: SQLite -> PostgreSQL -> SQLite through the public API, verified."""

from __future__ import annotations

from pathlib import Path

import pytest
from langgraph.checkpoint.postgres import PostgresSaver
from langgraph.types import Command

from shared.graph import Ledger, build_approval_graph, build_chat_graph, build_pipeline_graph
from shared.ops.migrate import migrate, thread_ids, verify
from shared.savers import open_sqlite_saver


@pytest.fixture
def source(tmp_path: Path):
    ledger = Ledger(tmp_path / "ledger.jsonl")
    with open_sqlite_saver(tmp_path / "src.sqlite") as src:
        chat = build_chat_graph(src)
        for i in range(5):
            for text in ("Hi, my name is Alice.", "I live in Lisbon."):
                chat.invoke({"messages": [("user", text)]},
                            {"configurable": {"thread_id": f"c{i}"}})
        build_approval_graph(src, ledger, "interrupt").invoke(
            {"request": "Refund order 7 for 30 EUR"}, {"configurable": {"thread_id": "paused"}})
        build_pipeline_graph(src, ledger).invoke({"doc": "d", "completed": []},
                                                 {"configurable": {"thread_id": "pipe"}})
        yield src, ledger


def test_sqlite_to_postgres_and_back(source, pg_db: str, tmp_path: Path) -> None:
    src, ledger = source
    with PostgresSaver.from_conn_string(pg_db) as pg:
        pg.setup()
        report = migrate(src, pg, progress_file=tmp_path / "progress.json")
        assert report.threads == 7 and report.threads_skipped == 0
        assert report.checkpoints == src.conn.execute("SELECT count(*) FROM checkpoints"
                                                      ).fetchone()[0]
        check = verify(src, pg)
        assert (check.missing, check.mismatches) == (0, 0), check.examples
        again = migrate(src, pg, progress_file=tmp_path / "progress.json")
        assert (again.threads, again.threads_skipped) == (0, 7)  # resumable: nothing redone

        # migrated threads carry on, on PostgreSQL, with their memory
        out = build_chat_graph(pg).invoke({"messages": [("user", "What's my name?")]},
                                          {"configurable": {"thread_id": "c3"}})
        assert out["messages"][-1].content == "Your name is Alice."
        result = build_approval_graph(pg, ledger, "interrupt").invoke(
            Command(resume={"approved": True, "amount": 12}),
            {"configurable": {"thread_id": "paused"}})
        assert result["result"] == "executed Refund order 7 for 12.00"

        # the rollback plan: PostgreSQL back to a fresh SQLite file
        with open_sqlite_saver(tmp_path / "back.sqlite") as back:
            migrate(pg, back)
            assert thread_ids(back) == thread_ids(pg)
            check = verify(pg, back)
            assert (check.missing, check.mismatches) == (0, 0), check.examples


def test_verify_finds_a_difference(source, tmp_path: Path) -> None:
    src, _ = source
    with open_sqlite_saver(tmp_path / "copy.sqlite") as copy:
        migrate(src, copy)
        copy.conn.execute("DELETE FROM writes WHERE thread_id = 'c1'")
        copy.conn.execute("DELETE FROM checkpoints WHERE rowid IN (SELECT rowid FROM "
                          "checkpoints WHERE thread_id = 'c2' LIMIT 1)")
        copy.conn.commit()
        check = verify(src, copy)
        assert check.missing == 1
        assert check.mismatches >= 1
        assert any("pending_writes differ" in e for e in check.examples)
