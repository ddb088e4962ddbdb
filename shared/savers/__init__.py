"""Checkpoint savers and helpers built on LangGraph's own interfaces."""

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

__all__ = ["check_database_location", "file_bytes", "largest_checkpoints", "largest_row_bytes",
           "open_sqlite_saver", "row_counts", "sqlite_schema", "stored_bytes", "table_bytes"]
