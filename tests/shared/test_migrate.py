"""4.3-4.5 Export, import and verify: the witness, ``ckpt migrate``/``ckpt verify``, both paths."""

from __future__ import annotations

import json
import shutil
import sqlite3
from pathlib import Path
from typing import Annotated, TypedDict

import psycopg
import pytest
from langgraph.channels.delta import DeltaChannel
from langgraph.checkpoint.postgres import PostgresSaver
from langgraph.graph import END, START, StateGraph

from shared.cli import main as ckpt
from shared.graph import Ledger, build_chat_graph
from shared.infra.postgres import create_database
from shared.ops.migrate import (
    MigrationConflict,
    count_rows,
    migrate,
    row_digests,
    sample_thread_ids,
    thread_ids,
    verify,
)
from shared.savers import open_sqlite_saver
from shared.workloads.demo import build_demo_source

# --- the witness --------------------------------------------------------------------------


# --- a small source from real graph runs, shared by the tests below ------------------------


@pytest.fixture(scope="module")
def source(tmp_path_factory: pytest.TempPathFactory) -> Path:
    db = tmp_path_factory.mktemp("src") / "checkpoints.sqlite"
    build_demo_source(db, Ledger(db.with_name("ledger.jsonl")), threads=6, turns=2)
    return db


def _rows(db: Path | str) -> dict[str, int]:
    if isinstance(db, Path):
        with open_sqlite_saver(db) as saver:
            return count_rows(saver) or {}
    with PostgresSaver.from_conn_string(db) as saver:
        return count_rows(saver) or {}


# --- both paths write the same thing ---------------------------------------------------------


def test_batched_and_public_api_paths_are_identical(source: Path, pg_url: str,
                                                    tmp_path: Path) -> None:
    fast_url, slow_url = (create_database(pg_url, f"t_m4_paths_{k}") for k in ("fast", "slow"))
    with open_sqlite_saver(source) as src, PostgresSaver.from_conn_string(fast_url) as fast, \
            PostgresSaver.from_conn_string(slow_url) as slow, \
            open_sqlite_saver(tmp_path / "fast.sqlite") as back_fast, \
            open_sqlite_saver(tmp_path / "slow.sqlite") as back_slow:
        a, b = migrate(src, fast), migrate(src, slow, batched=False)
        assert (a.path, b.path) == ("batched (PostgreSQL), stored bytes", "public API")
        assert (a.checkpoints, a.writes, a.blobs) == (b.checkpoints, b.writes, b.blobs)
        va, vb = verify(src, fast).to_dict(), verify(src, slow).to_dict()
        va.pop("seconds"), vb.pop("seconds")
        assert va == vb and va["ok"] and va["checkpoints"] == a.checkpoints
        assert verify(fast, slow).ok
        assert row_digests(fast) == row_digests(slow)  # byte for byte what put() writes
        # and the rollback direction, into SQLite
        c, d = migrate(fast, back_fast), migrate(fast, back_slow, batched=False)
        assert (c.path, d.path) == ("batched (SQLite), stored bytes", "public API")
        assert verify(src, back_fast).ok and verify(src, back_slow).ok
        assert verify(back_fast, back_slow).ok and verify(back_slow, back_fast).ok
        # Not byte-equal: the public API re-serializes the dict PostgreSQL loaded (JSONB's key
        # order), the batched path joins the stored bytes in LangGraph's own key order.
        with open_sqlite_saver(tmp_path / "direct.sqlite") as direct:
            migrate(src, direct)
            assert row_digests(direct) == row_digests(src)  # the very rows the graphs wrote


def test_idempotent_and_completes_a_partial_thread(source: Path, pg_db: str) -> None:
    with open_sqlite_saver(source) as src, PostgresSaver.from_conn_string(pg_db) as pg:
        first = migrate(src, pg)
        before = count_rows(pg)
        again = migrate(src, pg)
        assert (again.threads, again.threads_skipped) == (0, first.threads)
        assert count_rows(pg) == before
        # a thread holding only part of its checkpoints (as after an older, killed copy)
        pg.conn.execute("DELETE FROM checkpoints WHERE thread_id = 'chat-00001' AND "
                        "checkpoint_id = (SELECT max(checkpoint_id) FROM checkpoints WHERE "
                        "thread_id = 'chat-00001')")
        assert not verify(src, pg).ok
        third = migrate(src, pg)
        assert (third.threads, third.threads_skipped) == (1, first.threads - 1)
        assert count_rows(pg) == before and verify(src, pg).ok


class DeltaState(TypedDict):
    items: Annotated[list, DeltaChannel(lambda s, ws: [*s, *(x for w in ws for x in w)],
                                        snapshot_frequency=3)]
    n: int


def test_delta_channel_threads_keep_their_values(tmp_path: Path, pg_db: str) -> None:
    builder = StateGraph(DeltaState).add_node("add", lambda s: {"items": [s["n"]],
                                                                "n": s["n"] + 1})
    builder.add_edge(START, "add").add_edge("add", END)
    config = {"configurable": {"thread_id": "d"}}
    with open_sqlite_saver(tmp_path / "delta.sqlite") as src, \
            PostgresSaver.from_conn_string(pg_db) as pg:
        graph = builder.compile(checkpointer=src)
        for i in range(7):
            graph.invoke({"n": i}, config)
        history = {s.config["configurable"]["checkpoint_id"]: s.values
                   for s in graph.get_state_history(config)}
        migrate(src, pg)
        assert verify(src, pg).ok
        on_pg = builder.compile(checkpointer=pg)
        assert {s.config["configurable"]["checkpoint_id"]: s.values
                for s in on_pg.get_state_history(config)} == history
        on_pg.invoke({"n": 7}, config)
        assert on_pg.get_state(config).values["items"] == list(range(8))


