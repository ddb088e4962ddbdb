"""LangGraph's own stores, opened and set up, refusing bad input with one sentence.

    with open_sqlite_store("memory.sqlite", index=store_index(["text"])) as store: ...
    with open_postgres_store(url, index=store_index(["text"]), ann="hnsw") as store: ...

What LangGraph does on its own with two bad inputs, and why they are wrapped here:
``put`` of a value that is not a dict fails deep inside (SQLite: "dictionary update sequence
element #0 has length 1"), and ``search(query=...)`` on a store opened without an index
ignores the query and returns items in storage order, as if they had been ranked.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from contextlib import closing, contextmanager
from pathlib import Path
from typing import Any, Literal

import numpy as np
from langgraph.store.base import NOT_PROVIDED, Item, SearchItem
from langgraph.store.postgres import PostgresStore
from langgraph.store.sqlite import SqliteStore

from shared.errors import CheckpointError
from shared.savers.sqlite import check_database_location

Ann = Literal["hnsw", "flat"]


class _Guard:
    """Checks in front of LangGraph's ``put`` and ``search`` (mixed into its store classes)."""

    index_config: dict[str, Any] | None

    def put(self, namespace: tuple[str, ...], key: str, value: dict[str, Any],
            index: Any = None, *, ttl: Any = NOT_PROVIDED) -> None:
        if not isinstance(value, dict):
            raise CheckpointError(f"A Store value must be a dict, not {type(value).__name__} "
                                  f"(key {key!r}): wrap it, e.g. {{'text': ...}}.")
        super().put(namespace, key, value, index, ttl=ttl)  # type: ignore[misc]

    def search(self, namespace_prefix: tuple[str, ...], /, *, query: str | None = None,
               **kwargs: Any) -> list[SearchItem]:
        if query is not None and not self.index_config:
            raise CheckpointError("This store has no index, so search(query=...) cannot rank "
                                  "by meaning: open it with index=store_index([...]).")
        return super().search(namespace_prefix, query=query, **kwargs)  # type: ignore[misc]


class GuardedSqliteStore(_Guard, SqliteStore):
    """``SqliteStore`` with the checks above."""


class GuardedPostgresStore(_Guard, PostgresStore):
    """``PostgresStore`` with the checks above."""


def _vec_distance(kind: str) -> Any:
    def distance(a: bytes | None, b: bytes | None) -> float | None:
        if a is None or b is None:
            return None
        x, y = np.frombuffer(a, dtype="<f4"), np.frombuffer(b, dtype="<f4")
        if kind == "cosine":
            norms = float(np.linalg.norm(x) * np.linalg.norm(y))
            return 1.0 - float(x @ y) / norms if norms else 1.0
        return float(np.linalg.norm(x - y, ord=2 if kind == "L2" else 1))
    return distance


class _VecConnection(sqlite3.Connection):
    """For a Python whose sqlite3 cannot load extensions (pyenv builds it without
    --enable-loadable-sqlite-extensions): SqliteStore's setup loads sqlite-vec for its three
    distance functions; here the same functions, exact, are defined in Python instead."""

    loaded = False

    def enable_load_extension(self, enabled: bool, /) -> None:
        pass

    def load_extension(self, name: str, /, *args: Any, **kwargs: Any) -> None:
        for kind in ("cosine", "L2", "L1"):
            self.create_function(f"vec_distance_{kind}", 2, _vec_distance(kind),
                                 deterministic=True)
        self.loaded = True


NATIVE_EXTENSIONS = hasattr(sqlite3.Connection, "enable_load_extension")


def sqlite_vector_functions() -> str:
    """Where a SqliteStore's vector distances come from in this Python (said by the lesson)."""
    return ("the sqlite-vec extension" if NATIVE_EXTENSIONS else
            "Python functions (this Python's sqlite3 cannot load the sqlite-vec extension)")


def _check_ttl(ttl: dict[str, Any] | None) -> None:
    if ttl is None:
        return
    if not isinstance(ttl, dict) or not all(
            isinstance(ttl.get(k, 1), int | float) and ttl.get(k, 1) > 0
            for k in ("default_ttl", "sweep_interval_minutes")):
        raise CheckpointError(f"ttl {ttl!r} must be a dict such as {{'default_ttl': 60, "
                              "'sweep_interval_minutes': 5}} with positive minutes.")


