"""``ckpt backup`` and ``ckpt restore``: a logical backup of the checkpoint tables, checked.

    ckpt backup  postgresql://app:pw@db:5432/agents backups/today            # dump + manifest
    ckpt backup  postgresql://app:pw@db:5432/agents backups/today --verify   # ... and prove it
    ckpt restore backups/today postgresql://app:pw@db2:5432/agents --verify

``backup`` dumps the four checkpoint tables (``pg_dump -Fc``) in one snapshot and writes
``manifest.json`` (SHA-256, size, server version, row counts in that snapshot). With
``--verify`` the dump is restored into a scratch database on the source's server (created,
then dropped) and compared with the counts and, checkpoint by checkpoint, with the source in
the dump's own snapshot: a backup is only called good after that. ``restore`` checks the
SHA-256 first and refuses a target that already holds checkpoint tables; with ``--verify`` it
compares the restored counts with the manifest's.

Physical, with point-in-time recovery (the server archives its WAL: ``archive_settings``):

    ckpt backup  postgresql://app:pw@db:5432/agents base/ --physical --verify
    ckpt restore base/ new-pgdata/ --physical --wal-archive wal/ --to-time 2026-12-02T13:05:00Z

``backup --physical`` runs ``pg_basebackup`` (WAL streamed, SHA-256 manifest) and
``pg_verifybackup``; with ``--verify`` it also recovers the backup into a scratch data
directory with a scratch server and compares every checkpoint there with the source's.
``restore --physical`` recovers into a new, empty data directory up to TIME (not inclusive),
replaying the archive, and promotes (the server is started, so it does start); with
``--verify`` it checks that replay stopped at the target, before the first later commit.

Exit status: 0 done (and verified, if asked), 1 verification failed, 2 bad input (a
directory that is not a backup, a corrupted dump, a target with data, an unreachable server,
a recovery time outside the archive: one sentence, password masked).
"""

from __future__ import annotations

import argparse
import json
from typing import Any

from shared.cli import backup_physical as physical
from shared.errors import NOTHING_CHANGED, CheckpointError, on_interrupt
from shared.ops.backup import (
    TABLES,
    BackupCheck,
    backup,
    read_manifest,
    restore,
    snapshot_view,
    verify_backup,
)


def _counts(tables: dict[str, int]) -> str:
    return ", ".join(f"{tables.get(t, 0):,} {t}" for t in TABLES)


def _report(check: BackupCheck, as_json: bool) -> int:
    if as_json:
        print(json.dumps({"ok": check.ok, "problems": check.problems,
                          "counts_restored": check.counts_restored, "verify": check.verify}))
    elif check.ok:
        detail = ""
        if check.verify is not None:
            detail = (f"; verify: {check.verify['checkpoints']:,} checkpoints of "
                      f"{check.verify['threads']:,} threads equal, 0 differences")
        print(f"verified: restored into a scratch database, {_counts(check.counts_restored)} "
              f"as the manifest says{detail}")
    else:
        print("verification FAILED: " + "; ".join(check.problems))
    return 0 if check.ok else 1


def cmd_backup(args: argparse.Namespace) -> int:
    if args.physical:
        return physical.cmd_backup(args)
    on_interrupt(f"{args.dir} may hold a partial dump; delete it and run ckpt backup again")
    with snapshot_view(args.url) as snap:
        manifest = backup(args.url, args.dir, snap)
        if not args.json:
            print(f"backup {args.dir}: {manifest.size_bytes:,} bytes, sha256 "
                  f"{manifest.sha256[:16]}..., PostgreSQL {manifest.server_version}, "
                  f"{_counts(manifest.tables)}, snapshot at {manifest.snapshot_after}")
        if not args.verify:
            if args.json:
                print(json.dumps(manifest.to_dict()))
            else:
                print("not verified yet: ckpt backup ... --verify (or ckpt restore DIR "
                      "SCRATCH_URL --verify) proves it restores.")
            return 0
        return _report(verify_backup(args.dir, args.url, source_snapshot=snap), args.json)


