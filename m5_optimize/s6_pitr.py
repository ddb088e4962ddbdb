"""5.6 Point-in-time recovery: undo a bad prune by replaying archived WAL up to just before it.

A primary runs with ``fsync``, ``full_page_writes`` and ``synchronous_commit`` on and
archives every WAL segment into a directory, then to S3 over HTTP (moto's server unless
``S3_ENDPOINT_URL`` is set: ``archive_command``, ``archive_timeout`` 1 s); recovery
downloads the S3 copy and replays it.
Chat traffic (``live_chat``: two workers, a ledger of every acknowledged turn timed by the
SERVER clock) runs through a time-scaled "day" of 24 "hours" of ``hour_s`` seconds each. In
"hour" ``backup_hour`` a base backup is taken (``pg_basebackup``) while the traffic writes.
In "hour" ``mistake_hour`` a bad prune deletes every thread: one transaction, three DELETEs.
Its server time (read inside that transaction, before its COMMIT) is the recovery target; a
REPEATABLE READ snapshot keeps what the primary held before the mistake, opened once every
transaction still running at the target has ended (``shared/workloads/pitr_day.py``: a
commit is stamped before its WAL is flushed, which with fsync on takes milliseconds).
The day goes on to its end. Then the base backup is restored into a new data directory and
the archived WAL replayed to that target (``restore_to``).

The ledger decides: every turn acknowledged before the target is there, every turn started
after it is not, and every restored checkpoint equals the one the primary held before the
mistake (``verify``, by stored bytes). RPO and RTO are measured: acknowledged work lost
before the target, the gap from the target to the last replayed commit, and the wall time
from "start restore" to "serving reads" split into fetch, verify, copy and replay. A backup
with one byte flipped is refused, and so is a recovery time after the last archived commit.
"""

from __future__ import annotations

import shutil
import time
from datetime import datetime, timedelta
from pathlib import Path

import psycopg

import shared.witness
from shared.errors import CheckpointError, refusal
from shared.infra.postgres import DURABLE, embedded_postgres
from shared.infra.s3 import s3_server
from shared.ops import pitr, wal_s3
from shared.ops.verify import verify
from shared.savers.postgres import open_postgres_saver
from shared.witness import Witness, fresh_workdir
from shared.workloads.pitr_day import mistake_day
from shared.workloads.postgres_writers import setup_postgres