# --- ckpt migrate / ckpt verify ----------------------------------------------------------------


def test_cli_help(capsys: pytest.CaptureFixture[str]) -> None:
    for command, words in (("migrate", ("SRC", "DST", "--batch", "resume")),
                           ("verify", ("SRC", "DST", "--sample", "--seed"))):
        with pytest.raises(SystemExit) as exc:
            ckpt([command, "--help"])
        assert exc.value.code == 0
        out = capsys.readouterr().out
        assert all(w in out for w in words), out


def test_cli_migrate_verify_and_sample(source: Path, pg_db: str,
                                       capsys: pytest.CaptureFixture[str]) -> None:
    assert ckpt(["migrate", f"sqlite:///{source}", pg_db, "--batch", "7", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["checkpoints"] == _rows(source)["checkpoints"]
    assert report["batches"] >= 2 and report["destination_rows"]["checkpoints"] == \
        report["checkpoints"]
    assert ckpt(["verify", str(source), pg_db]) == 0
    assert "IDENTICAL" in capsys.readouterr().out
    assert ckpt(["verify", str(source), pg_db, "--sample", "3", "--seed", "5", "--json"]) == 0
    sampled = json.loads(capsys.readouterr().out)
    assert sampled["sampled"] and sampled["threads"] == 3 and sampled["ok"]
    with open_sqlite_saver(source) as src:
        assert sample_thread_ids(src, 3, seed=5) == sample_thread_ids(src, 3, seed=5)
        assert len(set(sample_thread_ids(src, 3, seed=5))) == 3
    with psycopg.connect(pg_db, autocommit=True) as conn:  # one changed write is found
        conn.execute("UPDATE checkpoint_writes SET blob = '\\x00' WHERE ctid = "
                     "(SELECT min(ctid) FROM checkpoint_writes WHERE type = 'msgpack')")
    assert ckpt(["verify", str(source), pg_db, "--json"]) == 1
    found = json.loads(capsys.readouterr().out)
    assert found["mismatches"] == 1 and "pending_writes differ" in found["examples"][0]


def _one_line_error(capsys: pytest.CaptureFixture[str], *argv: str) -> str:
    assert ckpt(list(argv)) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("ckpt: ") and "\n" not in err, err
    return err


def test_cli_bad_urls_are_one_masked_sentence(source: Path, pg_url: str, tmp_path: Path,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    port = pg_url.rsplit(":", 1)[1].split("/")[0]
    for url in ("postgresql://bob:s3cret-pw@127.0.0.1:1/agents",  # nobody listens there
                f"postgresql://nobody_here:s3cret-pw@127.0.0.1:{port}/postgres",  # no such role
                "postgresql://bob:s3cret-pw@/agents",  # no host
                "mysql://bob:s3cret-pw@db/agents"):  # not a database we migrate
        err = _one_line_error(capsys, "migrate", str(source), url)
        assert "s3cret-pw" not in err and "***" in err, err
    err = _one_line_error(capsys, "migrate", "postgresql://bob:s3cret-pw@127.0.0.1:1/a",
                          str(tmp_path / "new.sqlite"))
    assert "source" in err and "s3cret-pw" not in err
    assert not (tmp_path / "new.sqlite").exists()  # nothing written


def test_cli_refuses_a_source_that_is_not_a_checkpoint_database(
        source: Path, pg_db: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    text = tmp_path / "notes.txt"
    text.write_text("hello")
    other = tmp_path / "other.sqlite"
    with sqlite3.connect(other) as conn:
        conn.execute("CREATE TABLE users (id INTEGER)")
    dst = tmp_path / "dst.sqlite"
    for src, words in ((text, "not a SQLite database"), (other, "no LangGraph checkpoint tables"),
                       (tmp_path / "missing.sqlite", "does not exist"),
                       (pg_db, "no LangGraph checkpoint tables")):
        err = _one_line_error(capsys, "migrate", str(src), str(dst))
        assert words in err, err
        assert not dst.exists()  # nothing written
    assert "same" in _one_line_error(capsys, "migrate", str(source), str(source))
    assert "--batch" in _one_line_error(capsys, "migrate", str(other), str(dst), "--batch", "0")


@pytest.mark.parametrize("kind", ["sqlite", "postgres"])
def test_cli_refuses_different_data_for_a_thread(source: Path, pg_db: str, tmp_path: Path,
                                                 kind: str,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    dst: Path | str = tmp_path / "dst.sqlite" if kind == "sqlite" else pg_db
    with (open_sqlite_saver(dst) if isinstance(dst, Path)
          else PostgresSaver.from_conn_string(dst)) as saver:
        if kind == "postgres":
            saver.setup()
        build_chat_graph(saver).invoke({"messages": [("user", "I am Zoe")]},
                                       {"configurable": {"thread_id": "chat-00004"}})
    before = _rows(dst)
    err = _one_line_error(capsys, "migrate", str(source), str(dst))
    assert "'chat-00004'" in err and "nothing was written" in err, err
    assert _rows(dst) == before  # not one row, not even for the threads before it
    with open_sqlite_saver(source) as src, (
            open_sqlite_saver(dst) if isinstance(dst, Path)
            else PostgresSaver.from_conn_string(dst)) as saver:
        with pytest.raises(MigrationConflict):
            migrate(src, saver, batched=False)
        assert thread_ids(saver) == ["chat-00004"]


def test_cli_verify_needs_an_existing_copy(source: Path, tmp_path: Path,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    copy = tmp_path / "copy.sqlite"
    assert "does not exist" in _one_line_error(capsys, "verify", str(source), str(copy))
    assert not copy.exists()
    shutil.copy(source, copy)
    assert ckpt(["verify", str(source), str(copy)]) == 0
