"""What the server spent its time on: ``pg_stat_statements``, top statements by total time.

The extension must be loaded at server start (``shared_preload_libraries``; the embedded
server does, RDS and Cloud SQL do by default) and created in a database to read its view::

    enable_statements(url)           # CREATE EXTENSION IF NOT EXISTS pg_stat_statements
    reset_statements(url)            # start counting now
    top_statements(url, limit=5)     # [Statement(database, calls, total_ms, mean_ms, query)]
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import psycopg

from shared.errors import CheckpointError
from shared.infra.urls import mask_url


@dataclass
class Statement:
    database: str
    calls: int
    total_ms: float
    mean_ms: float
    max_ms: float
    rows: int
    query: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @property
    def gist(self) -> str:
        """The part that tells statements apart: PostgresSaver's reads all begin alike, so
        what follows their main ``from checkpoints`` (the filter, order and limit) is shown."""
        query = " ".join(self.query.split())
        at = query.lower().rfind("from checkpoints ")
        return f"… {query[at:]}" if query.lower().startswith("select") and at > 0 else query

    def line(self, width: int = 90) -> str:
        """One evidence line: calls, mean, max, total, then the query's gist, cut to fit."""
        query = self.gist
        cut = f"{query[:width]}{'…' if len(query) > width else ''}"
        return (f"{self.calls:>6,} calls, mean {self.mean_ms:.3f} ms, max {self.max_ms:.1f} ms, "
                f"total {self.total_ms:,.0f} ms: {cut}")


def enable_statements(url: str) -> bool:
    """Create the extension in ``url``'s database; False when the server did not preload it."""
    with psycopg.connect(url, autocommit=True) as conn:
        loaded = conn.execute("SELECT setting FROM pg_settings WHERE name = "
                              "'shared_preload_libraries'").fetchone()
        if loaded is None or "pg_stat_statements" not in loaded[0]:
            return False
        try:
            conn.execute("CREATE EXTENSION IF NOT EXISTS pg_stat_statements")
        except psycopg.errors.InsufficientPrivilege as exc:
            raise CheckpointError(f"Cannot create pg_stat_statements in {mask_url(url)}: the "
                                  "role may not create extensions; ask an administrator to "
                                  "run CREATE EXTENSION pg_stat_statements.") from exc
    return True


def reset_statements(url: str) -> None:
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("SELECT pg_stat_statements_reset()")


def top_statements(url: str, limit: int = 5, databases: list[str] | None = None,
                   ) -> list[Statement]:
    """The ``limit`` statements with the most total execution time, per database if given."""
    query = ("SELECT d.datname, s.calls, s.total_exec_time, s.mean_exec_time, s.max_exec_time, "
             "s.rows, s.query FROM pg_stat_statements s JOIN pg_database d ON d.oid = s.dbid "
             "WHERE (%(dbs)s::text[] IS NULL OR d.datname = ANY(%(dbs)s)) "
             "ORDER BY s.total_exec_time DESC LIMIT %(limit)s")
    with psycopg.connect(url, autocommit=True) as conn:
        rows = conn.execute(query, {"dbs": databases, "limit": limit}).fetchall()
    return [Statement(r[0], r[1], round(r[2], 3), round(r[3], 3), round(r[4], 3), r[5], r[6])
            for r in rows]
