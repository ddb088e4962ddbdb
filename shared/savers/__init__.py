"""Checkpoint savers and helpers built on LangGraph's own interfaces."""

from shared.savers.sqlite import (
    check_database_location,
    file_bytes,
    largest_checkpoints,
    open_sqlite_saver,
    sqlite_schema,
    table_bytes,
)

__all__ = ["check_database_location", "file_bytes", "largest_checkpoints", "open_sqlite_saver",
           "sqlite_schema", "table_bytes"]
