"""shared/ops/pg_metrics.py: PostgreSQL + pool metrics scraped over HTTP, against the truth;
and the PostgreSQL part of the rendered alert rules and dashboard against config and exporter."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import tempfile
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

import psycopg
import pytest
import yaml
from prometheus_client import CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families
from psycopg_pool import ConnectionPool

from shared.infra.postgres import embedded_postgres
from shared.ops.decide import load_thresholds
from shared.ops.metrics import CheckpointMetrics, Samples, parse_metrics, serve_metrics, value_of
from shared.ops.pg_health import CHECKPOINT_TABLES
from shared.ops.pg_metrics import POOL_COUNTERS, POOL_GAUGES, PgCollector
from shared.ops.render import (
    DASHBOARD_FILE,
    PG_BACKEND,
    RULES_FILE,
    render_grafana_dashboard,
    render_prometheus_rules,
)
from shared.workloads.postgres_writers import PG_KWARGS, setup_postgres


def scrape_text(url: str) -> str:
    with urllib.request.urlopen(url, timeout=30) as response:
        assert response.status == 200
        return response.read().decode()


def one(samples: Samples, name: str, **labels: str) -> float:
    matches = [v for (n, lab), v in samples.items() if n == name and set(labels.items())
               <= set(lab)]
    assert len(matches) == 1, (name, labels, matches)
    return matches[0]


def sql(url: str, query: str, *params: Any) -> Any:
    with psycopg.connect(url, autocommit=True) as conn:
        return conn.execute(query, params).fetchone()[0]


@pytest.fixture
def pool(pg_db: str):
    setup_postgres(pg_db)
    p = ConnectionPool(pg_db, min_size=2, max_size=2, kwargs=PG_KWARGS, open=False,
                       name="app")
    p.open(wait=True, timeout=30)
    try:
        yield p
    finally:
        p.close()


# --- values -------------------------------------------------------------------------------

def test_scrape_over_http_matches_sql_and_pool_stats(pg_db: str, pool: ConnectionPool) -> None:
    with pool.connection() as conn:  # some traffic through the pool, and dead tuples
        conn.execute("INSERT INTO checkpoint_writes (thread_id, checkpoint_ns, checkpoint_id, "
                     "task_id, idx, channel, type, blob) SELECT 't', '', 'c', 'k', i, 'x', "
                     "'bytes', '\\x00' FROM generate_series(1, 500) i")
        conn.execute("DELETE FROM checkpoint_writes WHERE idx <= 200")
        conn.execute("SELECT pg_stat_force_next_flush()")
    deadline = time.monotonic() + 20
    while sql(pg_db, "SELECT n_dead_tup FROM pg_stat_user_tables WHERE relname = "
              "'checkpoint_writes'") < 200 and time.monotonic() < deadline:
        time.sleep(0.2)

    metrics = CheckpointMetrics(PG_BACKEND)  # the saver metrics share the registry
    collector = PgCollector(pg_db, {"app": pool})
    metrics.registry.register(collector)
    with serve_metrics(metrics.registry) as server:
        s = parse_metrics(scrape_text(server.url))
    stats = pool.get_stats()

    assert one(s, "ckpt_pg_up") == 1 and collector.last_error is None
    assert 0 < one(s, "ckpt_pg_scrape_seconds") < 10
    assert one(s, "ckpt_pg_info", server_version=sql(pg_db, "SHOW server_version"),
               database=sql(pg_db, "SELECT current_database()")) == 1
    # pool: every key of get_stats(), in its unit
    for key, (name, _doc) in POOL_GAUGES.items():
        assert one(s, f"ckpt_pg_pool_{name}", pool="app") == stats.get(key, 0), key
    for key, (name, scale, _doc) in POOL_COUNTERS.items():
        assert one(s, f"ckpt_pg_pool_{name}_total", pool="app") == pytest.approx(
            stats.get(key, 0) * scale), key
    assert one(s, "ckpt_pg_pool_requests_total", pool="app") == 1
    assert one(s, "ckpt_pg_pool_size", pool="app") == 2
    assert one(s, "ckpt_pg_pool_connections_total", pool="app") == 2
    # server: the pool's 2 idle connections, and the scrape's own, active
    assert one(s, "ckpt_pg_connections", state="idle") >= 2
    assert one(s, "ckpt_pg_connections", state="active") >= 1
    assert one(s, "ckpt_pg_max_connections") == int(sql(pg_db, "SHOW max_connections"))
    for table in CHECKPOINT_TABLES:
        assert one(s, "ckpt_pg_table_exists", table=table) == 1
        assert one(s, "ckpt_pg_table_bytes", table=table) == sql(
            pg_db, "SELECT pg_table_size(%s::regclass)", table)
        assert one(s, "ckpt_pg_index_bytes", table=table) == sql(
            pg_db, "SELECT pg_indexes_size(%s::regclass)", table)
        live, dead = sql(pg_db, "SELECT ARRAY[n_live_tup, n_dead_tup] FROM "
                         "pg_stat_user_tables WHERE relname = %s", table)
        assert (one(s, "ckpt_pg_live_tuples", table=table),
                one(s, "ckpt_pg_dead_tuples", table=table)) == (live, dead), table
    assert one(s, "ckpt_pg_dead_tuples", table="checkpoint_writes") == 200
    assert one(s, "ckpt_pg_live_tuples", table="checkpoint_writes") == 300
    hit, read = one(s, "ckpt_pg_blocks_hit_total"), one(s, "ckpt_pg_blocks_read_total")
    assert hit > 0 and one(s, "ckpt_pg_cache_hit_ratio") == pytest.approx(hit / (hit + read))
    # counters only grow; the second scrape reads them again
    assert sql(pg_db, "SELECT blks_hit FROM pg_stat_database WHERE datname = "
               "current_database()") >= hit
    assert value_of(s, "ckpt_writes_total", backend=PG_BACKEND) == 0  # saver metrics there too


def test_vacuum_times_are_exported_once_known(pg_db: str) -> None:
    setup_postgres(pg_db)
    registry = CollectorRegistry()
    registry.register(PgCollector(pg_db))
    with serve_metrics(registry) as server:
        before = parse_metrics(scrape_text(server.url))
        with psycopg.connect(pg_db, autocommit=True) as conn:
            conn.execute("VACUUM checkpoint_blobs")
        after = parse_metrics(scrape_text(server.url))
    assert not [k for k in before if k[0] == "ckpt_pg_seconds_since_vacuum"]  # never: absent
    assert 0 <= one(after, "ckpt_pg_seconds_since_vacuum", table="checkpoint_blobs") < 60
    assert not [k for k in after if k[0] == "ckpt_pg_seconds_since_vacuum"
                and ("table", "checkpoints") in k[1]]


def test_missing_tables_are_exported_as_absent(pg_db: str) -> None:
    registry = CollectorRegistry()
    registry.register(PgCollector(pg_db))
    with serve_metrics(registry) as server:
        s = parse_metrics(scrape_text(server.url))
    assert one(s, "ckpt_pg_up") == 1
    assert [one(s, "ckpt_pg_table_exists", table=t) for t in CHECKPOINT_TABLES] == [0, 0, 0]
    assert not [k for k in s if k[0] == "ckpt_pg_table_bytes"]


def test_a_waiting_request_shows_in_requests_waiting(pg_db: str) -> None:
    setup_postgres(pg_db)
    registry = CollectorRegistry()
    with ConnectionPool(pg_db, min_size=1, max_size=1, kwargs=PG_KWARGS, open=False) as pool:
        pool.open(wait=True, timeout=30)
        # the scrape reads the server through the pool itself (pool.connection as factory)
        # with its own pool: a busy application pool must not block the scrape
        with ConnectionPool(pg_db, min_size=1, max_size=1, kwargs=PG_KWARGS,
                            open=False) as scrape_pool:
            scrape_pool.open(wait=True, timeout=30)
            registry.register(PgCollector(scrape_pool.connection, {"app": pool}))
            with serve_metrics(registry) as server:
                done = threading.Event()
                with pool.connection():  # the only connection is taken ...
                    waiter = threading.Thread(target=lambda: (
                        pool.connection(timeout=30).__enter__(), done.set()))
                    waiter.daemon = True
                    deadline = time.monotonic() + 10
                    waiter.start()  # ... so this request queues
                    while pool.get_stats()["requests_waiting"] < 1 and \
                            time.monotonic() < deadline:
                        time.sleep(0.01)
                    waiting = parse_metrics(scrape_text(server.url))
                done.wait(30)
                waiter.join(timeout=30)
                after = parse_metrics(scrape_text(server.url))
    assert one(waiting, "ckpt_pg_pool_requests_waiting", pool="app") >= 1
    assert one(waiting, "ckpt_pg_pool_available", pool="app") == 0
    assert one(waiting, "ckpt_pg_up") == 1
    assert done.is_set()
    assert one(after, "ckpt_pg_pool_requests_waiting", pool="app") == 0
    assert one(after, "ckpt_pg_pool_requests_queued_total", pool="app") >= 1
    assert one(after, "ckpt_pg_pool_requests_wait_seconds_total", pool="app") > 0


def test_database_down_is_up_0_and_no_exception() -> None:
    home = Path(tempfile.mkdtemp(prefix="ckpt-test-pg-down-"))
    try:
        with embedded_postgres(home / "data") as server:
            url = server.url.replace("://postgres@", "://postgres:s3cretPW42@")
            setup_postgres(server.url)
            pool = ConnectionPool(server.url, min_size=1, max_size=1, kwargs=PG_KWARGS,
                                  open=False)
            pool.open(wait=True, timeout=30)
            collector = PgCollector(url, {"app": pool})
            registry = CollectorRegistry()
            registry.register(collector)
            metrics = serve_metrics(registry)
            up = parse_metrics(scrape_text(metrics.url))
        # the server has stopped: the endpoint still answers, with up 0 and why
        try:
            down = parse_metrics(scrape_text(metrics.url))
        finally:
            metrics.close()
            pool.close(timeout=1)
    finally:
        shutil.rmtree(home, ignore_errors=True)
    assert one(up, "ckpt_pg_up") == 1 and one(up, "ckpt_pg_table_exists",
                                               table="checkpoints") == 1
    assert one(down, "ckpt_pg_up") == 0
    assert not [k for k in down if k[0].startswith(("ckpt_pg_table", "ckpt_pg_connections"))]
    assert one(down, "ckpt_pg_pool_max", pool="app") == 1  # pool figures need no server
    assert collector.last_error is not None and "Could not connect" in collector.last_error
    assert "s3cretPW42" not in collector.last_error and "***" in collector.last_error

    def broken() -> Any:
        raise RuntimeError("no connection today")

    failing = PgCollector(broken)
    families = {f.name: [x.value for x in f.samples] for f in failing.collect()}
    assert families["ckpt_pg_up"] == [0] and "ckpt_pg_table_bytes" not in families
    assert failing.last_error == "RuntimeError: no connection today"


# --- rules and dashboard: rendered from config, naming only what the exporter exports ------

PG_ALERTS = {"CheckpointPostgresDown", "CheckpointLatencyBudget", "CheckpointPoolWaiting",
             "CheckpointPostgresConnectionsNearMax", "CheckpointTableBloat",
             "CheckpointCacheHitLow", "CheckpointRetriesSustained", "CheckpointHotTierFailing"}


def pg_rules(text: str) -> dict[str, dict[str, Any]]:
    groups = {g["name"]: g for g in yaml.safe_load(text)["groups"]}
    return {r["alert"]: r for r in groups["langgraph-checkpoints-postgres"]["rules"]}


def panels_by_title(board: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {p["title"]: p for p in board["panels"] if p["type"] != "row"}


def steps(panel: dict[str, Any]) -> list[tuple[str, Any]]:
    return [(s["color"], s["value"])
            for s in panel["fieldConfig"]["defaults"]["thresholds"]["steps"]]


def test_committed_postgres_rules_and_panels_follow_the_config() -> None:
    th = load_thresholds()
    rules = pg_rules(RULES_FILE.read_text())
    assert set(rules) == PG_ALERTS
    assert rules["CheckpointPoolWaiting"]["for"] == th.pg_pool_waiting_for
    assert rules["CheckpointPoolWaiting"]["expr"].endswith("> 0")
    assert rules["CheckpointLatencyBudget"]["expr"].endswith(f"> {th.pg_latency_p99_ms / 1000:g}")
    assert f'backend="{PG_BACKEND}"' in rules["CheckpointLatencyBudget"]["expr"]
    assert rules["CheckpointPostgresConnectionsNearMax"]["expr"].endswith(
        f"> {th.pg_connections_used:g}")
    bloat = rules["CheckpointTableBloat"]["expr"]
    assert f"> {th.pg_dead_ratio:g}" in bloat and bloat.endswith(f">= {th.pg_dead_tuples_min:g}")
    cache = rules["CheckpointCacheHitLow"]["expr"]
    assert f"< {th.pg_cache_hit_min:g}" in cache and cache.endswith(
        f">= {th.pg_cache_min_blocks:g}")

    panels = panels_by_title(json.loads(DASHBOARD_FILE.read_text()))
    rows = [p["title"] for p in json.loads(DASHBOARD_FILE.read_text())["panels"]
            if p["type"] == "row"]
    assert len(rows) == 5 and all(r.startswith(("PostgreSQL", "Redis hot tier")) for r in rows)
    assert steps(panels["Retries/s by operation and reason"])[-1] == ("red",
                                                                      th.pg_retries_per_s)
    assert rules["CheckpointRetriesSustained"]["expr"].endswith(f"> {th.pg_retries_per_s:g}")
    assert rules["CheckpointHotTierFailing"]["expr"].endswith(f"> {th.hot_errors_per_s:g}")
    assert steps(panels["Redis failures/s by reason (served by PostgreSQL)"])[-1] == (
        "red", th.hot_errors_per_s)
    assert steps(panels["Latency by operation p50 / p99"])[-1] == ("red",
                                                                   th.pg_latency_p99_ms / 1000)
    assert steps(panels["Connections used of max_connections"])[-1] == (
        "red", th.pg_connections_used)
    assert steps(panels["Dead tuple ratio"])[-1] == ("red", th.pg_dead_ratio)
    assert steps(panels["Dead tuples"])[-1] == ("red", th.pg_dead_tuples_min)
    # below the line is bad: red first, green from the threshold up
    assert steps(panels["Buffer cache hit ratio"]) == [("red", None),
                                                        ("green", th.pg_cache_hit_min)]
    ids = [p["id"] for p in json.loads(DASHBOARD_FILE.read_text())["panels"]]
    assert len(ids) == len(set(ids))


def test_changed_thresholds_change_the_rendered_postgres_parts() -> None:
    th = load_thresholds().with_(pg_connections_used=0.66, pg_pool_waiting_for="2m",
                                 pg_cache_hit_min=0.95)
    rules = pg_rules(render_prometheus_rules(th))
    assert rules["CheckpointPostgresConnectionsNearMax"]["expr"].endswith("> 0.66")
    assert rules["CheckpointPoolWaiting"]["for"] == "2m"
    panels = panels_by_title(render_grafana_dashboard(th))
    assert steps(panels["Buffer cache hit ratio"])[-1] == ("green", 0.95)


def exported_names(text: str) -> set[str]:
    names = set()
    for family in text_string_to_metric_families(text):
        names.add(family.name)
        names.update(s.name for s in family.samples)
    return names


def test_every_metric_the_rules_and_dashboard_name_is_exported(pg_db: str,
                                                               pool: ConnectionPool) -> None:
    metrics = CheckpointMetrics(PG_BACKEND)
    metrics.registry.register(PgCollector(pg_db, {"app": pool}))
    metrics.latency.labels(PG_BACKEND, "get_tuple").observe(0.001)
    metrics.retried("put", "connection_lost")
    metrics.hot_read("hit")
    metrics.hot_tier_error("get_tuple", "timeout")
    with serve_metrics(metrics.registry) as server:
        names = exported_names(scrape_text(server.url))
    used = set(re.findall(r"\b(ckpt_[a-z_]+)", RULES_FILE.read_text() +
                          DASHBOARD_FILE.read_text()))
    assert {n for n in used if n.startswith("ckpt_pg_")} >= {
        "ckpt_pg_up", "ckpt_pg_pool_requests_waiting", "ckpt_pg_dead_tuples",
        "ckpt_pg_cache_hit_ratio", "ckpt_pg_table_bytes", "ckpt_pg_index_bytes"}
    assert used - names == set(), "named in deploy/ but never exported"


PROMTOOL = shutil.which("promtool")


@pytest.mark.skipif(PROMTOOL is None, reason="promtool is not installed")
def test_promtool_parses_the_panels_and_fires_the_postgres_alerts(tmp_path: Path) -> None:
    assert PROMTOOL is not None
    th = load_thresholds()
    board = json.loads(DASHBOARD_FILE.read_text())
    exprs = [t["expr"] for p in board["panels"] if p["type"] != "row" for t in p["targets"]]
    records = tmp_path / "panels.yml"  # every panel query, parsed by Prometheus itself
    records.write_text(yaml.safe_dump({"groups": [{"name": "panels", "rules": [
        {"record": f"panel:q{i}", "expr": e} for i, e in enumerate(exprs)]}]}))
    check = subprocess.run([PROMTOOL, "check", "rules", str(records), str(RULES_FILE)],
                           capture_output=True, text=True, timeout=60)
    assert check.returncode == 0, check.stdout + check.stderr

    rules = pg_rules(RULES_FILE.read_text())

    def fired(name: str, **labels: str) -> list[dict[str, Any]]:
        def expand(text: str) -> str:
            return re.sub(r"\{\{ \$labels\.(\w+) \}\}", lambda m: labels[m[1]], text)

        return [{"exp_labels": {**rules[name]["labels"], **labels},
                 "exp_annotations": {k: expand(v) for k, v in
                                     rules[name]["annotations"].items()}}]

    minutes = int(th.pg_pool_waiting_for[:-1]) * {"s": 1 / 60, "m": 1, "h": 60}[
        th.pg_pool_waiting_for[-1]]
    max_conn = 100
    used = int(max_conn * th.pg_connections_used) + 1
    dead, live = th.pg_dead_tuples_min * 2, th.pg_dead_tuples_min  # 67 % dead
    tests = [
        {"interval": "1m", "input_series": [
            {"series": 'ckpt_pg_pool_requests_waiting{pool="app",instance="a"}',
             "values": "2x30"},
            {"series": 'ckpt_pg_pool_requests_waiting{pool="quiet",instance="a"}',
             "values": "0x30"},
            {"series": 'ckpt_pg_connections{state="idle",instance="a"}', "values": f"{used}x30"},
            {"series": 'ckpt_pg_max_connections{instance="a"}', "values": f"{max_conn}x30"},
            {"series": 'ckpt_pg_dead_tuples{table="checkpoints",instance="a"}',
             "values": f"{dead}x30"},
            {"series": 'ckpt_pg_live_tuples{table="checkpoints",instance="a"}',
             "values": f"{live}x30"},
            {"series": 'ckpt_pg_dead_tuples{table="checkpoint_blobs",instance="a"}',
             "values": "100x30"},  # all dead but too few: no alert
            {"series": 'ckpt_pg_live_tuples{table="checkpoint_blobs",instance="a"}',
             "values": "0x30"},
            {"series": 'ckpt_pg_cache_hit_ratio{instance="a"}', "values": "0.5x30"},
            {"series": 'ckpt_pg_blocks_hit_total{instance="a"}',
             "values": f"{th.pg_cache_min_blocks}x30"},
            {"series": 'ckpt_pg_blocks_read_total{instance="a"}',
             "values": f"{th.pg_cache_min_blocks}x30"},
            {"series": 'ckpt_pg_up{instance="a"}', "values": "1x30"},
            # put: 10 % of calls between 5 and 10 ms, so p99 is above 5 ms; get_tuple all < 1 ms
            *[{"series": f'ckpt_operation_seconds_bucket{{backend="{PG_BACKEND}",'
                         f'operation="put",le="{le}",instance="a"}}', "values": f"0+{n}x30"}
              for le, n in (("0.0025", 50), ("0.005", 90), ("0.01", 100), ("+Inf", 100))],
            *[{"series": f'ckpt_operation_seconds_bucket{{backend="{PG_BACKEND}",'
                         f'operation="get_tuple",le="{le}",instance="a"}}', "values": "0+100x30"}
              for le in ("0.001", "0.005", "+Inf")],
        ], "alert_rule_test": [
            {"eval_time": "20m", "alertname": "CheckpointLatencyBudget",
             "exp_alerts": fired("CheckpointLatencyBudget", operation="put")},
            {"eval_time": f"{max(minutes - 2, 0):g}m", "alertname": "CheckpointPoolWaiting",
             "exp_alerts": []},
            {"eval_time": f"{minutes + 1:g}m", "alertname": "CheckpointPoolWaiting",
             "exp_alerts": fired("CheckpointPoolWaiting", pool="app")},
            {"eval_time": "20m", "alertname": "CheckpointPostgresConnectionsNearMax",
             "exp_alerts": fired("CheckpointPostgresConnectionsNearMax")},
            {"eval_time": "20m", "alertname": "CheckpointTableBloat",
             "exp_alerts": fired("CheckpointTableBloat", table="checkpoints")},
            {"eval_time": "20m", "alertname": "CheckpointCacheHitLow",
             "exp_alerts": fired("CheckpointCacheHitLow")},
            {"eval_time": "20m", "alertname": "CheckpointPostgresDown", "exp_alerts": []},
        ]},
        {"interval": "1m", "input_series": [
            {"series": 'ckpt_pg_up{instance="a"}', "values": "0x10"},
            {"series": 'ckpt_pg_cache_hit_ratio{instance="a"}', "values": "0.5x10"},
            {"series": 'ckpt_pg_blocks_hit_total{instance="a"}', "values": "10x10"},
            {"series": 'ckpt_pg_blocks_read_total{instance="a"}', "values": "10x10"},
        ], "alert_rule_test": [
            {"eval_time": "5m", "alertname": "CheckpointPostgresDown",
             "exp_alerts": fired("CheckpointPostgresDown")},
            {"eval_time": "20m", "alertname": "CheckpointCacheHitLow", "exp_alerts": []},
        ]},
    ]
    spec = tmp_path / "pg-alerts.test.yml"
    spec.write_text(yaml.safe_dump({"rule_files": [str(RULES_FILE)],
                                    "evaluation_interval": "1m", "tests": tests},
                                   sort_keys=False))
    result = subprocess.run([PROMTOOL, "test", "rules", str(spec)], capture_output=True,
                            text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
