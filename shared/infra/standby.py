"""A hot standby for an embedded PostgreSQL: stream, measure the lag, promote, rebuild.

    settings = replication_settings(synchronous=True)        # DURABLE + wal_level=replica ...
    with embedded_postgres(wd / "a", settings) as primary, \\
         start_standby(primary, wd / "b", settings) as standby:
        url = multi_host_url(primary, standby)   # ...127.0.0.1:P1,127.0.0.1:P2/postgres?
                                                 #    target_session_attrs=read-write
        replication_lag(primary.url)             # bytes sent/flushed/replayed behind, ms
        primary.kill(); promote(standby)         # failover: the standby takes writes
        rebuild_standby(primary, standby)        # the old primary follows, on its old port

The standby is a copy made by ``pg_basebackup -R -X stream`` (the data directory, plus the
WAL written meanwhile, plus ``standby.signal`` and ``primary_conninfo`` in
``postgresql.auto.conf``), started with the same settings as the primary: a server's role
comes from its data directory, not from its settings, so both run the same
``replication_settings`` and swap roles at every failover. ``synchronous_standby_names='*'``
makes the primary's commits wait until a standby has flushed them (an acknowledged commit is
on two machines); it is ignored by a standby, and on a promoted standby with no standby of
its own it makes commits wait until one attaches: the promise of synchronous replication.

The tools run as the server's OS user (``nobody`` when we are root: PostgreSQL refuses root),
which owns the data directories. Loopback only, trust authentication, as the embedded servers.
"""

from __future__ import annotations

import shutil
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import psycopg

from shared.errors import CheckpointError
from shared.infra.postgres import (
    DURABLE,
    OWNER_FILE,
    EmbeddedPostgres,
    check_url,
    embedded_postgres,
    prepare_datadir,
)
from shared.infra.urls import mask_url, redact


def replication_settings(synchronous: bool, base: dict[str, str] | None = None
                         ) -> dict[str, str]:
    """``base`` (default ``DURABLE``) plus what streaming replication and failover need."""
    return {**(DURABLE if base is None else base),
            "wal_level": "replica", "max_wal_senders": "10", "hot_standby": "on",
            "wal_keep_size": "256MB",  # a standby that falls behind finds its WAL still there
            "wal_log_hints": "on",  # lets pg_rewind resynchronise an old primary
            # the standby reports its positions every second (default 10 s): current lags
            "wal_receiver_status_interval": "1s", "hot_standby_feedback": "on",
            "synchronous_standby_names": "*" if synchronous else "",
            "synchronous_commit": "on"}


def multi_host_url(*servers: EmbeddedPostgres, database: str = "postgres") -> str:
    """One URL for all ``servers``: libpq tries each host and keeps the one taking writes."""
    hosts = ",".join(f"127.0.0.1:{s.port}" for s in servers)
    return f"postgresql://postgres@{hosts}/{database}?target_session_attrs=read-write"


def base_backup(source: EmbeddedPostgres, pgdata: Path, timeout: float = 300) -> None:
    """``pg_basebackup -R -X stream`` of ``source`` into the fresh (empty) ``pgdata``."""
    if pgdata.exists() and any(pgdata.iterdir()):
        raise CheckpointError(f"{pgdata} is not empty: a standby needs a fresh data directory; "
                              "remove it or choose another one.")
    prepare_datadir(pgdata)
    source._run("pg_basebackup", "-D", str(pgdata), "-R", "-X", "stream", "--checkpoint=fast",
                "-h", "127.0.0.1", "-p", str(source.port), "-U", "postgres",
                "--no-password", timeout=timeout)
    # Copied along with the data: the primary's log and its owner record are not the standby's.
    for name in ("server.log", OWNER_FILE):
        (pgdata / name).unlink(missing_ok=True)


@contextmanager
def start_standby(primary: EmbeddedPostgres, pgdata: Path, settings: dict[str, str],
                  port: int | None = None, timeout: float = 60) -> Iterator[EmbeddedPostgres]:
    """A streaming standby of ``primary`` in ``pgdata`` (fresh), stopped when the block ends."""
    base_backup(primary, pgdata)
    with embedded_postgres(pgdata, settings=settings, port=port) as standby:
        wait_streaming(primary, timeout=timeout)
        yield standby


