"""HybridSaver: conformance for all eight capabilities; hot reads equal PostgreSQL's; nothing
lost and nothing stale when Redis is killed, flushed or paused; bad input in one sentence."""

from __future__ import annotations

import itertools
import logging
import time
from collections.abc import AsyncGenerator, Iterator
from typing import Any

import pytest
from langgraph.checkpoint.base import BaseCheckpointSaver

from shared.conformance import detected_capabilities, report_failures, run_conformance
from shared.errors import CheckpointError
from shared.graph import build_chat_graph
from shared.infra.postgres import create_database
from shared.infra.redis import embedded_redis, redis_client
from shared.savers.hybrid import MAGIC, HybridSaver
from shared.savers.postgres import open_postgres_saver

ALL = ["copy_thread", "delete_for_runs", "delete_thread", "get_tuple", "list", "prune", "put",
       "put_writes"]


@pytest.fixture
def hybrid(redis_db: str, pg_db: str) -> Iterator[HybridSaver]:
    with HybridSaver.from_conn_strings(redis_db, pg_db, warmup=0.0) as saver:
        yield saver


def _chat(saver: BaseCheckpointSaver, thread: str, turns: int) -> dict[str, Any]:
    graph = build_chat_graph(saver)
    config = {"configurable": {"thread_id": thread}}
    for i in range(turns):
        graph.invoke({"messages": [("user", f"turn {i} of {thread}")]}, config)
    return config


def _same(a: Any, b: Any) -> bool:
    return (a.config == b.config and a.checkpoint == b.checkpoint and a.metadata == b.metadata
            and a.parent_config == b.parent_config and a.pending_writes == b.pending_writes)


def test_conformance_all_eight_capabilities(redis_url: str, pg_url: str) -> None:
    n = itertools.count()

    async def factory() -> AsyncGenerator[BaseCheckpointSaver, None]:
        url = create_database(pg_url, f"hybrid_conformance_{next(n)}")  # empty per suite
        with HybridSaver.from_conn_strings(redis_url, url, warmup=0.0,
                                           prefix=f"conf{next(n)}") as saver:
            yield saver

    report = run_conformance("HybridSaver", factory)
    assert report.passed_all(), report_failures(report)
    assert detected_capabilities(report) == ALL


def test_hot_reads_equal_postgres_and_skip_it(hybrid: HybridSaver, pg_db: str) -> None:
    config = _chat(hybrid, "alice", 4)
    page = {"configurable": {"thread_id": "alice", "checkpoint_ns": ""}}
    before = hybrid.stats.hits
    hot_latest = hybrid.get_tuple(config)
    hot_page = list(hybrid.list(page, limit=5))
    assert hybrid.stats.hits == before + 2  # both answered from Redis
    with open_postgres_saver(pg_db) as pg:  # the official saver alone reads the same database
        assert _same(hot_latest, pg.get_tuple(config))
        cold_page = list(pg.list(page, limit=5))
    assert len(hot_page) == 5 and all(_same(a, b) for a, b in zip(hot_page, cold_page, strict=True))
    assert any(t.pending_writes for t in hot_page)  # writes came back with their checkpoints


def test_history_beyond_hot_keep_comes_from_postgres(redis_db: str, pg_db: str) -> None:
    with HybridSaver.from_conn_strings(redis_db, pg_db, warmup=0.0, hot_keep=3) as saver:
        _chat(saver, "bob", 3)
        page = {"configurable": {"thread_id": "bob", "checkpoint_ns": ""}}
        misses = saver.stats.misses
        assert len(list(saver.list(page, limit=3))) == 3 and saver.stats.misses == misses
        assert len(list(saver.list(page, limit=None))) == 9  # all 3 turns, from PostgreSQL
        keys = redis_client(redis_db).keys("ckpt:hot:*|*:z")
        assert keys and all(redis_client(redis_db).zcard(k) <= 3 for k in keys)


def test_redis_killed_paused_flushed_loses_nothing(pg_db: str, tmp_path: Any,
                                                   caplog: pytest.LogCaptureFixture) -> None:
    with embedded_redis(tmp_path / "redis") as server, HybridSaver.from_conn_strings(
            server.url, pg_db, warmup=0.0, retry_after=0.2) as saver:
        config = _chat(saver, "carol", 2)
        server.kill()
        with caplog.at_level(logging.WARNING):
            _chat(saver, "carol", 1)  # Redis gone: PostgreSQL alone, no error
        assert saver.stats.bypassed + saver.stats.errors > 0
        assert "served from PostgreSQL" in caplog.text
        server.restart()
        time.sleep(0.3)
        assert len(saver.get_tuple(config).checkpoint["channel_values"]["messages"]) == 6
        redis_client(server.url).flushall()
        assert len(saver.get_tuple(config).checkpoint["channel_values"]["messages"]) == 6
        server.pause()
        _chat(saver, "carol", 1)  # times out on Redis, writes PostgreSQL
        server.resume()
        time.sleep(0.3)
        # the hot set cached before the pause is now older than PostgreSQL: never served
        assert len(saver.get_tuple(config).checkpoint["channel_values"]["messages"]) == 8


