"""1.4 Human-in-the-loop: pause today in one process, approve tomorrow in another.

Both ways LangGraph offers, on the same approval graph (plan -> execute_action):

1. ``interrupt_before=["execute_action"]``: the run stops before the node; the reviewer reads
   ``get_state``, changes the amount with ``update_state`` and resumes with ``invoke(None)``.
2. ``interrupt()`` inside ``execute_action``: the node pauses itself with a question; the
   reviewer answers with ``invoke(Command(resume=...))``. On resume the node body runs again
   from the top and ``interrupt()`` returns the answer, so the side effect sits after it.

The side effect (the refund) is written to a ledger outside the checkpoint, so "exactly once,
with the human's amount" is counted, not assumed.
"""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path
from typing import Any, Literal

from langgraph.types import Command

import shared.witness
from shared.errors import NothingToResume, refusal
from shared.graph import Ledger, build_approval_graph
from shared.proc import run_child
from shared.savers import open_sqlite_saver
from shared.threads import resume, thread_config
from shared.witness import Witness, fresh_workdir

REQUEST = "Refund order 1042 for 250 EUR"
APPROVED_AMOUNT = 200.0
Mode = Literal["interrupt_before", "interrupt"]


def pause(db: str, ledger: str, thread: str, mode: Mode) -> dict[str, Any]:
    """Day 1, in its own process: run until the graph waits for a human, then exit."""
    with open_sqlite_saver(db) as saver:
        graph = build_approval_graph(saver, Ledger(Path(ledger)), mode)
        graph.invoke({"request": REQUEST}, {"configurable": {"thread_id": thread}})
        snap = graph.get_state({"configurable": {"thread_id": thread}})
    return {"pid": os.getpid(), "next": list(snap.next),
            "question": [i.value for i in snap.interrupts]}


def approve(db: str, ledger: str, thread: str, mode: Mode) -> dict[str, Any]:
    """Day 2, in another process: read the plan, change the amount, let it run."""
    config = {"configurable": {"thread_id": thread}}
    with open_sqlite_saver(db) as saver:
        graph = build_approval_graph(saver, Ledger(Path(ledger)), mode)
        planned = graph.get_state(config).values
        if mode == "interrupt_before":
            graph.update_state(config, {"amount": APPROVED_AMOUNT, "approved_by": "carol"})
            final = resume(graph, config)
        else:
            answer = {"approved": True, "amount": APPROVED_AMOUNT, "by": "carol"}
            final = resume(graph, config, Command(resume=answer))
    return {"pid": os.getpid(), "planned": f"{planned['action']} for {planned['amount']}",
            "result": final["result"]}


def _checkpoint_rows(db: Path) -> int:
    with sqlite3.connect(db) as conn:
        n = conn.execute("SELECT count(*) FROM checkpoints").fetchone()[0]
    conn.close()
    return n


def main(workdir: Path | None = None) -> Witness:
    w = Witness("1.4", "Human-in-the-loop across processes")
    wd = fresh_workdir(workdir, "m1_s4_human_in_the_loop")
    db, ledger_path = wd / "checkpoints.sqlite", wd / "ledger.jsonl"
    ledger = Ledger(ledger_path)
    target = "m1_foundation.s4_human_in_the_loop"

    for mode, thread in (("interrupt_before", "refund-static"), ("interrupt", "refund-dynamic")):
        # --- day 1: pause ---------------------------------------------------------------
        paused = run_child(f"{target}:pause", db=str(db), ledger=str(ledger_path),
                           thread=thread, mode=mode)
        w.show(f"[{mode}] pid {paused['pid']} paused before {paused['next']} "
               f"{paused['question'] or ''}")
        executed_while_paused = ledger.count(thread, "executed")["execute_action"]

        # --- day 2: approve with a different amount, in a new process --------------------
        approved = run_child(f"{target}:approve", db=str(db), ledger=str(ledger_path),
                             thread=thread, mode=mode)
        w.show(f"[{mode}] pid {approved['pid']} saw '{approved['planned']}', approved "
               f"{APPROVED_AMOUNT:.0f} -> {approved['result']}")

        executed = [e for e in ledger.events(thread) if e["event"] == "executed"]
        w.metric(f"{mode}.paused_at_execute_action", paused["next"] == ["execute_action"],
                 target="== yes")
        w.metric(f"{mode}.executed_while_paused", executed_while_paused, "times", "== 0")
        w.metric(f"{mode}.different_processes", paused["pid"] != approved["pid"],
                 target="== yes")
        w.metric(f"{mode}.executions", len(executed), "times", "== 1")
        w.metric(f"{mode}.executed_amount", executed[0]["amount"] if executed else 0.0, "EUR",
                 f"== {APPROVED_AMOUNT}")
        w.metric(f"{mode}.node_body_runs", ledger.count(thread, "enter")["execute_action"],
                 "runs")

    w.note("With interrupt() the node body ran twice (pause, then resume) but the refund, "
           "placed after interrupt(), ran once. Code before interrupt() must be idempotent.")

    # --- bad input: resume what is finished, or unknown; nothing may change -------------
    rows_before = _checkpoint_rows(db)
    with open_sqlite_saver(db) as saver:
        graph = build_approval_graph(saver, ledger, "interrupt_before")
        done = refusal(lambda: resume(graph, thread_config("refund-static")), NothingToResume)
        unknown = refusal(lambda: resume(graph, thread_config("no-such")), NothingToResume)
    w.show(f"resume a finished thread -> {done}")
    w.show(f"resume an unknown thread -> {unknown}")
    w.metric("finished_resume_refused", done is not None, target="== yes")
    w.metric("unknown_resume_refused", unknown is not None, target="== yes")
    w.metric("rows_changed_by_refusals", _checkpoint_rows(db) - rows_before, "rows", "== 0")
    total = sum(ledger.count(t, "executed")["execute_action"]
                for t in ("refund-static", "refund-dynamic"))
    w.metric("total_executions", total, "times", "== 2")
    return w


if __name__ == "__main__":
    raise SystemExit(shared.witness.cli(main))
