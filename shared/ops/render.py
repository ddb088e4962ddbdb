"""The thresholds of ``config/thresholds.toml`` as Prometheus alert rules and a Grafana
dashboard, so the alerts that fire in production are the ones the lessons measured.

The first rule group and the top four panels watch checkpoint traffic (any backend); the
``langgraph-checkpoints-postgres`` group and the PostgreSQL rows watch the saver metrics of
``CheckpointMetrics(PG_BACKEND)`` and the exporter of ``shared.ops.pg_metrics`` (pool and
server), with the ``[postgres]`` thresholds.

``render_deploy_files()`` returns the text of ``deploy/prometheus/ckpt-alerts.yml`` and
``deploy/grafana/ckpt-dashboard.json``; ``ckpt render`` writes them.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from shared import ROOT
from shared.ops.decide import Thresholds, load_thresholds

RULES_FILE = ROOT / "deploy" / "prometheus" / "ckpt-alerts.yml"
PG_BACKEND = "postgres"  # the backend label of the PostgreSQL savers' CheckpointMetrics
DASHBOARD_FILE = ROOT / "deploy" / "grafana" / "ckpt-dashboard.json"


def render_prometheus_rules(th: Thresholds) -> str:
    """Prometheus alerting rules (rule-file YAML) for the two alerts."""
    w = th.alert_window
    return f"""# Rendered from config/thresholds.toml by `ckpt render`.
