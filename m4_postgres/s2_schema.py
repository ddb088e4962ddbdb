"""4.2 PostgreSQL schema: what ``PostgresSaver.setup()`` creates, and why it stores less.

``setup()`` runs on a fresh database of the server (``DATABASE_URL`` or the embedded one);
its tables, columns, indexes and ``checkpoint_migrations`` are read from the catalog next to
SQLite's two tables; a second ``setup()`` applies nothing. The shared chat graph then holds
one conversation on both savers. PostgreSQL keeps channel values in ``checkpoint_blobs`` keyed
by (thread, ns, channel, version), written only when a channel's version changes, and inlines
primitives in the ``checkpoints`` JSONB; SQLite writes the whole state into every checkpoint
row. Rows and bytes (every column of every row, read from each database) are compared.
"""

from __future__ import annotations

from contextlib import ExitStack
from pathlib import Path
from typing import Any

from langchain_core.messages import HumanMessage
from langgraph.checkpoint.base import empty_checkpoint
from langgraph.checkpoint.postgres.base import MIGRATIONS
from psycopg import sql

import shared.witness
from shared.errors import CheckpointError
from shared.graph import build_chat_graph
from shared.infra.postgres import create_database, postgres_server
from shared.llm import OfflineChatModel
from shared.savers import open_postgres_saver, open_sqlite_saver, sqlite_schema, table_bytes
from shared.witness import Witness, fresh_workdir

SAYINGS = ["Hi, my name is Alice.", "I live in Lyon.", "What is my name?",
           "My favourite colour is green.", "Where do I live?", "I work as a baker."]


def pg_bytes(conn: Any, thread_id: str) -> dict[str, tuple[int, int]]:
    """(rows, bytes) of each data table for one thread: every column of every row, counted
    as SQLite's ``table_bytes`` counts them (JSONB as its text, before TOAST compression)."""
    out = {}
    for table in ("checkpoints", "checkpoint_blobs", "checkpoint_writes"):
        size = sql.SQL(" + ").join(
            sql.SQL("coalesce(octet_length({}{}), 0)").format(
                sql.Identifier(r["c"]), sql.SQL("" if r["d"] in ("bytea", "text") else "::text"))
            for r in conn.execute("SELECT column_name c, data_type d FROM information_schema."
                                  "columns WHERE table_schema = 'public' AND table_name = %s",
                                  (table,)))
        row = conn.execute(sql.SQL("SELECT count(*) n, coalesce(sum({}), 0) b FROM {} WHERE "
                                   "thread_id = %s").format(size, sql.Identifier(table)),
                           (thread_id,)).fetchone()
        out[table] = (row["n"], int(row["b"]))
    return out


