"""shared/infra/postgres.py: a real PostgreSQL, reached over TCP from other processes."""

from __future__ import annotations

import subprocess
import sys

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


def test_each_test_gets_its_own_database(pg_db: str) -> None:
    with PostgresSaver.from_conn_string(pg_db) as saver:
        saver.setup()
        tables = {r["tablename"] for r in saver.conn.execute(
            "SELECT tablename FROM pg_tables WHERE schemaname = 'public'")}
    assert {"checkpoints", "checkpoint_blobs", "checkpoint_writes"} <= tables


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
