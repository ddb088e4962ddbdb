"""shared/ops/pitr.py and ckpt backup/restore --physical: bad input, corruption, a real PITR."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

import pytest

from shared import ROOT
from shared.errors import CheckpointError
from shared.infra.postgres import DURABLE, embedded_postgres
from shared.ops import pitr


@dataclass
class Primary:
    home: Path
    archive: Path
    base: Path
    info: pitr.BackupInfo
    target: datetime  # between the commits of rows 1..3 and row 4
    url: str


@pytest.fixture(scope="module")
def primary() -> Iterator[Primary]:
    """A primary archiving into a directory whose name needs quoting; a base backup of it;
    rows 1-3 committed before ``target`` and row 4 after it; the archive flushed."""
    from tests.conftest import SESSION_CHILDREN, _children

    home = Path(tempfile.mkdtemp(prefix="ckpt-test-pitr-"))
    archive = pitr.prepare_archive(home / "wal archive's")
    before = _children()
    try:
        with embedded_postgres(home / "primary",
                               settings={**DURABLE, **pitr.archive_settings(archive)}) as pg:
            SESSION_CHILDREN.update(_children() - before)
            pg.psql("CREATE TABLE t (i int); INSERT INTO t VALUES (1)")
            info = pitr.base_backup(pg.url, home / "base")
            # row 2 in the segment after the backup's, row 3 in the next one
            for sql in ("INSERT INTO t VALUES (2)", "SELECT pg_switch_wal()",
                        "INSERT INTO t VALUES (3)"):
                pg.psql(sql)
            target = datetime.fromisoformat(pg.psql("SELECT clock_timestamp()").strip()
                                            .replace(" ", "T") + ":00")
            pg.psql("INSERT INTO t VALUES (4)")
            pitr.flush_archive(pg.url)
            yield Primary(home, archive, home / "base", info, target, pg.url)
    finally:
        shutil.rmtree(home, ignore_errors=True)


def ckpt(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "shared.cli", *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=300)


def test_archive_settings_quote_the_path_and_never_overwrite(primary: Primary) -> None:
    command = pitr.archive_settings(primary.archive)["archive_command"]
    assert command.startswith("test ! -f ") and "'\"'\"'" in command  # the ' in the name
    assert pitr.archived_segments(primary.archive)  # and the server did archive through it


def test_base_backup_records_what_it_is(primary: Primary) -> None:
    info = pitr.read_info(primary.base)
    assert info.server_version.startswith("18")
    assert info.system_identifier.isdigit() and info.start_lsn <= info.end_lsn
    assert info.ended >= datetime.fromisoformat(info.start_time)
    assert any(name.startswith("pg_wal/") for name in info.others_sha256)
    assert pitr.verify_physical(primary.base) == info


def test_base_backup_password_goes_in_the_environment(primary: Primary, tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    seen = {}

    def record(args, **kwargs):  # the tool itself does not run: only its invocation matters
        seen.update(args=args, env=kwargs["env"])
        raise CheckpointError("stop here")

    monkeypatch.setattr("shared.ops.backup.subprocess.run", record)
    url = primary.url.replace("postgres@", "postgres:s3cret@")
    with pytest.raises(CheckpointError):
        pitr.base_backup(url, tmp_path / "b")
    assert not any("s3cret" in a for a in seen["args"]) and seen["env"]["PGPASSWORD"] == "s3cret"
    assert not (tmp_path / "b").exists()


def test_base_backup_into_a_non_empty_dir_is_refused(primary: Primary, tmp_path: Path) -> None:
    (tmp_path / "keep.txt").write_text("mine")
    with pytest.raises(CheckpointError, match="not an empty directory"):
        pitr.base_backup(primary.url, tmp_path)
    assert [p.name for p in tmp_path.iterdir()] == ["keep.txt"]


@pytest.mark.parametrize("pick", ["relation", "global/pg_control", "wal", "backup_label"])
def test_a_flipped_byte_anywhere_is_refused_naming_the_file(primary: Primary, tmp_path: Path,
                                                             pick: str) -> None:
    bad = tmp_path / "bad"
    shutil.copytree(primary.base, bad)
    if pick == "relation":
        victim = max((p for p in (bad / "base").rglob("*") if p.is_file()),
                     key=lambda p: p.stat().st_size)
    elif pick == "wal":  # its middle is unused space: only our own SHA-256 sees it
        victim = next(p for p in (bad / "pg_wal").iterdir() if pitr.SEGMENT.match(p.name))
    else:
        victim = bad / pick
    data = bytearray(victim.read_bytes())
    data[len(data) // 2] ^= 0x01
    victim.write_bytes(data)
    with pytest.raises(CheckpointError) as err:
        pitr.verify_physical(bad)
    message = str(err.value)
    assert f'"{victim.relative_to(bad)}"' in message and "refusing it" in message
    assert "\n" not in message
    with pytest.raises(CheckpointError, match="damaged"):  # and restore_to refuses it too
        pitr.restore_to(bad, primary.archive, tmp_path / "new", primary.target)
    assert not (tmp_path / "new").exists()


def test_restore_refuses_bad_input_and_writes_nothing(primary: Primary, tmp_path: Path) -> None:
    new = tmp_path / "new"
    cases = {
        "is not a base backup": (tmp_path, primary.archive, primary.target),
        "before this base backup ended": (primary.base, primary.archive,
                                          primary.info.ended - timedelta(seconds=5)),
        "after the last commit": (primary.base, primary.archive,
                                  primary.target + timedelta(hours=1)),
        "has no time zone": (primary.base, primary.archive, primary.target.replace(tzinfo=None)),
        "holds no archived WAL": (primary.base, tmp_path, primary.target),
    }
    for expected, (backup, archive, when) in cases.items():
        with pytest.raises(CheckpointError, match=expected):
            pitr.restore_to(backup, archive, new, when)
        assert not new.exists(), expected
    new.mkdir()
    (new / "PG_VERSION").write_text("18\n")
    with pytest.raises(CheckpointError, match="is not empty"):
        pitr.restore_to(primary.base, primary.archive, new, primary.target)
    assert [p.name for p in new.iterdir()] == ["PG_VERSION"]


def test_an_archive_with_a_gap_or_a_damaged_segment_is_refused(primary: Primary,
                                                                tmp_path: Path) -> None:
    archive = pitr.prepare_archive(tmp_path / "archive")  # the server's user reads it
    for segment in primary.archive.iterdir():
        shutil.copy2(segment, archive)
        os.chown(archive / segment.name, archive.stat().st_uid, archive.stat().st_gid)
    segments = pitr.archived_segments(archive)
    after = [p for p in segments if p.name[8:] > primary.info.end_lsn.split("/")[0].zfill(8)
             + f"{int(primary.info.end_lsn.split('/')[1], 16) >> 24:08X}"]
    assert len(after) >= 2, [p.name for p in segments]
    after[0].rename(tmp_path / after[0].name)  # gone from the archive
    with pytest.raises(CheckpointError, match=f"lacks segment {after[0].name}"):
        pitr.restore_to(primary.base, archive, tmp_path / "new", primary.target)
    assert not (tmp_path / "new").exists()
    data = bytearray((tmp_path / after[0].name).read_bytes())  # back, its records garbled
    data[200:400] = bytes(200)
    (archive / after[0].name).write_bytes(data)
    os.chown(archive / after[0].name, archive.stat().st_uid, archive.stat().st_gid)
    with pytest.raises(CheckpointError, match="recovery ended before configured recovery "
                                              "target was reached"):
        pitr.restore_to(primary.base, archive, tmp_path / "new", primary.target)


def test_restore_to_a_time_replays_exactly_the_commits_before_it(primary: Primary,
                                                                 tmp_path: Path) -> None:
    done = pitr.restore_to(primary.base, primary.archive, tmp_path / "new", primary.target)
    assert done.stopped and "recovery stopping before commit" in done.stopped
    assert datetime.fromisoformat(done.last_replayed_commit) < primary.target
    assert done.copy_seconds > 0 and done.replay_seconds > 0 and done.verify_seconds > 0
    assert not (tmp_path / "new" / "recovery.signal").exists()  # promoted
    with embedded_postgres(tmp_path / "new", settings=DURABLE) as restored:
        assert restored.psql("SELECT string_agg(i::text, ',' ORDER BY i) FROM t").strip() \
            == "1,2,3"
        assert restored.psql("SELECT pg_is_in_recovery()").strip() == "f"


def test_a_tar_backup_is_verified_and_recovered_to_the_end_of_the_archive(
        primary: Primary, tmp_path: Path) -> None:
    info = pitr.base_backup(primary.url, tmp_path / "tar", tar=True)
    assert info.format == "tar" and set(info.others_sha256) == {"base.tar", "pg_wal.tar"}
    assert pitr.verify_physical(tmp_path / "tar") == info
    done = pitr.restore_to(tmp_path / "tar", primary.archive, tmp_path / "new")  # no time
    assert done.stopped is None and done.target_time is None
    with embedded_postgres(tmp_path / "new", settings=DURABLE) as restored:
        assert restored.psql("SELECT string_agg(i::text, ',' ORDER BY i) FROM t").strip() \
            == "1,2,3,4"


def test_ckpt_physical_backup_verify_and_restore(primary: Primary, tmp_path: Path) -> None:
    made = ckpt("backup", primary.url, str(tmp_path / "b"), "--physical", "--verify", "--json")
    assert made.returncode == 0, made.stderr
    result = json.loads(made.stdout.splitlines()[-1])
    assert result["ok"] and result["pg_verifybackup"] == "ok"
    again = ckpt("backup", primary.url, str(tmp_path / "b"), "--physical")
    assert again.returncode == 2 and "not an empty directory" in again.stderr
    when = primary.target.isoformat()
    restored = ckpt("restore", str(primary.base), str(tmp_path / "r"), "--physical",
                    "--wal-archive", str(primary.archive), "--to-time", when, "--verify")
    assert restored.returncode == 0, restored.stderr
    assert "verified: replay stopped at the target" in restored.stdout
    for args, expected in (((), "needs --wal-archive"),
                           (("--wal-archive", str(primary.archive), "--to-time", "noon"),
                            "is not a time"),
                           (("--wal-archive", str(primary.archive), "--to-time",
                             "2026-01-01T00:00:00"), "has no time zone")):
        code, err = in_process("restore", str(primary.base), str(tmp_path / "x"), "--physical",
                               *args)
        assert code == 2 and expected in err and err.count("\n") == 1
    assert not (tmp_path / "x").exists()
    code, err = in_process("restore", str(primary.base), primary.url, "--physical",
                           "--wal-archive", str(primary.archive), "--to-time", when)
    assert code == 2 and "not a URL" in err
    code, err = in_process("restore", str(primary.base), primary.url, "--to-time", when)
    assert code == 2 and "add --physical" in err


def in_process(*args: str) -> tuple[int, str]:
    """``ckpt ARGS`` in this process (a refusal needs no new interpreter): status, stderr."""
    import contextlib
    import io

    from shared.cli import main

    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        code = main(list(args))
    return code, err.getvalue()


def test_help_names_the_physical_options(capsys: pytest.CaptureFixture[str]) -> None:
    from shared.cli import main

    for command, options in (("backup", ("--physical",)),
                             ("restore", ("--physical", "--wal-archive", "--to-time"))):
        with pytest.raises(SystemExit) as done:
            main([command, "--help"])
        text = capsys.readouterr().out
        assert done.value.code == 0 and all(opt in text for opt in options)


def test_s3_push_creates_once_and_never_replaces(tmp_path: Path) -> None:
    from shared.infra.s3 import S3Settings, s3_client, s3_server
    from shared.ops import wal_s3

    with s3_server("ckpt-wal-test") as s3:
        command = wal_s3.push_command(s3, "t/", tmp_path / "creds")
        assert s3.secret_access_key not in command  # in curl's config file, 0600
        assert oct((tmp_path / "creds").stat().st_mode & 0o777) == "0o600"
        segment = tmp_path / "seg"

        def push(data: bytes) -> int:  # as PostgreSQL runs it: %p and %f, through sh
            segment.write_bytes(data)
            run = command.replace("%p", str(segment)).replace("%f", "000000010000000000000007")
            return subprocess.run(["sh", "-c", run], capture_output=True).returncode

        assert push(b"a" * 1000) == 0
        assert push(b"a" * 1000) == 0  # a retry after a lost reply: the same bytes are there
        assert push(b"b" * 1000) != 0  # another segment of that name: refused, kept
        body = s3_client(s3).get_object(Bucket=s3.bucket, Key="t/000000010000000000000007")
        assert body["Body"].read() == b"a" * 1000
        files, size = wal_s3.fetch_archive(s3, "t/", tmp_path / "fetched")
        assert (files, size) == (1, 1000)
        assert (tmp_path / "fetched" / "000000010000000000000007").read_bytes() == b"a" * 1000
        with pytest.raises(CheckpointError, match="not empty"):
            wal_s3.fetch_archive(s3, "t/", tmp_path / "fetched")
        assert wal_s3.drop_archive(s3, "t/") == 1
    with pytest.raises(CheckpointError, match="needs an endpoint and credentials"):
        wal_s3.push_command(S3Settings(None), "t/", tmp_path / "creds2")
