"""Milestone 1: each witness script run in a temp dir; every metric asserted on its own."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from m1_foundation import (
    s1_sqlite_setup,
    s2_session_memory,
    s3_time_travel,
    s4_human_in_the_loop,
    s5_fault_tolerance,
)
from shared import ROOT

SCRIPTS = ["s1_sqlite_setup", "s2_session_memory", "s3_time_travel", "s4_human_in_the_loop",
           "s5_fault_tolerance"]


def test_1_1_sqlite_setup(tmp_path: Path) -> None:
    w = s1_sqlite_setup.main(workdir=tmp_path)
    assert w["tables_created"].value == 2
    assert w["journal_mode"].value == "wal"
    assert w["checkpoint_rows_after_one_turn"].value >= 1
    assert w["missing_dir_refused"].value is True
    assert w["files_created_by_refusal"].value == 0
    assert any("checkpoints(thread_id TEXT PK" in line for line in w.evidence)
    assert w.passed


def test_1_2_session_memory(tmp_path: Path) -> None:
    w = s2_session_memory.main(workdir=tmp_path)
    assert w["turns_completed"].value == 3
    assert w["processes_used"].value == 4
    assert w["recalled_name_in_turn_3"].value is True
    assert w["messages_persisted"].value == 6
    assert w["threads_in_file"].value == 2
    assert w["facts_leaked_to_other_thread"].value == 0
    assert any("Your name is Alice." in line for line in w.evidence)
    assert any("I don't know your name yet." in line for line in w.evidence)
    assert w.passed


def test_1_3_time_travel(tmp_path: Path) -> None:
    w = s3_time_travel.main(workdir=tmp_path)
    assert w["turns"].value == 5
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


def test_1_4_human_in_the_loop(tmp_path: Path) -> None:
    w = s4_human_in_the_loop.main(workdir=tmp_path)
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


def test_1_5_fault_tolerance(tmp_path: Path) -> None:
    w = s5_fault_tolerance.main(workdir=tmp_path, kills=8, seed=3)
    assert w["killed_by_sigkill"].value is True
    assert w["steps_committed_before_kill"].value == 2
    assert w["step1_extract_runs"].value == 1
    assert w["step2_validate_runs"].value == 1
    assert w["step3_enrich_runs"].value == 2  # the step in flight is re-run
    assert w["step4_score_runs"].value == 1
    assert w["step5_publish_runs"].value == 1
    assert w["final_output_correct"].value is True
    assert w["resume_of_finished_refused"].value is True
    assert w["random_kills"].value == 8
    assert w["session_recovery_rate"].value == 100.0
    assert w["committed_steps_reexecuted"].value == 0
    assert w.passed


@pytest.mark.parametrize("script", SCRIPTS)
def test_import_has_no_side_effects(script: str, tmp_path: Path) -> None:
    data = ROOT / ".data" / f"m1_{script}"  # the script's own data directory
    before = sorted(data.rglob("*")) if data.exists() else []
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    out = subprocess.run([sys.executable, "-c", f"import m1_foundation.{script}"], cwd=tmp_path,
                         env=env, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout == ""
    assert list(tmp_path.iterdir()) == []
    assert (sorted(data.rglob("*")) if data.exists() else []) == before


@pytest.mark.parametrize("script", SCRIPTS)
def test_script_help(script: str) -> None:
    out = subprocess.run([sys.executable, "-m", f"m1_foundation.{script}", "--help"], cwd=ROOT,
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert "--workdir" in out.stdout
