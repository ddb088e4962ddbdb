"""3.1 Throughput monitor: the witness at small scale, metric by metric; the instrumented
wrapper's conformance, sync and async paths, real lock errors; the /metrics endpoint and its
scraper; the dashboard; the deploy files and their PromQL, checked by promtool when present."""

from __future__ import annotations

import asyncio
import http.server
import io
import itertools
import json
import shutil
import socket
import sqlite3
import subprocess
import threading
import time
from collections.abc import AsyncGenerator, Iterator
from contextlib import closing, contextmanager
from pathlib import Path
from typing import Any

import pytest
import yaml
from langgraph.checkpoint.base import BaseCheckpointSaver, empty_checkpoint
from langgraph.checkpoint.memory import InMemorySaver
from langgraph.checkpoint.sqlite.aio import AsyncSqliteSaver
from rich.console import Console

from shared.conformance import detected_capabilities, report_failures, run_conformance
from shared.errors import CheckpointError
from shared.graph import build_chat_graph
from shared.llm import OfflineChatModel
from shared.ops import dashboard
from shared.ops.decide import decide, evaluate_alerts, load_thresholds
from shared.ops.metrics import (
    CheckpointMetrics,
    InstrumentedSaver,
    registry_samples,
    scrape,
    serve_metrics,
    value_of,
)
from shared.ops.render import DASHBOARD_FILE, RULES_FILE, render_deploy_files
from shared.ops.window import MetricsWindow, WindowStats, from_registry, histogram_quantile
from shared.savers import open_sqlite_saver
from shared.savers.wrapper import claimed_capabilities

CONFIG = {"configurable": {"thread_id": "t", "checkpoint_ns": ""}}
CAPABILITIES = ["delete_thread", "get_tuple", "list", "put", "put_writes"]


def _truth(db: Path) -> dict[str, int]:
    """The database's own figures, with SQL of this test's own."""
    with closing(sqlite3.connect(db)) as conn:
        rows, cp_bytes = conn.execute(
            "SELECT count(*), sum(length(checkpoint)) FROM checkpoints").fetchone()
        groups, w_bytes = conn.execute(
            "SELECT count(DISTINCT thread_id || '|' || checkpoint_ns || '|' || checkpoint_id "
            "|| '|' || task_id), sum(length(value)) FROM writes").fetchone()
    return {"rows": rows, "cp_bytes": cp_bytes, "groups": groups, "w_bytes": w_bytes}


# --- the witness ----------------------------------------------------------------------------


# --- the wrapper: conformance, sync and async, errors ---------------------------------------

def test_conformance_wrapping_in_memory() -> None:
    claims: list[tuple[set[str], set[str]]] = []

    async def factory() -> AsyncGenerator[BaseCheckpointSaver, None]:
        inner = InMemorySaver()
        saver = InstrumentedSaver(inner, CheckpointMetrics("memory"))
        claims.append((claimed_capabilities(inner), claimed_capabilities(saver)))
        yield saver

    report = run_conformance("InstrumentedSaver[InMemorySaver]", factory)
    assert report.passed_all(), report_failures(report)
    assert detected_capabilities(report) == CAPABILITIES
    assert claims and all(inner == outer for inner, outer in claims)


def test_conformance_wrapping_async_sqlite(tmp_path: Path) -> None:
    files, metrics = itertools.count(), CheckpointMetrics("sqlite")
    claims: list[tuple[set[str], set[str]]] = []

    async def factory() -> AsyncGenerator[BaseCheckpointSaver, None]:
        # A fresh file per capability suite: the suite expects an empty saver each time.
        path = tmp_path / f"conformance-{next(files)}.sqlite"
        async with AsyncSqliteSaver.from_conn_string(str(path)) as inner:
            await inner.setup()
            saver = InstrumentedSaver(inner, metrics)
            claims.append((claimed_capabilities(inner), claimed_capabilities(saver)))
            yield saver

    report = run_conformance("InstrumentedSaver[AsyncSqliteSaver]", factory)
    assert report.passed_all(), report_failures(report)
    assert detected_capabilities(report) == CAPABILITIES
    assert claims and all(inner == outer for inner, outer in claims)
    samples = registry_samples(metrics.registry)
    assert value_of(samples, "ckpt_writes_total", operation="put") > 0  # aput, labelled put


