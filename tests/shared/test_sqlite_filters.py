"""Milestone 2: each witness script run in a temp dir; every metric asserted on its own."""

from __future__ import annotations

from pathlib import Path

from shared.savers import open_sqlite_saver
from shared.savers.sqlite_filters import create_metadata_indexes, metadata_expression
from shared.workloads.bulk import bulk_put, tagged_checkpoints


def test_bulk_rows_are_what_put_writes(tmp_path: Path) -> None:
    item = next(tagged_checkpoints(1, 1, 1))
    with open_sqlite_saver(tmp_path / "a.sqlite") as a, \
            open_sqlite_saver(tmp_path / "b.sqlite") as b:
        bulk_put(a, [item])
        b.put({"configurable": {"thread_id": item.thread_id, "checkpoint_ns": ""}},
              item.checkpoint, item.metadata, {})
        sql = "SELECT * FROM checkpoints"
        assert a.conn.execute(sql).fetchall() == b.conn.execute(sql).fetchall()


def test_index_expression_matches_saver_filter(tmp_path: Path) -> None:
    from langgraph.checkpoint.sqlite.utils import search_where
    where, _ = search_where(None, {"user_id": "x"})
    assert metadata_expression("user_id") in where
    with open_sqlite_saver(tmp_path / "c.sqlite") as saver:
        import pytest

        from shared.errors import CheckpointError
        with pytest.raises(CheckpointError, match="cannot be indexed"):
            create_metadata_indexes(saver.conn, ["user_id') --"])