def main(workdir: Path | None = None, hour_s: float = 1.0, backup_hour: int = 2,
         mistake_hour: int = 18, workers: int = 2) -> Witness:
    w = Witness("5.6", "Point-in-time recovery to just before a mistake")
    wd = fresh_workdir(workdir, "m5_s6_pitr")
    local = pitr.prepare_archive(wd / "wal-archive")  # the archive's first copy
    archive = wd / "wal-from-s3"  # what recovery replays: the S3 copy, downloaded
    prefix = f"m5-s6/{time.time_ns()}/"  # S3 (moto's, or yours) outlives one run
    try:
        with s3_server("ckpt-wal") as s3, embedded_postgres(wd / "primary", settings={
                **DURABLE, **pitr.archive_settings(local, then=wal_s3.push_command(
                    s3, prefix, wd / "s3-credentials"))}) as pg:
            fsync, sync = (pg.psql(f"SHOW {s}").strip() for s in ("fsync", "synchronous_commit"))
            setup_postgres(pg.url)
            with mistake_day(pg.url, wd, hour_s, backup_hour, mistake_hour, workers) as day:
                info, target, traffic = day.info, day.target, day.traffic
                clock = time.perf_counter()  # "start restore": the archive is in S3
                files, size = wal_s3.fetch_archive(s3, prefix, archive)
                fetch_s = round(time.perf_counter() - clock, 3)
                wal_s3.drop_archive(s3, prefix)  # this run's objects: moto holds them in RAM
                done = pitr.restore_to(wd / "base", archive, wd / "restored", target)
                with embedded_postgres(wd / "restored", settings=DURABLE) as restored:
                    with psycopg.connect(restored.url) as conn:
                        present = set(conn.execute(
                            "SELECT thread_id, checkpoint_id FROM checkpoints "
                            "WHERE checkpoint_ns = ''").fetchall())
                    with open_postgres_saver(restored.url) as mine:
                        same = verify(mine, day.reference, examples=100_000)
                with psycopg.connect(pg.url) as conn:
                    left = conn.execute("SELECT count(*) FROM checkpoints").fetchone()[0]
        segments = len(pitr.archived_segments(archive))
        differ = sum(p.read_bytes() != (local / p.name).read_bytes() for p in archive.iterdir())
        bad = wd / "base-flipped"
        shutil.copytree(wd / "base", bad)
        victim = max((p for p in (bad / "base").rglob("*") if p.is_file()),
                     key=lambda p: p.stat().st_size)
        data = bytearray(victim.read_bytes())
        data[len(data) // 2] ^= 0x01
        victim.write_bytes(data)
        flipped = refusal(lambda: pitr.restore_to(bad, archive, wd / "never-1", target))
        late = target + timedelta(days=1)
        too_late = refusal(lambda: pitr.restore_to(wd / "base", archive, wd / "never-2", late))
        too_early = refusal(lambda: pitr.restore_to(wd / "base", archive, wd / "never-3",
                                                    info.ended - timedelta(seconds=1)))
    except CheckpointError as exc:
        w.error = " ".join(str(exc).split())
        return w

    ledger = traffic.ledger
    before = [e for e in ledger if e[3] < target]  # acknowledged before the target
    after = [e for e in ledger if e[2] > target]  # started after it
    raced = [e for e in ledger if e not in before and e not in after]
    lost = [e for e in before if (e[0], e[1]) not in present]
    replayed = datetime.fromisoformat(done.last_replayed_commit)
    # a raced turn's checkpoint may be restored with the node writes it made before the target
    raced_threads = {e[0] for e in raced}
    writes_late = [x for x in same.examples if x.endswith(": pending_writes differ")
                   and x.split("/")[0] in raced_threads]
    rto = fetch_s + done.verify_seconds + done.copy_seconds + done.replay_seconds

    w.show(f"primary: fsync = {fsync}, synchronous_commit = {sync}; each WAL segment (one at "
           f"least every {pitr.archive_settings(local)['archive_timeout']}) archived to "
           f"{local.name}/, then to s3://{s3.bucket}/{prefix} over HTTP (curl, SigV4)")
    w.show(f"recovery replays the S3 copy: {files} objects, {size:,} bytes, downloaded in "
           f"{fetch_s} s")
    w.show(f"a day of 24 'hours' of {hour_s:g} s each: base backup in hour {backup_hour} "
           f"({info.seconds:.1f} s, LSN {info.start_lsn}..{info.end_lsn}), bad prune in hour "
           f"{mistake_hour} at {target.time()} (left {left:,} checkpoints by the day's end)")
    w.show(f"restored to {target.time()}: {done.stopped}; last replayed commit "
           f"{replayed.time()}, {done.segments_restored} segments from the archive")
    w.show(f"ledger: {len(ledger)} acknowledged turns: {len(before)} before the target, "
           f"{len(after)} started after it, {len(raced)} raced it")
    w.show("one byte flipped in " + str(victim.relative_to(bad)) + ": " + str(flipped))
    w.show("a time after the archive: " + str(too_late))
    w.metric("server_fsync", fsync, target="== on")
    w.metric("server_synchronous_commit", sync, target="== on")
    w.metric("s3_archived_segments", segments, "segments", "> 0")
    w.metric("s3_files_differing_from_local_archive", differ, "files", "== 0")
    w.metric("traffic_errors", len(traffic.errors), "turns", "== 0")
    w.metric("turns_acked_before_target", len(before), "turns", "> 0")
    w.metric("acked_before_target_missing", len(lost), "turns", "== 0")
    w.metric("turns_started_after_target", len(after), "turns", "> 0")
    w.metric("started_after_target_present", sum((e[0], e[1]) in present for e in after),
             "turns", "== 0")
    w.metric("restored_checkpoints_compared", same.checkpoints, "checkpoints", "> 0")
    w.metric("restored_not_on_primary_before_mistake", same.missing, "checkpoints", "== 0")
    w.metric("restored_differences", same.mismatches - len(writes_late), "checkpoints", "== 0")
    w.metric("turns_raced_target", len(raced), "turns")  # started before, acknowledged after
    w.metric("writes_after_target_on_raced_turns", len(writes_late), "checkpoints",
             f"<= {len(raced)}")
    w.metric("rpo_acked_work_lost_s", max((target - e[3]).total_seconds() for e in lost)
             if lost else 0.0, "s", "== 0")
    gap_ms = (target - replayed).total_seconds() * 1000
    w.metric("rpo_target_to_last_replayed_commit_ms", round(gap_ms, 1), "ms", "<= 1000")
    w.metric("rpo_replay_stopped_before_target", done.stopped is not None
             and replayed < target, target="== yes")
    w.metric("rto_fetch_from_s3_s", fetch_s, "s")
    w.metric("rto_verify_s", done.verify_seconds, "s")
    w.metric("rto_copy_s", done.copy_seconds, "s")
    w.metric("rto_replay_s", done.replay_seconds, "s")
    w.metric("rto_total_s", round(rto, 3), "s", "> 0")
    w.metric("flipped_byte_refused", flipped is not None and str(victim.relative_to(bad))
             in flipped, target="== yes")
    w.metric("time_after_archive_refused", too_late is not None
             and "after the last commit" in too_late, target="== yes")
    w.metric("time_before_backup_refused", too_early is not None
             and "before this base backup ended" in too_early, target="== yes")
    w.metric("refused_targets_created", sum((wd / f"never-{i}").exists() for i in (1, 2, 3)),
             "dirs", "== 0")
    w.note(f"Scale: 1 'hour' = {hour_s:g} s of wall time. RTO here is a download from S3 on "
           f"loopback, a local copy of a {info.format} backup and replay of "
           f"{done.segments_restored} WAL segments; it grows with the backup's size and the WAL "
           "written since it. Its parts are timed one by one; stopping the server is not in it.")
    if traffic.errors:
        w.show("first traffic error: " + traffic.errors[0])
    return w


if __name__ == "__main__":
    raise SystemExit(shared.witness.cli(main))
