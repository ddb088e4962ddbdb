"""Hostile input to every ``ckpt`` subcommand: one sentence, exit 2, nothing changed (issue 8).

One table of cases over inspect, prune, decide, migrate and verify. Each case runs the CLI
(``shared.cli.main`` in this process; a representative subset as a real ``python -m
shared.cli`` subprocess), and asserts exit status 2, exactly one line on stderr (no
traceback), and that nothing changed: every file of the data directory hashed before and
after, no file created, and the PostgreSQL database's tables and row counts the same.
Then Ctrl-C (section 7): "ckpt: interrupted" with what the command left behind, exit 130.
"""

from __future__ import annotations

import contextlib
import hashlib
import http.server
import io
import json
import os
import random
import shutil
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from shared.cli import build_parser, main
from shared.errors import run_command

ROOT = Path(__file__).resolve().parents[2]
HUGE = "99999999999999999999"
UNWRITABLE_LOG = "/proc/ckpt-hostile.log"  # not creatable even by root

# (argv with {placeholders}, a phrase the sentence must hold, also as a real subprocess)
CASES: list[tuple[list[str], str, bool]] = [
    (["inspect", "{db}", "--largest", HUGE], "--largest", True),
    (["inspect", "{db}", "--largest", "-1"], "--largest -1 must be", False),
    (["inspect", "{db}", "--largest", "many"], "invalid int value", False),
    (["inspect", "{db}", "--thread", ""], "Thread '' has no checkpoints", False),
    (["inspect", "{corrupt}"], "damaged", True),
    (["inspect", "{notdb}"], "is not a SQLite database", False),
    (["inspect", "{data}/missing.sqlite"], "does not exist", False),
    (["prune", "{db}", "--older-than", "999999999d"], "longer than 36,500 days", True),
    (["prune", "{db}", "--older-than", "1d1d"], "is not a duration", False),
    (["prune", "{db}", "--older-than", "", "--keep-last", "2"], "is not a duration", False),
    (["prune", "{db}", "--keep-last", HUGE], "--keep-last", False),
    (["prune", "{corrupt}", "--older-than", "1d"], "malformed", True),
    (["prune", "{db}", "--older-than", "1d", "--every", "0s"], "longer than zero", False),
    (["prune", "{db}", "--older-than", "1d", "--gc-s3", "--gc-grace", "1h1h"], "--gc-grace",
     False),
    (["decide", "{db}", "--window", f"{HUGE}h"], "longer than 366 days", True),
    (["decide", "{db}", "--window", "1h", "--log", UNWRITABLE_LOG], "cannot be written", True),
    (["decide", "{db}", "--log", "{data}"], "is a directory", False),
    (["decide", "http://[::1/metrics"], "not a valid URL", False),
    (["decide", "{corrupt}", "--window", "1s"], "damaged", False),
    (["migrate", "{db}", "postgresql://u:p@[::1/db"], "not a valid PostgreSQL URL", True),
    (["migrate", "postgresql://u:p@[::1/db", "{data}/new.sqlite"], "not a valid PostgreSQL URL",
     False),
    (["migrate", "{db}", "{data}/new.sqlite", "--batch", HUGE], "--batch", False),
    (["migrate", "{corrupt}", "{data}/new.sqlite"], "malformed", False),
    (["migrate", "{db}", "{no_select}"], "permission denied", False),
    (["verify", "{db}", "postgresql://u:p@[::1/db"], "not a valid PostgreSQL URL", False),
    (["verify", "{corrupt}", "{copy}"], "malformed", True),
    (["verify", "{db}", "{no_select}"], "permission denied", True),
    (["verify", "{db}", "{copy}", "--examples", "-1"], "--examples", False),
    ([], "required", False),
]


# --- the databases --------------------------------------------------------------------------

@pytest.fixture(scope="module")
def base_db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from shared.graph import build_chat_graph
    from shared.savers import open_sqlite_saver

    path = tmp_path_factory.mktemp("hostile") / "base.sqlite"
    with open_sqlite_saver(path) as saver:
        graph = build_chat_graph(saver)
        for thread in ("t1", "t2"):
            for text in ("Hi, my name is Alice.", "I live in Lisbon."):
                graph.invoke({"messages": [("user", text)]},
                             {"configurable": {"thread_id": thread}})
    conn = sqlite3.connect(path)
    conn.execute("PRAGMA journal_mode = DELETE")  # one file, no -wal to keep in step
    conn.close()
    return path


