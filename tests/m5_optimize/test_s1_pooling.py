"""5.1 `m5_optimize/s1_pooling.py`: the witness metric by metric, and the machinery under it
(the latency/TLS proxy, saver pools and their timeout sentence, PgBouncer start and stop)."""

from __future__ import annotations

import socket
import time
from urllib.parse import urlsplit

import psycopg
import pytest
from psycopg_pool import PoolTimeout

from shared.errors import CheckpointError
from shared.infra.pgbouncer import find_pgbouncer, pgbouncer
from shared.infra.proxy import latency_proxy
from shared.savers.pooling import (
    POOLER_KWARGS,
    SAVER_KWARGS,
    PoolExhausted,
    open_saver_pool,
    saver_pool,
)
from shared.workloads.postgres_writers import PG_KWARGS
from tests.conftest import SMALL_SCALE, RunLesson

BOUNCER_METRICS = ("bouncer_clients_ok", "bouncer_server_conns_max",
                   "prepared_errors_threshold_0", "prepared_errors_threshold_5",
                   "prepared_errors_threshold_none")


def test_5_1_pooling(lesson_run: RunLesson) -> None:
    scale = SMALL_SCALE["m5_optimize.s1_pooling"]
    w = lesson_run("m5_optimize.s1_pooling").witness
    assert w.error is None
    assert w["unix_socket"].value == "measured"  # the lesson's own embedded server
    assert w["tls_negotiated"].value is True
    assert w["query_rtt_tls_1ms"].value >= 1
    assert w["pool_checkout_p99"].value < 1
    assert w["new_connect_p50_tls_1ms"].value >= 3  # SSLRequest, TLS, startup: 3 round trips
    assert w["acquire_new_over_pool_tls_1ms"].value >= 50
    assert w["request_new_over_pool_tls_1ms"].value > 1
    assert w["runs_failed"].value == 0
    assert w["server_conns_over_pool_max"].value <= 0
    assert w["activity_samples_min"].value >= 3
    assert w["runs_per_s_100_on_5"].value > 0 and w["runs_per_s_100_on_20"].value > 0
    assert w["exhausted_timeouts"].value == 2
    assert w["exhausted_is_pool_timeout"].value is True
    assert w["exhausted_says_max_size_and_timeout"].value is True
    assert any(line.startswith("exhausted pool: No free connection") for line in w.evidence)
    if find_pgbouncer() is None:
        assert all(w[name].value == "skipped" for name in BOUNCER_METRICS)
        assert all(w[name].target is None for name in BOUNCER_METRICS)
        pytest.skip("pgbouncer is not installed: its part of the lesson was skipped")
    assert w["bouncer_clients_ok"].value == scale["clients"]
    assert w["bouncer_server_conns_max"].value <= 20
    assert w["prepared_errors_threshold_0"].value > 0
    assert w["prepared_errors_threshold_5"].value > 0
    assert w["prepared_errors_threshold_none"].value == 0
    assert any("_pg3_" in line for line in w.evidence)  # the real error users see
    assert w.passed


def test_bad_scale_is_one_sentence() -> None:
    from m5_optimize.s1_pooling import main

    w = main(runs="10,x")
    assert w.error is not None and "runs='10,x'" in w.error and not w.passed


# --- prepare_threshold: what 0 and None mean in psycopg 3 ------------------------------------

def test_prepare_threshold_zero_prepares_none_disables(pg_db: str) -> None:
    assert PG_KWARGS is SAVER_KWARGS and SAVER_KWARGS["prepare_threshold"] == 0
    counts = {}
    for kwargs in (SAVER_KWARGS, POOLER_KWARGS):
        with psycopg.connect(pg_db, **kwargs) as conn:
            conn.execute("SELECT %s::int", (1,))
            counts[kwargs["prepare_threshold"]] = conn.execute(
                "SELECT count(*) n FROM pg_prepared_statements").fetchone()["n"]
    assert counts[0] >= 1  # 0: prepared on the server at its first execution
    assert counts[None] == 0  # None: never


# --- the proxy --------------------------------------------------------------------------------

def _round_trips(url: str, n: int = 5) -> list[float]:
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("SELECT 1")
        out = []
        for _ in range(n):
            t0 = time.perf_counter()
            conn.execute("SELECT 1").fetchone()
            out.append((time.perf_counter() - t0) * 1000)
        return out


