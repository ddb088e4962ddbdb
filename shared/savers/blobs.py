"""Content-addressed blobs in one S3 bucket, and a garbage collection that cannot lose one.

Garbage collection never loses a blob a row needs. A save checks (or, within ``known_ttl``,
trusts) that its blob exists and commits its row later, so a collector that scans the rows
and then deletes can always delete a blob between a save's check and its commit; a
timestamp read just before the delete narrows that window but cannot close it. So the
collector deletes in two steps:

1. *Quarantine*: a blob no row references (``referenced_digests``, a scan made after the
   bucket was listed) and older than ``grace_seconds`` is copied to
   ``trash/sha256/<hex>/<token>`` and only then removed from ``sha256/<hex>``. A row that
   still points to it loads from the trash copy (hash verified as always) and puts it back.
   A save that asks S3 after the removal finds it missing and uploads the bytes again.
2. *Purge*: a trash copy older than ``S3BlobStore.purge_after`` is deleted for good only if
   a scan made after the trash was listed finds no row referencing it; otherwise it is
   copied back to ``sha256/<hex>``.

Why the purge is safe: a save that last asked S3 before the quarantine commits its row
within ``known_ttl`` (how long a process trusts its cache) plus ``max_save_seconds`` (the
longest from a save's S3 answer to its commit: the rest of its batch's uploads and lock
waits included) of it, and
``purge_after`` is refused shorter than the sum, so its row is in the purge's scan; a save
that asked after the quarantine uploaded the bytes itself. Ages are read on S3's clock (the
``Date`` of the listing), rounded towards keeping. ``grace_seconds`` only spares young blobs
the round trip through the trash; any value is safe. Collectors may overlap: each quarantine
writes a trash key of its own. What the collector assumes, and cannot check: every writer of
the bucket uses a ``known_ttl`` no longer than the collector's store and commits within
``max_save_seconds``, and the scan covers every database that shares the bucket.
"""

from __future__ import annotations

import hashlib
import re
import secrets
import sqlite3
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from email.utils import parsedate_to_datetime
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from shared.errors import CheckpointError
from shared.infra.s3 import S3Settings, check_bucket_name, mask_url, s3_client

KEY_PREFIX = "sha256/"
TRASH_PREFIX = "trash/sha256/"  # trash/sha256/<hex>/<token>: one key per quarantine
DEFAULT_KNOWN_TTL = 300.0
DEFAULT_MAX_SAVE_SECONDS = 300.0
_NOT_FOUND = {"404", "NoSuchKey", "NotFound"}
_ONE_SECOND = timedelta(seconds=1)  # S3 timestamps (Date, LastModified) are whole seconds
# The reference as it appears in raw row bytes (msgpack and JSON keep strings verbatim).
_URI_RE = re.compile(r"s3://([a-z0-9][a-z0-9.\-]{1,61}[a-z0-9])/sha256/([0-9a-f]{64})")
_RAW_URI_RE = re.compile(_URI_RE.pattern.encode())



class BlobError(CheckpointError):
    """A blob offloaded from a checkpoint could not be stored or brought back."""


class BlobStoreUnavailable(BlobError):
    """S3 could not be reached or refused the request; nothing was saved."""


class BlobReferenceRefused(BlobError):
    """A reference that is malformed, or a value that would be mistaken for one."""


class ForeignBucketError(BlobReferenceRefused):
    """A reference names a bucket other than the configured one; it is never fetched."""


class BlobIntegrityError(BlobError):
    """The fetched bytes do not have the SHA-256 the reference names."""


class BlobMissingError(BlobError):
    """The reference is well-formed but the object is not in the bucket."""


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


