"""Opening LangGraph's ``SqliteSaver`` safely, and reading what it stored.

``SqliteSaver.from_conn_string`` is a context manager; called on a path whose directory is
missing or read-only it fails deep inside ``sqlite3`` with "unable to open database file".
``open_sqlite_saver`` checks the location first and says what is wrong and how to fix it,
without creating anything on the way.
"""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Iterator
from contextlib import closing, contextmanager
from pathlib import Path

from langgraph.checkpoint.serde.base import SerializerProtocol
from langgraph.checkpoint.sqlite import SqliteSaver

from shared.errors import CheckpointError, DatabaseLocationError
from shared.savers.serde import graph_serde


def check_database_location(path: str | Path) -> Path:
    """Refuse a path whose directory is missing, is not a directory, or is not writable."""
    path = Path(path).expanduser()
    parent = path.parent.resolve()
    if path.is_dir():
        raise DatabaseLocationError(
            f"{path} is a directory, not a database file: give a file path such as "
            f"{path / 'checkpoints.sqlite'}.")
    if not parent.exists():
        raise DatabaseLocationError(
            f"The directory {parent} for the SQLite database does not exist: create it "
            f"(mkdir -p {parent}) or choose a path in an existing directory.")
    if not parent.is_dir():
        raise DatabaseLocationError(
            f"{parent} is a file, not a directory, so {path.name} cannot be created in it: "
            "choose a path in a directory.")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise DatabaseLocationError(
            f"The directory {parent} is not writable by this user, and SQLite needs to write "
            "the database and its -wal and -shm files there: choose a writable directory or "
            "fix its permissions.")
    return path


def require_checkpoint_tables(conn: sqlite3.Connection, path: Path, tables: set[str],
                              ) -> sqlite3.Connection:
    """``conn`` if its database has SqliteSaver's tables; else close it and say so."""
    if not {"checkpoints", "writes"} <= tables:
        conn.close()
        raise DatabaseLocationError(f"{path} has no LangGraph checkpoint tables: it was not "
                                    "written by SqliteSaver, or setup() never ran on it.")
    return conn


def _location_error(path: Path, exc: sqlite3.Error) -> DatabaseLocationError:
    return DatabaseLocationError(
        f"SQLite could not open or write {path} ({exc}): check that its directory is writable "
        "and on a local disk, or choose another path.")


@contextmanager
def open_sqlite_saver(path: str | Path, *, serde: SerializerProtocol | None = None,
                      busy_timeout_ms: int | None = None,
                      saver_class: type[SqliteSaver] = SqliteSaver) -> Iterator[SqliteSaver]:
    """A set-up ``SqliteSaver`` (or ``saver_class``) on ``path``, closed on exit.

    The location is checked before ``sqlite3.connect`` so a bad path creates nothing.
    ``serde`` defaults to ``graph_serde()``: only allowlisted types are ever built on load.
    """
    path = check_database_location(path)
    try:
        conn = sqlite3.connect(path, check_same_thread=False)
    except sqlite3.Error as exc:
        raise _location_error(path, exc) from exc
    with closing(conn):
        if busy_timeout_ms is not None:
            conn.execute(f"PRAGMA busy_timeout = {int(busy_timeout_ms)}")
        saver = saver_class(conn, serde=serde or graph_serde())
        try:
            saver.setup()
        except sqlite3.OperationalError as exc:
            raise _location_error(path, exc) from exc
        yield saver


def sqlite_schema(conn: sqlite3.Connection) -> dict[str, list[tuple[str, str, bool, int]]]:
    """Every table and its columns as ``(name, type, not_null, primary_key_position)``."""
    tables = [r[0] for r in conn.execute(
        "SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name")]
    schema: dict[str, list[tuple[str, str, bool, int]]] = {}
    for table in tables:
        # PRAGMA takes no parameters: the name is quoted as an identifier (" doubled), so
        # any name sqlite_master holds works, quotes of both kinds included.
        quoted = '"' + table.replace('"', '""') + '"'
        rows = conn.execute(f"PRAGMA table_info({quoted})").fetchall()
        schema[table] = [(r[1], r[2], bool(r[3]), r[5]) for r in rows]
    return schema


