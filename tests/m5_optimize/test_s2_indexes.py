"""5.2 `m5_optimize/s2_indexes.py`: the witness, metric by metric (small scale)."""

from __future__ import annotations

from tests.conftest import SMALL_SCALE, RunLesson

LESSON = "m5_optimize.s2_indexes"
KINDS = ("latest", "history_page", "filtered_list", "pending_writes")


def test_5_2_indexes(lesson_run: RunLesson, pg_url: str) -> None:
    del pg_url  # the session's server, started before this test's child-process check
    scale = SMALL_SCALE[LESSON]
    w = lesson_run(LESSON).witness
    assert w.error is None
    assert w["checkpoints_loaded"].value == scale["checkpoints"]
    assert w["load_checkpoints_per_s"].value > 1000
    assert w["wrong_result_sets"].value == 0
    # the filtered list across threads: a table scan before, the GIN index after, faster
    assert w["filtered_scans_table_without"].value is True
    assert w["filtered_uses_gin"].value is True
    assert w["filtered_speedup"].target == ">= 2"  # small scale; >= 25 at 1M checkpoints
    assert w["filtered_speedup"].value >= 2
    # small scale: the p99 must beat the scan's (the seed's < 5 ms is enforced at 1M)
    assert w["filtered_list_p99_with_ms"].value < w["filtered_list_p99_without_ms"].value
    # where setup()'s indexes already serve: the same plan with and without the new index
    for kind in ("latest", "history_page", "pending_writes"):
        assert w[f"{kind}_same_plan"].value is True
    for kind in KINDS:  # measured both ways; only the filtered list has a p99 target
        for name in ("with", "without"):
            assert w[f"{kind}_p50_{name}_ms"].value > 0
            assert w[f"{kind}_p99_{name}_ms"].value > 0
    assert w["filtered_list_p99_with_ms"].target == \
        f"< {w['filtered_list_p99_without_ms'].value:.3f}"
    assert w["latest_p99_with_ms"].target is None
    assert w["filtered_list_p50_with_ms"].value < w["filtered_list_p50_without_ms"].value
    # applied by the command, idempotently; its cost measured
    assert w["cli_exit"].value == 0
    assert w["second_apply_changes"].value == 0
    assert w["checkpoints_metadata_gin_idx_bytes"].value > 0
    assert 0 < w["index_to_table_bytes"].value < 1
    assert w["put_p99_without_ms"].value > 0 and w["put_p99_with_ms"].value > 0
    assert w["put_p99_ratio"].value < 2
    assert any("Seq Scan on checkpoints" in line for line in w.evidence)
    assert any("Bitmap Index Scan on checkpoints_metadata_gin_idx" in line
               for line in w.evidence)
    assert w.passed


def test_5_2_full_scale_target() -> None:
    """The 25x target is the one enforced at 1M checkpoints (the default scale)."""
    import inspect

    from m5_optimize import s2_indexes

    assert inspect.signature(s2_indexes.main).parameters["checkpoints"].default == 1_000_000
    assert s2_indexes.FULL_SCALE == 1_000_000
