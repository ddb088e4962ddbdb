"""shared/infra/standby.py: a streaming standby, promotion, rebuild; multi-host URLs.

Real servers (two embedded PostgreSQL, synchronous replication), no mocks: a row written on
the primary is read on the standby, the standby is promoted after a SIGKILL of the primary,
the old primary comes back as a standby on its old port, and the one multi-host URL follows.
"""

from __future__ import annotations

from pathlib import Path

import psycopg
import pytest

from shared.errors import CheckpointError
from shared.infra import standby as sb
from shared.infra.postgres import check_url, embedded_postgres
from shared.infra.urls import mask_url, redact

MULTI = "postgresql://app:s3cret@127.0.0.1:5432,db2.internal:5433/agents?target_session_attrs=read-write"


# --- multi-host URLs ---------------------------------------------------------------------------

@pytest.mark.parametrize("url", [
    MULTI,
    "postgres://app@127.0.0.1:5432,127.0.0.1:5433/agents",
    "postgresql://app:s3cret@[::1]:5432,[::1]:5433/agents",
    "postgresql://h1,h2,h3/agents",  # default ports
])
def test_check_url_accepts_a_host_list(url: str) -> None:
    assert check_url(url) == url


@pytest.mark.parametrize("url", [
    "postgresql://app:s3cret@127.0.0.1:5432,127.0.0.1:port/agents",  # a port that is no number
    "postgresql://app:s3cret@127.0.0.1:5432,[::1:5433/agents",  # an unclosed IPv6 bracket
    "mysql://app:s3cret@h1:3306,h2:3306/agents",
])
def test_check_url_refuses_a_bad_host_list_masked(url: str) -> None:
    with pytest.raises(CheckpointError, match=r"is not a (valid )?PostgreSQL URL") as err:
        check_url(url)
    assert "s3cret" not in str(err.value) and "\n" not in str(err.value)


def test_mask_url_and_redact_mask_a_host_list() -> None:
    masked = ("postgresql://app:***@127.0.0.1:5432,db2.internal:5433/agents"
              "?target_session_attrs=read-write")
    assert mask_url(MULTI) == masked
    assert mask_url("postgresql://app:p@ss@h1:1,h2:2/db") == "postgresql://app:***@h1:1,h2:2/db"
    assert "s3cret" not in redact(f"failed: {MULTI} (s3cret)", MULTI)


def test_multi_host_url_lists_every_server_and_asks_for_writes(tmp_path: Path) -> None:
    class Fake:
        def __init__(self, port: int) -> None:
            self.port = port
    url = sb.multi_host_url(Fake(5001), Fake(5002))  # type: ignore[arg-type]
    assert url == ("postgresql://postgres@127.0.0.1:5001,127.0.0.1:5002/postgres"
                   "?target_session_attrs=read-write")
    assert check_url(url) == url


def test_base_backup_refuses_a_data_directory_in_use(tmp_path: Path) -> None:
    (tmp_path / "pg").mkdir()
    (tmp_path / "pg" / "PG_VERSION").write_text("18\n")
    with pytest.raises(CheckpointError, match="not empty"):
        sb.base_backup(None, tmp_path / "pg")  # type: ignore[arg-type]  # refused before use
    assert (tmp_path / "pg" / "PG_VERSION").read_text() == "18\n"  # nothing overwritten


# --- a standby that streams, is promoted, and a rebuilt old primary -----------------------------

def test_standby_streams_promotes_and_the_old_primary_is_rebuilt(tmp_path: Path) -> None:
    settings = sb.replication_settings(synchronous=True)
    with embedded_postgres(tmp_path / "a", settings) as a, \
            sb.start_standby(a, tmp_path / "b", settings) as b:
        assert sb.show_settings(a) == {"role": "primary", "fsync": "on",
                                       "synchronous_commit": "on",
                                       "synchronous_standby_names": "*"}
        assert sb.show_settings(b)["role"] == "standby"
        url = sb.multi_host_url(a, b)
        with psycopg.connect(url, autocommit=True) as conn:  # the primary, by read-write
            assert conn.info.port == a.port
            conn.execute("CREATE TABLE t (x int)")
            conn.execute("INSERT INTO t VALUES (1)")  # synchronous: on b once it returns
        lag = sb.replication_lag(a.url)
        assert lag.standbys == 1 and lag.sync_states == ("sync",)
        assert lag.flush_bytes == 0 and lag.replay_bytes >= 0
        sb.wait_replayed(a, b)
        with psycopg.connect(b.url) as conn:  # a read served by the standby
            assert conn.execute("SELECT pg_is_in_recovery()").fetchone() == (True,)
            assert conn.execute("SELECT x FROM t").fetchall() == [(1,)]
        with pytest.raises(CheckpointError, match=r"standbys \(read-only\)"):
            sb.require_primary(sb.multi_host_url(b))

        with pytest.raises(CheckpointError, match="promote the standby first"):
            sb.rebuild_standby(a, b)  # b is still a standby: a's data is not touched
        assert sb.is_primary(a)
        old_port = a.port
        a.kill()  # SIGKILL the primary
        assert sb.promote(b) >= 0 and sb.is_primary(b)
        assert sb.commit_waits(b, wait_s=0.2)  # '*' and no standby: a commit waits
        rebuilt = sb.rebuild_standby(a, b)
        assert rebuilt.streaming >= rebuilt.backup_done
        assert a.port == old_port and sb.show_settings(a)["role"] == "standby"
        assert sb.replication_lag(b.url).standbys == 1
        assert not sb.commit_waits(b, wait_s=2)  # a standby again: commits go through
        assert sb.require_primary(url) == url
        with psycopg.connect(url, autocommit=True) as conn:  # the same URL finds b
            assert conn.info.port == b.port
            conn.execute("INSERT INTO t VALUES (2)")
        sb.wait_replayed(b, a)
        with psycopg.connect(a.url) as conn:
            assert conn.execute("SELECT x FROM t ORDER BY x").fetchall() == [(1,), (2,)]
    with pytest.raises(CheckpointError, match="connection refused") as err:
        sb.require_primary(url.replace("postgres@", "app:s3cret@"), timeout=1)
    assert "s3cret" not in str(err.value) and "\n" not in str(err.value)


def test_asynchronous_settings_do_not_wait(tmp_path: Path) -> None:
    settings = sb.replication_settings(synchronous=False)
    assert settings["synchronous_standby_names"] == "" and settings["fsync"] == "on"
    with embedded_postgres(tmp_path / "a", settings) as a:
        assert not sb.commit_waits(a, wait_s=2)  # no standby, and none is waited for
