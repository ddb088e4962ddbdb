"""Issue 8, items 1-3: the operations tools never run stored bytes, keep every value's type,
and move every thread (or refuse before writing anything)."""

from __future__ import annotations

import importlib.util
import json
import os
import pickle
import sqlite3
import subprocess
import sys
import textwrap
from pathlib import Path

import ormsgpack
import psycopg
import pytest
from langgraph.checkpoint.base import empty_checkpoint
from langgraph.checkpoint.postgres import PostgresSaver
from langgraph.checkpoint.serde.jsonplus import JsonPlusSerializer

from shared import ROOT
from shared.cli import main as ckpt
from shared.ops.migrate import MigrationRefused, migrate, row_digests, thread_ids, verify
from shared.savers import open_sqlite_saver
from shared.savers.inert import UnreadableValue, join_checkpoint, split_checkpoint

# --- 1. stored bytes never execute -------------------------------------------------------------


def _evil_ext(marker: Path) -> ormsgpack.Ext:
    """What JsonPlusSerializer decodes as ``os.system("touch <marker>")``."""
    return ormsgpack.Ext(0, ormsgpack.packb(["os", "system", f"touch {marker}"]))


def _plant(db: Path, marker: Path) -> None:
    """A real checkpoint file, plus a row (id not uuid6) and a write naming os.system."""
    with open_sqlite_saver(db) as saver:
        cp = empty_checkpoint()
        saver.put({"configurable": {"thread_id": "good", "checkpoint_ns": ""}}, cp,
                  {"source": "input", "step": -1}, {})
    body = ormsgpack.packb({"v": 4, "ts": "2020-01-01T00:00:00+00:00", "id": "evil-1",
                            "channel_values": {"x": _evil_ext(marker), "n": 3},
                            "channel_versions": {"x": "1", "n": "1"}, "versions_seen": {},
                            "updated_channels": ["x"]})
    conn = sqlite3.connect(db)
    with conn:
        conn.execute("INSERT INTO checkpoints VALUES ('evil', '', 'evil-1', NULL, 'msgpack', ?, "
                     "?)", (body, b'{"source": "loop", "step": 0}'))
        conn.execute("INSERT INTO writes (thread_id, checkpoint_ns, checkpoint_id, task_id, "
                     "task_path, idx, channel, type, value) VALUES ('evil', '', 'evil-1', 'task', "
                     "'', 0, 'x', 'msgpack', ?)", (ormsgpack.packb(_evil_ext(marker)),))
    conn.close()


