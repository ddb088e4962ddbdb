"""Milestone 3, task 3.2/3.3: the migration decision witness, decide() rule by rule, the JSON
decision log, and `ckpt decide` on live /metrics URLs and on database files."""

from __future__ import annotations

import hashlib
import json
import socket
import sqlite3
import time
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry

from shared.cli import main as ckpt
from shared.cli.decide import parse_window
from shared.errors import CheckpointError
from shared.ops.decide import (
    MIGRATE_NOW,
    MIGRATE_SOON,
    NO_DATA,
    SUFFICIENT,
    Decision,
    DecisionEngine,
    Thresholds,
    decide,
    load_thresholds,
    write_thresholds,
)
from shared.ops.metrics import scrape, serve_metrics
from shared.ops.window import MetricsWindow, WindowStats, from_registry
from shared.workloads.paced import (
    LoadGenerator,
    Stage,
    firings_before,
    first_firing,
    instrumented_sqlite,
)
from shared.workloads.sqlite_writers import start_process_writers

TH = Thresholds()  # the defaults: 100 writes/s, 1 % errors, 5 GB, 20 attempts, 5 s window


# --- the witness ---------------------------------------------------------------------------------


# --- decide(), rule by rule ----------------------------------------------------------------------

def stats(writes: float = 100, errors: float = 0, span_s: float = 5.0,
          db_bytes: float = 1e6) -> WindowStats:
    attempts = writes + errors
    return WindowStats(window_s=5.0, span_s=span_s, writes=writes, errors=errors,
                       locked=errors, writes_per_s=writes / span_s if span_s else 0.0,
                       error_rate=errors / attempts if attempts else 0.0, p50_ms=1.0,
                       p99_ms=2.0, db_bytes=db_bytes)


def test_quiet_traffic_is_sufficient() -> None:
    d = decide(stats(writes=250), TH)  # 50 writes/s
    assert (d.verdict, d.fired) == (SUFFICIENT, [])
    assert "no rule fired" in d.justification


def test_writes_per_s_rule() -> None:
    d = decide(stats(writes=750), TH)  # 150/s over the full window
    assert (d.verdict, d.fired) == (MIGRATE_NOW, ["writes_per_s"])
    assert "150.0/s" in d.justification
    assert decide(stats(writes=500), TH).verdict == SUFFICIENT  # exactly 100/s: not above


def test_a_burst_in_a_partial_window_is_not_a_decision() -> None:
    d = decide(stats(writes=600, span_s=2.0), TH)  # 300/s, but for 2 s of a 5 s window
    assert d.verdict == NO_DATA
    assert "2.0 s of the 5 s" in d.justification


def test_error_rate_rule() -> None:
    d = decide(stats(writes=98, errors=2), TH)  # 2 %
    assert (d.verdict, d.fired) == (MIGRATE_NOW, ["error_rate"])
    assert decide(stats(writes=398, errors=2), TH).verdict == SUFFICIENT  # 0.5 %, 80/s


def test_file_size_rule() -> None:
    d = decide(stats(db_bytes=6e9), TH)
    assert (d.verdict, d.fired) == (MIGRATE_SOON, ["file_size"])
    both = decide(stats(writes=750, db_bytes=6e9), TH)
    assert both.verdict == MIGRATE_NOW and set(both.fired) == {"writes_per_s", "file_size"}


def test_multi_server_rule_needs_no_traffic() -> None:
    d = decide(stats(writes=0, span_s=0.0), TH.with_(servers=2))
    assert (d.verdict, d.fired) == (MIGRATE_NOW, ["multi_server"])


def test_empty_window_is_not_enough_data() -> None:
    empty = MetricsWindow(from_registry(CollectorRegistry()), 5.0).stats()
    assert empty.empty
    d = decide(empty, TH)
    assert d.verdict == NO_DATA and d.fired == []
    assert "0 write attempts" in d.justification
    few = decide(stats(writes=19), TH)
    assert few.verdict == NO_DATA and "need 20" in few.justification


def test_unobserved_rules_are_said_and_do_not_block() -> None:
    d = decide(stats(writes=250), TH, {"error_rate": "a file keeps no errors"})
    assert d.verdict == SUFFICIENT
    assert "error_rate not observed: a file keeps no errors" in d.justification
    rule = next(r for r in d.matrix if r["name"] == "error_rate")
    assert rule["fired"] is None and rule["observable"] is False
    no_size = decide(stats(writes=250, db_bytes=0), TH)  # no ckpt_database_bytes exported
    assert no_size.verdict == SUFFICIENT and "file_size not observed" in no_size.justification


def test_first_firing_and_false_alarms() -> None:
    ds = [Decision(SUFFICIENT, [], "", {}, at=1.0), Decision(MIGRATE_NOW, ["x"], "", {}, at=2.0),
          Decision(MIGRATE_NOW, ["x"], "", {}, at=3.0)]
    assert first_firing(ds, "x").at == 2.0
    assert first_firing(ds, "x", after=2.5).at == 3.0
    assert firings_before(ds, "x", 2.5) == 1
    assert first_firing(ds, "y") is None


