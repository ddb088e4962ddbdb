"""Milestone 4, 4.6 and 4.7: the live cutover, the dual-write saver, and many servers."""

from __future__ import annotations

import asyncio
import itertools
import logging
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import AsyncGenerator
from pathlib import Path
from typing import Any

import pytest
from langgraph.checkpoint.base import BaseCheckpointSaver, empty_checkpoint
from langgraph.checkpoint.base.id import uuid6
from langgraph.checkpoint.memory import InMemorySaver
from langgraph.checkpoint.postgres import PostgresSaver
from langgraph.checkpoint.postgres.aio import AsyncPostgresSaver
from langgraph.checkpoint.sqlite import SqliteSaver
from langgraph.checkpoint.sqlite.aio import AsyncSqliteSaver

from shared import ROOT
from shared.conformance import detected_capabilities, report_failures, run_conformance
from shared.errors import CheckpointError
from shared.graph import build_chat_graph
from shared.infra.postgres import create_database
from shared.ops.cutover import Deployment, backfill, verify_live
from shared.ops.migrate import verify
from shared.savers import open_sqlite_saver
from shared.savers.dualwrite import (
    DualWriteSaver,
    SecondaryWriteError,
    ShareRouter,
    thread_bucket,
)
from shared.savers.wrapper import claimed_capabilities

BASE = ["delete_thread", "get_tuple", "list", "put", "put_writes"]


# --- the witnesses, metric by metric --------------------------------------------------------


# --- the dual-write saver: conformance and claims --------------------------------------------

Claims = list[tuple[set[str], set[str]]]


def _dual(a: BaseCheckpointSaver, b: BaseCheckpointSaver, share: float | None,
          claims: Claims) -> DualWriteSaver:
    """The pair under test; records (what both inner savers claim, what the pair claims)."""
    dual = DualWriteSaver(a, b, router=ShareRouter(share) if share else None)
    claims.append((claimed_capabilities(a) & claimed_capabilities(b), claimed_capabilities(dual)))
    return dual


def _passes_claiming_what_both_have(report: Any, claims: Claims) -> None:
    assert report.passed_all(), report_failures(report)
    assert detected_capabilities(report) == BASE
    assert claims and all(inner == mine for inner, mine in claims)


@pytest.mark.parametrize("share", [None, 1.0])
def test_conformance_in_memory_pair(share: float | None) -> None:
    claims: Claims = []

    async def factory() -> AsyncGenerator[BaseCheckpointSaver, None]:
        yield _dual(InMemorySaver(), InMemorySaver(), share, claims)

    _passes_claiming_what_both_have(
        run_conformance("DualWriteSaver[InMemorySaver, InMemorySaver]", factory), claims)


@pytest.mark.parametrize("share", [None, 1.0])  # reads from SQLite, or all from PostgreSQL
def test_conformance_async_sqlite_and_postgres(share: float | None, tmp_path: Path,
                                               pg_url: str) -> None:
    n = itertools.count()
    claims: Claims = []

    async def factory() -> AsyncGenerator[BaseCheckpointSaver, None]:
        i = next(n)  # a fresh pair per capability suite: the suite expects empty savers
        url = create_database(pg_url, f"dual_conformance_{i}")
        async with AsyncSqliteSaver.from_conn_string(str(tmp_path / f"c{i}.sqlite")) as a, \
                AsyncPostgresSaver.from_conn_string(url) as b:
            await a.setup()
            await b.setup()
            yield _dual(a, b, share, claims)

    _passes_claiming_what_both_have(
        run_conformance("DualWriteSaver[AsyncSqliteSaver, AsyncPostgresSaver]", factory), claims)


def test_claims_only_what_both_inner_savers_have(pg_db: str) -> None:
    with PostgresSaver.from_conn_string(pg_db) as pg:
        lite = SqliteSaver(sqlite3.connect(":memory:", check_same_thread=False))
        dual = DualWriteSaver(lite, pg)
        assert claimed_capabilities(dual) == claimed_capabilities(lite) & claimed_capabilities(pg)
        assert "aput" not in claimed_capabilities(dual)  # PostgresSaver has no async API
        assert "prune" not in claimed_capabilities(dual)  # SqliteSaver has no prune
        assert type(dual).__name__ == "DualWriteSaver[SqliteSaver, PostgresSaver]"
    with pytest.raises(TypeError, match="must be a BaseCheckpointSaver"):
        DualWriteSaver(InMemorySaver(), object())  # type: ignore[arg-type]


