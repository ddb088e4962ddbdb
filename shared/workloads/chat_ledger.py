"""Live chat traffic with a ledger of acknowledged turns, timed by the SERVER's clock.

    with live_chat(url, workers=2) as traffic:   # threads on one pool, PostgresSaver
        ...                                      # back up, prune, fail over: anything
    traffic.ledger  # [(thread_id, checkpoint_id, started, acknowledged), ...]

Each worker takes turns on its own 8 conversations until the block ends. A turn's ``started``
is ``clock_timestamp()`` read just before ``invoke`` (<= any commit of the turn), its
``acknowledged`` just after ``invoke`` returned (>= every commit of the turn), both from the
server, so the client's clock (and its skew) plays no part in comparing them with server
times such as a snapshot's. ``checkpoint_id`` is the checkpoint the turn ended on.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from langgraph.checkpoint.postgres import PostgresSaver

from shared.graph import build_chat_graph
from shared.savers.serde import graph_serde
from shared.workloads.postgres_writers import pg_pool

Entry = tuple[str, str, datetime, datetime]


@dataclass
class ChatTraffic:
    ledger: list[Entry] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)  # counted and shown, never hidden
    stop: threading.Event = field(default_factory=threading.Event)


def _server_now(pool: Any) -> datetime:
    with pool.connection() as conn:
        return conn.execute("SELECT clock_timestamp() AS now").fetchone()["now"]


def _worker(pool: Any, worker: int, traffic: ChatTraffic) -> None:
    graph = build_chat_graph(PostgresSaver(pool, serde=graph_serde()))
    turn = 0
    while not traffic.stop.is_set():
        thread_id = f"w{worker}-c{turn % 8}"
        config = {"configurable": {"thread_id": thread_id}}
        try:
            started = _server_now(pool)
            graph.invoke({"messages": [("user", f"turn {turn}")]}, config)
            acked = _server_now(pool)
            cid = graph.get_state(config).config["configurable"]["checkpoint_id"]
            traffic.ledger.append((thread_id, cid, started, acked))
        except Exception as exc:
            traffic.errors.append(f"{type(exc).__name__}: {exc}")
        turn += 1


@contextmanager
def live_chat(url: str, workers: int = 2) -> Iterator[ChatTraffic]:
    """``workers`` chat threads writing through one pool until the block ends (then joined)."""
    traffic = ChatTraffic()
    with pg_pool(url, max_size=2 * workers) as pool:
        threads = [threading.Thread(target=_worker, args=(pool, i, traffic))
                   for i in range(workers)]
        for t in threads:
            t.start()
        try:
            yield traffic
        finally:
            traffic.stop.set()
            for t in threads:
                t.join()


__all__ = ["ChatTraffic", "Entry", "live_chat"]
