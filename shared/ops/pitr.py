"""Physical backup and point-in-time recovery of a PostgreSQL server whose WAL is archived.

    settings = {**DURABLE, **archive_settings("wal-archive")}   # the primary ships its WAL
    info = base_backup(url, "base")         # pg_basebackup -X stream, SHA-256 manifest
    verify_physical("base")                 # pg_verifybackup: one flipped byte is refused
    done = restore_to("base", "wal-archive", "restored-pgdata", target_time=t)

``restore_to`` copies the base backup into an EMPTY new data directory, writes
``recovery.signal`` and the recovery settings (``restore_command`` from the archive,
``recovery_target_time``, not inclusive, then promote), starts the server, waits until it
has left recovery and reports what it reached: the last replayed commit's time and the log
line that says where replay stopped. Before anything is written it refuses a directory that
is not a base backup, a target that already holds files, and a target time outside what the
backup and the archive cover (before the backup ended, or after the last archived commit,
read from the archive with ``pg_waldump``). The server's OS user (``nobody`` when we are
root) owns the new data directory and must read the archive: see ``prepare_datadir``.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import time
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from shared.errors import CheckpointError
from shared.infra.postgres import (
    DURABLE,
    FAST,
    bin_dir,
    connect,
    embedded_postgres,
    prepare_datadir,
)
from shared.infra.urls import mask_url
from shared.ops.backup import _sha256, _tool

INFO = "ckpt-physical.json"  # beside the backup's own files, ignored by pg_verifybackup
MANIFEST = "backup_manifest"
SEGMENT = re.compile(r"^[0-9A-F]{24}$")
COMMIT = re.compile(r"desc: COMMIT (\d{4}-\d\d-\d\d \d\d:\d\d:\d\d(?:\.\d+)?) UTC")


def archive_settings(archive_dir: str | Path, timeout_s: float = 1.0,
                     then: str | None = None) -> dict[str, str]:
    """Server settings that archive every WAL segment into ``archive_dir``.

    The command refuses to overwrite a segment already archived (a second server pointed at
    the same archive must not replace the first one's history) and fails when the copy fails,
    so PostgreSQL keeps the segment and tries again; ``.part`` then ``mv`` makes a segment
    appear whole or not at all. ``archive_timeout`` ships a partly filled segment after that
    many seconds, so even a quiet server's last commits reach the archive (a lesson's second;
    a production server's minute or so, each switch costs a 16 MB file). ``then``: a second
    step (``wal_s3.push_command``); the segment is archived once both succeeded."""
    d = shlex.quote(str(Path(archive_dir).resolve()))
    command = f"test ! -f {d}/%f && cp %p {d}/%f.part && mv {d}/%f.part {d}/%f"
    if then:  # a retry after the copy succeeded and ``then`` failed finds the same bytes
        command = f"{{ test -f {d}/%f && cmp -s %p {d}/%f; }} || {{ {command}; }}"
    return {"wal_level": "replica", "archive_mode": "on",
            "archive_command": command + (f" && {then}" if then else ""),
            "archive_timeout": f"{max(1, round(timeout_s))}s"}


def prepare_archive(archive_dir: str | Path) -> Path:
    """Create the archive directory, writable by the server's OS user."""
    path = Path(archive_dir).resolve()
    prepare_datadir(path)  # same rights as a data directory: the server's user, 0700
    return path


@dataclass
class BackupInfo:
    server_version: str
    system_identifier: str
    start_lsn: str
    end_lsn: str
    start_time: str  # ISO, the server's clock: before the backup started
    end_time: str  # the server's clock once pg_basebackup returned (>= the backup's end)
    format: str  # "plain" or "tar"
    seconds: float
    source: str  # password masked
    # SHA-256 of each file the manifest does not cover (pg_wal's segments; in tar format the
    # tar files): pg_verifybackup only parses that WAL, which misses a flip in unused space
    others_sha256: dict[str, str] = field(default_factory=dict)

    @property
    def ended(self) -> datetime:
        return datetime.fromisoformat(self.end_time)


def _server_facts(url: str) -> tuple[str, str, datetime]:
    with connect(url, autocommit=True) as conn:
        return conn.execute("SELECT current_setting('server_version'), system_identifier::text, "
                            "clock_timestamp() FROM pg_control_system()").fetchone()


def base_backup(url: str, dest: str | Path, tar: bool = False) -> BackupInfo:
    """``pg_basebackup`` of ``url``'s whole server into ``dest`` (new or empty), with WAL
    streamed alongside and a SHA-256 manifest; ``ckpt-physical.json`` records what it is."""
    dest = Path(dest).resolve()
    if dest.exists() and (not dest.is_dir() or any(dest.iterdir())):
        raise CheckpointError(f"{dest} exists and is not an empty directory: give a new "
                              "directory for the base backup (nothing was overwritten).")
    version, system_id, started = _server_facts(url)
    clock = time.perf_counter()
    try:
        _tool("pg_basebackup", ["-D", str(dest), "-X", "stream", "-c", "fast",
                                "--manifest-checksums", "SHA256", "-Ft" if tar else "-Fp",
                                "--no-password", f"--dbname={url}"], url)
    except BaseException:
        shutil.rmtree(dest, ignore_errors=True)
        raise
    seconds = time.perf_counter() - clock
    _, _, ended = _server_facts(url)
    manifest = json.loads((dest / MANIFEST).read_text())
    ranges, listed = manifest["WAL-Ranges"][0], {f["Path"] for f in manifest["Files"]}
    others = {str(p.relative_to(dest)): _sha256(p) for p in sorted(dest.rglob("*"))
              if p.is_file() and str(p.relative_to(dest)) not in listed | {MANIFEST}}
    info = BackupInfo(version, system_id, ranges["Start-LSN"], ranges["End-LSN"],
                      started.isoformat(), ended.isoformat(), "tar" if tar else "plain",
                      round(seconds, 3), mask_url(url), others)
    (dest / INFO).write_text(json.dumps(asdict(info), indent=2) + "\n")
    return info


def read_info(backup: str | Path) -> BackupInfo:
    """What ``base_backup`` recorded; one sentence if ``backup`` is not such a directory."""
    where = Path(backup)
    try:
        info = BackupInfo(**json.loads((where / INFO).read_text()))
        if not (where / MANIFEST).is_file():
            raise ValueError(MANIFEST)
    except (OSError, ValueError, TypeError):
        raise CheckpointError(f"{where} is not a base backup (no {INFO} and {MANIFEST}): give a "
                              "directory written by ckpt backup --physical.") from None
    return info


def verify_physical(backup: str | Path) -> BackupInfo:
    """``pg_verifybackup``: every file's size and SHA-256 against the manifest, and the WAL."""
    info = read_info(backup)
    for name, digest in info.others_sha256.items():
        path = Path(backup) / name
        actual = _sha256(path) if path.is_file() else "missing"
        if actual != digest:
            raise CheckpointError(f"The base backup {backup} is damaged (checksum mismatch for "
                                  f'file "{name}": SHA-256 {actual[:16]}..., recorded '
                                  f"{digest[:16]}...): refusing it; take a new base backup.")
    args = ["-q", "-i", INFO, *(["-n"] if info.format == "tar" else []), str(backup)]
    out = subprocess.run([str(bin_dir() / "pg_verifybackup"), *args], capture_output=True,
                         text=True, timeout=600, cwd="/")
    if out.returncode != 0:
        lines = [ln.split("error: ", 1)[-1] for ln in (out.stderr or out.stdout).splitlines()
                 if "error:" in ln] or [(out.stderr or out.stdout).strip()]
        raise CheckpointError(f"The base backup {backup} is damaged ({lines[0]}; "
                              f"{len(lines)} problem(s) found by pg_verifybackup): refusing "
                              "it; take a new base backup.")
    return info


def archived_segments(archive_dir: Path) -> list[Path]:
    """The archived WAL segments (not .history, .backup or .part files), oldest first."""
    return sorted(p for p in archive_dir.iterdir() if SEGMENT.match(p.name))


def last_archived_commit(archive_dir: str | Path) -> datetime | None:
    """The commit time of the newest transaction in the archive (``pg_waldump``), or None."""
    segments = archived_segments(Path(archive_dir))
    for seg in reversed(segments):  # a segment switched by archive_timeout may hold none
        out = subprocess.run([str(bin_dir() / "pg_waldump"), str(seg)], capture_output=True,
                             text=True, timeout=120, cwd="/", env={**os.environ, "TZ": "UTC"})
        # It ends with an error at the segment's unused tail: the records before it stand.
        found = COMMIT.findall(out.stdout)
        if found:
            return datetime.fromisoformat(found[-1]).replace(tzinfo=UTC)
    return None


def flush_archive(url: str, timeout: float = 60.0) -> str:
    """Switch to a new WAL segment and wait until the one holding every commit so far is
    archived: then the archive covers everything committed before this call."""
    with connect(url, autocommit=True) as conn:
        segment = conn.execute("SELECT pg_walfile_name(pg_switch_wal())").fetchone()[0]
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            last, failed = conn.execute("SELECT last_archived_wal, last_failed_wal FROM "
                                        "pg_stat_archiver").fetchone()
            if last is not None and last[:24] >= segment:
                return segment
            time.sleep(0.1)
    raise CheckpointError(f"WAL segment {segment} was not archived within {timeout:g} s (last "
                          f"failed: {failed}): check archive_command and the server log.")


@dataclass
class RecoveryReport:
    pgdata: str
    target_time: str | None
    last_replayed_commit: str | None  # pg_last_xact_replay_timestamp() once recovery ended
    stopped: str | None  # the server's "recovery stopping before ..." line
    segments_restored: int  # WAL segments fetched from the archive by restore_command
    verify_seconds: float  # pg_verifybackup and the range checks, before anything is written
    copy_seconds: float
    replay_seconds: float  # server start to recovery ended and serving reads

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _first_gap(archive: Path, info: BackupInfo) -> str | None:
    """The first segment missing in the archive between the backup's end and its newest
    segment of the backup's timeline (16 MB segments, PostgreSQL's default), or None."""
    per_id = 0x100000000 // (16 << 20)
    high, low = (int(x, 16) for x in info.end_lsn.split("/"))
    timeline = None
    numbers = set()
    for seg in archived_segments(archive):
        timeline = timeline or seg.name[:8]
        if seg.name[:8] == timeline:
            numbers.add(int(seg.name[8:16], 16) * per_id + int(seg.name[16:], 16))
    first = (high << 32 | low) // (16 << 20)
    for n in range(first, max(numbers, default=first)):
        if n not in numbers:
            return f"{timeline}{n // per_id:08X}{n % per_id:08X}"
    return None


def _refuse_outside(info: BackupInfo, archive: Path | None, target: datetime | None) -> None:
    if target is None:
        return
    if target.tzinfo is None:
        raise CheckpointError(f"The recovery time {target.isoformat()} has no time zone: write "
                              "it with one, such as 2026-12-02T13:05:00+00:00.")
    if archive is None:
        raise CheckpointError("A recovery time needs the WAL archive: give --wal-archive DIR.")
    if target < info.ended:
        raise CheckpointError(f"The recovery time {target.isoformat()} is before this base "
                              f"backup ended ({info.end_time}): give a later time, or an older "
                              "base backup (nothing was written).")
    missing = _first_gap(archive, info)
    if missing:
        raise CheckpointError(f"The WAL archive {archive} lacks segment {missing} (after the "
                              "base backup, before its newest segment): replay would stop "
                              "there; find that segment or take a new base backup (nothing "
                              "was written).")
    last = last_archived_commit(archive)
    if last is None or target > last:
        raise CheckpointError(f"The recovery time {target.isoformat()} is after the last "
                              f"commit in the WAL archive {archive} ({last and last.isoformat()})"
                              ": give an earlier time, or wait until the server archived more "
                              "(nothing was written).")


def _hand_over(pgdata: Path, user: str | None) -> None:
    """Give every copied file to the server's OS user (we may be root, it is not)."""
    if user is None:
        return
    import pwd

    entry = pwd.getpwnam(user)
    for root, dirs, files in os.walk(pgdata):
        for name in dirs + files:
            os.chown(os.path.join(root, name), entry.pw_uid, entry.pw_gid)


def _copy(backup: Path, info: BackupInfo, pgdata: Path) -> None:
    if info.format == "plain":
        shutil.copytree(backup, pgdata, dirs_exist_ok=True)
        return
    import tarfile

    for name, where in (("base.tar", pgdata), ("pg_wal.tar", pgdata / "pg_wal")):
        with tarfile.open(backup / name) as tar:
            tar.extractall(where, filter="data")
    shutil.copy2(backup / INFO, pgdata / INFO)


def _conf(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def restore_to(backup: str | Path, archive_dir: str | Path | None, pgdata: str | Path,
               target_time: datetime | None = None, settings: dict[str, str] | None = None,
               timeout: float = 300.0) -> RecoveryReport:
    """Recover ``backup`` into the new data directory ``pgdata``: to ``target_time`` (not
    inclusive) replaying WAL from ``archive_dir``, or, with no time, to the end of the WAL
    in the backup and the archive. The server is started, promoted, measured and stopped."""
    backup, pgdata = Path(backup).resolve(), Path(pgdata).resolve()
    clock = time.perf_counter()
    info = verify_physical(backup)
    if pgdata.exists() and (not pgdata.is_dir() or any(pgdata.iterdir())):
        raise CheckpointError(f"{pgdata} is not empty: give a new or empty directory for the "
                              "restored server (nothing was overwritten).")
    archive = Path(archive_dir).resolve() if archive_dir is not None else None
    if archive is not None and not (archive.is_dir() and archived_segments(archive)):
        raise CheckpointError(f"{archive} holds no archived WAL segments: give the directory "
                              "the server's archive_command copies into.")
    _refuse_outside(info, archive, target_time)
    checked = time.perf_counter() - clock

    clock = time.perf_counter()
    user = prepare_datadir(pgdata)
    _copy(backup, info, pgdata)
    lines = ["", "# ckpt restore --physical"]
    if archive is not None:
        lines.append(f"restore_command = {_conf(f'cp {shlex.quote(str(archive))}/%f %p')}")
        if target_time is not None:
            lines += [f"recovery_target_time = {_conf(target_time.isoformat(sep=' '))}",
                      "recovery_target_inclusive = off"]
        lines.append("recovery_target_action = promote")
        (pgdata / "recovery.signal").touch()
    with (pgdata / "postgresql.auto.conf").open("a") as conf:
        conf.write("\n".join(lines) + "\n")
    _hand_over(pgdata, user)
    copied = time.perf_counter() - clock

    log = pgdata / "server.log"
    offset = log.stat().st_size if log.exists() else 0
    clock = time.perf_counter()
    try:
        # archive_mode off unless asked: the source's postgresql.conf may archive, and a
        # restored server must not write into the archive it came from
        replayed = _recover(pgdata, {"archive_mode": "off", **(settings or DURABLE)}, timeout)
    except Exception as exc:
        died = re.findall(r"FATAL: +(.*)|last completed transaction was at log time (.*)",
                          log.read_bytes()[offset:].decode(errors="replace"))
        if not died:
            raise
        said = "; ".join(a or f"last replayed commit at {b}" for a, b in died
                         if not a.startswith("the database system is"))  # clients' FATALs
        raise CheckpointError(f"Recovery of {pgdata} failed ({said}): the WAL archive may have "
                              "a gap or end early; delete that directory before trying again."
                              ) from exc
    replay = time.perf_counter() - clock
    text = log.read_bytes()[offset:].decode(errors="replace")
    stopped = re.search(r"recovery stopping before .*", text)
    return RecoveryReport(str(pgdata), target_time and target_time.isoformat(),
                          replayed and replayed.isoformat(), stopped and stopped[0],
                          len(re.findall(r"restored log file", text)), round(checked, 3),
                          round(copied, 3), round(replay, 3))


def _recover(pgdata: Path, settings: dict[str, str], timeout: float) -> datetime | None:
    """Start the server, wait until recovery ended (promoted): the last replayed commit."""
    with (embedded_postgres(pgdata, settings=settings) as server,
          connect(server.url, autocommit=True) as conn):
        deadline = time.monotonic() + timeout
        while conn.execute("SELECT pg_is_in_recovery()").fetchone()[0]:
            if time.monotonic() > deadline:
                raise CheckpointError(f"{pgdata} was still recovering after {timeout:g} s: "
                                      "see server.log in it.")
            time.sleep(0.05)
        return conn.execute("SELECT pg_last_xact_replay_timestamp()").fetchone()[0]


def _with_database(url: str, database: str) -> str:
    from urllib.parse import urlsplit, urlunsplit

    return urlunsplit(urlsplit(url)._replace(path=f"/{database}"))


def scratch_verify(backup: str | Path, source_url: str) -> dict[str, Any]:
    """Recover ``backup`` into a scratch data directory with a scratch server (removed after)
    and compare every checkpoint there with the source database as it is now (``verify``):
    none may be missing or different; newer checkpoints and later node writes on the source
    are expected. Not the source's own access rules: the scratch server trusts loopback only.
    """
    import tempfile
    from urllib.parse import unquote, urlsplit

    from shared.ops.backup import TABLES, _present
    from shared.ops.verify import verify
    from shared.savers.postgres import open_postgres_saver

    database = unquote(urlsplit(source_url).path.lstrip("/")) or "postgres"
    home = Path(tempfile.mkdtemp(prefix="ckpt-scratch-restore-"))
    try:
        hba = home / "pg_hba.conf"  # the source's may ask passwords we do not have
        hba.write_text("local all all trust\nhost all all 127.0.0.1/32 trust\n")
        hba.chmod(0o644)
        settings = {**FAST, "hba_file": str(hba)}  # thrown away: speed
        done = restore_to(backup, None, home / "pgdata", settings=settings)
        result: dict[str, Any] = {"recovery": done.to_dict(), "database": database}
        with embedded_postgres(home / "pgdata", settings=settings) as server:
            scratch = _with_database(server.url, database)
            with connect(scratch, autocommit=True) as conn:
                if len(_present(conn)) < len(TABLES):
                    result.update(ok=True, checkpoints=0, note="no checkpoint tables to compare")
                    return result
            with open_postgres_saver(scratch) as mine, open_postgres_saver(source_url) as now:
                report = verify(mine, now, examples=100_000)
        late = sum(x.endswith(": pending_writes differ") for x in report.examples)
        result.update(ok=report.missing == 0 and report.mismatches == late,
                      checkpoints=report.checkpoints, missing=report.missing,
                      different=report.mismatches - late, later_writes_on_source=late,
                      newer_on_source=report.extra + report.extra_threads)
        return result
    finally:
        shutil.rmtree(home, ignore_errors=True)


__all__ = ["INFO", "BackupInfo", "RecoveryReport", "archive_settings", "archived_segments",
           "base_backup", "flush_archive", "last_archived_commit", "prepare_archive", "read_info",
           "restore_to", "scratch_verify", "verify_physical"]
