"""Prometheus metrics for any checkpoint saver, a /metrics endpoint, and a scraper.

    metrics = CheckpointMetrics(backend="sqlite", size_of=lambda: file_bytes(db))
    saver = InstrumentedSaver(SqliteSaver(conn), metrics)
    server = serve_metrics(metrics.registry)        # http://127.0.0.1:<port>/metrics
    graph = builder.compile(checkpointer=saver)

The metric names (also used by the alert rules in deploy/prometheus and the dashboard in
deploy/grafana):

- ``ckpt_writes_total{backend,operation}``: successful ``put`` / ``put_writes`` calls;
- ``ckpt_write_errors_total{backend,operation,reason}``: failed ones; ``reason`` is
  ``locked`` (SQLite's "database is locked"/busy), ``too_large`` (the size guard) or ``other``;
- ``ckpt_operation_seconds{backend,operation}``: latency of put, put_writes, get_tuple, list
  and the other capability calls (a histogram);
- ``ckpt_checkpoint_bytes{backend,operation}``: serialized size of each checkpoint (put) and
  of each task's writes (put_writes) (a histogram);
- ``ckpt_database_bytes{backend}``: the database's size, read when scraped;
- ``ckpt_retries_total{backend,operation,reason}``: calls ``RetryingSaver``
  (shared/savers/retry.py) repeated after a transient error; ``reason`` is ``connection``,
  ``shutdown``, ``serialization``, ``deadlock`` or ``pool_timeout``
  (``RetryingSaver(inner, metrics=metrics)``);
- ``ckpt_hot_reads_total{backend,result}``: reads of ``HybridSaver``'s Redis hot tier
  (shared/savers/hybrid.py); ``result`` is ``hit`` (answered from Redis), ``miss`` (read from
  PostgreSQL, then cached) or ``bypass`` (Redis down, slow or recently failed);
- ``ckpt_hot_tier_errors_total{backend,operation,reason}``: Redis calls of ``HybridSaver``
  that failed, the request served by PostgreSQL; ``reason`` is ``timeout``, ``connection``
  or ``foreign`` (a value under its keys that it did not write).

Sizes are measured by serializing with the inner saver's own serde once more (for
``SqliteSaver`` this is the stored row exactly); ``measure_size=False`` skips it.
"""

from __future__ import annotations

import base64
import http.client
import sqlite3
import time
import urllib.error
import urllib.request
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote, urlsplit, urlunsplit
from wsgiref.simple_server import WSGIServer

from langgraph.checkpoint.base import BaseCheckpointSaver, CheckpointTuple
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server
from prometheus_client.parser import text_string_to_metric_families

from shared.errors import CheckpointError
from shared.infra.urls import mask_url, redact
from shared.savers.wrapper import WrappingSaver

LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
                   2.5, 5.0, 10.0)
SIZE_BUCKETS = (256, 1024, 4096, 16384, 65536, 262144, 1048576, 4194304, 10485760, 52428800)
WRITE_OPS = ("put", "put_writes")


def operation_name(op: str) -> str:
    """``aput`` -> ``put``: sync and async calls share one label."""
    return op[1:] if op.startswith("a") and op[1:] in (
        "put", "put_writes", "get_tuple", "list", "delete_thread", "delete_for_runs",
        "copy_thread", "prune") else op


def error_reason(exc: BaseException) -> str:
    """``locked``, ``too_large`` or ``other``: what an alert needs to tell apart."""
    text = str(exc).lower()
    if isinstance(exc, sqlite3.OperationalError) and ("locked" in text or "busy" in text):
        return "locked"
    if type(exc).__name__ == "CheckpointTooLarge":
        return "too_large"
    return "other"


