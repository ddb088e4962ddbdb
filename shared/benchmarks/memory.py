"""Checkpoint bytes per turn, naive against hybrid memory, under the same 10 KB size guard.

The conversation of lesson 6.3 (``shared.workloads.long_chat``): the naive chat graph keeps
every message and is refused where it crosses the limit; the hybrid memory graph keeps a
message window and moves the rest into the Store. Sizes are read back from the SQLite file.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from shared.infra.postgres import create_database, postgres_server
from shared.workloads.long_chat import recalled, run_both, store_usage


def measure_memory(workdir: Path, turns: int = 200, window: int = 8, limit_kb: int = 10,
                   on_step: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Both graphs' checkpoint bytes after each turn, the refused turn, the Store's size."""
    step = on_step or (lambda _msg: None)
    workdir.mkdir(parents=True, exist_ok=True)
    with postgres_server(workdir / "pg") as server:
        url = create_database(server, "ckpt_bench_memory")
        step(f"{turns} turns, naive and hybrid (window {window} messages), {limit_kb} KB guard")
        naive, hybrid = run_both(workdir / "chat.sqlite", url, turns, window, limit_kb * 1024)
        items, store_bytes = store_usage(url)
    step(f"naive refused at turn {naive.refused_turn}; hybrid largest "
         f"{hybrid.largest_bytes:,} bytes over {len(hybrid.bytes_per_turn)} turns")
    return {"turns": turns, "window": window, "limit_bytes": limit_kb * 1024,
            "naive": {"bytes_per_turn": naive.bytes_per_turn,
                      "refused_turn": naive.refused_turn,
                      "largest_bytes": naive.largest_bytes},
            "hybrid": {"bytes_per_turn": hybrid.bytes_per_turn,
                       "largest_bytes": hybrid.largest_bytes,
                       "facts_recalled": recalled(hybrid.last_reply)},
            "store": {"items": items, "bytes": store_bytes}}
