"""S3 from the environment, or an embedded moto server on 127.0.0.1.

    with s3_server() as settings:          # S3_ENDPOINT_URL set: that endpoint; else moto
        client = s3_client(settings)       # boto3, real HTTP, fails fast when unreachable

Environment: ``S3_ENDPOINT_URL``, ``AWS_ACCESS_KEY_ID``, ``AWS_SECRET_ACCESS_KEY``,
``AWS_DEFAULT_REGION`` (default us-east-1), ``CKPT_S3_BUCKET`` (default ckpt-blobs).
The embedded server is moto's ``ThreadedMotoServer``: a thread in this process speaking
the S3 REST API over HTTP, so boto3 goes through its whole network stack. Its data lives in
moto's in-process backend, which outlives one server: buckets and objects stay for the
life of the Python process.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from shared.errors import CheckpointError
from shared.infra.urls import mask_url, redact  # the one implementation

DEFAULT_BUCKET = "ckpt-blobs"
DEFAULT_REGION = "us-east-1"
# moto accepts any credentials; these are placeholders, not secrets.
_MOTO_KEY_ID = "moto-local"
_MOTO_SECRET = "moto-local-secret"  # noqa: S105
# S3 bucket naming rules (lowercase letters, digits, dots, hyphens; 3-63 characters).
_BUCKET_RE = re.compile(r"^[a-z0-9][a-z0-9.\-]{1,61}[a-z0-9]$")


def check_bucket_name(bucket: str) -> str:
    """Refuse a name S3 would refuse, before any request is made."""
    if not _BUCKET_RE.fullmatch(bucket) or ".." in bucket:
        raise CheckpointError(
            f"{bucket!r} is not a valid S3 bucket name: use 3-63 lowercase letters, digits, "
            "dots or hyphens, starting and ending with a letter or digit (such as ckpt-blobs).")
    return bucket


@dataclass(frozen=True)
class S3Settings:
    """Where the blobs go. ``repr``/``str`` never show the secret or a URL password."""

    endpoint_url: str | None
    region: str = DEFAULT_REGION
    access_key_id: str | None = None
    secret_access_key: str | None = field(default=None, repr=False)
    bucket: str = DEFAULT_BUCKET

    @property
    def masked_endpoint(self) -> str:
        return mask_url(self.endpoint_url) if self.endpoint_url else "AWS S3 (default endpoint)"

    def __repr__(self) -> str:
        secret = "***" if self.secret_access_key else None
        return (f"S3Settings(endpoint_url={self.masked_endpoint!r}, region={self.region!r}, "
                f"access_key_id={self.access_key_id!r}, secret_access_key={secret!r}, "
                f"bucket={self.bucket!r})")

    __str__ = __repr__


def _check_endpoint(url: str) -> str:
    shown = mask_url(url)
    try:
        parts = urlsplit(url)
        _ = parts.port  # raises ValueError on a non-numeric or out-of-range port
    except ValueError as exc:
        raise CheckpointError(
            f"S3_ENDPOINT_URL={shown!r} is malformed ({redact(str(exc), url)}): set it to an "
            "http(s) URL such as http://127.0.0.1:9000, or unset it to use the embedded S3 "
            "server.") from None
    if parts.scheme not in {"http", "https"} or not parts.hostname:
        raise CheckpointError(
            f"S3_ENDPOINT_URL={shown!r} is not an http(s) URL with a host: set it to one such as "
            "http://127.0.0.1:9000 or https://s3.eu-west-1.amazonaws.com, or unset it to use "
            "the embedded S3 server.")
    return url


def s3_settings_from_env(env: dict[str, str] | None = None) -> S3Settings | None:
    """Settings from the environment, or None when ``S3_ENDPOINT_URL`` is not set."""
    env = dict(os.environ) if env is None else env
    url = env.get("S3_ENDPOINT_URL", "").strip()
    if not url:
        return None
    return S3Settings(
        endpoint_url=_check_endpoint(url),
        region=env.get("AWS_DEFAULT_REGION") or DEFAULT_REGION,
        access_key_id=env.get("AWS_ACCESS_KEY_ID") or None,
        secret_access_key=env.get("AWS_SECRET_ACCESS_KEY") or None,
        bucket=check_bucket_name(env.get("CKPT_S3_BUCKET") or DEFAULT_BUCKET),
    )


def s3_client(settings: S3Settings, *, connect_timeout: float = 1.0,
              read_timeout: float = 10.0, max_attempts: int = 2) -> Any:
    """A boto3 S3 client that gives up quickly: an unreachable endpoint fails in ~1-2 s.

    botocore's defaults (60 s timeouts, several retries) turn a down endpoint into minutes
    of silence; a checkpoint save should fail fast and say why instead.
    """
    import boto3
    from botocore.config import Config

    config = Config(connect_timeout=connect_timeout, read_timeout=read_timeout,
                    retries={"max_attempts": max_attempts, "mode": "standard"},
                    # path-style works with any endpoint (moto, MinIO, an IP address).
                    s3={"addressing_style": "path"})
    return boto3.client("s3", endpoint_url=settings.endpoint_url, region_name=settings.region,
                        aws_access_key_id=settings.access_key_id,
                        aws_secret_access_key=settings.secret_access_key, config=config)


def ensure_bucket(client: Any, bucket: str, region: str = DEFAULT_REGION) -> None:
    """Create ``bucket`` unless it already exists; a clear CheckpointError if S3 says no."""
    from botocore.exceptions import BotoCoreError, ClientError

    endpoint = mask_url(str(client.meta.endpoint_url))
    try:
        try:
            client.head_bucket(Bucket=bucket)
            return
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") not in {"404", "NoSuchBucket",
                                                                  "NotFound"}:
                raise
        kwargs: dict[str, Any] = {"Bucket": bucket}
        if region != "us-east-1":  # the one region that refuses a LocationConstraint
            kwargs["CreateBucketConfiguration"] = {"LocationConstraint": region}
        client.create_bucket(**kwargs)
    except ClientError as exc:
        code = exc.response.get("Error", {}).get("Code", "error")
        raise CheckpointError(
            f"S3 at {endpoint} refused to check or create bucket {bucket!r} ({code}): check "
            "AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY, or set CKPT_S3_BUCKET to a bucket these "
            "credentials may use.") from None
    except BotoCoreError as exc:
        raise CheckpointError(
            f"S3 at {endpoint} is unreachable ({type(exc).__name__}): start it, or fix or unset "
            "S3_ENDPOINT_URL to use the embedded S3 server.") from None


@contextmanager
def s3_server(bucket: str | None = None) -> Iterator[S3Settings]:
    """S3 for the duration of the block: the environment's, or moto on a free loopback port.

    The bucket (``bucket``, else ``CKPT_S3_BUCKET``, else ckpt-blobs) exists on entry.
    An embedded server is stopped on exit, even when the block raises.
    """
    from_env = s3_settings_from_env()
    if from_env is not None:
        settings = from_env if bucket is None else S3Settings(
            from_env.endpoint_url, from_env.region, from_env.access_key_id,
            from_env.secret_access_key, check_bucket_name(bucket))
        ensure_bucket(s3_client(settings), settings.bucket, settings.region)
        yield settings
        return

    from moto.server import ThreadedMotoServer

    # werkzeug logs every request to stderr unless its logger already has a level.
    access_log = logging.getLogger("werkzeug")
    if access_log.level == logging.NOTSET:
        access_log.setLevel(logging.WARNING)
    name = check_bucket_name(bucket or os.environ.get("CKPT_S3_BUCKET") or DEFAULT_BUCKET)
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()  # port 0: the OS picks a free port, no race with a probe socket
    try:
        host, port = server.get_host_and_port()
        settings = S3Settings(f"http://{host}:{port}", DEFAULT_REGION, _MOTO_KEY_ID,
                              _MOTO_SECRET, name)
        ensure_bucket(s3_client(settings), name)
        yield settings
    finally:
        server.stop()
        # stop() ends serve_forever but leaves the listening socket open; close it too.
        wsgi = getattr(server, "_server", None)
        if wsgi is not None:
            wsgi.server_close()


def unreachable_settings(bucket: str = DEFAULT_BUCKET) -> S3Settings:
    """Settings for a loopback port where nothing listens: S3 being down, for drills."""
    import socket

    with socket.socket() as sock:  # bound, then closed: the port is free and refuses
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return S3Settings(f"http://127.0.0.1:{port}", DEFAULT_REGION, _MOTO_KEY_ID, _MOTO_SECRET,
                      check_bucket_name(bucket))
