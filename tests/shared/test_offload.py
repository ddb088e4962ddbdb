"""2.2 Blob offload: the witness at small scale with every metric asserted on its own, the bad
inputs one by one, and the LangGraph conformance suite on an offloading AsyncSqliteSaver.

S3 is moto's real HTTP server (ThreadedMotoServer) on 127.0.0.1; boto3 talks to it over HTTP.
"""

from __future__ import annotations

import asyncio
import itertools
import sqlite3
from collections.abc import AsyncGenerator, Iterator
from pathlib import Path

import aiosqlite
import pytest
from langgraph.checkpoint.base import BaseCheckpointSaver, empty_checkpoint
from langgraph.checkpoint.serde.jsonplus import JsonPlusSerializer
from langgraph.checkpoint.sqlite import SqliteSaver
from langgraph.checkpoint.sqlite.aio import AsyncSqliteSaver

from shared.conformance import detected_capabilities, report_failures, run_conformance
from shared.errors import CheckpointError
from shared.infra.s3 import (
    S3Settings,
    ensure_bucket,
    mask_url,
    s3_client,
    s3_server,
    s3_settings_from_env,
    unreachable_settings,
)
from shared.savers.offload import (
    BLOB_KEY,
    BlobIntegrityError,
    BlobMissingError,
    BlobReferenceRefused,
    BlobStoreUnavailable,
    ForeignBucketError,
    OffloadingSerializer,
    S3BlobStore,
    collect_unreferenced_blobs,
    referenced_digests,
    sha256_hex,
)
from shared.savers.sqlite import row_counts
from shared.workloads.payloads import fake_pdf

KIB = 1024
CONFIG = {"configurable": {"thread_id": "t", "checkpoint_ns": ""}}
_buckets = itertools.count()


@pytest.fixture(scope="module")
def s3() -> Iterator[S3Settings]:
    with s3_server(bucket="offload-tests") as settings:
        yield settings


@pytest.fixture
def store(s3: S3Settings) -> S3BlobStore:
    """A store on a bucket of its own: moto's data outlives a server within one process."""
    bucket = f"offload-test-{next(_buckets)}"
    client = s3_client(s3)
    ensure_bucket(client, bucket)
    return S3BlobStore(client, bucket)


def _saver(path: Path, serde: OffloadingSerializer) -> SqliteSaver:
    saver = SqliteSaver(sqlite3.connect(path, check_same_thread=False), serde=serde)
    saver.setup()
    return saver


def _checkpoint(**values: object) -> dict:
    cp = empty_checkpoint()
    cp["channel_values"] = dict(values)
    cp["channel_versions"] = dict.fromkeys(values, 1)
    return cp


def _one_sentence(message: str) -> bool:
    return message.endswith(".") and ". " not in message and "?" not in message


# --- the witness ---------------------------------------------------------------------------


# --- settings from the environment ------------------------------------------------------

def test_settings_mask_secrets() -> None:
    s = S3Settings("http://user:hunter2@127.0.0.1:9000", access_key_id="AKIA",
                   secret_access_key="topsecret")
    assert "topsecret" not in repr(s) and "topsecret" not in str(s)
    assert "hunter2" not in repr(s) and "user:***@" in repr(s)
    assert mask_url("http://127.0.0.1:9000") == "http://127.0.0.1:9000"


def test_settings_from_env() -> None:
    assert s3_settings_from_env({}) is None
    s = s3_settings_from_env({"S3_ENDPOINT_URL": "http://127.0.0.1:9000",
                              "AWS_ACCESS_KEY_ID": "k", "AWS_SECRET_ACCESS_KEY": "s"})
    assert s is not None and (s.region, s.bucket) == ("us-east-1", "ckpt-blobs")


@pytest.mark.parametrize("url", ["ftp://host", "localhost:9000", "http://", "http://h:99999",
                                 "http://u:pw@h:abc"])
def test_malformed_endpoint_is_one_clear_sentence(url: str) -> None:
    with pytest.raises(CheckpointError) as err:
        s3_settings_from_env({"S3_ENDPOINT_URL": url})
    message = str(err.value)
    assert _one_sentence(message) and "S3_ENDPOINT_URL" in message and "pw" not in message


