"""What lesson 5.1 measures: connection cost by network path, pool sizing, PgBouncer.

- ``network_paths(wd)``: the paths to the server, each a URL (or a reason it was skipped):
  Unix socket, TCP loopback, TLS through ``shared.infra.proxy`` with 0, 1 and 5 ms of RTT.
- ``acquisition(url, calls, k)``: a new connection per request against a pool checkout, in
  interleaved rounds; the p50/p99 of each round kept, the median over rounds reported.
- ``concurrent_runs(url, runs, pool_max)``: ``runs`` chat-graph runs at once through
  ``AsyncPostgresSaver`` on one pool, ``pg_stat_activity`` sampled meanwhile.
- ``exhausted(url)``: more holders than the pool has connections, a short timeout.
- ``bounced_clients(url, direct_url, clients, ...)``: many client connections through
  PgBouncer, each running checkpoint ``put``/``get_tuple`` calls; server connections counted.
"""

from __future__ import annotations

import asyncio
import os
import statistics
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlencode, urlsplit, urlunsplit

import psycopg
from langgraph.checkpoint.postgres.aio import AsyncPostgresSaver

from shared.bench import gc_paused, p50, p99
from shared.graph import build_chat_graph
from shared.infra.postgres import embedded_postgres, postgres_server, wait_until_ready
from shared.infra.proxy import latency_proxy
from shared.llm import OfflineChatModel
from shared.savers.pooling import (
    open_async_saver_pool,
    open_saver_pool,
    saver_kwargs,
)
from shared.savers.serde import graph_serde
from shared.workloads.sqlite_writers import small_checkpoint

APP = "ckpt-m5-pool"  # application_name of the lesson's pooled connections


# --- network paths ------------------------------------------------------------------------

@dataclass
class NetPath:
    """One way to reach the server: ``url``, or ``skipped`` saying why not."""

    label: str
    url: str | None
    skipped: str | None = None


def _socket_url(tcp_url: str, socket_dir: Path) -> str:
    parts = urlsplit(tcp_url)
    query = urlencode({"host": str(socket_dir), "port": parts.port})
    return urlunsplit(parts._replace(netloc=f"{parts.username}@", query=query))


def server_has_tls(url: str) -> bool:
    with psycopg.connect(url) as conn:
        return conn.execute("SHOW ssl").fetchone()[0] == "on"


@contextmanager
def network_paths(wd: Path, rtts_ms: tuple[float, ...] = (1.0, 5.0)) -> Iterator[list[NetPath]]:
    """The server (``DATABASE_URL`` or the embedded one) by each path; all stopped on exit.

    TLS: a server that has it is asked for it (``sslmode=require``) through a forwarding
    proxy; one without it (the embedded server has no OpenSSL) gets TLS terminated by the
    proxy, as RDS Proxy or PgBouncer would.
    """
    with ExitStack() as stack:
        if os.environ.get("DATABASE_URL", "").strip():
            url = stack.enter_context(postgres_server(wd))
            unix = NetPath("unix socket", None, "DATABASE_URL names a remote server: no Unix "
                                              "socket to measure")
        else:
            server = stack.enter_context(embedded_postgres(wd))
            url = server.url
            unix = NetPath("unix socket", _socket_url(url, server.socket_dir))
        direct_tls = server_has_tls(url)

        def tls(rtt: float) -> str:
            if direct_tls:
                sep = "&" if urlsplit(url).query else "?"
                return stack.enter_context(latency_proxy(url + sep + "sslmode=require", rtt))
            return stack.enter_context(latency_proxy(url, rtt, tls=True))

        paths = [unix, NetPath("tcp loopback", url),
                 NetPath("proxy, no TLS, +0 ms", stack.enter_context(latency_proxy(url, 0.0))),
                 NetPath("TLS, +0 ms", tls(0.0))]
        paths += [NetPath(f"TLS, +{rtt:g} ms RTT", tls(rtt)) for rtt in rtts_ms]
        yield paths


def ssl_in_use(url: str) -> bool:
    with psycopg.connect(url) as conn:
        return bool(conn.pgconn.ssl_in_use)


# --- acquisition: new connection per request against a pool checkout -----------------------

@dataclass
class Acquisition:
    """Median over rounds of each round's p50/p99 (ms); ``ratios``: new/pool p50 per round."""

    new_connect: tuple[float, float]
    new_request: tuple[float, float]
    pool_checkout: tuple[float, float]
    pool_request: tuple[float, float]
    query_rtt: float  # p50 of the pooled query alone: the path's round trip
    ratios: list[float] = field(default_factory=list)
    pool_p99_rounds: list[float] = field(default_factory=list)

    @property
    def ratio(self) -> float:
        return statistics.median(self.ratios)


