"""No message may hold any part of a password (issue 8, section 7).

Every entry point that takes a URL is run as the real ``ckpt`` command (a subprocess) with a
unique password, written raw (``@ : /`` unescaped, which parsers split differently) and
percent-encoded; all of stdout and stderr is searched for the password and for each of its
pieces between special characters (3 characters or more). A /metrics URL with credentials
is also shown to work: they go as HTTP Basic authentication, never in the request line.
"""

from __future__ import annotations

import base64
import http.server
import os
import re
import socket
import sqlite3
import subprocess
import sys
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any, ClassVar
from urllib.parse import quote, unquote, urlsplit

import pytest

from shared import infra
from shared.errors import CheckpointError
from shared.infra import postgres as pg_infra
from shared.infra import s3 as s3_infra
from shared.infra.urls import mask_url, redact
from shared.ops.metrics import scrape

ROOT = Path(__file__).resolve().parents[2]
# As typed inside a URL: raw specials (a malformed URL), percent-encoded, a colon and an @,
# and escapes of / and : (decoded by parsers). Every piece is unique text.
RAW = "Pwq-Kx7@Vyg:Wzk/Qjm%40Rtu"
PASSWORDS = [RAW, quote(RAW, safe=""), "Hjk:Lmn@Opq", "Rst%2FUvw%3AXyz"]
METRICS = b"# TYPE ckpt_writes_total counter\nckpt_writes_total{backend=\"sqlite\"} 3\n"


def fragments(password: str) -> set[str]:
    """The password in every spelling, and each piece of it between special characters."""
    spellings = {password, unquote(password), unquote(unquote(password)),
                 quote(unquote(password), safe="")}
    pieces = {p for s in spellings for p in re.split(r"[^A-Za-z0-9]+", s) if len(p) >= 3}
    return spellings | pieces


def leaks(text: str, password: str) -> list[str]:
    low = text.lower()
    return sorted(f for f in fragments(password) if f.lower() in low)


def test_fragments_are_found() -> None:  # the search itself must not be vacuous
    assert {"Kx7", "Vyg", "Wzk", "Qjm", "Rtu", "Pwq"} <= fragments(RAW)
    assert leaks("host 'Vyg' refused", RAW) == ["Vyg"]
    assert leaks(f"http://a:{PASSWORDS[1]}@h", RAW)  # the encoded spelling is found too


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# --- one mask_url, one redact ------------------------------------------------------------------

def test_one_mask_url_everywhere() -> None:
    assert pg_infra.mask_url is s3_infra.mask_url is mask_url
    assert infra is not None
    assert mask_url("postgresql://u:s3cret@h:5432/db") == "postgresql://u:***@h:5432/db"
    assert mask_url("http://127.0.0.1:9000") == "http://127.0.0.1:9000"
    assert mask_url("postgresql://u@h/db") == "postgresql://u@h/db"
    # Malformed: everything between user: and the last @ is masked, whatever the parser.
    assert mask_url(f"postgresql://u:{RAW}@[::1/db") == "postgresql://u:***@[::1/db"
    assert mask_url("postgresql://h/db?sslmode=require&password=Abc9") == (
        "postgresql://h/db?sslmode=require&password=***")
    assert mask_url("host=h password=Abc9 dbname=x") == "host=h password=*** dbname=x"


def test_redact_scrubs_a_real_psycopg_reason() -> None:
    """libpq splits at the first @, so a piece of the password ends up in the host name."""
    import psycopg

    for url in (f"postgresql://u:pa@ss@127.0.0.1:{_free_port()}/db",
                f"postgresql://u:{RAW}@127.0.0.1:{_free_port()}/db",
                f"postgresql://u:{PASSWORDS[2]}@127.0.0.1:{_free_port()}/db"):
        with pytest.raises(psycopg.Error) as caught:
            psycopg.connect(url, connect_timeout=2)
        reason = str(caught.value)
        password = url.split("://u:", 1)[1].rsplit("@", 1)[0]
        if password != "pa@ss":
            assert leaks(reason, password), reason  # the raw reason does leak ...
        scrubbed = redact(reason, url)
        assert not leaks(scrubbed, password), scrubbed  # ... the redacted one does not
        assert "ss@" not in scrubbed, scrubbed


