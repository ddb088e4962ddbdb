"""A Prometheus exporter for PostgreSQL and psycopg_pool, next to the saver metrics.

    metrics = CheckpointMetrics("postgres")
    metrics.registry.register(PgCollector(url, pools={"app": pool}))
    server = serve_metrics(metrics.registry)   # saver, pool and server metrics on one /metrics

On every scrape ``PgCollector`` reads each pool's ``get_stats()`` (no I/O) and one server
snapshot (``shared.ops.pg_health.read_snapshot``: one statement under a 5 s statement timeout,
on a connection of its own when given a URL, or on one from ``conn_factory()``, e.g.
``pool.connection``). A database that cannot be reached gives ``ckpt_pg_up 0`` and no server
samples, never an exception (the pool samples are still there). ``last_error`` keeps why
(password masked).

The metric names (the alert rules in deploy/prometheus and the dashboard in deploy/grafana
use them; all server figures are of the one database in the URL):

- ``ckpt_pg_up``: 1 when the last snapshot was read, 0 when it failed;
- ``ckpt_pg_scrape_seconds``: how long the snapshot took (connect included for a URL);
- ``ckpt_pg_info{server_version,database}``: 1;
- ``ckpt_pg_connections{state}``: client backends by state (``active``, ``idle``,
  ``idle in transaction`` ...), the whole server's; ``ckpt_pg_max_connections``;
- ``ckpt_pg_blocks_hit_total`` / ``ckpt_pg_blocks_read_total``: the database's buffer cache
  hits and reads (``pg_stat_database``), ``ckpt_pg_cache_hit_ratio`` = hit / (hit + read)
  since the statistics were reset (absent until a block is accessed);
- for each checkpoint table (``table`` label): ``ckpt_pg_table_exists``, ``ckpt_pg_table_bytes``
  (heap + TOAST), ``ckpt_pg_index_bytes`` (all its indexes), ``ckpt_pg_live_tuples``,
  ``ckpt_pg_dead_tuples``, ``ckpt_pg_seconds_since_autovacuum`` and
  ``ckpt_pg_seconds_since_vacuum`` (absent while the table was never (auto)vacuumed);
- for each pool (``pool`` label), gauges from ``get_stats()``: ``ckpt_pg_pool_min``,
  ``ckpt_pg_pool_max``, ``ckpt_pg_pool_size`` (connections open, in use or not),
  ``ckpt_pg_pool_available`` (idle in the pool), ``ckpt_pg_pool_requests_waiting`` (clients
  queued for a connection now); counters since the pool opened: ``..._requests_total``,
  ``..._requests_queued_total`` (had to wait), ``..._requests_errors_total`` (timed out or
  failed), ``..._requests_wait_seconds_total``, ``..._usage_seconds_total`` (connections held
  by clients), ``..._returns_bad_total``, ``..._connections_total`` (opened),
  ``..._connections_seconds_total`` (spent opening them), ``..._connections_errors_total``,
  ``..._connections_lost_total``. (``pop_stats()`` elsewhere resets psycopg_pool's counters;
  Prometheus reads that as a counter reset.)
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import AbstractContextManager
from typing import Any

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from shared.infra.urls import redact
from shared.ops.pg_health import CHECKPOINT_TABLES, connect, read_snapshot

PREFIX = "ckpt_pg"
# Backend states pg_stat_activity reports: exported as 0 when absent, so series stay put.
STATES = ("active", "idle", "idle in transaction", "idle in transaction (aborted)",
          "fastpath function call", "disabled")

# get_stats() key -> (metric name after ckpt_pg_pool_, help); gauges are measures of now.
POOL_GAUGES = {
    "pool_min": ("min", "min_size of the pool"),
    "pool_max": ("max", "max_size of the pool"),
    "pool_size": ("size", "Connections the pool holds (in use or idle)"),
    "pool_available": ("available", "Idle connections ready in the pool"),
    "requests_waiting": ("requests_waiting", "Clients queued for a connection now"),
}
# get_stats() key -> (counter name after ckpt_pg_pool_, scale to the unit, help)
POOL_COUNTERS = {
    "requests_num": ("requests", 1, "Connection requests"),
    "requests_queued": ("requests_queued", 1, "Requests that had to wait for a connection"),
    "requests_errors": ("requests_errors", 1, "Requests that timed out or failed"),
    "requests_wait_ms": ("requests_wait_seconds", 0.001, "Time requests waited in the queue"),
    "usage_ms": ("usage_seconds", 0.001, "Time connections were held by clients"),
    "returns_bad": ("returns_bad", 1, "Connections returned in a bad state"),
    "connections_num": ("connections", 1, "Connections opened to the server"),
    "connections_ms": ("connections_seconds", 0.001, "Time spent opening connections"),
    "connections_errors": ("connections_errors", 1, "Failed connection attempts"),
    "connections_lost": ("connections_lost", 1, "Connections found broken"),
}


class PgCollector(Collector):
    """Pool and server metrics, read on each scrape; register it on any ``CollectorRegistry``.

    ``source`` is a PostgreSQL URL (a connection of its own per scrape, closed after) or a
    callable returning a context manager that yields a connection (``pool.connection``).
    """

    def __init__(self, source: str | Callable[[], AbstractContextManager[Any]],
                 pools: Mapping[str, Any] | None = None, *,
                 tables: tuple[str, ...] = CHECKPOINT_TABLES) -> None:
        self.source, self.pools, self.tables = source, dict(pools or {}), tables
        self.last_error: str | None = None

    def describe(self) -> Iterator[Metric]:
        return iter(())  # registering must not touch the database

    def collect(self) -> Iterator[Metric]:
        yield from self.pool_metrics()
        yield from self.server_metrics()

    # --- pools ---------------------------------------------------------------------------------

    def pool_metrics(self) -> Iterator[Metric]:
        stats = {name: pool.get_stats() for name, pool in self.pools.items()}
        for key, (name, doc) in POOL_GAUGES.items():
            g = GaugeMetricFamily(f"{PREFIX}_pool_{name}", doc, labels=["pool"])
            for pool, s in stats.items():
                g.add_metric([pool], s.get(key, 0))
            yield g
        for key, (name, scale, doc) in POOL_COUNTERS.items():
            c = CounterMetricFamily(f"{PREFIX}_pool_{name}", doc, labels=["pool"])
            for pool, s in stats.items():
                c.add_metric([pool], s.get(key, 0) * scale)
            yield c

    # --- the server ----------------------------------------------------------------------------

    def snapshot(self) -> dict[str, Any]:
        if isinstance(self.source, str):
            conn = connect(self.source)
            try:
                return read_snapshot(conn, self.tables)
            finally:
                conn.close()
        with self.source() as conn:
            return read_snapshot(conn, self.tables)

    def server_metrics(self) -> Iterator[Metric]:
        start = time.perf_counter()
        try:
            snap = self.snapshot()
        except Exception as exc:  # a scrape reports a down database, it never raises
            url = self.source if isinstance(self.source, str) else None
            self.last_error = redact(f"{type(exc).__name__}: {' '.join(str(exc).split())}", url)
            snap = None
        elapsed = time.perf_counter() - start

        def gauge(name: str, doc: str, value: float | None = None,
                  labels: list[str] | None = None) -> GaugeMetricFamily:
            return GaugeMetricFamily(f"{PREFIX}_{name}", doc, value=value, labels=labels)

        yield gauge("up", "1 when the PostgreSQL snapshot was read, 0 when it failed",
                    0 if snap is None else 1)
        yield gauge("scrape_seconds", "Time to read the PostgreSQL snapshot", elapsed)
        if snap is None:
            return
        self.last_error = None

        info = gauge("info", "Server version and database", labels=["server_version",
                                                                    "database"])
        info.add_metric([snap["server_version"], snap["database"]], 1)
        yield info
        conns = gauge("connections", "Client backends by state (the whole server)",
                      labels=["state"])
        by_state = {**dict.fromkeys(STATES, 0), **(snap.get("connections") or {})}
        for state, n in by_state.items():
            conns.add_metric([state], n)
        yield conns
        yield gauge("max_connections", "The server's max_connections", snap["max_connections"])

        hit, read = int(snap.get("blks_hit") or 0), int(snap.get("blks_read") or 0)
        yield CounterMetricFamily(f"{PREFIX}_blocks_hit", "Buffer cache hits (the database)",
                                  value=hit)
        yield CounterMetricFamily(f"{PREFIX}_blocks_read", "Blocks read from disk or the OS "
                                  "cache (the database)", value=read)
        if hit + read:
            yield gauge("cache_hit_ratio", "blks_hit / (blks_hit + blks_read) since the "
                        "statistics reset", hit / (hit + read))

        per_table = {
            "table_exists": "1 when the checkpoint table exists",
            "table_bytes": "Table bytes (heap + TOAST + maps), pg_table_size",
            "index_bytes": "Bytes of all the table's indexes, pg_indexes_size",
            "live_tuples": "Live tuples (n_live_tup, an estimate)",
            "dead_tuples": "Dead tuples waiting for vacuum (n_dead_tup)",
            "seconds_since_autovacuum": "Seconds since autovacuum last ran on the table",
            "seconds_since_vacuum": "Seconds since a manual VACUUM last ran on the table",
        }
        families = {k: gauge(k, doc, labels=["table"]) for k, doc in per_table.items()}
        tables = snap.get("tables") or {}
        for table in self.tables:
            raw = tables.get(table)
            families["table_exists"].add_metric([table], 0 if raw is None else 1)
            if raw is None:
                continue
            values = {"table_bytes": raw["table_bytes"], "index_bytes": raw["index_bytes"],
                      "live_tuples": raw["rows"], "dead_tuples": raw["dead_tuples"],
                      "seconds_since_autovacuum": raw["seconds_since_autovacuum"],
                      "seconds_since_vacuum": raw["seconds_since_vacuum"]}
            for key, value in values.items():
                if value is not None:
                    families[key].add_metric([table], float(value))
        yield from families.values()


def register_pg_collector(registry: Any, source: str | Callable[[], AbstractContextManager[Any]],
                          pools: Mapping[str, Any] | None = None) -> PgCollector:
    """Build a ``PgCollector`` and register it on ``registry`` (e.g. ``metrics.registry``)."""
    collector = PgCollector(source, pools)
    registry.register(collector)
    return collector