# Every column of the saver's two tables; length() of TEXT counts characters, of BLOB bytes.
_TABLE_COLUMNS = {
    "checkpoints": ("thread_id", "checkpoint_ns", "checkpoint_id", "parent_checkpoint_id",
                    "type", "checkpoint", "metadata"),
    "writes": ("thread_id", "checkpoint_ns", "checkpoint_id", "task_id", "task_path", "idx",
               "channel", "type", "value"),
}


def table_bytes(conn: sqlite3.Connection, thread_id: str | None = None,
                ) -> dict[str, dict[str, int]]:
    """Rows, payload bytes and largest row of ``checkpoints`` and ``writes`` (one thread or all).

    Bytes are summed over every column of every row, read from the database itself.
    """
    out = {}
    for table, columns in _TABLE_COLUMNS.items():
        present = {r[1] for r in conn.execute(f"PRAGMA table_info({table})")}
        size = " + ".join(f"coalesce(length(CAST({c} AS BLOB)), 0)"
                          for c in columns if c in present)
        where, args = ("WHERE thread_id = ?", (thread_id,)) if thread_id is not None else ("", ())
        # Identifiers come from _TABLE_COLUMNS above, never from the caller.
        sql = (f"SELECT count(*), coalesce(sum({size}), 0), coalesce(max({size}), 0) "  # noqa: S608
               f"FROM {table} {where}")
        rows, total, largest = conn.execute(sql, args).fetchone()
        out[table] = {"rows": rows, "bytes": total, "largest_row": largest}
    return out


def stored_bytes(conn: sqlite3.Connection, thread_id: str | None = None) -> int:
    """Bytes in every column of every row of ``checkpoints`` and ``writes``."""
    return sum(t["bytes"] for t in table_bytes(conn, thread_id).values())


def row_counts(conn: sqlite3.Connection, thread_id: str | None = None) -> tuple[int, int]:
    """How many ``checkpoints`` rows and ``writes`` rows there are (for a thread, or all)."""
    tables = table_bytes(conn, thread_id)
    return tables["checkpoints"]["rows"], tables["writes"]["rows"]


def largest_row_bytes(conn: sqlite3.Connection, table: str = "checkpoints") -> int:
    """The size in bytes of the largest row of ``table`` (``checkpoints`` or ``writes``)."""
    return table_bytes(conn)[table]["largest_row"]


def file_bytes(path: str | Path, fold_wal: bool = False) -> int:
    """Bytes on disk of the database with its -wal and -shm files.

    ``fold_wal`` first runs ``PRAGMA wal_checkpoint(TRUNCATE)``, so the figure is the
    database's own size, not how much WAL happens to be waiting.
    """
    path = Path(path)
    if fold_wal:
        conn = sqlite3.connect(path)
        try:
            conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        finally:
            conn.close()
    return sum(p.stat().st_size for p in (path, Path(f"{path}-wal"), Path(f"{path}-shm"))
               if p.exists())


def largest_checkpoints(conn: sqlite3.Connection, limit: int = 5) -> list[dict[str, object]]:
    """The biggest checkpoint rows, with the writes stored against them.

    ``limit`` must be 0 or more: SQLite reads a negative LIMIT as "no limit".
    """
    if isinstance(limit, bool) or not isinstance(limit, int) or not 0 <= limit < 2**63:
        raise CheckpointError(f"The number of largest checkpoints {limit!r} must be a whole "
                              "number of 0 or more, such as 5.")
    rows = conn.execute(
        """
        SELECT c.thread_id, c.checkpoint_id, length(c.checkpoint) + length(c.metadata),
               (SELECT coalesce(sum(length(w.value)), 0) FROM writes w
                WHERE w.thread_id = c.thread_id AND w.checkpoint_ns = c.checkpoint_ns
                  AND w.checkpoint_id = c.checkpoint_id)
        FROM checkpoints c ORDER BY length(c.checkpoint) + length(c.metadata) DESC LIMIT ?
        """, (limit,)).fetchall()
    return [{"thread_id": r[0], "checkpoint_id": r[1], "checkpoint_bytes": r[2],
             "writes_bytes": r[3]} for r in rows]
