"""The hot tier beside the plain-Redis peer: the same chat workload through ``HybridSaver`` and
``langgraph_checkpoint_plainredis.RedisSaver`` on the same Redis server (distinct key prefixes,
nothing flushed between them), measured three ways:

1. latency: ``get_tuple`` of the latest checkpoint and one graph turn (``invoke``), p50 and
   p99, in interleaved rounds (hybrid, peer, then peer, hybrid, ...): the median over rounds
   and the spread (``shared.bench``);
2. Redis memory: the sum of ``MEMORY USAGE`` over each saver's keys (and the key count, and
   how many checkpoints each keeps in Redis) per thread, after every turn of the workload;
3. what each loses when Redis is lost (``FLUSHALL`` unless ``lose`` says otherwise): for every
   thread, is the latest checkpoint still the one acknowledged before, with its full history?

The hybrid's keys include its two global keys (epoch and last-seen); the peer's include its
registry hash and sequence counter: each saver is charged for everything under its prefix.
"""

from __future__ import annotations

import inspect
import itertools
import re
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import asdict, dataclass, field
from typing import Any

from shared.bench import DEFAULT_WARMUP, Rounds, percentile, time_calls
from shared.graph import build_chat_graph
from shared.infra.redis import memory_usage, redis_client
from shared.savers.hybrid import HybridSaver
from shared.savers.serde import graph_serde

HYBRID_PREFIX = "tierpeer-hybrid"
PEER_PREFIX = "tierpeer-plain"
ARMS = ("hybrid", "peer")


@dataclass
class Latency:
    """One operation's p50 and p99 (ms): the median over rounds, and min..max over rounds."""

    p50_ms: float
    p50_spread: str
    p99_ms: float
    p99_spread: str


@dataclass
class Arm:
    """One saver's figures."""

    name: str
    read: Latency | None = None        # get_tuple of the latest checkpoint
    turn: Latency | None = None        # one graph.invoke
    keys: int = 0                      # keys under its prefix after the workload
    bytes_per_thread: float = 0.0      # sum(MEMORY USAGE) / threads after the workload
    checkpoints_in_redis_per_thread: float = 0.0
    bytes_per_thread_by_turn: list[float] = field(default_factory=list)
    keys_by_turn: list[int] = field(default_factory=list)
    checkpoints_in_redis_by_turn: list[float] = field(default_factory=list)  # per thread
    acknowledged: int = 0              # checkpoints of the workload's threads before the loss
    lost: int = 0                      # ... of them not readable after it
    threads_resumable: int = 0         # latest checkpoint and full history still there


@dataclass
class PeerComparison:
    threads: int
    turns: int
    rounds: int
    reads: int
    turn_calls: int                    # invokes per arm per round
    hot_keep: int
    how_lost: str
    hybrid: Arm
    peer: Arm
    peer_write_atomicity: str          # read from the peer's code

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def peer_write_atomicity() -> str:
    """What the peer's sync ``put`` / ``put_writes`` do, read from their source code."""
    from langgraph_checkpoint_plainredis import RedisSaver

    out = []
    for name in ("put", "put_writes"):
        src = inspect.getsource(getattr(RedisSaver, name))
        body, _, _ = src.partition(".pipeline(")
        if ".pipeline(" not in src:
            out.append(f"{name}: separate commands, no pipeline or MULTI")
            continue
        tx = "transaction=False" not in src.split(".pipeline(", 1)[1].split(")", 1)[0]
        before = sorted(set(re.findall(r"self\.client\.(\w+)\(", body)))
        out.append(f"{name}: " + ("one MULTI/EXEC transaction (redis-py pipeline(), "
                                  "transaction=True by default)" if tx else
                                  "a pipeline without MULTI/EXEC (not atomic)")
                   + (f", after {'/'.join(c.upper() for c in before)} outside it"
                      if before else ""))
    watch = any("watch(" in inspect.getsource(getattr(RedisSaver, n))
                for n in ("put", "put_writes"))
    return "; ".join(out) + ("; WATCH used" if watch else "; no WATCH (no optimistic lock)") \
        + "; durable only as far as the server's own RDB/AOF settings"


def _footprint(client: Any, pattern: str, timelines: str) -> tuple[int, int, int]:
    """(keys, sum of MEMORY USAGE, checkpoints in the timeline sorted sets) under a pattern."""
    keys = list(client.scan_iter(match=pattern, count=1000))
    used = memory_usage(client, keys)
    zkeys = list(client.scan_iter(match=timelines, count=1000))
    return len(keys), used, sum(int(client.zcard(k)) for k in zkeys)


def _latency(contenders: dict[str, Callable[[], object]], calls: int, k: int,
             ) -> dict[str, Latency]:
    """p50 and p99 of each contender's calls in ``k`` interleaved rounds (A B, B A, ...)."""
    for fn in contenders.values():
        for _ in range(DEFAULT_WARMUP):
            fn()
    per: dict[str, dict[float, list[float]]] = {n: {50: [], 99: []} for n in contenders}
    names = list(contenders)
    for i in range(k):
        for name in names if i % 2 == 0 else names[::-1]:
            samples = time_calls(contenders[name], calls, warmup=0)
            for q in (50, 99):
                per[name][q].append(percentile(samples, q))
    out = {}
    for name, by_q in per.items():
        r50, r99 = Rounds(by_q[50], 50), Rounds(by_q[99], 99)
        out[name] = Latency(round(r50.median, 3), r50.spread, round(r99.median, 3), r99.spread)
    return out