@contextmanager
def open_sqlite_store(path: str | Path, *, index: dict[str, Any] | None = None,
                      ttl: dict[str, Any] | None = None) -> Iterator[GuardedSqliteStore]:
    """A set-up ``SqliteStore`` on the file ``path`` (its tables created), closed on exit."""
    _check_ttl(ttl)
    path = check_database_location(path)
    # LangGraph's own from_conn_string settings: autocommit, shared across threads (sweeper)
    conn = sqlite3.connect(path, check_same_thread=False, isolation_level=None,
                           factory=sqlite3.Connection if NATIVE_EXTENSIONS else _VecConnection)
    with closing(conn):
        store = GuardedSqliteStore(conn, index=index, ttl=ttl)  # type: ignore[arg-type]
        store.setup()
        try:
            yield store
        finally:
            store.stop_ttl_sweeper(timeout=5)


def _require_vector(conn: Any) -> None:
    """LangGraph's setup runs CREATE EXTENSION vector; say so plainly when the server lacks it."""
    row = conn.execute("SELECT 1 FROM pg_available_extensions WHERE name = %s",
                       ("vector",)).fetchone()
    if row is None:
        raise CheckpointError("This PostgreSQL server has no pgvector extension, which a Store "
                              "with an index needs: install pgvector or use the embedded server.")


@contextmanager
def open_postgres_store(url: str, *, index: dict[str, Any] | None = None,
                        ttl: dict[str, Any] | None = None, ann: Ann = "hnsw",
                        build_memory: str = "512MB",
                        ef_search: int | None = None) -> Iterator[GuardedPostgresStore]:
    """A set-up ``PostgresStore`` on ``url``; with an index, vectors in pgvector and, unless
    ``ann="flat"`` (exact scan), an HNSW index on them (cosine distance).

    ``build_memory`` is this session's ``maintenance_work_mem`` while setup() builds the
    index: when the HNSW graph outgrows it (the 64 MB default holds ~50,000 256-dimension
    vectors), pgvector goes on building on disk, many times slower. ``ef_search`` sets this
    session's ``hnsw.ef_search`` (pgvector's default 40): candidates kept while searching,
    recall against speed.
    """
    from psycopg import Connection
    from psycopg.rows import dict_row

    from shared.infra.postgres import check_url

    _check_ttl(ttl)
    if ann not in ("hnsw", "flat"):
        raise CheckpointError(f"ann {ann!r}: use 'hnsw' (the pgvector index) or 'flat' "
                              "(exact scan).")
    if index is not None:
        index = {**index, "ann_index_config": {"kind": ann, "vector_type": "vector"},
                 "distance_type": "cosine"}
    with Connection.connect(check_url(url), autocommit=True, prepare_threshold=0,
                            row_factory=dict_row) as conn:  # what from_conn_string opens
        if index is not None:
            _require_vector(conn)
            conn.execute("SELECT set_config('maintenance_work_mem', %s, false)",
                         (build_memory,))
            if ef_search is not None:
                conn.execute("SELECT set_config('hnsw.ef_search', %s, false)",
                             (str(int(ef_search)),))
        store = GuardedPostgresStore(conn, index=index, ttl=ttl)  # type: ignore[arg-type]
        store.setup()
        try:
            yield store
        finally:
            store.stop_ttl_sweeper(timeout=5)


def postgres_store_schema(conn: Any) -> dict[str, list[str]]:
    """The Store's tables (``store*``, ``vector_migrations``) and their columns, from the
    catalog."""
    rows = conn.execute(
        "SELECT table_name, column_name FROM information_schema.columns "
        "WHERE table_schema = current_schema() "
        "AND (table_name LIKE %s OR table_name = %s) "
        "ORDER BY table_name, ordinal_position", ("store%", "vector_migrations")).fetchall()
    schema: dict[str, list[str]] = {}
    for row in rows:
        table, column = ((row["table_name"], row["column_name"]) if isinstance(row, dict)
                         else row)
        schema.setdefault(table, []).append(column)
    return schema


__all__ = ["NATIVE_EXTENSIONS", "GuardedPostgresStore", "GuardedSqliteStore", "Item",
           "open_postgres_store", "open_sqlite_store", "postgres_store_schema",
           "sqlite_vector_functions"]
