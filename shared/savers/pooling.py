"""Pools for ``PostgresSaver`` / ``AsyncPostgresSaver``, and a pool timeout that says why.

    with open_saver_pool(url, max_size=20) as pool:            # psycopg_pool.ConnectionPool
        graph = build_chat_graph(PostgresSaver(pool))
    async with open_async_saver_pool(url, max_size=20) as pool:  # AsyncConnectionPool
        graph = build_chat_graph(AsyncPostgresSaver(pool))

Every connection gets what LangGraph's savers need (their own ``from_conn_string`` and the
docs' examples use exactly these): ``autocommit=True`` (``setup()`` and every ``put`` commit
at once, and a connection goes back to the pool outside any transaction), ``row_factory=
dict_row`` (the savers read ``row["checkpoint"]``), and ``prepare_threshold``.

``prepare_threshold`` in psycopg 3 is how many times a statement runs on a connection before
psycopg prepares it on the server (``PREPARE`` under a name such as ``_pg3_0``): ``0`` means
"prepare every statement on its first execution" (what LangGraph uses: the savers' few
statements then skip parsing and planning on every later call), ``None`` means "never use
server-side prepared statements". ``0`` is often described as "disabled": it is the
opposite. Behind a pooler in transaction mode (PgBouncer ``pool_mode = transaction``, RDS
Proxy) a client's next statement may run on another server connection, one where its
``_pg3_0`` was never prepared: pass ``behind_pooler=True`` to get ``None``
(``m5_optimize/s1_pooling.py`` reproduces the failure and the fix).

A pool with all ``max_size`` connections in use makes a request wait ``timeout`` seconds and
then raises psycopg_pool's ``PoolTimeout`` with "couldn't get a connection after 30.00 sec".
``SaverPool`` / ``AsyncSaverPool`` raise ``PoolExhausted`` instead: still a ``PoolTimeout``
(existing handlers catch it), and also a ``CheckpointError`` whose message says what was
waited for, how long, the pool's size, and which setting to change; or, when the pool could
not even open its connections, that the server is the problem, not the pool's size.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from typing import Any

from psycopg.rows import dict_row
from psycopg_pool import AsyncConnectionPool, ConnectionPool, PoolTimeout

from shared.errors import CheckpointError

# What LangGraph's PostgresSaver.from_conn_string passes to psycopg; the pool passes it to
# every connection it opens. prepare_threshold=0: prepare every statement on first use.
SAVER_KWARGS: dict[str, Any] = {"autocommit": True, "prepare_threshold": 0,
                                "row_factory": dict_row}
# Behind PgBouncer in transaction mode or RDS Proxy: no server-side prepared statements.
POOLER_KWARGS: dict[str, Any] = {**SAVER_KWARGS, "prepare_threshold": None}


def saver_kwargs(*, behind_pooler: bool = False,
                 application_name: str | None = None) -> dict[str, Any]:
    """Connection keywords for a saver's connections (see the module docstring)."""
    kwargs = dict(POOLER_KWARGS if behind_pooler else SAVER_KWARGS)
    if application_name:  # shows in pg_stat_activity: which app holds the connections
        kwargs["application_name"] = application_name
    return kwargs


class PoolExhausted(PoolTimeout, CheckpointError):
    """No connection within the pool's timeout; the message says why and what to change."""

    @classmethod
    def of(cls, pool: ConnectionPool | AsyncConnectionPool, timeout: float) -> PoolExhausted:
        opened = pool.get_stats().get("pool_size", 0)
        idle = len(getattr(pool, "_pool", ()))
        waiting = len(getattr(pool, "_waiting", ()))
        in_use = opened - idle
        if in_use >= pool.max_size:
            return cls(f"No free connection in pool {pool.name!r} after waiting {timeout:g} s: "
                       f"all {pool.max_size} connections (max_size={pool.max_size}) were in "
                       f"use ({waiting} requests queued); raise max_size (within the server's "
                       "max_connections) or timeout, or run fewer requests at once.")
        return cls(f"No connection from pool {pool.name!r} after waiting {timeout:g} s, with "
                   f"only {in_use} of max_size={pool.max_size} in use: the pool could not "
                   "open connections to the server; check that the server is up and "
                   "reachable (URL, network, credentials, max_connections).")


class SaverPool(ConnectionPool):
    """``ConnectionPool`` whose timeout is a ``PoolExhausted`` with a clear sentence."""

    def getconn(self, timeout: float | None = None) -> Any:
        try:
            return super().getconn(timeout)
        except PoolExhausted:
            raise
        except PoolTimeout:
            raise PoolExhausted.of(self, self.timeout if timeout is None else timeout) from None


class AsyncSaverPool(AsyncConnectionPool):
    """``AsyncConnectionPool`` whose timeout is a ``PoolExhausted`` with a clear sentence."""

    async def getconn(self, timeout: float | None = None) -> Any:
        try:
            return await super().getconn(timeout)
        except PoolExhausted:
            raise
        except PoolTimeout:
            raise PoolExhausted.of(self, self.timeout if timeout is None else timeout) from None


def saver_pool(url: str, *, min_size: int = 1, max_size: int = 10, timeout: float = 30.0,
               name: str | None = None, behind_pooler: bool = False,
               application_name: str | None = None, **pool_args: Any) -> SaverPool:
    """A ``SaverPool`` for ``PostgresSaver(pool)``, not yet open (``pool.open(wait=True)``)."""
    return SaverPool(url, min_size=min_size, max_size=max_size, timeout=timeout, name=name,
                     kwargs=saver_kwargs(behind_pooler=behind_pooler,
                                         application_name=application_name),
                     open=False, **pool_args)


def async_saver_pool(url: str, *, min_size: int = 1, max_size: int = 10, timeout: float = 30.0,
                     name: str | None = None, behind_pooler: bool = False,
                     application_name: str | None = None, **pool_args: Any) -> AsyncSaverPool:
    """An ``AsyncSaverPool`` for ``AsyncPostgresSaver(pool)``, not yet open."""
    return AsyncSaverPool(url, min_size=min_size, max_size=max_size, timeout=timeout,
                          name=name, kwargs=saver_kwargs(behind_pooler=behind_pooler,
                                                         application_name=application_name),
                          open=False, **pool_args)


@contextmanager
def open_saver_pool(url: str, *, open_timeout: float = 30.0, **options: Any
                    ) -> Iterator[SaverPool]:
    """``saver_pool(url, **options)`` opened (its ``min_size`` connections made), closed on exit."""
    pool = saver_pool(url, **options)
    pool.open(wait=True, timeout=open_timeout)
    try:
        yield pool
    finally:
        pool.close()


@asynccontextmanager
async def open_async_saver_pool(url: str, *, open_timeout: float = 30.0, **options: Any
                                ) -> AsyncIterator[AsyncSaverPool]:
    """``async_saver_pool(url, **options)`` opened, closed on exit."""
    pool = async_saver_pool(url, **options)
    await pool.open(wait=True, timeout=open_timeout)
    try:
        yield pool
    finally:
        await pool.close()


__all__ = ["POOLER_KWARGS", "SAVER_KWARGS", "AsyncSaverPool", "PoolExhausted", "SaverPool",
           "async_saver_pool", "open_async_saver_pool", "open_saver_pool", "saver_kwargs",
           "saver_pool"]