def corrupt_body(path: Path) -> None:
    """Keep page 1 (the header and the schema), overwrite every later page with garbage."""
    data = bytearray(path.read_bytes())
    page = int.from_bytes(data[16:18], "big")
    assert len(data) > 2 * page  # there is a body to damage
    data[page:] = random.Random(8).randbytes(len(data) - page)
    path.write_bytes(bytes(data))


@pytest.fixture
def data(base_db: Path, tmp_path: Path) -> Path:
    folder = tmp_path / "data"
    folder.mkdir()
    for name in ("db", "copy", "corrupt", "pickle"):
        shutil.copy(base_db, folder / f"{name}.sqlite")
    corrupt_body(folder / "corrupt.sqlite")
    conn = sqlite3.connect(folder / "pickle.sqlite")
    with conn:
        conn.execute("UPDATE checkpoints SET type = 'pickle' WHERE rowid = "
                     "(SELECT max(rowid) FROM checkpoints)")
    conn.close()
    (folder / "notdb.sqlite").write_text("not a database\n")
    return folder


@pytest.fixture(scope="module")
def no_select(pg_url: str) -> Iterator[tuple[str, str]]:
    """(URL of a role that may log in but not SELECT, the superuser's URL of that database)."""
    import psycopg
    from langgraph.checkpoint.postgres import PostgresSaver

    from shared.infra.postgres import create_database

    db_url = create_database(pg_url, "t_cli_hostile_no_select")
    with PostgresSaver.from_conn_string(db_url) as saver:
        saver.setup()
    with psycopg.connect(db_url, autocommit=True) as conn:
        conn.execute("DROP ROLE IF EXISTS ckpt_hostile_nosel")
        conn.execute("CREATE ROLE ckpt_hostile_nosel LOGIN PASSWORD 'Nosel-Pass1'")
    role_url = db_url.replace("://postgres@", "://ckpt_hostile_nosel:Nosel-Pass1@", 1)
    assert role_url != db_url
    yield role_url, db_url
    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute("DROP DATABASE IF EXISTS t_cli_hostile_no_select WITH (FORCE)")
        conn.execute("DROP ROLE IF EXISTS ckpt_hostile_nosel")


def snapshot(folder: Path, pg: str) -> dict[str, Any]:
    """Every file's hash, and every table's row count in the PostgreSQL database."""
    import psycopg

    files = {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
             for p in sorted(folder.rglob("*")) if p.is_file()}
    with psycopg.connect(pg, autocommit=True) as conn:
        tables = [r[0] for r in conn.execute(
            "SELECT tablename FROM pg_tables WHERE schemaname = 'public' ORDER BY 1")]
        rows = {t: conn.execute(f'SELECT count(*) FROM "{t}"').fetchone()[0]
                for t in tables}
    return {"files": files, "tables": rows}


# --- running the command -------------------------------------------------------------------

def run_here(argv: list[str]) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = main(argv)
        except SystemExit as exc:  # argparse's own exit
            code = int(exc.code or 0)
    return code, out.getvalue(), err.getvalue()


def run_real(argv: list[str], cwd: Path, timeout: float = 60) -> tuple[int, str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "S3_ENDPOINT_URL")}
    env["PYTHONPATH"] = str(ROOT)
    proc = subprocess.run([sys.executable, "-m", "shared.cli", *argv], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=timeout)
    return proc.returncode, proc.stdout, proc.stderr