def _new(url: str) -> tuple[float, float]:
    t0 = time.perf_counter()
    conn = psycopg.connect(url, **saver_kwargs())
    t1 = time.perf_counter()
    conn.execute("SELECT 1").fetchone()
    conn.close()
    return (t1 - t0) * 1000, (time.perf_counter() - t0) * 1000


def _pooled(pool: Any) -> tuple[float, float]:
    t0 = time.perf_counter()
    with pool.connection() as conn:
        t1 = time.perf_counter()
        conn.execute("SELECT 1").fetchone()
    return (t1 - t0) * 1000, (time.perf_counter() - t0) * 1000


def acquisition(url: str, calls: int, k: int) -> Acquisition:
    """``k`` rounds of ``calls`` requests each way, alternating which goes first."""
    rounds: dict[str, list[tuple[float, float, float, float]]] = {"new": [], "pool": []}
    queries: list[float] = []  # per round: p50 of the pooled query alone
    with open_saver_pool(url, min_size=2, max_size=2, name="acquisition") as pool:
        for _ in range(3):  # warm-up: connections made, statements prepared
            _new(url)
            _pooled(pool)
        for i in range(k):
            for kind in ("new", "pool") if i % 2 == 0 else ("pool", "new"):
                with gc_paused():
                    samples = [_new(url) if kind == "new" else _pooled(pool)
                               for _ in range(calls)]
                acq, req = [s[0] for s in samples], [s[1] for s in samples]
                rounds[kind].append((p50(acq), p99(acq), p50(req), p99(req)))
                if kind == "pool":
                    queries.append(p50([r - a for a, r in samples]))
    med = {kind: [statistics.median(r[j] for r in rs) for j in range(4)]
           for kind, rs in rounds.items()}
    return Acquisition(
        new_connect=(med["new"][0], med["new"][1]), new_request=(med["new"][2], med["new"][3]),
        pool_checkout=(med["pool"][0], med["pool"][1]),
        pool_request=(med["pool"][2], med["pool"][3]),
        query_rtt=statistics.median(queries),
        ratios=[n[0] / p[0] for n, p in zip(rounds["new"], rounds["pool"], strict=True)],
        pool_p99_rounds=[p[1] for p in rounds["pool"]])


# --- pool sizing: concurrent graph runs ---------------------------------------------------

@dataclass
class Sizing:
    runs: int
    pool_max: int
    seconds: float
    p99_ms: float
    max_server_conns: int
    samples: int
    failed: int

    @property
    def runs_per_s(self) -> float:
        return self.runs / self.seconds


async def _count_conns(url: str, app: str, stop: asyncio.Event, seen: list[int]) -> None:
    """Sample pg_stat_activity: connections of this database named ``app``."""
    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
        while True:
            row = await (await conn.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                "AND application_name = %s", (app,))).fetchone()
            seen.append(int(row[0]))
            if stop.is_set():
                return
            await asyncio.sleep(0.005)


async def _sizing(url: str, runs: int, pool_max: int) -> Sizing:
    app = f"{APP}-{pool_max}-{runs}"
    async with open_async_saver_pool(url, min_size=pool_max, max_size=pool_max, timeout=120,
                                     name=app, application_name=app) as pool:
        graph = build_chat_graph(AsyncPostgresSaver(pool, serde=graph_serde()),
                                 OfflineChatModel())
        stop, seen = asyncio.Event(), []
        sampler = asyncio.create_task(_count_conns(url, app, stop, seen))
        start = time.perf_counter()

        async def one(i: int) -> float:
            await graph.ainvoke({"messages": [("user", f"Hi, my name is Alice. Run {i}.")]},
                                {"configurable": {"thread_id": f"{app}-{i}"}})
            return (time.perf_counter() - start) * 1000

        done = await asyncio.gather(*(one(i) for i in range(runs)), return_exceptions=True)
        seconds = time.perf_counter() - start
        stop.set()
        await sampler
    latencies = [d for d in done if isinstance(d, float)]
    return Sizing(runs, pool_max, seconds, p99(latencies), max(seen), len(seen),
                  runs - len(latencies))


def concurrent_runs(url: str, runs: int, pool_max: int) -> Sizing:
    """``runs`` chat-graph runs started together on a pool of ``pool_max`` connections."""
    return asyncio.run(_sizing(url, runs, pool_max))