async def test_async_graph_records_metrics(tmp_path: Path) -> None:
    db, metrics = tmp_path / "async.sqlite", CheckpointMetrics("sqlite")
    async with AsyncSqliteSaver.from_conn_string(str(db)) as inner:
        await inner.setup()
        graph = build_chat_graph(InstrumentedSaver(inner, metrics), OfflineChatModel())
        for text in ("Hi, my name is Alice.", "What is my name?"):
            out = await graph.ainvoke({"messages": [("user", text)]},
                                      {"configurable": {"thread_id": "a"}})
    assert out["messages"][-1].content == "Your name is Alice."
    s, truth = registry_samples(metrics.registry), _truth(db)
    assert value_of(s, "ckpt_writes_total", operation="put") == truth["rows"] == 6
    assert value_of(s, "ckpt_writes_total", operation="put_writes") == truth["groups"] == 4
    assert value_of(s, "ckpt_checkpoint_bytes_sum", operation="put") == truth["cp_bytes"]
    assert value_of(s, "ckpt_operation_seconds_count", operation="get_tuple") >= 2
    assert not any(dict(labels).get("operation", "").startswith("a") for _, labels in s)


def test_sync_graph_records_metrics(tmp_path: Path) -> None:
    db, metrics = tmp_path / "sync.sqlite", CheckpointMetrics("sqlite")
    with open_sqlite_saver(db) as saver:
        graph = build_chat_graph(InstrumentedSaver(saver, metrics), OfflineChatModel())
        graph.invoke({"messages": [("user", "Hi")]}, {"configurable": {"thread_id": "s"}})
        history = list(graph.get_state_history({"configurable": {"thread_id": "s"}}))
    s, truth = registry_samples(metrics.registry), _truth(db)
    assert value_of(s, "ckpt_writes_total", operation="put") == truth["rows"] == len(history)
    assert value_of(s, "ckpt_writes_total", operation="put_writes") == truth["groups"]
    assert value_of(s, "ckpt_operation_seconds_count", operation="list") == 1


def test_locked_writes_counted_with_reason(tmp_path: Path) -> None:
    db, metrics = tmp_path / "locked.sqlite", CheckpointMetrics("sqlite")
    window = MetricsWindow(from_registry(metrics.registry), window_s=60)
    with open_sqlite_saver(db, busy_timeout_ms=0) as saver, \
            closing(sqlite3.connect(db, isolation_level=None, timeout=0)) as other, \
            serve_metrics(metrics.registry) as server:
        saver_ = InstrumentedSaver(saver, metrics)
        window.sample()
        checkpoint = empty_checkpoint()
        other.execute("BEGIN IMMEDIATE")  # the other connection holds the write lock
        with pytest.raises(sqlite3.OperationalError, match="database is locked"):
            saver_.put(CONFIG, checkpoint, {}, {})
        written = {"configurable": {**CONFIG["configurable"], "checkpoint_id": checkpoint["id"]}}
        with pytest.raises(sqlite3.OperationalError, match="database is locked"):
            saver_.put_writes(written, [("note", "x")], "task-1")
        other.execute("ROLLBACK")
        saver_.put(CONFIG, checkpoint, {}, {})  # the lock is gone: the same put succeeds
        s = scrape(server.url)
        window.sample()
    assert value_of(s, "ckpt_write_errors_total", operation="put", reason="locked") == 1
    assert value_of(s, "ckpt_write_errors_total", operation="put_writes", reason="locked") == 1
    assert value_of(s, "ckpt_write_errors_total", reason="other") == 0
    assert value_of(s, "ckpt_writes_total", operation="put") == 1 == _truth(db)["rows"]
    assert value_of(s, "ckpt_operation_seconds_count", operation="put") == 2  # failed one too
    stats = window.stats()
    assert (stats.errors, stats.locked, stats.writes) == (2, 2, 1)
    assert evaluate_alerts(stats, load_thresholds())["CheckpointWriteErrorRateHigh"] is True


