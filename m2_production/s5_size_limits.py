"""2.5 Size limits: a 15 MiB state is refused before SQLite sees it; the last good checkpoint stays.

``SizeGuardSaver`` (shared/savers/size_guard.py) wraps the ``SqliteSaver`` and serializes each
checkpoint and each task's writes with the saver's own serde before handing them over. The
graph pauses before ``attach`` with a normal-sized checkpoint; resumed, ``attach`` returns a
15 MiB ``bytes`` value and the run is refused with one sentence. Proved from the database: the
paused checkpoint is still the head with equal values, no blob in any table exceeds the limit,
and while the refused run lasted SQLite ran only SELECTs (traced with ``set_trace_callback``),
changed no row and held no transaction. A 6 MiB attachment, between the 5 MiB warning and the
10 MiB limit, is written and logged. The guard's cost on a normal ``put`` is timed side by side.
"""

from __future__ import annotations

import copy
import logging
from pathlib import Path
from typing import Any, TypedDict

from langgraph.graph import START, StateGraph

import shared.witness
from shared.bench import interleave
from shared.savers import open_sqlite_saver
from shared.savers.size_guard import (
    MIB,
    CheckpointTooLarge,
    SizeGuardSaver,
    captured_guard_log,
    format_bytes,
    sqlite_blob_audit,
)
from shared.witness import Witness, fresh_workdir
from shared.workloads.payloads import random_bytes


class State(TypedDict, total=False):
    request: str
    size: int
    note: str
    attachment: bytes


SEED = 25  # the attachment: seeded and incompressible
NODE_RETURNED = "-- attach returned --"


def head_id(snapshot: Any) -> str:
    return snapshot.config["configurable"]["checkpoint_id"]


