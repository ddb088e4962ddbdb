"""Issue 8, item 6: ``ckpt prune`` says truthfully what it committed, what did not run and
how to finish: S3 down (before and during a run), a real Ctrl-C during VACUUM, a kill during
VACUUM, and a file or directory this user cannot write (run without root's privileges).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import random
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from langgraph.checkpoint.base import empty_checkpoint
from langgraph.checkpoint.sqlite import SqliteSaver

from shared import ROOT
from shared.infra.s3 import s3_server, unreachable_settings
from shared.ops import prune

THREADS, PER_THREAD, BLOB = 20, 300, 10_000
KEEP = "250"  # of 300 per thread: 1,000 checkpoints go, ~50 MB stay for VACUUM to rewrite
DELETED = THREADS * (PER_THREAD - int(KEEP))


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """~60 MB of checkpoints in a WAL-mode SqliteSaver file, closed (no -wal)."""
    path = tmp_path_factory.mktemp("big") / "template.sqlite"
    conn = sqlite3.connect(path)
    saver = SqliteSaver(conn)
    saver.setup()
    conn.execute("PRAGMA synchronous=OFF")
    rng = random.Random(1)
    for i in range(THREADS * PER_THREAD):
        ckpt = empty_checkpoint()
        ckpt["channel_values"] = {"blob": rng.randbytes(BLOB)}
        saver.put({"configurable": {"thread_id": f"t{i % THREADS}", "checkpoint_ns": ""}},
                  ckpt, {"step": i}, {})
    conn.close()
    return path


@pytest.fixture
def big_db(template: Path, tmp_path: Path) -> Path:
    db = tmp_path / "ckpt.sqlite"
    shutil.copyfile(template, db)
    return db


def _count(db: Path) -> int:
    with sqlite3.connect(f"{db.resolve().as_uri()}?mode=ro", uri=True) as conn:
        n = conn.execute("SELECT count(*) FROM checkpoints").fetchone()[0]
    conn.close()
    return n


def _pages(db: Path) -> tuple[int, int, int]:
    """(freelist pages, page_count * page_size, file size) from a plain connection."""
    conn = sqlite3.connect(db)
    try:
        free = conn.execute("PRAGMA freelist_count").fetchone()[0]
        used = (conn.execute("PRAGMA page_count").fetchone()[0]
                * conn.execute("PRAGMA page_size").fetchone()[0])
    finally:
        conn.close()
    return free, used, db.stat().st_size


def _on_disk(db: Path) -> int:
    return sum(p.stat().st_size for p in (db, Path(f"{db}-wal"), Path(f"{db}-shm"))
               if p.exists())


def _prune(*argv: str, env: dict[str, str] | None = None, prefix: list[str] | None = None,
           ) -> subprocess.Popen[str]:
    return subprocess.Popen([*(prefix or []), sys.executable, "-m", "shared.cli", "prune", *argv],
                            cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)


def _wait_for_line(proc: subprocess.Popen[str], start: str, seen: list[str]) -> None:
    """Read stderr lines until one starts with ``start``; fail if the process ends first."""
    assert proc.stderr is not None
    for line in proc.stderr:
        seen.append(line)
        if line.startswith(start):
            return
    pytest.fail(f"no stderr line starting {start!r}; got {seen!r}")


# --- Ctrl-C during VACUUM: a real SIGINT to a real `ckpt prune` ---------------------------

def test_ctrl_c_during_vacuum_says_what_was_committed(big_db: Path) -> None:
    before = _count(big_db)
    proc = _prune(str(big_db), "--keep-last", KEEP)
    seen: list[str] = []
    try:
        _wait_for_line(proc, "ckpt prune: VACUUM", seen)
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=60)
    finally:
        proc.kill()
        proc.wait()
    err = "".join(seen) + err
    assert proc.returncode == 130, err
    assert seen[0] == f"ckpt prune: committed: {DELETED:,} checkpoints and 0 writes deleted\n"
    last = err.splitlines()[-1]
    assert last == (f"ckpt: interrupted during VACUUM: the deletions were committed "
                    f"({DELETED:,} checkpoints and 0 writes deleted); the file was not shrunk: "
                    f"run `ckpt prune {big_db} --keep-last {KEEP}` to finish (it shrinks the "
                    "file even with nothing left to delete)."), err
    assert "rolled back" not in err
    assert _count(big_db) == before - DELETED  # committed, as it says
    free, _, size_after_ctrl_c = _pages(big_db)
    assert free > 0  # the VACUUM was stopped: the freed pages are still in the file

    rerun = _prune(str(big_db), "--keep-last", KEEP, "--json")
    out, err = rerun.communicate(timeout=120)
    assert rerun.returncode == 0, err
    result = json.loads(out)
    assert result["checkpoints_deleted"] == 0
    assert result["shrink"].startswith("VACUUM")
    assert result["file_bytes_after"] == _on_disk(big_db)  # what is really on disk now
    assert result["file_bytes_after"] < result["file_bytes_before"]
    free, used, size = _pages(big_db)
    assert free == 0 and size == used < size_after_ctrl_c


def test_kill_after_vacuum_commit_rerun_reports_real_sizes(big_db: Path) -> None:
    """A run killed (SIGKILL) after its VACUUM committed in the WAL but before the WAL was
    folded in: the rerun has nothing to free, and must still fold the WAL and report the
    real sizes (it used to say "nothing freed" while the file shrank later, at close)."""
    killer = ("import os, signal, sqlite3, sys\n"
              "conn = sqlite3.connect(sys.argv[1], isolation_level=None)\n"
              "conn.execute('PRAGMA wal_autocheckpoint=0')\n"
              "conn.execute(\"DELETE FROM checkpoints WHERE thread_id = 't1'\")\n"
              "conn.execute('VACUUM')\n"
              "os.kill(os.getpid(), signal.SIGKILL)\n")
    done = subprocess.run([sys.executable, "-c", killer, str(big_db)], timeout=120)
    assert done.returncode == -signal.SIGKILL
    wal = Path(f"{big_db}-wal")
    assert wal.stat().st_size > 10_000_000  # the VACUUMed file sits in the WAL
    rerun = _prune(str(big_db), "--keep-last", PER_THREAD.__str__(), "--json")
    out, err = rerun.communicate(timeout=120)
    assert rerun.returncode == 0, err
    result = json.loads(out)
    assert result["checkpoints_deleted"] == 0
    assert "WAL truncated" in result["shrink"], result["shrink"]
    assert result["file_bytes_after"] == _on_disk(big_db)
    assert result["file_bytes_after"] < result["file_bytes_before"]
    free, used, size = _pages(big_db)
    assert free == 0 and size == used and not wal.exists()


def test_sigkill_during_vacuum_then_rerun_finishes(big_db: Path) -> None:
    """A real SIGKILL while VACUUM runs: whatever moment it lands, the rerun finishes the
    job and reports the sizes that are on disk."""
    proc = _prune(str(big_db), "--keep-last", KEEP)
    seen: list[str] = []
    try:
        _wait_for_line(proc, "ckpt prune: VACUUM", seen)
        time.sleep(0.1)
        proc.kill()
        proc.communicate(timeout=60)
    finally:
        proc.kill()
        proc.wait()
    rerun = _prune(str(big_db), "--keep-last", KEEP, "--json")
    out, err = rerun.communicate(timeout=120)
    assert rerun.returncode == 0, err
    result = json.loads(out)
    assert result["checkpoints_deleted"] == 0  # the deletions were committed before the kill
    assert result["file_bytes_after"] == _on_disk(big_db)
    free, used, size = _pages(big_db)
    assert free == 0 and size == used


# --- --gc-s3 with S3 down ------------------------------------------------------------------

def _s3_env(endpoint: str, bucket: str) -> dict[str, str]:
    return {**os.environ, "S3_ENDPOINT_URL": endpoint, "CKPT_S3_BUCKET": bucket,
            "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing"}


def test_gc_s3_down_at_start_changes_nothing(big_db: Path) -> None:
    digest = hashlib.sha256(big_db.read_bytes()).hexdigest()
    files = sorted(os.listdir(big_db.parent))
    down = unreachable_settings()
    proc = _prune(str(big_db), "--keep-last", "1", "--gc-s3",
                  env=_s3_env(down.endpoint_url or "", down.bucket))
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 2, err
    assert err.count("\n") == 1 and err.startswith("ckpt: ")
    assert f"S3 at {down.endpoint_url} is unreachable" in err and "nothing was pruned" in err
    assert hashlib.sha256(big_db.read_bytes()).hexdigest() == digest
    assert sorted(os.listdir(big_db.parent)) == files


class _Proxy:
    """A TCP relay to S3 that the test can cut at once: S3 going down mid-run."""

    def __init__(self, upstream: tuple[str, int]) -> None:
        self.upstream = upstream
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.sockets: list[socket.socket] = []
        self.threads = [threading.Thread(target=self._accept, daemon=True)]
        self.threads[0].start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            server = socket.create_connection(self.upstream)
            self.sockets += [client, server]
            for a, b in ((client, server), (server, client)):
                t = threading.Thread(target=self._pump, args=(a, b), daemon=True)
                self.threads.append(t)
                t.start()

    @staticmethod
    def _pump(src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                with contextlib.suppress(OSError):
                    s.shutdown(socket.SHUT_RDWR)

    def close(self) -> None:
        # shutdown() first: close() alone leaves a listener blocked in accept() listening.
        for s in [self.listener, *self.sockets]:
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)
            s.close()
        for t in self.threads:
            t.join(timeout=5)


@pytest.fixture
def s3_proxy() -> Iterator[tuple[_Proxy, str]]:
    with s3_server(bucket="prune-truth") as s3:
        host, port = (s3.endpoint_url or "").removeprefix("http://").split(":")
        proxy = _Proxy((host, int(port)))
        try:
            yield proxy, s3.bucket
        finally:
            proxy.close()


def test_gc_s3_down_during_run_says_what_is_done(big_db: Path,
                                                 s3_proxy: tuple[_Proxy, str]) -> None:
    proxy, bucket = s3_proxy
    before = _count(big_db)
    env = _s3_env(f"http://127.0.0.1:{proxy.port}", bucket)
    proc = _prune(str(big_db), "--keep-last", KEEP, "--gc-s3", env=env)
    seen: list[str] = []
    try:
        _wait_for_line(proc, "ckpt prune: committed", seen)
        proxy.close()  # S3 goes away while the run VACUUMs
        _, err = proc.communicate(timeout=120)
    finally:
        proc.kill()
        proc.wait()
    lines = ("".join(seen) + err).splitlines()
    assert proc.returncode == 2, lines
    assert lines[-2] == "ckpt prune: collecting unreferenced S3 blobs"
    message = lines[-1]
    assert message.startswith(
        f"ckpt: {big_db}: the deletions were committed ({DELETED:,} checkpoints and 0 writes "
        "deleted) and the file was shrunk (VACUUM + WAL truncated); S3 blob collection "
        f"failed (S3 at http://127.0.0.1:{proxy.port} is unreachable"), message
    assert message.endswith(
        f"reachable endpoint): run `ckpt prune {big_db} --keep-last {KEEP} --gc-s3` again "
        "once S3 is reachable, nothing else is needed."), message
    assert _count(big_db) == before - DELETED
    free, used, size = _pages(big_db)
    assert free == 0 and size == used  # VACUUM ran before the hook


# --- a file or directory this user cannot write ------------------------------------------

def _unprivileged() -> list[str]:
    """A command prefix under which file permissions apply: none for an ordinary user;
    for root, setpriv dropping the capabilities that bypass them (root keeps its uid, so
    the interpreter under /root stays readable)."""
    if os.geteuid() != 0:
        return []
    setpriv = shutil.which("setpriv")
    if setpriv is None:
        pytest.skip("running as root without setpriv: file permissions cannot be enforced")
    caps = "-dac_override,-dac_read_search,-fowner"
    return [setpriv, f"--inh-caps={caps}", f"--bounding-set={caps}"]


@pytest.mark.parametrize("what", ["file", "directory"])
def test_read_only_file_or_directory(tmp_path: Path, what: str) -> None:
    folder = tmp_path / "data"
    folder.mkdir()
    db = folder / "ckpt.sqlite"
    saver_conn = sqlite3.connect(db)
    saver = SqliteSaver(saver_conn)
    for i in range(5):
        saver.put({"configurable": {"thread_id": "t", "checkpoint_ns": ""}},
                  empty_checkpoint(), {"step": i}, {})
    saver_conn.close()
    locked = db if what == "file" else folder
    mode = 0o444 if what == "file" else 0o555
    prefix = _unprivileged()
    digest, files = hashlib.sha256(db.read_bytes()).hexdigest(), sorted(os.listdir(folder))
    locked.chmod(mode)
    try:
        probe = subprocess.run([*prefix, sys.executable, "-c",
                                f"open({str(folder / 'probe')!r} if {what == 'directory'} "
                                f"else {str(db)!r}, 'ab')"], capture_output=True, timeout=60)
        if probe.returncode == 0:
            pytest.skip("this process can write a read-only file (a capability setpriv "
                        "could not drop): nothing to test")
        proc = _prune(str(db), "--keep-last", "1", prefix=prefix)
        _, err = proc.communicate(timeout=60)
        assert proc.returncode == 2, err
        assert err.count("\n") == 1 and err.startswith("ckpt: "), err
        assert "write lock" not in err
        if what == "file":
            assert f"{db} is not writable by this user (mode -r--r--r--" in err
            assert f"chmod u+w {db}" in err
        else:
            assert f"The directory {folder} is not writable by this user" in err
            assert f"chmod u+w {folder}" in err
        assert sorted(os.listdir(folder)) == files  # no -wal, no -shm left behind
        assert hashlib.sha256(db.read_bytes()).hexdigest() == digest
        dry = _prune(str(db), "--keep-last", "1", "--dry-run", "--json", prefix=prefix)
        out, err = dry.communicate(timeout=60)
        assert dry.returncode == 0, err
        assert json.loads(out)["checkpoints_deleted"] == 4
        assert sorted(os.listdir(folder)) == files
    finally:
        locked.chmod(0o755 if what == "directory" else 0o644)


def test_library_reports_partial_prune(big_db: Path) -> None:
    """prune_now: a hook failing after the commit raises PruneIncomplete, whose message and
    progress say the deletions were committed and the file shrunk."""
    from shared.errors import CheckpointError

    def down(conn: sqlite3.Connection, dry_run: bool) -> None:
        raise CheckpointError("S3 at http://x is unreachable: start it.")

    conn = sqlite3.connect(big_db)
    try:
        with pytest.raises(prune.PruneIncomplete) as err:
            prune.prune_now(conn, prune.RetentionPolicy(keep_last=int(KEEP)), after_prune=down)
    finally:
        conn.close()
    assert err.value.progress.stage == prune.COLLECTING
    assert err.value.progress.checkpoints_deleted == DELETED
    assert str(err.value).startswith(
        f"Pruned partly: the deletions were committed ({DELETED:,} checkpoints and 0 writes "
        "deleted) and the file was shrunk (VACUUM + WAL truncated); S3 blob collection failed "
        "(S3 at http://x is unreachable: start it)")
