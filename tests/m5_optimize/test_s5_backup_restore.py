"""5.5 `m5_optimize/s5_backup_restore.py`: the witness, metric by metric."""

from __future__ import annotations

from tests.conftest import RunLesson


def test_5_5_backup_restore(lesson_run: RunLesson, pg_url: str) -> None:  # server first
    # 2 chat workers, 0.7 s of traffic before ckpt backup --verify and 0.7 s after it
    w = lesson_run("m5_optimize.s5_backup_restore").witness
    assert w["backup_exit_status"].value == 0
    assert w["backup_verified"].value is True
    assert w["snapshot_checkpoints_verified"].value > 0
    assert w["snapshot_mismatches"].value == 0
    assert w["restore_exit_status"].value == 0
    assert w["restored_vs_source_missing"].value == 0
    assert w["restored_vs_source_other_differences"].value == 0
    assert w["writes_after_snapshot_on_raced_turns"].value <= w["turns_raced_snapshot"].value
    assert w["restored_vs_source_later_checkpoints"].value > 0
    assert w["traffic_errors"].value == 0
    assert w["turns_acked_before_snapshot"].value > 0
    assert w["acked_before_missing"].value == 0
    assert w["turns_started_after_snapshot"].value > 0
    assert w["started_after_present"].value == 0
    assert w["corrupted_restore_exit_status"].value == 2
    assert w["corrupted_refusal_names_digest"].value is True
    assert w["corrupted_target_tables"].value == 0
    assert w["dump_seconds"].value > 0
    assert w["backup_bytes"].value > 0
    assert any("fsync=off" in line or "fsync=on" in line for line in w.evidence)
    assert w.passed