# --- every entry point, as the real command ----------------------------------------------------

@pytest.fixture(scope="module")
def checkpoint_db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from shared.graph import build_chat_graph
    from shared.savers import open_sqlite_saver

    path = tmp_path_factory.mktemp("pw") / "db.sqlite"
    with open_sqlite_saver(path) as saver:
        build_chat_graph(saver).invoke({"messages": [("user", "Hi, I am Alice.")]},
                                       {"configurable": {"thread_id": "t1"}})
    return path


@pytest.fixture(scope="module")
def no_select_db(pg_url: str) -> Iterator[tuple[str, int, str]]:
    """A database with the checkpoint tables and a LOGIN role that may not SELECT them."""
    import psycopg
    from langgraph.checkpoint.postgres import PostgresSaver
    from psycopg import sql

    db_url = pg_infra.create_database(pg_url, "t_passwords_no_select")
    with PostgresSaver.from_conn_string(db_url) as saver:
        saver.setup()
    with psycopg.connect(db_url, autocommit=True) as conn:
        conn.execute("DROP ROLE IF EXISTS ckpt_nosel_pw")
        conn.execute(sql.SQL("CREATE ROLE ckpt_nosel_pw LOGIN PASSWORD {}").format(
            sql.Literal(unquote(PASSWORDS[1]))))
    parts = urlsplit(db_url)
    yield str(parts.hostname), int(parts.port or 5432), parts.path.lstrip("/")
    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute("DROP DATABASE IF EXISTS t_passwords_no_select WITH (FORCE)")
        conn.execute("DROP ROLE IF EXISTS ckpt_nosel_pw")


class _AuthMetrics(http.server.BaseHTTPRequestHandler):
    """/metrics behind HTTP Basic auth (admin + the decoded password); records requests."""

    seen: ClassVar[list[tuple[str, str | None]]] = []
    password = ""

    def do_GET(self) -> None:
        auth = self.headers.get("Authorization")
        type(self).seen.append((self.path, auth))
        if self.path == "/redirect":
            self.send_response(302)
            self.send_header("Location", self.headers["X-Next"] or "/metrics")
            self.end_headers()
            return
        want = "Basic " + base64.b64encode(f"admin:{self.password}".encode()).decode()
        if self.password and auth != want:
            self.send_response(401)
            self.send_header("WWW-Authenticate", 'Basic realm="metrics"')
            self.end_headers()
            return
        self.send_response(200)
        self.send_header("Content-Type", "text/plain; version=0.0.4")
        self.end_headers()
        self.wfile.write(METRICS)

    def log_message(self, *args: Any) -> None:
        pass


@contextmanager
def metrics_server(password: str) -> Iterator[tuple[int, list[tuple[str, str | None]]]]:
    handler = type("Handler", (_AuthMetrics,), {"seen": [], "password": password})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server.server_port, handler.seen
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def _run(argv: list[str], cwd: Path, env: dict[str, str] | None = None,
         ) -> subprocess.CompletedProcess[str]:
    full_env = {**os.environ, "PYTHONPATH": str(ROOT), **(env or {})}
    for name in ("DATABASE_URL", "S3_ENDPOINT_URL"):
        if env is None or name not in env:
            full_env.pop(name, None)
    return subprocess.run([sys.executable, "-m", "shared.cli", *argv], cwd=cwd, env=full_env,
                          capture_output=True, text=True, timeout=120)


def _in_process(argv: list[str], env: dict[str, str] | None,
                monkeypatch: pytest.MonkeyPatch) -> subprocess.CompletedProcess[str]:
    """``shared.cli.main`` here, its output captured like a subprocess's."""
    import contextlib
    import io

    from shared.cli import main

    out, err = io.StringIO(), io.StringIO()
    with monkeypatch.context() as m:
        for name, value in (env or {}).items():
            m.setenv(name, value)
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                code = main(argv)
            except SystemExit as exc:  # argparse
                code = int(exc.code or 0)
    return subprocess.CompletedProcess(argv, code, out.getvalue(), err.getvalue())


