"""Bytes per checkpoint, measured: the same chat conversations written to PostgreSQL (the
official ``PostgresSaver``) and to plain Redis (``langgraph_checkpoint_plainredis.RedisSaver``,
every checkpoint kept in Redis: the "Redis-only" setup).

Used by lesson 7.3 and ``make bench`` (shared/benchmarks/cost.py). PostgreSQL's figure is the
growth of ``pg_total_relation_size`` (rows, TOAST, indexes) of the three checkpoint tables
between the first and the second half of the threads, over the checkpoints added: what one
more checkpoint costs on disk, without the empty tables' fixed pages. Redis's figure is the
sum of ``MEMORY USAGE`` over every key the saver wrote, over the checkpoints; its overhead is
the growth of ``INFO memory`` ``used_memory`` over that sum. The hot figure is the tiered
setup's own: the same conversations through ``HybridSaver`` (shared/savers/hybrid.py), the
``MEMORY USAGE`` of every key it keeps for them in Redis over the checkpoints it holds there
(each thread's newest ``hot_keep``, with their writes and blobs).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from shared.graph import build_chat_graph
from shared.infra.postgres import connect
from shared.infra.redis import memory_usage
from shared.savers.postgres import open_postgres_saver
from shared.savers.serde import graph_serde
from shared.workloads.long_chat import conversation

TABLES = ("checkpoints", "checkpoint_blobs", "checkpoint_writes")
PREFIX = "cost"
HOT_PREFIX = "costhot"


@dataclass(frozen=True)
class Sizes:
    threads: int
    turns: int
    checkpoints: int                    # per store (the same conversations in each)
    checkpoints_per_turn: float
    pg_bytes_per_checkpoint: float      # marginal on-disk growth / checkpoint
    pg_row_bytes_per_checkpoint: float  # sum(pg_column_size(row)) / checkpoint
    redis_bytes_per_checkpoint: float   # sum(MEMORY USAGE) / checkpoint
    redis_overhead: float               # used_memory growth / sum(MEMORY USAGE)
    redis_hot_bytes_per_checkpoint: float
    hot_keep: int

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def _threads(n: int) -> list[str]:
    return [f"cost-{i:05d}" for i in range(n)]


def _chat(graph: Any, threads: list[str], texts: list[str]) -> None:
    for thread in threads:
        config: Any = {"configurable": {"thread_id": thread}}
        for text in texts:
            graph.invoke({"messages": [("user", text)]}, config)


def _pg_state(url: str) -> tuple[int, int, int]:
    """(checkpoints, on-disk bytes of the three tables, summed row bytes)."""
    with connect(url, who="the cost run's PostgreSQL at") as conn:
        disk = sum(int(conn.execute("SELECT pg_total_relation_size(%s::regclass)",
                                    (t,)).fetchone()[0]) for t in TABLES)
        rows = sum(int(conn.execute(f"SELECT coalesce(sum(pg_column_size(t.*)), 0) "  # noqa: S608
                                    f"FROM {t} t").fetchone()[0]) for t in TABLES)
        (count,) = conn.execute("SELECT count(*) FROM checkpoints").fetchone()
    return int(count), disk, rows


def _hybrid_hot(pg_url: str, redis_url: str, client: Any, names: list[str],
                texts: list[str], hot_keep: int) -> tuple[int, int]:
    """(bytes of every key HybridSaver keeps for the threads, checkpoints it holds in Redis)."""
    import time

    from shared.savers.hybrid import HybridSaver

    hot = [f"hot-{n}" for n in names]  # PostgreSQL was weighed already: new threads are fine
    with HybridSaver.from_conn_strings(redis_url, pg_url, prefix=HOT_PREFIX, setup=False,
                                       hot_keep=hot_keep) as saver:
        time.sleep(saver.settings.warmup or 0)  # a new epoch caches nothing before this
        _chat(build_chat_graph(saver), hot, texts)
    keys = [k for k in client.scan_iter(match=f"{HOT_PREFIX}:*", count=1000) if b":hot-" in k]
    held = sum(int(client.zcard(k)) for k in keys if k.endswith(b":z"))
    return memory_usage(client, keys), held


def measure_sizes(pg_url: str, redis_url: str, threads: int = 20, turns: int = 10,
                  hot_keep: int = 10) -> Sizes:
    """Write ``threads`` conversations of ``turns`` turns to each store and weigh them."""
    from langgraph_checkpoint_plainredis import RedisSaver

    from shared.infra.redis import redis_client

    if threads < 2 or turns < 1 or hot_keep < 1:
        raise ValueError(f"threads >= 2, turns >= 1 and hot_keep >= 1, not {threads}, "
                         f"{turns}, {hot_keep}")
    texts, names = conversation(turns), _threads(threads)
    first, second = names[: threads // 2], names[threads // 2:]

    with open_postgres_saver(pg_url, setup=True) as saver:
        graph = build_chat_graph(saver)
        _chat(graph, first, texts)
        count1, disk1, _ = _pg_state(pg_url)
        _chat(graph, second, texts)
        count2, disk2, rows = _pg_state(pg_url)

    client = redis_client(redis_url, timeout=10.0)
    try:
        client.flushdb()
        used0 = int(client.info("memory")["used_memory"])
        rsaver = RedisSaver(client, prefix=PREFIX, serde=graph_serde())
        _chat(build_chat_graph(rsaver), names, texts)
        used1 = int(client.info("memory")["used_memory"])
        keys = list(client.scan_iter(match=f"{PREFIX}:*", count=1000))
        key_bytes = memory_usage(client, keys)
        hot_bytes, hot_checkpoints = _hybrid_hot(pg_url, redis_url, client, names, texts,
                                                 hot_keep)
        redis_count = sum(int(client.zcard(rsaver._key_index(t, ""))) for t in names)
        client.flushdb()
    finally:
        client.close()

    if redis_count != count2:
        raise RuntimeError(f"the same conversations gave {count2} checkpoints in PostgreSQL "
                           f"and {redis_count} in Redis")
    return Sizes(
        threads=threads, turns=turns, checkpoints=count2,
        checkpoints_per_turn=round(count2 / (threads * turns), 3),
        pg_bytes_per_checkpoint=round((disk2 - disk1) / max(1, count2 - count1), 1),
        pg_row_bytes_per_checkpoint=round(rows / count2, 1),
        redis_bytes_per_checkpoint=round(key_bytes / count2, 1),
        redis_overhead=round((used1 - used0) / key_bytes, 3),
        redis_hot_bytes_per_checkpoint=round(hot_bytes / max(1, hot_checkpoints), 1),
        hot_keep=hot_keep)
