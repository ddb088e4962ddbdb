"""Chat traffic through PostgresSaver while the server is killed and restarted (lesson 5.7).

Two arms run side by side on the same server, each with its own pool and worker threads
invoking the shared chat graph: ``retrying`` (``RetryingSaver(PostgresSaver(pool))``) and
``plain`` (``PostgresSaver(pool)``). Between the graph's saver and PostgresSaver sits
``AckLedger``, which records every ``put`` that returned: an acknowledged checkpoint, which
must still be there after all the crashes. Afterwards ``audit`` reads the database back.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from typing import Any

import psycopg
from langgraph.checkpoint.base import BaseCheckpointSaver
from langgraph.checkpoint.postgres import PostgresSaver
from psycopg_pool import ConnectionPool

from shared.graph import build_chat_graph
from shared.savers.pooling import open_saver_pool
from shared.savers.retry import RetryingSaver
from shared.savers.serde import graph_serde
from shared.savers.wrapper import WrappingSaver

ARMS = ("retrying", "plain")


class AckLedger(WrappingSaver):
    """Records ``(thread_id, checkpoint_ns, checkpoint_id)`` of every ``put`` that returned."""

    def __init__(self, inner: BaseCheckpointSaver, acked: list[tuple[str, str, str]]) -> None:
        super().__init__(inner)
        self.acked = acked

    def _call(self, op: str, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        result = fn(*args, **kwargs)
        if op == "put":
            c = result["configurable"]
            self.acked.append((c["thread_id"], c["checkpoint_ns"], c["checkpoint_id"]))
        return result


@dataclass
class Arm:
    """One side of the drill: its invocations, errors, acknowledged checkpoints, retries."""

    name: str
    ok: int = 0
    failed: int = 0
    errors: Counter[str] = field(default_factory=Counter)
    turns: Counter[str] = field(default_factory=Counter)  # thread -> acknowledged turns
    failed_threads: set[str] = field(default_factory=set)
    acked: list[tuple[str, str, str]] = field(default_factory=list)
    retries: list[int] = field(default_factory=list)  # attempt numbers of each retry
    lock: threading.Lock = field(default_factory=threading.Lock)

    def invoke(self, graph: Any, thread_id: str, text: str) -> bool:
        """One turn, counted: returned (ok) or raised (failed, by error type); never raises.
        A failure is followed by a short pause, as a client would back off."""
        try:
            graph.invoke({"messages": [("user", text)]},
                         {"configurable": {"thread_id": thread_id}})
        except Exception as exc:  # counted, never hidden: the drills' claims are about these
            with self.lock:
                self.failed += 1
                self.errors[type(exc).__name__] += 1
                self.failed_threads.add(thread_id)
            time.sleep(0.05)
            return False
        with self.lock:
            self.ok += 1
            self.turns[thread_id] += 1
        return True


def _worker(arm: Arm, graph: Any, index: int, turns_per_thread: int,
            stop: threading.Event) -> None:
    conversation = turn = 0
    while not stop.is_set():
        thread_id = f"{arm.name}-{index}-{conversation}"
        arm.invoke(graph, thread_id, f"turn {turn} of {thread_id}")  # the plain arm fails
        turn += 1
        if turn % turns_per_thread == 0:
            conversation += 1


@contextmanager
def traffic(url: str, *, workers: int = 2, turns_per_thread: int = 4, retries: int = 20,
            first_delay: float = 0.1, max_delay: float = 2.0, pool_timeout: float = 0.5
            ) -> Iterator[dict[str, Arm]]:
    """Both arms' workers run for the block's lifetime; on exit they finish their current
    invocation (a retrying one may still be waiting out a restart) and stop."""
    arms = {name: Arm(name) for name in ARMS}
    stop = threading.Event()
    threads: list[threading.Thread] = []
    # While the server is down the pools log a warning per failed reconnection, and psycopg
    # one per pipeline on a lost connection: the drill counts what matters instead.
    pool_log = logging.getLogger("psycopg")
    level = pool_log.level
    with ExitStack() as stack:
        pool_log.setLevel(logging.ERROR)
        stack.callback(pool_log.setLevel, level)
        for name, arm in arms.items():
            pool: ConnectionPool = stack.enter_context(open_saver_pool(
                url, min_size=1, max_size=workers, timeout=pool_timeout, name=name,
                check=ConnectionPool.check_connection))
            saver: BaseCheckpointSaver = AckLedger(
                PostgresSaver(pool, serde=graph_serde()), arm.acked)
            if name == "retrying":
                saver = RetryingSaver(saver, retries=retries, first_delay=first_delay,
                                      max_delay=max_delay,
                                      on_retry=lambda op, n, d, e, a=arm: a.retries.append(n))
            graph = build_chat_graph(saver)
            threads += [threading.Thread(target=_worker, name=f"{name}-{i}", daemon=True,
                                         args=(arm, graph, i, turns_per_thread, stop))
                        for i in range(workers)]
        for t in threads:
            t.start()
        try:
            yield arms
        finally:
            stop.set()
            for t in threads:
                t.join(timeout=120)


@dataclass
class Audit:
    lost: dict[str, int]  # arm -> acknowledged checkpoints not found
    duplicate_messages: int  # a message id stored twice in one conversation
    duplicate_steps: int  # two checkpoints of one thread at the same step
    mismatched_threads: int  # retrying arm: messages != 2 x acknowledged turns
    threads_checked: int


def audit(url: str, arms: dict[str, Arm]) -> Audit:
    """Read everything back: ledgers against the table, each conversation's messages."""
    with psycopg.connect(url) as conn:
        present = set(conn.execute(
            "SELECT thread_id, checkpoint_ns, checkpoint_id FROM checkpoints").fetchall())
        duplicate_steps = conn.execute(
            "SELECT count(*) - count(DISTINCT (thread_id, checkpoint_ns, metadata->>'step')) "
            "FROM checkpoints").fetchone()[0]
    lost = {name: len(set(arm.acked) - present) for name, arm in arms.items()}
    duplicates = mismatched = checked = 0
    with open_saver_pool(url, min_size=1, max_size=1) as pool:
        graph = build_chat_graph(PostgresSaver(pool, serde=graph_serde()))
        for arm in arms.values():
            for thread_id, turns in arm.turns.items():
                state = graph.get_state({"configurable": {"thread_id": thread_id}})
                ids = [m.id for m in state.values.get("messages", [])]
                duplicates += len(ids) - len(set(ids))
                checked += 1
                if arm.name == "retrying" and len(ids) != 2 * turns:
                    mismatched += 1
    return Audit(lost, duplicates, duplicate_steps, mismatched, checked)
