"""2.4 `m2_production/s4_pruning.py`: the witness, metric by metric."""

from __future__ import annotations

import re

from tests.conftest import RunLesson


def test_2_4_pruning(lesson_run: RunLesson) -> None:
    # days=40, conversations_per_day=4, keep_last=2, cycles=6
    w = lesson_run("m2_production.s4_pruning").witness
    assert w["traffic_span_days"].value >= 39
    assert w["checkpoints_generated"].value > 0
    assert w["writes_generated"].value > 0
    assert w["dry_run_would_delete"].value > 0
    assert w["dry_run_changed_rows"].value is False
    assert w["dry_run_changed_bytes"].value is False
    assert w["deleted_as_dry_run_said"].value is True
    assert w["deleted_by_sql_count"].value == w["dry_run_would_delete"].value
    assert (w["remaining_by_sql_count"].value + w["deleted_by_sql_count"].value
            == w["checkpoints_generated"].value)
    assert w["deleted_against_policy"].value == 0
    assert w["old_checkpoints_kept"].value > 0  # keep_last protected some old rows ...
    assert w["old_kept_without_reason"].value == 0  # ... and each one says why
    assert w["kept_rows_changed"].value == 0
    assert w["kept_checkpoints_loading"].value == 100
    assert w["parent_links_cut"].value > 0
    assert w["cut_only_below_deleted"].value is True
    assert w["dangling_parent_links"].value == 0
    assert w["orphaned_writes"].value == 0
    assert w["second_run_deleted"].value == 0
    assert w["file_bytes_after"].value < w["file_bytes_before"].value
    assert w["file_shrink"].value > 0
    assert w["file_bytes_per_payload_byte_deleted"].value >= 0.9
    # six days of traffic, each followed by a prune that deleted something
    days = [line for line in w.evidence if line.startswith("day ")]
    assert [int(line.split()[1].rstrip(":")) for line in days] == list(range(41, 47))
    deleted = [int(re.search(r", -([\d,]+), file", line)[1].replace(",", "")) for line in days]
    assert len(deleted) == 6 and min(deleted) > 0, days
    assert w["growth_over_last_5_cycles"].value <= 5
    # each day one more day of finished conversations ages past the cut-off, and each keeps
    # its newest keep_last: the rows kept for ever grow, by at most 4 x 2 a day
    assert 0 < w["old_rows_kept_per_day"].value <= 4 * 2
    assert w["pruned_thread_resumed"].value is True
    assert w["uuid6_vs_ts_skew_real_rows"].value <= 50
    assert any("newest 2 of thread" in line for line in w.evidence)
    assert w["s3_objects_before_prune"].value == 2
    assert w["s3_unreferenced_collected"].value == 1
    assert w["s3_kept_blob_loads_exact"].value is True
    assert w.passed
