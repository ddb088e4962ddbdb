"""1.2 `m1_foundation/s2_session_memory.py`: the witness, metric by metric."""

from __future__ import annotations

from tests.conftest import RunLesson


def test_1_2_session_memory(lesson_run: RunLesson) -> None:
    w = lesson_run("m1_foundation.s2_session_memory").witness
    assert w["processes_used"].value == 4
    assert w["recalled_name_in_turn_3"].value is True
    assert w["messages_persisted"].value == 6
    assert w["threads_in_file"].value == 2
    assert w["facts_leaked_to_other_thread"].value == 0
    assert any("Your name is Alice." in line for line in w.evidence)
    assert any("I don't know your name yet." in line for line in w.evidence)
    assert w.passed