groups:
  - name: langgraph-checkpoints
    rules:
      - alert: CheckpointWriteErrorRateHigh
        expr: >-
          sum(rate(ckpt_write_errors_total[{w}]))
          / clamp_min(sum(rate(ckpt_writes_total[{w}])) + sum(rate(ckpt_write_errors_total[{w}])), 1e-9)
          > {th.alert_error_rate:g}
        for: 1m
        labels:
          severity: page
        annotations:
          summary: "Checkpoint write errors above {th.alert_error_rate:.0%} of attempts over {w}"
          description: "Lock errors here mean several writers contend for one SQLite file: see the migration decision (ckpt decide)."
      - alert: CheckpointWritesHigh
        expr: sum(rate(ckpt_writes_total[{w}])) > {th.alert_writes_per_s:g}
        for: 1m
        labels:
          severity: warn
        annotations:
          summary: "Checkpoint writes above {th.alert_writes_per_s:g}/s over {w}"
          description: "Approaching the {th.writes_per_s_migrate:g}/s migration threshold."
{render_postgres_rules(th)}"""  # noqa: E501 -- PromQL reads better on its lines


def render_postgres_rules(th: Thresholds) -> str:
    """The PostgreSQL group: saver latency budget, pool queue, connections, bloat, cache."""
    w, b = "5m", PG_BACKEND
    return f"""  - name: langgraph-checkpoints-postgres
    rules:
      - alert: CheckpointPostgresDown
        expr: min(ckpt_pg_up) == 0
        for: 1m
        labels:
          severity: page
        annotations:
          summary: "The checkpoint exporter cannot read PostgreSQL"
          description: "Run ckpt health URL for the reason (connection refused, credentials, timeout)."
      - alert: CheckpointLatencyBudget
        expr: >-
          histogram_quantile(0.99, sum by (le, operation) (rate(ckpt_operation_seconds_bucket{{backend="{b}"}}[{w}])))
          > {th.pg_latency_p99_ms / 1000:g}
        for: 10m
        labels:
          severity: warn
        annotations:
          summary: "Checkpoint {{{{ $labels.operation }}}} p99 above {th.pg_latency_p99_ms:g} ms over {w}"
          description: "See ckpt health (round trip, bloat, cache hit) and the indexes of Milestone 5."
      - alert: CheckpointPoolWaiting
        expr: sum by (pool) (ckpt_pg_pool_requests_waiting) > 0
        for: {th.pg_pool_waiting_for}
        labels:
          severity: warn
        annotations:
          summary: "Requests queue for a connection of pool {{{{ $labels.pool }}}} for {th.pg_pool_waiting_for}"
          description: "The pool is too small for the concurrency (raise max_size, within max_connections) or connections are held too long."
      - alert: CheckpointPostgresConnectionsNearMax
        expr: max(sum without (state) (ckpt_pg_connections) / ckpt_pg_max_connections) > {th.pg_connections_used:g}
        for: 5m
        labels:
          severity: page
        annotations:
          summary: "Client connections above {th.pg_connections_used:.0%} of max_connections"
          description: "New connections will soon be refused: pool them (psycopg_pool, PgBouncer) or raise max_connections."
      - alert: CheckpointTableBloat
        expr: >-
          max by (table) (ckpt_pg_dead_tuples / clamp_min(ckpt_pg_live_tuples + ckpt_pg_dead_tuples, 1)) > {th.pg_dead_ratio:g}
          and max by (table) (ckpt_pg_dead_tuples) >= {th.pg_dead_tuples_min:g}
        for: 15m
        labels:
          severity: warn
        annotations:
          summary: "{{{{ $labels.table }}}}: more than {th.pg_dead_ratio:.0%} dead tuples"
          description: "Autovacuum is not keeping up: VACUUM (ANALYZE) the table and lower its autovacuum_vacuum_scale_factor."
      - alert: CheckpointCacheHitLow
        expr: >-
          max(ckpt_pg_cache_hit_ratio) < {th.pg_cache_hit_min:g}
          and on () max(ckpt_pg_blocks_hit_total + ckpt_pg_blocks_read_total) >= {th.pg_cache_min_blocks:g}
        for: 15m
        labels:
          severity: warn
        annotations:
          summary: "Buffer cache hit ratio below {th.pg_cache_hit_min:.0%}"
          description: "The working set does not fit in shared_buffers: raise it, or prune old checkpoints."
      - alert: CheckpointRetriesSustained
        expr: sum by (operation, reason) (rate(ckpt_retries_total{{backend="{b}"}}[{w}])) > {th.pg_retries_per_s:g}
        for: 5m
        labels:
          severity: warn
        annotations:
          summary: "Saver {{{{ $labels.operation }}}} retried over {th.pg_retries_per_s:g}/s ({{{{ $labels.reason }}}}) for 5 minutes"
          description: "RetryingSaver hides transient failures from the graphs, not from you: a restart or failover lasts seconds; minutes mean a server, network or pool problem (ckpt health URL)."
      - alert: CheckpointHotTierFailing
        expr: sum by (reason) (rate(ckpt_hot_tier_errors_total{{backend="{b}"}}[{w}])) > {th.hot_errors_per_s:g}
        for: 5m
        labels:
          severity: warn
        annotations:
          summary: "Redis hot tier failing over {th.hot_errors_per_s:g}/s ({{{{ $labels.reason }}}}) for 5 minutes"
          description: "HybridSaver serves every request from PostgreSQL while Redis fails: nothing is lost, reads are slower and PostgreSQL carries the load. Check Redis (timeout: slow or paused; connection: down; foreign: another program writes under the saver's key prefix)."