def test_hostile_values_one_sentence_exit_2_nothing_changed(
        data: Path, no_select: tuple[str, str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(data)  # a file created relative to the working directory shows up too
    role_url, admin_url = no_select
    names = {"data": str(data), "no_select": role_url,
             **{n: str(data / f"{n}.sqlite") for n in ("db", "copy", "corrupt", "pickle",
                                                       "notdb")}}
    ran_real = 0
    for template, phrase, real in CASES:
        argv = [a.format(**names) for a in template]
        before = snapshot(data, admin_url)
        started = time.monotonic()
        code, out, err = run_real(argv, data) if real else run_here(argv)
        ran_real += real
        assert code == 2, (argv, code, out, err)
        assert err.startswith("ckpt") and err.count("\n") == 1, (argv, err)
        assert "Traceback" not in out + err and phrase in err, (argv, err)
        assert "/metrics" not in err or argv[:1] == ["decide"], (argv, err)  # inspect: a file
        assert snapshot(data, admin_url) == before, argv
        if UNWRITABLE_LOG in argv:  # refused before the one-hour window, not after it
            assert time.monotonic() - started < 30, argv
    assert ran_real >= 8


def test_a_pickle_row_is_moved_as_bytes_and_compared_as_bytes(data: Path) -> None:
    """A row of type "pickle" is never loaded: SQLite -> SQLite moves its bytes, verify
    compares them (it differs from the msgpack row it replaced) and names it."""
    source = data / "pickle.sqlite"
    digest = hashlib.sha256(source.read_bytes()).hexdigest()
    code, out, err = run_here(["migrate", str(source), str(data / "new.sqlite"), "--json"])
    assert (code, "Traceback" in out + err) == (0, False), (code, out, err)
    rows = []
    for db in (source, data / "new.sqlite"):
        conn = sqlite3.connect(f"{db.as_uri()}?mode=ro", uri=True)
        rows.append([conn.execute(f"SELECT * FROM {t} ORDER BY 1, 2, 3, 4").fetchall()
                     for t in ("checkpoints", "writes")])
        conn.close()
    assert rows[0] == rows[1]  # the same bytes, the pickle row included
    code, out, err = run_here(["verify", str(source), str(data / "copy.sqlite"), "--json"])
    report = json.loads(out)
    assert (code, report["unreadable"], report["mismatches"]) == (1, 1, 1), (out, err)
    assert any("'pickle'" in e for e in report["examples"]), report["examples"]
    assert hashlib.sha256(source.read_bytes()).hexdigest() == digest


# --- smaller defects of section 8 -------------------------------------------------------------

def test_help_has_no_rst_markup(capsys: pytest.CaptureFixture[str]) -> None:
    for command in ("inspect", "prune", "decide", "migrate", "verify"):
        with pytest.raises(SystemExit) as done:
            main([command, "--help"])
        assert done.value.code == 0
        text = capsys.readouterr().out
        assert "``" not in text and "usage: ckpt" in text, (command, text)


def test_sqlite_schema_quotes_any_table_name(tmp_path: Path) -> None:
    from shared.savers.sqlite import sqlite_schema

    conn = sqlite3.connect(tmp_path / "odd.sqlite")
    name = "it's a \"table\""
    conn.execute(f'CREATE TABLE "{name.replace(chr(34), chr(34) * 2)}" (x INTEGER PRIMARY KEY)')
    assert sqlite_schema(conn)[name] == [("x", "INTEGER", False, 1)]
    conn.close()


def test_metadata_key_refuses_a_trailing_newline() -> None:
    from shared.errors import CheckpointError
    from shared.savers.sqlite_filters import metadata_expression

    assert metadata_expression("user_id").endswith("'$.user_id')")
    for key in ("user_id\n", "user_id\nx", "", "1x"):
        with pytest.raises(CheckpointError):
            metadata_expression(key)


def test_largest_checkpoints_refuses_a_negative_limit(base_db: Path) -> None:
    from shared.errors import CheckpointError
    from shared.savers.sqlite import largest_checkpoints

    conn = sqlite3.connect(base_db)
    try:
        assert len(largest_checkpoints(conn, 1)) == 1 and largest_checkpoints(conn, 0) == []
        for bad in (-1, 2**63, True):
            with pytest.raises(CheckpointError):
                largest_checkpoints(conn, bad)
    finally:
        conn.close()


def test_inspect_thread_empty_string_is_a_thread(tmp_path: Path) -> None:
    from langgraph.checkpoint.base import empty_checkpoint

    from shared.savers import open_sqlite_saver

    path = tmp_path / "empty-id.sqlite"
    with open_sqlite_saver(path) as saver:
        saver.put({"configurable": {"thread_id": "", "checkpoint_ns": ""}}, empty_checkpoint(),
                  {"source": "input", "step": -1}, {})
    code, out, err = run_here(["inspect", str(path), "--thread", "", "--json"])
    assert code == 0, err
    assert '"thread": ""' in out and '"history"' in out


def test_durations_are_canonical() -> None:
    from datetime import timedelta

    from shared.durations import parse_duration
    from shared.errors import CheckpointError

    assert parse_duration("1d12h") == timedelta(days=1, hours=12)
    assert parse_duration("30d") == timedelta(days=30)
    for bad in ("1d1d", "12h1d", "1d 1d", "999999999d", "0s", "d", ""):
        with pytest.raises(CheckpointError):
            parse_duration(bad, "--older-than")


# --- Ctrl-C (section 7) -------------------------------------------------------------------------

class _Metrics(http.server.BaseHTTPRequestHandler):
    hits = threading.Event()

    def do_GET(self) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "text/plain; version=0.0.4")
        self.end_headers()
        self.wfile.write(b"ckpt_writes_total 1\n")
        type(self).hits.set()

    def log_message(self, *args: Any) -> None:
        pass


def test_ctrl_c_in_the_real_command_says_interrupted(tmp_path: Path) -> None:
    """SIGINT while ``ckpt decide`` watches its window: one line, exit 130, no traceback."""
    handler = type("Handler", (_Metrics,), {"hits": threading.Event()})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    try:
        proc = subprocess.Popen([sys.executable, "-m", "shared.cli", "decide",
                                 f"http://127.0.0.1:{server.server_port}/metrics", "--window",
                                 "120s", "--json"], cwd=tmp_path, env=env, text=True,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        try:
            assert handler.hits.wait(60), "the command never scraped"
            time.sleep(0.2)  # in its window's sleep now
            proc.send_signal(signal.SIGINT)
            out, err = proc.communicate(timeout=30)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.communicate()
    finally:
        server.shutdown()
        server.server_close()
        thread.join()
    assert proc.returncode == 130, err
    assert out == "" and err == "ckpt: interrupted: nothing was changed.\n", err


def test_interrupt_notes_say_what_is_kept(data: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import shared.cli.inspect
    import shared.cli.migrate as migrate_cli

    def ctrl_c(*args: Any, **kwargs: Any) -> Any:
        raise KeyboardInterrupt

    def swallowed(*args: Any, **kwargs: Any) -> Any:
        # What msgpack's ext_hook does: catch the interrupt, raise something else.
        try:
            raise KeyboardInterrupt
        except KeyboardInterrupt:
            raise ValueError("ext_hook failed") from None

    db, copy = str(data / "db.sqlite"), str(data / "copy.sqlite")
    monkeypatch.setattr(shared.cli.inspect, "inspect_threads", ctrl_c)
    monkeypatch.setattr(migrate_cli, "verify", ctrl_c)
    monkeypatch.setattr(migrate_cli, "migrate", swallowed)
    for argv, note in ((["inspect", db], "nothing was changed"),
                       (["verify", db, copy], "nothing was changed"),
                       (["migrate", db, str(data / "new.sqlite")],
                        "threads committed so far are kept; run the same command again to "
                        "resume")):
        code, _out, err = run_here(argv)
        assert code == 130 and err == f"ckpt: interrupted: {note}.\n", (argv, err)


def test_a_swallowed_sigint_is_still_an_interrupt(capsys: pytest.CaptureFixture[str]) -> None:
    """A callback that catches KeyboardInterrupt and raises something unrelated."""
    from types import SimpleNamespace

    def command(args: Any) -> int:
        try:
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(5)
        except BaseException:  # the point: a library that swallows it
            pass
        raise RuntimeError("decoding failed")

    assert run_command(command, SimpleNamespace()) == 130
    assert capsys.readouterr().err == "ckpt: interrupted.\n"
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # restored


def test_parser_errors_are_one_line() -> None:
    parser = build_parser()
    err = io.StringIO()
    with contextlib.redirect_stderr(err), pytest.raises(SystemExit) as done:
        parser.parse_args(["inspect"])
    assert done.value.code == 2 and err.getvalue().count("\n") == 1, err.getvalue()