async def test_cancelled_call_is_not_a_write_error() -> None:
    class SlowSaver(InMemorySaver):
        async def aput(self, *args: Any, **kwargs: Any) -> Any:
            await asyncio.sleep(10)
            return await super().aput(*args, **kwargs)

    metrics = CheckpointMetrics("memory")
    task = asyncio.create_task(InstrumentedSaver(SlowSaver(), metrics).aput(
        CONFIG, empty_checkpoint(), {}, {}))
    await asyncio.sleep(0.05)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert value_of(registry_samples(metrics.registry), "ckpt_write_errors_total") == 0


# --- the endpoint and the scraper -----------------------------------------------------------

def test_metrics_endpoint_scraped_over_http() -> None:
    metrics = CheckpointMetrics("memory", size_of=lambda: 1234.0)
    saver = InstrumentedSaver(InMemorySaver(), metrics)
    saver.put(CONFIG, empty_checkpoint(), {}, {})
    with serve_metrics(metrics.registry) as server:
        assert server.url.startswith("http://127.0.0.1:") and server.url.endswith("/metrics")
        with closing(socket.create_connection(("127.0.0.1", int(server.url.split(":")[2]
                                                               .split("/")[0])))):
            pass  # a real listening TCP socket
        scraped = scrape(server.url)
    assert scraped == registry_samples(metrics.registry)
    assert value_of(scraped, "ckpt_writes_total", backend="memory", operation="put") == 1
    assert value_of(scraped, "ckpt_database_bytes", backend="memory") == 1234.0
    with pytest.raises(CheckpointError, match="Could not scrape"):
        scrape(server.url, timeout=1)  # stopped: nothing listens any more


def _free_port() -> int:
    with socket.socket() as sock:  # bound, then closed: the port refuses connections
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextmanager
def _html_server() -> Iterator[str]:
    class Page(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body = b"<!DOCTYPE html><html><body>Grafana</body></html>"
            self.send_response(200)
            self.send_header("Content-Type", "text/html; charset=utf-8")
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Page)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}/"
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def test_scrape_errors_are_one_clear_sentence() -> None:
    url = f"http://admin:s3cret@127.0.0.1:{_free_port()}/metrics"
    with pytest.raises(CheckpointError) as unreachable:
        scrape(url, timeout=1)
    message = str(unreachable.value)
    assert message.startswith("Could not scrape http://admin:***@127.0.0.1:")
    assert "s3cret" not in message and "serves /metrics" in message
    with _html_server() as page, pytest.raises(CheckpointError) as html:
        scrape(page)
    assert "did not return Prometheus metrics (content type text/html)" in str(html.value)
    with pytest.raises(CheckpointError, match="is not an http"):
        scrape("127.0.0.1:9464/metrics")


# --- the window and the dashboard -----------------------------------------------------------

def test_histogram_quantile_hand_computed() -> None:
    buckets = {0.001: 10.0, 0.005: 60.0, 0.01: 90.0, 0.1: 100.0, float("inf"): 100.0}
    # rank 50 falls in (0.001, 0.005]: 0.001 + 0.004 * (50 - 10) / (60 - 10)
    assert histogram_quantile(0.5, buckets) == pytest.approx(0.0042)
    # rank 99 falls in (0.01, 0.1]: 0.01 + 0.09 * (99 - 90) / (100 - 90)
    assert histogram_quantile(0.99, buckets) == pytest.approx(0.091)
    assert histogram_quantile(0.05, buckets) == pytest.approx(0.0005)  # first bucket from 0
    # above the largest finite bucket: Prometheus answers with that bucket's upper bound
    assert histogram_quantile(0.9, {0.1: 5.0, float("inf"): 10.0}) == 0.1
    assert histogram_quantile(0.5, {}) is None
    assert histogram_quantile(0.5, {0.1: 0.0, float("inf"): 0.0}) is None


