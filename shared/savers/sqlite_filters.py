"""Metadata filters on SqliteSaver: the SQL it really runs, its plan, and indexes that fit it.

``SqliteSaver.list(config, filter={"user_id": "u1"})`` turns each key into
``json_extract(CAST(metadata AS TEXT), '$.user_id') = ?``: a full scan of ``checkpoints``.
SQLite uses an *expression index* only when the query's expression is the index's
expression character for character, so ``create_metadata_indexes`` builds exactly that.
"""

from __future__ import annotations

import re
import sqlite3
from collections.abc import Iterable
from typing import Any

from langgraph.checkpoint.sqlite.utils import search_where

from shared.errors import CheckpointError

_KEY = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,62}")
_LIST_SQL = ("SELECT thread_id, checkpoint_ns, checkpoint_id, parent_checkpoint_id, type, "
             "checkpoint, metadata FROM checkpoints {where} ORDER BY checkpoint_id DESC")


def _checked(key: str) -> str:
    # The key becomes part of an index name and a JSON path literal: allow plain names only.
    if not isinstance(key, str) or not _KEY.fullmatch(key):  # fullmatch: no trailing \n
        raise CheckpointError(f"Metadata key {key!r} cannot be indexed: use letters, digits and "
                              "underscores, starting with a letter or underscore.")
    return key


def metadata_expression(key: str) -> str:
    """The exact expression SqliteSaver's filter uses for ``key``."""
    return f"json_extract(CAST(metadata AS TEXT), '$.{_checked(key)}')"


def metadata_index_name(key: str) -> str:
    return f"ix_checkpoints_meta_{_checked(key)}"


def create_metadata_indexes(conn: sqlite3.Connection, keys: Iterable[str]) -> list[str]:
    """Create one expression index per metadata key (idempotent); returns the index names."""
    names = []
    with conn:
        for key in keys:
            name = metadata_index_name(key)
            conn.execute(f"CREATE INDEX IF NOT EXISTS {name} ON checkpoints "
                         f"({metadata_expression(key)})")
            names.append(name)
        conn.execute("ANALYZE checkpoints")  # let the planner know how selective each one is
    return names


def drop_metadata_indexes(conn: sqlite3.Connection, keys: Iterable[str]) -> None:
    with conn:
        for key in keys:
            conn.execute(f"DROP INDEX IF EXISTS {metadata_index_name(key)}")


def list_query(config: dict[str, Any] | None, filter: dict[str, Any] | None,
               ) -> tuple[str, list[Any]]:
    """The first query ``SqliteSaver.list`` runs, with its parameters (from the saver's code)."""
    where, params = search_where(config, filter)
    return _LIST_SQL.format(where=where), list(params)


def filter_query_plan(conn: sqlite3.Connection, config: dict[str, Any] | None,
                      filter: dict[str, Any] | None) -> list[str]:
    """``EXPLAIN QUERY PLAN`` of that query: e.g. ``['SCAN checkpoints', ...]``."""
    sql, params = list_query(config, filter)
    return [row[3] for row in conn.execute(f"EXPLAIN QUERY PLAN {sql}", params)]


def plan_uses_index(plan: list[str]) -> bool:
    """True when the plan searches an index instead of scanning the table."""
    return any(line.startswith("SEARCH") and "INDEX" in line for line in plan) and not any(
        line.startswith("SCAN checkpoints") for line in plan)
