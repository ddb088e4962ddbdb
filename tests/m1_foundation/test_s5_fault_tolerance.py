"""1.5 `m1_foundation/s5_fault_tolerance.py`: the witness, metric by metric."""

from __future__ import annotations

from shared.graph import PIPELINE_STEPS, Ledger
from tests.conftest import RunLesson


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
