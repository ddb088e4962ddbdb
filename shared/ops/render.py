"""The thresholds of ``config/thresholds.toml`` as Prometheus alert rules and a Grafana
dashboard, so the alerts that fire in production are the ones the lessons measured.

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
"""  # noqa: E501 -- PromQL reads better on its lines


def render_grafana_dashboard(th: Thresholds) -> dict[str, Any]:
    """A Grafana dashboard (JSON model) for the same metrics, thresholds drawn in."""
    w = th.alert_window

    def panel(pid: int, title: str, expr: str | list[str], unit: str,
              threshold: float | None, x: int, y: int) -> dict[str, Any]:
        steps = [{"color": "green", "value": None}]
        if threshold is not None:
            steps.append({"color": "red", "value": threshold})
        return {"id": pid, "type": "timeseries", "title": title,
                "datasource": {"type": "prometheus", "uid": "${datasource}"},
                "gridPos": {"h": 8, "w": 12, "x": x, "y": y},
                "fieldConfig": {"defaults": {"unit": unit, "thresholds": {
                    "mode": "absolute", "steps": steps},
                    "custom": {"thresholdsStyle": {"mode": "line"}}}, "overrides": []},
                "targets": [{"refId": chr(65 + i), "expr": e} for i, e in enumerate(
                    [expr] if isinstance(expr, str) else expr)]}

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
        ],
    }


def render_deploy_files(th: Thresholds | None = None) -> dict[Path, str]:
    th = th or load_thresholds()
    return {RULES_FILE: render_prometheus_rules(th),
            DASHBOARD_FILE: json.dumps(render_grafana_dashboard(th), indent=2) + "\n"}
