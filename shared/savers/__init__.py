"""Checkpoint savers and helpers built on LangGraph's own interfaces."""

from shared.savers.postgres import open_postgres_saver
from shared.savers.serde import GRAPH_TYPES, graph_serde
from shared.savers.sqlite import (
    check_database_location,
    file_bytes,
    largest_checkpoints,
    largest_row_bytes,
    open_sqlite_saver,
    row_counts,
    sqlite_schema,
    stored_bytes,
    table_bytes,
)

__all__ = [
    "GRAPH_TYPES",
    "check_database_location",
    "file_bytes",
    "graph_serde",
    "largest_checkpoints",
    "largest_row_bytes",
    "open_postgres_saver",
    "open_sqlite_saver",
    "row_counts",
    "sqlite_schema",
    "stored_bytes",
    "table_bytes",
]