class CheckpointMetrics:
    """The metric objects, in a registry of their own (or the one given)."""

    def __init__(self, backend: str = "sqlite", registry: CollectorRegistry | None = None,
                 size_of: Callable[[], float] | None = None) -> None:
        self.backend = backend
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.writes = Counter("ckpt_writes", "Successful checkpoint writes (calls)",
                              ["backend", "operation"], registry=r)
        self.errors = Counter("ckpt_write_errors", "Failed checkpoint writes (calls)",
                              ["backend", "operation", "reason"], registry=r)
        self.latency = Histogram("ckpt_operation_seconds", "Saver call latency",
                                 ["backend", "operation"], buckets=LATENCY_BUCKETS, registry=r)
        self.size = Histogram("ckpt_checkpoint_bytes", "Serialized checkpoint / writes size",
                              ["backend", "operation"], buckets=SIZE_BUCKETS, registry=r)
        self.database = Gauge("ckpt_database_bytes", "Database size on disk", ["backend"],
                              registry=r)
        self.retries = Counter("ckpt_retries", "Saver calls retried after a transient error",
                               ["backend", "operation", "reason"], registry=r)
        self.hot_reads = Counter("ckpt_hot_reads", "Hot tier (Redis) reads by result",
                                 ["backend", "result"], registry=r)
        self.hot_errors = Counter("ckpt_hot_tier_errors", "Hot tier (Redis) calls that failed "
                                  "and were served by PostgreSQL",
                                  ["backend", "operation", "reason"], registry=r)
        for op in WRITE_OPS:  # export zeros from the start, so rate() has a baseline
            self.writes.labels(backend, op)
            self.errors.labels(backend, op, "locked")
        if size_of is not None:
            self.database.labels(backend).set_function(size_of)

    def retried(self, op: str, reason: str) -> None:
        """One retry of ``op`` by ``RetryingSaver`` (its ``metrics=``), for ``reason``."""
        self.retries.labels(self.backend, operation_name(op), reason).inc()

    def hot_read(self, result: str) -> None:
        """One ``HybridSaver`` read: ``hit``, ``miss`` or ``bypass`` (its ``metrics=``)."""
        self.hot_reads.labels(self.backend, result).inc()

    def hot_tier_error(self, op: str, reason: str) -> None:
        """One failed Redis call of ``HybridSaver``, served by PostgreSQL instead."""
        self.hot_errors.labels(self.backend, operation_name(op), reason).inc()

    def observe(self, op: str, seconds: float, size: int | None, error: BaseException | None,
                ) -> None:
        op = operation_name(op)
        self.latency.labels(self.backend, op).observe(seconds)
        if op not in WRITE_OPS:
            return
        if error is None:
            self.writes.labels(self.backend, op).inc()
            if size is not None:
                self.size.labels(self.backend, op).observe(size)
        else:
            self.errors.labels(self.backend, op, error_reason(error)).inc()


