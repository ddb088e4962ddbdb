"""6.3 `m6_store/s3_hybrid_memory.py`: the witness, metric by metric."""

from __future__ import annotations

from tests.conftest import RunLesson


def test_6_3_hybrid_memory(lesson_run: RunLesson) -> None:
    # 60 turns, window of 8 messages, 10 KB guard on both graphs
    w = lesson_run("m6_store.s3_hybrid_memory").witness
    assert w.error is None, w.error
    assert 1 < w["naive_refused_at_turn"].value < 60
    assert w["naive_largest_checkpoint_bytes"].value <= 10 * 1024
    assert w["naive_growth_bytes_per_turn"].value > 0
    assert w["hybrid_turns_completed"].value == 60
    assert w["hybrid_largest_checkpoint_bytes"].value < 10 * 1024
    assert w["hybrid_growth_second_half"].value <= 1.1
    assert w["facts_from_turn_1_recalled_at_last_turn"].value == 100
    assert w["store_items"].value > 0
    assert w["store_bytes"].value > 0
    assert any("refused at turn" in line for line in w.evidence)
    assert any("You live in Lisbon" in line for line in w.evidence)
    assert w.passed
