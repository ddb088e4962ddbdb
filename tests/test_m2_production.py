"""Milestone 2: each witness script run in a temp dir; every metric asserted on its own."""

from __future__ import annotations

from pathlib import Path

from shared.savers import open_sqlite_saver
from shared.savers.sqlite_filters import create_metadata_indexes, metadata_expression
from shared.workloads.bulk import bulk_put, tagged_checkpoints
from tests.conftest import RunLesson


def test_2_1_async_concurrency(lesson_run: RunLesson) -> None:
    w = lesson_run("m2_production.s1_async_concurrency").witness  # n=10
    assert w["speedup_n10"].value >= 9
    assert 1 < w["speedup_n10_median"].value <= w["speedup_n10"].value  # best round >= median
    assert w["errors"].value == 0
    assert w["database_locked_errors"].value == 0
    assert w["threads_saved"].value == 40  # 2 rounds x (10 one after another + 10 at once)
    assert w["errors_no_io"].value == 0
    # the no-I/O node cannot overlap anything: far below the I/O-bound speed-up
    assert w["speedup_n10_no_io"].value < w["speedup_n10"].value / 2
    for procs in (1, 2, 4, 8):
        for label in ("default", "short"):
            prefix = f"procs{procs}.{label}_timeout"
            assert w[f"{prefix}.writes_per_s"].value > 0
            assert w[f"{prefix}.other_errors"].value == 0
            assert w[f"{prefix}.p99_ms"].value > 0
        assert w[f"procs{procs}.default_timeout.lock_errors"].value == 0
    assert w["procs1.short_timeout.lock_errors"].value == 0  # one writer never waits
    assert w["short_timeout_lock_errors_total"].value > 0
    assert w.passed


def test_2_3_metadata_filtering(lesson_run: RunLesson) -> None:
    w = lesson_run("m2_production.s3_metadata_filtering").witness  # 20,000 checkpoints
    assert w["checkpoints"].value == 20_000
    assert w["result_sets_wrong"].value == 0
    assert w["result_sets_wrong_with_indexes"].value == 0
    for name in ("one_tag", "intersection", "step_across_threads", "within_thread"):
        assert w[f"{name}.index_used_after"].value is True
        if name != "within_thread":
            assert w[f"{name}.full_scan_before"].value is True
    for name in ("one_tag", "intersection", "within_thread"):
        assert w[f"{name}.query_p99_after_ms"].value < 5
    for name in ("intersection", "within_thread"):
        assert w[f"{name}.list_p99_after_ms"].value < 5
    # side by side in one run: the indexed query beats the scan
    assert w["intersection.query_speedup"].value > 5
    assert any("SCAN checkpoints" in line for line in w.evidence)
    assert any("USING INDEX ix_checkpoints_meta_user_id" in line for line in w.evidence)
    assert w.passed


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

