"""The WAL archive in S3 over HTTP: a step of ``archive_command``, and a download for recovery.

    command = push_command(s3, "primary-1/", creds_file)         # S3Settings from infra.s3
    settings = {**DURABLE, **archive_settings(local_dir, then=command)}
    fetch_archive(s3, "primary-1/", "wal-from-s3")               # then restore_to(...) from it

The server runs ``curl --aws-sigv4`` for each finished segment, after the local copy (a
segment counts as archived only once both hold it): a plain S3 PUT over HTTP, no Python in
the server's process tree. The endpoint, bucket and prefix are on that command line, the
credentials are not: they are in curl's config file (0600, the server's OS user's). A push
never replaces an object: it is created with ``If-None-Match: *``; when that fails it
succeeds only if S3 already holds the very same bytes (a retry after a lost reply), so
PostgreSQL keeps a segment and tries again until it is safely there. S3 makes an object
appear whole or not at all. ``fetch_archive`` downloads the archive, each object checked
against its ETag (the MD5 of a single PUT), into a directory ``restore_to`` replays from.
"""

from __future__ import annotations

import hashlib
import os
import shlex
import shutil
from pathlib import Path

from shared.errors import CheckpointError
from shared.infra.postgres import RUN_AS
from shared.infra.s3 import S3Settings, s3_client


def push_command(s3: S3Settings, prefix: str, credentials_file: str | Path) -> str:
    """The shell step that PUTs segment ``%p`` as ``prefix + %f`` with curl (SigV4, over
    HTTP); writes ``credentials_file`` (curl's config, 0600, the server's OS user's) so that
    the secret stays off every command line and out of ``SHOW archive_command``."""
    if not s3.endpoint_url or not s3.access_key_id:
        raise CheckpointError("Archiving to S3 needs an endpoint and credentials: set "
                              "S3_ENDPOINT_URL, AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY.")
    if shutil.which("curl") is None:
        raise CheckpointError("Archiving to S3 runs curl (7.75 or later, for --aws-sigv4), "
                              "which is not on PATH: install curl (apt-get install curl).")
    creds = Path(credentials_file).resolve()
    creds.write_text(f'user = "{s3.access_key_id}:{s3.secret_access_key}"\n')
    creds.chmod(0o600)
    if os.geteuid() == 0:
        import pwd

        entry = pwd.getpwnam(RUN_AS)
        os.chown(creds, entry.pw_uid, entry.pw_gid)
    url = shlex.quote(f"{s3.endpoint_url.rstrip('/')}/{s3.bucket}/{prefix}") + "%f"
    curl = (f"curl -sf --max-time 60 --aws-sigv4 aws:amz:{shlex.quote(s3.region)}:s3 "
            f"-K {shlex.quote(str(creds))}")
    # Create only (If-None-Match: *); if that fails, succeed only if S3 holds these bytes.
    return (f"{{ {curl} -H 'If-None-Match: *' -T %p {url} || "
            f"{{ {curl} {url} | cmp -s - %p; }}; }}")


def fetch_archive(s3: S3Settings, prefix: str, dest: str | Path) -> tuple[int, int]:
    """Download every object under ``prefix`` into ``dest`` (new), each checked against its
    SHA-256; the directory is the server's OS user's. Returns (files, bytes)."""
    from shared.ops.pitr import prepare_archive

    dest = Path(dest)
    if dest.exists() and any(dest.iterdir()):
        raise CheckpointError(f"{dest} is not empty: give a new directory for the archive.")
    where = prepare_archive(dest)
    client = s3_client(s3)
    files = size = 0
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=s3.bucket,
                                                                 Prefix=prefix):
        for item in page.get("Contents", []):
            got = client.get_object(Bucket=s3.bucket, Key=item["Key"])
            data = got["Body"].read()
            if got["ETag"].strip('"') != hashlib.md5(data).hexdigest():  # noqa: S324
                raise CheckpointError(f"s3://{s3.bucket}/{item['Key']} does not match its "
                                      "ETag (MD5 of a single PUT): the archive in S3 is damaged.")
            target = where / item["Key"][len(prefix):]
            target.write_bytes(data)
            if os.geteuid() == 0:
                os.chown(target, where.stat().st_uid, where.stat().st_gid)
            files, size = files + 1, size + len(data)
    return files, size


def drop_archive(s3: S3Settings, prefix: str) -> int:
    """Delete every object under ``prefix`` (a lesson's run; moto keeps objects in memory)."""
    client, dropped = s3_client(s3), 0
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=s3.bucket,
                                                                 Prefix=prefix):
        keys = [{"Key": item["Key"]} for item in page.get("Contents", [])]
        if keys:
            client.delete_objects(Bucket=s3.bucket, Delete={"Objects": keys})
            dropped += len(keys)
    return dropped


__all__ = ["drop_archive", "fetch_archive", "push_command"]
