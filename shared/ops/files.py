"""Opening a SqliteSaver file from an operations tool: one opener, read-only or writable.

``open_checkpoint_db(path)`` reads safely while another process writes and leaves nothing
behind; ``open_checkpoint_db(path, writable=True)`` is for tools that change the file
(prune), refusing a file or directory this user cannot write before SQLite opens it. Both
never create a database and refuse a file without checkpoint tables.
"""

from __future__ import annotations

import os
import shlex
import sqlite3
import stat
from pathlib import Path

from shared.errors import CheckpointError
from shared.savers.sqlite import require_checkpoint_tables

SQLITE_MAGIC = b"SQLite format 3\x00"


def open_checkpoint_db(path: Path, *, writable: bool = False, name: str | None = None,
                       other: str | None = None) -> sqlite3.Connection:
    """An existing checkpoint database, read-only unless ``writable``; never created.

    ``name`` is how messages call the file (its path by default); ``other`` is what the
    command accepts instead of a file (a /metrics URL, a postgresql:// URL), named in the fix.
    """
    if not writable:
        return _open_read_only(path, name, other)
    return _open_writable(path)


def _open_writable(path: Path) -> sqlite3.Connection:
    """For pruning.

    Before SQLite opens it for writing, this user must be allowed to write the file and its
    directory (SQLite creates the -journal, or -wal and -shm, beside it): otherwise SQLite
    would open it read-only, leave -wal/-shm behind, and fail later with a misleading error.
    ``os.access`` also sees ``chattr +i`` and read-only mounts, even for root.
    """
    if not path.is_file():
        raise CheckpointError(f"{path} does not exist or is not a file: give the path of a "
                              "SQLite checkpoint database.")
    resolved = path.resolve()
    if not os.access(resolved, os.W_OK):
        st = resolved.stat()
        raise CheckpointError(
            f"{path} is not writable by this user (mode {stat.filemode(st.st_mode)}, owner uid "
            f"{st.st_uid}), and pruning deletes rows and rewrites the file: run it as a user "
            f"who may write the file, or make it writable (chmod u+w {shlex.quote(str(path))}); "
            "nothing was changed, and --dry-run works on a read-only file.")
    if not os.access(resolved.parent, os.W_OK | os.X_OK):
        raise CheckpointError(
            f"The directory {resolved.parent} is not writable by this user, and SQLite must "
            f"create its journal (-wal, -shm or -journal) beside {path.name} to prune it: run "
            "it as a user who may write the directory, or make it writable (chmod u+w "
            f"{shlex.quote(str(resolved.parent))}); nothing was changed, and --dry-run works "
            "on a read-only file.")
    try:
        conn = sqlite3.connect(f"{resolved.as_uri()}?mode=rw", uri=True, timeout=30,
                               check_same_thread=False)
        tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    except sqlite3.DatabaseError as exc:
        raise CheckpointError(f"{path} is not a writable SQLite database ({exc}).") from exc
    return require_checkpoint_tables(conn, path, tables)


def _keep_journal_mode(action: int, arg1: str | None, arg2: str | None, *_: object) -> int:
    """Authorizer: drop ``PRAGMA journal_mode=...`` (a reader never converts the file).

    ``SqliteSaver.setup()`` asks for WAL on its first use; on a read-only handle to a
    rollback-journal file that request would fail (or, on a read-write one, convert the file).
    SQLite skips a pragma its authorizer answers with IGNORE, without an error.
    """
    if action == sqlite3.SQLITE_PRAGMA and (arg1 or "").lower() == "journal_mode" and arg2:
        return sqlite3.SQLITE_IGNORE
    return sqlite3.SQLITE_OK


def _open_read_only(path: Path, name: str | None, other: str | None) -> sqlite3.Connection:
    """Open a SqliteSaver database for reading, safe while another process writes it, and
    leaving nothing behind: no file, no -wal, no -shm that were not there before.

    Never ``immutable=1`` on a file someone may write: SQLite then takes no locks and trusts
    its page cache, and a writer committing (or checkpointing the WAL) during the read gives
    "database disk image is malformed" on a healthy file, or stale rows.

    A reader of a WAL-mode file needs the -shm (the WAL index) to know which frames are
    committed. A ``mode=ro`` connection creates -wal/-shm when they are missing and never
    removes them; a read-write connection removes them when it is the last one to close (it
    checkpoints and deletes both, like any SQLite client: a WAL left by a writer that has
    gone is folded into the file, rows unchanged). On a rollback-journal file a reader
    takes SQLite's shared lock (a commit waits for the read, the read for the commit) and
    creates nothing. So, when this user may write the file and its directory: ``mode=rw``
    (never creates the database) with ``PRAGMA query_only`` and an authorizer that drops
    journal-mode changes, correct in both modes and unable to change a row. Otherwise:
    ``mode=ro`` when a -shm already exists or the file is in rollback-journal mode;
    ``immutable=1`` only when no -wal/-shm exists and nobody may write the file or its
    directory (no write permission bits: a writer could not even create its journal); a
    sentence saying what to do for an idle WAL file that others may write.

    The file is not opened with Python's ``open()`` while SQLite may hold it: closing any
    descriptor of the file drops every POSIX lock this process holds on it, the locks of the
    process's other connections to it too. The header (byte 18: 1 = rollback journal,
    2 = WAL) is read only on the read-only path, where this process holds no write lock.

    ``name`` is how messages call the file (its path by default); ``other`` is what the
    command accepts instead of a file, named in the fix.
    """
    name = name or str(path)
    give = f"give {other} or " if other else "give "
    if not path.is_file():
        raise CheckpointError(f"{name} does not exist or is not a file: {give}the path of a "
                              "SQLite checkpoint database.")
    resolved = path.resolve()
    shm, wal = Path(f"{resolved}-shm"), Path(f"{resolved}-wal")
    if os.access(resolved, os.W_OK) and os.access(resolved.parent, os.W_OK | os.X_OK):
        query = "mode=rw"
    elif shm.exists():
        query = "mode=ro"
    elif not wal.exists() and not (resolved.stat().st_mode & resolved.parent.stat().st_mode
                                   & 0o222):
        # Idle, and no one may write the file, or create a journal beside it: nothing changes.
        query = "mode=ro&immutable=1"
    else:
        with resolved.open("rb") as f:
            header = f.read(100)
        if header.startswith(SQLITE_MAGIC) and len(header) > 18 and header[18] == 2:
            raise CheckpointError(
                f"{path} is a WAL-mode database that this user cannot write (nor its "
                "directory), and reading it safely while it may be written needs a -shm file "
                "beside it: run the command as the user that writes the file.")
        query = "mode=ro"
    try:
        conn = sqlite3.connect(f"{resolved.as_uri()}?{query}", uri=True, timeout=30)
    except sqlite3.Error as exc:
        raise CheckpointError(f"{path} could not be opened ({exc}): check its permissions."
                              ) from exc
    try:
        conn.set_authorizer(_keep_journal_mode)
        if query == "mode=rw":
            conn.execute("PRAGMA query_only = ON")
        tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    except sqlite3.DatabaseError as exc:
        conn.close()
        if exc.sqlite_errorcode == sqlite3.SQLITE_NOTADB:
            raise CheckpointError(f"{name} is not a SQLite database: {give}the path of a "
                                  "SqliteSaver checkpoint file.") from exc
        raise CheckpointError(f"{name} is not a readable SQLite database ({exc}).") from exc
    return require_checkpoint_tables(conn, path, tables)


__all__ = ["SQLITE_MAGIC", "open_checkpoint_db"]
