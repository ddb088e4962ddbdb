"""6.1 Store setup: LangGraph's SqliteStore and PostgresStore, searched by meaning.

Checkpoints hold one thread's working state; a Store holds what must outlive the thread:
a user's preferences, the company's knowledge, conversation summaries. This lesson opens
LangGraph's own stores (``shared/store/stores.py``): ``SqliteStore`` on a file, then
``PostgresStore`` on the M4 server, with a real embedding model that runs offline (WordLlama,
256 dimensions, from its wheel) and, on PostgreSQL, pgvector's HNSW index over the vectors.

It shows the tables ``setup()`` made, each Store call once, a TTL swept while you watch, then
measures on a labelled knowledge base (200 company facts, 40 questions, answers marked;
``shared/workloads/data/company_kb.json``): recall@3 of search by meaning against a keyword
match, on both stores; and, at ``items`` items, search p99 with the HNSW index against an
exact scan of every vector (same queries, interleaved rounds), and how far their answers agree.
"""

from __future__ import annotations

import time
from pathlib import Path

import shared.witness
from shared.bench import interleave
from shared.errors import CheckpointError, refusal
from shared.infra.postgres import create_database, postgres_server
from shared.savers.sqlite import sqlite_schema
from shared.store.embeddings import store_index
from shared.store.stores import (
    open_postgres_store,
    open_sqlite_store,
    postgres_store_schema,
    sqlite_vector_functions,
)
from shared.witness import Witness, fresh_workdir
from shared.workloads import knowledge as kb


def tour(w: Witness, store: kb.BaseStore, name: str) -> None:
    """Every Store call once, on the three kinds of namespace a chat app keeps."""
    prefs, summaries = ("users", "alice", "preferences"), ("users", "alice", "summaries")
    store.put(prefs, "language", {"text": "Alice prefers answers in Dutch", "kind": "language"})
    store.put(prefs, "units", {"text": "Alice uses metric units", "kind": "units"})
    store.put(("users", "bob", "preferences"), "language", {"text": "Bob prefers English",
                                                            "kind": "language"})
    store.put(summaries, "thread-1", {"text": "Alice asked about parental leave"})
    item = store.get(prefs, "language")
    text = item.value["text"] if item else None
    w.show(f"{name}: get(users/alice/preferences, language) -> {text!r}")
    found = store.search(("users",), filter={"kind": "language"})
    w.show(f"{name}: search(users, filter kind=language) -> "
           f"{sorted('/'.join(i.namespace) for i in found)}")
    spaces = store.list_namespaces(prefix=("users",), max_depth=2)
    w.show(f"{name}: list_namespaces(prefix=users, max_depth=2) -> {sorted(spaces)}")
    store.delete(prefs, "units")
    w.show(f"{name}: delete(users/alice/preferences, units) -> get is "
           f"{store.get(prefs, 'units')}")
    w.metric(f"{name}_filter_hits", len(found), "items", "== 2")
    w.metric(f"{name}_user_namespaces", len(spaces), "namespaces", "== 2")
    w.metric(f"{name}_deleted_gone", store.get(prefs, "units") is None, "", "== yes")


def recall(w: Witness, store: kb.BaseStore, name: str) -> float:
    count, seconds = kb.load_items(store, kb.fact_items())
    _, questions = kb.load_kb()
    semantic = kb.recall_at_k(kb.semantic_search(store), questions)
    w.show(f"{name}: {count} facts loaded in {seconds:.2f} s; recall@3 by meaning "
           f"{semantic:.0%} of {len(questions)} questions")
    return semantic


