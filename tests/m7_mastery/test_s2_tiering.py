"""7.2 `m7_mastery/s2_tiering.py`: the witness, metric by metric."""

from __future__ import annotations

from tests.conftest import RunLesson

FAULTS = ("none", "kill", "flushall", "pause")


def test_7_2_tiering(lesson_run: RunLesson) -> None:
    w = lesson_run("m7_mastery.s2_tiering").witness
    assert w.error is None, w.error
    assert any("fsync=on" in line for line in w.evidence)
    # what the hot tier buys: reads against PostgreSQL alone, interleaved rounds
    assert w["read_p50_speedup"].value >= 3
    assert w["read_p50_ms_hybrid"].value < w["read_p50_ms_postgres"].value
    assert w["read_p50_speedup_another_worker"].value > 1
    assert w["resume_p50_speedup"].value > 1
    assert w["read_p99_speedup"].value > 0
    # what it costs: a whole turn within 1.3x; put alone printed
    if w["turn_p50_overhead"].target:  # judged unless a coverage tracer runs (make test)
        assert w["turn_p50_overhead"].value <= 1.3
    else:
        assert w["turn_p50_overhead"].value > 0
        assert any("coverage tracer" in n for n in w.notes)
    assert w["turn_p50_overhead_median_of_rounds"].value > 0
    assert w["put_p50_overhead"].value > 0 and w["put_p99_overhead"].value > 0
    # Redis memory: per thread, bounded, and idle threads leave
    assert w["redis_bytes_per_active_thread"].value > 0
    assert 0 < w["hot_checkpoints_per_thread"].value <= 10
    assert w["long_thread_hot_checkpoints_max"].value == 10
    assert w["idle_thread_keys_after_ttl"].value == 0
    # faults under traffic from five processes: nothing failed, nothing stale, nothing lost
    for fault in FAULTS:
        assert w[f"failed_requests_{fault}"].value == 0, fault
        assert w[f"stale_reads_{fault}"].value == 0, fault
    assert w["reads_from_redis_checked"].value > 0
    acked = w["acknowledged_checkpoints"].value
    assert acked > 0
    assert w["acknowledged_checkpoints_lost"].value == 0
    assert w["read_back_through_fresh_hot_tier"].value == acked
    assert w["deleted_checkpoints_left"].value == 0
    # the plain-Redis peer on the same Redis
    assert w["hybrid_lost_when_redis_lost"].value == 0
    assert w["peer_lost_when_redis_lost"].value > 0
    assert w["peer_read_p50_ms"].value > 0 and w["peer_bytes_per_thread"].value > 0
    assert any("MULTI/EXEC" in line for line in w.evidence)
    assert w.passed
