"""``ckpt inspect`` on a file holding a LangGraph Store beside its checkpoints."""

from __future__ import annotations

import json
from pathlib import Path

from langgraph.store.sqlite import SqliteStore

from shared.graph import build_chat_graph
from shared.savers import open_sqlite_saver
from tests.shared.test_cli import run_here
from tests.shared.test_store_migrate import sqlite_conn, sqlite_index


def make_file(path: Path, store: bool = True) -> dict[tuple[str, ...], list[dict]]:
    with open_sqlite_saver(path) as saver:
        build_chat_graph(saver).invoke({"messages": [("user", "Hi, my name is Alice.")]},
                                       {"configurable": {"thread_id": "t1"}})
    values: dict[tuple[str, ...], list[dict]] = {
        ("users", "alice", "preferences"): [{"text": "tea"}, {"text": "window seat"}],
        ("users", "alice", "summaries"): [{"text": "talked about trains"}],
        ("users", "bob", "preferences"): [{"text": "coffee"}],
        ("company", "knowledge"): [{"text": "Refunds take five days."}] * 3}
    if store:
        conn = sqlite_conn(path)
        s = SqliteStore(conn, index=sqlite_index())
        s.setup()
        for ns, items in values.items():
            for i, value in enumerate(items):
                s.put(ns, f"k{i}", value)
        conn.close()
    return values


def test_inspect_shows_namespaces_by_prefix(tmp_path: Path) -> None:
    path = tmp_path / "app.sqlite"
    values = make_file(path)
    code, out, err = run_here(["inspect", str(path), "--json"])
    assert code == 0, err
    store = json.loads(out)["store"]
    assert store["items"] == store["embeddings"] == 7 and store["dims"] == 256
    by = {g["prefix"]: g for g in store["by_prefix"]}
    assert set(by) == {"company.knowledge", "users.alice", "users.bob"}
    assert (by["users.alice"]["namespaces"], by["users.alice"]["items"]) == (2, 3)

    def size(ns: tuple[str, ...]) -> int:  # SqliteStore stores compact JSON
        return sum(len(json.dumps(v, separators=(",", ":")).encode()) for v in values[ns])
    assert by["users.alice"]["value_bytes"] == size(("users", "alice", "preferences")) + size(
        ("users", "alice", "summaries"))
    assert by["company.knowledge"]["items"] == by["company.knowledge"]["embeddings"] == 3

    code, out, _ = run_here(["inspect", str(path), "--json", "--depth", "1"])
    assert {g["prefix"]: g["items"] for g in json.loads(out)["store"]["by_prefix"]} == {
        "company": 3, "users": 4}
    code, out, _ = run_here(["inspect", str(path)])
    assert code == 0 and "store: 7 items, 7 embeddings, 256 dims" in " ".join(out.split())
    assert "users.alice" in out


def test_inspect_without_a_store_and_bad_depth(tmp_path: Path) -> None:
    path = tmp_path / "plain.sqlite"
    make_file(path, store=False)
    code, out, _ = run_here(["inspect", str(path), "--json"])
    assert code == 0 and json.loads(out)["store"] is None
    code, out, _ = run_here(["inspect", str(path)])
    assert code == 0 and "store:" not in out
    before = path.read_bytes()
    code, _, err = run_here(["inspect", str(path), "--depth", "0"])
    assert code == 2 and "--depth 0 must be a whole number from 1" in err
    assert path.read_bytes() == before
