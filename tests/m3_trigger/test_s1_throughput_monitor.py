"""3.1 `m3_trigger/s1_throughput_monitor.py`: the witness, metric by metric."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

from shared import ROOT
from shared.ops.decide import load_thresholds
from tests.conftest import RunLesson
from tests.shared.test_metrics import _truth

CONFIG = {"configurable": {"thread_id": "t", "checkpoint_ns": ""}}
CAPABILITIES = ["delete_thread", "get_tuple", "list", "put", "put_writes"]
PROMTOOL = shutil.which("promtool")


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(ROOT)}


def test_3_1_throughput_monitor(lesson_run: RunLesson) -> None:
    # seconds=2.0, workers=4, conversations=40, overhead_puts=40, refresh_s=0.25
    run = lesson_run("m3_trigger.s1_throughput_monitor")
    w = run.witness
    th = load_thresholds()
    truth = _truth(run.workdir / "m3_s1_throughput_monitor" / "checkpoints.sqlite")
    assert w["writes_per_turn"].value == 5  # input, start task's writes, step 0, chatbot, step 1
    for phase in ("quiet", "full"):
        assert w[f"{phase}.load_errors"].value == 0
        assert w[f"{phase}.offered_writes_per_s"].value > 0
        assert w[f"{phase}.window_p99_ms"].value > 0
        assert w[f"{phase}.error_alert_firing"].value is False
        # the window (scraped over HTTP) agrees with the load the phase offered
        ratio = w[f"{phase}.window_writes_per_s"].value / w[f"{phase}.offered_writes_per_s"].value
        assert 0.6 < ratio < 1.4, (phase, ratio)
    assert w["quiet.window_writes_per_s"].value < th.alert_writes_per_s
    assert 30 < w["quiet.offered_writes_per_s"].value < 50  # paced at 40 writes/s
    assert w["quiet.writes_alert_firing"].value is False
    assert w["quiet.verdict"].value == "SQLITE SUFFICIENT"
    assert w["full.window_writes_per_s"].value > th.writes_per_s_migrate
    assert w["full.writes_alert_firing"].value is True
    assert w["full.verdict"].value == "MIGRATE NOW"
    assert w["dashboard_frames"].value >= 2
    # every scraped figure equals what the database holds
    assert w["scraped_puts"].value == truth["rows"] > 0
    assert w["scraped_put_writes"].value == truth["groups"] > 0
    assert w["scraped_checkpoint_bytes"].value == truth["cp_bytes"]
    assert w["scraped_writes_bytes"].value == truth["w_bytes"]
    assert w["scraped_put_latency_observations"].value == truth["rows"]
    assert w["scraped_database_bytes"].value > 0
    assert w["file_bytes_changed_during_scrape"].value == 0
    assert w["scraped_errors"].value == 0
    assert w["operations_labelled"].value == "get_tuple,list,put,put_writes"
    assert w["ckpt-alerts.yml_matches_config"].value is True
    assert w["ckpt-dashboard.json_matches_config"].value is True
    assert w["put_plain"].value > 0 and w["put_instrumented"].value > 0
    assert 0 < w["instrumentation_overhead_ratio"].value < 5  # generous: medians side by side
    assert 0 < w["overhead_ratio_without_size"].value < 5
    assert w["cloudwatch_metrics_sent"].value >= 4
    assert w["cloudwatch_read_back_equal"].value is True
    assert all(m.met for m in w.metrics if m.target)  # each target, as the table shows it
    assert any("/metrics" in line and "samples" in line for line in w.evidence)
    assert w.passed


def test_script_live_run(tmp_path: Path) -> None:
    out = subprocess.run(
        [sys.executable, "-m", "m3_trigger.s1_throughput_monitor", "--live", "--workdir",
         str(tmp_path), "--seconds", "1.5", "--conversations", "20", "--overhead-puts", "10",
         "--refresh-s", "0.25", "--no-cloudwatch"],
        cwd=ROOT, env=_env(), capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    assert "checkpoint traffic" in out.stdout and "writes/s" in out.stdout  # the dashboard
    assert "PASSED" in out.stdout