class InstrumentedSaver(WrappingSaver):
    """Wraps any saver (sync and async); records every call in ``metrics``.

    Claims exactly the capabilities of the saver it wraps (see ``WrappingSaver``).
    """

    def __init__(self, inner: BaseCheckpointSaver, metrics: CheckpointMetrics, *,
                 measure_size: bool = True) -> None:
        super().__init__(inner)
        self.metrics = metrics
        self.measure_size = measure_size

    def rewrap(self, inner: BaseCheckpointSaver) -> InstrumentedSaver:
        return InstrumentedSaver(inner, self.metrics, measure_size=self.measure_size)

    def _size(self, op: str, args: tuple[Any, ...]) -> int | None:
        if not self.measure_size:
            return None
        serde = self.inner.serde
        if op in ("put", "aput"):
            return len(serde.dumps_typed(args[1])[1])
        if op in ("put_writes", "aput_writes"):
            return sum(len(serde.dumps_typed(v)[1]) for _, v in args[1])
        return None

    def _call(self, op: str, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        start = time.perf_counter()
        try:
            result = fn(*args, **kwargs)
        except Exception as exc:  # not BaseException: a cancelled call is not a failed write
            self.metrics.observe(op, time.perf_counter() - start, None, exc)
            raise
        elapsed = time.perf_counter() - start  # the size is measured outside the timing
        self.metrics.observe(op, elapsed, self._size(op, args), None)
        return result

    async def _acall(self, op: str, fn: Callable[..., Awaitable[Any]], *args: Any,
                     **kwargs: Any) -> Any:
        start = time.perf_counter()
        try:
            result = await fn(*args, **kwargs)
        except Exception as exc:  # asyncio.CancelledError is no write error either
            self.metrics.observe(op, time.perf_counter() - start, None, exc)
            raise
        elapsed = time.perf_counter() - start
        self.metrics.observe(op, elapsed, self._size(op, args), None)
        return result

    def _iterate(self, op: str, make: Callable[[], Iterator[CheckpointTuple]]
                 ) -> Iterator[CheckpointTuple]:
        # Time spent inside the inner iterator only, not in the caller's loop body.
        spent, it = 0.0, None
        try:
            start = time.perf_counter()
            it = make()
            spent += time.perf_counter() - start
            while True:
                start = time.perf_counter()
                try:
                    item = next(it)
                except StopIteration:
                    spent += time.perf_counter() - start
                    break
                spent += time.perf_counter() - start
                yield item
        finally:
            self.metrics.observe(op, spent, None, None)

    async def _aiterate(self, op: str, make: Callable[[], AsyncIterator[CheckpointTuple]]
                        ) -> AsyncIterator[CheckpointTuple]:
        spent = 0.0
        try:
            it = make().__aiter__()
            while True:
                start = time.perf_counter()
                try:
                    item = await it.__anext__()
                except StopAsyncIteration:
                    spent += time.perf_counter() - start
                    break
                spent += time.perf_counter() - start
                yield item
        finally:
            self.metrics.observe(op, spent, None, None)


# --- the endpoint and the scraper --------------------------------------------------------------

@dataclass
class MetricsServer:
    """A /metrics endpoint on loopback; stop it with ``close()`` or ``with``."""

    server: WSGIServer
    url: str

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def __enter__(self) -> MetricsServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def serve_metrics(registry: CollectorRegistry, port: int = 0) -> MetricsServer:
    """Serve ``registry`` at http://127.0.0.1:<port>/metrics (port 0: a free one)."""
    server, _thread = start_http_server(port, addr="127.0.0.1", registry=registry)
    return MetricsServer(server, f"http://127.0.0.1:{server.server_port}/metrics")


Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]
"""Scraped samples: (sample name, sorted labels) -> value."""


def parse_metrics(text: str) -> Samples:
    """Prometheus text format -> samples, with ``prometheus_client``'s own parser."""
    out: Samples = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


# What a /metrics endpoint may answer with: Prometheus text, or OpenMetrics text.
METRICS_CONTENT_TYPES = ("text/plain", "application/openmetrics-text")


def metrics_request(url: str) -> urllib.request.Request:
    """The GET for a /metrics URL: credentials in the URL (``http://user:pw@host/metrics``)
    go into an HTTP Basic ``Authorization`` header, never into the request line.

    The header is not forwarded on a redirect (to another host it would leak the password).
    One clear CheckpointError (password masked) for anything that is not an http(s) URL
    with a host and a valid port.
    """
    shown = mask_url(url)
    example = "such as http://127.0.0.1:9464/metrics or http://[::1]:9464/metrics"
    if not url.startswith(("http://", "https://")):
        raise CheckpointError(f"{shown!r} is not an http(s) URL: give the address of a /metrics "
                              f"endpoint, {example}.")
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 -- raises ValueError for a port that is not a number
    except ValueError as exc:
        raise CheckpointError(f"{shown!r} is not a valid URL ({redact(str(exc), url)}): write "
                              f"it {example}.") from None
    if not parts.hostname or parts.netloc.count("@") > 1 or any(c in url for c in " \t\r\n"):
        raise CheckpointError(f"{shown!r} is not a valid URL (no host, a space, or an @ in the "
                              f"user or password, which must be written %40): write it {example}.")
    host = parts.netloc.rpartition("@")[2]
    request = urllib.request.Request(urlunsplit(parts._replace(netloc=host)))  # noqa: S310 -- http(s) only
    if parts.username is not None or parts.password is not None:
        pair = f"{unquote(parts.username or '')}:{unquote(parts.password or '')}"
        request.add_unredirected_header(
            "Authorization", "Basic " + base64.b64encode(pair.encode()).decode("ascii"))
    return request