def test_bad_bucket_name_refused() -> None:
    with pytest.raises(CheckpointError, match="not a valid S3 bucket name"):
        s3_settings_from_env({"S3_ENDPOINT_URL": "http://h:1", "CKPT_S3_BUCKET": "Bad_Name"})


# --- S3 down: a clear sentence, fast, and no row written ---------------------------------

def test_unreachable_endpoint_writes_no_row(tmp_path: Path) -> None:
    settings = unreachable_settings()
    down = OffloadingSerializer(store=S3BlobStore.from_settings(settings), threshold=KIB)
    saver = _saver(tmp_path / "down.sqlite", down)
    with pytest.raises(BlobStoreUnavailable) as err:
        saver.put(CONFIG, _checkpoint(pdf=fake_pdf(4 * KIB)), {"step": 0}, {"pdf": 1})
    message = str(err.value)
    assert _one_sentence(message)
    assert settings.endpoint_url in message and "S3_ENDPOINT_URL" in message
    assert "not saved" in message
    with pytest.raises(BlobStoreUnavailable):
        saver.put_writes({"configurable": {**CONFIG["configurable"], "checkpoint_id": "c"}},
                         [("small", "ok"), ("pdf", fake_pdf(4 * KIB))], "task")
    assert row_counts(saver.conn, "t") == (0, 0)  # not even the small write of the batch
    saver.conn.close()


