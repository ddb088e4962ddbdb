"""5.7 `m5_optimize/s7_retries.py`: the witness, metric by metric."""

from __future__ import annotations

from tests.conftest import RunLesson


def test_5_7_retries(lesson_run: RunLesson) -> None:
    # 3 SIGKILLs, each 1 s down then restarted; 2 workers per arm, retries=20, cap 2 s
    w = lesson_run("m5_optimize.s7_retries").witness
    assert w.error is None, w.error
    assert w["server_fsync_on"].value is True  # a durability claim: fsync=on, printed
    assert w["kills"].value == 3
    assert w["outage_longest_s"].value >= 1.0  # each outage includes the 1 s down
    assert w["invocations_with_wrapper"].value > 0
    assert w["failed_with_wrapper"].value == 0
    assert w["failed_without_wrapper"].value > 0
    assert w["invocations_without_wrapper"].value > 0
    assert w["retries"].value > 0
    assert w["acknowledged_checkpoints"].value > 0
    assert w["acknowledged_lost_with_wrapper"].value == 0
    assert w["acknowledged_lost_without_wrapper"].value == 0
    assert w["duplicate_messages"].value == 0
    assert w["duplicate_checkpoint_steps"].value == 0
    assert w["conversations_unlike_their_turns"].value == 0
    assert w["conversations_checked"].value > 0
    assert any("SIGKILLs" in line for line in w.evidence)
    assert w.passed
