"""Blob garbage collection racing saves: a blob a committed row references is never lost.

The race (issue 8, item 4): a blob's only row is pruned and the blob outlives the grace
period; a save of the same bytes checks that it exists (or trusts its cache) and uploads
nothing; the collector deletes it; the save commits a row that points to nothing.

S3 is moto's real HTTP server; the savers are real SqliteSavers on files; time passes for
real (short ``known_ttl`` / ``max_save_seconds`` and sleeps), no S3 timestamp is faked.
"""

from __future__ import annotations

import itertools
import random
import sqlite3
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from langgraph.checkpoint.base import empty_checkpoint
from langgraph.checkpoint.sqlite import SqliteSaver

from shared.errors import CheckpointError
from shared.infra.s3 import S3Settings, ensure_bucket, s3_client, s3_server
from shared.savers.offload import (
    BlobMissingError,
    OffloadingSerializer,
    S3BlobStore,
    collect_unreferenced_blobs,
    referenced_digests,
    sha256_hex,
)

KIB = 1024
GRACE = 1.0  # the collector's grace_seconds in the interleaving tests
_buckets = itertools.count()


@pytest.fixture(scope="module")
def s3() -> Iterator[S3Settings]:
    with s3_server(bucket="gc-race-tests") as settings:
        yield settings


def _bucket(s3: S3Settings) -> str:
    bucket = f"gc-race-{next(_buckets)}-{random.getrandbits(32):08x}"
    ensure_bucket(s3_client(s3), bucket)
    return bucket


class PausingSerializer(OffloadingSerializer):
    """Stops a save after ``dumps_typed`` of its checkpoint (S3 already asked), before the
    saver's INSERT, until the test lets it go on."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.pause = False
        self.reached, self.resume = threading.Event(), threading.Event()

    def dumps_typed(self, obj: Any) -> tuple[str, bytes]:
        out = super().dumps_typed(obj)
        if self.pause and isinstance(obj, dict) and "channel_values" in obj:
            self.pause = False
            self.reached.set()
            assert self.resume.wait(30)
        return out


def _saver(path: Path, serde: OffloadingSerializer) -> SqliteSaver:
    saver = SqliteSaver(sqlite3.connect(path, check_same_thread=False, timeout=30), serde=serde)
    saver.setup()
    return saver


def _config(thread: str) -> dict:
    return {"configurable": {"thread_id": thread, "checkpoint_ns": ""}}


def _checkpoint(**values: object) -> dict:
    cp = empty_checkpoint()
    cp["channel_values"] = dict(values)
    cp["channel_versions"] = dict.fromkeys(values, 1)
    return cp


def _save_collect_commit(tmp_path: Path, store: S3BlobStore,
                         collector: S3BlobStore) -> tuple[SqliteSaver, bytes]:
    """The exact interleaving of the bug; returns the saver (row committed) and the bytes."""
    serde = PausingSerializer(store=store, threshold=KIB)
    db = tmp_path / "race.sqlite"
    saver = _saver(db, serde)
    pdf = random.Random(8).randbytes(64 * KIB)
    key = store.key(sha256_hex(pdf))
    saver.put(_config("old"), _checkpoint(pdf=pdf), {"step": 0}, {"pdf": 1})
    saver.delete_thread("old")  # the prune: the blob's only row is gone
    assert referenced_digests(saver.conn) == set() and store.keys() == [key]
    time.sleep(GRACE + 1.1)  # real time: the blob is older than the grace period

    serde.pause = True
    errors: list[BaseException] = []

    def save() -> None:
        try:
            saver.put(_config("new"), _checkpoint(pdf=pdf), {"step": 0}, {"pdf": 1})
        except BaseException as exc:  # handed to the main thread
            errors.append(exc)

    writer = threading.Thread(target=save)
    writer.start()
    try:
        assert serde.reached.wait(30), "the save never reached the point before its commit"
        assert saver.conn.execute("SELECT count(*) FROM checkpoints").fetchone()[0] == 0
        gc_conn = sqlite3.connect(db)
        try:  # the collector, on its own connection, while the save is in flight
            assert collect_unreferenced_blobs(gc_conn, collector, grace_seconds=GRACE) == [key]
        finally:
            gc_conn.close()
        live = store.keys()
        assert key not in live  # the race was really hit: the blob left its key
    finally:
        serde.resume.set()
        writer.join(30)
    assert not errors and saver.conn.execute("SELECT count(*) FROM checkpoints").fetchone()[0]
    return saver, pdf


# --- (a) the exact interleaving -------------------------------------------------------------

@pytest.mark.parametrize("known_ttl", [300.0, 0.5], ids=["cache-skips-head", "head-finds-it"])
def test_collection_between_dumps_and_commit_loses_nothing(
        tmp_path: Path, s3: S3Settings, known_ttl: float) -> None:
    """Failed before the fix with BlobMissingError (both the cached and the HEAD path)."""
    bucket = _bucket(s3)
    store = S3BlobStore(s3_client(s3), bucket, known_ttl=known_ttl)
    saver, pdf = _save_collect_commit(tmp_path, store, S3BlobStore(s3_client(s3), bucket))
    fresh = OffloadingSerializer(store=S3BlobStore(s3_client(s3), bucket), threshold=KIB)
    reader = SqliteSaver(saver.conn, serde=fresh)
    tup = reader.get_tuple(_config("new"))
    assert tup is not None and tup.checkpoint["channel_values"]["pdf"] == pdf
    assert fresh.store.restored_on_read == 1  # read from the trash and put back
    live = store.keys()
    assert store.key(sha256_hex(pdf)) in live
    saver.conn.close()


def test_purge_restores_a_blob_a_row_committed_after_the_quarantine(
        tmp_path: Path, s3: S3Settings) -> None:
    """Nobody reads the row before the purge: the purge's own scan brings the blob back."""
    bucket = _bucket(s3)
    kwargs = {"known_ttl": 0.5, "max_save_seconds": 1.0}  # purge_after = 1.5 s
    store = S3BlobStore(s3_client(s3), bucket, **kwargs)
    collector = S3BlobStore(s3_client(s3), bucket, **kwargs)
    saver, pdf = _save_collect_commit(tmp_path, store, collector)
    key = store.key(sha256_hex(pdf))
    live = store.keys()
    assert len(collector.trash_keys()) == 1 and key not in live
    # Too young for the purge: the trash copy stays, nothing is restored yet.
    early = collector.collect(lambda: referenced_digests(saver.conn, bucket),
                              grace_seconds=GRACE)
    assert early.purged == [] and len(collector.trash_keys()) == 1
    time.sleep(collector.purge_after + 2.1)  # whole-second stamps: the age is a lower bound
    dry = collector.collect(lambda: referenced_digests(saver.conn, bucket), dry_run=True)
    assert dry.restored == [key] and len(dry.purged) == 1  # what it would do, and nothing more:
    live = store.keys()
    assert len(collector.trash_keys()) == 1 and key not in live
    done = collector.collect(lambda: referenced_digests(saver.conn, bucket), grace_seconds=GRACE)
    assert done.restored == [key] and len(done.purged) == 1 and done.removed == []
    assert collector.trash_keys() == [] and store.keys() == [key]
    fresh = OffloadingSerializer(store=S3BlobStore(s3_client(s3), bucket), threshold=KIB)
    tup = SqliteSaver(saver.conn, serde=fresh).get_tuple(_config("new"))
    assert tup is not None and tup.checkpoint["channel_values"]["pdf"] == pdf
    assert fresh.store.restored_on_read == 0  # it was under its key again
    saver.conn.close()


