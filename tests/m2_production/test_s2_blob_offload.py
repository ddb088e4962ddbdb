"""2.2 `m2_production/s2_blob_offload.py`: the witness, metric by metric."""

from __future__ import annotations

import itertools
import sqlite3

from tests.conftest import RunLesson

KIB = 1024
CONFIG = {"configurable": {"thread_id": "t", "checkpoint_ns": ""}}
_buckets = itertools.count()


def test_2_2_blob_offload(lesson_run: RunLesson) -> None:
    run = lesson_run("m2_production.s2_blob_offload")  # pdf_mb=2.0
    w = run.witness
    mib2 = 2 * 1024 * KIB
    assert w["thread_bytes_without_offload"].value >= 3 * mib2  # the PDF, again and again
    assert w["thread_bytes_with_offload"].value < 5 * KIB
    assert w["thread_reduction"].value >= 99.9
    assert w["file_bytes_with_offload"].value < w["file_bytes_without_offload"].value / 100
    assert w["node_pattern_thread_bytes"].value < 10 * KIB
    assert w["largest_row_with_offload"].value < 5 * KIB
    assert w["reference_bytes"].value < 100
    assert w["dumps_p99_with_offload"].value < 10
    # one call's wall-clock time includes its CPU time: the median round >= the best round
    assert w["dumps_wall_p99_with_offload"].value >= w["dumps_p99_with_offload"].value
    assert w["dumps_p99_with_head_per_call"].value > 0
    assert w["dumps_p99_without_offload"].value > 0
    assert w["pdf_upload_time"].value > 0
    assert w["byte_exact_round_trip"].value is True
    assert w["checkpoints_holding_pdf"].value >= 10
    assert w["s3_objects_added"].value == 1
    assert w["s3_uploads"].value == 1
    assert w["s3_down_refused"].value is True
    assert w["s3_down_seconds"].value <= 5
    assert w["rows_written_with_s3_down"].value == 0
    assert w["async_checkpoint_rows_with_s3_down"].value == 0
    # what the async run left: the figure is the file's own count, and no refused payload
    # fell back to being stored inline
    with sqlite3.connect(run.workdir / "m2_s2_blob_offload" / "s3_down.sqlite") as conn:
        rows, largest = conn.execute("SELECT count(*), coalesce(max(length(value)), 0) FROM "
                                     "writes WHERE thread_id = 'async'").fetchone()
        biggest_checkpoint = conn.execute(
            "SELECT coalesce(max(length(checkpoint)), 0) FROM checkpoints").fetchone()[0]
    assert w["async_write_rows_with_s3_down"].value == rows
    assert largest < 100 * KIB and biggest_checkpoint < 100 * KIB
    assert w["foreign_bucket_refused"].value is True
    assert w["hash_mismatch_refused"].value is True
    assert any("s3://" in line and "/sha256/" in line for line in w.evidence)
    assert w.passed
