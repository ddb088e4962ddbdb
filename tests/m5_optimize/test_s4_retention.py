"""5.4 `m5_optimize/s4_retention.py`: the witness, metric by metric."""

from __future__ import annotations

from tests.conftest import RunLesson


def test_5_4_retention(lesson_run: RunLesson, pg_url: str) -> None:  # server first
    # days=45, conversations_per_day=6, keep_last=3, batch_size=300, 2 writers for 1.5 s
    w = lesson_run("m5_optimize.s4_retention").witness
    assert w["checkpoints_generated"].value > 0
    assert w["blobs_before"].value > 0
    assert w["dry_run_would_delete"].value > 0
    assert w["dry_run_changed_rows"].value is False
    assert w["deleted_as_dry_run_said"].value is True
    for short in ("checkpoints", "blobs", "writes"):
        assert w[f"{short}_unlike_expectation"].value == 0
        assert w[f"{short}_remaining_sql"].value > 0
    assert (w["checkpoints_remaining_sql"].value + w["dry_run_would_delete"].value
            == w["checkpoints_generated"].value)
    assert w["kept_rows_changed"].value == 0
    assert w["orphan_blobs"].value == 0
    assert w["orphan_writes"].value == 0
    assert w["dangling_parent_links"].value == 0
    assert w["batches"].value > 1
    assert w["writer_puts_during_prune"].value > 0
    assert w["prune_overlapped_writers"].value is True
    assert w["writer_errors"].value == 0
    assert w["writer_checkpoints_missing"].value == 0
    assert w["cli_exit_status"].value == 0
    assert w["cli_second_run_deleted"].value == 1
    before = w["table_bytes_before"].value
    assert w["table_bytes_after_prune"].value >= 0.9 * before  # DELETE gives nothing back
    assert w["table_bytes_after_vacuum"].value >= 0.9 * before  # nor does plain VACUUM ...
    assert w["new_day_growth_bytes"].value < w["new_day_blob_payload_bytes"].value  # ... reuse
    assert w["table_bytes_after_vacuum_full"].value < w["table_bytes_after_vacuum"].value
    assert w["delta_ancestors_kept"].value > 0
    assert w["delta_history_unchanged"].value is True
    assert w["delta_thread_continues"].value is True
    assert any(line.startswith("kept: ") for line in w.evidence)
    assert w.passed
