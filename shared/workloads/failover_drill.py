"""Chat traffic through a multi-host URL while the primary fails over (lesson 5.8).

Worker threads invoke the shared chat graph through ``RetryingSaver(AckLedger(PostgresSaver
(pool)))``, where the pool's conninfo lists both servers with ``target_session_attrs=
read-write``: whichever server is the primary gets the writes. Each conversation starts with
"Hi, my name is X." (shared/ops/cutover.py's script) and goes on for a few turns; every
acknowledged ``put`` is in the ledger with the time it returned, so the first write after a
kill dates the failover. ``recall`` asks each conversation at the end "What's my name?".
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from typing import Any

import psycopg
from langgraph.checkpoint.base import BaseCheckpointSaver
from langgraph.checkpoint.postgres import PostgresSaver
from psycopg_pool import ConnectionPool

from shared.graph import build_chat_graph
from shared.ops.cutover import scripted_turn
from shared.savers.pooling import SAVER_KWARGS, open_saver_pool
from shared.savers.retry import RetryingSaver
from shared.savers.serde import graph_serde
from shared.workloads.restart_drill import AckLedger, Arm

NAMES = ("Alice", "Bruno", "Chen", "Dalia", "Emeka", "Farah", "Goran", "Hana")


class TimedAckLedger(AckLedger):
    """``AckLedger`` that also notes when each acknowledged ``put`` was called and returned."""

    def __init__(self, inner: BaseCheckpointSaver, acked: list[tuple[str, str, str]],
                 times: list[tuple[float, float]]) -> None:
        super().__init__(inner, acked)
        self.times = times

    def _call(self, op: str, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        called = time.monotonic()
        result = super()._call(op, fn, *args, **kwargs)
        if op == "put":
            self.times.append((called, time.monotonic()))
        return result


@dataclass
class Drill:
    """The traffic's record: the arm (invocations, failures, ledger), names, ack times."""

    arm: Arm
    turns_per_thread: int
    names: dict[str, str] = field(default_factory=dict)  # thread -> the name it gave
    ack_times: list[tuple[float, float]] = field(default_factory=list)  # (called, returned)

    def acks_called_after(self, moment: float, until: float = float("inf")) -> list[float]:
        """When the acknowledged puts called after ``moment`` returned (those before
        ``until``). Called after the old primary and all its backends were gone, a put can
        only have been acknowledged by the new one."""
        return sorted(done for called, done in list(self.ack_times)
                      if called > moment and done < until)

    def first_write(self, killed: float, dead: float, timeout: float = 120) -> float:
        """Seconds from the kill to the first write acknowledged by the new primary."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if later := self.acks_called_after(dead):
                return later[0] - killed
            time.sleep(0.01)
        return float("inf")

    def finished_threads(self) -> list[str]:
        """Conversations whose worker has moved on: their history no longer changes."""
        with self.arm.lock:
            return sorted(t for t, n in self.arm.turns.items() if n >= self.turns_per_thread
                          and t not in self.arm.failed_threads)


def _worker(drill: Drill, graph: Any, prefix: str, index: int, stop: threading.Event) -> None:
    arm, conversation, turn = drill.arm, 0, 0
    while not stop.is_set():
        thread_id = f"{prefix}-{index}-{conversation}"
        name = drill.names.setdefault(thread_id, NAMES[(index + conversation) % len(NAMES)])
        text, _ = scripted_turn(name, turn)
        arm.invoke(graph, thread_id, text)  # counted: the drill's claim is that none fail
        turn += 1
        if turn == drill.turns_per_thread:
            conversation, turn = conversation + 1, 0


def _saver(pool: ConnectionPool, drill: Drill, retries: int, max_delay: float
           ) -> BaseCheckpointSaver:
    ledger = TimedAckLedger(PostgresSaver(pool, serde=graph_serde()), drill.arm.acked,
                            drill.ack_times)
    return RetryingSaver(ledger, retries=retries, first_delay=0.05, max_delay=max_delay,
                         on_retry=lambda op, n, d, e: drill.arm.retries.append(n))


@contextmanager
def traffic(url: str, *, prefix: str, workers: int = 2, turns_per_thread: int = 4,
            retries: int = 60, max_delay: float = 0.5, pool_timeout: float = 1.0
            ) -> Iterator[Drill]:
    """Workers run for the block's lifetime; on exit they finish their invocation and stop.

    The arm is named ``retrying`` so that ``restart_drill.audit`` checks its conversations."""
    drill = Drill(Arm("retrying"), turns_per_thread)
    stop = threading.Event()
    pool_log = logging.getLogger("psycopg")  # a warning per failed reconnection: counted instead
    level = pool_log.level
    with ExitStack() as stack:
        pool_log.setLevel(logging.ERROR)
        stack.callback(pool_log.setLevel, level)
        pool = stack.enter_context(open_saver_pool(
            url, min_size=1, max_size=workers, timeout=pool_timeout, name=prefix,
            check=ConnectionPool.check_connection, reconnect_timeout=600))
        graph = build_chat_graph(_saver(pool, drill, retries, max_delay))
        threads = [threading.Thread(target=_worker, name=f"{prefix}-{i}", daemon=True,
                                    args=(drill, graph, prefix, i, stop)) for i in range(workers)]
        for t in threads:
            t.start()
        try:
            yield drill
        finally:
            stop.set()
            for t in threads:
                t.join(timeout=120)


def recall(url: str, drill: Drill) -> tuple[int, int]:
    """Ask every conversation "What's my name?" on ``url``; (threads asked, answered right)."""
    right = 0
    with open_saver_pool(url, min_size=1, max_size=1) as pool:
        graph = build_chat_graph(PostgresSaver(pool, serde=graph_serde()))
        threads = sorted(drill.arm.turns)
        for thread_id in threads:
            state = graph.invoke({"messages": [("user", "What's my name?")]},
                                 {"configurable": {"thread_id": thread_id}})
            drill.arm.turns[thread_id] += 1
            right += state["messages"][-1].content == f"Your name is {drill.names[thread_id]}."
    return len(threads), right


def same_history(primary_url: str, standby_url: str, thread_ids: list[str]
                 ) -> tuple[int, int, bool]:
    """``list`` each thread on both servers: (threads equal, checkpoints read on the standby,
    whether the standby's session was in recovery, i.e. a standby served the reads)."""
    def history(conn: psycopg.Connection[Any], thread_id: str) -> list[tuple[Any, ...]]:
        saver = PostgresSaver(conn, serde=graph_serde())
        return [(t.config["configurable"]["checkpoint_id"], t.checkpoint, t.metadata)
                for t in saver.list({"configurable": {"thread_id": thread_id}})]

    equal = read = 0
    with psycopg.connect(primary_url, **SAVER_KWARGS) as p, \
            psycopg.connect(standby_url, **SAVER_KWARGS) as s:
        in_recovery = s.execute("SELECT pg_is_in_recovery() AS r").fetchone()["r"]  # type: ignore[call-overload]
        for thread_id in thread_ids:
            mine, theirs = history(p, thread_id), history(s, thread_id)
            read += len(theirs)
            equal += bool(mine) and mine == theirs
    return equal, read, bool(in_recovery)
