"""The checkpoint operations an agent service runs, from several processes, timed one by one.

``measure_op_mix(url, processes=8, ...)`` forks writer processes that start together and,
for ``seconds``, each serve "turns" on threads of an existing history: read the latest
checkpoint (``get_tuple``), store the next one (``put``), its pending writes
(``put_writes``), read a page of the thread's history (``list``, limit 10), and a page of
the user's checkpoints across threads (``list`` with a metadata filter, limit 10). Each call
is timed on the wall clock, as the application waits for it.

Two ways to reach the database, as two services would:

- ``"pool"``: each process holds a ``psycopg_pool.ConnectionPool`` and one ``PostgresSaver``
  on it (``shared.savers.pooling``), so a call borrows an open connection;
- ``"connect"``: each call opens its own connection (``PostgresSaver.from_conn_string``) and
  closes it, which is what code without a pool does.

After start-up each process calls ``gc.freeze()`` (``freeze=False`` shows why): Python's
full collections otherwise walk every object the imports made (langchain, pydantic,
psycopg), a pause of tens of milliseconds that lands in the p99 of whatever call it
interrupts. Instagram's engineers made the same change for the same reason.

Turns arrive at random (a Poisson process of ``rate`` turns per second per process): a
service is not a closed loop, and a saturated 2-core machine would measure the scheduler,
not the database. A turn that falls behind its arrival time starts at once.
"""

from __future__ import annotations

import gc
import random
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path
from typing import Any, Literal

from langgraph.checkpoint.base import BaseCheckpointSaver, create_checkpoint
from langgraph.checkpoint.postgres import PostgresSaver

from shared.bench import run_queue_ns
from shared.proc import fork_child, join_children, read_results
from shared.savers.pooling import open_saver_pool
from shared.savers.serde import graph_serde
from shared.workloads.sqlite_writers import write_json

OPS = ("get_tuple", "put", "put_writes", "list", "list_filter")
# A page (10 checkpoints) decodes every message of every checkpoint on it, and the saver's
# decoding costs tens of µs of CPU per message (``decode_us_per_message`` measures it): pages
# of more than PAGE_MESSAGES messages are timed apart, under "<op>_long" (a 5-turn message
# window per checkpoint stays within).
PAGES, PAGE_MESSAGES, LONG = ("list", "list_filter"), 100, "_long"
ALL_OPS = OPS + tuple(op + LONG for op in PAGES)
Mode = Literal["pool", "connect"]
WARMUP_TURNS = 5


