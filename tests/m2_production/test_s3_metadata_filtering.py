"""2.3 `m2_production/s3_metadata_filtering.py`: the witness, metric by metric."""

from __future__ import annotations

from tests.conftest import RunLesson


def test_2_3_metadata_filtering(lesson_run: RunLesson) -> None:
    w = lesson_run("m2_production.s3_metadata_filtering").witness  # 20,000 checkpoints
    assert w["checkpoints"].value == 20_000
    assert w["result_sets_wrong"].value == 0
    assert w["result_sets_wrong_with_indexes"].value == 0
    for name in ("one_tag", "intersection", "step_across_threads", "within_thread"):
        assert w[f"{name}.index_used_after"].value is True
        if name != "within_thread":
            assert w[f"{name}.full_scan_before"].value is True
    for name in ("one_tag", "intersection", "within_thread"):
        assert w[f"{name}.query_p99_after_ms"].value < 5
    for name in ("intersection", "within_thread"):
        assert w[f"{name}.list_p99_after_ms"].value < 5
    # side by side in one run: the indexed query beats the scan
    assert w["intersection.query_speedup"].value > 5
    assert any("SCAN checkpoints" in line for line in w.evidence)
    assert any("USING INDEX ix_checkpoints_meta_user_id" in line for line in w.evidence)
    assert w.passed
