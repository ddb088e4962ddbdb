"""shared/ops/store_migrate.py: a real SqliteStore -> PostgresStore -> SqliteStore, verified."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import psycopg
import pytest
from langgraph.store.postgres import PostgresStore
from langgraph.store.sqlite import SqliteStore
from psycopg.rows import dict_row

from shared.ops.store_migrate import (
    StoreRefused,
    migrate_store,
    read_items,
    read_vectors,
    store_info,
    verify_store,
)
from shared.store.embeddings import store_index

FACTS = ["Alice prefers tea to coffee.", "Bob lives in Lisbon.", "The office opens at 9.",
         "Refunds take five working days.", "Our support line is open on weekends."]


class NoExtensions(sqlite3.Connection):
    """This Python's sqlite3 cannot load extensions, and SqliteStore.setup() loads sqlite-vec
    (for searching only): puts, with their embeddings, need no extension."""

    def enable_load_extension(self, enabled: bool, /) -> None:
        pass

    def load_extension(self, name: str, /, *args: object, **kwargs: object) -> None:
        pass


def sqlite_conn(path: Path) -> sqlite3.Connection:
    return sqlite3.connect(path, check_same_thread=False, isolation_level=None,
                           factory=NoExtensions)


def sqlite_index() -> dict:
    # SqliteStore reads the embedded paths from "text_fields" (PostgresStore from "fields").
    return {**store_index(["text"]), "text_fields": ["text"]}


def make_sqlite_store(path: Path) -> sqlite3.Connection:
    conn = sqlite_conn(path)
    store = SqliteStore(conn, index=sqlite_index())
    store.setup()
    for i, fact in enumerate(FACTS):
        store.put(("users", f"u{i % 2}", "preferences"), f"f{i}", {"text": fact, "n": i})
    store.put(("company", "knowledge"), "hours", {"text": "Open 9 to 5.", "big": 2**62,
                                                  "pi": 3.25, "tags": ["a", "b"]})
    store.put(("company", "knowledge"), "noindex", {"text": "not embedded"}, index=False)
    store.put(("users", "u0", "summaries"), "s1", {"text": "short chat"}, ttl=60)
    return conn


def pg(url: str) -> psycopg.Connection:
    return psycopg.connect(url, autocommit=True, row_factory=dict_row)


def test_round_trip_sqlite_postgres_sqlite(tmp_path: Path, pg_db: str) -> None:
    src = make_sqlite_store(tmp_path / "a.sqlite")
    with pg(pg_db) as dst:
        report = migrate_store(src, dst, batch=3)
        assert (report.items, report.items_skipped, report.batches) == (8, 0, 3)
        assert report.vectors_copied == 7 and report.embeddings == "copied"
        assert report.dims == 256
        check = verify_store(src, dst)
        assert check.ok and check.items == 8 and check.vectors == 7, check.examples
        # The copy searches by meaning on PostgreSQL (HNSW), with the same model.
        store = PostgresStore(dst, index=store_index(["text"]))
        hits = store.search(("users",), query="what does Alice drink?", limit=1)
        assert hits[0].key == "f0"
        assert store.get(("company", "knowledge"), "hours").value["big"] == 2**62
        # Resuming: everything already there is skipped, nothing written twice.
        again = migrate_store(src, dst)
        assert (again.items, again.items_skipped) == (0, 8)

        back = sqlite3.connect(tmp_path / "b.sqlite", isolation_level=None)
        assert migrate_store(dst, back).items == 8
        assert verify_store(src, back).ok
        assert read_items(src) == read_items(back)
        assert read_vectors(src) == read_vectors(back)
        old, new = SqliteStore(src), SqliteStore(sqlite_conn(tmp_path / "b.sqlite"))
        for ns in (("users",), ("company",)):
            assert old.search(ns, limit=10) == new.search(ns, limit=10)


def test_verify_finds_differences(tmp_path: Path, pg_db: str) -> None:
    src = make_sqlite_store(tmp_path / "a.sqlite")
    with pg(pg_db) as dst:
        migrate_store(src, dst)
        dst.execute("UPDATE store SET value = jsonb_set(value, '{n}', '99') WHERE key = 'f1'")
        dst.execute("UPDATE store SET expires_at = expires_at + interval '1 minute' "
                    "WHERE key = 's1'")
        dst.execute("DELETE FROM store_vectors WHERE key = 'f2'")
        dst.execute("INSERT INTO store (prefix, key, value) VALUES ('x', 'y', '{}')")
        check = verify_store(src, dst)
        assert not check.ok
        assert (check.different, check.extra, check.vectors_missing) == (2, 1, 1)
        with pytest.raises(StoreRefused, match="already holds item"):
            migrate_store(src, dst)


def test_reembedded_when_dims_differ(tmp_path: Path, pg_db: str) -> None:
    src = sqlite_conn(tmp_path / "a.sqlite")
    small = {"dims": 4, "embed": lambda texts: [[1.0, 0.0, 0.0, 0.0] for _ in texts],
             "text_fields": ["text"]}
    store = SqliteStore(src, index=small)
    store.setup()
    for i, fact in enumerate(FACTS):
        store.put(("kb",), f"k{i}", {"text": fact})
    other = sqlite_conn(tmp_path / "other.sqlite")
    eight = SqliteStore(other, index={**small, "dims": 8,
                                      "embed": lambda texts: [[0.5] * 8 for _ in texts]})
    eight.setup()
    eight.put(("x",), "y", {"text": "eight dims"})
    with pytest.raises(StoreRefused, match="8-dimension vectors and the source's are 4"):
        migrate_store(src, other)
    with pg(pg_db) as dst:
        PostgresStore(dst, index=store_index(["text"])).setup()  # a vector(256) column
        report = migrate_store(src, dst)
        assert report.embeddings == "re-created with WordLlama" and report.vectors_reembedded == 5
        check = verify_store(src, dst)
        assert check.ok and check.vectors_reembedded == 5, check.examples
        hit = PostgresStore(dst, index=store_index(["text"])).search(("kb",), query="Lisbon",
                                                                     limit=1)
        assert hit[0].key == "k1"  # searchable by meaning on the new side
    forced = migrate_store(src, sqlite_conn(tmp_path / "b.sqlite"), reembed=True)
    assert forced.dims == 256 and forced.vectors_reembedded == 5


def test_refusals(tmp_path: Path, pg_db: str) -> None:
    empty = sqlite3.connect(tmp_path / "none.sqlite")
    with pytest.raises(StoreRefused, match="holds no LangGraph store"):
        migrate_store(empty, sqlite3.connect(tmp_path / "x.sqlite"))
    src = make_sqlite_store(tmp_path / "a.sqlite")
    src.execute("INSERT INTO store_migrations (v) VALUES (99)")
    with pytest.raises(StoreRefused, match="schema version 99"):
        store_info(src, "a.sqlite")
    src.execute("DELETE FROM store_migrations WHERE v = 99")
    src.execute("UPDATE store SET ttl_minutes = 0.5 WHERE key = 's1'")
    with pg(pg_db) as dst, pytest.raises(StoreRefused, match="fraction of a minute"):
        migrate_store(src, dst)
    src.execute("UPDATE store SET ttl_minutes = 60, key = 'a' || char(0) WHERE key = 's1'")
    with pg(pg_db) as dst, pytest.raises(StoreRefused, match="NUL character"):
        migrate_store(src, dst)
    with pg(pg_db) as dst:
        assert store_info(dst) is None  # nothing was written


def test_ckpt_migrate_and_verify_move_the_store(tmp_path: Path, pg_db: str) -> None:
    from tests.shared.test_cli import run_here
    from tests.shared.test_store_inspect import make_file

    a, b = tmp_path / "a.sqlite", tmp_path / "b.sqlite"
    make_file(a)
    code, out, err = run_here(["migrate", str(a), pg_db, "--json"])
    assert code == 0, err
    store = json.loads(out)["store"]
    assert (store["items"], store["vectors_copied"], store["embeddings"]) == (7, 7, "copied")
    code, out, err = run_here(["verify", str(a), pg_db, "--json"])
    assert code == 0, err
    check = json.loads(out)
    assert check["ok"] and check["store"]["items"] == 7 and check["store"]["vectors"] == 7
    code, out, _ = run_here(["migrate", str(a), pg_db, "--json"])  # again: resumes, skips all
    assert (json.loads(out)["store"]["items"], json.loads(out)["store"]["items_skipped"]) == (0, 7)
    code, out, err = run_here(["migrate", pg_db, str(b)])  # and back
    assert code == 0 and "store items copied" in out, err
    code, out, _ = run_here(["verify", str(a), str(b)])
    assert code == 0 and "IDENTICAL" in out and "store items compared" in out
    code, out, _ = run_here(["migrate", str(a), str(tmp_path / "c.sqlite"), "--no-store",
                             "--json"])
    assert json.loads(out)["store"] is None

    with pg(pg_db) as conn:  # the copy changes: verify says so, migrate refuses
        conn.execute("UPDATE store SET value = '{\"text\": \"milk\"}' WHERE key = 'k0' "
                     "AND prefix = 'users.alice.preferences'")
    code, out, _ = run_here(["verify", str(a), pg_db])
    assert code == 1 and "DIFFERENT" in out and "users.alice.preferences/k0: value" in out
    code, out, err = run_here(["migrate", str(a), pg_db])
    assert code == 2 and "already holds item 'k0'" in err and len(err.strip().splitlines()) == 1


def test_ckpt_migrate_refuses_before_writing_a_checkpoint(tmp_path: Path) -> None:
    from tests.shared.test_cli import run_here
    from tests.shared.test_store_inspect import make_file

    a, b = tmp_path / "a.sqlite", tmp_path / "b.sqlite"
    make_file(a)
    conn = sqlite3.connect(a)
    conn.execute("INSERT INTO store_migrations (v) VALUES (7)")
    conn.commit()
    conn.close()
    code, _, err = run_here(["migrate", str(a), str(b)])
    assert code == 2 and "store schema version 7" in err
    assert not sqlite3.connect(b).execute("SELECT count(*) FROM checkpoints").fetchone()[0]


def test_an_interrupted_migration_resumes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch
                                          ) -> None:
    import shared.ops.store_migrate as sm

    src = make_sqlite_store(tmp_path / "a.sqlite")
    dst = sqlite_conn(tmp_path / "b.sqlite")
    real, calls = sm._write, []

    def ctrl_c_on_the_third(*args: object) -> None:
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt
        real(*args)

    monkeypatch.setattr(sm, "_write", ctrl_c_on_the_third)
    with pytest.raises(KeyboardInterrupt):
        migrate_store(src, dst, batch=3)
    monkeypatch.setattr(sm, "_write", real)
    assert len(read_items(dst)) == 6  # two whole batches, the third rolled back
    again = migrate_store(src, dst, batch=3)
    assert (again.items, again.items_skipped) == (2, 6)
    assert verify_store(src, dst).ok


def test_several_texts_per_field_and_a_store_without_an_index(tmp_path: Path) -> None:
    src = sqlite_conn(tmp_path / "a.sqlite")
    store = SqliteStore(src, index={**sqlite_index(), "text_fields": ["tags[*]"]})
    store.setup()
    store.put(("kb",), "k", {"tags": ["tea", "trains"]})
    dst = sqlite_conn(tmp_path / "b.sqlite")
    report = migrate_store(src, dst, reembed=True)
    assert report.vectors_reembedded == 2  # fields tags[*].0 and tags[*].1
    check = verify_store(src, dst, reembedded=True)
    assert check.ok and check.vectors_reembedded == 2
    dst.execute("UPDATE store_vectors SET embedding = (SELECT embedding FROM store_vectors "
                "WHERE field_name = 'tags[*].0') WHERE field_name = 'tags[*].1'")
    assert verify_store(src, dst, reembedded=True).vectors_different == 1
    # compared bit for bit: the source's were WordLlama's too, so only the changed one differs
    assert verify_store(src, dst).vectors_different == 1

    plain = sqlite_conn(tmp_path / "plain.sqlite")
    SqliteStore(plain).setup()
    SqliteStore(plain).put(("a",), "b", {"c": 1})
    out = sqlite_conn(tmp_path / "out.sqlite")
    report = migrate_store(plain, out)
    assert (report.items, report.embeddings, report.dims) == (1, "none", None)
    assert "store_vectors" not in {r[0] for r in out.execute(
        "SELECT name FROM sqlite_master")}
    out.execute("DELETE FROM store")
    check = verify_store(plain, out)
    assert check.missing == 1 and not check.ok
    with pytest.raises(StoreRefused, match="holds no LangGraph store"):
        verify_store(sqlite_conn(tmp_path / "none.sqlite"), out)
    out.execute("DELETE FROM store_migrations")
    with pytest.raises(StoreRefused, match="no store_migrations record"):
        store_info(out, "out.sqlite")


def test_ckpt_reembed_and_no_store(tmp_path: Path) -> None:
    from tests.shared.test_cli import run_here
    from tests.shared.test_store_inspect import make_file

    a, c = tmp_path / "a.sqlite", tmp_path / "c.sqlite"
    make_file(a)
    code, out, err = run_here(["migrate", str(a), str(c), "--reembed", "--json"])
    assert code == 0, err
    assert json.loads(out)["store"]["vectors_reembedded"] == 7
    code, out, _ = run_here(["verify", str(a), str(c), "--reembed", "--json"])
    assert code == 0 and json.loads(out)["store"]["vectors_reembedded"] == 7
    code, out, _ = run_here(["verify", str(a), str(c), "--no-store", "--json"])
    assert code == 0 and json.loads(out)["store"] is None