def test_every_url_entry_point_hides_every_part_of_the_password(
        checkpoint_db: Path, no_select_db: tuple[str, int, str], tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    host, port, dbname = no_select_db
    closed = _free_port()
    before = {p.name: p.read_bytes() for p in checkpoint_db.parent.iterdir()}
    with metrics_server("not-the-password") as (metrics_port, _seen):
        cases: list[tuple[str, str, list[str], dict[str, str] | None]] = []
        for pw in PASSWORDS:
            cases += [
                ("migrate DST unreachable", pw,
                 ["migrate", str(checkpoint_db), f"postgresql://u:{pw}@127.0.0.1:{closed}/db"],
                 None),
                ("migrate SRC unreachable", pw,
                 ["migrate", f"postgresql://u:{pw}@127.0.0.1:{closed}/db",
                  str(tmp_path / f"new-{len(cases)}.sqlite")], None),
                ("verify bad IPv6 bracket", pw,
                 ["verify", str(checkpoint_db), f"postgresql://u:{pw}@[::1/db"], None),
                ("verify role without SELECT", pw,
                 ["verify", str(checkpoint_db),
                  f"postgresql://ckpt_nosel_pw:{pw}@{host}:{port}/{dbname}"], None),
                ("decide unreachable", pw,
                 ["decide", f"http://admin:{pw}@127.0.0.1:{closed}/metrics", "--window", "0.1s"],
                 None),
                ("decide bad IPv6 bracket", pw, ["decide", f"http://admin:{pw}@[::1/metrics"],
                 None),
                ("decide wrong password", pw,
                 ["decide", f"http://admin:{pw}@127.0.0.1:{metrics_port}/metrics",
                  "--window", "0.1s"], None),
                ("prune --gc-s3, S3_ENDPOINT_URL", pw,
                 ["prune", str(checkpoint_db), "--older-than", "1d", "--dry-run", "--gc-s3"],
                 {"S3_ENDPOINT_URL": f"http://key:{pw}@127.0.0.1:{closed}",
                  "AWS_ACCESS_KEY_ID": "key", "AWS_SECRET_ACCESS_KEY": unquote(pw)}),
            ]
        # The real command for the two hardest spellings; in this process for the others.
        real = [c for c in cases if c[1] in PASSWORDS[:2]]
        with ThreadPoolExecutor(max_workers=2) as pool:
            done = dict(zip(map(id, real), pool.map(lambda c: _run(c[2], tmp_path, c[3]),
                                                     real), strict=True))
        results = [done[id(c)] if id(c) in done else _in_process(c[2], c[3], monkeypatch)
                   for c in cases]
    for (name, pw, _argv, _env), out in zip(cases, results, strict=True):
        text = out.stdout + out.stderr
        assert not leaks(text, pw), (name, pw, text)
        assert out.returncode == 2, (name, pw, text)
        assert out.stdout == "" and out.stderr.count("\n") == 1, (name, pw, text)
        assert out.stderr.startswith("ckpt: ") and "Traceback" not in text, (name, text)
        readable = pw in (PASSWORDS[1], PASSWORDS[3])  # well-formed URLs
        assert "USER:PASSWORD@HOST" in out.stderr or "PASSWORD" not in out.stderr
        if name == "verify role without SELECT" and readable:
            assert "permission denied" in out.stderr, out.stderr
        if name == "decide wrong password" and readable:
            assert "HTTP 401" in out.stderr and "user and password" in out.stderr, out.stderr
    after = {p.name: p.read_bytes() for p in checkpoint_db.parent.iterdir()}
    assert after == before
    assert not list(tmp_path.glob("new-*.sqlite"))  # a bad source creates no destination


def test_database_url_users_hide_the_password(monkeypatch: pytest.MonkeyPatch) -> None:
    closed = _free_port()
    for pw in PASSWORDS:
        for url in (f"postgresql://u:{pw}@[::1/db", f"mysql://u:{pw}@h/db",
                    f"postgresql://u:{pw}@127.0.0.1:99999/db"):
            monkeypatch.setenv("DATABASE_URL", url)
            with pytest.raises(CheckpointError) as err, pg_infra.postgres_server():
                pass
            assert not leaks(str(err.value), pw), (url, err.value)
            assert "***" in str(err.value)
    # A well-formed URL to a closed port: the driver's reason goes through redact.
    pw = PASSWORDS[1]
    monkeypatch.setenv("DATABASE_URL", f"postgresql://u:{pw}@127.0.0.1:{closed}/db")
    with pytest.raises(CheckpointError) as err, pg_infra.postgres_server():
        pass
    assert "Could not connect" in str(err.value) and not leaks(str(err.value), pw)


# --- a /metrics URL with credentials works ----------------------------------------------------

def test_scrape_sends_url_credentials_as_basic_auth() -> None:
    for pw in (PASSWORDS[1], PASSWORDS[3], "plain-Secret9"):
        decoded = unquote(pw)
        with metrics_server(decoded) as (port, seen):
            samples = scrape(f"http://admin:{pw}@127.0.0.1:{port}/metrics")
            assert samples[("ckpt_writes_total", (("backend", "sqlite"),))] == 3
            path, auth = seen[-1]
            assert path == "/metrics" and not leaks(path, pw)  # not in the request line
            assert auth == "Basic " + base64.b64encode(f"admin:{decoded}".encode()).decode()
            with pytest.raises(CheckpointError) as refused:
                scrape(f"http://admin:wrong-Pass1@127.0.0.1:{port}/metrics")
            assert "HTTP 401" in str(refused.value) and "wrong-Pass1" not in str(refused.value)


def test_basic_auth_is_not_forwarded_on_a_redirect() -> None:
    """A redirect to another host must not carry the Authorization header there."""
    import urllib.request

    from shared.ops.metrics import metrics_request

    with metrics_server("") as (other_port, other_seen), metrics_server("") as (port, seen):
        request = metrics_request(f"http://admin:{PASSWORDS[1]}@127.0.0.1:{port}/redirect")
        request.add_header("X-Next", f"http://127.0.0.1:{other_port}/metrics")
        with urllib.request.urlopen(request, timeout=5) as response:
            assert response.read() == METRICS
        assert seen[-1][1] is not None  # sent to the host in the URL ...
        assert other_seen == [("/metrics", None)]  # ... but not to the one it redirected to


def test_decide_with_credentials_in_the_metrics_url(capsys: pytest.CaptureFixture[str]) -> None:
    from shared.cli import main

    pw = PASSWORDS[1]
    with metrics_server(unquote(pw)) as (port, seen):
        code = main(["decide", f"http://admin:{pw}@127.0.0.1:{port}/metrics", "--window",
                     "0.1s", "--json"])
    out, err = capsys.readouterr()
    assert code == 0, err
    assert len(seen) == 2 and all(auth for _path, auth in seen)  # two scrapes, both authorised
    assert '"http://admin:***@127.0.0.1' in out and not leaks(out + err, pw)


def test_sqlite_error_leaves_no_password_in_run_command(tmp_path: Path,
                                                        capsys: pytest.CaptureFixture[str]
                                                        ) -> None:
    """Defence in depth: a message that quotes a URL argument is scrubbed by run_command."""
    from types import SimpleNamespace

    from shared.errors import run_command

    url = f"postgresql://u:{RAW}@h/db"

    def boom(args: Any) -> int:
        raise sqlite3.OperationalError(f"cannot open {url} ({RAW.split('@')[1]})")

    assert run_command(boom, SimpleNamespace(dst=url)) == 2
    err = capsys.readouterr().err
    assert err.startswith("ckpt: SQLite failed") and not leaks(err, RAW), err


def test_usage_errors_mask_an_echoed_url() -> None:
    """argparse repeats a bad value; a URL there is masked like everywhere else."""
    for argv in (["postgresql://u:Echo-Pw7@h/db"], ["inspect", "x", "--largest",
                                                     "http://a:Echo-Pw7@h/metrics"],
                 ["inspect", "x", "--largest", "password=Echo-Pw7"]):
        out = _run(argv, ROOT)
        assert out.returncode == 2 and out.stderr.count("\n") == 1, out.stderr
        assert not leaks(out.stderr, "Echo-Pw7") and "***" in out.stderr, out.stderr
