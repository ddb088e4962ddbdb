"""RetryingSaver: which errors it retries, its backoff, iterators, async, metrics; replays on a
real PostgresSaver write nothing twice; a real server restart outlived; conformance."""

from __future__ import annotations

import asyncio
import itertools
import random
import shutil
import tempfile
import threading
import time
from collections.abc import AsyncGenerator, AsyncIterator, Iterator
from pathlib import Path
from typing import Any, ClassVar

import psycopg
import psycopg.errors as pg_errors
import pytest
from langgraph.checkpoint.base import BaseCheckpointSaver, CheckpointTuple, empty_checkpoint
from langgraph.checkpoint.memory import InMemorySaver
from langgraph.checkpoint.postgres import PostgresSaver
from langgraph.checkpoint.postgres.aio import AsyncPostgresSaver
from psycopg_pool import ConnectionPool, PoolTimeout

from shared.conformance import detected_capabilities, report_failures, run_conformance
from shared.errors import CheckpointError
from shared.infra import reaper
from shared.infra.postgres import create_database, embedded_postgres
from shared.ops.metrics import CheckpointMetrics, registry_samples, value_of
from shared.savers.pooling import PoolExhausted, open_saver_pool
from shared.savers.retry import RetryingSaver, transient_reason
from shared.savers.serde import graph_serde
from shared.savers.size_guard import CheckpointTooLarge, SizeGuardSaver
from shared.savers.wrapper import claimed_capabilities

CONFIG = {"configurable": {"thread_id": "t1", "checkpoint_ns": ""}}

TRANSIENT = [
    (psycopg.OperationalError("server closed the connection unexpectedly"), "connection"),
    (psycopg.OperationalError("connection failed: Connection refused"), "connection"),
    (pg_errors.AdminShutdown("terminating connection due to administrator command"), "shutdown"),
    (pg_errors.CrashShutdown("terminating connection because of crash"), "shutdown"),
    (pg_errors.CannotConnectNow("the database system is starting up"), "shutdown"),
    (pg_errors.SerializationFailure("could not serialize access"), "serialization"),
    (pg_errors.DeadlockDetected("deadlock detected"), "deadlock"),
    (PoolTimeout("couldn't get a connection after 30.00 sec"), "pool_timeout"),
    (PoolExhausted("No free connection in pool 'p' after waiting 1 s"), "pool_timeout"),
]
PERMANENT = [
    pg_errors.SyntaxError('syntax error at or near "SELEC"'),
    psycopg.ProgrammingError("bad SQL"),
    psycopg.DataError("invalid input"),
    pg_errors.QueryCanceled("canceling statement due to statement timeout"),
    pg_errors.ProgramLimitExceeded("index row size exceeds maximum"),
    CheckpointError("refused: the thread id is empty"),
    ValueError("not a checkpoint"),
]


class Flaky(InMemorySaver):
    """An InMemorySaver whose calls first raise the queued errors, then work."""

    def __init__(self, errors: list[Exception] | None = None) -> None:
        super().__init__()
        self.errors = list(errors or [])
        self.midway: list[Exception] = []  # raised by list() after its first item
        self.calls = 0

    def _maybe_fail(self) -> None:
        self.calls += 1
        if self.errors:
            raise self.errors.pop(0)

    def put(self, *args: Any, **kwargs: Any) -> Any:
        self._maybe_fail()
        return super().put(*args, **kwargs)

    async def aput(self, *args: Any, **kwargs: Any) -> Any:
        self._maybe_fail()
        return await super().aput(*args, **kwargs)

    def get_tuple(self, config: Any) -> CheckpointTuple | None:
        self._maybe_fail()
        return super().get_tuple(config)

    async def aget_tuple(self, config: Any) -> CheckpointTuple | None:
        self._maybe_fail()
        return await super().aget_tuple(config)

    def list(self, *args: Any, **kwargs: Any) -> Iterator[CheckpointTuple]:
        self._maybe_fail()  # before the first item
        for i, item in enumerate(super().list(*args, **kwargs)):
            if i == 1 and self.midway:
                raise self.midway.pop(0)
            yield item

    async def alist(self, *args: Any, **kwargs: Any) -> AsyncIterator[CheckpointTuple]:
        self._maybe_fail()
        async for item in super().alist(*args, **kwargs):
            yield item