class S3BlobStore:
    """Content-addressed blobs in one bucket: key ``sha256/<hex>``, written once, verified on read.

    ``known_ttl`` seconds: after a put or an existence check, this process trusts that the
    object exists without asking S3 again, which keeps a repeated save off the network.
    ``max_save_seconds``: the longest from a save's S3 answer (or cache hit) to its commit.
    ``purge_after`` (at least, and by default, their sum): how long a collected blob stays
    in the trash before it may be deleted for good (see the module docstring).
    """

    def __init__(self, client: Any, bucket: str, *, known_ttl: float = DEFAULT_KNOWN_TTL,
                 max_save_seconds: float = DEFAULT_MAX_SAVE_SECONDS,
                 purge_after: float | None = None) -> None:
        if not known_ttl >= 0 or not max_save_seconds > 0:
            raise CheckpointError(
                f"known_ttl={known_ttl!r} and max_save_seconds={max_save_seconds!r} must be "
                f"seconds, known_ttl at least 0 and max_save_seconds more than 0: use the "
                f"defaults ({DEFAULT_KNOWN_TTL:g} and {DEFAULT_MAX_SAVE_SECONDS:g}).")
        floor = known_ttl + max_save_seconds
        if purge_after is None:
            purge_after = floor
        if not purge_after >= floor:
            raise CheckpointError(
                f"purge_after={purge_after!r} s is shorter than known_ttl + max_save_seconds "
                f"({floor:g} s), so a save still in flight could lose its blob: use at least "
                f"{floor:g}.")
        self.client = client
        self.bucket = check_bucket_name(bucket)
        self.endpoint = mask_url(str(client.meta.endpoint_url))
        self.known_ttl = known_ttl
        self.max_save_seconds = max_save_seconds
        self.purge_after = purge_after
        self._known: dict[str, float] = {}  # digest -> monotonic time it was seen in S3
        # LangGraph saves a checkpoint and its writes from background threads at once; one
        # lock per digest makes the second save wait for the first upload, not repeat it.
        self._locks: dict[str, threading.Lock] = {}
        self._locks_guard = threading.Lock()
        # Counters of real S3 requests, so a caller can show what happened on the wire.
        self.uploads = 0
        self.upload_seconds: list[float] = []
        self.fetches = 0
        self.restored_on_read = 0  # blobs a read found only in the trash and put back

    @classmethod
    def from_settings(cls, settings: S3Settings, **kwargs: Any) -> S3BlobStore:
        return cls(s3_client(settings), settings.bucket, **kwargs)

    # --- addressing ------------------------------------------------------------------------

    @staticmethod
    def key(digest: str) -> str:
        return KEY_PREFIX + digest

    @staticmethod
    def trash_prefix(digest: str) -> str:
        return f"{TRASH_PREFIX}{digest}/"

    def uri(self, digest: str) -> str:
        return f"s3://{self.bucket}/{KEY_PREFIX}{digest}"

    def parse(self, uri: Any) -> str:
        """The digest named by ``uri``; refused unless it is ours and well-formed."""
        match = _URI_RE.fullmatch(uri) if isinstance(uri, str) else None
        if match is None:
            raise BlobReferenceRefused(
                f"Blob reference {str(uri)[:120]!r} is not of the form "
                f"s3://<bucket>/sha256/<64 hex digits>: the row was altered or written by "
                "another tool, so restore it from a backup.")
        if match.group(1) != self.bucket:
            raise ForeignBucketError(
                f"Blob reference {uri!r} names bucket {match.group(1)!r}, but this serializer "
                f"reads only from {self.bucket!r}, so it was not fetched: restore the row from "
                "a backup, or configure that bucket if it is really yours.")
        return match.group(2)

    # --- S3 requests -------------------------------------------------------------------------

    def _fail(self, exc: Exception, action: str, key: str) -> BlobError:
        code = exc.response.get("Error", {}).get("Code", "") if isinstance(exc, ClientError) else ""
        if code == "NoSuchBucket":
            return BlobStoreUnavailable(
                f"Bucket {self.bucket!r} does not exist at S3 {self.endpoint}, so {action}: "
                "create it (shared.infra.s3.s3_server does) or set CKPT_S3_BUCKET to an "
                "existing bucket.")
        if code:
            return BlobStoreUnavailable(
                f"S3 at {self.endpoint} refused {key} in bucket {self.bucket!r} ({code}), so "
                f"{action}: check AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY and the bucket "
                "policy.")
        return BlobStoreUnavailable(
            f"S3 at {self.endpoint} is unreachable ({type(exc).__name__}), so {action}: start "
            "the S3 service or set S3_ENDPOINT_URL to a reachable endpoint.")

    def _is_known(self, digest: str) -> bool:
        seen = self._known.get(digest)
        return seen is not None and time.monotonic() - seen < self.known_ttl

    def _head(self, digest: str, action: str) -> bool:
        try:
            self.client.head_object(Bucket=self.bucket, Key=self.key(digest))
        except ClientError as exc:
            if _not_found(exc):
                return False
            raise self._fail(exc, action, self.key(digest)) from None
        except BotoCoreError as exc:
            raise self._fail(exc, action, self.key(digest)) from None
        self._known[digest] = time.monotonic()
        return True

    def put(self, data: bytes, digest: str | None = None) -> str:
        """Store ``data`` once (skipped when already there) and return its ``s3://`` URI."""
        digest = digest or sha256_hex(data)
        if self._is_known(digest):
            return self.uri(digest)
        with self._locks_guard:
            lock = self._locks.setdefault(digest, threading.Lock())
        try:
            with lock:
                self._upload_once(digest, data)
        finally:
            with self._locks_guard:
                self._locks.pop(digest, None)
        return self.uri(digest)

    def _upload_once(self, digest: str, data: bytes) -> None:
        action = "the checkpoint was not saved"
        if self._is_known(digest) or self._head(digest, action):
            return  # content-addressed: an object under this key already holds these bytes
        started = time.perf_counter()
        try:
            self.client.put_object(Bucket=self.bucket, Key=self.key(digest), Body=data,
                                   ContentType="application/octet-stream")
        except (ClientError, BotoCoreError) as exc:
            raise self._fail(exc, action, self.key(digest)) from None
        self.upload_seconds.append(time.perf_counter() - started)
        self.uploads += 1
        self._known[digest] = time.monotonic()

    def _read(self, key: str, action: str) -> bytes | None:
        """The object's bytes, or None when there is no such key."""
        try:
            self.fetches += 1
            return self.client.get_object(Bucket=self.bucket, Key=key)["Body"].read()
        except ClientError as exc:
            if _not_found(exc):
                return None
            raise self._fail(exc, action, key) from None
        except BotoCoreError as exc:
            raise self._fail(exc, action, key) from None

    def _copy(self, source: str, target: str, action: str) -> bool:
        """Server-side copy; False when ``source`` is gone. A copy onto itself (new
        metadata) is how an object's LastModified is moved to now."""
        try:
            self.client.copy_object(Bucket=self.bucket, Key=target,
                                    CopySource={"Bucket": self.bucket, "Key": source},
                                    MetadataDirective="REPLACE",
                                    Metadata={"ckpt-copied": datetime.now(UTC).isoformat()})
        except ClientError as exc:
            if _not_found(exc):
                return False
            raise self._fail(exc, action, source) from None
        except BotoCoreError as exc:
            raise self._fail(exc, action, source) from None
        return True

    def get(self, uri: str) -> bytes:
        """The bytes ``uri`` names, after checking bucket, form and SHA-256.

        A blob the collector quarantined while a row still pointed to it is read from the
        trash and put back under its key.
        """
        digest = self.parse(uri)  # refuses before any request is made
        action = "the checkpoint could not be loaded"
        data = self._read(self.key(digest), action)
        if data is None:
            data = self._from_trash(digest, action)
        if data is None:
            raise BlobMissingError(
                f"Blob {uri} held by this checkpoint is missing from S3 at {self.endpoint}: "
                "restore it from a backup of the bucket, and let garbage collection scan "
                "every database that shares the bucket.")
        actual = sha256_hex(data)
        if actual != digest:
            self._known.pop(digest, None)
            raise BlobIntegrityError(
                f"Blob {uri} in S3 has SHA-256 {actual[:12]}…, not the {digest[:12]}… its "
                "name promises, so it was refused: the object was overwritten or corrupted; "
                "restore it from a backup of the bucket.")
        return data

    def _from_trash(self, digest: str, action: str) -> bytes | None:
        for key in sorted(k for k, _, _ in self._listing(self.trash_prefix(digest)))[::-1]:
            data = self._read(key, action)
            if data is not None and sha256_hex(data) == digest:
                try:  # best effort: the next collection puts it back too if this fails
                    if self._copy(key, self.key(digest), action):
                        self.restored_on_read += 1
                except BlobError:
                    pass
                return data
        return None

    def exists(self, digest_or_uri: str) -> bool:
        """Whether the object is in the bucket (asks S3; does not trust the local cache)."""
        if digest_or_uri.startswith("s3://"):
            digest = self.parse(digest_or_uri)
        elif re.fullmatch(r"[0-9a-f]{64}", digest_or_uri):
            digest = digest_or_uri
        else:
            raise BlobReferenceRefused(
                f"{digest_or_uri[:80]!r} is neither an s3:// blob reference nor a SHA-256 hex "
                "digest: pass one of those.")
        return self._head(digest, "its existence could not be checked")

    def _listing(self, prefix: str) -> list[tuple[str, datetime, datetime]]:
        """(key, LastModified, S3's clock when listed) for every object under ``prefix``."""
        found = []
        try:
            pages = self.client.get_paginator("list_objects_v2").paginate(
                Bucket=self.bucket, Prefix=prefix)
            for page in pages:
                found.extend((obj["Key"], obj["LastModified"], _server_now(page))
                             for obj in page.get("Contents", []))
        except (ClientError, BotoCoreError) as exc:
            raise self._fail(exc, "the blobs could not be listed", prefix) from None
        return found

    def keys(self) -> list[str]:
        """Every blob key (``sha256/<hex>``) in the bucket; the trash is not included."""
        return sorted(k for k, _, _ in self._listing(KEY_PREFIX))

    def trash_keys(self) -> list[str]:
        """Every quarantined copy (``trash/sha256/<hex>/<token>``) in the bucket."""
        return sorted(k for k, _, _ in self._listing(TRASH_PREFIX))

    def _delete(self, keys: list[str], action: str) -> None:
        for start in range(0, len(keys), 1000):  # DeleteObjects takes at most 1000 keys
            batch = keys[start:start + 1000]
            try:
                answer = self.client.delete_objects(Bucket=self.bucket, Delete={
                    "Objects": [{"Key": k} for k in batch], "Quiet": True})
            except (ClientError, BotoCoreError) as exc:
                raise self._fail(exc, action, batch[0]) from None
            if errors := answer.get("Errors"):
                raise BlobStoreUnavailable(
                    f"S3 at {self.endpoint} refused to delete {errors[0].get('Key')} in bucket "
                    f"{self.bucket!r} ({errors[0].get('Code')}), so {action}: check the "
                    "credentials' delete permission and run the collection again.")

    def _quarantine(self, digest: str) -> bool:
        """Copy the blob to a trash key of its own, then remove it; False if already gone."""
        action = f"blob {digest[:12]}… was not collected"
        trash = f"{self.trash_prefix(digest)}{time.time_ns():020d}-{secrets.token_hex(4)}"
        if not self._copy(self.key(digest), trash, action):
            return False
        self._delete([self.key(digest)], action)
        self._known.pop(digest, None)
        # Touch the copy so its age counts from the removal, which came after the copy.
        self._copy(trash, trash, action)
        return True

    def collect(self, scan: Callable[[], set[str]], *, dry_run: bool = False,
                grace_seconds: float = 0.0, purge: bool = True) -> Collection:
        """One collection: purge old trash, then quarantine unreferenced blobs.

        ``scan`` returns every digest any row references; it is called after the bucket is
        listed, so a row committed while listing is seen. With ``dry_run`` nothing changes.
        """
        if not grace_seconds >= 0:
            raise CheckpointError(f"grace_seconds={grace_seconds!r} must be 0 or more seconds: "
                                  "use 3600 (one hour) unless you know better.")
        trash = self._listing(TRASH_PREFIX) if purge else []
        live = self._listing(KEY_PREFIX)
        referenced = scan()
        result = Collection()
        # Purge: the age is a lower bound (both stamps are whole seconds), so it errs on keeping.
        by_digest: dict[str, list[str]] = {}
        for key, modified, now in trash:
            if now - modified - _ONE_SECOND >= timedelta(seconds=self.purge_after):
                by_digest.setdefault(key[len(TRASH_PREFIX):].split("/", 1)[0], []).append(key)
        for digest, keys in sorted(by_digest.items()):
            action = f"blob {digest[:12]}… was left in the trash"
            if digest in referenced and not self._head(digest, action):
                # A row committed after the quarantine needs it: put a copy back (the newest
                # first; one may be gone meanwhile, taken by an overlapping collector).
                if not dry_run and not any(self._copy(k, self.key(digest), action)
                                           for k in reversed(keys)):
                    continue
                result.restored.append(self.key(digest))
            if not dry_run:
                self._delete(keys, action)
            result.purged.extend(keys)
        # Quarantine: the age is an upper bound, so it errs on collecting, which is harmless.
        cutoff = timedelta(seconds=grace_seconds)
        for key, modified, now in sorted(live):
            digest = key[len(KEY_PREFIX):]
            if digest in referenced or (grace_seconds > 0
                                        and now + _ONE_SECOND - modified < cutoff):
                continue
            if dry_run or self._quarantine(digest):
                result.removed.append(key)
        return result

    def delete_unreferenced(self, referenced: set[str] | Callable[[], set[str]],
                            dry_run: bool = False, grace_seconds: float = 0.0) -> list[str]:
        """Collect blobs whose digest is not in ``referenced``; return the keys removed.

        ``referenced`` is best a function that scans the rows (it is called after listing);
        a set computed earlier may be stale, so with a set the trash is not purged.
        """
        scan = referenced if callable(referenced) else (lambda: referenced)
        return self.collect(scan, dry_run=dry_run, grace_seconds=grace_seconds,
                            purge=callable(referenced)).removed


