"""The indexes LangGraph's ``PostgresSaver`` queries need beyond what ``setup()`` creates.

What each saver call runs (``langgraph/checkpoint/postgres/base.py``) and what serves it:

- ``get_tuple`` (latest of a thread): ``WHERE thread_id = %s AND checkpoint_ns = %s ORDER BY
  checkpoint_id DESC LIMIT 1``: the primary key (thread_id, checkpoint_ns, checkpoint_id),
  read backwards. No index can do better.
- ``list(config, before=..., limit=...)`` (a history page): ``... AND checkpoint_id < %s
  ORDER BY checkpoint_id DESC LIMIT %s``: the same primary key, or ``setup()``'s
  ``checkpoints_thread_id_idx`` and a sort of that one thread's rows (the planner's choice).
- pending writes and channel values of a checkpoint (subqueries of every read): the primary
  keys of ``checkpoint_writes`` and ``checkpoint_blobs``.
- ``list(None, filter={...}, limit=...)`` across threads: ``WHERE metadata @> %s ORDER BY
  checkpoint_id DESC``: nothing serves it; every row of ``checkpoints`` is read. A GIN index
  with ``jsonb_path_ops`` answers ``@>`` (and only ``@>``, which is all the saver asks), at a
  fraction of the size of the default ``jsonb_ops``. An expression index on
  ``(metadata->>'user_id')`` would not be used: the saver never writes ``->>``.

``apply_indexes(url)`` builds them with ``CREATE INDEX CONCURRENTLY IF NOT EXISTS`` (writers
keep writing; autocommit, as CONCURRENTLY requires), idempotently: a valid index is left
alone, an INVALID one (a concurrent build that was interrupted) is dropped concurrently and
built again. Every check (connection, tables, ownership) runs before anything is changed.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from typing import Any

import psycopg
from psycopg import sql

from shared.errors import CheckpointError
from shared.infra.postgres import check_url
from shared.infra.urls import mask_url, redact

TABLES = ("checkpoints", "checkpoint_blobs", "checkpoint_writes")


@dataclass(frozen=True)
class IndexSpec:
    name: str
    table: str
    method: str  # USING ...
    columns: str  # the indexed expression(s), from constants only
    serves: str  # the saver call it is for


METADATA_GIN = IndexSpec(
    "checkpoints_metadata_gin_idx", "checkpoints", "gin", "metadata jsonb_path_ops",
    "list(None, filter={...}) across threads: metadata @> %s")
INDEXES: tuple[IndexSpec, ...] = (METADATA_GIN,)
# Where setup()'s own indexes already serve, for reports: (saver call, what serves it; the
# planner picks between the primary key and the thread_id index, both start with thread_id).
SERVED_BY_SETUP = (
    ("get_tuple (latest of a thread)", "checkpoints_pkey"),
    ("list(config, before=..., limit=...)", "checkpoints_pkey or checkpoints_thread_id_idx"),
    ("pending writes of a checkpoint", "checkpoint_writes_pkey"),
    ("channel values of a checkpoint", "checkpoint_blobs_pkey"),
)


@dataclass
class IndexResult:
    name: str
    table: str
    serves: str
    state: str  # before: missing, valid, invalid
    action: str  # created, rebuilt, kept, dropped, absent, would create, would rebuild, ...
    sql: list[str]
    bytes: int | None = None  # pg_relation_size after the run (None when it does not exist)
    seconds: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def create_sql(spec: IndexSpec) -> sql.Composed:
    return sql.SQL("CREATE INDEX CONCURRENTLY IF NOT EXISTS {} ON {} USING {} ({})").format(
        sql.Identifier(spec.name), sql.Identifier(spec.table), sql.SQL(spec.method),
        sql.SQL(spec.columns))


def drop_sql(spec: IndexSpec) -> sql.Composed:
    return sql.SQL("DROP INDEX CONCURRENTLY IF EXISTS {}").format(sql.Identifier(spec.name))


def index_sql() -> list[str]:
    """The statements that build every index on a database that has none of them (for a
    runbook; ``apply_indexes(url, dry_run=True)`` says which of them a given database needs)."""
    return [create_sql(s).as_string(None) for s in INDEXES]


# --- checks: before anything is changed -----------------------------------------------------

def connect(url: str) -> psycopg.Connection[Any]:
    """An autocommit connection, or one sentence (password masked) on why there is none."""
    check_url(url)
    try:
        return psycopg.connect(url, autocommit=True, connect_timeout=10)
    except psycopg.Error as exc:
        reason = redact(" ".join(str(exc).split()), url) or type(exc).__name__
        raise CheckpointError(f"Could not connect to PostgreSQL at {mask_url(url)} ({reason}): "
                              "check the URL, the user and password, and that the server "
                              "runs; nothing was changed.") from None


def _check_tables(conn: psycopg.Connection[Any], url: str) -> None:
    missing = [t for t in TABLES
               if conn.execute("SELECT to_regclass(%s)", (t,)).fetchone()[0] is None]
    if missing:
        raise CheckpointError(
            f"{mask_url(url)} has no LangGraph checkpoint tables ({', '.join(missing)} missing "
            "from the search path): point at the database your PostgresSaver uses, or run "
            "PostgresSaver.setup() there first; nothing was changed.")


def _check_owner(conn: psycopg.Connection[Any], specs: tuple[IndexSpec, ...]) -> None:
    """CREATE/DROP INDEX need the table's owner (or a member of its role)."""
    for table in sorted({s.table for s in specs}):
        user, owner, may = conn.execute(
            "SELECT current_user, pg_get_userbyid(c.relowner), "
            "pg_has_role(current_user, c.relowner, 'USAGE') FROM pg_class c "
            "WHERE c.oid = to_regclass(%s)", (table,)).fetchone()
        if not may:
            raise CheckpointError(
                f"Role {user!r} may not create indexes on {table} (owned by {owner!r}): run "
                f"ckpt pg indexes as {owner!r} or a member of it (the role that ran setup()); "
                "nothing was changed.")