def _put(saver: BaseCheckpointSaver, cid: str = "00000000-0000-0000-0000-000000000001") -> Any:
    cp = empty_checkpoint()
    cp["id"] = cid
    return saver.put(CONFIG, cp, {"source": "input", "step": -1}, {})


def _saver(inner: BaseCheckpointSaver, **kw: Any) -> tuple[RetryingSaver, list[float]]:
    slept: list[float] = []
    return RetryingSaver(inner, sleep=slept.append, rng=random.Random(7), **kw), slept


# --- the policy ---------------------------------------------------------------------------------

@pytest.mark.parametrize(("exc", "reason"), TRANSIENT, ids=lambda x: type(x).__name__)
def test_transient_errors_are_retried_then_succeed(exc: Exception, reason: str) -> None:
    assert transient_reason(exc) == reason
    inner = Flaky([exc, exc])
    saver, slept = _saver(inner)
    assert _put(saver)["configurable"]["checkpoint_id"].endswith("1")
    assert inner.calls == 3 and len(slept) == 2
    assert saver.get_tuple(CONFIG) is not None


@pytest.mark.parametrize("exc", PERMANENT, ids=lambda x: type(x).__name__)
def test_permanent_errors_are_never_retried(exc: Exception) -> None:
    assert transient_reason(exc) is None
    inner = Flaky([exc])
    saver, slept = _saver(inner)
    with pytest.raises(type(exc)) as raised:
        _put(saver)
    assert raised.value is exc and inner.calls == 1 and slept == []
    assert not getattr(exc, "__notes__", None)


def test_size_guard_refusal_is_not_retried() -> None:
    inner = Flaky()
    saver, slept = _saver(SizeGuardSaver(inner, limit_bytes=1024, warn_bytes=512))
    cp = empty_checkpoint()
    cp["channel_values"] = {"blob": b"x" * 4096}
    with pytest.raises(CheckpointTooLarge):
        saver.put(CONFIG, cp, {}, {"blob": 1})
    assert inner.calls == 0 and slept == []


def test_backoff_is_full_jitter_under_a_growing_cap() -> None:
    inner = Flaky([pg_errors.AdminShutdown("x")] * 3)
    saver, slept = _saver(inner)
    _put(saver)
    caps = [0.1, 0.2, 0.4]
    assert [saver.cap(a) for a in range(3)] == pytest.approx(caps)
    assert all(0 <= d <= c for d, c in zip(slept, caps, strict=True)), slept
    rng = random.Random(7)  # the same seed draws the same delays: uniform(0, cap)
    assert slept == pytest.approx([rng.uniform(0, c) for c in caps])
    capped = RetryingSaver(InMemorySaver(), first_delay=1.0, max_delay=3.0)
    assert [capped.cap(a) for a in range(5)] == [1.0, 2.0, 3.0, 3.0, 3.0]
    assert RetryingSaver(InMemorySaver()).cap(20) == 5.0  # the default cap
    # jitter spreads: many draws fill the interval, not one point
    many = RetryingSaver(InMemorySaver(), rng=random.Random(1))
    draws = [many.rng.uniform(0, many.cap(2)) for _ in range(2000)]
    assert min(draws) < 0.02 and max(draws) > 0.38


def test_exhausted_retries_reraise_the_error_with_the_attempt_count() -> None:
    errors = [psycopg.OperationalError(f"lost {i}") for i in range(10)]
    inner = Flaky(errors)
    saver, slept = _saver(inner, retries=3)
    with pytest.raises(psycopg.OperationalError) as raised:
        _put(saver)
    assert inner.calls == 4 and len(slept) == 3
    assert str(raised.value) == "lost 3"  # the last attempt's own error, unchanged
    assert raised.value.__notes__ == [
        "RetryingSaver: put failed 4 times (1 call + 3 retries), the last with this "
        "connection error; giving up."]
    none, slept0 = _saver(Flaky([psycopg.OperationalError("once")]), retries=0)
    with pytest.raises(psycopg.OperationalError):
        _put(none)
    assert slept0 == []


