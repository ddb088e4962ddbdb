"""Generated checkpoint traffic for measurements at scale (100,000 rows in seconds).

``bulk_put`` writes rows exactly as ``SqliteSaver.put`` does (the saver's own serializer for
the checkpoint, JSON for the metadata, the parent id chained per thread) but in one
transaction, because 100,000 separate commits would measure fsync, not the lesson.
``tests/test_m2_production.py`` checks that a bulk row is byte-identical to a ``put`` row.
"""

from __future__ import annotations

import json
import random
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any

from langgraph.checkpoint.base import Checkpoint, empty_checkpoint, get_checkpoint_metadata
from langgraph.checkpoint.base.id import uuid6
from langgraph.checkpoint.sqlite import SqliteSaver

SESSION_TYPES = ("chat", "support", "onboarding", "research")


@dataclass(frozen=True)
class TaggedCheckpoint:
    thread_id: str
    checkpoint: Checkpoint
    metadata: dict[str, Any]


def tagged_checkpoints(n: int, threads: int, users: int, seed: int = 42,
                       payload_bytes: int = 200) -> Iterator[TaggedCheckpoint]:
    """``n`` checkpoints over ``threads`` threads, each thread owned by one of ``users``.

    Metadata: ``user_id`` (fixed per thread), ``session_type`` (fixed per thread) and
    ``step`` (0, 1, 2, ... within the thread), besides LangGraph's ``source``.
    """
    rng = random.Random(seed)
    owners = [(f"user-{rng.randrange(users):04d}", rng.choice(SESSION_TYPES))
              for _ in range(threads)]
    steps = [0] * threads
    for i in range(n):
        t = i % threads
        user, session = owners[t]
        cp = empty_checkpoint()
        cp["id"] = str(uuid6())
        cp["channel_values"] = {"doc": rng.randbytes(payload_bytes // 2).hex()}
        yield TaggedCheckpoint(f"thread-{t:05d}", cp, {
            "source": "loop", "step": steps[t], "parents": {},
            "user_id": user, "session_type": session})
        steps[t] += 1


def bulk_put(saver: SqliteSaver, items: Iterable[TaggedCheckpoint], batch: int = 5000,
             on_batch: Callable[[int], None] | None = None) -> int:
    """Insert ``items`` as ``SqliteSaver.put`` would, in one transaction; returns the count."""
    saver.setup()
    parents: dict[str, str | None] = {}
    rows: list[tuple[Any, ...]] = []
    total = 0
    with saver.lock, saver.conn:
        for item in items:
            type_, blob = saver.serde.dumps_typed(item.checkpoint)
            config = {"configurable": {"thread_id": item.thread_id, "checkpoint_ns": ""}}
            meta = json.dumps(get_checkpoint_metadata(config, item.metadata),  # as put() does
                              ensure_ascii=False).encode("utf-8", "ignore")
            rows.append((item.thread_id, "", item.checkpoint["id"], parents.get(item.thread_id),
                         type_, blob, meta))
            parents[item.thread_id] = item.checkpoint["id"]
            if len(rows) >= batch:
                total += _flush(saver, rows, on_batch)
        total += _flush(saver, rows, on_batch)
    return total


def _flush(saver: SqliteSaver, rows: list[tuple[Any, ...]],
           on_batch: Callable[[int], None] | None) -> int:
    saver.conn.executemany(
        "INSERT OR REPLACE INTO checkpoints (thread_id, checkpoint_ns, checkpoint_id, "
        "parent_checkpoint_id, type, checkpoint, metadata) VALUES (?, ?, ?, ?, ?, ?, ?)", rows)
    n = len(rows)
    rows.clear()
    if on_batch:
        on_batch(n)
    return n
