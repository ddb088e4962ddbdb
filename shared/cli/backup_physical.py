"""``ckpt backup --physical`` and ``ckpt restore --physical``: see ``shared/cli/backup.py``."""

from __future__ import annotations

import argparse
import json
from datetime import datetime
from pathlib import Path

from shared.errors import CheckpointError, on_interrupt
from shared.ops import pitr


def _time(text: str) -> datetime:
    try:
        when = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise CheckpointError(f"--to-time {text!r} is not a time: write it as "
                              "2026-12-02T13:05:00+00:00.") from None
    if when.tzinfo is None:
        raise CheckpointError(f"--to-time {text!r} has no time zone: write it with one, such "
                              "as 2026-12-02T13:05:00+00:00.")
    return when


def cmd_backup(args: argparse.Namespace) -> int:
    on_interrupt(f"{args.dir} may hold a partial base backup; delete it and run ckpt backup "
                 "--physical again")
    info = pitr.base_backup(args.url, args.dir)
    pitr.verify_physical(args.dir)  # a damaged copy is refused here: exit status 2
    result = {"backup": vars(info), "pg_verifybackup": "ok"}
    if not args.json:
        print(f"base backup {args.dir}: PostgreSQL {info.server_version}, system "
              f"{info.system_identifier}, WAL {info.start_lsn}..{info.end_lsn}, ended by "
              f"{info.end_time}, {info.seconds:.1f} s; pg_verifybackup: every file's SHA-256 "
              "and the WAL check out")
    if not args.verify:
        if args.json:
            print(json.dumps(result))
        else:
            print("not verified yet: ckpt backup ... --physical --verify recovers it into a "
                  "scratch server and compares.")
        return 0
    check = pitr.scratch_verify(args.dir, args.url)
    result["verify"] = check
    if args.json:
        print(json.dumps({**result, "ok": check["ok"]}, default=str))
    elif check["ok"]:
        print(f"verified: recovered into a scratch server in "
              f"{check['recovery']['replay_seconds']:.1f} s; {check.get('checkpoints', 0):,} "
              f"checkpoints of {check['database']} equal to the source's "
              f"{check.get('note', '')}".rstrip())
    else:
        print(f"verification FAILED: {check['missing']} checkpoints missing, "
              f"{check['different']} different from the source")
    return 0 if check["ok"] else 1


def cmd_restore(args: argparse.Namespace) -> int:
    on_interrupt(f"{args.url} may hold a partial copy; delete it and run ckpt restore again "
                 "(the backup and the archive were not changed)")
    if args.wal_archive is None or args.to_time is None:
        raise CheckpointError("A physical restore needs --wal-archive ARCHIVE and --to-time "
                              "TIME (nothing was written).")
    if "://" in args.url:
        raise CheckpointError("With --physical the second argument is a new data directory, "
                              "not a URL: give a path such as /srv/pg-restored.")
    target = _time(args.to_time)
    done = pitr.restore_to(args.dir, args.wal_archive, Path(args.url), target)
    reached = done.stopped is not None
    if args.json:
        print(json.dumps({**done.to_dict(), "target_reached": reached}))
    else:
        print(f"restored {args.dir} into {done.pgdata} up to {done.target_time}: "
              f"{done.stopped or 'replay ended before the target'}; last replayed commit "
              f"{done.last_replayed_commit}; {done.segments_restored} WAL segments from the "
              f"archive; copy {done.copy_seconds:.1f} s, replay {done.replay_seconds:.1f} s")
    if not args.verify:
        return 0
    last = datetime.fromisoformat(done.last_replayed_commit) if done.last_replayed_commit \
        else None
    ok = reached and (last is None or last < target)
    if not args.json:
        print("verified: replay stopped at the target, before the first commit at or after it"
              if ok else "verification FAILED: replay did not stop at the target")
    return 0 if ok else 1


__all__ = ["cmd_backup", "cmd_restore"]