"""  # noqa: E501 -- PromQL reads better on its lines


def render_grafana_dashboard(th: Thresholds) -> dict[str, Any]:
    """A Grafana dashboard (JSON model) for the same metrics, thresholds drawn in."""
    w = th.alert_window

    def panel(pid: int, title: str, expr: str | list[str], unit: str,
              threshold: float | None, x: int, y: int, legend: list[str] | None = None,
              below: bool = False) -> dict[str, Any]:
        """``below``: values under the threshold are the bad ones (red under the line)."""
        steps = [{"color": "green", "value": None}]
        if threshold is not None:
            steps.append({"color": "red", "value": threshold})
            if below:
                steps = [{"color": "red", "value": None}, {"color": "green", "value": threshold}]
        exprs = [expr] if isinstance(expr, str) else expr
        targets: list[dict[str, Any]] = [{"refId": chr(65 + i), "expr": e}
                                         for i, e in enumerate(exprs)]
        for target, text in zip(targets, legend or [], strict=False):
            target["legendFormat"] = text
        return {"id": pid, "type": "timeseries", "title": title,
                "datasource": {"type": "prometheus", "uid": "${datasource}"},
                "gridPos": {"h": 8, "w": 12, "x": x, "y": y},
                "fieldConfig": {"defaults": {"unit": unit, "thresholds": {
                    "mode": "absolute", "steps": steps},
                    "custom": {"thresholdsStyle": {"mode": "line"}}}, "overrides": []},
                "targets": targets}

    def row(pid: int, title: str, y: int) -> dict[str, Any]:
        return {"id": pid, "type": "row", "title": title, "collapsed": False,
                "gridPos": {"h": 1, "w": 24, "x": 0, "y": y}, "panels": []}

    b = f'backend="{PG_BACKEND}"'
    quantiles = [(q, f"histogram_quantile({q}, sum by (le, operation) "
                  f"(rate(ckpt_operation_seconds_bucket{{{b}}}[{w}])))") for q in (0.5, 0.99)]
    dead_ratio = ("max by (table) (ckpt_pg_dead_tuples / clamp_min(ckpt_pg_live_tuples + "
                  "ckpt_pg_dead_tuples, 1))")
    postgres = [
        row(100, f"PostgreSQL: saver calls (backend {PG_BACKEND})", 16),
        panel(5, "Latency by operation p50 / p99", [e for _, e in quantiles], "s",
              th.pg_latency_p99_ms / 1000, 0, 17,
              legend=[f"{{{{operation}}}} p{q * 100:g}" for q, _ in quantiles]),
        panel(6, "Errors/s by operation", f"sum by (operation, reason) "
              f"(rate(ckpt_write_errors_total{{{b}}}[{w}]))", "ops", None, 12, 17,
              legend=["{{operation}} {{reason}}"]),
        row(101, "PostgreSQL: connection pool (psycopg_pool)", 25),
        panel(7, "Requests waiting for a connection",
              "sum by (pool) (ckpt_pg_pool_requests_waiting)", "short", 1, 0, 26,
              legend=["{{pool}}"]),
        panel(8, "Pool connections: open / idle / max", [
            f"sum by (pool) (ckpt_pg_pool_{m})" for m in ("size", "available", "max")],
              "short", None, 12, 26,
              legend=["{{pool}} open", "{{pool}} idle", "{{pool}} max"]),
        panel(9, "Mean wait for a connection", f"sum by (pool) "
              f"(rate(ckpt_pg_pool_requests_wait_seconds_total[{w}])) / clamp_min(sum by "
              f"(pool) (rate(ckpt_pg_pool_requests_total[{w}])), 1e-9)", "s", None, 0, 34,
              legend=["{{pool}}"]),
        panel(10, "Pool requests/s and errors/s", [
            f"sum by (pool) (rate(ckpt_pg_pool_{m}_total[{w}]))"
            for m in ("requests", "requests_errors")], "ops", None, 12, 34,
              legend=["{{pool}} requests", "{{pool}} errors"]),
        row(102, "PostgreSQL: server and checkpoint tables", 42),
        panel(11, "Server connections by state", "max by (state) (ckpt_pg_connections)",
              "short", None, 0, 43, legend=["{{state}}"]),
        panel(12, "Connections used of max_connections",
              "max(sum without (state) (ckpt_pg_connections) / ckpt_pg_max_connections)",
              "percentunit", th.pg_connections_used, 12, 43),
        panel(13, "Table and index bytes", ["max by (table) (ckpt_pg_table_bytes)",
                                            "max by (table) (ckpt_pg_index_bytes)"],
              "bytes", None, 0, 51, legend=["{{table}}", "{{table}} indexes"]),
        panel(14, "Dead tuples", "max by (table) (ckpt_pg_dead_tuples)", "short",
              th.pg_dead_tuples_min, 12, 51, legend=["{{table}}"]),
        panel(15, "Dead tuple ratio", dead_ratio, "percentunit", th.pg_dead_ratio, 0, 59,
              legend=["{{table}}"]),
        panel(16, "Buffer cache hit ratio", [
            "max(ckpt_pg_cache_hit_ratio)",
            f"sum(rate(ckpt_pg_blocks_hit_total[{w}])) / clamp_min(sum(rate("
            f"ckpt_pg_blocks_hit_total[{w}])) + sum(rate(ckpt_pg_blocks_read_total[{w}])), "
            "1e-9)"], "percentunit", th.pg_cache_hit_min, 12, 59,
              legend=["since stats reset", f"last {w}"], below=True),
        panel(17, "Seconds since autovacuum", "max by (table) "
              "(ckpt_pg_seconds_since_autovacuum)", "s", None, 0, 67, legend=["{{table}}"]),
        panel(18, "PostgreSQL reachable (ckpt_pg_up)", "min(ckpt_pg_up)", "short", 1, 12,
              67, below=True),
        row(103, "PostgreSQL: transient failures retried (RetryingSaver)", 75),
        panel(19, "Retries/s by operation and reason", f"sum by (operation, reason) "
              f"(rate(ckpt_retries_total{{{b}}}[{w}]))", "ops", th.pg_retries_per_s, 0, 76,
              legend=["{{operation}} {{reason}}"]),
        panel(20, "Retries per saver call", f"sum(rate(ckpt_retries_total{{{b}}}[{w}])) / "
              f"clamp_min(sum(rate(ckpt_operation_seconds_count{{{b}}}[{w}])), 1e-9)",
              "percentunit", None, 12, 76),
        row(104, "Redis hot tier (HybridSaver)", 84),
        panel(21, "Reads answered from Redis", f"sum(rate(ckpt_hot_reads_total{{{b},"
              f"result=\"hit\"}}[{w}])) / clamp_min(sum(rate(ckpt_hot_reads_total{{{b}}}"
              f"[{w}])), 1e-9)", "percentunit", None, 0, 85),
        panel(22, "Redis failures/s by reason (served by PostgreSQL)", f"sum by (reason) "
              f"(rate(ckpt_hot_tier_errors_total{{{b}}}[{w}]))", "ops", th.hot_errors_per_s,
              12, 85, legend=["{{reason}}"]),
    ]

    return {
        "title": "LangGraph checkpoints", "uid": "ckpt-mastery", "schemaVersion": 39,
        "time": {"from": "now-1h", "to": "now"}, "refresh": "10s", "tags": ["langgraph"],
        "templating": {"list": [{"name": "datasource", "type": "datasource",
                                 "query": "prometheus"}]},
        "panels": [
            panel(1, "Checkpoint writes/s", f"sum(rate(ckpt_writes_total[{w}]))", "ops",
                  th.writes_per_s_migrate, 0, 0),
            panel(2, "Write error rate", f"sum(rate(ckpt_write_errors_total[{w}])) / "
                  f"clamp_min(sum(rate(ckpt_writes_total[{w}])) + "
                  f"sum(rate(ckpt_write_errors_total[{w}])), 1e-9)", "percentunit",
                  th.alert_error_rate, 12, 0),
            panel(3, "Write latency p50 / p99", [
                f"histogram_quantile({q}, sum by (le) (rate(ckpt_operation_seconds_bucket"
                f"{{operation=~\"put|put_writes\"}}[{w}])))" for q in (0.5, 0.99)],
                  "s", None, 0, 8),
            panel(4, "Database size", "max(ckpt_database_bytes)", "bytes",
                  th.file_bytes_soon, 12, 8),
            *postgres,
        ],
    }


def render_deploy_files(th: Thresholds | None = None) -> dict[Path, str]:
    th = th or load_thresholds()
    return {RULES_FILE: render_prometheus_rules(th),
            DASHBOARD_FILE: json.dumps(render_grafana_dashboard(th), indent=2) + "\n"}
