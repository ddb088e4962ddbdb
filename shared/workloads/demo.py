"""A SQLite checkpoint source from real graph runs, for the migration lessons and tests.

``build_demo_source(db, ledger, threads)`` runs the shared chat graph on ``threads``
conversations (two processes, merged row for row), then an approval paused in
``interrupt()``, a superstep whose second node fails while its sibling's writes are stored,
and a graph with a subgraph node (checkpoints under a non-empty ``checkpoint_ns``).
"""

from __future__ import annotations

import operator
import time
from contextlib import suppress
from pathlib import Path
from typing import Annotated, Any, TypedDict

from langchain_core.runnables import RunnableConfig
from langgraph.graph import START, StateGraph
from langgraph.graph.state import CompiledStateGraph

from shared.graph import Ledger, build_approval_graph, build_chat_graph
from shared.proc import child_result, start_child
from shared.savers.sqlite import open_sqlite_saver

DEMO_NAMES = ("Alice", "Bruno", "Chen", "Dana", "Emeka", "Farah", "Goran", "Hana")
DEMO_CITIES = ("Lisbon", "Osaka", "Lima", "Oslo", "Accra", "Quito", "Riga")
DEMO_SPECIAL = ["failed", "paused", "subgraph"]  # thread ids besides chat-NNNNN


def _cfg(thread: str) -> dict[str, Any]:
    return {"configurable": {"thread_id": thread}}


class Fan(TypedDict, total=False):
    done: Annotated[list[str], operator.add]
    x: int


def fan_graph(saver: Any, ledger: Ledger) -> CompiledStateGraph:
    """``good`` and ``flaky`` run in one superstep; ``flaky`` fails on its first attempt."""
    def good(state: Fan, config: RunnableConfig) -> Fan:
        ledger.record(config["configurable"]["thread_id"], "good", "start")
        return {"done": ["good"]}

    def flaky(state: Fan, config: RunnableConfig) -> Fan:
        thread = config["configurable"]["thread_id"]
        ledger.record(thread, "flaky", "start")
        if ledger.count(thread)["flaky"] == 1:
            _wait_for_sibling_write(saver, thread)
            raise RuntimeError("flaky: the first attempt fails")
        return {"done": ["flaky"]}

    builder = StateGraph(Fan).add_node("good", good).add_node("flaky", flaky)
    return builder.add_edge(START, "good").add_edge(START, "flaky").compile(checkpointer=saver)


def _wait_for_sibling_write(saver: Any, thread: str, timeout: float = 30.0) -> None:
    """Fail only once ``good``'s write is saved: on a busy machine ``flaky`` could otherwise
    fail first, and ``good``, still running, would not count as a finished sibling."""
    deadline = time.monotonic() + timeout
    config = {"configurable": {"thread_id": thread, "checkpoint_ns": ""}}
    while time.monotonic() < deadline:
        head = saver.get_tuple(config)
        if head and any(w[1] == "done" and w[2] == ["good"] for w in head.pending_writes or []):
            return
        time.sleep(0.01)
    raise TimeoutError(f"good's write on thread {thread!r} was not saved within {timeout:g} s")


def sub_graph(saver: Any) -> CompiledStateGraph:
    """A node that is a compiled graph: its checkpoints are stored under its own namespace."""
    inner = StateGraph(Fan).add_node("inc", lambda s: {"x": s["x"] + 1}).add_edge(START, "inc")
    return StateGraph(Fan).add_node("sub", inner.compile()).add_edge(START, "sub").compile(
        checkpointer=saver)


def chat_shard(db: str, first: int, count: int, turns: int) -> None:
    """Real chat-graph runs on threads chat-<first>... into one shard file (one process)."""
    with open_sqlite_saver(db) as saver:
        saver.conn.execute("PRAGMA synchronous = NORMAL")
        graph = build_chat_graph(saver)
        for i in range(first, first + count):
            for text in (f"Hi, my name is {DEMO_NAMES[i % 8]}.", f"I live in {DEMO_CITIES[i % 7]}.",
                         "What's my name?")[:turns]:
                graph.invoke({"messages": [("user", text)]}, _cfg(f"chat-{i:05d}"))


def build_demo_source(db: Path, ledger: Ledger, threads: int, turns: int = 3) -> None:
    """A SQLite checkpoint file from real graph runs: ``threads`` chat conversations (two
    processes, merged row for row), a paused approval, a failed step, a subgraph."""
    shards, half = [str(db.with_name(f"shard{k}.sqlite")) for k in (0, 1)], (threads + 1) // 2
    # Two fresh interpreters (nothing inherited, no __main__ guard needed), one shard each.
    children = [start_child("shared.workloads.demo:chat_shard", db=shard, first=first,
                            count=count, turns=turns)
                for shard, first, count in zip(shards, (0, half), (half, threads - half),
                                               strict=True)]
    try:
        for child in children:
            child_result(child, "shared.workloads.demo:chat_shard", timeout=1800)
    finally:
        for child in children:  # one failed: do not leave the other running
            if child.poll() is None:
                child.kill()
                child.communicate()
    with open_sqlite_saver(db) as saver:
        for shard in shards:  # the rows exactly as the graph wrote them
            saver.conn.execute("ATTACH ? AS shard", (shard,))
            saver.conn.execute("INSERT INTO checkpoints SELECT * FROM shard.checkpoints")
            saver.conn.execute("INSERT INTO writes SELECT * FROM shard.writes")
            saver.conn.commit()
            saver.conn.execute("DETACH shard")
            for leftover in Path(shard).parent.glob(Path(shard).name + "*"):
                leftover.unlink()  # merged: the shard (and any -wal/-shm) is not needed
        build_approval_graph(saver, ledger, "interrupt").invoke(
            {"request": "Refund order 7 for 30 EUR"}, _cfg("paused"))
        with suppress(RuntimeError):  # the failure: "good"'s writes stay as pending writes
            fan_graph(saver, ledger).invoke({"done": []}, _cfg("failed"))
        sub_graph(saver).invoke({"x": 1}, _cfg("subgraph"))