def decode_us_per_message(messages: int = 100, repeats: int = 30) -> float:
    """What this machine's CPU spends decoding one chat message as the saver does
    (``graph_serde().loads_typed`` of a stored message list), median of ``repeats``, in µs."""
    from langchain_core.messages import AIMessage, HumanMessage

    serde = graph_serde()
    stored = serde.dumps_typed([HumanMessage(f"turn {i}: my name is Alice") if i % 2 else
                                AIMessage(f"Nice to meet you, Alice ({i}).")
                                for i in range(messages)])
    runs = []
    for _ in range(repeats):
        t0 = time.perf_counter_ns()
        serde.loads_typed(stored)
        runs.append((time.perf_counter_ns() - t0) / 1e3 / messages)
    return sorted(runs)[len(runs) // 2]


def sample_targets(url: str, threads: int, seed: int = 0, max_user_checkpoints: int = 200,
                   ) -> tuple[list[str], dict[str, str]]:
    """``threads`` thread ids of the history, and the user of those whose user is selective.

    A filter is selective when its user owns at most ``max_user_checkpoints`` checkpoints:
    for a user who owns a large share of the table no index avoids reading and sorting all
    of their rows (5.2 shows it), so those threads skip the filtered ``list``.
    """
    import psycopg

    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("SELECT setseed(%s)", (((seed % 1000) / 1000),))
        rows = conn.execute(
            "SELECT thread_id, max(metadata->>'user_id') AS user_id FROM checkpoints "
            "WHERE checkpoint_ns = '' GROUP BY thread_id ORDER BY random() LIMIT %s",
            (threads,)).fetchall()
        owned = dict(conn.execute(
            "SELECT metadata->>'user_id', count(*) FROM checkpoints WHERE metadata->>'user_id' "
            "= ANY(%s) GROUP BY 1", ([r[1] for r in rows if r[1] is not None],)).fetchall())
    return [r[0] for r in rows], {r[0]: r[1] for r in rows
                                  if r[1] is not None and owned[r[1]] <= max_user_checkpoints}


def _saver_calls(url: str, mode: Mode) -> AbstractContextManager[Callable[[], Any]]:
    """A context whose value opens the saver for one call (the same one, or a new one) and
    gives it with the pids of the server backends that may serve it."""

    @contextmanager
    def pooled() -> Iterator[Callable[[], Any]]:
        with open_saver_pool(url, min_size=2, max_size=2, name="op-mix") as pool:
            saver = PostgresSaver(pool, serde=graph_serde())
            with pool.connection() as a, pool.connection() as b:  # both, held at once
                pids = [a.info.backend_pid, b.info.backend_pid]

            @contextmanager
            def same() -> Iterator[tuple[BaseCheckpointSaver, list[int]]]:
                yield saver, pids

            yield same

    @contextmanager
    def connecting() -> Iterator[Callable[[], Any]]:
        @contextmanager
        def fresh() -> Iterator[tuple[BaseCheckpointSaver, list[int]]]:
            with PostgresSaver.from_conn_string(url) as saver:
                saver.serde = graph_serde()
                yield saver, [saver.conn.info.backend_pid]

        yield fresh

    return pooled() if mode == "pool" else connecting()


def _turn(open_saver: Callable[[], Any], thread_id: str, user_id: str | None,
          times: dict[str, list[float]], ready: dict[str, list[float]]) -> None:
    """One turn on ``thread_id``: the five operations, each timed with its connection.

    ``times`` gets each call's wall-clock milliseconds; ``ready`` the same less the time this
    thread and the server backends sat in the run queue waiting for a CPU meanwhile.
    """

    def timed(op: str, fn: Callable[[BaseCheckpointSaver], Any]) -> Any:
        t0, queued = time.perf_counter_ns(), run_queue_ns()
        with open_saver() as (saver, backends):
            server_queued = sum(run_queue_ns(pid) for pid in backends)
            result = fn(saver)
            server_queued = sum(run_queue_ns(pid) for pid in backends) - server_queued
        elapsed = time.perf_counter_ns() - t0
        queued = run_queue_ns() - queued + server_queued
        if op in PAGES and sum(len(t.checkpoint["channel_values"].get("messages", ()))
                               for t in result) > PAGE_MESSAGES:
            op += LONG  # a page of long conversations: decoding is most of its time
        times[op].append(elapsed / 1e6)
        ready[op].append(max(0, elapsed - queued) / 1e6)
        return result

    config: dict[str, Any] = {"configurable": {"thread_id": thread_id, "checkpoint_ns": ""}}
    latest = timed("get_tuple", lambda s: s.get_tuple(config))
    if latest is None:
        return
    step = int(latest.metadata.get("step", 0)) + 1
    checkpoint = create_checkpoint(latest.checkpoint, None, step)
    versions = dict(checkpoint["channel_versions"])
    channel = "messages" if "messages" in checkpoint["channel_values"] else None
    new_versions = {}
    if channel is not None:  # the turn changes the conversation: a new blob version
        saver_version = versions.get(channel)
        new_versions[channel] = PostgresSaver.get_next_version(None, saver_version, None)
        versions[channel] = new_versions[channel]
        checkpoint["channel_versions"] = versions
    metadata = {**latest.metadata, "source": "loop", "step": step}
    saved = timed("put", lambda s: s.put(latest.config, checkpoint, metadata, new_versions))
    writes = [("messages", checkpoint["channel_values"].get("messages", []))]
    timed("put_writes", lambda s: s.put_writes(saved, writes, f"task-{step}"))
    timed("list", lambda s: list(s.list(config, limit=10)))
    if user_id is not None:
        timed("list_filter", lambda s: list(s.list(None, filter={"user_id": user_id},
                                                   limit=10)))


def _op_worker(url: str, mode: Mode, out: str, start_at: float, seconds: float, rate: float,
               thread_ids: list[str], user_of: dict[str, str], seed: int, freeze: bool) -> None:
    """One service process: paced turns on its threads until the time is up."""
    rng = random.Random(seed)
    times: dict[str, list[float]] = {op: [] for op in ALL_OPS}
    ready: dict[str, list[float]] = {op: [] for op in ALL_OPS}
    errors: list[str] = []
    with _saver_calls(url, mode) as open_saver:
        # Untimed turns first: a new server backend fills its catalog caches on its first
        # queries (milliseconds), which is start-up, not the steady state being measured.
        for thread_id in thread_ids[:WARMUP_TURNS]:
            _turn(open_saver, thread_id, user_of.get(thread_id), {op: [] for op in ALL_OPS},
                  {op: [] for op in ALL_OPS})
        if freeze:  # what a service does after start-up (see the module doc)
            gc.freeze()
        while time.time() < start_at:
            time.sleep(0.001)
        # Poisson arrivals: requests come when users send them, not in lockstep; processes
        # woken at the same instants would queue for the 2 cores and time each other.
        due = start_at + rng.expovariate(rate)
        while due < start_at + seconds:
            if (wait := due - time.time()) > 0:
                time.sleep(wait)
            due += rng.expovariate(rate)
            thread_id = rng.choice(thread_ids)
            try:
                _turn(open_saver, thread_id, user_of.get(thread_id), times, ready)
            except Exception as exc:  # the parent reports it; the worker goes on
                errors.append(f"{type(exc).__name__}: {exc}")
    write_json(Path(out), {"times": times, "ready": ready, "errors": len(errors),
                           "examples": errors[:3]})


def measure_op_mix(url: str, workdir: Path, *, mode: Mode, processes: int = 8,
                   seconds: float = 3.0, rate: float = 20.0, thread_ids: list[str],
                   user_of: dict[str, str], seed: int = 0, freeze: bool = True,
                   start_delay_s: float = 2.0) -> dict[str, Any]:
    """Fork ``processes`` services on ``url``; milliseconds per operation from all of them.

    Returns ``{"times": {op: [ms, ...]}, "ready": {op: [ms, ...]}, "errors": n,
    "examples": [...], "turns": n}`` (``ready``: see ``_turn``).
    Each process gets its own slice of ``thread_ids`` (no two write the same thread).
    """
    workdir.mkdir(parents=True, exist_ok=True)
    outs = [workdir / f"mix-{mode}-{i}.json" for i in range(processes)]
    start_at = time.time() + start_delay_s  # the forks open their pools and warm up first
    slices = [thread_ids[i::processes] for i in range(processes)]
    children = [fork_child(_op_worker, url, mode, str(o), start_at, seconds, rate, s,
                           user_of, seed * 1000 + i, freeze)
                for i, (o, s) in enumerate(zip(outs, slices, strict=True))]
    join_children(children, timeout=start_delay_s + seconds + 120)
    results = read_results(outs, "service processes")
    times = {op: [v for r in results for v in r["times"][op]] for op in ALL_OPS}
    ready = {op: [v for r in results for v in r["ready"][op]] for op in ALL_OPS}
    return {"times": times, "ready": ready, "errors": sum(r["errors"] for r in results),
            "examples": [e for r in results for e in r["examples"]][:3],
            "turns": len(times["get_tuple"])}
