"""1.1 `m1_foundation/s1_sqlite_setup.py`: the witness, metric by metric."""

from __future__ import annotations

from tests.conftest import RunLesson


def test_1_1_sqlite_setup(lesson_run: RunLesson) -> None:
    w = lesson_run("m1_foundation.s1_sqlite_setup").witness
    assert w["tables_created"].value == 2
    assert w["journal_mode"].value == "wal"
    assert w["checkpoint_rows_after_one_turn"].value >= 1
    assert w["missing_dir_refused"].value is True
    assert w["files_created_by_refusal"].value == 0
    assert any("checkpoints(thread_id TEXT PK" in line for line in w.evidence)
    assert w.passed
