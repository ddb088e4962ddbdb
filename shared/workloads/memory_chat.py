"""What lessons 6.2 and 6.3 say to the memory chat graph, each turn in a process of its own or
in a long run; helpers that read the Store and the checkpoint tables back."""

from __future__ import annotations

from typing import Any

from langgraph.checkpoint.postgres import PostgresSaver

from shared.graph import MemoryContext, build_memory_chat_graph
from shared.store.memory import open_memory_store


def chat_turns(url: str, user_id: str, thread_id: str, texts: list[str]) -> dict[str, Any]:
    """Run ``texts`` as turns of one thread, in this process; return replies and what was
    recalled. Called in a fresh interpreter (``shared.proc.run_child``) by lesson 6.2."""
    with PostgresSaver.from_conn_string(url) as saver, open_memory_store(url) as store:
        saver.setup()
        config: Any = {"configurable": {"thread_id": thread_id}}
        existed = saver.get_tuple(config) is not None
        graph = build_memory_chat_graph(saver, store)
        turns = []
        for text in texts:
            out = graph.invoke({"messages": [("user", text)]}, config,
                               context=MemoryContext(user_id))
            turns.append({"said": text, "reply": str(out["messages"][-1].content),
                          "recalled": [m["namespace"] for m in out["memories"]]})
        return {"thread_existed": existed, "turns": turns}


# The ids an attacker tries: each one aims at Alice's memories or at the list of users.
ATTACK_IDS = ["", "/", "alice/", "alice/facts", "*", "ali", "alice.admin", "../alice", "%",
              "bob/../alice"]


def unguarded_leak(store: Any, user_id: str, owner: str, query: str) -> int | str:
    """Items of ``owner`` an app without the guard hands to ``user_id`` (search by its path
    scope, plus ``list_namespaces`` under it); LangGraph's own refusal is returned as text."""
    from langgraph.store.base import InvalidNamespaceError

    from shared.store.namespaces import unguarded_scope

    scope = unguarded_scope(user_id)
    try:
        items = store.search(scope, query=query, limit=50)
        listed = store.list_namespaces(prefix=scope, limit=100)
    except InvalidNamespaceError:
        return "refused by LangGraph"
    return (sum(item.namespace[:2] == ("users", owner) for item in items)
            + sum(ns[:2] == ("users", owner) for ns in listed))
