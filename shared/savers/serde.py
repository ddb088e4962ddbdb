"""The serializer our graphs' savers use: LangGraph's, with an explicit list of types to build.

LangGraph's ``JsonPlusSerializer`` stores an application object as a msgpack ext value that
names its module and class, and by default (``allowed_msgpack_modules=True``, unless
``LANGGRAPH_STRICT_MSGPACK`` is set) imports and calls whatever a stored row names when it
loads it. Anyone who can write one row of the checkpoint database can then run code in the
application. An explicit allowlist closes that: LangGraph's own safe types (messages,
``Send``, ``Interrupt``, ``Command``, datetimes, UUIDs...) plus the types listed here are
built; any other type loads as its plain fields (a dict), and nothing else is ever called.

Our graphs store only LangGraph's safe types, so ``GRAPH_TYPES`` is empty. An application
that keeps its own dataclasses, pydantic models or enums in state adds them::

    serde = graph_serde(("myapp.models", "Order"), ("myapp.models", "Status"))
    with open_sqlite_saver("checkpoints.sqlite", serde=serde) as saver: ...

Forgetting one is visible, not silent data loss: LangGraph logs "Blocked deserialization of
myapp.models.Order" and the node receives a dict where it expected an ``Order``.
"""

from __future__ import annotations

from langgraph.checkpoint.serde.jsonplus import JsonPlusSerializer

# (module, class) of every type our graphs keep in state beyond LangGraph's own safe types.
GRAPH_TYPES: tuple[tuple[str, str], ...] = ()


def graph_serde(*extra: tuple[str, str]) -> JsonPlusSerializer:
    """LangGraph's serializer building only its safe types, ``GRAPH_TYPES`` and ``extra``."""
    for entry in extra:
        if not (isinstance(entry, tuple) and len(entry) == 2
                and all(isinstance(part, str) and part for part in entry)):
            raise TypeError(f"allowlist entries are (module, class) pairs of names, got "
                            f"{entry!r}: write ('myapp.models', 'Order').")
    return JsonPlusSerializer(allowed_msgpack_modules=[*GRAPH_TYPES, *extra])


__all__ = ["GRAPH_TYPES", "graph_serde"]