def is_primary(server: EmbeddedPostgres) -> bool:
    """Whether the server takes writes (not in recovery)."""
    with psycopg.connect(server.url, connect_timeout=5) as conn:
        return not conn.execute("SELECT pg_is_in_recovery()").fetchone()[0]  # type: ignore[index]


def promote(server: EmbeddedPostgres, timeout: int = 60) -> float:
    """Promote the standby ``server`` to a primary; returns the seconds it took."""
    started = time.monotonic()
    with psycopg.connect(server.url, connect_timeout=5, autocommit=True) as conn:
        row = conn.execute("SELECT pg_promote(wait => true, wait_seconds => %s)",
                           (timeout,)).fetchone()
    if not row or not row[0]:
        raise CheckpointError(f"The standby on port {server.port} did not finish its promotion "
                              f"within {timeout} s: see server.log in {server.pgdata}.")
    return time.monotonic() - started


@dataclass(frozen=True)
class Rebuilt:
    """When (``time.monotonic()``) a rebuild's base backup was complete, and when it streamed."""

    backup_done: float
    streaming: float


def rebuild_standby(old: EmbeddedPostgres, primary: EmbeddedPostgres,
                    timeout: float = 60) -> Rebuilt:
    """Make the dead (killed or stopped) ``old`` primary a standby of ``primary``.

    Its data may hold commits the new primary never received (asynchronous replication), so
    it is not restarted as it is: its data directory is replaced by a fresh base backup of
    the new primary, and it starts on its old port, so a multi-host URL stays valid. (For a
    large database ``pg_rewind`` copies only the changed blocks; a base backup is always
    right, and at our size takes about two seconds, most of it fsync.)
    """
    if old.pgdata == primary.pgdata or not is_primary(primary):
        raise CheckpointError(f"Refusing to rebuild {old.pgdata}: the server on port "
                              f"{primary.port} is not a primary of another data directory; "
                              "promote the standby first.")
    old.stop()  # a no-op after kill()
    shutil.rmtree(old.pgdata)
    base_backup(primary, old.pgdata)
    backup_done = time.monotonic()
    old.start()
    wait_streaming(primary, timeout=timeout)
    return Rebuilt(backup_done, time.monotonic())


@dataclass(frozen=True)
class Lag:
    """How far the standbys are behind, read on the primary (the largest over standbys)."""

    standbys: int  # walsenders streaming to a standby
    sent_bytes: int  # WAL written on the primary, not yet sent
    flush_bytes: int  # WAL not yet flushed by the standby (what synchronous commit waits for)
    replay_bytes: int  # WAL not yet replayed (what a read on the standby does not see yet)
    write_ms: float  # replay_lag / write_lag of the last reported WAL, in ms
    replay_ms: float
    sync_states: tuple[str, ...]  # per standby: sync, async, potential, quorum


def replication_lag(primary_url: str) -> Lag:
    """Read ``pg_stat_replication`` on the primary: bytes behind and lag times (ms)."""
    sql = """SELECT count(*),
                    coalesce(max(pg_wal_lsn_diff(pg_current_wal_lsn(), sent_lsn)), 0)::bigint,
                    coalesce(max(pg_wal_lsn_diff(pg_current_wal_lsn(), flush_lsn)), 0)::bigint,
                    coalesce(max(pg_wal_lsn_diff(pg_current_wal_lsn(), replay_lsn)), 0)::bigint,
                    coalesce(extract(epoch FROM max(write_lag)) * 1000, 0)::float8,
                    coalesce(extract(epoch FROM max(replay_lag)) * 1000, 0)::float8,
                    coalesce(array_agg(sync_state ORDER BY pid)
                             FILTER (WHERE sync_state IS NOT NULL), '{}')
             FROM pg_stat_replication WHERE state = 'streaming'"""
    with psycopg.connect(primary_url, connect_timeout=5) as conn:
        n, sent, flush, replay, write_ms, replay_ms, states = conn.execute(sql).fetchone()  # type: ignore[misc]
    return Lag(n, sent, flush, replay, write_ms, replay_ms, tuple(states))


