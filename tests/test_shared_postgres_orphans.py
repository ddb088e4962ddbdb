"""No orphaned servers: an embedded server stops with its owner, however the owner ends.

Real processes only: an owner is a fresh Python child that starts the server and is then
killed (SIGKILL or SIGTERM); its server must stop, and the next start on the same data
directory must work at once.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psycopg
import pytest

from shared import ROOT
from shared.errors import CheckpointError
from shared.infra import reaper
from shared.infra.postgres import postgres_server

pytestmark = pytest.mark.skipif(not Path("/proc/self/cmdline").exists(), reason="needs /proc")

# The owner: starts the server, prints "URL POSTMASTER_PID SOCKET_DIR", then waits to be killed.
# With argv[2] == "chain", it first installs a SIGTERM handler of its own, which reports
# whether the server was still running when that handler was called, and exits 3.
OWNER = """
import signal, sys, time
from pathlib import Path
from shared.infra import reaper
from shared.infra.postgres import postgres_server
pgdata = Path(sys.argv[1])
if sys.argv[2] == "chain":
    def own(signum, frame):
        print("own handler, server running:", reaper.running(pid), flush=True)
        sys.exit(3)
    signal.signal(signal.SIGTERM, own)
with postgres_server(pgdata) as url:
    lines = (pgdata / "postmaster.pid").read_text().splitlines()
    pid = int(lines[0])
    print(url, pid, lines[4], flush=True)
    time.sleep(600)
