"""A long conversation, run through the naive and the hybrid chat graphs under a size guard.

Used by lesson 6.3 and by ``make bench`` (shared/benchmarks/memory.py). Turn 1 states four
facts, the turns between are small talk, the last turn asks for all four facts back. Every
checkpoint size is read from the SQLite file after the turn (``length(checkpoint)`` of the
thread's newest row: the exact bytes stored), the Store's items and bytes from PostgreSQL.
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from shared.graph import MemoryContext, build_chat_graph, build_memory_chat_graph
from shared.infra.postgres import connect
from shared.savers.size_guard import CheckpointTooLarge, SizeGuardSaver
from shared.savers.sqlite import open_sqlite_saver
from shared.store.memory import open_memory_store

FACTS = {"name": "Alice", "city": "Lisbon", "colour": "teal", "job": "pilot"}
FIRST = "My name is Alice. I live in Lisbon. My favourite colour is teal. I work as a pilot."
LAST = "What is my name? Where do I live? What is my favourite colour? What do I do?"
_TOPICS = ["the quarterly report", "a late train", "the new espresso machine", "a code review",
           "the weather on the coast", "a book about bridges", "the team offsite",
           "a broken umbrella", "the budget spreadsheet", "a podcast on sailing"]


def conversation(turns: int) -> list[str]:
    """``turns`` user messages: the facts, small talk that states no fact, the questions."""
    middle = [f"Turn {i}: today I thought about {_TOPICS[i % len(_TOPICS)]}, nothing more."
              for i in range(2, turns)]
    return [FIRST, *middle, LAST]


@dataclass
class Arm:
    """One graph's run: checkpoint bytes after each turn, and where the guard refused."""

    name: str
    bytes_per_turn: list[int] = field(default_factory=list)
    refused_turn: int | None = None
    refusal: str = ""
    largest_bytes: int = 0
    last_reply: str = ""


def _newest_bytes(conn: sqlite3.Connection, thread: str) -> int:
    row = conn.execute("SELECT length(checkpoint) FROM checkpoints WHERE thread_id = ? "
                       "ORDER BY checkpoint_id DESC LIMIT 1", (thread,)).fetchone()
    return int(row[0]) if row else 0


def _largest_bytes(conn: sqlite3.Connection, thread: str) -> int:
    row = conn.execute("SELECT coalesce(max(length(checkpoint)), 0) FROM checkpoints "
                       "WHERE thread_id = ?", (thread,)).fetchone()
    return int(row[0])


def _run(arm: Arm, graph: Any, conn: sqlite3.Connection, texts: list[str],
         context: Any = None) -> None:
    config: Any = {"configurable": {"thread_id": arm.name}}
    for turn, text in enumerate(texts, start=1):
        try:
            out = graph.invoke({"messages": [("user", text)]}, config, context=context)
        except CheckpointTooLarge as exc:
            arm.refused_turn, arm.refusal = turn, str(exc)
            break
        arm.bytes_per_turn.append(_newest_bytes(conn, arm.name))
        arm.last_reply = str(out["messages"][-1].content)
    arm.largest_bytes = _largest_bytes(conn, arm.name)


def store_usage(url: str) -> tuple[int, int]:
    """(items, bytes) in the Store's tables: values and their vectors, as PostgreSQL stores
    them."""
    with connect(url, who="the Store's PostgreSQL at") as conn:
        items, value_bytes = conn.execute(
            "SELECT count(*), coalesce(sum(pg_column_size(value)), 0) FROM store").fetchone()
        (vector_bytes,) = conn.execute(
            "SELECT coalesce(sum(pg_column_size(embedding)), 0) FROM store_vectors").fetchone()
    return int(items), int(value_bytes) + int(vector_bytes)


def run_both(sqlite_path: Path, url: str, turns: int, window: int,
             limit_bytes: int) -> tuple[Arm, Arm]:
    """The same conversation through the naive and the hybrid graph, both size-guarded."""
    texts = conversation(turns)
    naive, hybrid = Arm("naive"), Arm("hybrid")
    with open_sqlite_saver(sqlite_path) as saver, open_memory_store(url) as store:
        guard = SizeGuardSaver(saver, limit_bytes=limit_bytes, warn_bytes=limit_bytes)
        _run(naive, build_chat_graph(guard), saver.conn, texts)
        _run(hybrid, build_memory_chat_graph(guard, store, window=window), saver.conn, texts,
             MemoryContext("alice"))
    return naive, hybrid


def recalled(reply: str) -> int:
    """How many of turn 1's facts the reply states."""
    return sum(value in reply for value in FACTS.values())