def wait_streaming(primary: EmbeddedPostgres, standbys: int = 1, timeout: float = 60) -> None:
    """Wait until ``standbys`` standbys stream from ``primary``; a clear sentence if not."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if replication_lag(primary.url).standbys >= standbys:
            return
        time.sleep(0.05)
    raise CheckpointError(f"No standby streams from the primary on port {primary.port} after "
                          f"{timeout:g} s: see server.log in the standby's data directory.")


def wait_replayed(primary: EmbeddedPostgres, standby: EmbeddedPostgres,
                  timeout: float = 30) -> None:
    """Wait until ``standby`` has replayed all the WAL ``primary`` has written so far."""
    with psycopg.connect(primary.url, connect_timeout=5) as conn:
        target = conn.execute("SELECT pg_current_wal_lsn()").fetchone()[0]  # type: ignore[index]
    deadline = time.monotonic() + timeout
    with psycopg.connect(standby.url, connect_timeout=5, autocommit=True) as conn:
        while time.monotonic() < deadline:
            behind = conn.execute("SELECT pg_wal_lsn_diff(%s, pg_last_wal_replay_lsn())",
                                  (target,)).fetchone()[0]  # type: ignore[index]
            if behind <= 0:
                return
            time.sleep(0.02)
    raise CheckpointError(f"The standby on port {standby.port} did not replay up to {target} "
                          f"within {timeout:g} s: see its server.log.")


def show_settings(server: EmbeddedPostgres,
                  names: tuple[str, ...] = ("fsync", "synchronous_commit",
                                            "synchronous_standby_names")) -> dict[str, str]:
    """What the server itself reports (SHOW), plus its role."""
    with psycopg.connect(server.url, connect_timeout=5) as conn:
        shown = {n: conn.execute("SELECT current_setting(%s)", (n,)).fetchone()[0]  # type: ignore[index]
                 for n in names}
        recovery = conn.execute("SELECT pg_is_in_recovery()").fetchone()[0]  # type: ignore[index]
    return {"role": "standby" if recovery else "primary", **shown}


def sample_lag(primary_url: str, seconds: float, every: float = 0.05) -> list[Lag]:
    """``replication_lag`` every ``every`` seconds for ``seconds`` (e.g. under load)."""
    samples, end = [], time.monotonic() + seconds
    while time.monotonic() < end:
        samples.append(replication_lag(primary_url))
        time.sleep(every)
    return samples


def commit_waits(server: EmbeddedPostgres, wait_s: float = 0.3) -> bool:
    """Whether a commit on ``server`` waits for a standby (synchronous replication with none
    attached): a commit is tried and cancelled after ``wait_s``. PostgreSQL then returns
    with a warning that the commit is local only: the transaction stays committed (it holds
    nothing here: a WAL message only), and nothing was acknowledged as replicated.
    """
    notices: list[str] = []
    with psycopg.connect(server.url, connect_timeout=5, autocommit=True) as conn:
        conn.add_notice_handler(lambda diag: notices.append(diag.message_primary or ""))
        timer = threading.Timer(wait_s, conn.cancel_safe)
        timer.start()
        try:
            # a WAL record of our own in a transaction: its commit waits like any write
            conn.execute("SELECT pg_logical_emit_message(true, %s, %s)", ("ckpt-probe", ""))
        finally:
            timer.cancel()
    return any("synchronous replication" in n for n in notices)


def require_primary(url: str, timeout: float = 5) -> str:
    """Check that some host of the (multi-host) ``url`` takes writes; one clear sentence if
    none does (all down, or all standbys), the password masked. Returns ``url``."""
    check_url(url)
    try:
        with psycopg.connect(url, connect_timeout=max(1, int(timeout))):
            return url
    except psycopg.OperationalError as exc:
        text = str(exc)
    if "read-only" in text or "hot standby" in text:
        reason = "the servers that answered are standbys (read-only)"
    elif "refused" in text:
        reason = "connection refused"
    else:
        reason = redact(" ".join(text.split())[:200], url)
    raise CheckpointError(f"No primary at {mask_url(url)} ({reason}): start the primary or "
                          "promote a standby, and check the hosts and ports in the URL.")