# --- routing ---------------------------------------------------------------------------------

def test_routing_is_stable_and_close_to_its_share() -> None:
    ids = [f"thread-{i}" for i in range(20_000)]
    chosen = {}
    for share in (0.1, 0.5, 1.0):
        router = ShareRouter(share)
        chosen[share] = {t for t in ids if router(t)}
        assert chosen[share] == {t for t in ids if router(t)}  # same answer every time
        assert abs(len(chosen[share]) / len(ids) - share) < 0.015
    assert chosen[0.1] <= chosen[0.5] <= chosen[1.0]  # raising the share never moves one back
    assert not any(ShareRouter(0.0)(t) for t in ids[:1000])
    # another interpreter, another hash seed: the same buckets
    code = ("from shared.savers.dualwrite import thread_bucket as b; "
            "print([b(f'thread-{i}') for i in range(50)])")
    run = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True,
                         text=True, timeout=60, env={"PYTHONPATH": str(ROOT),
                                                     "PYTHONHASHSEED": "12345"})
    assert run.returncode == 0, run.stderr
    assert run.stdout.strip() == str([thread_bucket(f"thread-{i}") for i in range(50)])
    with pytest.raises(CheckpointError, match=r"outside 0\.\.1"):
        ShareRouter(1.5)


def test_reads_go_where_the_router_says() -> None:
    router = ShareRouter(0.5)
    dual = DualWriteSaver(InMemorySaver(), InMemorySaver(), router=router)
    threads = [f"t{i}" for i in range(200)]
    for t in threads:
        cp = empty_checkpoint()
        dual.put({"configurable": {"thread_id": t, "checkpoint_ns": ""}}, cp, {}, {})
    for _ in range(3):
        for t in threads:
            assert dual.get_tuple({"configurable": {"thread_id": t}}) is not None
    by_thread = dual.thread_reads
    assert all((side == "secondary") == router(t) for t, side in by_thread)
    assert len(by_thread) == 200  # each thread read on one side only, all three times
    assert dual.reads["secondary"] == 3 * sum(router(t) for t in threads)


# --- one side's write fails ------------------------------------------------------------------

class FlakySaver(InMemorySaver):
    """An InMemorySaver whose writes fail while ``down`` is set."""

    down = False

    def _check(self) -> None:
        if self.down:
            raise ConnectionError("server closed the connection unexpectedly")

    def put(self, *args: Any, **kwargs: Any) -> Any:
        self._check()
        return super().put(*args, **kwargs)

    async def aput(self, *args: Any, **kwargs: Any) -> Any:
        self._check()
        return await super().aput(*args, **kwargs)

    def put_writes(self, *args: Any, **kwargs: Any) -> None:
        self._check()
        super().put_writes(*args, **kwargs)

    async def aput_writes(self, *args: Any, **kwargs: Any) -> None:
        self._check()
        await super().aput_writes(*args, **kwargs)


def _ask(graph: Any, thread: str, text: str) -> str:
    out = graph.invoke({"messages": [("user", text)]}, {"configurable": {"thread_id": thread}})
    return out["messages"][-1].content


def test_failing_secondary_write_fails_the_call_is_recorded_and_repaired(
        caplog: pytest.LogCaptureFixture) -> None:
    primary, secondary = InMemorySaver(), FlakySaver()
    dual = DualWriteSaver(primary, secondary, router=ShareRouter(1.0))
    graph = build_chat_graph(dual)
    assert _ask(graph, "t1", "Hi, my name is Alice.") == "Nice to meet you, Alice."
    assert dual.reads["secondary"] >= 1 and dual.reads["primary"] == 0

    secondary.down = True
    with caplog.at_level(logging.ERROR, "shared.savers.dualwrite"), \
            pytest.raises(SecondaryWriteError, match=r"failed on the secondary.*repair"):
        _ask(graph, "t1", "I live in Oslo.")
    assert dual.diverged_threads == {"t1"}
    assert dual.divergences[0].thread_ids == ("t1",)
    assert "ConnectionError" in dual.divergences[0].error
    assert any("divergence" in r.getMessage() for r in caplog.records)
    # the diverged thread is read from the primary, whatever the router says
    reads_before = dual.reads["primary"]
    assert dual.get_tuple({"configurable": {"thread_id": "t1"}}) is not None
    assert dual.reads["primary"] == reads_before + 1
    assert verify(primary, secondary, threads=["t1"]).missing > 0  # really diverged

    secondary.down = False
    assert dual.repair() == ["t1"]
    check = verify(primary, secondary, threads=["t1"])
    assert (check.missing, check.mismatches) == (0, 0), check.examples
    assert not dual.diverged_threads
    assert _ask(graph, "t1", "What's my name?") == "Your name is Alice."
    assert dual.thread_reads["t1", "secondary"] >= 2  # back on the secondary


