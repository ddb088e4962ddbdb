"""shared/ops/pg_health.py and ``ckpt health``: a real PostgreSQL judged, reasons and exit codes."""

from __future__ import annotations

import json
import socket
import threading
import time
from pathlib import Path
from typing import Any

import psycopg
import pytest

from shared.cli import main as ckpt
from shared.errors import CheckpointError
from shared.ops import pg_health
from shared.ops.decide import Thresholds, load_thresholds, write_thresholds
from shared.ops.pg_health import CHECKPOINT_TABLES, check_health, health_from
from shared.workloads.postgres_writers import setup_postgres

PASSWORD = "s3cretPW42"  # must never appear in any message


@pytest.fixture(autouse=True)
def wide_console(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COLUMNS", "200")  # rich's tables unwrapped, so phrases can be found


def relaxed_rtt(tmp_path: Path) -> Path:
    """The repository's thresholds, but a round trip limit a busy 2-core machine cannot miss:
    every other threshold stays as configured (the RTT rule has its own test below)."""
    return write_thresholds(load_thresholds().with_(pg_rtt_p99_ms=1000.0),
                            tmp_path / "thresholds.toml")


def sql_one(url: str, query: str, *params: Any) -> Any:
    with psycopg.connect(url, autocommit=True) as conn:
        return conn.execute(query, params).fetchone()[0]


# --- healthy ------------------------------------------------------------------------------

def test_fresh_database_with_tables_is_healthy(pg_db: str, tmp_path: Path,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    setup_postgres(pg_db)
    th = load_thresholds(relaxed_rtt(tmp_path))
    h = check_health(pg_db, samples=30, thresholds=th)
    assert h.healthy and h.problems == [] and h.tables_exist
    assert h.samples == 30 and 0 < h.rtt_ms_p50 <= h.rtt_ms_p99
    assert h.server_version == sql_one(pg_db, "SHOW server_version")
    assert h.max_connections == int(sql_one(pg_db, "SHOW max_connections"))
    assert h.connections.get("active", 0) >= 1  # our own connection, reading
    assert h.connections_used == pytest.approx(h.connections_total / h.max_connections)
    for name in CHECKPOINT_TABLES:  # figures are the server's own
        t = h.tables[name]
        assert t.exists and t.rows == 0 and t.dead_tuples == 0 and t.dead_ratio == 0
        assert t.table_bytes == sql_one(pg_db, "SELECT pg_table_size(%s::regclass)", name)
        assert t.index_bytes == sql_one(pg_db, "SELECT pg_indexes_size(%s::regclass)", name)
        indexes = sql_one(pg_db, "SELECT array_agg(indexname ORDER BY indexname) FROM "
                          "pg_indexes WHERE tablename = %s", name)
        assert sorted(t.indexes) == indexes and f"{name}_pkey" in t.indexes
        assert sum(t.indexes.values()) == t.index_bytes

    assert ckpt(["health", pg_db, "--config", str(tmp_path / "thresholds.toml")]) == 0
    out = capsys.readouterr().out
    assert "healthy" in out and "unhealthy" not in out
    for shown in ("PostgreSQL " + h.server_version, "round trip", "max_connections",
                  "checkpoint_writes_pkey", "last autovacuum"):
        assert shown in out, shown


def test_json_output_keys(pg_db: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
                          ) -> None:
    setup_postgres(pg_db)
    assert ckpt(["health", pg_db, "--json", "--samples", "5",
                 "--config", str(relaxed_rtt(tmp_path))]) == 0
    data = json.loads(capsys.readouterr().out)
    assert set(data) == {
        "healthy", "url", "server_version", "database", "samples", "rtt_ms_p50", "rtt_ms_p99",
        "connections", "connections_total", "max_connections", "connections_used",
        "cache_hit_ratio", "cache_blocks", "tables", "tables_exist", "problems", "thresholds",
        "rtt_rounds"}
    assert data["healthy"] is True and data["samples"] == 5 and data["problems"] == []
    assert data["rtt_rounds"] == 1  # within the limit: measured once
    assert set(data["tables"]) == set(CHECKPOINT_TABLES)
    assert set(data["tables"]["checkpoints"]) == {
        "name", "exists", "rows", "dead_tuples", "dead_ratio", "table_bytes", "index_bytes",
        "indexes", "last_vacuum", "last_autovacuum", "last_analyze", "last_autoanalyze",
        "seconds_since_vacuum", "seconds_since_autovacuum"}
    assert data["thresholds"]["pg_rtt_p99_ms"] == 1000.0


# --- unhealthy: exit 1 with the reason ----------------------------------------------------

def test_missing_tables_is_a_problem_and_exit_1(pg_db: str, tmp_path: Path,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    h = check_health(pg_db, samples=3, thresholds=load_thresholds(relaxed_rtt(tmp_path)))
    assert not h.healthy and not h.tables_exist
    assert len(h.problems) == 1 and "checkpoint tables missing" in h.problems[0]
    assert all(name in h.problems[0] for name in CHECKPOINT_TABLES)
    assert ckpt(["health", pg_db, "--config", str(tmp_path / "thresholds.toml")]) == 1
    out = capsys.readouterr().out
    assert "unhealthy: 1 problem" in out and "missing" in out and "setup()" in out
    with psycopg.connect(pg_db, autocommit=True) as conn:  # nothing was created
        assert conn.execute("SELECT to_regclass('checkpoints')").fetchone() == (None,)


def test_many_dead_tuples_give_the_dead_ratio_reason(pg_db: str, tmp_path: Path,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    setup_postgres(pg_db)
    th = load_thresholds(relaxed_rtt(tmp_path))
    rows, deleted = 30_000, 15_000
    with psycopg.connect(pg_db, autocommit=True) as conn:
        conn.execute("ALTER TABLE checkpoints SET (autovacuum_enabled = false)")  # keep them
        conn.execute("INSERT INTO checkpoints (thread_id, checkpoint_ns, checkpoint_id, "
                     "checkpoint, metadata) SELECT 't' || i, '', lpad(i::text, 8, '0'), "
                     "'{}'::jsonb, '{}'::jsonb FROM generate_series(1, %s) i", (rows,))
        conn.execute("DELETE FROM checkpoints WHERE checkpoint_id <= lpad(%s::text, 8, '0')",
                     (deleted,))
        conn.execute("SELECT pg_stat_force_next_flush()")
    deadline = time.monotonic() + 20  # statistics reach shared memory when the session idles
    while True:
        h = check_health(pg_db, samples=3, thresholds=th)
        if h.tables["checkpoints"].dead_tuples >= deleted or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    t = h.tables["checkpoints"]
    assert t.dead_tuples == deleted and t.rows == rows - deleted
    assert t.dead_ratio == pytest.approx(deleted / rows)
    assert t.dead_ratio > th.pg_dead_ratio and t.dead_tuples >= th.pg_dead_tuples_min
    reasons = [p for p in h.problems if p.startswith("checkpoints:")]
    assert len(reasons) == 1 and "50% of tuples are dead (15,000 dead" in reasons[0]
    assert "VACUUM (ANALYZE) checkpoints" in reasons[0]
    assert ckpt(["health", pg_db, "--config", str(tmp_path / "thresholds.toml")]) == 1
    assert "50% of tuples are dead" in " ".join(capsys.readouterr().out.split())

    # the same dead tuples under the minimum count are noise, not a problem
    few = check_health(pg_db, samples=3, thresholds=th.with_(pg_dead_tuples_min=deleted + 1))
    assert few.healthy, few.problems
    # VACUUM clears them, and the check says when it ran
    with psycopg.connect(pg_db, autocommit=True) as conn:
        conn.execute("VACUUM checkpoints")
    h = check_health(pg_db, samples=3, thresholds=th)
    assert h.tables["checkpoints"].dead_tuples == 0 and h.healthy, h.problems
    assert h.tables["checkpoints"].last_vacuum is not None
    assert 0 <= h.tables["checkpoints"].seconds_since_vacuum < 60


def test_round_trip_and_connection_thresholds(pg_db: str) -> None:
    setup_postgres(pg_db)
    held = [psycopg.connect(pg_db, autocommit=True) for _ in range(3)]
    try:
        h = check_health(pg_db, samples=5, thresholds=Thresholds().with_(
            pg_rtt_p99_ms=0.0, pg_connections_used=0.0))
    finally:
        for conn in held:
            conn.close()
    assert h.connections.get("idle", 0) >= 3 and h.connections_total >= 4
    assert [p.split(" ")[:3] for p in h.problems] == [["round", "trip", "p99"],
                                                     [str(h.connections_total), "of",
                                                      "max_connections"]]
    assert "above 0 ms" in h.problems[0] and "pool connections" in h.problems[1]
    assert h.rtt_rounds == 2 and "(the better of 2 rounds)" in h.problems[0]


def snapshot(**changes: Any) -> dict[str, Any]:
    table = {"rows": 10, "dead_tuples": 0, "table_bytes": 8192, "index_bytes": 16384,
             "indexes": {"x_pkey": 16384}, "last_vacuum": None, "last_autovacuum": None,
             "last_analyze": None, "last_autoanalyze": None, "seconds_since_vacuum": None,
             "seconds_since_autovacuum": None}
    snap = {"server_version": "18.0", "database": "d", "max_connections": 100,
            "connections": {"active": 1}, "blks_hit": 99, "blks_read": 1,
            "tables": dict.fromkeys(CHECKPOINT_TABLES, table)}
    return {**snap, **changes}


@pytest.mark.parametrize(("hit", "read", "problem"), [
    (16_000, 4_000, True),   # 80 % over 20,000 blocks: below 90 %
    (80, 20, False),         # 80 % over 100 blocks: too few to judge
    (19_000, 1_000, False),  # 95 %
    (0, 0, False),           # nothing read yet
])
def test_cache_hit_rule(hit: int, read: int, problem: bool) -> None:
    h = health_from("postgresql://u:pw@h/d", snapshot(blks_hit=hit, blks_read=read), [0.1],
                    Thresholds())
    assert h.cache_blocks == hit + read
    assert h.cache_hit_ratio == (hit / (hit + read) if hit + read else None)
    assert [p for p in h.problems if "cache hit" in p] == (
        ["buffer cache hit ratio 80.0% over 20,000 blocks is below 90%: the working set does "
         "not fit in shared_buffers; raise shared_buffers (or the instance's memory) or prune "
         "old checkpoints."] if problem else [])
    assert h.url == "postgresql://u:***@h/d"


# --- bad input: exit 2, one sentence, password masked -------------------------------------

def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def with_user(url: str, user: str) -> str:
    return url.replace("://postgres@", f"://{user}:{PASSWORD}@", 1)


@pytest.mark.parametrize(("make_url", "phrase"), [
    (lambda pg: f"postgresql://app:{PASSWORD}@127.0.0.1:{_closed_port()}/db",
     "check that the server is running"),
    (lambda pg: with_user(pg, "nobody_here"), "check the user name and password"),
    (lambda pg: with_user(pg.rsplit("/", 1)[0] + "/no_such_db", "postgres"),
     "check the database name"),
    (lambda pg: f"http://app:{PASSWORD}@127.0.0.1/db", "is not a PostgreSQL URL"),
    (lambda pg: f"postgresql://app:{PASSWORD}@[::1/db", "not a valid PostgreSQL URL"),
])
def test_bad_url_is_exit_2_with_the_password_masked(pg_url: str, make_url: Any, phrase: str,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    url = make_url(pg_url)
    if PASSWORD not in url:
        pytest.skip("DATABASE_URL has credentials of its own")
    assert ckpt(["health", url]) == 2
    captured = capsys.readouterr()
    err = captured.err
    assert captured.out == "" and err.startswith("ckpt: ") and err.count("\n") == 1, err
    assert phrase in err and PASSWORD not in err and "***" in err, err


def test_a_server_that_never_answers_is_a_timeout(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(pg_health, "CONNECT_TIMEOUT_S", 2)  # libpq's minimum
    with socket.socket() as listener:  # accepts the TCP connection, never says a word
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        listener.settimeout(10)
        port = listener.getsockname()[1]
        stop = threading.Event()
        accepted: list[socket.socket] = []
        thread = threading.Thread(target=lambda: (accepted.append(listener.accept()[0]),
                                                  stop.wait(10)))
        thread.start()
        try:
            started = time.monotonic()
            with pytest.raises(CheckpointError) as info:
                check_health(f"postgresql://app:{PASSWORD}@127.0.0.1:{port}/db", samples=1)
            assert time.monotonic() - started < 10
        finally:
            stop.set()
            thread.join(timeout=10)
            for conn in accepted:
                conn.close()
    text = str(info.value)
    assert "did not answer within 2 s" in text and PASSWORD not in text and "***" in text, text


def test_bad_samples_and_bad_threshold_config(pg_db: str, tmp_path: Path,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    assert ckpt(["health", pg_db, "--samples", "0"]) == 2
    assert "--samples 0 must be" in capsys.readouterr().err
    bad = tmp_path / "bad.toml"
    bad.write_text("[postgres]\nconnections_used_above = 80\n")
    assert ckpt(["health", pg_db, "--config", str(bad)]) == 2
    assert "is a fraction: write 0.01 for 1 %" in capsys.readouterr().err
    bad.write_text("[postgres]\npool_waiting_for = \"5 minutes\"\n")
    assert ckpt(["health", pg_db, "--config", str(bad)]) == 2
    assert "must be a Prometheus range" in capsys.readouterr().err
