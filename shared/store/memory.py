"""Memory that outlives a thread: what the memory chat graph writes to and reads from a Store.

- ``remember``: the facts a user states go to ``("users", user_id, "facts")`` (one item per
  fact, the latest statement winning); company notes go to ``("company", "knowledge")``,
  stated once and found from every user's threads.
- ``recall``: a semantic search (the Store's embedding index) of the user's own facts and
  summaries and of company knowledge; namespaces come only from ``user_namespace``, so a
  user id that is not a safe label is refused before anything is read or written.
- ``summarise`` and ``store_summary``: the older turns a message window drops, kept as one
  short summary item in ``("users", user_id, "summaries")``.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from langchain_core.messages import AnyMessage, HumanMessage, SystemMessage
from langgraph.store.base import BaseStore

from shared.errors import CheckpointError
from shared.llm import STATEMENTS, company_notes, learned_facts, message_text
from shared.store.namespaces import COMPANY_KNOWLEDGE, user_namespace


@contextmanager
def open_memory_store(url: str) -> Iterator[BaseStore]:
    """LangGraph's ``PostgresStore`` on ``url``, set up, searching ``text`` by meaning.

    pgvector's HNSW index on WordLlama's 256-dimension vectors (cosine). PostgreSQL, not
    SQLite: ``SqliteStore``'s vector search needs ``sqlite3`` built with extension loading,
    which Python builds often leave out (this one does).
    """
    from langgraph.store.postgres import PostgresStore

    from shared.infra.postgres import check_url
    from shared.store.embeddings import store_index

    index: Any = {**store_index(["text"]), "distance_type": "cosine",
                  "ann_index_config": {"kind": "hnsw"}}
    with PostgresStore.from_conn_string(check_url(url), index=index) as store:
        store.setup()
        yield store


SUMMARY_CHARS = 240  # a summary item's text is capped: the Store holds gist, not transcripts


def _require_index(store: BaseStore) -> None:
    if not getattr(store, "index_config", None):
        raise CheckpointError("This Store has no embedding index, so it cannot search by "
                              "meaning: open it with index=store_index(['text']) "
                              "(shared/store/embeddings.py).")


def remember(store: BaseStore, user_id: str, text: str) -> list[tuple[tuple[str, ...], str]]:
    """Store the facts and company notes stated in ``text``; return (namespace, key) written."""
    facts_ns = user_namespace(user_id, "facts")  # refuses a bad id before any write
    message = HumanMessage(text)
    written: list[tuple[tuple[str, ...], str]] = []
    for fact, value in learned_facts([message]).items():
        store.put(facts_ns, fact, {"text": STATEMENTS[fact].format(value), "fact": fact})
        written.append((facts_ns, fact))
    for topic, value in company_notes([message]).items():
        key = re.sub(r"\W+", "-", topic)
        store.put(COMPANY_KNOWLEDGE, key, {"text": f"Company note: the {topic} is {value}."})
        written.append((COMPANY_KNOWLEDGE, key))
    return written


def recall(store: BaseStore, user_id: str, query: str, limit: int = 4) -> list[dict[str, Any]]:
    """The memories most relevant to ``query``: the user's facts and summaries, company notes.

    Each search names one whole namespace, never a shorter prefix, so a user id that happens
    to be another's prefix reaches nothing but its own items.
    """
    _require_index(store)
    found = []
    for namespace in (user_namespace(user_id, "facts"), user_namespace(user_id, "summaries"),
                      COMPANY_KNOWLEDGE):
        for item in store.search(namespace, query=query, limit=limit):
            found.append({"namespace": "/".join(item.namespace), "key": item.key,
                          "text": str(item.value.get("text", "")),
                          "score": round(item.score or 0.0, 3)})
    return found


def memory_message(memories: list[dict[str, Any]]) -> SystemMessage:
    """What the model is told the Store remembered (the offline model reads facts from it)."""
    lines = "\n".join(f"- {m['text']}" for m in memories) or "- (nothing yet)"
    return SystemMessage(f"What you remember from earlier conversations:\n{lines}")


def summarise(messages: list[AnyMessage]) -> str:
    """A short, deterministic summary of what the user said in ``messages``."""
    said = "; ".join(message_text(m).strip() for m in messages if isinstance(m, HumanMessage))
    summary = f"Earlier the user said: {said}"
    return summary if len(summary) <= SUMMARY_CHARS else summary[:SUMMARY_CHARS - 3] + "..."


def store_summary(store: BaseStore, user_id: str, key: str, messages: list[AnyMessage]) -> None:
    """Keep the gist of ``messages`` (about to leave the checkpoint) in the user's summaries."""
    store.put(user_namespace(user_id, "summaries"), key, {"text": summarise(messages)})


__all__ = ["memory_message", "open_memory_store", "recall", "remember", "store_summary",
           "summarise"]