def test_proxy_adds_the_round_trip_time(pg_url: str) -> None:
    with latency_proxy(pg_url, rtt_ms=20.0) as url:
        assert urlsplit(url).hostname == "127.0.0.1" and urlsplit(url).port != \
            urlsplit(pg_url).port
        slowed = _round_trips(url)
    direct = _round_trips(pg_url)
    assert min(slowed) >= 20  # every round trip pays the 20 ms
    assert min(slowed) - min(direct) < 60  # and not several times over
    with pytest.raises(OSError):  # stopped with its block
        socket.create_connection(("127.0.0.1", urlsplit(url).port), timeout=1).close()


def test_proxy_terminates_tls(pg_url: str) -> None:
    with latency_proxy(pg_url, rtt_ms=0.0, tls=True) as url:
        assert "sslmode=require" in url
        with psycopg.connect(url) as conn:
            assert conn.pgconn.ssl_in_use
            server_side = conn.execute("SELECT ssl FROM pg_stat_ssl WHERE pid = "
                                       "pg_backend_pid()").fetchone()[0]
            assert server_side is False  # TLS ends at the proxy: the server has no OpenSSL
            assert conn.execute("SELECT 41 + 1").fetchone()[0] == 42
    with latency_proxy(pg_url, rtt_ms=0.0) as plain:  # the embedded server has no TLS
        with psycopg.connect(plain) as conn:
            assert not conn.pgconn.ssl_in_use
        with pytest.raises(psycopg.OperationalError):
            psycopg.connect(plain + "?sslmode=require", connect_timeout=5)


def test_proxy_refuses_a_socket_url() -> None:
    with pytest.raises(CheckpointError, match="TCP host"), \
            latency_proxy("postgresql://postgres@/postgres?host=/tmp"):
        pass


# --- saver pools: the exhausted pool's sentence ----------------------------------------------

def test_exhausted_pool_says_what_to_raise(pg_db: str) -> None:
    with open_saver_pool(pg_db, min_size=1, max_size=1, timeout=0.2, name="app") as pool:
        with pool.connection() as held:
            held.execute("SELECT 1")
            with pytest.raises(PoolTimeout) as caught:  # existing handlers still catch it
                pool.getconn()
        with pool.connection() as conn:  # usable again once returned
            assert conn.execute("SELECT 1 AS one").fetchone() == {"one": 1}  # dict_row
    err = caught.value
    assert isinstance(err, PoolExhausted) and isinstance(err, CheckpointError)
    text = str(err)
    assert "pool 'app'" in text and "0.2 s" in text and "max_size=1" in text
    assert "raise max_size" in text and "timeout" in text and "\n" not in text


def test_unreachable_server_is_not_called_exhausted() -> None:
    with socket.socket() as s:  # a port where nothing listens
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    pool = saver_pool(f"postgresql://postgres@127.0.0.1:{port}/postgres", max_size=3,
                      timeout=0.5, reconnect_timeout=1)
    pool.open(wait=False)
    try:
        with pytest.raises(PoolExhausted, match="could not open connections to the server"):
            pool.getconn()
    finally:
        pool.close()


# --- PgBouncer --------------------------------------------------------------------------------

def test_pgbouncer_starts_serves_and_stops(pg_db: str) -> None:
    if find_pgbouncer() is None:
        pytest.skip("pgbouncer is not installed")
    with pgbouncer(pg_db, pool_size=2) as url:
        assert urlsplit(url).path == urlsplit(pg_db).path
        with psycopg.connect(url, **POOLER_KWARGS) as conn:
            assert conn.execute("SELECT current_database() db").fetchone()["db"] == \
                urlsplit(pg_db).path.lstrip("/")
    with pytest.raises(psycopg.OperationalError):
        psycopg.connect(url, connect_timeout=2)


def test_pgbouncer_missing_is_one_sentence(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PGBOUNCER", "/nonexistent/pgbouncer")
    assert find_pgbouncer() is None
    with pytest.raises(CheckpointError, match="PgBouncer was not found"), \
            pgbouncer("postgresql://postgres@127.0.0.1:5432/postgres"):
        pass


def test_without_pgbouncer_its_part_says_skipped(monkeypatch: pytest.MonkeyPatch,
                                                  tmp_path) -> None:
    from m5_optimize.s1_pooling import main

    monkeypatch.setenv("PGBOUNCER", "/nonexistent/pgbouncer")
    monkeypatch.delenv("DATABASE_URL", raising=False)
    w = main(workdir=tmp_path, calls=5, rounds=1, runs="2", pools="2", clients=1)
    assert w.error is None
    assert all(w[name].value == "skipped" and w[name].target is None
               for name in BOUNCER_METRICS)
    assert any(line.startswith("PgBouncer: skipped") for line in w.evidence)