def cmd_restore(args: argparse.Namespace) -> int:
    if args.physical:
        return physical.cmd_restore(args)
    if args.wal_archive or args.to_time:
        raise CheckpointError("--wal-archive and --to-time are for a physical restore: add "
                              "--physical.")
    on_interrupt(NOTHING_CHANGED + " (the restore runs in one transaction)")
    manifest = read_manifest(args.dir)
    done = restore(args.dir, args.url)
    if not args.json:
        print(f"restored {args.dir} into {done.target} in {done.seconds:.2f} s: "
              f"{_counts(done.tables)}")
    if not args.verify:
        if args.json:
            print(json.dumps({"target": done.target, "tables": done.tables}))
        return 0
    check = BackupCheck(manifest.tables, done.tables)
    check.problems = [f"{t}: {done.tables.get(t)} rows restored, the manifest says "
                      f"{manifest.tables.get(t)}" for t in TABLES
                      if done.tables.get(t) != manifest.tables.get(t)]
    return _report(check, args.json)


def add_backup_commands(subparsers: Any) -> None:
    """Register ``backup`` and ``restore`` on the ``ckpt`` command's subparsers."""
    b = subparsers.add_parser(
        "backup", help="pg_dump the checkpoint tables in one snapshot, with a checked manifest",
        description="Dump the checkpoint tables of URL (pg_dump -Fc, one snapshot) into DIR "
                    "with manifest.json; with --physical, a base backup of the whole server "
                    "(pg_basebackup, checked by pg_verifybackup). Exit 0 done, 1 verification "
                    "failed, 2 bad input.")
    b.add_argument("url", metavar="URL", help="postgresql://USER:PASSWORD@HOST:5432/DBNAME")
    b.add_argument("dir", metavar="DIR", help="a new or empty directory for the backup")
    b.add_argument("--verify", action="store_true",
                   help="restore into a scratch database on the same server and compare "
                        "every checkpoint with the source in the dump's snapshot; with "
                        "--physical, recover into a scratch server and compare with the source")
    b.add_argument("--physical", action="store_true",
                   help="pg_basebackup of the whole server (WAL streamed, SHA-256 manifest) "
                        "for point-in-time recovery with the server's WAL archive")
    b.add_argument("--json", action="store_true", help="print the result as JSON")
    b.set_defaults(func=cmd_backup)
    r = subparsers.add_parser(
        "restore", help="pg_restore a checked backup into a database without checkpoint tables",
        description="Restore DIR (written by ckpt backup; its SHA-256 is checked first) into "
                    "URL, which must hold no checkpoint tables; with --physical, recover the "
                    "base backup DIR into the new data directory PGDATA up to --to-time. Exit 0 "
                    "done, 1 verification failed, 2 bad input.")
    r.add_argument("dir", metavar="DIR", help="a directory written by ckpt backup")
    r.add_argument("url", metavar="URL|PGDATA",
                   help="postgresql://USER:PASSWORD@HOST:5432/DBNAME; with --physical a new or "
                        "empty data directory")
    r.add_argument("--verify", action="store_true",
                   help="compare the restored row counts with the manifest's; with --physical, "
                        "check that replay stopped at the target, before the first later commit")
    r.add_argument("--physical", action="store_true",
                   help="DIR is a base backup (ckpt backup --physical): recover it into PGDATA")
    r.add_argument("--wal-archive", metavar="ARCHIVE",
                   help="the directory the server's archive_command copies WAL into")
    r.add_argument("--to-time", metavar="TIME",
                   help="recover up to this time, not inclusive, with a time zone "
                        "(2026-12-02T13:05:00+00:00)")
    r.add_argument("--json", action="store_true", help="print the result as JSON")
    r.set_defaults(func=cmd_restore)


__all__ = ["add_backup_commands", "cmd_backup", "cmd_restore"]