def _state(conn: psycopg.Connection[Any], spec: IndexSpec) -> tuple[str, int | None]:
    row = conn.execute(
        "SELECT i.indisvalid, pg_relation_size(i.indexrelid) FROM pg_index i "
        "JOIN pg_class c ON c.oid = i.indexrelid "
        "WHERE i.indrelid = to_regclass(%s) AND c.relname = %s", (spec.table, spec.name)).fetchone()
    if row is None:
        return "missing", None
    return ("valid" if row[0] else "invalid"), row[1]


def _checked(url: str) -> psycopg.Connection[Any]:
    conn = connect(url)
    try:
        _check_tables(conn, url)
        _check_owner(conn, INDEXES)
    except BaseException:
        conn.close()
        raise
    return conn


def _run(conn: psycopg.Connection[Any], statements: list[sql.Composed], url: str) -> None:
    for statement in statements:
        try:
            conn.execute(statement)
        except psycopg.errors.InsufficientPrivilege as exc:
            reason = redact(" ".join(str(exc).split()), url)
            raise CheckpointError(f"PostgreSQL refused to change the indexes ({reason}): run "
                                  "as the tables' owner.") from None


# --- the operations -------------------------------------------------------------------------

def status(url: str) -> list[IndexResult]:
    """Each index's state, without changing anything."""
    return apply_indexes(url, dry_run=True)


def apply_indexes(url: str, *, dry_run: bool = False) -> list[IndexResult]:
    """Build the missing indexes, rebuild INVALID ones, keep valid ones; ``dry_run`` only
    says which statements would run."""
    out = []
    with _checked(url) as conn:
        for spec in INDEXES:
            state, size = _state(conn, spec)
            todo = {"missing": [create_sql(spec)], "invalid": [drop_sql(spec), create_sql(spec)],
                    "valid": []}[state]
            done, would = {"missing": ("created", "would create"),
                           "invalid": ("rebuilt", "would rebuild"),
                           "valid": ("kept", "would keep")}[state]
            result = IndexResult(spec.name, spec.table, spec.serves, state,
                                 would if dry_run else done, [s.as_string(conn) for s in todo],
                                 size)
            if not dry_run and todo:
                t0 = time.perf_counter()
                _run(conn, todo, url)
                result.seconds = time.perf_counter() - t0
                new_state, result.bytes = _state(conn, spec)
                if new_state != "valid":
                    raise CheckpointError(f"Index {spec.name} is {new_state} after the build: "
                                          "run the command again to rebuild it.")
            out.append(result)
    return out


def drop_indexes(url: str, *, dry_run: bool = False) -> list[IndexResult]:
    """Drop this module's indexes (``DROP INDEX CONCURRENTLY IF EXISTS``): the way back."""
    out = []
    with _checked(url) as conn:
        for spec in INDEXES:
            state, size = _state(conn, spec)
            todo = [] if state == "missing" else [drop_sql(spec)]
            result = IndexResult(spec.name, spec.table, spec.serves, state,
                                 ("would drop" if dry_run else "dropped") if todo else "absent",
                                 [s.as_string(conn) for s in todo], size)
            if not dry_run and todo:
                t0 = time.perf_counter()
                _run(conn, todo, url)
                result.seconds, result.bytes = time.perf_counter() - t0, None
            out.append(result)
    return out


__all__ = ["INDEXES", "METADATA_GIN", "SERVED_BY_SETUP", "IndexResult", "IndexSpec",
           "apply_indexes", "connect", "create_sql", "drop_indexes", "drop_sql", "index_sql",
           "status"]
