"""The memory chat graph, the Store helpers and the offline model's memory reading."""

from __future__ import annotations

import pytest
from langchain_core.messages import HumanMessage, SystemMessage
from langgraph.checkpoint.memory import InMemorySaver
from langgraph.store.memory import InMemoryStore

from shared.errors import CheckpointError
from shared.graph import MemoryContext, build_memory_chat_graph
from shared.llm import company_notes, learned_facts, offline_reply
from shared.store.embeddings import store_index
from shared.store.memory import (
    SUMMARY_CHARS,
    memory_message,
    open_memory_store,
    recall,
    remember,
    summarise,
)


@pytest.fixture
def store() -> InMemoryStore:
    return InMemoryStore(index=store_index(["text"]))  # type: ignore[arg-type]


def _say(graph, text: str, user: str, thread: str) -> dict:
    return graph.invoke({"messages": [("user", text)]},
                        {"configurable": {"thread_id": thread}}, context=MemoryContext(user))


def test_offline_model_reads_memories_and_answers_every_question() -> None:
    memory = SystemMessage("- I live in Lisbon.\n- Company note: the VPN server is vpn.x.")
    assert offline_reply([memory, HumanMessage("Where do I live?")]) == "You live in Lisbon."
    assert offline_reply([memory, HumanMessage("What is the VPN server?")]) == (
        "The VPN server is vpn.x.")
    assert offline_reply([HumanMessage("What is the wifi code?")]) == (
        "I don't know the wifi code yet.")
    assert offline_reply([HumanMessage("Company note: the wifi code is 1234.")]) == (
        "Noted for everyone: the wifi code is 1234.")
    both = offline_reply([HumanMessage("My name is Ann. I live in Oslo."),
                          HumanMessage("What is my name? Where do I live?")])
    assert both == "Your name is Ann. You live in Oslo."
    # the conversation overrides an older memory
    assert learned_facts([memory, HumanMessage("I live in Porto.")])["city"] == "Porto"
    assert company_notes([HumanMessage("hello")]) == {}


def test_remember_and_recall(store: InMemoryStore) -> None:
    written = remember(store, "alice", "I live in Lisbon. Company note: the VPN server is v.x.")
    assert (("users", "alice", "facts"), "city") in written
    assert (("company", "knowledge"), "vpn-server") in written
    got = recall(store, "alice", "Where do I live?")
    assert {m["namespace"] for m in got} == {"users/alice/facts", "company/knowledge"}
    assert [m for m in recall(store, "bob", "Where do I live?")
            if m["namespace"].startswith("users/alice")] == []
    with pytest.raises(CheckpointError, match="cannot name a Store namespace"):
        remember(store, "alice/..", "I live in Lisbon.")
    assert store.search(("users",)) == store.search(("users", "alice"))  # nothing else written
    assert "Lisbon" in memory_message(got).content
    assert "nothing yet" in memory_message([]).content


def test_recall_without_index_is_one_sentence() -> None:
    with pytest.raises(CheckpointError, match="has no embedding index"):
        recall(InMemoryStore(), "alice", "anything")


def test_summary_is_capped() -> None:
    long = [HumanMessage("word " * 200)]
    assert len(summarise(long)) == SUMMARY_CHARS and summarise(long).endswith("...")
    assert summarise([HumanMessage("hi")]) == "Earlier the user said: hi"


def test_graph_remembers_across_threads_and_windows(store: InMemoryStore) -> None:
    graph = build_memory_chat_graph(InMemorySaver(), store, window=4)
    _say(graph, "My favourite colour is teal.", "alice", "a")
    for i in range(6):
        out = _say(graph, f"small talk {i}", "alice", "a")
    assert len(out["messages"]) < 8 and out["summarised"] > 0  # the window held
    assert store.search(("users", "alice", "summaries"))
    reply = _say(graph, "What is my favourite colour?", "alice", "b")["messages"][-1].content
    assert reply == "Your favourite colour is teal."
    other = _say(graph, "What is my favourite colour?", "bob", "c")["messages"][-1].content
    assert other == "I don't know your favourite colour yet."


def test_open_memory_store_on_postgres(pg_db: str) -> None:
    with open_memory_store(pg_db) as store:
        remember(store, "alice", "I work as a pilot.")
        assert recall(store, "alice", "What do I do?")[0]["text"] == "I work as a pilot."
