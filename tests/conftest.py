"""Shared fixtures: every test must leave no child process behind."""

from __future__ import annotations

import importlib
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from shared.witness import Witness


def _children() -> set[int]:
    """Live (non-zombie) child processes of this test process, from /proc."""
    pids: set[int] = set()
    for children in Path(f"/proc/{os.getpid()}/task").glob("*/children"):
        try:  # a thread may end between the listing and the read
            pids.update(int(p) for p in children.read_text().split())
        except (FileNotFoundError, ProcessLookupError):
            continue
    alive = set()
    for pid in pids:
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except FileNotFoundError:
            continue
        if state != "Z":
            alive.add(pid)
    return alive


# Servers that session-scoped fixtures started (they outlive the test that first asked).
SESSION_CHILDREN: set[int] = set()


@pytest.fixture(autouse=True)
def no_leftover_processes():
    if not Path("/proc/self/task").exists():  # not Linux: nothing to check with
        yield
        return
    before = _children()
    yield
    deadline = time.monotonic() + 5
    while (left := _children() - before - SESSION_CHILDREN) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not left, f"test left child processes running: {sorted(left)}"


@pytest.fixture(scope="session")
def pg_url(tmp_path_factory: pytest.TempPathFactory):
    """One PostgreSQL for the whole run: DATABASE_URL, or the embedded server, stopped after."""
    import shutil
    import tempfile

    from shared.infra.postgres import postgres_server

    # Not under pytest's base temp: another pytest session starting as root resets that to
    # 0700, and the server (as ``nobody`` when we are root) could no longer reach its data.
    home = Path(tempfile.mkdtemp(prefix="ckpt-test-pg-"))
    linux = Path("/proc/self/task").exists()
    before = _children() if linux else set()
    try:
        with postgres_server(home / "data") as url:
            if linux:
                SESSION_CHILDREN.update(_children() - before)  # stopped at session end
            yield url
    finally:
        shutil.rmtree(home, ignore_errors=True)


@pytest.fixture
def pg_db(pg_url: str, request: pytest.FixtureRequest) -> str:
    """A fresh database of its own for one test, on the shared server."""
    import hashlib
    import re

    from shared.infra.postgres import create_database

    # The name is readable, and unique even where two tests' names agree beyond the first 40
    # characters (PostgreSQL cuts a name at 63 bytes).
    digest = hashlib.sha256(request.node.nodeid.encode()).hexdigest()[:10]
    name = "t_" + re.sub(r"[^a-z0-9_]", "_", request.node.name.lower())[:40] + "_" + digest
    return create_database(pg_url, name)


@pytest.fixture(scope="session")
def redis_url():
    """One Redis for the whole run: REDIS_URL, or the embedded server, stopped after."""
    from shared.infra.redis import redis_server

    linux = Path("/proc/self/task").exists()
    before = _children() if linux else set()
    with redis_server() as url:
        if linux:
            SESSION_CHILDREN.update(_children() - before)  # stopped at session end
        yield url


@pytest.fixture
def redis_db(redis_url: str) -> str:
    """The session's Redis, emptied (FLUSHDB) before the test: its URL."""
    from shared.infra.redis import redis_client

    client = redis_client(redis_url, timeout=5)
    try:
        client.flushdb()
    finally:
        client.close()
    return redis_url


# --- every lesson's small-scale run, once a session ---------------------------------------

