"""4.3 `m4_postgres/s3_migrate.py`: the witness, metric by metric."""

from __future__ import annotations

from tests.conftest import RunLesson


def test_4_3_witness(lesson_run: RunLesson) -> None:
    # threads=150, turns=3, batch=100, api_threads=30, min_rate=100, on the session's server
    w = lesson_run("m4_postgres.s3_migrate").witness
    rows = {m.name: m.value for m in w.metrics}
    assert w["source_threads"].value == 153
    assert w["subgraph_checkpoints"].value >= 1
    assert w["exported_checkpoints"].value == w["imported_checkpoints"].value > 180
    assert w["exported_writes"].value == w["imported_writes"].value > 0
    assert w["verified_checkpoints"].value == w["exported_checkpoints"].value
    assert w["mismatches"].value == 0
    assert w["throughput"].value >= 100
    assert w["public_api_throughput"].value > 0
    assert w["throughput_decoding_objects"].value > 0
    assert w["read_build_us_per_checkpoint"].value > 0
    assert w["read_build_us_per_checkpoint"].value < w["read_build_us_per_checkpoint_objects"].value
    assert w["bytes_vs_objects_speedup"].value >= 1.5  # CPU time, paired rounds, a ratio
    assert w["batched_speedup"].value >= 1.5  # side by side, same threads, same server
    assert w["public_api_vs_batched_mismatches"].value == 0
    assert w["public_api_rows_identical"].value is True
    assert w["chat_recalls_name"].value is True
    assert w["interrupt_resumed"].value is True
    assert w["failed_step_resumed"].value is True
    assert w["successful_sibling_reruns"].value == 0
    assert w["killed_by_sigkill"].value is True
    assert w["killed_half_way"].value is True
    assert 0 < w["threads_committed_at_kill"].value < 153
    assert w["half_written_threads"].value == 0
    assert w["rerun_exit_status"].value == 0
    assert w["rerun_skipped_threads"].value == w["threads_committed_at_kill"].value
    assert w["duplicate_rows"].value == 0
    assert w["rows_equal_uninterrupted_run"].value is True
    assert w["mismatches_after_resume"].value == 0
    assert w["rollback_checkpoints"].value > w["exported_checkpoints"].value  # + continued turns
    assert w["rollback_mismatches"].value == 0
    assert w["rollback_throughput"].value > 0
    assert w.passed, rows
