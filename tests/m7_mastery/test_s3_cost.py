"""7.3 `m7_mastery/s3_cost.py`: the witness, metric by metric."""

from __future__ import annotations

from tests.conftest import RunLesson

SCALES = (1_000, 10_000, 100_000, 1_000_000)


def test_7_3_cost(lesson_run: RunLesson) -> None:
    # 8 conversations x 6 turns through PostgreSQL and plain Redis; 1k..1M threads priced
    w = lesson_run("m7_mastery.s3_cost").witness
    assert w.error is None, w.error
    assert w["checkpoints_per_turn"].value > 0
    assert w["pg_bytes_per_checkpoint"].value > 0
    assert w["redis_bytes_per_checkpoint"].value > 0
    assert w["redis_hot_bytes_per_checkpoint"].value > 0
    assert w["redis_used_memory_over_keys"].value > 0
    assert w["redis_over_pg_bytes"].value > 0
    for n in SCALES:
        redis, pg, tiered = (w[f"usd_month_{k}_{n}"].value
                             for k in ("redis_only", "postgres_only", "tiered"))
        assert 0 < pg <= tiered < redis, (n, redis, pg, tiered)
    # Redis-only grows with history; it costs more at 1M threads than at 1k
    assert w["usd_month_redis_only_1000000"].value > w["usd_month_redis_only_1000"].value
    assert w["scales_where_tiered_beats_redis_only"].value == len(SCALES)
    assert w["tiered_saving_vs_redis_only_min"].value > 0
    assert (w["tiered_saving_vs_redis_only_max"].value
            >= w["tiered_saving_vs_redis_only_min"].value)
    assert w["tiered_extra_over_postgres_only_max"].value >= 0
    assert w["seed_10_shards_usd_month_today"].value > 0
    assert w["seed_10_shards_hold_hours_at_500_writes_s"].value > 0
    assert w["seed_saving_claimed"].value == 96
    assert any("10 shards" in line for line in w.evidence)
    assert any("1,000,000 threads" in line for line in w.evidence)
    assert any("not found" in line for line in w.notes)
    assert w.passed
