"""Lesson 7.2's measurements: the hot tier against PostgreSQL alone, and what it keeps in Redis.

``measure_speed``: the same conversations read and written through ``HybridSaver`` and through
the official ``PostgresSaver`` on the same database, the contenders alternating call by call in
interleaved rounds (``shared.bench.interleave``): the latest checkpoint's ``get_tuple`` (from the
worker that served the thread, and from another worker that has never decoded it), resuming
(``graph.get_state``), and ``put`` of a chat checkpoint. ``measure_memory``: Redis bytes per
active thread (``MEMORY USAGE`` of every key of the hot tier), a long thread's hot set staying
at ``hot_keep`` checkpoints, and idle threads leaving Redis by TTL.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from langgraph.checkpoint.base.id import uuid6

from shared.bench import Comparison, interleave, pause_tracing
from shared.graph import build_chat_graph
from shared.infra.redis import memory_usage, redis_client
from shared.savers.hybrid import HybridSaver
from shared.savers.postgres import open_postgres_saver


def _config(thread: str) -> dict[str, Any]:
    return {"configurable": {"thread_id": thread, "checkpoint_ns": ""}}


def converse(saver: Any, threads: list[str], turns: int) -> None:
    """``turns`` turns of the shared chat graph on each thread (the offline model answers)."""
    graph = build_chat_graph(saver)
    for thread in threads:
        for i in range(turns):
            graph.invoke({"messages": [("user", f"turn {i}: tell me about {thread} " * 3)]},
                         {"configurable": {"thread_id": thread}})


def _cycle(threads: list[str]) -> Iterator[dict[str, Any]]:
    return itertools.cycle([_config(t) for t in threads])


@dataclass
class Speed:
    read_p50: Comparison
    read_p99: Comparison
    resume_p50: Comparison
    write_p50: Comparison
    write_p99: Comparison
    turn_p50: Comparison
    threads: int
    turns: int
    state_bytes: int  # the latest checkpoint's serialized messages, for scale


def _writer(saver: Any, thread: str, template: Any) -> Callable[[], object]:
    """``put`` of the template checkpoint (a real chat state) as the thread's next one."""
    state: dict[str, Any] = {"parent": _config(thread), "version": None}

    def put() -> object:
        ckpt = {**template.checkpoint, "id": str(uuid6())}
        version = saver.get_next_version(state["version"], None)
        ckpt["channel_versions"] = {**ckpt["channel_versions"], "messages": version}
        state["parent"] = saver.put(state["parent"], ckpt, {"source": "loop", "step": 1},
                                    {"messages": version})
        state["version"] = version
        return state["parent"]
    return put


