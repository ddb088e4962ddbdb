"""1.3 `m1_foundation/s3_time_travel.py`: the witness, metric by metric."""

from __future__ import annotations

from tests.conftest import RunLesson


def test_1_3_time_travel(lesson_run: RunLesson) -> None:
    w = lesson_run("m1_foundation.s3_time_travel").witness
    assert w["history_checkpoints"].value >= 5
    assert w["checkpoints_per_invoke"].value >= 2
    assert w["picked_is_turn_2_end"].value is True
    assert w["state_equals_recorded"].value is True
    assert w["fork_parent_is_picked"].value is True
    assert w["fork_new_checkpoints"].value >= 1
    assert w["fork_remembers_blue"].value is True
    assert w["original_head_values_unchanged"].value is True
    assert w["original_head_messages"].value == 10
    assert w["original_rows_changed"].value == 0
    assert w.passed