def test_bad_settings_refused() -> None:
    with pytest.raises(ValueError, match="retries >= 0"):
        RetryingSaver(InMemorySaver(), retries=-1)
    with pytest.raises(ValueError, match="base >= 1"):
        RetryingSaver(InMemorySaver(), base=0.5)


# --- iterators, async, metrics ------------------------------------------------------------------

def test_list_retried_only_before_its_first_item() -> None:
    inner = Flaky()
    saver, slept = _saver(inner)
    for i in range(3):
        _put(saver, f"00000000-0000-0000-0000-00000000000{i}")
    inner.errors = [psycopg.OperationalError("lost")]
    assert len(list(saver.list(CONFIG))) == 3 and len(slept) == 1
    inner.midway = [psycopg.OperationalError("lost midway")]
    seen = []
    with pytest.raises(psycopg.OperationalError, match="lost midway"):
        for item in saver.list(CONFIG):
            seen.append(item)
    assert len(seen) == 1 and len(slept) == 1  # no retry once an item was handed out
    empty, _ = _saver(Flaky([psycopg.OperationalError("x")]))
    assert list(empty.list(CONFIG)) == []


def test_async_calls_retried() -> None:
    inner = Flaky()
    slept: list[float] = []

    async def asleep(d: float) -> None:
        slept.append(d)

    saver = RetryingSaver(inner, asleep=asleep, sleep=lambda d: pytest.fail("sync sleep"),
                          rng=random.Random(3))

    async def run() -> None:
        cp = empty_checkpoint()
        inner.errors = [pg_errors.SerializationFailure("x")]
        await saver.aput(CONFIG, cp, {}, {})
        inner.errors = [PoolTimeout("x"), pg_errors.DeadlockDetected("y")]
        assert (await saver.aget_tuple(CONFIG)).checkpoint["id"] == cp["id"]
        inner.errors = [psycopg.OperationalError("z")]
        assert [t.checkpoint["id"] async for t in saver.alist(CONFIG)] == [cp["id"]]
        inner.errors = [ValueError("permanent")]
        with pytest.raises(ValueError):
            await saver.aget_tuple(CONFIG)

    asyncio.run(run())
    assert len(slept) == 4 and all(0 <= d <= 0.4 for d in slept)


def test_each_retry_recorded_in_metrics_and_callback() -> None:
    metrics = CheckpointMetrics(backend="postgres")
    calls: list[tuple[str, int, float, str]] = []
    inner = Flaky([pg_errors.AdminShutdown("a"), psycopg.OperationalError("b")])
    saver = RetryingSaver(inner, metrics=metrics, sleep=lambda d: None,
                          on_retry=lambda op, n, d, e: calls.append((op, n, d, type(e).__name__)))
    _put(saver)
    inner.errors = [PoolTimeout("c")]
    asyncio.run(saver.aget_tuple(CONFIG))
    samples = registry_samples(metrics.registry)
    assert value_of(samples, "ckpt_retries_total", operation="put", reason="shutdown") == 1
    assert value_of(samples, "ckpt_retries_total", operation="put", reason="connection") == 1
    assert value_of(samples, "ckpt_retries_total", operation="get_tuple",
                    reason="pool_timeout") == 1
    assert value_of(samples, "ckpt_retries_total") == 3
    assert [(op, n, name) for op, n, _, name in calls] == [
        ("put", 1, "AdminShutdown"), ("put", 2, "OperationalError"),
        ("aget_tuple", 1, "PoolTimeout")]


def test_claims_exactly_the_inner_capabilities(pg_db: str) -> None:
    assert claimed_capabilities(RetryingSaver(InMemorySaver())) == claimed_capabilities(
        InMemorySaver())
    with PostgresSaver.from_conn_string(pg_db) as pg:
        saver = RetryingSaver(pg)
        assert claimed_capabilities(saver) == claimed_capabilities(pg)
        assert "aput" not in claimed_capabilities(saver)
        assert type(saver).__name__ == "RetryingSaver[PostgresSaver]"
        assert isinstance(saver.rewrap(InMemorySaver()), RetryingSaver)


