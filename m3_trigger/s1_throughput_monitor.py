"""3.1 Throughput monitor: every checkpoint write counted, timed and sized, scraped over HTTP.

Proves, with the chat graph on SQLite behind ``InstrumentedSaver``, /metrics on 127.0.0.1:
- what Prometheus would scrape equals what the database holds: puts = checkpoint rows,
  put_writes = (thread, checkpoint, task) groups of writes, summed sizes = stored blobs,
  database bytes = the file on disk, one latency observation per put;
- a sliding window over those scrapes gives writes/s, error rate and p50/p99 latency; the
  alerts of deploy/prometheus (rendered from config/thresholds.toml) stay quiet under a load
  paced below them and, at full speed, CheckpointWritesHigh fires and the verdict is MIGRATE NOW;
- the wrapper's cost (put latency with and without it, side by side); the same figures sent
  to CloudWatch (moto's, over HTTP) read back equal. ``--live`` shows ``ckpt watch``'s dashboard.
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import shared.witness
from shared import ROOT
from shared.bench import interleave
from shared.graph import build_chat_graph
from shared.llm import OfflineChatModel
from shared.ops import cloudwatch as cw
from shared.ops.dashboard import monitor, run_live, take_frame
from shared.ops.decide import load_thresholds
from shared.ops.metrics import (
    CheckpointMetrics,
    InstrumentedSaver,
    check_against_sqlite,
    registry_samples,
    scrape,
    serve_metrics,
    value_of,
)
from shared.ops.render import render_deploy_files
from shared.ops.window import MetricsWindow, from_url
from shared.savers import file_bytes, open_sqlite_saver
from shared.witness import Witness, fresh_workdir
from shared.workloads.chat_load import CHAT_TURNS, chat_load


def _put_again(saver: Any, config: dict[str, Any], saved: Any) -> Callable[[], object]:
    """One put of the same checkpoint (same id: an upsert) under ``config``."""
    return lambda: saver.put(config, saved.checkpoint, saved.metadata, {})


def main(workdir: Path | None = None, seconds: float = 7.0, workers: int = 4,
         conversations: int = 200, quiet_writes_per_s: float = 40.0, overhead_puts: int = 300,
         refresh_s: float = 0.5, cloudwatch: bool = True, live: bool = False,
         rounds: int = 5) -> Witness:
    w = Witness("3.1", "Throughput monitor")
    db = fresh_workdir(workdir, "m3_s1_throughput_monitor") / "checkpoints.sqlite"
    th = load_thresholds()
    if th.window_s > seconds * 0.8:  # a short run gets a window that fits in one phase
        th = th.with_(window_s=round(seconds * 0.8, 2))
    metrics = CheckpointMetrics("sqlite", size_of=lambda: file_bytes(db))

    with open_sqlite_saver(db) as saver, serve_metrics(metrics.registry) as server, \
            ThreadPoolExecutor(1) as pool:
        graph = build_chat_graph(InstrumentedSaver(saver, metrics), OfflineChatModel())
        graph.invoke({"messages": [("user", CHAT_TURNS[0])]}, {"configurable": {"thread_id": "0"}})
        per_turn = value_of(registry_samples(metrics.registry), "ckpt_writes_total")  # 1st turn

        # --- the load, watched through /metrics by the dashboard loop ------------------------
        window = MetricsWindow(from_url(server.url), th.window_s)
        stop, phase = threading.Event(), [""]
        watch = pool.submit(run_live if live else monitor, window, th, stop, refresh_s,
                            status=lambda: f"load: {phase[0]}")
        phases = {}
        try:
            for name, n, pace in (("quiet", 1, quiet_writes_per_s / per_turn),
                                  ("full", workers, None)):
                phase[0] = f"{name}, {n} worker(s), " + (
                    f"paced at {quiet_writes_per_s:g} writes/s" if pace else "full speed")
                window.sample()  # a sample at the boundary: the window never spans two phases
                turns, errors = chat_load(graph, name, seconds, n, conversations, pace)
                phases[name] = (turns * per_turn / seconds, errors, take_frame(window, th))
        finally:
            stop.set()  # the dashboard loop ends even if the load broke
        frames = watch.result()
        for i in range(5):  # a history view: exercises list()
            list(graph.get_state_history({"configurable": {"thread_id": f"full-{i}"}}))

        # --- scrape over HTTP, and read the truth from the database --------------------------
        on_disk = file_bytes(db)
        scraped = scrape(server.url)
        disk_change = file_bytes(db) - on_disk
        checks = check_against_sqlite(scraped, saver.conn)

        # --- the wrapper's cost: one checkpoint put again and again, interleaved -------------
        saved = saver.get_tuple({"configurable": {"thread_id": "full-0"}})
        at = {"configurable": {"thread_id": "bench", "checkpoint_ns": ""}}
        ms = interleave({name: _put_again(s, at, saved) for name, s in (
            ("plain", saver), ("instrumented", InstrumentedSaver(saver, CheckpointMetrics())),
            ("unsized", InstrumentedSaver(saver, CheckpointMetrics(), measure_size=False)))},
            max(1, overhead_puts // rounds), k=rounds, q=50, by_call=True)
        saver.delete_thread("bench")

    w.show(f"scraped {server.url}: {len(scraped)} samples, parsed by prometheus_client")
    w.metric("writes_per_turn", per_turn, "writes")
    for name, (offered, errors, frame) in phases.items():
        s, fired = frame.stats, frame.alerts
        w.show(f"{name}: {offered:,.0f} writes/s offered; window {s.writes_per_s:,.1f}/s over "
               f"{s.span_s:.1f} s, p50 {s.p50_ms or 0:.2f} ms, p99 {s.p99_ms or 0:.2f} ms -> "
               f"{frame.decision.verdict}: {frame.decision.justification}")
        w.metric(f"{name}.load_errors", len(errors), "errors", "== 0")
        w.metric(f"{name}.offered_writes_per_s", offered, "writes/s")
        w.metric(f"{name}.window_writes_per_s", s.writes_per_s, "writes/s",
                 f"{'<' if name == 'quiet' else '>'} {th.alert_writes_per_s:g}")
        w.metric(f"{name}.window_p99_ms", s.p99_ms or 0.0, "ms")
        w.metric(f"{name}.writes_alert_firing", fired["CheckpointWritesHigh"],
                 target=f"== {'yes' if name == 'full' else 'no'}")
        w.metric(f"{name}.error_alert_firing", fired["CheckpointWriteErrorRateHigh"],
                 target="== no")
        w.metric(f"{name}.verdict", frame.decision.verdict,
                 target="== MIGRATE NOW" if name == "full" else "== SQLITE SUFFICIENT")
    w.metric("dashboard_frames", len(frames), "frames", ">= 2")

    # --- every scraped figure against the database's own -----------------------------------
    for name, (value, truth, unit) in checks.items():
        w.metric(f"scraped_{name}", value, unit, f"== {truth}")
    w.metric("scraped_database_bytes", value_of(scraped, "ckpt_database_bytes"), "bytes",
             f"== {on_disk}")
    w.metric("file_bytes_changed_during_scrape", disk_change, "bytes", "== 0")
    w.metric("scraped_errors", value_of(scraped, "ckpt_write_errors_total"), "errors", "== 0")
    ops = sorted({dict(k[1])["operation"] for k in scraped if k[0].startswith("ckpt_operation")})
    w.metric("operations_labelled", ",".join(ops), target="== get_tuple,list,put,put_writes")

    for path, text in render_deploy_files().items():
        w.show(f"{path.relative_to(ROOT)} ({len(text):,} bytes) matches config/thresholds.toml")
        w.metric(f"{path.name}_matches_config", path.read_text() == text, target="== yes")

    w.show(f"put, {rounds} interleaved rounds: {ms.describe()}")
    w.metric("put_plain", ms["plain"].median, "ms")
    w.metric("put_instrumented", ms["instrumented"].median, "ms")
    w.metric("instrumentation_overhead_ratio", ms.ratio("instrumented", "plain"), "x")
    w.metric("overhead_ratio_without_size", ms.ratio("unsized", "plain"), "x")
    if cloudwatch:  # the same window, as CloudWatch custom metrics, and back
        trip = cw.round_trip(phases["full"][2].stats, {"Backend": "sqlite",
                                                       "Run": uuid.uuid4().hex[:12]})
        w.show(f"CloudWatch {cw.NAMESPACE} at {trip.endpoint}: "
               + ", ".join(f"{k}={v:,.2f}" for k, v in trip.sent.items()))
        w.metric("cloudwatch_metrics_sent", len(trip.sent), "metrics", ">= 4")
        w.metric("cloudwatch_read_back_equal", trip.read == trip.sent, target="== yes")
    w.note(f"A write is one put or put_writes call; a chat turn makes {per_turn:g}. The quiet "
           f"phase paces 1 worker at {quiet_writes_per_s:g} writes/s; the full phase runs "
           f"{workers} threads flat out over {conversations} conversations for {seconds:g} s.")
    w.note(f"Window {th.window_s:g} s; alerts at > {th.alert_writes_per_s:g} writes/s and > "
           f"{th.alert_error_rate:.0%} errors; MIGRATE NOW at > {th.writes_per_s_migrate:g}/s.")
    w.note("Latency is the time inside the saver call, including the wait for SqliteSaver's "
           "lock when several threads write. The wrapper's cost is mostly measuring the size "
           "(one more serialization); measure_size=False drops it. The put figures are the "
           f"median over {rounds} rounds (the savers alternating put by put) of each round's "
           "median put; the ratios the median of the rounds' ratios.")
    return w


if __name__ == "__main__":
    raise SystemExit(shared.witness.cli(main))
