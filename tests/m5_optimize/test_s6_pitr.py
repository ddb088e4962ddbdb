"""5.6 `m5_optimize/s6_pitr.py`: the witness, metric by metric."""

from __future__ import annotations

from tests.conftest import RunLesson


def test_5_6_pitr(lesson_run: RunLesson) -> None:
    # its own primary (fsync on, WAL archived to a directory and S3): a "day" of 24 x 0.25 s,
    # the bad prune in "hour" 16
    w = lesson_run("m5_optimize.s6_pitr").witness
    assert w["server_fsync"].value == "on"
    assert w["server_synchronous_commit"].value == "on"
    assert w["s3_archived_segments"].value > 0
    assert w["s3_files_differing_from_local_archive"].value == 0
    assert w["traffic_errors"].value == 0
    assert w["turns_acked_before_target"].value > 0
    assert w["acked_before_target_missing"].value == 0
    assert w["turns_started_after_target"].value > 0
    assert w["started_after_target_present"].value == 0
    assert w["restored_checkpoints_compared"].value > 0
    assert w["restored_not_on_primary_before_mistake"].value == 0
    assert w["restored_differences"].value == 0
    assert w["turns_raced_target"].value <= 2  # at most one turn a worker
    assert w["writes_after_target_on_raced_turns"].value <= w["turns_raced_target"].value
    assert w["rpo_acked_work_lost_s"].value == 0
    assert 0 <= w["rpo_target_to_last_replayed_commit_ms"].value <= 1000
    assert w["rpo_replay_stopped_before_target"].value is True
    assert w["rto_fetch_from_s3_s"].value > 0
    assert w["rto_verify_s"].value > 0
    assert w["rto_copy_s"].value > 0
    assert w["rto_replay_s"].value > 0
    parts = ("rto_fetch_from_s3_s", "rto_verify_s", "rto_copy_s", "rto_replay_s")
    assert abs(w["rto_total_s"].value - sum(w[p].value for p in parts)) < 0.002
    assert w["flipped_byte_refused"].value is True
    assert w["time_after_archive_refused"].value is True
    assert w["time_before_backup_refused"].value is True
    assert w["refused_targets_created"].value == 0
    assert any("fsync = on, synchronous_commit = on" in line for line in w.evidence)
    assert w.passed