def measure_speed(redis_url: str, pg_url: str, *, threads: int = 20, turns: int = 8,
                  calls: int = 200, rounds: int = 5, prefix: str = "tier72") -> Speed:
    names = [f"speed-{i:03d}" for i in range(threads)]
    with HybridSaver.from_conn_strings(redis_url, pg_url, prefix=prefix) as hot, \
            HybridSaver.from_conn_strings(redis_url, pg_url, prefix=prefix, setup=False,
                                          reuse_decoded=False) as other, \
            open_postgres_saver(pg_url) as pg:
        converse(hot, names, turns)
        time.sleep(hot.settings.warmup or 0)  # a fresh epoch serves nothing before this
        resume = pause_tracing()  # our code against the library's: no tracer on ours only
        hot_reads, cold_reads, other_reads = _cycle(names), _cycle(names), _cycle(names)
        reads = {"hybrid": lambda: hot.get_tuple(next(hot_reads)),
                 "postgres": lambda: pg.get_tuple(next(cold_reads)),
                 "hybrid, another worker": lambda: other.get_tuple(next(other_reads))}
        read_p50 = interleave(reads, calls, k=rounds, q=50, by_call=True)
        read_p99 = interleave(reads, calls, k=rounds, q=99, by_call=True)
        graphs = {"hybrid": build_chat_graph(hot), "postgres": build_chat_graph(pg)}
        resume_cycles = {name: _cycle(names) for name in graphs}
        resume_p50 = interleave(
            {name: (lambda g=g, c=resume_cycles[name]: g.get_state(next(c)))
             for name, g in graphs.items()}, calls // 2, k=rounds, q=50, by_call=True)
        template = pg.get_tuple(_config(names[0]))
        writes = {"hybrid": _writer(hot, "speed-write-hybrid", template),
                  "postgres": _writer(pg, "speed-write-postgres", template)}
        write_p50 = interleave(writes, calls // 2, k=rounds, q=50, by_call=True)
        write_p99 = interleave(writes, calls // 2, k=rounds, q=99, by_call=True)
        message = {"messages": [("user", "and one more thing about that " * 3)]}
        turn_cycles = {name: itertools.cycle([{"configurable": {"thread_id": f"{n}-{name}"}}
                                              for n in names]) for name in graphs}
        turn_p50 = interleave(
            {name: (lambda g=g, c=turn_cycles[name]: g.invoke(message, next(c)))
             for name, g in graphs.items()}, max(30, calls // 4), k=max(7, rounds), q=50,
            by_call=True)  # a turn is ~15 ms of mostly shared work: more samples, same cost
        resume()
        size = len(pg.serde.dumps_typed(template.checkpoint["channel_values"]["messages"])[1])
    return Speed(read_p50, read_p99, resume_p50, write_p50, write_p99, turn_p50, threads,
                 turns, size)


@dataclass
class Memory:
    threads: int
    turns: int
    hot_keep: int
    bytes_per_thread: float
    used_memory_per_thread: float
    checkpoints_per_thread: float
    long_thread_turns: int
    long_thread_checkpoints: list[int]  # in Redis after each turn
    idle_keys_before: int
    idle_keys_after: int
    idle_ttl_s: float


def hot_keys(client: Any, prefix: str) -> list[bytes]:
    return list(client.scan_iter(match=f"{prefix}:*", count=1000))


def _hot_checkpoints(client: Any, prefix: str, thread: str) -> int:
    return sum(client.zcard(k) for k in client.scan_iter(match=f"{prefix}:*:{thread}|*:z"))


def measure_memory(redis_url: str, pg_url: str, *, threads: int = 50, turns: int = 6,
                   hot_keep: int = 10, long_turns: int = 8, idle_ttl_s: float = 1.5,
                   prefix: str = "tier72mem") -> Memory:
    client = redis_client(redis_url)
    for key in hot_keys(client, prefix):
        client.delete(key)
    names = [f"mem-{i:03d}" for i in range(threads)]
    before = client.info("memory")["used_memory"]
    with HybridSaver.from_conn_strings(redis_url, pg_url, prefix=prefix,
                                       hot_keep=hot_keep) as hot:
        time.sleep(hot.settings.warmup or 0)  # a fresh epoch caches nothing before this
        converse(hot, names, turns)
        keys = [k for k in hot_keys(client, prefix) if b":mem-" in k]
        used = client.info("memory")["used_memory"] - before
        per_thread = memory_usage(client, keys) / threads
        checkpoints = sum(client.zcard(k) for k in keys if k.endswith(b":z")) / threads
        long_counts = []
        for _ in range(long_turns):  # 3 checkpoints a turn: past hot_keep after 4 turns
            converse(hot, ["mem-long"], 1)
            long_counts.append(_hot_checkpoints(client, prefix, "mem-long"))
    idle = f"{prefix}idle"
    with HybridSaver.from_conn_strings(redis_url, pg_url, prefix=idle, setup=False,
                                       hot_ttl=idle_ttl_s) as short:
        time.sleep(short.settings.warmup or 0)
        converse(short, [f"idle-{i}" for i in range(10)], 1)
        idle_before = len([k for k in hot_keys(client, idle) if b":idle-" in k])
        time.sleep(idle_ttl_s + short.settings.lease + 0.5)  # a lease's key outlives by that
        idle_after = len([k for k in hot_keys(client, idle) if b":idle-" in k])
    return Memory(threads, turns, hot_keep, per_thread, used / threads, checkpoints,
                  long_turns, long_counts, idle_before, idle_after, idle_ttl_s)


__all__ = ["Memory", "Speed", "converse", "hot_keys", "measure_memory", "measure_speed"]
