"""PostgreSQL from several OS processes: chat workers serving one conversation, and writers.

``pg_pool(url)`` is the pool every process opens for itself (``PostgresSaver(pool)``), with
the connection settings ``PostgresSaver`` needs (autocommit, dict rows, and LangGraph's
``prepare_threshold=0``, which in psycopg 3 prepares every statement on the server at its first
use; ``None`` would disable prepared statements, as PgBouncer in transaction mode needs: see
``shared/savers/pooling.py``).

``ChatWorkers(url, 2)`` forks worker processes that each open their own pool and
``PostgresSaver`` and serve chat turns sent over a pipe, like two app servers behind a load
balancer; ``ask(i, thread_id, text)`` returns what worker ``i`` saw and answered.

``measure_pg_writers(url, processes)`` is Milestone 2's ``measure_process_writers`` for
PostgreSQL: forked writers start together and ``PostgresSaver.put`` small checkpoints (the
same 1 KiB payload) for ``seconds``, each with its own pool; same ``WriterStats`` back.
"""

from __future__ import annotations

import contextlib
import os
import statistics
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg
from langgraph.checkpoint.postgres import PostgresSaver
from psycopg_pool import ConnectionPool

from shared.bench import pause_tracing, percentile
from shared.graph import build_chat_graph
from shared.proc import child_ready, close_gate, fork_child, join_children, open_gate, read_results
from shared.savers.pooling import SAVER_KWARGS, open_saver_pool
from shared.savers.serde import graph_serde
from shared.workloads.sqlite_writers import WriterStats, small_checkpoint, write_json

# autocommit, dict_row, prepare_threshold=0 ("prepare on first use", not "never"): the one
# definition is SAVER_KWARGS in shared/savers/pooling.py
PG_KWARGS: dict[str, Any] = SAVER_KWARGS
# Errors that mean "another transaction was in the way", PostgreSQL's "database is locked".
LOCK_ERRORS = (psycopg.errors.LockNotAvailable, psycopg.errors.DeadlockDetected,
               psycopg.errors.SerializationFailure)


@contextmanager
def pg_pool(url: str, max_size: int = 4) -> Iterator[ConnectionPool]:
    """An open pool for ``PostgresSaver(pool)`` (``shared.savers.pooling``); closed on exit."""
    with open_saver_pool(url, min_size=1, max_size=max_size) as pool:
        yield pool


def setup_postgres(url: str) -> None:
    """Create or upgrade the checkpoint tables once, before any worker starts."""
    with PostgresSaver.from_conn_string(url) as saver:
        saver.setup()


# --- chat workers ---------------------------------------------------------------------------

def _chat_worker(url: str, pipe: Any) -> None:
    """One app server: its own pool and saver; serves (thread_id, text) until it gets None."""
    try:
        with pg_pool(url, max_size=2) as pool:
            graph = build_chat_graph(PostgresSaver(pool, serde=graph_serde()))
            pipe.send({"ready": os.getpid()})
            while (request := pipe.recv()) is not None:
                thread_id, text = request
                config = {"configurable": {"thread_id": thread_id}}
                try:
                    before = len(graph.get_state(config).values.get("messages", []))
                    out = graph.invoke({"messages": [("user", text)]}, config)
                    pipe.send({"pid": os.getpid(), "history_before": before,
                               "reply": out["messages"][-1].content,
                               "messages_after": len(out["messages"])})
                except Exception as exc:  # the parent reports it; the worker keeps serving
                    pipe.send({"pid": os.getpid(), "error": f"{type(exc).__name__}: {exc}"})
    finally:
        pipe.close()


