"""``open_postgres_saver``: the official ``PostgresSaver`` with our graphs' serializer.

``PostgresSaver.from_conn_string`` takes no serializer, so its saver loads whatever type a
row names (see ``shared.savers.serde``). This opener makes the same connection LangGraph's
docs require (autocommit, ``prepare_threshold=0``, ``dict_row``) and passes an allowlist.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from langgraph.checkpoint.postgres import PostgresSaver
from langgraph.checkpoint.serde.base import SerializerProtocol

from shared.savers.serde import graph_serde


@contextmanager
def open_postgres_saver(url: str, *, serde: SerializerProtocol | None = None,
                        setup: bool = False) -> Iterator[PostgresSaver]:
    """A ``PostgresSaver`` on its own connection to ``url``, closed on exit."""
    from psycopg import Connection
    from psycopg.rows import dict_row

    with Connection.connect(url, autocommit=True, prepare_threshold=0,
                            row_factory=dict_row) as conn:
        saver = PostgresSaver(conn, serde=serde or graph_serde())
        if setup:
            saver.setup()
        yield saver


__all__ = ["open_postgres_saver"]