async def _setup(url: str) -> None:
    async with open_async_saver_pool(url, max_size=1) as pool:
        await AsyncPostgresSaver(pool).setup()


def setup_tables(url: str) -> None:
    asyncio.run(_setup(url))


# --- an exhausted pool ---------------------------------------------------------------------

async def _exhaust(url: str, max_size: int, holders: int, timeout: float,
                   hold_s: float) -> list[BaseException | None]:
    async with open_async_saver_pool(url, min_size=max_size, max_size=max_size,
                                     timeout=timeout, name="checkpoints") as pool:
        async def hold() -> None:
            async with pool.connection() as conn:
                await conn.execute("SELECT 1")
                await asyncio.sleep(hold_s)

        return await asyncio.gather(*(hold() for _ in range(holders)), return_exceptions=True)


def exhausted(url: str, max_size: int = 2, holders: int = 4, timeout: float = 0.2,
              hold_s: float = 1.0) -> list[BaseException]:
    """The errors ``holders`` concurrent requests got from a pool of ``max_size``."""
    results = asyncio.run(_exhaust(url, max_size, holders, timeout, hold_s))
    return [r for r in results if isinstance(r, BaseException)]


# --- PgBouncer: many clients, few server connections -------------------------------------

@dataclass
class Bounced:
    clients: int
    clients_ok: int
    calls: int
    errors: int
    max_server_conns: int
    max_clients_open: int
    error_examples: list[str]  # the first message of each kind
    error_kinds: dict[str, int]  # psycopg error class: how many
    seconds: float


async def _server_conns(direct_url: str, stop: asyncio.Event, seen: list[int]) -> None:
    async with await psycopg.AsyncConnection.connect(direct_url, autocommit=True) as conn:
        while True:
            row = await (await conn.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                "AND backend_type = 'client backend' AND pid <> pg_backend_pid()")).fetchone()
            seen.append(int(row[0]))
            if stop.is_set():
                return
            await asyncio.sleep(0.005)


async def _bounce(url: str, direct_url: str, clients: int, puts: int,
                  prepare_threshold: int | None, tag: str) -> Bounced:
    kwargs = {**saver_kwargs(), "prepare_threshold": prepare_threshold}
    stop, seen = asyncio.Event(), []
    sampler = asyncio.create_task(_server_conns(direct_url, stop, seen))
    start = time.perf_counter()
    opened = await asyncio.gather(*(psycopg.AsyncConnection.connect(url, **kwargs)
                                    for _ in range(clients)), return_exceptions=True)
    conns = [c for c in opened if isinstance(c, psycopg.AsyncConnection)]
    errors: list[str] = [str(e) for e in opened if isinstance(e, BaseException)]
    first: dict[str, str] = {}  # psycopg error class: its first message
    kinds: Counter[str] = Counter(type(e).__name__ for e in opened
                                  if isinstance(e, BaseException))

    async def client(i: int, conn: psycopg.AsyncConnection) -> bool:
        saver = AsyncPostgresSaver(conn, serde=graph_serde())
        config: dict[str, Any] = {"configurable": {"thread_id": f"{tag}-{i}", "checkpoint_ns": ""}}
        ok = True
        for step in range(puts):
            try:
                config = await saver.aput(config, small_checkpoint(100),
                                          {"source": "loop", "step": step}, {})
                await saver.aget_tuple(config)
            except psycopg.Error as exc:
                ok = False
                errors.append(" ".join(str(exc).split()))
                kinds[type(exc).__name__] += 1
                first.setdefault(type(exc).__name__, errors[-1])
                await asyncio.sleep(0)
        return ok

    try:
        oks = await asyncio.gather(*(client(i, c) for i, c in enumerate(conns)))
    finally:
        await asyncio.gather(*(c.close() for c in conns), return_exceptions=True)
        stop.set()
        await sampler
    return Bounced(clients, sum(oks), len(conns) * puts * 2, len(errors), max(seen), len(conns),
                   list(first.values()), dict(kinds), time.perf_counter() - start)


def bounced_clients(url: str, direct_url: str, clients: int, puts: int = 2,
                    prepare_threshold: int | None = None, tag: str = "bounce") -> Bounced:
    """``clients`` connections through PgBouncer at once, each ``puts`` put+get_tuple calls."""
    wait_until_ready(direct_url)
    return asyncio.run(_bounce(url, direct_url, clients, puts, prepare_threshold, tag))


__all__ = ["Acquisition", "Bounced", "NetPath", "Sizing", "acquisition", "bounced_clients",
           "concurrent_runs", "exhausted", "network_paths", "setup_tables", "ssl_in_use"]
