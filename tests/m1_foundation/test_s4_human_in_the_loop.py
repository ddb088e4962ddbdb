"""1.4 `m1_foundation/s4_human_in_the_loop.py`: the witness, metric by metric."""

from __future__ import annotations

from m1_foundation import s4_human_in_the_loop
from tests.conftest import RunLesson


def test_1_4_human_in_the_loop(lesson_run: RunLesson) -> None:
    w = lesson_run("m1_foundation.s4_human_in_the_loop").witness
    for mode in ("interrupt_before", "interrupt"):
        assert w[f"{mode}.paused_at_execute_action"].value is True
        assert w[f"{mode}.executed_while_paused"].value == 0
        assert w[f"{mode}.different_processes"].value is True
        assert w[f"{mode}.executions"].value == 1
        assert w[f"{mode}.executed_amount"].value == s4_human_in_the_loop.APPROVED_AMOUNT
    assert w["interrupt_before.node_body_runs"].value == 1
    assert w["interrupt.node_body_runs"].value == 2  # re-run on resume, side effect once
    assert w["finished_resume_refused"].value is True
    assert w["unknown_resume_refused"].value is True
    assert w["rows_changed_by_refusals"].value == 0
    assert w["total_executions"].value == 2
    assert w.passed