# The scale each lesson runs at in the tests. tests/test_lessons.py checks that every lesson's
# run passes; the lesson's own test file asserts its metrics one by one on the same run.
SMALL_SCALE: dict[str, dict[str, Any]] = {
    "m1_foundation.s1_sqlite_setup": {},
    "m1_foundation.s2_session_memory": {},
    "m1_foundation.s3_time_travel": {},
    "m1_foundation.s4_human_in_the_loop": {},
    "m1_foundation.s5_fault_tolerance": {"kills": 8, "seed": 3},
    "m2_production.s1_async_concurrency": {"n": 10, "writer_seconds": 0.5, "rounds": 2},
    "m2_production.s2_blob_offload": {"pdf_mb": 2.0, "dumps_calls": 50, "threads": 4},
    "m2_production.s3_metadata_filtering": {"checkpoints": 20_000, "threads": 400,
                                            "users": 400, "runs": 30},
    "m2_production.s4_pruning": {"days": 40, "conversations_per_day": 4, "keep_last": 2,
                                 "cycles": 6, "seed": 3},
    "m2_production.s5_size_limits": {"limit_mib": 2.0, "warn_mib": 1.0, "oversized_mib": 3.0,
                                     "warned_mib": 1.5, "puts": 20},
    "m3_trigger.s1_throughput_monitor": {"seconds": 2.0, "workers": 4, "conversations": 40,
                                         "overhead_puts": 40, "refresh_s": 0.25},
    "m3_trigger.s2_migration_decision": {"light_seconds": 6.0, "stage_seconds": 2.0,
                                         "lock_processes": 4, "lock_seconds": 2.0,
                                         "file_mb": 2.0, "ceiling_seconds": 0.5,
                                         "contention_processes": 4},
    "m4_postgres.s1_provisioning": {},  # starts its own embedded server, as `make m4` does
    "m4_postgres.s2_schema": {"turns": 8},
    # ~1,350 checkpoints: enough that comparing the two read paths is not swamped by what
    # every run costs once (preflight, setup)
    "m4_postgres.s3_migrate": {"threads": 150, "turns": 3, "batch": 100, "api_threads": 30,
                               "min_rate": 100},
    "m4_postgres.s4_cutover": {"phase_s": 0.5, "clients": 2, "conversations": 4},
    "m4_postgres.s5_many_servers": {"turns": 4, "writer_seconds": 0.6},
    # starts its own embedded server (its Unix socket is one of the paths measured)
    "m5_optimize.s1_pooling": {"calls": 20, "rounds": 3, "runs": "10,50,100",
                               "pools": "5,10,20", "clients": 500, "puts": 1},
    # 30,000 checkpoints: the table scan the index replaces is ~30 MB, not ~1 GB
    # p99 of 40 calls, best of 5 rounds: a p99 of 20 calls is their maximum, one stall
    "m5_optimize.s2_indexes": {"checkpoints": 30_000, "threads": 3_000, "calls": 40,
                               "rounds": 5, "puts": 60},
    # 10,000 checkpoints, 8 processes: the budget where the filter scan is still short
    # (judged against the baseline at this scale: 3 rounds are plenty for a 2x+ gap)
    "m5_optimize.s3_latency_budget": {"checkpoints": 10_000, "threads": 1_000, "seconds": 1.5,
                                      "rounds": 3, "sample": 1_000},
    # 45 days (a third past the 30-day cutoff), ~4,000 checkpoints: batches, writers, bytes
    "m5_optimize.s4_retention": {"days": 45, "conversations_per_day": 6, "batch_size": 300,
                                 "writers": 2, "writer_seconds": 1.5},
    # 2 chat workers, 0.7 s before and after the snapshot: a few hundred turns either side
    "m5_optimize.s5_backup_restore": {"warmup_s": 0.7, "after_s": 0.7, "workers": 2},
    # its own primary (fsync on, WAL archived): a "day" of 24 "hours" of 0.25 s, a base
    # backup in hour 2, the bad prune in hour 16, then recovery to just before it
    "m5_optimize.s6_pitr": {"hour_s": 0.25, "backup_hour": 2, "mistake_hour": 16},
    # its own embedded server, killed 3 times (SIGKILL) and restarted under chat traffic
    "m5_optimize.s7_retries": {"kills": 3, "traffic_s": 1.0, "down_s": 1.0},
    # its own primary + standby (twice: sync, async): 5 sync failovers, 2 async, short traffic
    "m5_optimize.s8_failover": {"sync_failovers": 5, "async_failovers": 2, "traffic_s": 0.5,
                                "lag_s": 0.5},
    # 5,000 items at scale (HNSW against an exact scan: the ratio printed, not judged, at
    # this size), 3 rounds; a 1 s TTL swept every 0.5 s, on SQLite and on PostgreSQL
    "m6_store.s1_store_setup": {"items": 5_000, "rounds": 3, "ttl_s": 1.0, "sweep_s": 0.5},
    # alice and 2 other users, three child processes; the session's PostgreSQL (pgvector)
    "m6_store.s2_cross_thread": {"users": 3},
    # 60 turns: the naive graph crosses 10 KB near turn 18, the hybrid's sawtooth repeats 10x
    "m6_store.s3_hybrid_memory": {"turns": 60},
    # 8 conversations x 6 turns (144 checkpoints a store), its own embedded Redis for the run
    # its own DURABLE PostgreSQL: write overhead is judged against a server that fsyncs
    "m7_mastery.s2_tiering": {"threads": 10, "calls": 100, "rounds": 3, "memory_threads": 10,
                              "phase_s": 1.5, "peer_threads": 4, "peer_turns": 3},
    "m7_mastery.s3_cost": {"threads": 8, "turns": 6},
}
# Lessons that run on the session's PostgreSQL (DATABASE_URL) rather than a server of their own.
ON_SESSION_POSTGRES = {"m4_postgres.s2_schema", "m4_postgres.s3_migrate",
                       "m4_postgres.s4_cutover", "m4_postgres.s5_many_servers",
                       "m5_optimize.s2_indexes", "m5_optimize.s3_latency_budget",
                       "m5_optimize.s4_retention", "m5_optimize.s5_backup_restore",
                       "m6_store.s1_store_setup", "m6_store.s2_cross_thread",
                       "m6_store.s3_hybrid_memory", "m7_mastery.s3_cost"}


@dataclass(frozen=True)
class LessonRun:
    """One small-scale run of a lesson's ``main()``: its witness and the workdir it used."""

    witness: Witness
    workdir: Path


RunLesson = Callable[[str], LessonRun]
_lesson_runs: dict[str, LessonRun] = {}


@pytest.fixture
def lesson_run(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory,
               monkeypatch: pytest.MonkeyPatch) -> RunLesson:
    """``lesson_run("m1_foundation.s1_sqlite_setup")``: the lesson's run at its small scale.

    Each lesson runs once a session, in a temp workdir of its own, whichever test asks first.
    """

    def run(module: str) -> LessonRun:
        if module not in _lesson_runs:
            if module not in SMALL_SCALE:
                pytest.fail(f"{module} has no small scale: add it to SMALL_SCALE in "
                            f"tests/conftest.py")
            workdir = tmp_path_factory.mktemp(module.replace(".", "_"))
            with monkeypatch.context() as env:
                if module in ON_SESSION_POSTGRES:
                    env.setenv("DATABASE_URL", request.getfixturevalue("pg_url"))
                else:
                    env.delenv("DATABASE_URL", raising=False)
                witness = importlib.import_module(module).main(workdir=workdir,
                                                               **SMALL_SCALE[module])
            _lesson_runs[module] = LessonRun(witness, workdir)
        return _lesson_runs[module]

    return run
