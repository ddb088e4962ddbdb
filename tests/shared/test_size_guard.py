"""2.5 Size limits: the witness at small scale, metric by metric; the guard's async and
put_writes paths, its message, its warning, and conformance for the capabilities it claims."""

from __future__ import annotations

import itertools
import logging
import sqlite3
from collections.abc import AsyncGenerator, Sequence
from contextlib import closing
from pathlib import Path
from typing import Any

import pytest
from langgraph.checkpoint.base import BaseCheckpointSaver, empty_checkpoint
from langgraph.checkpoint.conformance.capabilities import DetectedCapabilities
from langgraph.checkpoint.memory import InMemorySaver
from langgraph.checkpoint.serde.jsonplus import JsonPlusSerializer
from langgraph.checkpoint.sqlite import SqliteSaver
from langgraph.checkpoint.sqlite.aio import AsyncSqliteSaver
from langgraph.graph import START, StateGraph

from m2_production.s5_size_limits import SEED, State
from shared.conformance import detected_capabilities, run_conformance
from shared.conformance import report_failures as failures
from shared.errors import CheckpointError
from shared.savers.size_guard import (
    MIB,
    CheckpointTooLarge,
    SizeGuardSaver,
    claimed_capabilities,
    sqlite_blob_audit,
)
from shared.workloads.payloads import random_bytes

KIB = 1024
CONFIG = {"configurable": {"thread_id": "t", "checkpoint_ns": ""}}


def test_message_names_size_limit_largest_channel_and_fix() -> None:
    inner = InMemorySaver()
    guard = SizeGuardSaver(inner, limit_bytes=100 * KIB, warn_bytes=50 * KIB)
    checkpoint = empty_checkpoint()
    checkpoint["channel_values"] = {"note": "hi", "attachment": b"x" * (150 * KIB)}
    with pytest.raises(CheckpointTooLarge) as caught:
        guard.put(CONFIG, checkpoint, {}, {"attachment": 1})
    err, msg = caught.value, str(caught.value)
    assert isinstance(err, CheckpointError)
    assert err.size_bytes > 150 * KIB and f"{err.size_bytes:,} bytes" in msg
    assert "100.0 KiB (102,400 bytes) limit" in msg
    assert err.largest_channel == "attachment" and f"{err.largest_channel_bytes:,}" in msg
    assert "'attachment' at 150.0 KiB" in msg
    assert "offload" in msg and "shared/savers/offload.py" in msg
    assert msg.count(". ") == 0 and msg.endswith(".")  # one sentence
    assert inner.storage == {} and inner.blobs == {}  # nothing reached the inner saver


def test_put_writes_refused_and_nothing_stored() -> None:
    inner = InMemorySaver()
    guard = SizeGuardSaver(inner, limit_bytes=100 * KIB)
    with pytest.raises(CheckpointTooLarge, match=r"One task's writes .* 'attachment'"):
        guard.put_writes({"configurable": {**CONFIG["configurable"], "checkpoint_id": "1"}},
                         [("note", "ok"), ("attachment", b"x" * (120 * KIB))], "task-1")
    assert inner.writes == {}


async def test_aput_writes_refused_and_small_writes_pass() -> None:
    inner = InMemorySaver()
    guard = SizeGuardSaver(inner, limit_bytes=100 * KIB)
    config = {"configurable": {**CONFIG["configurable"], "checkpoint_id": "1"}}
    with pytest.raises(CheckpointTooLarge):
        await guard.aput_writes(config, [("attachment", b"x" * (120 * KIB))], "task-1")
    assert inner.writes == {}
    await guard.aput_writes(config, [("attachment", b"x" * KIB)], "task-2")
    assert len(next(iter(inner.writes.values()))) == 1


def test_warning_between_warn_and_limit_is_logged_and_written(
        caplog: pytest.LogCaptureFixture) -> None:
    inner = InMemorySaver()
    guard = SizeGuardSaver(inner, limit_bytes=100 * KIB, warn_bytes=50 * KIB)
    checkpoint = empty_checkpoint()
    checkpoint["channel_values"] = {"attachment": b"x" * (60 * KIB)}
    checkpoint["channel_versions"] = {"attachment": 1}  # InMemorySaver loads blobs by version
    with caplog.at_level(logging.WARNING, logger="shared.savers.size_guard"):
        saved = guard.put(CONFIG, checkpoint, {}, {"attachment": 1})
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and warnings[0].size_report.largest[0] == "attachment"
    assert "warning threshold" in warnings[0].getMessage()
    assert inner.get_tuple(saved).checkpoint["channel_values"]["attachment"] == b"x" * (60 * KIB)