def test_failing_secondary_in_record_mode_and_async() -> None:
    secondary = FlakySaver()
    secondary.down = True
    dual = DualWriteSaver(InMemorySaver(), secondary, on_secondary_error="record")
    assert _ask(build_chat_graph(dual), "r1", "Hi, my name is Bruno.") == \
        "Nice to meet you, Bruno."
    assert dual.diverged_threads == {"r1"} and len(dual.divergences) >= 1

    strict = DualWriteSaver(InMemorySaver(), secondary)
    with pytest.raises(SecondaryWriteError):
        asyncio.run(build_chat_graph(strict).ainvoke(
            {"messages": [("user", "Hi")]}, {"configurable": {"thread_id": "a1"}}))
    assert strict.diverged_threads == {"a1"}
    with pytest.raises(CheckpointError, match="use 'raise' or 'record'"):
        DualWriteSaver(InMemorySaver(), InMemorySaver(), on_secondary_error="ignore")  # type: ignore[arg-type]


def test_failing_primary_write_never_reaches_the_secondary() -> None:
    primary, secondary = FlakySaver(), InMemorySaver()
    primary.down = True
    dual = DualWriteSaver(primary, secondary)
    with pytest.raises(ConnectionError):
        _ask(build_chat_graph(dual), "p1", "Hi, my name is Chiara.")
    assert list(secondary.list(None)) == []
    assert not dual.divergences


# --- the backfill -------------------------------------------------------------------------------

def test_backfill_keeps_writes_saved_ahead_of_their_checkpoint(tmp_path: Path) -> None:
    """LangGraph saves a task's writes concurrently with their checkpoint, often first."""
    with open_sqlite_saver(tmp_path / "old.sqlite") as lite:
        new = InMemorySaver()
        first = empty_checkpoint()
        head = lite.put({"configurable": {"thread_id": "t", "checkpoint_ns": ""}}, first,
                        {"step": 0}, {})  # history from before dual-write: SQLite only
        dual = DualWriteSaver(lite, new)
        second = empty_checkpoint()
        second["id"] = str(uuid6())
        ahead = {"configurable": {"thread_id": "t", "checkpoint_ns": "",
                                  "checkpoint_id": second["id"]}}
        dual.put_writes(ahead, [("messages", "hello")], "task-1", "")  # mid-step: no checkpoint
        totals = backfill(dual, ["t"])  # caught mid-step
        dual.put(head, second, {"step": 1}, {})  # the step's checkpoint lands after
        assert (totals.threads, totals.checkpoints) == (1, 1)
        check = verify(lite, new)
        assert (check.checkpoints, check.missing, check.mismatches) == (2, 0, 0), check.examples
        assert new.get_tuple(ahead).pending_writes == [("task-1", "messages", "hello")]
        live = verify_live(dual, ["t"])
        assert (live.checkpoints, live.missing, live.mismatches, live.extra) == (2, 0, 0, 0)


# --- the blue-green switch ---------------------------------------------------------------------

def test_deploy_waits_for_requests_on_the_old_graph() -> None:
    old, new = object(), object()
    deployment = Deployment(old, "old")  # type: ignore[arg-type]
    started = threading.Event()

    def slow_request() -> None:
        with deployment.request() as (graph, phase):
            assert (graph, phase) == (old, "old")
            started.set()
            time.sleep(0.3)

    worker = threading.Thread(target=slow_request)
    worker.start()
    started.wait(5)
    drain_s = deployment.deploy(new, "new")  # type: ignore[arg-type]
    assert drain_s >= 0.2 and not worker.is_alive()
    with deployment.request() as (graph, phase):
        assert (graph, phase) == (new, "new")
    worker.join()
