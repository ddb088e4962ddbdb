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

Turns are paced (``rate`` turns per second per process): a service is not a closed loop,
and a saturated 2-core machine would measure the scheduler, not the database.
"""

from __future__ import annotations

import json
import random
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path
from typing import Any, Literal

from langgraph.checkpoint.base import BaseCheckpointSaver, create_checkpoint
from langgraph.checkpoint.postgres import PostgresSaver

from shared.proc import fork_child
from shared.savers.pooling import open_saver_pool
from shared.savers.serde import graph_serde
from shared.workloads.sqlite_writers import write_json

OPS = ("get_tuple", "put", "put_writes", "list", "list_filter")
Mode = Literal["pool", "connect"]


def sample_targets(url: str, threads: int, seed: int = 0) -> tuple[list[str], list[str]]:
    """``threads`` thread ids of the history and the user ids found on them (a sample)."""
    import psycopg

    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("SELECT setseed(%s)", (((seed % 1000) / 1000),))
        rows = conn.execute(
            "SELECT thread_id, max(metadata->>'user_id') AS user_id FROM checkpoints "
            "WHERE checkpoint_ns = '' GROUP BY thread_id ORDER BY random() LIMIT %s",
            (threads,)).fetchall()
    return [r[0] for r in rows], sorted({r[1] for r in rows if r[1] is not None})


def _saver_calls(url: str, mode: Mode) -> AbstractContextManager[Callable[[], Any]]:
    """A context whose value gives the saver for one call (the same one, or a new one)."""

    @contextmanager
    def pooled() -> Iterator[Callable[[], Any]]:
        with open_saver_pool(url, max_size=2, name="op-mix") as pool:
            saver = PostgresSaver(pool, serde=graph_serde())

            @contextmanager
            def same() -> Iterator[BaseCheckpointSaver]:
                yield saver

            yield same

    @contextmanager
    def connecting() -> Iterator[Callable[[], Any]]:
        @contextmanager
        def fresh() -> Iterator[BaseCheckpointSaver]:
            with PostgresSaver.from_conn_string(url) as saver:
                saver.serde = graph_serde()
                yield saver

        yield fresh

    return pooled() if mode == "pool" else connecting()


def _turn(open_saver: Callable[[], Any], thread_id: str, user_id: str | None,
          times: dict[str, list[float]]) -> None:
    """One turn on ``thread_id``: the five operations, each timed with its connection."""

    def timed(op: str, fn: Callable[[BaseCheckpointSaver], Any]) -> Any:
        t0 = time.perf_counter()
        with open_saver() as saver:
            result = fn(saver)
        times[op].append((time.perf_counter() - t0) * 1000)
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
               thread_ids: list[str], user_of: dict[str, str], seed: int) -> None:
    """One service process: paced turns on its threads until the time is up."""
    rng = random.Random(seed)
    times: dict[str, list[float]] = {op: [] for op in OPS}
    errors: list[str] = []
    with _saver_calls(url, mode) as open_saver:
        while time.time() < start_at:
            time.sleep(0.001)
        turn = 0
        while (now := time.time()) < start_at + seconds:
            due = start_at + turn / rate
            if due > now:
                time.sleep(due - now)
            turn += 1
            thread_id = rng.choice(thread_ids)
            try:
                _turn(open_saver, thread_id, user_of.get(thread_id), times)
            except Exception as exc:  # the parent reports it; the worker goes on
                errors.append(f"{type(exc).__name__}: {exc}")
    write_json(Path(out), {"times": times, "errors": len(errors), "examples": errors[:3]})


def measure_op_mix(url: str, workdir: Path, *, mode: Mode, processes: int = 8,
                   seconds: float = 3.0, rate: float = 20.0, thread_ids: list[str],
                   user_of: dict[str, str], seed: int = 0,
                   start_delay_s: float = 0.5) -> dict[str, Any]:
    """Fork ``processes`` services on ``url``; milliseconds per operation from all of them.

    Returns ``{"times": {op: [ms, ...]}, "errors": n, "examples": [...], "turns": n}``.
    Each process gets its own slice of ``thread_ids`` (no two write the same thread).
    """
    workdir.mkdir(parents=True, exist_ok=True)
    outs = [workdir / f"mix-{mode}-{i}.json" for i in range(processes)]
    start_at = time.time() + start_delay_s  # leave the forks time to open their pools
    slices = [thread_ids[i::processes] for i in range(processes)]
    children = [fork_child(_op_worker, url, mode, str(o), start_at, seconds, rate, s,
                           user_of, seed * 1000 + i)
                for i, (o, s) in enumerate(zip(outs, slices, strict=True))]
    for child in children:
        child.join(timeout=start_delay_s + seconds + 120)
        if child.is_alive():
            child.kill()
            child.join()
    results = [json.loads(o.read_text()) for o in outs if o.exists()]
    for o in outs:
        o.unlink(missing_ok=True)
    if len(results) != processes:
        raise RuntimeError(f"{processes - len(results)} of {processes} service processes died")
    times = {op: [v for r in results for v in r["times"][op]] for op in OPS}
    return {"times": times, "errors": sum(r["errors"] for r in results),
            "examples": [e for r in results for e in r["examples"]][:3],
            "turns": len(times["get_tuple"])}
