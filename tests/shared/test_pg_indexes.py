"""shared/ops/pg_indexes.py, `ckpt pg indexes`: idempotent, dry run, INVALID rebuilt, refusals."""

from __future__ import annotations

import json
from urllib.parse import urlsplit, urlunsplit

import psycopg
import pytest

from shared.cli import main as ckpt
from shared.errors import CheckpointError
from shared.ops.pg_indexes import METADATA_GIN, apply_indexes, drop_indexes, index_sql
from shared.savers import open_postgres_saver

SECRET = "s3cret-pw-idx"


def _indexes(url: str) -> dict[str, bool]:
    with psycopg.connect(url) as conn:
        return dict(conn.execute(
            "SELECT c.relname, i.indisvalid FROM pg_index i JOIN pg_class c ON c.oid = "
            "i.indexrelid WHERE i.indrelid = 'checkpoints'::regclass").fetchall())


@pytest.fixture
def ready(pg_db: str) -> str:
    with open_postgres_saver(pg_db, setup=True) as saver:
        saver.put({"configurable": {"thread_id": "t", "checkpoint_ns": ""}},
                  {"v": 4, "id": "1f0", "ts": "", "channel_values": {}, "channel_versions": {},
                   "versions_seen": {}}, {"user_id": "u1"}, {})
    return pg_db


def test_dry_run_changes_nothing_then_apply_is_idempotent(ready: str, capsys) -> None:
    before = _indexes(ready)
    planned = apply_indexes(ready, dry_run=True)
    assert [r.action for r in planned] == ["would create"]
    assert planned[0].sql == index_sql()
    assert "CREATE INDEX CONCURRENTLY IF NOT EXISTS" in planned[0].sql[0]
    assert "jsonb_path_ops" in planned[0].sql[0]
    assert _indexes(ready) == before
    assert ckpt(["pg", "indexes", ready, "--dry-run"]) == 0
    assert "would run:" in capsys.readouterr().out
    assert _indexes(ready) == before
    first = apply_indexes(ready)
    assert [r.action for r in first] == ["created"] and first[0].bytes > 0
    assert _indexes(ready)[METADATA_GIN.name] is True
    second = apply_indexes(ready)
    assert [(r.action, r.sql) for r in second] == [("kept", [])]
    assert ckpt(["pg", "indexes", ready, "--apply", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["indexes"][0]["action"] == "kept"
    assert [r.action for r in drop_indexes(ready)] == ["dropped"]
    assert METADATA_GIN.name not in _indexes(ready)
    assert [r.action for r in drop_indexes(ready)] == ["absent"]


def test_invalid_index_is_rebuilt(ready: str) -> None:
    with psycopg.connect(ready, autocommit=True) as conn:
        # What an interrupted CREATE INDEX CONCURRENTLY leaves: an INVALID index. A unique
        # index over duplicate keys fails the same way, for real.
        conn.execute("INSERT INTO checkpoints (thread_id, checkpoint_ns, checkpoint_id, "
                     "checkpoint, metadata) VALUES ('t2', '', '1f0', '{}', '{}')")
        with pytest.raises(psycopg.errors.UniqueViolation):
            conn.execute(f"CREATE UNIQUE INDEX CONCURRENTLY {METADATA_GIN.name} "
                         "ON checkpoints (checkpoint_id)")
    assert _indexes(ready)[METADATA_GIN.name] is False
    assert [r.action for r in apply_indexes(ready, dry_run=True)] == ["would rebuild"]
    result = apply_indexes(ready)
    assert (result[0].state, result[0].action) == ("invalid", "rebuilt")
    assert result[0].sql[0].startswith("DROP INDEX CONCURRENTLY IF EXISTS")
    assert _indexes(ready)[METADATA_GIN.name] is True
    with psycopg.connect(ready) as conn:
        method = conn.execute("SELECT am.amname FROM pg_class c JOIN pg_am am ON am.oid = "
                              "c.relam WHERE c.relname = %s", (METADATA_GIN.name,)).fetchone()
    assert method == ("gin",)


def test_role_without_permission_is_refused(ready: str, capsys) -> None:
    name = urlsplit(ready).path.lstrip("/")
    role = "ckpt_idx_reader"
    with psycopg.connect(ready, autocommit=True) as conn:
        conn.execute(f"DROP OWNED BY {role}") if conn.execute(
            "SELECT 1 FROM pg_roles WHERE rolname = %s", (role,)).fetchone() else None
        conn.execute(f"DROP ROLE IF EXISTS {role}")
        conn.execute(f"CREATE ROLE {role} LOGIN PASSWORD '{SECRET}'")
        conn.execute(f"GRANT CONNECT ON DATABASE {name} TO {role}")
        conn.execute(f"GRANT USAGE ON SCHEMA public TO {role}")
        conn.execute(f"GRANT SELECT ON ALL TABLES IN SCHEMA public TO {role}")
    parts = urlsplit(ready)
    reader = urlunsplit(parts._replace(netloc=f"{role}:{SECRET}@{parts.hostname}:{parts.port}"))
    before = _indexes(ready)
    try:
        with pytest.raises(CheckpointError, match=f"Role '{role}' may not create indexes on "
                           "checkpoints") as err:
            apply_indexes(reader)
        assert "nothing was changed" in str(err.value)
        assert ckpt(["pg", "indexes", reader, "--apply"]) == 2
        msg = capsys.readouterr().err
        assert "may not create indexes" in msg and SECRET not in msg
        assert len(msg.strip().splitlines()) == 1
        assert _indexes(ready) == before
    finally:
        with psycopg.connect(ready, autocommit=True) as conn:
            conn.execute(f"DROP OWNED BY {role}")
            conn.execute(f"DROP ROLE {role}")


def test_database_without_tables(pg_db: str, capsys) -> None:
    with pytest.raises(CheckpointError, match="has no LangGraph checkpoint tables"):
        apply_indexes(pg_db)
    assert ckpt(["pg", "indexes", pg_db]) == 2
    assert "PostgresSaver.setup()" in capsys.readouterr().err
    with psycopg.connect(pg_db) as conn:
        assert conn.execute("SELECT count(*) FROM pg_class WHERE relname = %s",
                            (METADATA_GIN.name,)).fetchone()[0] == 0


def test_wrong_credentials_masked(pg_url: str, capsys) -> None:
    parts = urlsplit(pg_url)
    bad = urlunsplit(parts._replace(netloc=f"nobody_here:{SECRET}@{parts.hostname}:{parts.port}",
                                    path="/postgres"))
    with pytest.raises(CheckpointError, match="Could not connect to PostgreSQL") as err:
        apply_indexes(bad)
    assert SECRET not in str(err.value) and "***" in str(err.value)
    assert ckpt(["pg", "indexes", bad, "--apply"]) == 2
    msg = capsys.readouterr().err
    assert SECRET not in msg and len(msg.strip().splitlines()) == 1
    assert ckpt(["pg", "indexes", "mysql://x@h/db"]) == 2
    assert "not a PostgreSQL URL" in capsys.readouterr().err


def test_help_and_exclusive_modes(capsys) -> None:
    with pytest.raises(SystemExit) as done:
        ckpt(["pg", "indexes", "--help"])
    assert done.value.code == 0
    assert "CONCURRENTLY" in capsys.readouterr().out
    with pytest.raises(SystemExit) as done:
        ckpt(["pg", "indexes", "postgresql://h/db", "--apply", "--dry-run"])
    assert done.value.code == 2