def test_pause_then_resume_never_serves_the_old_hot_set(pg_db: str, tmp_path: Any) -> None:
    # A read right after Redis resumes once used key names from the old epoch with the new
    # epoch's check, and served the hot set cached before the pause (1 run in 8 here).
    logging.getLogger("shared.savers.hybrid").setLevel(logging.ERROR)
    with embedded_redis(tmp_path / "redis") as server, HybridSaver.from_conn_strings(
            server.url, pg_db, warmup=0.0, retry_after=0.2) as saver:
        config = _chat(saver, "gina", 1)
        for turn in range(2, 6):
            assert saver.get_tuple(config) is not None  # cached before the pause
            server.pause()
            _chat(saver, "gina", 1)
            server.resume()
            time.sleep(0.3)
            got = saver.get_tuple(config).checkpoint["channel_values"]["messages"]
            assert len(got) == 2 * turn, f"turn {turn}: {len(got)} messages"
    logging.getLogger("shared.savers.hybrid").setLevel(logging.NOTSET)


def test_metrics_count_hits_misses_and_failures(pg_db: str, tmp_path: Any) -> None:
    from shared.ops.metrics import CheckpointMetrics, registry_samples, value_of

    metrics = CheckpointMetrics(backend="postgres")
    with embedded_redis(tmp_path / "redis") as server, HybridSaver.from_conn_strings(
            server.url, pg_db, warmup=0.0, metrics=metrics) as saver:
        config = _chat(saver, "hana", 2)
        saver.get_tuple(config)
        server.kill()
        saver.get_tuple(config)
        samples = registry_samples(metrics.registry)
        assert value_of(samples, "ckpt_hot_reads_total", backend="postgres", result="hit") >= 1
        assert value_of(samples, "ckpt_hot_reads_total", backend="postgres", result="miss") >= 1
        assert value_of(samples, "ckpt_hot_reads_total", backend="postgres",
                        result="bypass") == 1  # Redis down: the read went to PostgreSQL
        failures = sum(value_of(samples, "ckpt_hot_tier_errors_total", backend="postgres",
                                operation=op, reason="connection")
                       for op in ("get_tuple", "heartbeat"))  # whichever met it first
        assert failures >= 1
        server.restart()


async def test_async_saver_under_ainvoke(redis_db: str, pg_db: str) -> None:
    from shared.savers.hybrid import AsyncHybridSaver

    async with AsyncHybridSaver.from_conn_strings(redis_db, pg_db, warmup=0.0) as saver:
        assert isinstance(saver, AsyncHybridSaver)
        graph = build_chat_graph(saver)
        config = {"configurable": {"thread_id": "ivan"}}
        for i in range(3):
            await graph.ainvoke({"messages": [("user", f"turn {i}")]}, config)
        latest = await saver.aget_tuple(config)
        assert len(latest.checkpoint["channel_values"]["messages"]) == 6
        assert saver.stats.hits >= 2  # the turns after the first resumed from Redis
        page = [t async for t in saver.alist({"configurable": {"thread_id": "ivan",
                                                                "checkpoint_ns": ""}}, limit=4)]
        assert len(page) == 4


def test_another_process_sees_every_write(redis_db: str, pg_db: str) -> None:
    with HybridSaver.from_conn_strings(redis_db, pg_db, warmup=0.0) as a, \
            HybridSaver.from_conn_strings(redis_db, pg_db, warmup=0.0) as b:
        config = _chat(a, "dave", 1)
        assert b.get_tuple(config).checkpoint["id"] == a.get_tuple(config).checkpoint["id"]
        _chat(b, "dave", 1)
        assert a.get_tuple(config).checkpoint["id"] == b.get_tuple(config).checkpoint["id"]
        a.delete_thread("dave")
        assert b.get_tuple(config) is None


def test_foreign_values_are_refused_not_decoded(hybrid: HybridSaver, redis_db: str,
                                               caplog: pytest.LogCaptureFixture) -> None:
    config = _chat(hybrid, "erin", 1)
    client = redis_client(redis_db)
    for key in client.keys("ckpt:hot:*:h"):
        for field in client.hkeys(key):
            if field.startswith(b"c:"):
                client.hset(key, field, b"not written by the saver")
    with caplog.at_level(logging.WARNING):
        tup = hybrid.get_tuple(config)
    assert tup is not None and len(tup.checkpoint["channel_values"]["messages"]) == 2
    assert hybrid.stats.foreign == 1 and "did not write" in caplog.text
    assert MAGIC.startswith(b"ckpt-hot:")


def test_bad_input_one_sentence(pg_db: str, redis_db: str,
                                caplog: pytest.LogCaptureFixture) -> None:
    with pytest.raises(CheckpointError, match="hot_keep=0"):
        HybridSaver.from_conn_strings(redis_db, pg_db, hot_keep=0).__enter__()
    with pytest.raises(CheckpointError) as err:
        HybridSaver.from_conn_strings("redis://u:s3cret@host:notaport", pg_db).__enter__()
    assert "s3cret" not in str(err.value)
    with caplog.at_level(logging.WARNING), HybridSaver.from_conn_strings(
            "redis://:pw@127.0.0.1:1/0", pg_db, warmup=0.0) as saver:
        config = _chat(saver, "frank", 1)  # Redis unreachable at start: PostgreSQL alone
        assert saver.get_tuple(config) is not None
    assert "starts on PostgreSQL alone" in caplog.text and ":pw@" not in caplog.text