class ChatWorkers:
    """``n`` forked chat workers on one PostgreSQL; ``close()`` stops and reaps them all."""

    def __init__(self, url: str, n: int = 2, timeout: float = 60.0) -> None:
        import multiprocessing

        self.timeout = timeout
        self.pipes: list[Any] = []
        self.children: list[Any] = []
        self.pids: list[int] = []
        try:
            for _ in range(n):
                parent_end, child_end = multiprocessing.Pipe()
                self.children.append(fork_child(_chat_worker, url, child_end))
                child_end.close()  # the child holds its own copy
                self.pipes.append(parent_end)
            self.pids = [self._receive(i)["ready"] for i in range(n)]
        except BaseException:
            self.close()
            raise

    def _receive(self, i: int) -> dict[str, Any]:
        if not self.pipes[i].poll(self.timeout):
            raise TimeoutError(f"chat worker {i} did not answer within {self.timeout:.0f} s")
        answer = self.pipes[i].recv()
        if "error" in answer:
            raise RuntimeError(f"chat worker {i} (pid {answer['pid']}): {answer['error']}")
        return answer

    def ask(self, i: int, thread_id: str, text: str) -> dict[str, Any]:
        """Worker ``i`` serves one turn: pid, history_before, reply, messages_after."""
        self.pipes[i].send((thread_id, text))
        return self._receive(i)

    def close(self) -> None:
        for pipe in self.pipes:
            with contextlib.suppress(OSError):  # the worker is already gone
                pipe.send(None)
        join_children(self.children, timeout=30)
        for pipe in self.pipes:
            pipe.close()

    def __enter__(self) -> ChatWorkers:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# --- concurrent writers ---------------------------------------------------------------------

@dataclass
class PgWriterStats(WriterStats):
    """``WriterStats`` plus the first error messages, so a failure can be read, not guessed."""

    error_examples: list[str] = field(default_factory=list)


def _pg_writer(url: str, out: str, gate: str, seconds: float, payload_bytes: int,
               index: int) -> None:
    """One writer process: its own pool, ``put`` small checkpoints until the time is up."""
    latencies: list[float] = []
    locked = other = 0
    errors: list[str] = []
    with pg_pool(url, max_size=1) as pool:
        saver = PostgresSaver(pool, serde=graph_serde())
        config: dict[str, Any] = {"configurable": {"thread_id": f"pg-writer-{index}",
                                                   "checkpoint_ns": ""}}
        start_at = child_ready(gate, index)  # every writer's pool open: all start together
        pause_tracing()  # timed from here: no coverage tracer in the way (see shared.bench)
        while time.time() < start_at:
            time.sleep(0.001)
        while time.time() < start_at + seconds:
            cp = small_checkpoint(payload_bytes)
            t0 = time.perf_counter()
            try:
                config = saver.put(config, cp, {"source": "loop", "step": len(latencies)}, {})
                latencies.append((time.perf_counter() - t0) * 1000)
            except LOCK_ERRORS as exc:
                locked += 1
                errors.append(str(exc))
            except psycopg.Error as exc:
                other += 1
                errors.append(f"{type(exc).__name__}: {exc}")
    write_json(Path(out), {"latencies": latencies, "locked": locked, "other": other,
                            "errors": errors[:3]})


def measure_pg_writers(url: str, workdir: Path, processes: int, seconds: float = 1.5,
                       payload_bytes: int = 1024, start_delay_s: float = 0.05) -> PgWriterStats:
    """Fork ``processes`` writers on ``url``; they start together and write for ``seconds``.

    ``workdir`` holds each writer's result file until it is read. ``busy_timeout_ms`` in the
    result is 0: PostgreSQL has no file lock to wait on.
    """
    outs = [workdir / f"pg-w{processes}-{i}.json" for i in range(processes)]
    gate = str(workdir / f"pg-w{processes}.gate")
    close_gate(gate, processes)
    children = [fork_child(_pg_writer, url, str(o), gate, seconds, payload_bytes, i)
                for i, o in enumerate(outs)]
    open_gate(gate, children, lead_s=start_delay_s)  # once every pool is open
    join_children(children, timeout=start_delay_s + seconds + 60)
    close_gate(gate, processes)
    results = read_results(outs, "PostgreSQL writer processes")
    latencies = [v for r in results for v in r["latencies"]]
    return PgWriterStats(
        processes=processes, busy_timeout_ms=0, seconds=seconds, writes=len(latencies),
        lock_errors=sum(r["locked"] for r in results),
        other_errors=sum(r["other"] for r in results),
        writes_per_s=len(latencies) / seconds,
        p50_ms=statistics.median(latencies) if latencies else 0.0,
        p99_ms=percentile(latencies, 99),
        error_examples=[e for r in results for e in r["errors"]][:3])