async def test_async_graph_on_async_sqlite_refused(tmp_path: Path) -> None:
    db = tmp_path / "async.sqlite"
    thread = {"configurable": {"thread_id": "async"}}

    def attach(state: State) -> dict[str, Any]:
        return {"attachment": random_bytes(state["size"], SEED)}

    async with AsyncSqliteSaver.from_conn_string(str(db)) as inner:
        await inner.setup()
        guard = SizeGuardSaver(inner, limit_bytes=1 * MIB)
        graph = (StateGraph(State).add_sequence([attach]).add_edge(START, "attach")
                 .compile(checkpointer=guard, interrupt_before=["attach"]))
        await graph.ainvoke({"request": "big", "size": 2 * MIB}, thread)
        head = await graph.aget_state(thread)
        with closing(sqlite3.connect(db)) as conn:  # the guard measured the stored row exactly
            (row_bytes,) = conn.execute(
                "SELECT length(checkpoint) FROM checkpoints WHERE checkpoint_id = ?",
                (head.config["configurable"]["checkpoint_id"],)).fetchone()
        assert guard.stats.last_checkpoint is not None
        assert guard.stats.last_checkpoint.total_bytes == row_bytes
        with pytest.raises(CheckpointTooLarge, match="'attachment'"):
            await graph.ainvoke(None, thread)
        after = await graph.aget_state(thread)
    assert after.config == head.config and after.values == head.values
    assert after.next == ("attach",)
    assert guard.stats.refused["writes"] >= 1
    with closing(sqlite3.connect(db)) as conn:
        audit = sqlite_blob_audit(conn, 1 * MIB)
    assert all(over == 0 and largest <= 1 * MIB for largest, over in audit.values()), audit


async def _guarded_memory() -> AsyncGenerator[BaseCheckpointSaver, None]:
    yield SizeGuardSaver(InMemorySaver())


def test_conformance_wrapping_in_memory() -> None:
    report = run_conformance("SizeGuardSaver[InMemorySaver]", _guarded_memory)
    assert report.passed_all(), failures(report)
    assert detected_capabilities(report) == ["delete_thread", "get_tuple", "list", "put",
                                             "put_writes"]


def test_conformance_wrapping_async_sqlite(tmp_path: Path) -> None:
    files = itertools.count()
    claims: list[tuple[set[str], set[str]]] = []

    async def factory() -> AsyncGenerator[BaseCheckpointSaver, None]:
        # A fresh file per capability suite: the suite expects an empty saver each time.
        path = tmp_path / f"conformance-{next(files)}.sqlite"
        async with AsyncSqliteSaver.from_conn_string(str(path)) as inner:
            await inner.setup()
            guard = SizeGuardSaver(inner)
            claims.append((claimed_capabilities(inner), claimed_capabilities(guard)))
            yield guard

    report = run_conformance("SizeGuardSaver[AsyncSqliteSaver]", factory)
    assert report.passed_all(), failures(report)
    assert detected_capabilities(report) == ["delete_thread", "get_tuple", "list", "put",
                                             "put_writes"]
    assert claims and all(inner == guard for inner, guard in claims)


class _PruningSaver(InMemorySaver):
    """An inner saver with one extended capability, to see the wrapper claim it too."""

    def prune(self, thread_ids: Sequence[str], *, strategy: str = "keep_latest") -> None:
        for thread_id in thread_ids:
            self.delete_thread(thread_id)

    async def aprune(self, thread_ids: Sequence[str], *, strategy: str = "keep_latest") -> None:
        self.prune(thread_ids, strategy=strategy)


@pytest.mark.parametrize("make_inner", [
    InMemorySaver, _PruningSaver,
    lambda: SqliteSaver(sqlite3.connect(":memory:", check_same_thread=False)),
])
def test_wrapper_claims_exactly_the_inner_capabilities(make_inner: Any) -> None:
    inner = make_inner()
    guard = SizeGuardSaver(inner)
    assert isinstance(guard, SizeGuardSaver)
    assert claimed_capabilities(guard) == claimed_capabilities(inner)
    assert (DetectedCapabilities.from_instance(guard).detected
            == DetectedCapabilities.from_instance(inner).detected)
    assert guard.serde is inner.serde


def test_sqlite_saver_guard_has_no_aput_writes() -> None:
    guard = SizeGuardSaver(SqliteSaver(sqlite3.connect(":memory:", check_same_thread=False)))
    assert "put_writes" in claimed_capabilities(guard)
    assert "aput_writes" not in claimed_capabilities(guard)  # SqliteSaver has none either
    assert "prune" in claimed_capabilities(SizeGuardSaver(_PruningSaver()))


def test_with_allowlist_keeps_the_guard_and_its_stats() -> None:
    # LangGraph calls this on compile and on each run when LANGGRAPH_STRICT_MSGPACK is on.
    strict = JsonPlusSerializer(allowed_msgpack_modules=None)  # what strict mode builds
    guard = SizeGuardSaver(InMemorySaver(serde=strict), limit_bytes=100 * KIB)
    clone = guard.with_allowlist([("m2_production.s5_size_limits", "State")])
    assert clone is not guard and isinstance(clone, SizeGuardSaver)
    assert clone.stats is guard.stats and clone.limit_bytes == guard.limit_bytes
    assert clone.serde is clone.inner.serde and clone.inner is not guard.inner
    with pytest.raises(CheckpointTooLarge):
        clone.put_writes({"configurable": {**CONFIG["configurable"], "checkpoint_id": "1"}},
                         [("attachment", b"x" * (120 * KIB))], "task-1")
    assert guard.stats.refused["writes"] == 1


def test_bad_limits_refused() -> None:
    with pytest.raises(ValueError, match="0 < warn_bytes <= limit_bytes"):
        SizeGuardSaver(InMemorySaver(), limit_bytes=10, warn_bytes=20)
    with pytest.raises(TypeError, match="wraps a BaseCheckpointSaver"):
        SizeGuardSaver(object())  # type: ignore[arg-type]

