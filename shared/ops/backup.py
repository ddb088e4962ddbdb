"""Logical backup of the checkpoint tables: ``pg_dump -Fc`` of one snapshot, checked, restorable.

    manifest = backup(url, "backups/2026-12-02")    # checkpoints.dump + manifest.json
    report = verify_backup("backups/2026-12-02", scratch_url, source_url=url)
    assert report.ok                                # only now is the backup called good
    restore("backups/2026-12-02", new_url)          # into a database without checkpoint tables

The row counts in the manifest are read in the SAME snapshot as the dump: a REPEATABLE READ
transaction exports its snapshot (``pg_export_snapshot()``), counts the four tables, and
``pg_dump --snapshot`` dumps exactly that view while the transaction stays open. Writers keep
writing meanwhile; the dump holds what was committed before the snapshot and nothing after.
``snapshot_view(url)`` holds such a snapshot for a caller (a lesson that verifies the source
as it was at the snapshot); ``backup(url, dir, snapshot=...)`` then dumps that view.

Before a restore the dump's SHA-256 is compared with the manifest's: one flipped byte and the
restore is refused, nothing changed. A target that already holds checkpoint tables is refused.
The bundled client tools (``bin_dir()``) get the URL without its password through
``--dbname`` and the password in ``PGPASSWORD`` (never on a command line, which ``ps`` shows);
their messages are redacted before they reach any exception.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit, urlunsplit

from shared.errors import CheckpointError
from shared.infra.postgres import bin_dir, connect, create_database, drop_database
from shared.infra.urls import mask_url, redact

TABLES = ("checkpoint_migrations", "checkpoints", "checkpoint_blobs", "checkpoint_writes")
DUMP = "checkpoints.dump"
MANIFEST = "manifest.json"
FORMAT = "ckpt-logical-backup/1"


@dataclass
class BackupManifest:
    format: str
    dump_file: str
    sha256: str
    size_bytes: int
    server_version: str
    database: str  # the source, password masked
    tables: dict[str, int]  # row counts in the dump's snapshot
    snapshot_id: str
    snapshot_after: str  # ISO times: the snapshot was taken between these two server clocks
    snapshot_before: str
    dump_seconds: float

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class Snapshot:
    """An exported snapshot held open by ``conn`` (a REPEATABLE READ transaction)."""

    id: str
    after: Any  # datetime: statement_timestamp() of the exporting statement (snapshot >= this)
    before: Any  # datetime: clock_timestamp() once exported (snapshot <= this)
    conn: Any


@dataclass
class RestoreReport:
    target: str
    tables: dict[str, int]
    seconds: float


@dataclass
class BackupCheck:
    """What ``verify_backup`` found; ``ok`` only if every check passed."""

    counts_expected: dict[str, int]
    counts_restored: dict[str, int]
    verify: dict[str, Any] | None = None  # shared.ops.verify's report against the source
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


def _connect(url: str, **kwargs: Any) -> Any:
    return connect(url, **kwargs)


def _present(conn: Any) -> list[str]:
    rows = conn.execute("SELECT table_name FROM information_schema.tables WHERE "
                        "table_schema = current_schema() AND table_name = ANY(%s)",
                        (list(TABLES),)).fetchall()
    return sorted(r[0] for r in rows)


def _counts(conn: Any) -> dict[str, int]:
    # Table names come from TABLES, never from user text.
    return {t: conn.execute(f"SELECT count(*) FROM {t}").fetchone()[0]  # noqa: S608
            for t in TABLES}


def _without_password(url: str) -> tuple[str, str | None]:
    """``url`` without its password, and the password (for ``PGPASSWORD``): a command line
    is visible to every user of the machine (``ps``), the environment is not."""
    parts = urlsplit(url)
    if parts.password is None:
        return url, None
    netloc = parts.netloc.rsplit("@", 1)
    user = netloc[0].split(":", 1)[0]
    return urlunsplit(parts._replace(netloc=f"{user}@{netloc[1]}")), unquote(parts.password)


def _tool(name: str, args: list[str], url: str, timeout: float = 600) -> None:
    bare, password = _without_password(url)
    env = {**os.environ, "PGCONNECT_TIMEOUT": "5"}
    if password is not None:
        env["PGPASSWORD"] = password
    args = [a.replace(url, bare) for a in args]
    out = subprocess.run([str(bin_dir() / name), *args], capture_output=True, text=True,
                         timeout=timeout, cwd="/", env=env)
    if out.returncode != 0:
        reason = redact(" ".join((out.stderr or out.stdout).split())[-400:], url)
        raise CheckpointError(f"{name} failed on {mask_url(url)} (exit {out.returncode}): "
                              f"{reason}")


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


@contextmanager
def snapshot_view(url: str) -> Iterator[Snapshot]:
    """A REPEATABLE READ, read-only transaction whose snapshot is exported; open in the block."""
    with _connect(url) as conn:
        conn.execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
        sid, after, before = conn.execute("SELECT pg_export_snapshot(), statement_timestamp(), "
                                          "clock_timestamp()").fetchone()
        try:
            yield Snapshot(sid, after, before, conn)
        finally:
            conn.rollback()


def backup(url: str, dest_dir: str | Path, snapshot: Snapshot | None = None) -> BackupManifest:
    """Dump the checkpoint tables of ``url`` into ``dest_dir`` (new or empty) with a manifest."""
    import time

    dest = Path(dest_dir)
    if dest.exists() and (not dest.is_dir() or any(dest.iterdir())):
        raise CheckpointError(f"{dest} exists and is not an empty directory: give a new "
                              "directory for the backup (nothing was overwritten).")
    with snapshot_view(url) if snapshot is None else _as_is(snapshot) as snap:
        conn = snap.conn
        missing = sorted(set(TABLES) - set(_present(conn)))
        if missing:
            raise CheckpointError(f"{mask_url(url)} has no checkpoint tables to back up (missing "
                                  f"{', '.join(missing)}): is this the right database?")
        counts = _counts(conn)
        version = conn.execute("SHOW server_version").fetchone()[0]
        dest.mkdir(parents=True, exist_ok=True)
        started = time.perf_counter()
        args = ["--format=custom", f"--snapshot={snap.id}", "--no-owner", "--no-privileges",
                f"--file={dest / DUMP}", f"--dbname={url}"]
        args += [f"--table={t}" for t in TABLES]
        try:
            _tool("pg_dump", args, url)
        except BaseException:
            (dest / DUMP).unlink(missing_ok=True)
            raise
        seconds = time.perf_counter() - started
    manifest = BackupManifest(FORMAT, DUMP, _sha256(dest / DUMP), (dest / DUMP).stat().st_size,
                              version, mask_url(url), counts, snap.id, snap.after.isoformat(),
                              snap.before.isoformat(), round(seconds, 3))
    (dest / MANIFEST).write_text(json.dumps(manifest.to_dict(), indent=2) + "\n")
    return manifest


@contextmanager
def _as_is(snapshot: Snapshot) -> Iterator[Snapshot]:
    yield snapshot


def read_manifest(dump_dir: str | Path) -> BackupManifest:
    """The manifest of a backup directory, its dump checked against the SHA-256 it records."""
    where = Path(dump_dir)
    try:
        data = json.loads((where / MANIFEST).read_text())
        manifest = BackupManifest(**data)
        if manifest.format != FORMAT:
            raise ValueError(manifest.format)
    except (OSError, ValueError, TypeError):
        raise CheckpointError(f"{where} is not a checkpoint backup (no readable {MANIFEST} of "
                              f"format {FORMAT}): give a directory written by ckpt backup.") \
            from None
    dump = where / Path(manifest.dump_file).name
    if not dump.is_file():
        raise CheckpointError(f"{where} is not a complete backup: {dump.name} is missing.")
    actual = _sha256(dump)
    if actual != manifest.sha256:
        raise CheckpointError(f"{dump} is corrupted: its SHA-256 is {actual}, the manifest "
                              f"expects {manifest.sha256}; refusing to restore it.")
    return manifest


def restore(dump_dir: str | Path, url: str) -> RestoreReport:
    """``pg_restore`` a checked backup into ``url``, which must hold no checkpoint tables."""
    import time

    manifest = read_manifest(dump_dir)
    with _connect(url, autocommit=True) as conn:
        present = _present(conn)
        if present:
            raise CheckpointError(f"{mask_url(url)} already holds checkpoint tables "
                                  f"({', '.join(present)}): restore into an empty database "
                                  "(nothing was changed).")
    started = time.perf_counter()
    _tool("pg_restore", ["--no-owner", "--no-privileges", "--exit-on-error",
                         "--single-transaction", f"--dbname={url}",
                         str(Path(dump_dir) / Path(manifest.dump_file).name)], url)
    seconds = time.perf_counter() - started
    with _connect(url, autocommit=True) as conn:
        counts = _counts(conn)
    return RestoreReport(mask_url(url), counts, round(seconds, 3))


def verify_backup(dump_dir: str | Path, scratch_url: str, source_url: str | None = None,
                  source_snapshot: Snapshot | None = None) -> BackupCheck:
    """Restore into a scratch database (created, then dropped) on ``scratch_url``'s server and
    compare it with the manifest's counts and, when given, with the source (by ``verify``;
    in ``source_snapshot``'s view when given, else the source as it is now)."""
    from langgraph.checkpoint.postgres import PostgresSaver

    from shared.ops.verify import verify
    from shared.savers.postgres import open_postgres_saver
    from shared.savers.serde import graph_serde

    manifest = read_manifest(dump_dir)
    name = f"ckpt_verify_{os.getpid()}_{manifest.sha256[:8]}"
    scratch = create_database(scratch_url, name)
    try:
        restored = restore(dump_dir, scratch)
        check = BackupCheck(manifest.tables, restored.tables)
        for t in TABLES:
            if manifest.tables.get(t) != restored.tables.get(t):
                check.problems.append(f"{t}: {restored.tables.get(t)} rows restored, the "
                                      f"manifest says {manifest.tables.get(t)}")
        if source_url or source_snapshot:
            with open_postgres_saver(scratch) as dst:
                if source_snapshot is not None:
                    # its own cursors read dict rows, inside the snapshot's open transaction
                    src = PostgresSaver(source_snapshot.conn, serde=graph_serde())
                    report = verify(src, dst)
                else:
                    assert source_url is not None
                    with open_postgres_saver(source_url) as src:
                        report = verify(src, dst)
            check.verify = report.to_dict()
            if not report.ok:
                check.problems.append(f"verify against the source: {report.bad} differences "
                                      f"({'; '.join(report.examples[:3])})")
        return check
    finally:
        drop_database(scratch, name)


__all__ = ["DUMP", "MANIFEST", "TABLES", "BackupCheck", "BackupManifest", "RestoreReport",
           "Snapshot", "backup", "read_manifest", "restore", "snapshot_view",
           "verify_backup"]