def main(workdir: Path | None = None, limit_mib: float = 10.0, warn_mib: float = 5.0,
         oversized_mib: float = 15.0, warned_mib: float = 6.0, puts: int = 200,
         rounds: int = 5) -> Witness:
    w = Witness("2.5", "Size limits")
    db = fresh_workdir(workdir, "m2_s5_size_limits") / "checkpoints.sqlite"
    limit, warn = int(limit_mib * MIB), int(warn_mib * MIB)
    trace: list[str] = []  # every SQL statement SQLite runs while tracing is on

    def prepare(state: State) -> dict[str, Any]:
        return {"note": f"attachment of {state['size']:,} bytes requested"}

    def attach(state: State) -> dict[str, Any]:
        data = random_bytes(state["size"], SEED)
        trace.append(NODE_RETURNED)  # statements after this one come from the refusal
        return {"attachment": data}

    with open_sqlite_saver(db) as saver, captured_guard_log() as logged:
        conn, guard = saver.conn, SizeGuardSaver(saver, limit_bytes=limit, warn_bytes=warn)
        graph = (StateGraph(State).add_sequence([prepare, attach]).add_edge(START, "prepare")
                 .compile(checkpointer=guard, interrupt_before=["attach"]))

        # --- a normal-sized state is saved: the run pauses before attach --------------
        big = {"configurable": {"thread_id": "oversized"}}
        graph.invoke({"request": "scan.pdf", "size": int(oversized_mib * MIB)}, big)
        head = graph.get_state(big)
        values_before, tuple_before = copy.deepcopy(head.values), saver.get_tuple(head.config)
        (row_bytes,) = conn.execute("SELECT length(checkpoint) FROM checkpoints WHERE "
                                    "checkpoint_id = ?", (head_id(head),)).fetchone()
        last = guard.stats.last_checkpoint  # what the guard measured for that put
        guard_bytes = last.total_bytes if last else -1

        # --- resume: attach returns the oversized value; every SQL statement traced ---
        changes, error = conn.total_changes, None
        conn.set_trace_callback(trace.append)
        try:
            graph.invoke(None, big)
        except CheckpointTooLarge as exc:
            error = exc
        conn.set_trace_callback(None)
        changes, in_tx = conn.total_changes - changes, conn.in_transaction
        after, tuple_after = graph.get_state(big), saver.get_tuple(head.config)
        refusals = sorted(guard.stats.refused.elements())

        # --- between warning and limit: written, and logged -------------------------
        mid = {"configurable": {"thread_id": "warned"}}
        graph.invoke({"request": "photo.png", "size": int(warned_mib * MIB)}, mid)
        graph.invoke(None, mid)
        warned = [r for r in logged if r.levelno == logging.WARNING]
        attachment = graph.get_state(mid).values.get("attachment")
        intact = attachment == random_bytes(int(warned_mib * MIB), SEED)
        audit = sqlite_blob_audit(conn, limit)

        # --- the guard's cost on a normal put, interleaved in one run -----------------
        at = {"configurable": {"thread_id": "bench", "checkpoint_ns": ""}}
        cp, meta = tuple_before.checkpoint, tuple_before.metadata  # the same id, put again
        ms = interleave({"plain": lambda: saver.put(at, cp, meta, {}),
                         "guarded": lambda: guard.put(at, cp, meta, {})},
                        max(1, puts // rounds), k=rounds, q=50, by_call=True)
        saver.delete_thread("bench")

    start = trace.index(NODE_RETURNED) if NODE_RETURNED in trace else 0
    sql = [s for s in trace if s != NODE_RETURNED]
    after_node = [s for s in trace[start:] if s != NODE_RETURNED]
    w.show(f"refused: {error}")
    w.show("SQL in the refused run: " + "; ".join(s[:36] + "…" for s in sql)
           + f" | after the node returned: {len(after_node)} statements")
    w.show("largest blobs: " + ", ".join(f"{c} {format_bytes(m)}" for c, (m, _) in audit.items()))
    w.show(f"logged: {warned[-1].getMessage()[:140]}…" if warned else "logged: nothing")

    w.metric("normal_checkpoint_bytes", row_bytes, "bytes", f"<= {warn}")
    w.metric("guard_size_equals_stored_row", guard_bytes == row_bytes, target="== yes")
    w.metric("oversized_value", oversized_mib, "MiB", f"> {limit_mib}")
    w.metric("oversized_run_refused", error is not None, target="== yes")
    w.metric("message_names_size_limit_channel_fix", error is not None
             and f"{error.size_bytes:,} bytes" in str(error) and f"{limit:,} bytes" in str(error)
             and "'attachment'" in str(error) and "offload.py" in str(error), target="== yes")
    w.metric("hand_overs_refused", len(refusals), "calls", ">= 1")
    w.metric("previous_checkpoint_still_head", after.config == head.config, target="== yes")
    w.metric("previous_values_deep_equal", after.values == values_before and tuple_after
             is not None and tuple_after.checkpoint == tuple_before.checkpoint, target="== yes")
    w.metric("still_paused_before_attach", after.next == ("attach",), target="== yes")
    w.metric("sql_statements_in_refused_run", len(sql), "statements")
    w.metric("non_select_statements", sum(not s.upper().startswith("SELECT") for s in sql),
             "statements", "== 0")
    w.metric("statements_after_node_returned", len(after_node), "statements", "== 0")
    w.metric("rows_changed_by_refusal", changes, "rows", "== 0")
    w.metric("transaction_open_after_refusal", in_tx, target="== no")
    w.metric("largest_blob_in_database", max(m for m, _ in audit.values()), "bytes",
             f"<= {limit}")
    w.metric("blobs_over_limit", sum(n for _, n in audit.values()), "rows", "== 0")
    w.metric("warned_value_written_intact", intact, target="== yes")
    w.metric("warnings_logged", len(warned), "warnings", ">= 1")
    w.show(f"put, {rounds} interleaved rounds: {ms.describe()}; guarded/plain "
           f"{ms.ratio_spread('guarded', 'plain')}")
    w.metric("put_plain", ms["plain"].median, "ms")
    w.metric("put_guarded", ms["guarded"].median, "ms")
    w.metric("guard_overhead_ratio", ms.ratio("guarded", "plain"), "x")
    w.note("Python's sqlite3 opens a transaction (BEGIN) implicitly only before INSERT, UPDATE, "
           "DELETE or REPLACE; the SELECTs ran in autocommit while LangGraph loaded the paused "
           "checkpoint. No BEGIN, no DML, total_changes unchanged: no write transaction opened.")
    w.note(f"The oversized step reached the guard {len(refusals)} times ({', '.join(refusals)})"
           f": each was refused and logged; invoke raised the "
           f"{error.report.kind if error else 'no'} refusal.")
    w.note(f"The guard serializes each checkpoint once more to measure it: {puts} puts of the "
           f"{row_bytes:,}-byte checkpoint each way, alternating put by put, in {rounds} "
           "rounds; each figure is the median over rounds of the round's median put, the "
           "ratio the median of the rounds' ratios.")
    return w


if __name__ == "__main__":
    raise SystemExit(shared.witness.cli(main))
