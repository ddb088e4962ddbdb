"""``ckpt hot``: the hot tier's status, ``--drop`` after a restore, bad input in one sentence."""

from __future__ import annotations

import json
import time

import pytest

from shared.cli import main
from shared.graph import build_chat_graph
from shared.savers.hybrid import HybridSaver


def test_status_and_drop(redis_db: str, pg_db: str, capsys: pytest.CaptureFixture[str]) -> None:
    with HybridSaver.from_conn_strings(redis_db, pg_db, warmup=0.0) as saver:
        config = {"configurable": {"thread_id": "t1"}}
        build_chat_graph(saver).invoke({"messages": [("user", "hi")]}, config)
        assert main(["hot", redis_db, "--json"]) == 0
        status = json.loads(capsys.readouterr().out)
        assert status["threads"] == 1 and status["hot_sets"] == 1
        assert status["checkpoints"] == 3 and status["bytes"] > 0
        before = status["epoch"]
        hits = saver.stats.hits
        assert main(["hot", redis_db, "--drop"]) == 0
        out = capsys.readouterr().out
        assert "New epoch" in out and "operator 1" in out and "threads / hot sets" in out
        assert saver.get_tuple(config) is not None  # still answered, from PostgreSQL
        assert saver.stats.hits == hits  # the hot set cached before the drop was not used
        time.sleep(0.6)  # the new epoch's warm-up (0.5 s)
        assert main(["hot", redis_db, "--json"]) == 0
        assert json.loads(capsys.readouterr().out)["epoch"] != before


def test_bad_input(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["hot", "redis://u:s3cret@127.0.0.1:1/0"]) == 2
    err = capsys.readouterr().err
    assert "Could not read the hot tier" in err and "s3cret" not in err
    assert main(["hot", "http://example.com"]) == 2
    assert "not a Redis URL" in capsys.readouterr().err
    assert main(["hot", "redis://127.0.0.1:1/0", "--prefix", "ckpt:*"]) == 2
    assert "glob" in capsys.readouterr().err