def main(workdir: Path | None = None, items: int = 100_000, rounds: int = 5,
         ttl_s: float = 2.0, sweep_s: float = 0.5, ef_search: int = 100) -> Witness:
    w = Witness("6.1", "Store setup and search by meaning")
    wd = fresh_workdir(workdir, "m6_s1_store_setup")
    ttl = {"sweep_interval_minutes": sweep_s / 60}  # time-scaled: a sweep every sweep_s
    facts, questions = kb.load_kb()
    keyword = kb.recall_at_k(lambda q: kb.keyword_search(q, facts), questions)
    try:
        # --- SQLite: the M1 kind of file, one store beside the checkpoints -------------------
        with open_sqlite_store(wd / "store.sqlite", index=store_index(["text"]), ttl=ttl) as lite:
            tables = sqlite_schema(lite.conn)
            for table, cols in tables.items():
                w.show(f"sqlite table {table}: {', '.join(c[0] for c in cols)}")
            w.show(f"sqlite vector distances: {sqlite_vector_functions()}")
            tour(w, lite, "sqlite")
            sqlite_recall = recall(w, lite, "sqlite")
            lite.start_ttl_sweeper()
            lite_gone, lite_lag = kb.watch_expiry(lite, lambda: lite.conn.execute(
                "SELECT count(*) FROM store WHERE key = 's1'").fetchone()[0], ttl_s)
            bad_value = refusal(lambda: lite.put(("users", "alice", "preferences"), "x", "Dutch"))
        with open_sqlite_store(wd / "plain.sqlite") as plain:  # no index: no search by meaning
            no_index = refusal(lambda: plain.search(kb.NAMESPACE, query="vacation days"))

        # --- PostgreSQL: the M4 server, vectors in pgvector, an HNSW index -------------------
        with postgres_server(wd / "pg") as server:
            url = create_database(server, "ckpt_m6_s1_store")
            with open_postgres_store(url, index=store_index(["text"]), ttl=ttl) as pg:
                for table, cols in postgres_store_schema(pg.conn).items():
                    w.show(f"postgres table {table}: {', '.join(cols)}")
                hnsw = pg.conn.execute("SELECT indexdef FROM pg_indexes WHERE indexname = %s",
                                       ("store_vectors_embedding_idx",)).fetchone()
                w.show(f"postgres vector index: {hnsw['indexdef'] if hnsw else 'none'}")
                tour(w, pg, "postgres")
                pg_recall = recall(w, pg, "postgres")
                pg.start_ttl_sweeper()
                pg_gone, pg_lag = kb.watch_expiry(pg, lambda: pg.conn.execute(
                    "SELECT count(*) AS n FROM store WHERE key = 's1'").fetchone()["n"], ttl_s)

            # --- scale: load without an index (fast), build HNSW once, time both searches --
            big = create_database(server, "ckpt_m6_s1_scale")
            with open_postgres_store(big, index=store_index(["text"]), ann="flat") as flat:
                loaded, load_s = kb.load_items(flat, [*kb.fact_items(),
                                                      *kb.filler_texts(items - len(facts))])
            started = time.perf_counter()
            with open_postgres_store(big, index=store_index(["text"]),
                                     ef_search=ef_search) as ann, \
                    open_postgres_store(big, index=store_index(["text"])) as exact:
                build_s = time.perf_counter() - started
                # the same table and query; this session's planner may not use the index
                exact.conn.execute("SET enable_indexscan = off")
                cmp = interleave({"hnsw": kb.cycling_search(ann, questions),
                                  "exact": kb.cycling_search(exact, questions)},
                                 calls=len(questions), k=rounds)
                agree = kb.agreement(ann, exact, questions, k=10)
                big_recall = kb.recall_at_k(kb.semantic_search(ann), questions)
                ann.conn.execute("SET hnsw.ef_search = 40")  # pgvector's default
                agree_default = kb.agreement(ann, exact, questions, k=10)
    except CheckpointError as exc:
        w.error = " ".join(str(exc).split())
        return w

    w.show(f"refused: a value that is not a dict -> {bad_value}")
    w.show(f"refused: search(query=...) on a store without an index -> {no_index}")
    w.metric("bad_value_refused", bad_value is not None, "", "== yes")
    w.metric("query_without_index_refused", no_index is not None, "", "== yes")
    w.note("Keyword match: a fact's score is how many of the question's content words it "
           "contains (stop words dropped, plural s cut), top 3 by score. The Store's filter "
           "matches a field exactly: it finds nothing unless the topic is known beforehand.")
    w.metric("keyword_recall_at_3", round(keyword, 3), "", f"< {min(sqlite_recall, pg_recall)}")
    w.metric("sqlite_semantic_recall_at_3", round(sqlite_recall, 3), "", f"> {keyword}")
    w.metric("postgres_semantic_recall_at_3", round(pg_recall, 3), "", f"> {keyword}")
    for name, gone, lag in (("sqlite", lite_gone, lite_lag), ("postgres", pg_gone, pg_lag)):
        w.show(f"{name}: an item with a {ttl_s:g} s TTL was swept {lag:.2f} s after it expired "
               f"(sweeper every {sweep_s:g} s)")
        w.metric(f"{name}_expired_item_gone", gone, "", "== yes")
        w.metric(f"{name}_swept_after_expiry_s", round(lag, 2), "s", f"<= {sweep_s * 2 + 1:g}")
    w.show(f"scale: {loaded:,} items loaded in batches of 1,000 in {load_s:.1f} s "
           f"({loaded / load_s:,.0f} items/s, embedding included); HNSW index built in "
           f"{build_s:.1f} s")
    w.show(f"search p99, {len(questions)} questions a round, interleaved: {cmp.describe()}")
    w.metric("items", loaded, "items", f"== {items}")
    w.metric("load_rate", round(loaded / load_s), "items/s", "> 0")
    w.metric("hnsw_p99_ms", round(cmp["hnsw"].median, 2), "ms")
    w.metric("exact_p99_ms", round(cmp["exact"].median, 2), "ms")
    # Below ~20,000 vectors an exact scan is a few milliseconds of the ~10 ms a search costs
    # (embedding the question, the round trip), so the ratio is printed, not judged.
    w.metric("exact_over_hnsw_p99", round(cmp.ratio("exact", "hnsw"), 2), "x",
             "> 1" if items >= 20_000 else None)
    w.show(f"exact over hnsw p99, round by round: {cmp.ratio_spread('exact', 'hnsw')}")
    w.show(f"HNSW top 10 against the exact top 10: {agree:.1%} with hnsw.ef_search="
           f"{ef_search}, {agree_default:.1%} with pgvector's default 40")
    w.metric("hnsw_recall_at_10_vs_exact", round(agree, 3), "", ">= 0.9")
    w.metric("hnsw_recall_at_10_vs_exact_ef_search_40", round(agree_default, 3), "")
    w.metric("semantic_recall_at_3_among_all_items", round(big_recall, 3), "")
    return w


if __name__ == "__main__":
    raise SystemExit(shared.witness.cli(main))
