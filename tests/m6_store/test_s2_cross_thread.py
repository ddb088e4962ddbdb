"""6.2 `m6_store/s2_cross_thread.py`: the witness, metric by metric."""

from __future__ import annotations

from tests.conftest import RunLesson


def test_6_2_cross_thread(lesson_run: RunLesson) -> None:
    # alice in two processes, 2 other users, 10 attack ids (shared/workloads/memory_chat.py)
    w = lesson_run("m6_store.s2_cross_thread").witness
    assert w.error is None, w.error
    assert w["thread_b_had_a_checkpoint"].value is False
    assert w["alice_facts_answered_in_thread_b"].value == 2
    assert w["company_note_found"].value == 3  # alice + 2 other users
    assert w["alice_memories_recalled_by_others"].value == 0
    assert w["alice_facts_answered_to_others"].value == 0
    assert w["attack_ids_refused_by_guard"].value >= 9
    assert w["alice_items_reached_through_guard"].value == 0
    assert w["attack_ids_leaking_unguarded"].value > 0
    assert any("You live in Lisbon" in line for line in w.evidence)
    assert any("unguarded -> refused by LangGraph" in line for line in w.evidence)
    assert w.passed