def scrape(url: str, timeout: float = 5.0) -> Samples:
    """GET a /metrics URL and parse it; one clear CheckpointError if it is unreachable or
    does not answer with Prometheus metrics. ``user:password@`` in the URL is sent as HTTP
    Basic authentication."""
    shown = mask_url(url)
    request = metrics_request(url)
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:  # noqa: S310 -- http(s) only
            kind = response.headers.get_content_type()  # text/plain when the header is absent
            body = response.read()
    except urllib.error.HTTPError as exc:
        fix = ("check the user and password in the URL" if exc.code in (401, 403) else
               "check that the service serves /metrics there")
        raise CheckpointError(f"Could not scrape {shown} (HTTP {exc.code} "
                              f"{redact(str(exc.reason), url)}): {fix}.") from None
    except (urllib.error.URLError, OSError, ValueError, http.client.HTTPException) as exc:
        reason = exc.reason if isinstance(exc, urllib.error.URLError) else exc
        raise CheckpointError(f"Could not scrape {shown} ({redact(str(reason), url)}): check that "
                              "the service is running and serves /metrics there.") from None
    try:
        # An HTML page or a JSON API is a wrong path, even if a line of it happened to parse.
        if kind not in METRICS_CONTENT_TYPES:
            raise ValueError(f"content type {kind}")
        return parse_metrics(body.decode())
    except ValueError as exc:  # UnicodeDecodeError included
        raise CheckpointError(f"{shown} did not return Prometheus metrics "
                              f"({redact(str(exc), url)}): point at the /metrics path of the "
                              "service.") from None


def value_of(samples: Samples, name: str, **labels: str) -> float:
    """The sum of the samples called ``name`` whose labels include ``labels``.

    ``value_of(s, "ckpt_writes_total", operation="put")`` sums over every backend.
    """
    want = set(labels.items())
    return sum(v for (n, lab), v in samples.items() if n == name and want <= set(lab))


def registry_samples(registry: CollectorRegistry) -> Samples:
    """The same samples, read from a registry in this process (no HTTP)."""
    out: Samples = {}
    for family in registry.collect():
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def sqlite_ground_truth(conn: sqlite3.Connection) -> dict[str, int]:
    """What the metrics of an instrumented ``SqliteSaver`` must add up to, read from its tables.

    Each successful ``put`` stores one ``checkpoints`` row and each ``put_writes`` the rows of
    one (thread, namespace, checkpoint, task) group, so long as no call repeats an id (both
    use INSERT OR REPLACE). Sizes are the stored blobs, as the wrapper measures them.
    """
    rows, cp_bytes = conn.execute(
        "SELECT count(*), coalesce(sum(length(checkpoint)), 0) FROM checkpoints").fetchone()
    groups, w_bytes = conn.execute(
        "SELECT count(*), coalesce(sum(b), 0) FROM (SELECT sum(length(value)) AS b FROM writes "
        "GROUP BY thread_id, checkpoint_ns, checkpoint_id, task_id)").fetchone()
    return {"checkpoint_rows": rows, "checkpoint_bytes": cp_bytes, "write_groups": groups,
            "write_bytes": w_bytes}


def check_against_sqlite(samples: Samples, conn: sqlite3.Connection, backend: str = "sqlite",
                         ) -> dict[str, tuple[float, float, str]]:
    """Scraped figures next to the database's own: name -> (scraped, truth, unit).

    Holds while every put succeeded (a failed put adds a latency observation, no row).
    """
    truth = sqlite_ground_truth(conn)

    def got(name: str, operation: str) -> float:
        return value_of(samples, name, backend=backend, operation=operation)

    return {
        "puts": (got("ckpt_writes_total", "put"), truth["checkpoint_rows"], "calls"),
        "put_writes": (got("ckpt_writes_total", "put_writes"), truth["write_groups"], "calls"),
        "checkpoint_bytes": (got("ckpt_checkpoint_bytes_sum", "put"), truth["checkpoint_bytes"],
                             "bytes"),
        "writes_bytes": (got("ckpt_checkpoint_bytes_sum", "put_writes"), truth["write_bytes"],
                         "bytes"),
        "put_latency_observations": (got("ckpt_operation_seconds_count", "put"),
                                     truth["checkpoint_rows"], "observations"),
    }