def _cycle(graph: Any, saver: Any, threads: list[str], turn: bool) -> Callable[[], object]:
    configs = itertools.cycle([{"configurable": {"thread_id": t}} for t in threads])
    if turn:
        return lambda: graph.invoke({"messages": [("user", "one more turn")]}, next(configs))
    return lambda: saver.get_tuple(next(configs))


def _messages(tup: Any) -> int:
    return len(tup.checkpoint["channel_values"].get("messages", [])) if tup else 0


def compare_with_peer(redis_url: str, pg_url: str, *, threads: int = 20, turns: int = 8,
                      rounds: int = 3, reads: int = 200, hot_keep: int = 10,
                      lose: Callable[[], None] | None = None,
                      on_step: Callable[[str], None] | None = None) -> PeerComparison:
    """Run the same workload through both savers on one Redis and measure them (see above).

    ``lose`` loses Redis (default ``FLUSHALL`` on ``redis_url``: every database of that
    server is emptied, so give a Redis of your own); ``on_step`` hears progress lines.
    """
    from langgraph_checkpoint_plainredis import RedisSaver

    if threads < 1 or turns < 1 or rounds < 1 or reads < 1:
        raise ValueError(f"threads, turns, rounds and reads must be >= 1, got {threads}, "
                         f"{turns}, {rounds}, {reads}")
    say = on_step or (lambda _: None)
    names = [f"tp-{i:04d}" for i in range(threads)]  # fixed ids: the same in every run
    bench = [f"tp-bench-{i:04d}" for i in range(threads)]
    turn_calls = max(10, threads)
    arms = {n: Arm(n) for n in ARMS}
    with ExitStack() as stack:
        client = redis_client(redis_url, timeout=10.0)
        stack.callback(client.close)
        hybrid = stack.enter_context(HybridSaver.from_conn_strings(
            redis_url, pg_url, warmup=0.0, hot_keep=hot_keep, prefix=HYBRID_PREFIX))
        peer_client = redis_client(redis_url, timeout=5.0)
        stack.callback(peer_client.close)
        peer = RedisSaver(peer_client, prefix=PEER_PREFIX, serde=graph_serde())
        savers: dict[str, Any] = {"hybrid": hybrid, "peer": peer}
        graphs = {n: build_chat_graph(s) for n, s in savers.items()}
        for prefix in (HYBRID_PREFIX, PEER_PREFIX):  # a rerun starts empty: our prefixes only
            for key in list(client.scan_iter(match=f"{prefix}:*", count=1000)):
                client.delete(key)
        for thread in names + bench:  # and the hybrid's PostgreSQL
            hybrid.delete_thread(thread)
        patterns = {"hybrid": (f"{HYBRID_PREFIX}:*", f"{HYBRID_PREFIX}:*|*:z"),
                    "peer": (f"{PEER_PREFIX}:*", f"{PEER_PREFIX}:idx:*")}

        # 1. the workload, turn by turn, with each saver's Redis footprint after every turn
        for turn in range(turns):
            say(f"turn {turn + 1}/{turns} of {threads} threads")
            for j, thread in enumerate(names):
                for name in ARMS if (turn + j) % 2 == 0 else ARMS[::-1]:
                    graphs[name].invoke({"messages": [("user", f"turn {turn} of {thread}")]},
                                        {"configurable": {"thread_id": thread}})
            for name, arm in arms.items():
                keys, used, ckpts = _footprint(client, *patterns[name])
                arm.keys_by_turn.append(keys)
                arm.bytes_per_thread_by_turn.append(round(used / threads, 1))
                arm.checkpoints_in_redis_by_turn.append(round(ckpts / threads, 2))
        for arm in arms.values():
            arm.keys = arm.keys_by_turn[-1]
            arm.bytes_per_thread = arm.bytes_per_thread_by_turn[-1]
            arm.checkpoints_in_redis_per_thread = arm.checkpoints_in_redis_by_turn[-1]

        # 2. latency, interleaved rounds
        say(f"get_tuple latency: {rounds} rounds of {reads} reads")
        read = _latency({n: _cycle(graphs[n], s, names, False) for n, s in savers.items()},
                        reads, rounds)
        say(f"turn latency: {rounds} rounds of {turn_calls} turns")
        turned = _latency({n: _cycle(graphs[n], s, bench, True) for n, s in savers.items()},
                          turn_calls, rounds)
        for name, arm in arms.items():
            arm.read, arm.turn = read[name], turned[name]

        # 3. Redis lost: what does each saver still give back?
        before: dict[str, dict[str, tuple[str, int, int]]] = {n: {} for n in ARMS}
        for name, saver in savers.items():
            for thread in names:
                config: Any = {"configurable": {"thread_id": thread}}
                tup = saver.get_tuple(config)
                before[name][thread] = (tup.checkpoint["id"] if tup else "", _messages(tup),
                                        len(list(saver.list(config))))
        say("Redis lost" + ("" if lose else " (FLUSHALL)"))
        (lose or client.flushall)()
        for name, saver in savers.items():
            arm = arms[name]
            for thread in names:
                config = {"configurable": {"thread_id": thread}}
                latest_id, count, listed = before[name][thread]
                tup = saver.get_tuple(config)
                left = len(list(saver.list(config)))
                arm.acknowledged += listed
                arm.lost += max(0, listed - left)
                if tup and tup.checkpoint["id"] == latest_id and _messages(tup) == count \
                        == 2 * turns:
                    arm.threads_resumable += 1
    return PeerComparison(threads, turns, rounds, reads, turn_calls, hot_keep,
                          "custom" if lose else "FLUSHALL", arms["hybrid"], arms["peer"],
                          peer_write_atomicity())