# --- idempotency on PostgresSaver's own SQL ----------------------------------------------------

TABLES = ("checkpoints", "checkpoint_blobs", "checkpoint_writes")


def _rows(url: str) -> dict[str, list[tuple[Any, ...]]]:
    with psycopg.connect(url) as conn:
        return {t: conn.execute(f"SELECT * FROM {t} ORDER BY 1, 2, 3, 4").fetchall()
                for t in TABLES}


def _full_checkpoint(cid: str) -> tuple[dict[str, Any], dict[str, Any]]:
    cp = empty_checkpoint()
    cp["id"] = cid
    cp["channel_values"] = {"messages": ["hello", "world"], "count": 3}
    cp["channel_versions"] = {"messages": "00000000000000000000000000000001.0", "count": 1}
    return cp, {"messages": cp["channel_versions"]["messages"], "count": 1}


def test_put_and_put_writes_replayed_write_nothing_twice(pg_db: str) -> None:
    with PostgresSaver.from_conn_string(pg_db) as saver:
        saver.setup()
        cp, versions = _full_checkpoint("1ef00000-0000-6000-8000-000000000001")
        cfg = saver.put(CONFIG, cp, {"source": "loop", "step": 1}, versions)
        writes = [("messages", "a reply"), ("count", 4)]  # INSERT ... DO NOTHING
        special = [("__error__", "boom"), ("__interrupt__", "wait")]  # INSERT ... DO UPDATE
        saver.put_writes(cfg, writes, "task-1", "path")
        saver.put_writes(cfg, special, "task-2", "path")
        first = _rows(pg_db)
        assert [len(first[t]) for t in TABLES] == [1, 1, 4]  # the int count stays inline
        saver.put(CONFIG, cp, {"source": "loop", "step": 1}, versions)  # the replays
        saver.put_writes(cfg, writes, "task-1", "path")
        saver.put_writes(cfg, special, "task-2", "path")
        assert _rows(pg_db) == first


class LosesTheAck(PostgresSaver):
    """The server commits, then the client hears nothing: the first put and put_writes raise
    the error a dropped connection gives, after the inner call returned."""

    lose: ClassVar[dict[str, int]] = {"put": 1, "put_writes": 1}  # set per instance

    def put(self, *args: Any, **kwargs: Any) -> Any:
        result = super().put(*args, **kwargs)
        if self.lose["put"]:
            self.lose["put"] -= 1
            raise psycopg.OperationalError("server closed the connection unexpectedly")
        return result

    def put_writes(self, *args: Any, **kwargs: Any) -> None:
        super().put_writes(*args, **kwargs)
        if self.lose["put_writes"]:
            self.lose["put_writes"] -= 1
            raise psycopg.OperationalError("server closed the connection unexpectedly")


def test_retry_after_a_lost_acknowledgement_leaves_exactly_one_row(pg_db: str) -> None:
    with psycopg.Connection.connect(pg_db, autocommit=True, prepare_threshold=0,
                                    row_factory=psycopg.rows.dict_row) as conn:
        inner = LosesTheAck(conn)
        inner.lose = {"put": 1, "put_writes": 1}
        inner.setup()
        saver, slept = _saver(inner)
        cp, versions = _full_checkpoint("1ef00000-0000-6000-8000-000000000002")
        cfg = saver.put(CONFIG, cp, {"source": "loop", "step": 1}, versions)
        saver.put_writes(cfg, [("messages", "x"), ("count", 5)], "task-9")
        assert len(slept) == 2  # each call retried once
        rows = _rows(pg_db)
        assert [len(rows[t]) for t in TABLES] == [1, 1, 2]
        got = saver.get_tuple(cfg)
        assert got.checkpoint["channel_values"]["messages"] == ["hello", "world"]
        assert [(w[1], w[2]) for w in got.pending_writes] == [("messages", "x"), ("count", 5)]