@dataclass
class Collection:
    """What one collection did (or, in a dry run, would do), as S3 keys."""

    removed: list[str] = field(default_factory=list)  # sha256/<hex> moved to the trash
    purged: list[str] = field(default_factory=list)  # trash keys deleted for good
    restored: list[str] = field(default_factory=list)  # sha256/<hex> put back: a row needs it


def _not_found(exc: ClientError) -> bool:
    return exc.response.get("Error", {}).get("Code") in _NOT_FOUND


def _server_now(response: dict[str, Any]) -> datetime:
    """S3's clock from the response's Date header (whole seconds), else this machine's."""
    date = response.get("ResponseMetadata", {}).get("HTTPHeaders", {}).get("date")
    try:
        return parsedate_to_datetime(date) if date else datetime.now(UTC)
    except (TypeError, ValueError):
        return datetime.now(UTC)


_SCANNED = (("checkpoints", ("checkpoint", "metadata")), ("writes", ("value",)))


def referenced_digests(conn: sqlite3.Connection, bucket: str | None = None) -> set[str]:
    """Every blob digest referenced by any row of a SqliteSaver database.

    Scans raw row bytes for ``s3://<bucket>/sha256/<hex>``; a string that merely looks like
    a reference keeps its blob alive, which errs on the safe side.
    """
    encrypted = conn.execute(
        "SELECT (SELECT count(*) FROM checkpoints WHERE instr(type, '+') > 0)"
        " + (SELECT count(*) FROM writes WHERE instr(type, '+') > 0)").fetchone()[0]
    if encrypted:
        raise CheckpointError(
            f"{encrypted} rows are encrypted, so the blob references in them cannot be read "
            "and every blob would look unused: collect garbage with a scan that decrypts, "
            "not with referenced_digests.")
    needle = b"/" + KEY_PREFIX.encode()
    found: set[str] = set()
    for table, columns in _SCANNED:
        for column in columns:
            # Table and column names are constants above; only the needle is a parameter.
            rows = conn.execute(f"SELECT {column} FROM {table} "  # noqa: S608
                                f"WHERE instr(CAST({column} AS BLOB), ?) > 0", (needle,))
            for (raw,) in rows:
                raw = raw if isinstance(raw, bytes) else str(raw).encode()
                found.update(m.group(2).decode() for m in _RAW_URI_RE.finditer(raw)
                             if bucket is None or m.group(1).decode() == bucket)
    return found


def collect_blobs(conn: sqlite3.Connection, store: S3BlobStore, dry_run: bool = False,
                  grace_seconds: float = 0.0) -> Collection:
    """One collection of ``store`` against the rows of ``conn`` (see the module docstring)."""
    if conn.in_transaction:
        raise CheckpointError(
            "The connection has an open transaction, so its scan could miss rows committed "
            "since it began and a blob they need could be deleted: commit or roll it back "
            "before collecting blobs.")
    return store.collect(lambda: referenced_digests(conn, store.bucket), dry_run=dry_run,
                         grace_seconds=grace_seconds)


def collect_unreferenced_blobs(conn: sqlite3.Connection, store: S3BlobStore,
                               dry_run: bool = False, grace_seconds: float = 0.0) -> list[str]:
    """Collect (or, with ``dry_run``, list) blobs that no row references: the keys removed."""
    return collect_blobs(conn, store, dry_run=dry_run, grace_seconds=grace_seconds).removed