def test_unreachable_endpoint_from_env_is_clear(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("S3_ENDPOINT_URL", unreachable_settings().endpoint_url or "")
    with pytest.raises(CheckpointError, match="unreachable") as err, s3_server():
        pass
    assert _one_sentence(str(err.value))


def test_exists(store: S3BlobStore) -> None:
    uri = store.put(b"z" * 10)
    assert store.exists(uri) and store.exists(uri.rsplit("/", 1)[1])
    assert not store.exists("0" * 64)
    with pytest.raises(BlobReferenceRefused):
        store.exists("sha256/../../etc")


def test_unreachable_endpoint_masks_password() -> None:
    settings = unreachable_settings()
    secret_url = settings.endpoint_url.replace("http://", "http://user:hunter2@")
    store = S3BlobStore(s3_client(S3Settings(secret_url, access_key_id="k",
                                             secret_access_key="s")), "ckpt-blobs")
    with pytest.raises(BlobStoreUnavailable) as err:
        store.put(b"x" * 10)
    assert "hunter2" not in str(err.value) and "user:***@" in str(err.value)


# --- references that must not be trusted ---------------------------------------------------

def test_foreign_bucket_refused_without_fetching(tmp_path: Path, store: S3BlobStore) -> None:
    serde = OffloadingSerializer(store=store, threshold=KIB)
    saver = _saver(tmp_path / "foreign.sqlite", serde)
    pdf = fake_pdf(8 * KIB)
    saver.put(CONFIG, _checkpoint(pdf=pdf), {"step": 0}, {"pdf": 1})
    # Point the stored reference at another bucket, as a hand edit would.
    plain = JsonPlusSerializer()
    cid, type_, blob = saver.conn.execute(
        "SELECT checkpoint_id, type, checkpoint FROM checkpoints").fetchone()
    cp = plain.loads_typed((type_, blob))
    cp["channel_values"]["pdf"][BLOB_KEY] = f"s3://attacker-bucket/sha256/{sha256_hex(pdf)}"
    saver.conn.execute("UPDATE checkpoints SET checkpoint = ? WHERE checkpoint_id = ?",
                       (plain.dumps_typed(cp)[1], cid))
    saver.conn.commit()
    fetches = store.fetches
    with pytest.raises(ForeignBucketError) as err:
        saver.get_tuple(CONFIG)
    assert "attacker-bucket" in str(err.value) and _one_sentence(str(err.value))
    assert store.fetches == fetches  # refused before any request
    saver.conn.close()


@pytest.mark.parametrize("ref", ["s3://x/sha256/abc", "https://evil/x", 42, "s3://Bad_B/sha256/"
                                 + "0" * 64])
def test_malformed_reference_refused(store: S3BlobStore, ref: object) -> None:
    serde = OffloadingSerializer(store=store)
    with pytest.raises(BlobReferenceRefused):
        serde.loads_typed(JsonPlusSerializer().dumps_typed({"v": {BLOB_KEY: ref}}))


def test_hash_mismatch_refused(store: S3BlobStore) -> None:
    serde = OffloadingSerializer(store=store, threshold=KIB)
    data = fake_pdf(8 * KIB, seed=7)
    row = serde.dumps_typed({"pdf": data})
    assert serde.loads_typed(row) == {"pdf": data}
    store.client.put_object(Bucket=store.bucket, Key=store.key(sha256_hex(data)),
                            Body=b"%PDF-1.7 replaced")
    with pytest.raises(BlobIntegrityError) as err:
        serde.loads_typed(row)
    assert _one_sentence(str(err.value))


def test_missing_blob_and_missing_bucket_are_clear(s3: S3Settings, store: S3BlobStore) -> None:
    serde = OffloadingSerializer(store=store, threshold=KIB)
    data = fake_pdf(2 * KIB, seed=11)
    row = serde.dumps_typed(data)
    store.client.delete_object(Bucket=store.bucket, Key=store.key(sha256_hex(data)))
    with pytest.raises(BlobMissingError) as err:
        serde.loads_typed(row)
    assert _one_sentence(str(err.value))
    nowhere = S3BlobStore(s3_client(s3), "no-such-bucket-here")
    with pytest.raises(BlobStoreUnavailable, match="does not exist") as err:
        nowhere.put(data)
    assert _one_sentence(str(err.value))


def test_state_that_looks_like_a_reference_is_refused_on_save(store: S3BlobStore) -> None:
    serde = OffloadingSerializer(store=store)
    with pytest.raises(BlobReferenceRefused, match="rename that key"):
        serde.dumps_typed({"user": {BLOB_KEY: "s3://offload-tests/sha256/" + "0" * 64}})
    # A dict with the marker among other keys is ordinary data.
    assert serde.loads_typed(serde.dumps_typed({BLOB_KEY: 1, "b": 2})) == {BLOB_KEY: 1, "b": 2}


# --- what is offloaded, and how often ------------------------------------------------------

def test_below_threshold_stays_inline(store: S3BlobStore) -> None:
    serde = OffloadingSerializer(store=store, threshold=4 * KIB)
    small, big = b"s" * (4 * KIB - 1), fake_pdf(4 * KIB)
    type_, raw = serde.dumps_typed({"small": small, "big": big})
    assert small in raw and big not in raw
    assert store.keys() == [store.key(sha256_hex(big))]
    assert serde.dumps_typed(small) == ("bytes", small)  # a bare small value: untouched
    assert serde.loads_typed((type_, raw)) == {"small": small, "big": big}


def test_nested_values_round_trip(store: S3BlobStore) -> None:
    serde = OffloadingSerializer(store=store, threshold=KIB)
    blob = fake_pdf(2 * KIB, seed=3)
    value = {"list": [1, blob, {"deep": (blob, "x")}], "plain": "text", "n": None}
    type_, raw = serde.dumps_typed(value)
    assert len(raw) < 400 and blob not in raw
    back = serde.loads_typed((type_, raw))
    assert back["list"][1] == blob and back["list"][2]["deep"][0] == blob
    assert back["plain"] == "text" and back["n"] is None
    assert value["list"][1] is blob  # the caller's object was not modified
    assert serde.loads_typed(serde.dumps_typed(blob)) == blob  # a bare write value


def test_same_payload_stored_once(tmp_path: Path, store: S3BlobStore) -> None:
    serde = OffloadingSerializer(store=store, threshold=KIB)
    saver = _saver(tmp_path / "dedup.sqlite", serde)
    pdf = fake_pdf(64 * KIB, seed=5)
    config = CONFIG
    for step in range(10):
        config = saver.put(config, _checkpoint(pdf=pdf, step=step), {"step": step}, {"pdf": 1})
    assert row_counts(saver.conn, "t")[0] == 10
    assert store.keys() == [store.key(sha256_hex(pdf))] and store.uploads == 1
    assert referenced_digests(saver.conn) == {sha256_hex(pdf)}
    assert all(t.checkpoint["channel_values"]["pdf"] == pdf for t in saver.list(CONFIG))
    saver.conn.close()


# --- garbage collection --------------------------------------------------------------------

def test_collect_unreferenced_blobs(tmp_path: Path, store: S3BlobStore) -> None:
    serde = OffloadingSerializer(store=store, threshold=KIB)
    saver = _saver(tmp_path / "gc.sqlite", serde)
    kept, orphan_write, orphan = (fake_pdf(2 * KIB, seed=s) for s in (1, 2, 3))
    saved = saver.put(CONFIG, _checkpoint(pdf=kept), {"step": 0}, {"pdf": 1})
    saver.put_writes(saved, [("pdf", orphan_write)], "task-1")
    store.put(orphan)  # uploaded, but its row never made it
    dry = collect_unreferenced_blobs(saver.conn, store, dry_run=True)
    assert dry == [store.key(sha256_hex(orphan))] and len(store.keys()) == 3
    assert collect_unreferenced_blobs(saver.conn, store, grace_seconds=3600) == []  # too young
    assert collect_unreferenced_blobs(saver.conn, store) == dry
    assert sorted(store.keys()) == sorted(store.key(sha256_hex(b)) for b in (kept, orphan_write))
    assert saver.get_tuple(CONFIG).checkpoint["channel_values"]["pdf"] == kept
    saver.conn.close()


def test_gc_refuses_encrypted_rows(tmp_path: Path) -> None:
    conn = sqlite3.connect(tmp_path / "enc.sqlite")
    SqliteSaver(conn).setup()
    conn.execute("INSERT INTO checkpoints (thread_id, checkpoint_ns, checkpoint_id, type, "
                 "checkpoint, metadata) VALUES ('t', '', 'c', 'msgpack+aes', x'00', x'00')")
    with pytest.raises(CheckpointError, match="encrypted"):
        referenced_digests(conn)
    conn.close()


# --- async saver and the conformance suite -------------------------------------------------

def test_async_sqlite_saver_offloads(tmp_path: Path, store: S3BlobStore) -> None:
    pdf = fake_pdf(32 * KIB, seed=9)

    async def run() -> tuple[bytes, int]:
        async with aiosqlite.connect(tmp_path / "async.sqlite") as conn:
            saver = AsyncSqliteSaver(conn, serde=OffloadingSerializer(store=store,
                                                                       threshold=KIB))
            await saver.setup()
            saved = await saver.aput(CONFIG, _checkpoint(pdf=pdf), {"step": 0}, {"pdf": 1})
            await saver.aput_writes(saved, [("pdf", pdf)], "task")
            tup = await saver.aget_tuple(saved)
            assert tup is not None and tup.pending_writes[0][2] == pdf
            async with conn.execute("SELECT max(length(checkpoint)) FROM checkpoints") as cur:
                (largest,) = await cur.fetchone()
            return tup.checkpoint["channel_values"]["pdf"], largest

    back, largest = asyncio.run(run())
    assert back == pdf and largest < 1024
    assert store.keys() == [store.key(sha256_hex(pdf))]


def test_conformance_async_sqlite_with_offload(tmp_path: Path, store: S3BlobStore) -> None:
    files = itertools.count()

    async def factory() -> AsyncGenerator[BaseCheckpointSaver, None]:
        # A fresh file per capability suite: the suite expects an empty saver each time.
        path = tmp_path / f"conformance-{next(files)}.sqlite"
        async with aiosqlite.connect(path) as conn:
            saver = AsyncSqliteSaver(conn, serde=OffloadingSerializer(store=store))
            await saver.setup()
            yield saver

    report = run_conformance("AsyncSqliteSaver[OffloadingSerializer]", factory)
    assert report.passed_all(), report_failures(report)
    assert detected_capabilities(report) == ["delete_thread", "get_tuple", "list", "put",
                                             "put_writes"]
    # The suite's values hold no bytes, so it proves the serializer is transparent;
    # test_async_sqlite_saver_offloads covers the offload path on the same saver.
