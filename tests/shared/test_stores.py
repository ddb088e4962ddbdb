"""shared/store/stores.py and shared/workloads/knowledge.py: real SQLite, real PostgreSQL."""

from __future__ import annotations

import struct
from pathlib import Path

import pytest

from shared.errors import CheckpointError
from shared.store import stores
from shared.store.embeddings import store_index
from shared.store.stores import open_postgres_store, open_sqlite_store, postgres_store_schema
from shared.workloads import knowledge as kb

PREFS = ("users", "alice", "preferences")


def _blob(*xs: float) -> bytes:
    return struct.pack(f"<{len(xs)}f", *xs)


def test_sqlite_store_put_get_search(tmp_path: Path) -> None:
    with open_sqlite_store(tmp_path / "s.sqlite", index=store_index(["text"])) as store:
        store.put(PREFS, "lang", {"text": "Alice prefers answers in Dutch"})
        store.put(("company", "knowledge"), "f1", {"text": "Employees get 25 days of leave"})
        assert store.get(PREFS, "lang").value["text"].endswith("Dutch")  # type: ignore[union-attr]
        hits = store.search(("company",), query="how many vacation days", limit=1)
        assert [h.key for h in hits] == ["f1"] and hits[0].score is not None
        tables = {r[0] for r in store.conn.execute("SELECT name FROM sqlite_master")}
        assert {"store", "store_vectors", "vector_migrations"} <= tables


def test_sqlite_store_refusals_write_nothing(tmp_path: Path) -> None:
    with open_sqlite_store(tmp_path / "s.sqlite") as store:
        with pytest.raises(CheckpointError, match="must be a dict, not str"):
            store.put(PREFS, "lang", "Dutch")  # type: ignore[arg-type]
        with pytest.raises(CheckpointError, match="has no index"):
            store.search(PREFS, query="language")
        assert store.conn.execute("SELECT count(*) FROM store").fetchone()[0] == 0
        assert store.search(PREFS) == []  # without a query: a plain listing, allowed
    with pytest.raises(CheckpointError, match="positive minutes"):
        open_sqlite_store(tmp_path / "t.sqlite", ttl={"default_ttl": -1}).__enter__()
    with pytest.raises(CheckpointError, match="positive minutes"):
        open_sqlite_store(tmp_path / "t.sqlite", ttl=5).__enter__()  # type: ignore[arg-type]
    assert not (tmp_path / "t.sqlite").exists()


def test_python_vector_distances_are_exact() -> None:
    cos, l2, l1 = (stores._vec_distance(k) for k in ("cosine", "L2", "L1"))
    assert cos(_blob(1, 0), _blob(1, 0)) == pytest.approx(0.0)
    assert cos(_blob(1, 0), _blob(0, 1)) == pytest.approx(1.0)
    assert cos(_blob(0, 0), _blob(0, 1)) == 1.0
    assert l2(_blob(0, 0), _blob(3, 4)) == pytest.approx(5.0)
    assert l1(_blob(0, 0), _blob(3, 4)) == pytest.approx(7.0)
    assert cos(None, _blob(1)) is None
    assert "sqlite-vec" in stores.sqlite_vector_functions()


def test_python_vector_connection_registers_functions(tmp_path: Path) -> None:
    import sqlite3

    conn = sqlite3.connect(tmp_path / "v.sqlite", factory=stores._VecConnection)
    conn.enable_load_extension(True)
    conn.load_extension("vec0")
    assert conn.loaded  # type: ignore[attr-defined]
    got = conn.execute("SELECT vec_distance_L2(?, ?)", (_blob(0, 0), _blob(3, 4))).fetchone()
    assert got[0] == pytest.approx(5.0)
    conn.close()


def test_postgres_store_hnsw_and_flat(pg_db: str) -> None:
    with open_postgres_store(pg_db, index=store_index(["text"]), ef_search=80) as store:
        ef = store.conn.execute("SHOW hnsw.ef_search").fetchone()
        assert ef["hnsw.ef_search"] == "80"
        store.put(("company", "knowledge"), "f1", {"text": "Employees get 25 days of leave"})
        store.put(("company", "knowledge"), "f2", {"text": "The canteen serves vegan food"})
        hits = store.search(("company", "knowledge"), query="vacation allowance", limit=1)
        assert [h.key for h in hits] == ["f1"]
        schema = postgres_store_schema(store.conn)
        assert {"store", "store_vectors", "store_migrations", "vector_migrations"} <= set(schema)
        assert "embedding" in schema["store_vectors"]
        index = store.conn.execute("SELECT indexdef FROM pg_indexes WHERE indexname = %s",
                                   ("store_vectors_embedding_idx",)).fetchone()
        assert "hnsw" in index["indexdef"]
        with pytest.raises(CheckpointError, match="must be a dict"):
            store.put(PREFS, "x", ["Dutch"])  # type: ignore[arg-type]
        assert store.get(PREFS, "x") is None


def test_postgres_store_refusals(pg_db: str) -> None:
    with pytest.raises(CheckpointError, match="use 'hnsw'"):
        open_postgres_store(pg_db, index=store_index(), ann="ivf").__enter__()  # type: ignore[arg-type]
    with open_postgres_store(pg_db) as plain, \
            pytest.raises(CheckpointError, match="has no index"):
        plain.search(("company",), query="leave")


def test_missing_pgvector_is_one_sentence() -> None:
    class NoVector:  # a server whose catalogue lists no vector extension
        def execute(self, sql: str, params: tuple[str]) -> NoVector:
            return self

        def fetchone(self) -> None:
            return None

    with pytest.raises(CheckpointError, match="no pgvector extension"):
        stores._require_vector(NoVector())


def test_knowledge_base_and_keyword_baseline() -> None:
    facts, questions = kb.load_kb()
    assert len(facts) == 200 and len(questions) == 40
    ids = {f["id"] for f in facts}
    assert all(q.answers <= ids for q in questions)
    assert kb.words("How many vacation days?") == {"many", "vacation", "day"}
    assert kb.keyword_search("paid annual leave", facts)[0] == "f001"
    assert kb.keyword_search("zzz", facts) == []
    assert kb.recall_at_k(lambda q: [], questions) == 0.0
    notes = list(kb.filler_texts(3))
    assert notes == list(kb.filler_texts(3)) and notes[0][0] == "n000000"


def test_load_agreement_and_expiry(tmp_path: Path) -> None:
    with open_sqlite_store(tmp_path / "s.sqlite", index=store_index(["text"]),
                           ttl={"sweep_interval_minutes": 0.2 / 60}) as store:
        count, seconds = kb.load_items(store, [*kb.fact_items()[:5], *kb.filler_texts(3)],
                                       batch=4)
        assert count == 8 and seconds > 0
        _, questions = kb.load_kb()
        assert kb.agreement(store, store, questions[:3], k=3) == 1.0
        kb.cycling_search(store, questions, k=2)()
        store.start_ttl_sweeper()
        gone, lag = kb.watch_expiry(store, lambda: store.conn.execute(
            "SELECT count(*) FROM store WHERE key = 's1'").fetchone()[0], 0.3)
        assert gone and lag < 3
