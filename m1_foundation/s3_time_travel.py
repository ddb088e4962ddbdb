"""1.3 Time travel: go back to the checkpoint after turn 2, find it intact, and fork from it.

Why one ``invoke`` writes several checkpoints: LangGraph saves one after every *superstep*.
A turn of the chat graph has three: the input arrives (``source='input'``), START writes it
into the channels (``source='loop'``, next = chatbot), and the chatbot node answers
(``source='loop'``, next = ()). Steps keep counting across turns of a thread (turn 1 is
steps -1, 0, 1; turn 5 is 11, 12, 13). The count below is measured, not assumed.

Forking: ``invoke(new_input, config_with_checkpoint_id)`` starts a new branch whose first
checkpoint's parent is the chosen one. Nothing is overwritten: the old branch's rows stay,
byte for byte, and its head can still be read by its checkpoint_id.
"""

from __future__ import annotations

import copy
import sqlite3
from pathlib import Path
from typing import Any

import shared.witness
from shared.graph import build_chat_graph
from shared.savers import open_sqlite_saver
from shared.witness import Witness, fresh_workdir

TURNS = ("Hi, my name is Alice.", "My favourite colour is green.", "I live in Lisbon.",
         "What's my name?", "What is my favourite colour?")
FORK_TURNS = ("Actually, my favourite colour is blue.", "What is my favourite colour?")
THREAD = {"configurable": {"thread_id": "time-travel"}}


def _rows(db: Path) -> dict[str, tuple[Any, ...]]:
    """Every checkpoint row of the thread, raw bytes included, keyed by checkpoint_id."""
    with sqlite3.connect(db) as conn:
        rows = conn.execute("SELECT checkpoint_id, parent_checkpoint_id, checkpoint, metadata "
                            "FROM checkpoints WHERE thread_id = ?", ("time-travel",)).fetchall()
    conn.close()
    return {r[0]: r for r in rows}


def _id(config: dict[str, Any] | None) -> str | None:
    return config["configurable"]["checkpoint_id"] if config else None


def main(workdir: Path | None = None) -> Witness:
    w = Witness("1.3", "Time travel and forking")
    wd = fresh_workdir(workdir, "m1_s3_time_travel")
    db = wd / "checkpoints.sqlite"

    with open_sqlite_saver(db) as saver:
        graph = build_chat_graph(saver)

        # --- five turns; remember each turn's end state as it was at the time ---------
        at_the_time: list[tuple[str, dict[str, Any]]] = []
        for text in TURNS:
            graph.invoke({"messages": [("user", text)]}, THREAD)
            snap = graph.get_state(THREAD)
            at_the_time.append((_id(snap.config), copy.deepcopy(snap.values)))
        history = list(graph.get_state_history(THREAD))  # newest first
        rows_before = _rows(db)
        head_id, head_values = at_the_time[-1]

        one_turn = [h.metadata for h in history[:3]][::-1]
        w.show("one invoke = " + " -> ".join(f"{m['source']}(step {m['step']})" for m in one_turn))

        # --- pick the checkpoint after turn 2 from the history, as a user would -------
        turn_ends = [h for h in reversed(history) if not h.next]  # oldest first
        picked = turn_ends[1]
        recorded_id, recorded_values = at_the_time[1]
        w.show(f"picked checkpoint {_id(picked.config)} (step {picked.metadata['step']}, "
               f"{len(picked.values['messages'])} messages)")

        # --- fork: new input from that checkpoint ------------------------------------
        fork = graph.invoke({"messages": [("user", FORK_TURNS[0])]}, picked.config)
        fork = graph.invoke({"messages": [("user", FORK_TURNS[1])]}, THREAD)
        history_after = list(graph.get_state_history(THREAD))
        new = [h for h in history_after if _id(h.config) not in rows_before]
        fork_root = next(h for h in new if _id(h.parent_config) not in {_id(n.config) for n in new})
        old_head = graph.get_state({"configurable": {**THREAD["configurable"],
                                                     "checkpoint_id": head_id}})
        rows_after = _rows(db)

    w.show(f"original branch, turn 5: {head_values['messages'][-1].content!r}")
    w.show(f"fork from turn 2:        {fork['messages'][-1].content!r}")

    w.metric("turns", len(at_the_time), "turns", "== 5")
    w.metric("history_checkpoints", len(history), "checkpoints", ">= 5")
    w.metric("checkpoints_per_invoke", len(history) / len(TURNS), "per invoke", ">= 2")
    w.metric("picked_is_turn_2_end", _id(picked.config) == recorded_id, target="== yes")
    w.metric("state_equals_recorded", picked.values == recorded_values, target="== yes")
    w.metric("fork_parent_is_picked", _id(fork_root.parent_config) == recorded_id,
             target="== yes")
    w.metric("fork_new_checkpoints", len(new), "checkpoints", ">= 1")
    w.metric("fork_remembers_blue", "blue" in fork["messages"][-1].content, target="== yes")
    w.metric("original_head_values_unchanged", old_head.values == head_values, target="== yes")
    w.metric("original_head_messages", len(old_head.values["messages"]), "messages", "== 10")
    changed = sum(rows_after.get(k) != v for k, v in rows_before.items())
    w.metric("original_rows_changed", changed, "rows", "== 0")
    w.note("After the fork, get_state(thread) returns the fork's head: the newest checkpoint "
           "id wins. The original head is still there, reachable by its checkpoint_id.")
    return w


if __name__ == "__main__":
    raise SystemExit(shared.witness.cli(main))
