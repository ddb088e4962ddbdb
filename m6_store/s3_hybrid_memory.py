"""6.3 Hybrid memory under a 10 KB budget: the same 200-turn conversation, naive and hybrid.

- naive: the chat graph keeps every message in the checkpoint, so each turn adds ~0.5 KB;
- hybrid: the memory chat graph keeps a window of messages in the checkpoint; older turns
  are summarised into the user's Store namespace, stated facts go to the Store as they are
  said, and the model is handed what the Store recalls by meaning.

``SizeGuardSaver`` (shared/savers/size_guard.py) with a 10 KB limit guards both on the same
SQLite file: it refuses the naive graph's first checkpoint above the limit, before anything
is written, and lets the hybrid one run to the end. Sizes are read back from the database:
``length(checkpoint)`` of each thread's rows (SQLite), the Store's rows (PostgreSQL).
"""

from __future__ import annotations

import logging
from pathlib import Path

import shared.witness
from shared.errors import CheckpointError
from shared.infra.postgres import create_database, postgres_server
from shared.savers.size_guard import captured_guard_log
from shared.witness import Witness, fresh_workdir
from shared.workloads.long_chat import FACTS, LAST, recalled, run_both, store_usage

KB = 1024


def growth(series: list[int], warmup: int) -> float:
    """Largest checkpoint of the run's second half over the largest of its first (after the
    window first fills): 1.0 is flat, whatever the window's sawtooth."""
    half = len(series) // 2
    return round(max(series[half:]) / max(series[warmup:half]), 3)


def main(workdir: Path | None = None, turns: int = 200, window: int = 8,
         limit_kb: int = 10) -> Witness:
    w = Witness("6.3", "Hybrid memory keeps every checkpoint under 10 KB")
    wd = fresh_workdir(workdir, "m6_s3_hybrid_memory")
    limit = limit_kb * KB
    try:
        with postgres_server(wd / "pg") as server, captured_guard_log(logging.ERROR):
            url = create_database(server, "ckpt_m6_s3_store")
            naive, hybrid = run_both(wd / "chat.sqlite", url, turns, window, limit)
            items, store_bytes = store_usage(url)
    except CheckpointError as exc:
        w.error = " ".join(str(exc).split())
        return w

    # --- naive: refused where it crosses the limit; nothing above it was written
    w.show(f"naive: refused at turn {naive.refused_turn} of {turns}: "
           f"{naive.refusal.split(', so nothing')[0]}")
    w.metric("naive_refused_at_turn", naive.refused_turn or 0, f"of {turns}", "> 0")
    w.metric("naive_largest_checkpoint_bytes", naive.largest_bytes, "bytes", f"<= {limit}")
    per_turn = (naive.bytes_per_turn[-1] - naive.bytes_per_turn[0]) / max(
        1, len(naive.bytes_per_turn) - 1)
    w.metric("naive_growth_bytes_per_turn", round(per_turn), "bytes/turn")
    # --- hybrid: every turn, under the limit, flat, and turn 1's facts recalled at the end
    w.show(f"hybrid: turn {turns} {LAST!r} -> {hybrid.last_reply!r}")
    sample = ", ".join(f"t{i + 1}={b:,}" for i, b in list(enumerate(hybrid.bytes_per_turn))[
        :: max(1, turns // 8)])
    w.show(f"hybrid checkpoint bytes by turn: {sample}")
    w.metric("hybrid_turns_completed", len(hybrid.bytes_per_turn), f"of {turns}",
             f"== {turns}")
    w.metric("hybrid_largest_checkpoint_bytes", hybrid.largest_bytes, "bytes", f"< {limit}")
    w.metric("hybrid_growth_second_half", growth(hybrid.bytes_per_turn, window), "x",
             "<= 1.1")
    w.metric("facts_from_turn_1_recalled_at_last_turn",
             round(100 * recalled(hybrid.last_reply) / len(FACTS)), "%", "== 100")
    w.metric("store_items", items, "items", "> 0")
    w.metric("store_bytes", store_bytes, "bytes")
    w.note(f"The window keeps {window} to {2 * window} messages: the hybrid's size is a "
           f"sawtooth, summarised into the Store each {window // 2} turns; the figure judged is "
           "the largest of the second half over the largest of the first.")
    w.note("store_bytes counts the values and their 256-dimension vectors (1 KB each), "
           "the price of searching by meaning.")
    return w


if __name__ == "__main__":
    raise SystemExit(shared.witness.cli(main))