def test_unreferenced_blob_is_purged_and_a_missing_blob_still_raises(
        tmp_path: Path, s3: S3Settings) -> None:
    bucket = _bucket(s3)
    store = S3BlobStore(s3_client(s3), bucket, known_ttl=0.5, max_save_seconds=0.5)
    serde = OffloadingSerializer(store=store, threshold=KIB)
    saver = _saver(tmp_path / "purge.sqlite", serde)
    orphan = random.Random(3).randbytes(4 * KIB)
    row = serde.dumps_typed({"pdf": orphan})  # uploaded; its row never committed
    assert collect_unreferenced_blobs(saver.conn, store) == [store.key(sha256_hex(orphan))]
    assert store.keys() == [] and len(store.trash_keys()) == 1
    time.sleep(store.purge_after + 2.1)
    done = store.collect(lambda: referenced_digests(saver.conn, bucket))
    assert len(done.purged) == 1 and done.restored == [] and store.trash_keys() == []
    with pytest.raises(BlobMissingError):
        serde.loads_typed(row)
    saver.conn.close()


def test_purge_after_shorter_than_ttl_plus_save_is_refused(s3: S3Settings) -> None:
    with pytest.raises(CheckpointError, match="shorter than known_ttl"):
        S3BlobStore(s3_client(s3), "gc-race-tests", known_ttl=60, max_save_seconds=60,
                    purge_after=100)
    assert S3BlobStore(s3_client(s3), "gc-race-tests").purge_after == 600


def test_collecting_inside_an_open_transaction_is_refused(tmp_path: Path,
                                                          s3: S3Settings) -> None:
    store = S3BlobStore(s3_client(s3), _bucket(s3))
    conn = sqlite3.connect(tmp_path / "tx.sqlite")
    SqliteSaver(conn).setup()
    conn.execute("BEGIN")
    conn.execute("SELECT count(*) FROM checkpoints").fetchone()
    with pytest.raises(CheckpointError, match="open transaction"):
        collect_unreferenced_blobs(conn, store)
    conn.close()


# --- (b) writers and a collector running at once --------------------------------------------