"""


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "DATABASE_URL"}  # the embedded server
    env["PYTHONPATH"] = str(ROOT)  # this checkout's `shared`
    return env


def _start_owner(pgdata: Path, mode: str = "plain") -> tuple[subprocess.Popen[str], str, int, Path]:
    owner = subprocess.Popen([sys.executable, "-c", OWNER, str(pgdata), mode], cwd=ROOT,
                             env=_env(), stdout=subprocess.PIPE, text=True)
    fields = owner.stdout.readline().split() if owner.stdout else []
    if len(fields) != 3:
        owner.kill()
        owner.wait()
        pytest.fail(f"the owner did not start its server: {fields}")
    url, pid, socket_dir = fields[0], int(fields[1]), Path(fields[2])
    with psycopg.connect(url, connect_timeout=10) as conn:  # really up, before the kill
        assert conn.execute("SELECT 1").fetchone() == (1,)
    assert pid in _serving(pgdata)
    return owner, url, pid, socket_dir


def _serving(pgdata: Path) -> set[int]:
    """Live processes of a server on ``pgdata``: the postmaster (by its command line) and
    its backends, which all run in the data directory (/proc/PID/cwd)."""
    pids = set()
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit() or not reaper.running(int(proc.name)):
            continue
        try:
            args = (proc / "cmdline").read_bytes().decode(errors="replace").split("\0")
            cwd = os.readlink(proc / "cwd")
        except OSError:  # ended meanwhile
            continue
        if cwd == str(pgdata) or (Path(args[0]).name == "postgres" and str(pgdata) in args):
            pids.add(int(proc.name))
    return pids


@pytest.fixture
def pgdata(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """A data directory; whatever still serves it when the test ends is killed (and failed)."""
    monkeypatch.delenv("DATABASE_URL", raising=False)
    path = (tmp_path / "pg").resolve()
    yield path
    left = _serving(path)
    for pid in left:  # on the old code the orphan survives: do not leak it into the run
        with contextlib.suppress(ProcessLookupError):  # a backend that ended meanwhile
            os.kill(pid, signal.SIGKILL)
    assert not left, f"processes still serving {path}: {sorted(left)}"


def _gone_within(pids: set[int], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while any(reaper.running(p) for p in pids):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def test_sigkilled_owner_server_stops_and_next_start_works_at_once(pgdata: Path) -> None:
    owner, url, pid, socket_dir = _start_owner(pgdata)
    old = _serving(pgdata)

    # While its owner lives, the server is never taken over, and keeps serving.
    with pytest.raises(CheckpointError, match="in use by a running server"), \
            postgres_server(pgdata):
        pass
    with psycopg.connect(url, connect_timeout=10) as conn:
        assert conn.execute("SELECT 2").fetchone() == (2,)

    owner.kill()
    owner.wait()
    assert owner.returncode == -signal.SIGKILL
    sigterm_before = signal.getsignal(signal.SIGTERM)
    with postgres_server(pgdata) as new_url:  # at once, on the same data directory
        with psycopg.connect(new_url, connect_timeout=10) as conn:
            assert conn.execute("SELECT 1").fetchone() == (1,)
        assert _gone_within(old, 5), f"the old server still runs: {sorted(old)}"
        assert not reaper.running(pid)
        assert _serving(pgdata) and not _serving(pgdata) & old
    assert not _serving(pgdata)  # and ours stopped in turn
    assert not socket_dir.exists()  # the dead owner's socket directory was removed
    assert not (pgdata / "postmaster.pid").exists()
    assert signal.getsignal(signal.SIGTERM) == sigterm_before  # our handler is gone again


def test_sigterm_of_owner_stops_server_before_owner_exits(pgdata: Path) -> None:
    owner, _url, pid, socket_dir = _start_owner(pgdata)
    old = _serving(pgdata)
    owner.send_signal(signal.SIGTERM)
    assert owner.wait(timeout=15) == -signal.SIGTERM  # still "killed by SIGTERM"
    assert not reaper.running(pid)  # stopped before the owner died, not after
    assert _gone_within(old, 10), f"the server outlived its owner: {sorted(old)}"
    assert not socket_dir.exists()
    log = (pgdata / "server.log").read_text()
    assert "received fast shutdown request" in log.rsplit("starting PostgreSQL", 1)[1]


def test_sigterm_handler_of_the_owner_still_runs_after_ours(pgdata: Path) -> None:
    owner, _url, pid, _socket_dir = _start_owner(pgdata, "chain")
    owner.send_signal(signal.SIGTERM)
    out, _ = owner.communicate(timeout=15)
    assert owner.returncode == 3  # the owner's own handler decided how to end
    assert "own handler, server running: False" in out  # ... after ours stopped the server
    assert _gone_within({pid}, 10)


# The generic mechanism, as another embedded server (Redis) will use it.
SLEEPER = """
import sys, time
from shared.infra import reaper
guard = reaper.spawn(["sleep", "600"], name="sleep")
print(guard.pid, flush=True)
time.sleep(600)
"""


def test_spawned_server_dies_with_its_sigkilled_owner() -> None:
    owner = subprocess.Popen([sys.executable, "-c", SLEEPER], cwd=ROOT, env=_env(),
                             stdout=subprocess.PIPE, text=True)
    pid = int(owner.stdout.readline()) if owner.stdout else 0
    try:
        assert reaper.running(pid)
        assert Path(f"/proc/{pid}/cmdline").read_bytes().startswith(b"sleep\0")
    finally:
        owner.kill()
        owner.wait()
    assert _gone_within({pid}, 5), "the server outlived its SIGKILLed owner"


def test_spawn_stop_and_sigterm_handler_lifetime(tmp_path: Path) -> None:
    before = signal.getsignal(signal.SIGTERM)
    guard = reaper.spawn(["sleep", "600"], name="sleep", cleanup=(tmp_path / "sock",))
    (tmp_path / "sock").mkdir()
    try:
        assert reaper.running(guard.pid) and guard.poll() is None
        assert signal.getsignal(signal.SIGTERM) is reaper._on_sigterm
    finally:
        guard.stop()
    assert guard.poll() == 128 + signal.SIGTERM  # its stop signal, reported like a shell does
    assert not reaper.running(guard.pid)
    assert not (tmp_path / "sock").exists()  # cleanup directories removed once it stopped
    assert signal.getsignal(signal.SIGTERM) == before
