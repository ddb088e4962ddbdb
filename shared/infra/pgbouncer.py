"""PgBouncer in front of a PostgreSQL URL, as our child process, for the block's lifetime.

    with pgbouncer(url, pool_size=20, pool_mode="transaction") as bounced:
        psycopg.connect(bounced, prepare_threshold=None)   # 600 clients, 20 server connections

The binary is ``$PGBOUNCER``, else ``pgbouncer`` on PATH, else ``/usr/sbin/pgbouncer`` (where
Debian's package puts it, often not on a non-root PATH); ``find_pgbouncer()`` returns None
when there is none, and ``pgbouncer()`` then refuses with one sentence saying how to install
it. Its ini and auth file are written to a temp directory (removed at exit; the upstream
password, if the URL has one, is only in that file, never on a command line). It listens on
127.0.0.1 on a free port, no Unix socket, ``auth_type = trust`` for the URL's user (loopback
only). PgBouncer refuses to run as root, so as root it runs as ``nobody``, like the embedded
PostgreSQL. It runs under the reaper (``shared/infra/reaper.py``): it stops when the block
ends or when we die, SIGKILL included.
"""

from __future__ import annotations

import os
import pwd
import shutil
import signal
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from shared.errors import CheckpointError
from shared.infra import reaper
from shared.infra.postgres import RUN_AS, _free_port
from shared.infra.urls import mask_url, redact

POOL_MODES = ("session", "transaction", "statement")
PLACES = ("/usr/sbin/pgbouncer", "/usr/local/sbin/pgbouncer", "/usr/local/bin/pgbouncer")


def find_pgbouncer() -> str | None:
    """The pgbouncer binary: $PGBOUNCER, PATH, then Debian's /usr/sbin; None if absent."""
    env = os.environ.get("PGBOUNCER", "").strip()
    if env:
        return env if os.access(env, os.X_OK) else None
    found = shutil.which("pgbouncer")
    if found:
        return found
    return next((p for p in PLACES if os.access(p, os.X_OK)), None)


def _quote(value: str) -> str:
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def _ini(upstream: Any, port: int, auth_file: Path, pool_size: int, pool_mode: str,
         max_client_conn: int, extra: dict[str, str]) -> str:
    target = [f"host={upstream.hostname}", f"port={upstream.port or 5432}"]
    if upstream.username:
        target.append(f"user={upstream.username}")
    if upstream.password:
        target.append(f"password={_quote(upstream.password)}")
    settings = {
        "listen_addr": "127.0.0.1", "listen_port": str(port), "unix_socket_dir": "",
        "auth_type": "trust", "auth_file": str(auth_file), "pool_mode": pool_mode,
        "default_pool_size": str(pool_size), "max_db_connections": str(pool_size),
        "min_pool_size": "0", "reserve_pool_size": "0", "max_client_conn": str(max_client_conn),
        "ignore_startup_parameters": "extra_float_digits", "log_connections": "0",
        "log_disconnections": "0", "server_login_retry": "1", **extra,
    }
    return ("[databases]\n* = " + " ".join(target) + "\n\n[pgbouncer]\n"
            + "".join(f"{k} = {v}\n" for k, v in settings.items()))


@contextmanager
def pgbouncer(upstream_url: str, pool_size: int = 20, pool_mode: str = "transaction",
              max_client_conn: int = 600, **settings: str) -> Iterator[str]:
    """PgBouncer in front of ``upstream_url`` (TCP host and port); yields its URL.

    ``settings``: more ``[pgbouncer]`` settings, e.g. ``max_prepared_statements="100"``
    (PgBouncer 1.21 and later).
    """
    binary = find_pgbouncer()
    if binary is None:
        raise CheckpointError("PgBouncer was not found (set PGBOUNCER to its binary, or "
                              "install it: apt-get install pgbouncer).")
    if pool_mode not in POOL_MODES:
        raise CheckpointError(f"pool_mode={pool_mode!r}: use one of {', '.join(POOL_MODES)}.")
    if pool_size < 1 or max_client_conn < 1:
        raise CheckpointError(f"pool_size={pool_size}, max_client_conn={max_client_conn}: "
                              "both must be at least 1.")
    upstream = urlsplit(upstream_url)
    if not upstream.hostname or upstream.hostname.startswith("/"):
        raise CheckpointError(f"{mask_url(upstream_url)}: PgBouncer needs the server's TCP "
                              "host and port in the URL.")
    home = Path(tempfile.mkdtemp(prefix="ckpt-pgbouncer-"))
    try:
        drop: dict[str, Any] = {}
        if os.geteuid() == 0:  # pgbouncer will not run as root
            entry = pwd.getpwnam(RUN_AS)
            drop = {"user": RUN_AS, "group": entry.pw_gid, "extra_groups": []}
        port = _free_port()
        user = upstream.username or pwd.getpwuid(os.geteuid()).pw_name
        auth_file, ini = home / "userlist.txt", home / "pgbouncer.ini"
        auth_file.write_text(f'"{user}" ""\n')
        ini.write_text(_ini(upstream, port, auth_file, pool_size, pool_mode, max_client_conn,
                            settings))
        for path in (home, auth_file, ini):
            path.chmod(0o700 if path.is_dir() else 0o600)
            if drop:
                os.chown(path, pwd.getpwnam(RUN_AS).pw_uid, drop["group"])
        with (home / "pgbouncer.log").open("ab") as log:
            guard = reaper.spawn([binary, str(ini)], name="PgBouncer",
                                 stop_signal=signal.SIGTERM, grace=10, drop=drop, stdout=log)
        netloc = f"{upstream.username}@127.0.0.1:{port}" if upstream.username \
            else f"127.0.0.1:{port}"
        url = urlunsplit(upstream._replace(netloc=netloc))
        try:
            _wait_ready(url, guard, home / "pgbouncer.log")
            yield url
        finally:
            guard.stop()
    finally:
        shutil.rmtree(home, ignore_errors=True)


def _wait_ready(url: str, guard: reaper.Guarded, log: Path, timeout: float = 15) -> None:
    import psycopg

    deadline, last = time.monotonic() + timeout, None
    while time.monotonic() < deadline:
        if guard.poll() is not None:
            tail = " ".join(log.read_text(errors="replace").split()[-40:])
            raise CheckpointError(f"PgBouncer exited with status {guard.poll()} while "
                                  f"starting: {redact(tail, url)}")
        try:
            with psycopg.connect(url, connect_timeout=3, prepare_threshold=None) as conn:
                conn.execute("SELECT 1")
                return
        except psycopg.OperationalError as exc:
            last = exc
            time.sleep(0.1)
    reason = redact(" ".join(str(last).split()), url) if last else "timeout"
    raise CheckpointError(f"PgBouncer at {mask_url(url)} did not answer ({reason}).")


__all__ = ["find_pgbouncer", "pgbouncer"]