def test_concurrent_saves_and_collections_lose_nothing(tmp_path: Path, s3: S3Settings) -> None:
    bucket = _bucket(s3)
    kwargs = {"known_ttl": 0.3, "max_save_seconds": 2.0}  # purge_after = 2.3 s
    values = [random.Random(100 + i).randbytes(48 * KIB) for i in range(10)]
    db = tmp_path / "busy.sqlite"
    _saver(db, OffloadingSerializer(store=S3BlobStore(s3_client(s3), bucket))).conn.close()
    stop = threading.Event()
    errors: list[str] = []
    expected: dict[str, tuple[int, int]] = {}  # checkpoint id -> (value, write value)
    slowest = [0.0]
    removed: list[str] = []
    purged: list[str] = []
    restored = [0]  # blobs put back: by a read, or by a purge that found a row needing them
    started = time.monotonic()

    def pick(rng: random.Random) -> int:
        if rng.random() < 0.1:  # now and then an old value: reuse of a collected blob
            return rng.randrange(len(values))
        phase = int((time.monotonic() - started) / 1.5)  # the working set drifts
        return (2 * phase + rng.randrange(3)) % len(values)

    def writer(n: int) -> None:
        rng = random.Random(n)
        store = S3BlobStore(s3_client(s3), bucket, **kwargs)
        saver = _saver(db, OffloadingSerializer(store=store, threshold=KIB))
        thread = f"w{n}"
        try:
            while not stop.is_set():
                i, j = pick(rng), pick(rng)
                t0 = time.monotonic()
                saved = saver.put(_config(thread), _checkpoint(pdf=values[i], step=len(expected)),
                                  {"step": 0}, {"pdf": 1, "step": 1})
                saver.put_writes(saved, [("pdf", values[j])], "task")
                slowest[0] = max(slowest[0], time.monotonic() - t0)
                cid = saved["configurable"]["checkpoint_id"]
                expected[cid] = (i, j)
                with saver.cursor() as cur:  # prune: only the newest row of the thread stays
                    cur.execute("DELETE FROM checkpoints WHERE thread_id = ? AND "
                                "checkpoint_id < ?", (thread, cid))
                    cur.execute("DELETE FROM writes WHERE thread_id = ? AND checkpoint_id < ?",
                                (thread, cid))
                reads = store.restored_on_read
                tup = saver.get_tuple(saved)
                restored[0] += store.restored_on_read - reads
                if (tup is None or tup.checkpoint["channel_values"]["pdf"] != values[i]
                        or tup.pending_writes[0][2] != values[j]):
                    errors.append(f"{thread}: checkpoint {cid} did not load back exactly")
                time.sleep(rng.random() * 0.03)
        except Exception as exc:  # reported by the main thread
            errors.append(f"{thread}: {type(exc).__name__}: {exc}")
        finally:
            saver.conn.close()

    def collector() -> None:
        store = S3BlobStore(s3_client(s3), bucket, **kwargs)
        conn = sqlite3.connect(db, timeout=30)
        try:
            while not stop.is_set():
                result = store.collect(lambda: referenced_digests(conn, bucket),
                                       grace_seconds=0.2)
                removed.extend(result.removed)
                purged.extend(result.purged)
                restored[0] += len(result.restored)
                time.sleep(0.05)
        except Exception as exc:  # reported by the main thread
            errors.append(f"collector: {type(exc).__name__}: {exc}")
        finally:
            conn.close()

    threads = [threading.Thread(target=writer, args=(n,)) for n in range(3)]
    threads.append(threading.Thread(target=collector))
    for t in threads:
        t.start()
    time.sleep(7)
    stop.set()
    for t in threads:
        t.join(60)
    assert not errors, errors[:5]
    assert slowest[0] < kwargs["max_save_seconds"], "a save broke the collector's assumption"
    # Not vacuous: blobs were collected, purged, and put back for rows that needed them
    # (about 240 saves, 55 quarantines, 25 purges, 16 restores on this machine).
    stats = (len(expected), len(removed), len(purged), restored[0])
    assert stats[0] >= 50 and stats[1] >= 5 and stats[2] >= 1 and stats[3] >= 1, stats

    # One more collection after the purge delay: every referenced blob is under its own key
    # again, and every committed row loads byte-exact through a store with an empty cache.
    collector_store = S3BlobStore(s3_client(s3), bucket, **kwargs)
    time.sleep(collector_store.purge_after + 2.1)
    conn = sqlite3.connect(db)
    referenced = referenced_digests(conn, bucket)
    collector_store.collect(lambda: referenced_digests(conn, bucket), grace_seconds=3600)
    assert {collector_store.key(d) for d in referenced} <= set(collector_store.keys())
    reader = SqliteSaver(conn, serde=OffloadingSerializer(
        store=S3BlobStore(s3_client(s3), bucket), threshold=KIB))
    rows = list(reader.list(None))
    assert len(rows) == 3
    for tup in rows:
        i, j = expected[tup.config["configurable"]["checkpoint_id"]]
        assert tup.checkpoint["channel_values"]["pdf"] == values[i]
        assert [w[2] for w in tup.pending_writes] == [values[j]]
    conn.close()