def test_paced_writer_processes_serve_their_metrics(tmp_path: Path) -> None:
    with start_process_writers(tmp_path / "paced.sqlite", 2, 1.0, rate_per_process=40,
                               serve=True) as fleet:
        assert len(set(fleet.urls)) == 2
        fleet.wait_written()
        scraped = [sum(v for (name, _), v in scrape(u).items() if name == "ckpt_writes_total")
                   for u in fleet.urls]
    stats = fleet.stats()
    assert sum(scraped) == stats.writes  # each process's own /metrics, summed
    assert 40 <= stats.writes <= 120  # Poisson arrivals at 2 x 40/s for 1 s
    assert stats.lock_errors == 0 and stats.first_lock_error_at is None  # 5 s busy timeout


# --- the thresholds config -----------------------------------------------------------------------

@pytest.mark.parametrize(("text", "message"), [
    ("[decision\nwindow_s = 5", "is not valid TOML"),
    ("[decision]\nwindow_seconds = 5", "unknown setting decision.window_seconds"),
    ("[decision]\nwrites_per_s_migrate = -1", "must be positive"),
    ("[decision]\nwrites_per_s_migrate = \"lots\"", "must be a number"),
    ("[decision]\nfile_bytes_soon = nan", "must be a finite number"),
    ("[decision]\nservers = 1.5", "must be a whole number"),
    ("[decision]\nerror_rate_migrate = 5", "is a fraction of attempts"),
])
def test_malformed_config_is_refused(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "th.toml"
    path.write_text(text)
    with pytest.raises(CheckpointError, match=message):
        load_thresholds(path)


def test_config_round_trip_and_repo_config(tmp_path: Path) -> None:
    th = load_thresholds()
    assert (th.window_s, th.writes_per_s_migrate, th.file_bytes_soon) == (5, 100, 5e9)
    changed = th.with_(file_bytes_soon=4e6, servers=3)
    assert load_thresholds(write_thresholds(changed, tmp_path / "t.toml")) == changed


# --- the decision log ----------------------------------------------------------------------------

def test_every_decision_is_one_json_line(tmp_path: Path) -> None:
    log = tmp_path / "decisions.jsonl"
    with instrumented_sqlite(tmp_path / "log.sqlite") as (saver, metrics), \
            LoadGenerator(saver, [Stage(200, 1.0)]):
        engine = DecisionEngine(MetricsWindow(from_registry(metrics.registry), 0.5),
                                TH.with_(window_s=0.5, min_attempts=5), log)
        for _ in range(3):
            time.sleep(0.3)
            engine.step()
    lines = log.read_text().splitlines()
    assert len(lines) == len(engine.decisions) == 3
    for line, decision in zip(lines, engine.decisions, strict=True):
        record = json.loads(line)
        assert record["verdict"] == decision.verdict
        assert record["justification"] == decision.justification
        assert record["at"].startswith("20") and record["at_unix"] == decision.at
        assert {"stats", "thresholds"} <= record["inputs"].keys()
        assert record["inputs"]["stats"]["writes"] == decision.inputs["stats"]["writes"]
        assert [r["name"] for r in record["matrix"]] == ["multi_server", "error_rate",
                                                         "writes_per_s", "file_size"]
    assert json.loads(lines[-1])["verdict"] == MIGRATE_NOW  # 200/s over a full 0.5 s window


# --- ckpt decide ---------------------------------------------------------------------------------

def run_decide(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = ckpt(["decide", *argv])
    out, err = capsys.readouterr()
    return code, out, err


def test_parse_window() -> None:
    assert parse_window("5s") == 5 and parse_window("500ms") == 0.5
    assert parse_window("2m") == 120 and parse_window("1.5") == 1.5


def test_decide_on_live_metrics_urls(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    log = tmp_path / "decide.jsonl"
    with instrumented_sqlite(tmp_path / "a.sqlite") as (saver_a, metrics_a), \
            instrumented_sqlite(tmp_path / "b.sqlite") as (saver_b, metrics_b), \
            serve_metrics(metrics_a.registry) as a, serve_metrics(metrics_b.registry) as b:
        code, out, _ = run_decide(capsys, a.url, "--window", "1s", "--json")
        assert code == 0 and json.loads(out)["verdict"] == NO_DATA  # no traffic yet
        with LoadGenerator(saver_a, [Stage(150, 3)]), LoadGenerator(saver_b, [Stage(60, 3)]):
            time.sleep(0.2)
            code, out, _ = run_decide(capsys, a.url, "--window", "1s", "--json", "--log",
                                      str(log))
            fast = json.loads(out)
            code_b, out_b, _ = run_decide(capsys, b.url, "--window", "1s", "--json")
            code_sum, out_sum, _ = run_decide(capsys, a.url, b.url, "--window", "1s")
    assert code == 0 and fast["verdict"] == MIGRATE_NOW and fast["fired"] == ["writes_per_s"]
    assert 120 < fast["inputs"]["stats"]["writes_per_s"] < 180
    assert json.loads(log.read_text())["verdict"] == MIGRATE_NOW  # one line, the same
    assert code_b == 0 and json.loads(out_b)["verdict"] == SUFFICIENT  # 60/s alone
    assert code_sum == 0 and "MIGRATE NOW" in out_sum  # 150 + 60 summed over two endpoints
    assert "decision matrix" in out_sum and "writes_per_s" in out_sum


def digest(path: Path) -> tuple[list[str], str]:
    """The directory listing and the file's hash: what 'changed nothing' means."""
    return sorted(p.name for p in path.parent.iterdir()), hashlib.sha256(
        path.read_bytes()).hexdigest()


def test_decide_on_a_database_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    db = tmp_path / "c.sqlite"
    with instrumented_sqlite(db) as (saver, _), LoadGenerator(saver, [Stage(150, 2.5)]) as load:
        time.sleep(1.3)
        code, out, _ = run_decide(capsys, str(db), "--window", "1s", "--json")
        live = json.loads(out)
        measured = load.rate_between(time.time() - 1.0, time.time())
    assert code == 0 and live["verdict"] == MIGRATE_NOW and live["fired"] == ["writes_per_s"]
    assert abs(live["inputs"]["stats"]["writes_per_s"] - measured) < 20  # ids vs own clock
    assert "error_rate not observed" in live["justification"]
    assert live["inputs"]["source"]["puts"] > 100

    before = digest(db)
    time.sleep(1.1)  # the writer is gone: the last second of the file is empty
    code, out, _ = run_decide(capsys, str(db), "--window", "1s")
    assert code == 0 and "NOT ENOUGH DATA" in out and "decision matrix" in out
    assert "not observed" in out
    code, out, _ = run_decide(capsys, str(db), "--servers", "2", "--json")
    assert code == 0 and json.loads(out)["fired"] == ["multi_server"]
    assert digest(db) == before  # read-only: no -wal/-shm created, no byte changed


def closed_port_url() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{s.getsockname()[1]}/metrics"


def test_bad_input_exits_2_with_one_line(tmp_path: Path,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    with instrumented_sqlite(tmp_path / "ok.sqlite"):
        pass
    good = tmp_path / "ok.sqlite"
    text = tmp_path / "notes.txt"
    text.write_text("not a database")
    empty_db = tmp_path / "other.sqlite"
    with sqlite3.connect(empty_db) as conn:
        conn.execute("CREATE TABLE t (x)")
    conn.close()
    configs = {"bad.toml": "[decision\n", "unknown.toml": "[decision]\nspeed = 1\n",
               "negative.toml": "[decision]\nmin_attempts = -3\n",
               "text.toml": "[decision]\nwindow_s = \"five\"\n"}
    for name, body in configs.items():
        (tmp_path / name).write_text(body)
    cases = [
        ([closed_port_url(), "--window", "0.2s"], "Could not scrape"),
        ([closed_port_url().replace("//", "//ops:s3cret@"), "--window", "0.2s"], "ops:***@"),
        (["ftp://127.0.0.1/metrics"], "is not an http(s) URL"),
        ([str(text)], "is not a SQLite database"),
        ([str(empty_db)], "has no LangGraph checkpoint tables"),
        ([str(tmp_path / "missing.sqlite")], "does not exist"),
        ([str(good), "--window", "soon"], "is not a duration"),
        ([str(good), "--window", "0s"], "must be longer than zero"),
        ([str(good), "--servers", "0"], "must be a whole number of 1 or more"),
        ([str(good), "--log", str(tmp_path / "no" / "log.jsonl")], "does not exist"),
        ([str(good), "--config", str(tmp_path / "bad.toml")], "is not valid TOML"),
        ([str(good), "--config", str(tmp_path / "unknown.toml")], "unknown setting"),
        ([str(good), "--config", str(tmp_path / "negative.toml")], "must be positive"),
        ([str(good), "--config", str(tmp_path / "text.toml")], "must be a number"),
        ([str(good), "--config", str(tmp_path)], "cannot be read as text"),
    ]
    files = {p: digest(p) for p in (good, text, empty_db, *(tmp_path / n for n in configs))}
    for argv, message in cases:
        code, out, err = run_decide(capsys, *argv)
        assert code == 2, argv
        assert out == "" and err.startswith("ckpt: ") and err.count("\n") == 1, (argv, err)
        assert message in err, (argv, err)
        assert "s3cret" not in err  # passwords in URLs are masked
    assert {p: digest(p) for p in files} == files
    assert not (tmp_path / "missing.sqlite").exists() and not (tmp_path / "no").exists()


def test_url_without_checkpoint_metrics(capsys: pytest.CaptureFixture[str]) -> None:
    with serve_metrics(CollectorRegistry()) as server:
        code, out, err = run_decide(capsys, server.url, "--window", "0.1s")
    assert out == ""
    assert code == 2 and "no ckpt_writes_total" in err and err.count("\n") == 1
