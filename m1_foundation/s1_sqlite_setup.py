"""1.1 SQLite setup: one file, two tables, WAL mode, and a checkpoint you can read back.

Proves:
- ``SqliteSaver.from_conn_string`` is a *context manager* (the seed's
  ``checkpointer = SqliteSaver.from_conn_string(...)`` hands you a generator, not a saver);
- ``setup()`` creates the ``checkpoints`` and ``writes`` tables and turns on WAL;
- a graph run through the saver leaves rows that a second, independent connection reads;
- a database path in a missing directory is refused with one clear sentence, creating nothing.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

from langgraph.checkpoint.sqlite import SqliteSaver

import shared.witness
from shared.errors import DatabaseLocationError
from shared.graph import build_chat_graph
from shared.savers import open_sqlite_saver, sqlite_schema
from shared.witness import Witness, fresh_workdir


def main(workdir: Path | None = None) -> Witness:
    w = Witness("1.1", "SQLite checkpointer setup")
    wd = fresh_workdir(workdir, "m1_s1_sqlite_setup")
    db = wd / "checkpoints.sqlite"

    # --- the seed's snippet, on today's LangGraph ------------------------------------
    not_a_saver = SqliteSaver.from_conn_string(str(db))
    w.show(f"SqliteSaver.from_conn_string(...) returns {type(not_a_saver).__name__}, "
           "so it must be used with `with`")

    # --- set up the file and run one turn through it ---------------------------------
    with SqliteSaver.from_conn_string(str(db)) as saver:
        saver.setup()
        graph = build_chat_graph(saver)
        reply = graph.invoke({"messages": [("user", "Hello, my name is Alice.")]},
                             {"configurable": {"thread_id": "setup-demo"}})
    w.show(f"assistant: {reply['messages'][-1].content}")

    # --- read the file back with a plain sqlite3 connection --------------------------
    with sqlite3.connect(db) as conn:
        schema = sqlite_schema(conn)
        journal_mode = conn.execute("PRAGMA journal_mode").fetchone()[0]
        rows = conn.execute("SELECT count(*) FROM checkpoints").fetchone()[0]
        write_rows = conn.execute("SELECT count(*) FROM writes").fetchone()[0]
    conn.close()
    for table in ("checkpoints", "writes"):
        cols = ", ".join(f"{n} {t}{' PK' if pk else ''}" for n, t, _, pk in schema.get(table, []))
        w.show(f"{table}({cols})")

    w.metric("tables_created", sum(t in schema for t in ("checkpoints", "writes")), "of 2",
             "== 2")
    w.metric("journal_mode", journal_mode, target="== wal")
    w.metric("checkpoint_rows_after_one_turn", rows, "rows", ">= 1")
    w.metric("write_rows_after_one_turn", write_rows, "rows")
    w.note("WAL is set by setup() itself (PRAGMA journal_mode=WAL) and is stored in the file: "
           "every later connection, including this plain sqlite3 one, reads 'wal'.")

    # --- bad input: a directory that does not exist ----------------------------------
    missing = wd / "no-such-dir" / "checkpoints.sqlite"
    try:
        with open_sqlite_saver(missing):
            refused = False
    except DatabaseLocationError as exc:
        refused = True
        w.show(f"missing directory -> {exc}")
    w.metric("missing_dir_refused", refused, target="== yes")
    w.metric("files_created_by_refusal", int(missing.parent.exists()), "paths", "== 0")
    return w


if __name__ == "__main__":
    raise SystemExit(shared.witness.cli(main))
