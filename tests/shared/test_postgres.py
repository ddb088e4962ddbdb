"""shared/infra/postgres.py: a real PostgreSQL, reached over TCP from other processes."""

from __future__ import annotations

import subprocess
import sys
from urllib.parse import urlsplit, urlunsplit

import psycopg
import pytest
from langgraph.checkpoint.postgres import PostgresSaver

from shared.errors import CheckpointError
from shared.infra.postgres import bin_dir, check_url, mask_url, postgres_server, wait_until_ready


def test_server_answers_over_tcp_from_another_process(pg_url: str) -> None:
    import os
    if not os.environ.get("DATABASE_URL"):
        assert "@127.0.0.1:" in pg_url  # the embedded server listens on loopback TCP
    code = ("import psycopg, sys; c = psycopg.connect(sys.argv[1]); "
            "print(c.execute('select 40 + 2').fetchone()[0])")
    out = subprocess.run([sys.executable, "-c", code, pg_url], capture_output=True, text=True,
                         timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "42"


def test_bundled_psql(pg_url: str) -> None:
    from urllib.parse import urlsplit

    parts = urlsplit(pg_url)
    out = subprocess.run([str(bin_dir() / "psql"), "-X", "-A", "-t", "-c", "select 1",
                          pg_url], capture_output=True, text=True, timeout=60,
                         env={"PATH": "/usr/bin:/bin", "PGCONNECT_TIMEOUT": "5"})
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "1"
    assert parts.scheme.startswith("postgres")


_databases: dict[str, tuple[str, int]] = {}  # test case -> (its database's name, oid)

# Two test cases whose names agree for longer than a database name may be (63 bytes).
_LONG = "a_test_name_long_enough_that_a_database_named_after_it_is_cut_short_"


@pytest.mark.parametrize("case", [_LONG + "first", _LONG + "second"])
def test_each_test_gets_its_own_database(pg_db: str, pg_url: str, case: str) -> None:
    with psycopg.connect(pg_db, autocommit=True) as conn:
        name, oid = conn.execute("SELECT current_database(), oid FROM pg_database "
                                 "WHERE datname = current_database()").fetchone()
        # a fresh database: nothing an earlier test (or an earlier run) left behind
        assert conn.execute("SELECT count(*) FROM pg_tables WHERE schemaname = 'public'"
                            ).fetchone() == (0,)
        conn.execute("CREATE TABLE marker (test text)")
        conn.execute("INSERT INTO marker VALUES (%s)", (case,))
    assert urlsplit(pg_url).path != f"/{name}"  # not the server's own database
    with psycopg.connect(pg_url) as conn:  # the marker is in the test's database only
        assert conn.execute("SELECT to_regclass('public.marker')").fetchone() == (None,)
    for other, (other_name, other_oid) in _databases.items():
        assert name != other_name and oid != other_oid, (case, other)
        other_url = urlunsplit(urlsplit(pg_url)._replace(path=f"/{other_name}"))
        with psycopg.connect(other_url) as conn:  # still there, with its own row, not ours
            assert conn.execute("SELECT test FROM marker").fetchall() == [(other,)]
    if case.endswith("second") and not _databases:
        pytest.skip("run with the [...first] case: the comparison needs both")
    _databases[case] = (name, oid)
    with PostgresSaver.from_conn_string(pg_db) as saver:  # and the saver's tables go there
        saver.setup()
        tables = {r["tablename"] for r in saver.conn.execute(
            "SELECT tablename FROM pg_tables WHERE schemaname = 'public'")}
    assert {"checkpoints", "checkpoint_blobs", "checkpoint_writes", "marker"} <= tables


def test_password_is_masked() -> None:
    assert mask_url("postgresql://u:s3cret@h:5432/db") == "postgresql://u:***@h:5432/db"
    assert mask_url("postgresql://u@h/db") == "postgresql://u@h/db"


@pytest.mark.parametrize("url", ["mysql://u:s3cret@h/db", "not a url", "postgresql:///db",
                                 "postgres://u:s3cret@[::1/db", "postgres://u:s3cret@h:port/db"])
def test_bad_url_is_refused_masked(url: str) -> None:
    with pytest.raises(CheckpointError, match=r"is not a (valid )?PostgreSQL URL") as err:
        check_url(url)
    assert "s3cret" not in str(err.value)
    assert "\n" not in str(err.value)


def test_unreachable_server_message_masks_password() -> None:
    url = "postgresql://user:s3cret@127.0.0.1:1/db"
    with pytest.raises(CheckpointError, match="Could not connect") as err:
        wait_until_ready(url, timeout=1)
    assert "s3cret" not in str(err.value) and "***" in str(err.value)
    assert "\n" not in str(err.value)  # one line


def test_database_url_from_environment_is_used(monkeypatch: pytest.MonkeyPatch,
                                               pg_url: str) -> None:
    monkeypatch.setenv("DATABASE_URL", pg_url)
    with postgres_server() as url:
        assert url == pg_url
        with psycopg.connect(url) as conn:
            assert conn.execute("select 1").fetchone() == (1,)