def test_terminated_backend_mid_traffic_retried_over_a_pool(pg_db: str) -> None:
    """A real dropped connection: the pool's connections are terminated by another session."""
    with psycopg.connect(pg_db, autocommit=True) as admin:
        with open_saver_pool(pg_db, min_size=2, max_size=2) as pool:
            PostgresSaver(pool).setup()
            saver, slept = _saver(PostgresSaver(pool, serde=graph_serde()), retries=5)
            for i in range(3):
                admin.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                              "WHERE datname = current_database() AND pid <> pg_backend_pid()")
                cp, versions = _full_checkpoint(f"1ef00000-0000-6000-8000-00000000001{i}")
                saver.put(CONFIG, cp, {"source": "loop", "step": i}, versions)
            assert slept, "no connection was found broken: the test did not test a retry"
        rows = _rows(pg_db)
        assert len(rows["checkpoints"]) == 3 and len(rows["checkpoint_blobs"]) == 1


# --- a real restart -----------------------------------------------------------------------------

def test_call_outlives_a_postgres_restart_and_a_crash() -> None:
    """A clean stop, then a SIGKILL: each time the server comes back 1 s later, on the same
    port, while a put is retrying; the put returns and its row is there."""
    home = Path(tempfile.mkdtemp(prefix="ckpt-retry-pg-"))
    try:
        with embedded_postgres(home / "pg") as server, \
                open_saver_pool(server.url, min_size=1, max_size=2, timeout=1.0,
                                check=ConnectionPool.check_connection) as pool:
            PostgresSaver(pool).setup()
            retried: list[str] = []
            saver = RetryingSaver(PostgresSaver(pool, serde=graph_serde()), retries=40,
                                  first_delay=0.2, max_delay=1.0, rng=random.Random(5),
                                  on_retry=lambda op, n, d, e: retried.append(
                                      type(e).__name__))
            _put(saver, "1ef00000-0000-6000-8000-000000000020")
            for i, down in enumerate((server.stop, server.kill), start=1):
                postmaster = server._guard.pid
                down()
                assert not reaper.running(postmaster)
                down_at, before = time.monotonic(), len(retried)
                starter = threading.Timer(1.0, server.restart)
                starter.start()
                try:
                    _put(saver, f"1ef00000-0000-6000-8000-00000000002{i}")  # waits, retries
                finally:
                    starter.join()
                assert time.monotonic() - down_at >= 1.0
                assert len(retried) > before, "the call never failed: the server was not down"
            ids = [t.checkpoint["id"] for t in saver.list(CONFIG)]
            assert ids == [f"1ef00000-0000-6000-8000-00000000002{i}" for i in (2, 1, 0)]
    finally:
        shutil.rmtree(home, ignore_errors=True)


# --- conformance --------------------------------------------------------------------------------

def test_conformance_over_async_postgres(pg_url: str) -> None:
    n = itertools.count()
    claims: list[tuple[set[str], set[str]]] = []

    async def factory() -> AsyncGenerator[BaseCheckpointSaver, None]:
        url = create_database(pg_url, f"retry_conformance_{next(n)}")  # empty per suite
        async with AsyncPostgresSaver.from_conn_string(url) as inner:
            await inner.setup()
            saver = RetryingSaver(inner)
            claims.append((claimed_capabilities(inner), claimed_capabilities(saver)))
            yield saver

    report = run_conformance("RetryingSaver[AsyncPostgresSaver]", factory)
    assert report.passed_all(), report_failures(report)
    assert {"put", "put_writes", "get_tuple", "list", "delete_thread"} <= set(
        detected_capabilities(report))
    assert claims and all(inner == mine for inner, mine in claims)


def test_conformance_over_in_memory() -> None:
    async def factory() -> AsyncGenerator[BaseCheckpointSaver, None]:
        yield RetryingSaver(InMemorySaver())

    report = run_conformance("RetryingSaver[InMemorySaver]", factory)
    assert report.passed_all(), report_failures(report)
    assert detected_capabilities(report) == ["delete_thread", "get_tuple", "list", "put",
                                             "put_writes"]
