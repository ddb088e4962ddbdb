"""3.2 `m3_trigger/s2_migration_decision.py`: the witness, metric by metric."""

from __future__ import annotations

from shared.ops.decide import (
    MIGRATE_NOW,
    MIGRATE_SOON,
    Thresholds,
)
from tests.conftest import RunLesson

TH = Thresholds()


def test_3_2_migration_decision(lesson_run: RunLesson) -> None:
    # light_seconds=6.0, stage_seconds=2.0, lock_processes=4, lock_seconds=2.0, file_mb=2.0,
    # ceiling_seconds=0.5, contention_processes=4
    w = lesson_run("m3_trigger.s2_migration_decision").witness
    assert w["light.sufficient_verdicts"].value >= 1
    assert w["light.false_alarms"].value == 0
    assert w["multi_server.detection_s"].value < 5
    assert w["multi_server.verdict"].value == MIGRATE_NOW
    assert w["throughput.detection_s"].value < 5
    assert w["throughput.detection_s"].value > 0  # a 5 s window cannot see it at once
    assert w["throughput.verdict"].value == MIGRATE_NOW
    assert w["throughput.false_alarms"].value == 0
    assert w["lock_errors.endpoints_scraped"].value == 4
    assert w["lock_errors.lock_errors"].value > 0
    assert w["lock_errors.scraped_sum_equals_writers"].value is True
    assert w["lock_errors.detection_s"].value < 5
    assert w["lock_errors.verdict"].value == MIGRATE_NOW
    assert w["lock_errors.false_alarms"].value == 0
    assert w["file_size.writes_per_s"].value < 100
    assert w["file_size.detection_s"].value < 5
    assert w["file_size.verdict"].value == MIGRATE_SOON
    assert w["decisions_logged"].value == float(w["decisions_logged"].target.split()[-1])
    assert w["log_lines_complete"].value is True
    assert w["sqlite_ceiling_writes_per_s"].value > 0
    assert w["ceiling_over_rule"].value > 0
    assert w["p99_ms_1_process"].value > 0
    assert w["p99_ms_4_processes"].value > 0
    assert any("lowered from 5 GB to 2 MB for this demo" in line for line in w.evidence)
    assert w.passed
