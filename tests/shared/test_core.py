"""The shared library: witness rules, the offline model, savers, resume, the ckpt command."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from langchain_core.messages import AIMessage, HumanMessage

from shared import cli as ckpt
from shared.errors import DatabaseLocationError, NothingToResume
from shared.graph import Ledger, build_approval_graph, build_chat_graph
from shared.llm import OfflineChatModel, get_chat_model
from shared.savers import open_sqlite_saver
from shared.threads import resume
from shared.witness import Metric, Witness, cli

# --- witness -------------------------------------------------------------------------------

@pytest.mark.parametrize(("value", "target", "met"), [
    (3, "== 3", True), (3, "<= 2", False), (0.5, "< 1", True), (9.2, ">= 9", True),
    ("wal", "== wal", True), ("delete", "== wal", False), (True, "== yes", True),
    (False, "== yes", False), (1, "!= 0", True), (5, "> 5", False)])
def test_metric_targets(value, target, met) -> None:
    assert Metric("m", value, target=target).met is met


def test_metric_without_target_is_informational() -> None:
    assert Metric("m", 1.5).met is None


def test_malformed_target_is_refused() -> None:
    with pytest.raises(ValueError, match="must start with one of"):
        Metric("m", 1, target="about 3")


def test_witness_passes_only_when_every_target_met() -> None:
    w = Witness("0.0", "t")
    assert not w.passed  # nothing measured proves nothing
    w.metric("a", 1, target="== 1")
    w.metric("info", 7)
    assert w.passed
    w.metric("b", 2, target="<= 1")
    assert not w.passed
    with pytest.raises(ValueError, match="twice"):
        w.metric("a", 1)


def test_witness_json_round_trip() -> None:
    w = Witness("9.9", "t", evidence=["e"])
    w.metric("a", 1.5, "ms", "<= 2")
    again = Witness.from_dict(json.loads(json.dumps(w.to_dict())))
    assert again.to_dict() == w.to_dict()


def test_cli_exit_status_and_json(tmp_path: Path) -> None:
    def main(workdir: Path | None = None, n: int = 1) -> Witness:
        w = Witness("0.1", "cli")
        w.metric("n", n, target="== 1")
        return w

    out = tmp_path / "w.json"
    assert cli(main, ["--n", "1", "--json", str(out)]) == 0
    assert json.loads(out.read_text())["passed"] is True
    assert cli(main, ["--n", "2"]) == 1


# --- offline model -------------------------------------------------------------------------

def test_offline_model_answers_from_history_only() -> None:
    model = OfflineChatModel()
    history = [HumanMessage("Hi, my name is Alice."), AIMessage("Nice to meet you, Alice."),
               HumanMessage("What's my name?")]
    assert model.invoke(history).content == "Your name is Alice."
    assert model.invoke([HumanMessage("What's my name?")]).content == "I don't know your name yet."
    assert model.calls == 2


def test_offline_model_latest_fact_wins_and_latency() -> None:
    model = OfflineChatModel(latency_s=0.05)
    import time
    start = time.perf_counter()
    reply = model.invoke([HumanMessage("My favourite colour is green."),
                          HumanMessage("Actually, my favourite colour is blue."),
                          HumanMessage("What is my favourite colour?")])
    assert reply.content == "Your favourite colour is blue."
    assert time.perf_counter() - start >= 0.05


async def test_offline_model_async_latency_overlaps() -> None:
    import asyncio
    import time
    model = OfflineChatModel(latency_s=0.2)
    start = time.perf_counter()
    await asyncio.gather(*(model.ainvoke([HumanMessage("hi")]) for _ in range(5)))
    assert time.perf_counter() - start < 0.2 * 5 / 2  # overlapped, not serial
    assert model.calls == 5


def test_real_model_needs_explicit_opt_in(monkeypatch) -> None:
    monkeypatch.delenv("CKPT_CHAT_MODEL", raising=False)
    assert isinstance(get_chat_model(), OfflineChatModel)


# --- savers: bad locations -----------------------------------------------------------------

def test_missing_directory_is_refused_and_nothing_created(tmp_path: Path) -> None:
    target = tmp_path / "missing" / "db.sqlite"
    with pytest.raises(DatabaseLocationError, match="does not exist"), open_sqlite_saver(target):
        pass
    assert list(tmp_path.iterdir()) == []


def test_file_as_directory_is_refused(tmp_path: Path) -> None:
    (tmp_path / "afile").write_text("x")
    with pytest.raises(DatabaseLocationError, match="is a file"), \
            open_sqlite_saver(tmp_path / "afile" / "db.sqlite"):
        pass


def test_unwritable_directory_is_refused(tmp_path: Path) -> None:
    if os.geteuid() == 0:
        # root ignores permission bits; /proc refuses new files even to root
        target = Path("/proc/checkpoints.sqlite")
    else:
        locked = tmp_path / "locked"
        locked.mkdir(mode=0o500)
        target = locked / "db.sqlite"
    with pytest.raises(DatabaseLocationError), open_sqlite_saver(target):
        pass
    assert not target.exists()


def test_directory_as_database_is_refused(tmp_path: Path) -> None:
    with pytest.raises(DatabaseLocationError, match="is a directory"), open_sqlite_saver(tmp_path):
        pass


# --- resume --------------------------------------------------------------------------------

def test_resume_refusals_change_nothing(tmp_path: Path) -> None:
    db = tmp_path / "db.sqlite"
    ledger = Ledger(tmp_path / "ledger.jsonl")
    with open_sqlite_saver(db) as saver:
        graph = build_approval_graph(saver, ledger, "interrupt")
        config = {"configurable": {"thread_id": "t"}}
        with pytest.raises(NothingToResume, match="no checkpoint"):
            resume(graph, config)
        graph.invoke({"request": "Refund order 1 for 10 EUR"}, config)
        count = len(list(saver.list(config)))
        with pytest.raises(NothingToResume, match="waiting for an answer"):
            resume(graph, config)  # interrupt() needs Command(resume=...)
        assert len(list(saver.list(config))) == count
        assert ledger.count("t", "executed")["execute_action"] == 0


def test_resume_of_finished_chat_is_refused(tmp_path: Path) -> None:
    with open_sqlite_saver(tmp_path / "db.sqlite") as saver:
        graph = build_chat_graph(saver)
        config = {"configurable": {"thread_id": "c"}}
        graph.invoke({"messages": [("user", "hello")]}, config)
        before = [c.config for c in saver.list(config)]
        with pytest.raises(NothingToResume, match="nothing pending"):
            resume(graph, config)
        assert [c.config for c in saver.list(config)] == before


# --- ckpt ----------------------------------------------------------------------------------

def test_ckpt_inspect(tmp_path: Path, capsys) -> None:
    db = tmp_path / "db.sqlite"
    with open_sqlite_saver(db) as saver:
        build_chat_graph(saver).invoke({"messages": [("user", "hi")]},
                                       {"configurable": {"thread_id": "one"}})
    assert ckpt.main(["inspect", str(db), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["threads"][0]["thread_id"] == "one"
    assert report["threads"][0]["checkpoints"] == 3
    assert report["tables"]["checkpoints"]["rows"] == 3
    assert report["tables"]["checkpoints"]["bytes"] > 0
    assert report["file_bytes"] >= report["tables"]["checkpoints"]["bytes"]
    assert len(report["largest_checkpoints"]) == 3
    assert ckpt.main(["inspect", str(db), "--thread", "one", "--json"]) == 0
    history = json.loads(capsys.readouterr().out)["history"]
    assert [r["source"] for r in history] == ["loop", "loop", "input"]
    assert ckpt.main(["inspect", str(db)]) == 0  # the tables render too
    assert "largest 5 checkpoints" in capsys.readouterr().out


@pytest.mark.parametrize("make_bad", ["missing", "not-sqlite", "no-tables"])
def test_ckpt_inspect_bad_input(tmp_path: Path, capsys, make_bad: str) -> None:
    import sqlite3
    path = tmp_path / "x.sqlite"
    if make_bad == "not-sqlite":
        path.write_text("hello")
    elif make_bad == "no-tables":
        sqlite3.connect(path).close()
        with sqlite3.connect(path) as c:
            c.execute("CREATE TABLE other (x)")
        c.close()
    assert ckpt.main(["inspect", str(path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("ckpt: ") and err.count("\n") == 1
    if make_bad == "missing":
        assert not path.exists()  # read-only: never creates the file


def test_ckpt_unknown_thread(tmp_path: Path, capsys) -> None:
    db = tmp_path / "db.sqlite"
    with open_sqlite_saver(db):
        pass
    assert ckpt.main(["inspect", str(db), "--thread", "nope"]) == 2
    assert "no checkpoints" in capsys.readouterr().err
