"""1.2 Session memory: the same thread_id continues the conversation, across processes.

Each turn runs in its own fresh Python interpreter that opens the SQLite file, runs one
``invoke`` and exits. The offline model answers only from the messages it is handed, so
the name given in turn 1 can reach turn 3 by one road only: the checkpoint in the file.
A second thread_id, asked the same question, must not know it.
"""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path
from typing import Any

import shared.witness
from shared.graph import build_chat_graph
from shared.proc import run_child
from shared.savers import open_sqlite_saver
from shared.witness import Witness, fresh_workdir

TURNS = ("Hi! My name is Alice.", "I live in Lisbon.", "What's my name?")


def turn(db: str, thread_id: str, text: str) -> dict[str, Any]:
    """One conversation turn, run inside a child process."""
    with open_sqlite_saver(db) as saver:
        graph = build_chat_graph(saver)
        state = graph.invoke({"messages": [("user", text)]},
                             {"configurable": {"thread_id": thread_id}})
    return {"pid": os.getpid(), "reply": state["messages"][-1].content,
            "messages": len(state["messages"])}


def main(workdir: Path | None = None) -> Witness:
    w = Witness("1.2", "Session memory across processes")
    wd = fresh_workdir(workdir, "m1_s2_session_memory")
    db = str(wd / "checkpoints.sqlite")

    # --- three turns on one thread, one process each ---------------------------------
    replies, pids = [], set()
    for text in TURNS:
        out = run_child("m1_foundation.s2_session_memory:turn", db=db, thread_id="user-alice",
                        text=text)
        replies.append(out["reply"])
        pids.add(out["pid"])
        w.show(f"[pid {out['pid']}] user: {text!r} -> assistant: {out['reply']!r}")

    # --- the same question on another thread ----------------------------------------
    other = run_child("m1_foundation.s2_session_memory:turn", db=db, thread_id="user-bob",
                      text=TURNS[-1])
    pids.add(other["pid"])
    w.show(f"[pid {other['pid']}] other thread: {TURNS[-1]!r} -> {other['reply']!r}")

    # --- what the file holds, read by this (parent) process --------------------------
    with open_sqlite_saver(db) as saver:
        graph = build_chat_graph(saver)
        alice = graph.get_state({"configurable": {"thread_id": "user-alice"}}).values
        bob = graph.get_state({"configurable": {"thread_id": "user-bob"}}).values
    with sqlite3.connect(db) as conn:
        threads = conn.execute("SELECT count(DISTINCT thread_id) FROM checkpoints").fetchone()[0]
    conn.close()
    bob_text = " ".join(str(m.content) for m in bob["messages"])

    w.metric("turns_completed", len(replies), "turns", "== 3")
    w.metric("processes_used", len(pids), "processes", "== 4")
    w.metric("recalled_name_in_turn_3", "Alice" in replies[-1], target="== yes")
    w.metric("messages_persisted", len(alice["messages"]), "messages", "== 6")
    w.metric("threads_in_file", threads, "threads", "== 2")
    w.metric("facts_leaked_to_other_thread", bob_text.count("Alice") + bob_text.count("Lisbon"),
             "facts", "== 0")
    w.note("The model keeps no state between calls; each process exited after its turn. "
           "The name reached turn 3 through the checkpoint's `messages` channel only.")
    return w


if __name__ == "__main__":
    raise SystemExit(shared.witness.cli(main))