def main(workdir: Path | None = None, turns: int = 20) -> Witness:
    w = Witness("4.2", "PostgreSQL schema")
    wd = fresh_workdir(workdir, "m4_s2_schema")
    if turns < 1:
        w.error = f"turns={turns}: the conversation needs at least 1 turn (try --turns 20)."
        return w
    with ExitStack() as stack:
        try:
            url = stack.enter_context(postgres_server(wd / "pg"))
        except CheckpointError as exc:
            w.error = " ".join(str(exc).split())  # psycopg's reason may span lines
            return w
        pg = stack.enter_context(open_postgres_saver(create_database(url, "ckpt_m4_s2_schema")))
        pg.setup()
        versions = [r["v"] for r in pg.conn.execute("SELECT v FROM checkpoint_migrations")]
        pg.setup()  # again: every migration is recorded, so none runs twice
        again = pg.conn.execute("SELECT count(*) n FROM checkpoint_migrations").fetchone()["n"]
        columns = {r["t"]: r["c"] for r in pg.conn.execute(  # name type, ! for NOT NULL
            "SELECT table_name t, string_agg(column_name || ' ' || data_type || CASE is_nullable "
            "WHEN 'NO' THEN '!' ELSE '' END, ', ' ORDER BY ordinal_position) c FROM "
            "information_schema.columns WHERE table_schema = 'public' GROUP BY table_name")}
        indexes = [(r["indexname"], r["c"]) for r in pg.conn.execute(
            "SELECT indexname, substring(indexdef FROM '\\((.*)\\)') c FROM pg_indexes "
            "WHERE schemaname = 'public' ORDER BY indexname")]
        lite = stack.enter_context(open_sqlite_saver(wd / "checkpoints.sqlite"))
        lite_tables = sqlite_schema(lite.conn)

        # --- one conversation on both savers, turn by turn; payload bytes after each ----------
        chat = {"configurable": {"thread_id": "chat"}}
        graphs = [build_chat_graph(s, OfflineChatModel()) for s in (pg, lite)]
        growth = [(0, 0)]
        for turn in range(turns):
            for graph in graphs:
                graph.invoke({"messages": [HumanMessage(SAYINGS[turn % len(SAYINGS)])]}, chat)
            growth.append((sum(b for _, b in pg_bytes(pg.conn, "chat").values()),
                           sum(t["bytes"] for t in table_bytes(lite.conn, "chat").values())))
        said = [[(m.type, m.content) for m in g.get_state(chat).values["messages"]] for g in graphs]
        pg_rows, lite_rows = pg_bytes(pg.conn, "chat"), table_bytes(lite.conn, "chat")
        rows = pg.conn.execute("SELECT checkpoint->'channel_versions' v, checkpoint->"
                               "'channel_values' i FROM checkpoints WHERE thread_id = 'chat'")
        versions_of, inline = zip(*((r["v"], set(r["i"])) for r in rows), strict=True)
        blobbed = [r["channel"] for r in pg.conn.execute(
            "SELECT channel FROM checkpoint_blobs WHERE thread_id = 'chat'")]
        copies = sum("messages" in t.checkpoint["channel_values"] for t in lite.list(chat))

        # --- the inlining rule on one hand-made checkpoint: primitives stay in the row --------
        values = {"topic": "billing", "retries": 3, "score": 0.5, "urgent": True,
                  "messages": [HumanMessage("hello", id="m1")], "files": {"a.txt": b"abc"}}
        cp = {**empty_checkpoint(), "channel_values": values,
              "channel_versions": {k: pg.get_next_version(None, None) for k in values}}
        saved = pg.put({"configurable": {"thread_id": "inline", "checkpoint_ns": ""}}, cp, {},
                       cp["channel_versions"])
        in_json = sorted(pg.conn.execute("SELECT checkpoint->'channel_values' v FROM checkpoints "
                                         "WHERE thread_id = 'inline'").fetchone()["v"])
        in_blobs = sorted(r["channel"] for r in pg.conn.execute(
            "SELECT channel FROM checkpoint_blobs WHERE thread_id = 'inline'"))
        loaded = pg.get_tuple(saved)

    msg_versions = {v["messages"] for v in versions_of if "messages" in v}
    refs, msg_blobs = sum("messages" in v for v in versions_of), blobbed.count("messages")
    inlined, channels = set().union(*inline), set().union(*versions_of)
    for table in sorted(columns):
        w.show(f"postgres {table}({columns[table]})")
    w.show("postgres indexes: " + "; ".join(f"{n} ({c})" for n, c in indexes))
    for table, cols in lite_tables.items():
        w.show(f"sqlite {table}({', '.join(f'{c} {t}' + '!' * nn for c, t, nn, _ in cols)})")
    w.show(f"checkpoint_migrations: v = {min(versions)}..{max(versions)}, {len(versions)} rows")
    w.show("payload bytes after turn " + ", ".join(
        f"{i}: postgres {growth[i][0]:,} / sqlite {growth[i][1]:,}"
        for i in sorted({1, (turns + 1) // 2, turns})))
    w.show(f"chat: messages in {msg_blobs} blob rows for {len(msg_versions)} versions, "
           f"referenced by {refs} checkpoints; SQLite holds {copies} whole copies. Inline: "
           f"{sorted(inlined)}; in blobs: {sorted(set(blobbed))}")
    w.show(f"hand-made checkpoint: inline in the JSONB {in_json}; in checkpoint_blobs {in_blobs}")
    ckpts = pg_rows["checkpoints"][0]
    pg_total, lite_total = (sum(b for _, b in pg_rows.values()),
                            sum(t["bytes"] for t in lite_rows.values()))
    w.metric("pg_tables", len(columns), "tables", "== 4")
    w.metric("sqlite_tables", len(lite_tables), "tables", "== 2")
    w.metric("names_shared_with_sqlite", ",".join(set(columns) & set(lite_tables)),
             target="== checkpoints")
    w.metric("pg_primary_keys", sum(n.endswith("_pkey") for n, _ in indexes), "indexes", "== 4")
    w.metric("pg_thread_id_indexes", sum(c == "thread_id" for _, c in indexes), "indexes", "== 3")
    w.metric("migrations_recorded", len(versions), "versions", f"== {len(MIGRATIONS)}")
    w.metric("migrations_added_by_second_setup", again - len(versions), "versions", "== 0")
    w.metric("same_conversation", said[0] == said[1] and len(said[0]) == 2 * turns,
             target="== yes")
    w.metric("checkpoints_pg", ckpts, "rows", f"== {lite_rows['checkpoints']['rows']}")
    w.metric("writes_pg", pg_rows["checkpoint_writes"][0], "rows",
             f"== {lite_rows['writes']['rows']}")
    w.metric("blob_rows_pg", len(blobbed), "rows", f"< {ckpts * len(channels)}")
    w.metric("messages_blob_rows", msg_blobs, "rows", f"== {len(msg_versions)}")
    w.metric("messages_copies_sqlite", copies, "copies", f"> {msg_blobs}")
    w.metric("inlined_channels_with_blobs", len(inlined & set(blobbed)), "channels", "== 0")
    w.metric("demo_inlined", ",".join(in_json), target="== retries,score,topic,urgent")
    w.metric("demo_blobs", ",".join(in_blobs), target="== files,messages")
    w.metric("demo_loads_equal", loaded is not None
             and loaded.checkpoint["channel_values"] == values, target="== yes")
    w.metric("payload_bytes_pg", pg_total, "bytes")
    w.metric("payload_bytes_sqlite", lite_total, "bytes")
    w.metric("pg_to_sqlite_bytes", round(pg_total / lite_total, 3), "x", "< 1")
    w.metric("last_turn_bytes_pg", growth[-1][0] - growth[-2][0], "bytes")
    w.metric("last_turn_bytes_sqlite", growth[-1][1] - growth[-2][1], "bytes")
    w.note("The seed's 'identical schema to SQLite' with tables checkpoints and writes: no. "
           "Four tables; writes are checkpoint_writes; channel values live in checkpoint_blobs.")
    w.note("Each messages version is still a whole copy of the conversation: PostgreSQL skips "
           "only the copy in each turn's input checkpoint, where messages did not change (two "
           "copies a turn against SQLite's three).")
    return w


if __name__ == "__main__":
    raise SystemExit(shared.witness.cli(main))