def test_tampered_rows_never_run_in_any_tool(tmp_path: Path, pg_db: str,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    src, marker = tmp_path / "src.sqlite", tmp_path / "PWNED"
    _plant(src, marker)
    runs = [["migrate", str(src), str(tmp_path / "copy.sqlite"), "--json"],
            ["verify", str(src), str(tmp_path / "copy.sqlite"), "--json"],
            ["migrate", str(src), pg_db, "--json"],
            ["verify", str(src), pg_db, "--json"],
            ["migrate", pg_db, str(tmp_path / "back.sqlite"), "--json"],
            ["verify", pg_db, str(tmp_path / "back.sqlite"), "--json"],
            ["prune", str(src), "--older-than", "1d", "--dry-run", "--json"],
            ["inspect", str(src), "--json"]]
    for argv in runs:
        assert ckpt(argv) == 0, (argv, capsys.readouterr())
        assert not marker.exists(), f"ckpt {argv[0]} ran the planted command"
    out = capsys.readouterr().out
    assert '"ok": true' in out
    with open_sqlite_saver(src) as a, open_sqlite_saver(tmp_path / "copy.sqlite") as b:
        assert row_digests(a) == row_digests(b)  # moved as the same bytes
    with PostgresSaver.from_conn_string(pg_db) as pg:  # the ext value went to a blob unchanged
        blob = pg.conn.execute("SELECT type, blob FROM checkpoint_blobs WHERE thread_id = 'evil' "
                               "AND channel = 'x'").fetchone()
    assert (blob["type"], bytes(blob["blob"])) == ("msgpack", ormsgpack.packb(_evil_ext(marker)))
    # The test is not vacuous: LangGraph's default serializer does run that row.
    JsonPlusSerializer().loads_typed(("msgpack", ormsgpack.packb(_evil_ext(marker))))
    assert marker.exists()


def test_inert_splitter_refuses_objects_where_plain_data_belongs() -> None:
    body = ormsgpack.packb({"v": 4, "id": "x", "channel_values": {},
                            "channel_versions": _evil_ext(Path("/nonexistent"))})
    with pytest.raises(UnreadableValue, match="holds an object"):
        split_checkpoint("msgpack", body)
    with pytest.raises(UnreadableValue, match="'pickle'"):
        split_checkpoint("pickle", b"\x80\x04.")
    with pytest.raises(UnreadableValue, match="end in the middle"):
        split_checkpoint("msgpack", body[:-3])
    fields, values = split_checkpoint("msgpack", ormsgpack.packb(
        {"v": 4, "channel_values": {"b": b"\x00\x01", "m": [_evil_ext(Path("/x"))], "s": "hi"},
         "channel_versions": {}}))
    assert {k: v.type for k, v in values.items()} == {"b": "bytes", "m": "msgpack", "s": "value"}
    assert join_checkpoint(fields, values) == ormsgpack.packb(
        {"v": 4, "channel_values": {"b": b"\x00\x01", "m": [_evil_ext(Path("/x"))], "s": "hi"},
         "channel_versions": {}})


class _Boom:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple:
        return os.system, (f"touch {self.marker}",)


def test_a_pickle_row_is_moved_as_bytes_or_refused_never_loaded(
        tmp_path: Path, pg_db: str, capsys: pytest.CaptureFixture[str]) -> None:
    src, marker = tmp_path / "src.sqlite", tmp_path / "PICKLED"
    with open_sqlite_saver(src) as saver:
        saver.put({"configurable": {"thread_id": "ok", "checkpoint_ns": ""}}, empty_checkpoint(),
                  {"step": 0}, {})
        saver.conn.execute("INSERT INTO checkpoints VALUES ('pickled', '', 'p-1', NULL, "
                           "'pickle', ?, '{}')", (pickle.dumps(_Boom(marker)),))
        saver.conn.commit()
    assert ckpt(["migrate", str(src), str(tmp_path / "copy.sqlite"), "--json"]) == 0
    assert ckpt(["verify", str(src), str(tmp_path / "copy.sqlite"), "--json"]) == 0
    report = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert report["ok"] and report["unreadable"] == 1 and report["checkpoints"] == 2
    # Into PostgreSQL the body would have to be decoded: refused, nothing written.
    assert ckpt(["migrate", str(src), pg_db]) == 2
    err = capsys.readouterr().err.strip()
    assert "'pickled'" in err and "'pickle'" in err and "nothing was written" in err, err
    assert "\n" not in err
    with psycopg.connect(pg_db) as conn:
        assert conn.execute("SELECT to_regclass('checkpoints')").fetchone()[0] is None
    assert not marker.exists()


# --- 2. fidelity: the application's own types, migrated where they cannot be imported ----------

APP_TYPES = '''
from dataclasses import dataclass
from enum import Enum
from pydantic import BaseModel

@dataclass
class Order:
    id: int
    items: list

class Status(Enum):
    OPEN = "open"
    PAID = "paid"

class Customer(BaseModel):
    name: str
    vip: bool
'''

APP = '''
import json, sys
from operator import add
from typing import Annotated, TypedDict
from langgraph.graph import START, StateGraph
from langgraph.checkpoint.postgres import PostgresSaver
from ckpt_app_types import Customer, Order, Status
from shared.savers import graph_serde, open_postgres_saver, open_sqlite_saver

SERDE = graph_serde(("ckpt_app_types", "Order"), ("ckpt_app_types", "Status"),
                    ("ckpt_app_types", "Customer"))

class State(TypedDict, total=False):
    order: Order
    status: Status
    customer: Customer
    log: Annotated[list, add]

def pay(state):
    return {"status": Status.PAID, "log": [Order(state["order"].id + 1, ["receipt"])]}

graph = StateGraph(State).add_node("pay", pay).add_edge(START, "pay")
where, mode = sys.argv[1], sys.argv[2]
opener = open_postgres_saver if where.startswith("postgresql") else open_sqlite_saver
with opener(where, serde=SERDE) as saver:
    app = graph.compile(checkpointer=saver)
    if mode == "write":
        for i in (1, 2):
            app.invoke({"order": Order(i, ["book", i]), "status": Status.OPEN,
                        "customer": Customer(name=f"c{i}", vip=i == 2), "log": []},
                       {"configurable": {"thread_id": f"app-{i}"}})
    out = {}
    for i in (1, 2):
        v = app.get_state({"configurable": {"thread_id": f"app-{i}"}}).values
        out[f"app-{i}"] = {k: [type(x).__name__, repr(x)] for k, x in sorted(v.items())}
    print(json.dumps(out))
'''


def _app(appdir: Path, where: str, mode: str) -> dict:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), str(appdir)])}
    done = subprocess.run([sys.executable, str(appdir / "app.py"), where, mode], env=env,
                          capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_application_types_survive_migration_where_they_cannot_be_imported(
        tmp_path: Path, pg_db: str) -> None:
    appdir = tmp_path / "app"
    appdir.mkdir()
    (appdir / "ckpt_app_types.py").write_text(textwrap.dedent(APP_TYPES))
    (appdir / "app.py").write_text(textwrap.dedent(APP))
    assert importlib.util.find_spec("ckpt_app_types") is None  # the operator cannot import it
    src, copy, back = (str(tmp_path / f"{n}.sqlite") for n in ("src", "copy", "back"))
    original = _app(appdir, src, "write")
    assert original["app-1"]["order"][0] == "Order" and original["app-2"]["status"] == [
        "Status", "<Status.PAID: 'paid'>"]
    assert original["app-1"]["customer"][0] == "Customer"
    assert original["app-1"]["log"] == ["list", "[Order(id=2, items=['receipt'])]"]
    with open_sqlite_saver(src) as s, open_sqlite_saver(copy) as c, \
            PostgresSaver.from_conn_string(pg_db) as pg, open_sqlite_saver(back) as b:
        migrate(s, c)
        assert row_digests(s) == row_digests(c)  # SQLite -> SQLite: the same bytes
        migrate(s, pg)
        migrate(pg, b)
        for x, y in ((s, c), (s, pg), (pg, b), (s, b), (b, s)):
            report = verify(x, y)
            assert report.ok and report.checkpoints > 0, report.examples
        for where in (copy, pg_db, back):  # the application reads its own objects back
            assert _app(appdir, where, "read") == original, where
        # A copy where an object became a plain dict (what decoding without the module
        # produced) is a difference, not IDENTICAL.
        pg.conn.execute(
            "UPDATE checkpoint_blobs SET blob = %s WHERE thread_id = 'app-1' AND "
            "channel = 'customer'", (ormsgpack.packb({"name": "c1", "vip": False}),))
        found = verify(s, pg)
        assert found.mismatches >= 1 and "checkpoint differ" in found.examples[0], found


# --- 3. every thread, or a clear refusal -----------------------------------------------------


def _threads_db(path: Path, ids: list[str]) -> None:
    with open_sqlite_saver(path) as saver:
        for t in ids:
            cp = empty_checkpoint()
            saver.put({"configurable": {"thread_id": t, "checkpoint_ns": ""}}, cp,
                      {"source": "input", "step": -1}, {})
            saver.put_writes({"configurable": {"thread_id": t, "checkpoint_ns": "",
                                               "checkpoint_id": cp["id"]}},
                             [("messages", f"hello {t!r}")], "task-1", "")


def test_empty_and_nul_thread_ids_are_migrated_and_verified(tmp_path: Path) -> None:
    ids = ["", "a\x00b", "a", "plain"]
    _threads_db(tmp_path / "src.sqlite", ids)
    with open_sqlite_saver(tmp_path / "src.sqlite") as src, \
            open_sqlite_saver(tmp_path / "dst.sqlite") as dst:
        assert sorted(thread_ids(src)) == sorted(ids)
        report = migrate(src, dst)
        assert (report.threads, report.checkpoints, report.writes) == (4, 4, 4)
        assert sorted(thread_ids(dst)) == sorted(ids)
        check = verify(src, dst)
        assert check.ok and (check.threads, check.checkpoints, check.pending_writes) == (4, 4, 4)
        assert row_digests(src) == row_digests(dst)
        # A copy holding a thread the source does not have is not identical.
        _threads_db(tmp_path / "dst.sqlite", ["stray"])
        extra = verify(src, dst)
        assert not extra.ok and extra.extra_threads == 1 and "'stray'" in extra.examples[0]


def test_nul_ids_bound_for_postgres_are_refused_before_anything_is_written(
        tmp_path: Path, pg_db: str, capsys: pytest.CaptureFixture[str]) -> None:
    _threads_db(tmp_path / "src.sqlite", ["first", "a\x00b", "z"])
    with open_sqlite_saver(tmp_path / "src.sqlite") as src, \
            PostgresSaver.from_conn_string(pg_db) as pg:
        pg.setup()
        with pytest.raises(MigrationRefused, match=r"'a\\x00b'.*nothing was written"):
            migrate(src, pg)
        assert pg.conn.execute("SELECT count(*) AS n FROM checkpoints").fetchone()["n"] == 0
    assert ckpt(["migrate", str(tmp_path / "src.sqlite"), pg_db]) == 2
    assert "NUL" in capsys.readouterr().err
