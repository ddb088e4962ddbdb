"""Milestone 1: each witness script run in a temp dir; every metric asserted on its own.

Importing, ``--help`` and the run passing are checked for every lesson in test_lessons.py.
"""

from __future__ import annotations

from m1_foundation import s4_human_in_the_loop
from shared.graph import PIPELINE_STEPS, Ledger
from tests.conftest import RunLesson


def test_1_1_sqlite_setup(lesson_run: RunLesson) -> None:
    w = lesson_run("m1_foundation.s1_sqlite_setup").witness
    assert w["tables_created"].value == 2
    assert w["journal_mode"].value == "wal"
    assert w["checkpoint_rows_after_one_turn"].value >= 1
    assert w["missing_dir_refused"].value is True
    assert w["files_created_by_refusal"].value == 0
    assert any("checkpoints(thread_id TEXT PK" in line for line in w.evidence)
    assert w.passed


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


def test_1_3_time_travel(lesson_run: RunLesson) -> None:
    w = lesson_run("m1_foundation.s3_time_travel").witness
    assert w["history_checkpoints"].value >= 5
    assert w["checkpoints_per_invoke"].value >= 2
    assert w["picked_is_turn_2_end"].value is True
    assert w["state_equals_recorded"].value is True
    assert w["fork_parent_is_picked"].value is True
    assert w["fork_new_checkpoints"].value >= 1
    assert w["fork_remembers_blue"].value is True
    assert w["original_head_values_unchanged"].value is True
    assert w["original_head_messages"].value == 10
    assert w["original_rows_changed"].value == 0
    assert w.passed


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


def test_1_5_fault_tolerance(lesson_run: RunLesson) -> None:
    run = lesson_run("m1_foundation.s5_fault_tolerance")  # kills=8
    w = run.witness
    assert w["killed_by_sigkill"].value is True
    assert w["steps_committed_before_kill"].value == 2
    assert w["step1_extract_runs"].value == 1
    assert w["step2_validate_runs"].value == 1
    assert w["step3_enrich_runs"].value == 2  # the step in flight is re-run
    assert w["step4_score_runs"].value == 1
    assert w["step5_publish_runs"].value == 1
    assert w["final_output_correct"].value is True
    assert w["resume_of_finished_refused"].value is True
    # the trials really ran: 8 threads in the ledger, each of which got through every step
    ledger = Ledger(run.workdir / "m1_s5_fault_tolerance" / "ledger.jsonl")
    trials = sorted({e["thread"] for e in ledger.events() if e["thread"].startswith("random-")})
    assert trials == [f"random-{i:03d}" for i in range(8)]
    for thread in trials:
        assert set(ledger.count(thread, "done")) == set(PIPELINE_STEPS), thread
    landed = next(line for line in w.evidence if line.startswith("kills landed: "))
    assert sum(int(part.rsplit(" x", 1)[1]) for part in landed.split(": ", 1)[1].split(", ")) == 8
    assert w["session_recovery_rate"].value == 100.0
    assert w["committed_steps_reexecuted"].value == 0
    assert w.passed