def test_window_sampled_from_two_threads_stays_in_order() -> None:
    metrics = CheckpointMetrics("memory")
    window = MetricsWindow(from_registry(metrics.registry), window_s=0.05)

    def sample() -> None:
        for _ in range(200):
            window.sample()
            window.stats()

    threads = [threading.Thread(target=sample) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    times = [s.t for s in window.history]
    assert times == sorted(times) and len(times) >= 2


def _stats(writes_per_s: float, errors: float = 0.0) -> WindowStats:
    writes = writes_per_s * 5
    return WindowStats(window_s=5, span_s=5.0, writes=writes, errors=errors, locked=errors,
                       writes_per_s=writes_per_s, error_rate=errors / (writes + errors),
                       p50_ms=1.25, p99_ms=48.5, db_bytes=4_734_528)


def test_dashboard_frame_renders_every_field() -> None:
    th = load_thresholds()
    stats = _stats(308.5, errors=20)
    console = Console(record=True, width=120)
    console.print(dashboard.render_frame(stats, evaluate_alerts(stats, th), decide(stats, th),
                                         "load: full, 4 worker(s)"))
    text = console.export_text()
    for expected in ("writes/s", "308.5", "error rate", "1.28%", "20 locked",
                     "p50 write latency", "1.25 ms", "p99 write latency", "48.50 ms",
                     "database size", "4.73 MB (4,734,528 bytes)", "CheckpointWritesHigh",
                     "CheckpointWriteErrorRateHigh", "FIRING", "MIGRATE NOW", "load: full"):
        assert expected in text, expected
    quiet = _stats(39.8)
    console = Console(record=True, width=120)
    console.print(dashboard.render_frame(quiet, evaluate_alerts(quiet, th), decide(quiet, th)))
    text = console.export_text()
    assert "FIRING" not in text and text.count(" ok") == 2 and "SQLITE SUFFICIENT" in text


def test_run_live_until_stopped(tmp_path: Path) -> None:
    metrics = CheckpointMetrics("memory")
    saver = InstrumentedSaver(InMemorySaver(), metrics)
    window, stop = MetricsWindow(from_registry(metrics.registry), window_s=1), threading.Event()
    out = io.StringIO()
    result: list[list[dashboard.Frame]] = []
    watcher = threading.Thread(target=lambda: result.append(dashboard.run_live(
        window, load_thresholds(), stop, refresh_s=0.05, console=Console(file=out, width=100))))
    watcher.start()
    for _ in range(30):
        saver.put(CONFIG, empty_checkpoint(), {}, {})
        time.sleep(0.01)
    stop.set()
    watcher.join(timeout=10)
    assert not watcher.is_alive()
    frames = result[0]
    assert len(frames) >= 2 and frames[-1].stats.writes > 0
    assert "checkpoint traffic" in out.getvalue()  # not a terminal: the last frame, printed


def test_watch_command_refuses_a_bad_config(tmp_path: Path,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    from shared.cli import main as ckpt

    assert ckpt(["watch", "http://127.0.0.1:9/metrics", "--config",
                 str(tmp_path / "no.toml")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("ckpt: ") and err.count("\n") == 1 and "no.toml" in err, err


# --- the deploy files ------------------------------------------------------------------------

def test_deploy_files_match_config_and_load() -> None:
    th = load_thresholds()
    for path, text in render_deploy_files().items():
        assert path.read_text() == text, f"{path} is stale: run ckpt render"
    rules = {r["alert"]: r for r in yaml.safe_load(RULES_FILE.read_text())["groups"][0]["rules"]}
    assert set(rules) == {"CheckpointWriteErrorRateHigh", "CheckpointWritesHigh"}
    assert rules["CheckpointWritesHigh"]["expr"].endswith(f"> {th.alert_writes_per_s:g}")
    assert f"[{th.alert_window}]" in rules["CheckpointWritesHigh"]["expr"]
    assert rules["CheckpointWriteErrorRateHigh"]["expr"].endswith(f"> {th.alert_error_rate:g}")
    board = json.loads(DASHBOARD_FILE.read_text())
    steps = {p["title"]: [s["value"] for s in p["fieldConfig"]["defaults"]["thresholds"]["steps"]]
             for p in board["panels"] if p["type"] != "row"}
    assert steps["Checkpoint writes/s"][-1] == th.writes_per_s_migrate
    assert steps["Write error rate"][-1] == th.alert_error_rate
    assert steps["Database size"][-1] == th.file_bytes_soon


PROMTOOL = shutil.which("promtool")


@pytest.mark.skipif(PROMTOOL is None, reason="promtool is not installed")
def test_promtool_checks_and_unit_tests_the_rules(tmp_path: Path) -> None:
    assert PROMTOOL is not None
    check = subprocess.run([PROMTOOL, "check", "rules", str(RULES_FILE)], capture_output=True,
                           text=True, timeout=60)
    assert check.returncode == 0, check.stdout + check.stderr
    th = load_thresholds()
    rules = {r["alert"]: r for r in yaml.safe_load(RULES_FILE.read_text())["groups"][0]["rules"]}

    def fired(name: str) -> list[dict[str, Any]]:
        return [{"exp_labels": rules[name]["labels"],
                 "exp_annotations": rules[name]["annotations"]}]

    def case(writes_per_s: float, errors_per_s: float, expect: dict[str, list]) -> dict:
        step = 15  # seconds between samples: counters grow by rate * step
        series = [("ckpt_writes_total", writes_per_s), ("ckpt_write_errors_total", errors_per_s)]
        return {"interval": f"{step}s", "input_series": [
            {"series": f'{name}{{backend="sqlite",operation="put"}}',
             "values": f"0+{rate * step:g}x40"} for name, rate in series],
            "alert_rule_test": [{"eval_time": "5m", "alertname": name, "exp_alerts": alerts}
                                for name, alerts in expect.items()]}

    below, above = th.alert_writes_per_s / 2, th.alert_writes_per_s * 1.25
    errors = above * th.alert_error_rate * 3  # three times the allowed share of attempts
    # Prometheus itself computes the quantile our window computes, on the same buckets.
    buckets = {0.001: 10.0, 0.005: 60.0, 0.01: 90.0, 0.1: 100.0, float("inf"): 100.0}
    quantiles = {
        "interval": "15s",
        "input_series": [{"series": f'b_bucket{{le="{"+Inf" if le == float("inf") else le}"}}',
                          "values": f"0+{n:g}x20"} for le, n in buckets.items()],
        "promql_expr_test": [
            {"expr": f"abs(histogram_quantile({q}, sum by (le) (rate(b_bucket[1m]))) - "
                     f"{histogram_quantile(q, buckets)!r}) < bool 1e-9",
             "eval_time": "2m", "exp_samples": [{"labels": "{}", "value": 1}]}
            for q in (0.05, 0.5, 0.9, 0.99)]}
    spec = {"rule_files": [str(RULES_FILE)], "evaluation_interval": "15s", "tests": [
        case(below, 0, {"CheckpointWritesHigh": [], "CheckpointWriteErrorRateHigh": []}),
        case(above, 0, {"CheckpointWritesHigh": fired("CheckpointWritesHigh"),
                        "CheckpointWriteErrorRateHigh": []}),
        case(above, errors, {"CheckpointWriteErrorRateHigh":
                             fired("CheckpointWriteErrorRateHigh")}),
        quantiles]}
    test_file = tmp_path / "ckpt-alerts.test.yml"
    test_file.write_text(yaml.safe_dump(spec, sort_keys=False))
    result = subprocess.run([PROMTOOL, "test", "rules", str(test_file)], capture_output=True,
                            text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr


# --- the script as a program -----------------------------------------------------------------



