"""Checkpoint savers and helpers built on LangGraph's own interfaces."""

from shared.savers.sqlite import check_database_location, open_sqlite_saver, sqlite_schema

__all__ = ["check_database_location", "open_sqlite_saver", "sqlite_schema"]
