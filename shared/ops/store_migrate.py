"""Move a LangGraph Store (``SqliteStore`` <-> ``PostgresStore``) and prove the copy.

    info = store_info(conn)                       # None: this database holds no store
    report = migrate_store(src_conn, dst_conn)    # items and their embeddings, in batches
    check = verify_store(src_conn, dst_conn)      # every item by namespace + key
    assert check.ok, check.examples

Connections are ``sqlite3.Connection`` or psycopg ones (autocommit, ``dict_row``). Values
are JSON (text in SQLite, ``jsonb`` in PostgreSQL) and are only ever parsed as JSON: nothing
is loaded that could run code. Timestamps are moved as instants (SQLite keeps UTC text).

Embeddings are copied when both sides have the same dimensions: neither store records which
model made its vectors, so the dimensions (blob length in SQLite, the ``vector(N)`` column in
PostgreSQL) are what is compared. When the destination's column has other dimensions and
they are WordLlama's (256), or when ``reembed=True``, they are re-created with
``wordllama_embeddings()`` from the text at each row's ``field_name`` path; any other
mismatch is refused. Each batch (items and their vectors) is one transaction, so an
interrupted run leaves whole items; running it again skips the items already there and
equal, and refuses a destination holding any other item, before writing.
"""

from __future__ import annotations

import datetime as dt
import json
import re
import sqlite3
import struct
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

from langgraph.store.base.embed import get_text_at_path
from langgraph.store.postgres import PostgresStore
from langgraph.store.sqlite import SqliteStore

from shared.errors import CheckpointError
from shared.store.embeddings import DIMS, wordllama_embeddings

Conn = Any  # sqlite3.Connection or psycopg.Connection
ItemKey = tuple[str, str]  # (prefix, key): the namespace joined with dots, the key


class StoreRefused(CheckpointError):
    """The store cannot be moved as asked; nothing was written."""


def is_sqlite(conn: Conn) -> bool:
    return isinstance(conn, sqlite3.Connection)


def _rows(conn: Conn, sql: str, args: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Plain tuples from either driver (``sql`` written with ``?``; PostgreSQL gets ``%s``)."""
    if is_sqlite(conn):
        return conn.execute(sql, args).fetchall()
    from psycopg.rows import tuple_row

    with conn.cursor(row_factory=tuple_row) as cur:
        cur.execute(sql.replace("?", "%s"), args)
        return cur.fetchall()


def _tables(conn: Conn) -> set[str]:
    if is_sqlite(conn):
        return {r[0] for r in _rows(conn, "SELECT name FROM sqlite_master WHERE type = 'table'")}
    return {r[0] for r in _rows(conn, "SELECT tablename::text FROM pg_tables "
                                      "WHERE schemaname = current_schema()")}


@dataclass
class StoreInfo:
    """What a database's store is: its schema versions, its items, its vectors' dims."""

    version: int  # store_migrations' highest v
    vector_version: int | None  # vector_migrations' (None: no vector tables)
    items: int
    vectors: int
    dims: int | None  # of the stored vectors (PostgreSQL: of the column), None if unknown


def _expected(conn: Conn) -> tuple[int, int]:
    cls = SqliteStore if is_sqlite(conn) else PostgresStore
    return len(cls.MIGRATIONS) - 1, len(cls.VECTOR_MIGRATIONS) - 1


def _dims(conn: Conn) -> int | None:
    if is_sqlite(conn):
        row = _rows(conn, "SELECT length(embedding) FROM store_vectors "
                          "WHERE embedding IS NOT NULL LIMIT 1")
        return row[0][0] // 4 if row else None  # float32 blobs (sqlite_vec.serialize_float32)
    row = _rows(conn, "SELECT atttypmod FROM pg_attribute WHERE attrelid = "
                      "to_regclass('store_vectors') AND attname = 'embedding'")
    return row[0][0] if row and row[0][0] > 0 else None


def store_info(conn: Conn, name: str = "the database") -> StoreInfo | None:
    """The store ``conn`` holds, None if none; refuses a schema this LangGraph does not know."""
    tables = _tables(conn)
    if "store" not in tables:
        return None
    v = (_rows(conn, "SELECT max(v) FROM store_migrations")[0][0]
         if "store_migrations" in tables else None)
    if v is None:
        raise StoreRefused(f"The store in {name} has no store_migrations record: it was not "
                           "made by LangGraph's setup(); nothing was written.")
    vv = (_rows(conn, "SELECT max(v) FROM vector_migrations")[0][0]
          if {"vector_migrations", "store_vectors"} <= tables else None)
    known, known_vec = _expected(conn)
    for what, got, want in (("store", v, known), ("vector", vv, known_vec)):
        if got is not None and got != want:
            fix = ("upgrade langgraph-checkpoint-sqlite/-postgres here" if got > want else
                   "open it once with this LangGraph's store and call setup()")
            raise StoreRefused(f"The store in {name} is at {what} schema version {got}, and "
                               f"this LangGraph's is {want}: {fix}; nothing was written.")
    vectors = _rows(conn, "SELECT count(*) FROM store_vectors")[0][0] if vv is not None else 0
    return StoreInfo(v, vv, _rows(conn, "SELECT count(*) FROM store")[0][0], vectors,
                     _dims(conn) if vv is not None else None)


# --- reading: one form for both databases ------------------------------------------------------

@dataclass(frozen=True)
class Item:
    value: Any  # parsed JSON
    created_at: dt.datetime | None
    updated_at: dt.datetime | None
    expires_at: dt.datetime | None
    ttl_minutes: float | None


def _instant(v: Any) -> dt.datetime | None:
    """A UTC instant from SQLite's text (naive = UTC, as CURRENT_TIMESTAMP) or PostgreSQL's."""
    if v is None:
        return None
    t = v if isinstance(v, dt.datetime) else dt.datetime.fromisoformat(str(v))
    return t.replace(tzinfo=dt.UTC) if t.tzinfo is None else t.astimezone(dt.UTC)


def _value(v: Any) -> Any:
    return json.loads(v) if isinstance(v, str | bytes) else v  # jsonb arrives parsed


def read_items(conn: Conn) -> dict[ItemKey, Item]:
    """Every item, values parsed as JSON only."""
    rows = _rows(conn, "SELECT prefix, key, value, created_at, updated_at, expires_at, "
                       "ttl_minutes FROM store")
    return {(r[0], r[1]): Item(_value(r[2]), _instant(r[3]), _instant(r[4]), _instant(r[5]),
                               None if r[6] is None else float(r[6])) for r in rows}


def read_vectors(conn: Conn) -> dict[tuple[str, str, str], bytes | None]:
    """(prefix, key, field_name) -> the vector as little-endian float32 bytes, exactly as
    stored (bytes, not floats: 1 KB a vector, where a tuple of 256 floats takes 8)."""
    if "store_vectors" not in _tables(conn):
        return {}
    if is_sqlite(conn):
        rows = _rows(conn, "SELECT prefix, key, field_name, embedding FROM store_vectors")
        return {(r[0], r[1], r[2]): None if r[3] is None else bytes(r[3]) for r in rows}
    rows = _rows(conn, "SELECT prefix, key, field_name, embedding::real[] FROM store_vectors")
    # real[] arrives as shortest decimal text parsed into doubles: back to the float32 values
    return {(r[0], r[1], r[2]): None if r[3] is None else _f32(r[3]) for r in rows}


def _f32(v: list[float]) -> bytes:
    return struct.pack(f"<{len(v)}f", *v)


def _floats(v: bytes) -> list[float]:
    return list(struct.unpack(f"<{len(v) // 4}f", v))


def field_text(value: Any, field_name: str) -> str | None:
    """The text a store embedded for ``field_name`` (``path``, or ``path.i`` for the i-th of
    several texts at ``path``, as LangGraph names them)."""
    try:
        texts = get_text_at_path(value, field_name)
        if len(texts) == 1:
            return texts[0]
        if m := re.fullmatch(r"(.*)\.(\d+)", field_name):
            texts = get_text_at_path(value, m.group(1))
            if int(m.group(2)) < len(texts):
                return texts[int(m.group(2))]
    except Exception:  # a path the value no longer has
        return None
    return None


# --- writing ---------------------------------------------------------------------------------

def _sqlite_time(t: dt.datetime | None, with_zone: bool) -> str | None:
    """SqliteStore's own forms: CURRENT_TIMESTAMP text, or str() of an aware datetime."""
    if t is None:
        return None
    t = t.astimezone(dt.UTC)
    return str(t) if with_zone else str(t.replace(tzinfo=None))


def _json_bytes(value: Any) -> bytes:
    """Compact JSON bytes, as SqliteStore stores values (orjson's form; json here, since
    orjson refuses integers beyond 64 bits, which jsonb keeps)."""
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode()


def _sqlite_setup(conn: sqlite3.Connection, vectors: bool) -> None:
    """SqliteStore.setup()'s migrations, run here: its setup() loads the sqlite-vec extension
    for searching, which a Python built without loadable extensions cannot, and a copy
    needs only the tables."""
    for table, migrations in (("store_migrations", SqliteStore.MIGRATIONS),
                              ("vector_migrations", SqliteStore.VECTOR_MIGRATIONS)):
        if table == "vector_migrations" and not vectors:
            break
        # Table names come from the loop above, never from input.
        conn.execute(f"CREATE TABLE IF NOT EXISTS {table} (v INTEGER PRIMARY KEY)")
        done = conn.execute(f"SELECT max(v) FROM {table}").fetchone()[0]  # noqa: S608
        for v, sql in enumerate(migrations[(-1 if done is None else done) + 1:],
                                start=(-1 if done is None else done) + 1):
            conn.executescript(sql)
            conn.execute(f"INSERT INTO {table} (v) VALUES (?)", (v,))  # noqa: S608
    conn.commit()


def setup_destination(dst: Conn, dims: int | None) -> None:
    """The destination's store tables, by LangGraph's own setup() (and HNSW on PostgreSQL)."""
    if is_sqlite(dst):
        _sqlite_setup(dst, vectors=bool(dims))
    else:
        index = {"dims": dims, "embed": wordllama_embeddings(), "fields": ["$"]} if dims else None
        PostgresStore(dst, index=index).setup()  # type: ignore[arg-type]


def _write(dst: Conn, items: dict[ItemKey, Item],
           vectors: list[tuple[str, str, str, bytes | None]]) -> None:
    """One transaction: these items and their vectors, or nothing."""
    if is_sqlite(dst):
        with dst:  # commits, or rolls back on an exception
            dst.executemany(
                "INSERT INTO store (prefix, key, value, created_at, updated_at, expires_at, "
                "ttl_minutes) VALUES (?, ?, ?, ?, ?, ?, ?)",
                [(p, k, _json_bytes(i.value), _sqlite_time(i.created_at, False),
                  _sqlite_time(i.updated_at, False), _sqlite_time(i.expires_at, True),
                  i.ttl_minutes) for (p, k), i in items.items()])
            if vectors:  # a store without an index has no store_vectors table
                dst.executemany(
                    "INSERT INTO store_vectors (prefix, key, field_name, embedding) "
                    "VALUES (?, ?, ?, ?)",
                    vectors)
        return
    from psycopg.types.json import Jsonb

    with dst.transaction(), dst.cursor() as cur:
        cur.executemany(
            "INSERT INTO store (prefix, key, value, created_at, updated_at, expires_at, "
            "ttl_minutes) VALUES (%s, %s, %s, %s, %s, %s, %s)",
            [(p, k, Jsonb(i.value), i.created_at, i.updated_at, i.expires_at,
              None if i.ttl_minutes is None else int(i.ttl_minutes))
             for (p, k), i in items.items()])
        if vectors:  # a store without an index has no store_vectors table
            cur.executemany(
                "INSERT INTO store_vectors (prefix, key, field_name, embedding) "
                "VALUES (%s, %s, %s, %s::real[]::vector)",
                [(p, k, f, None if v is None else _floats(v)) for p, k, f, v in vectors])


# --- migrate ---------------------------------------------------------------------------------

@dataclass
class StoreMigrationReport:
    items: int = 0  # copied by this run
    items_skipped: int = 0  # already in the destination, equal
    namespaces: int = 0
    vectors_copied: int = 0
    vectors_reembedded: int = 0
    dims: int | None = None  # of the destination's vectors
    embeddings: str = "none"  # "copied", "re-created with WordLlama", or "none"
    batches: int = 0
    seconds: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _refuse_unmovable(src_items: dict[ItemKey, Item], dst: Conn) -> None:
    if is_sqlite(dst):
        return
    nul = [k for k, i in src_items.items()
           if "\x00" in k[0] + k[1] or "\\u0000" in json.dumps(i.value)]
    if nul:
        raise StoreRefused(f"{len(nul)} store item(s) hold a NUL character (e.g. {nul[0]!r}), "
                           "which PostgreSQL cannot store in text or jsonb: nothing was "
                           "written; rename or delete them in the source.")
    frac = [k for k, i in src_items.items()
            if i.ttl_minutes is not None and i.ttl_minutes != int(i.ttl_minutes)]
    if frac:
        raise StoreRefused(f"{len(frac)} store item(s) have a TTL of a fraction of a minute "
                           f"(e.g. {frac[0]!r}), and PostgresStore keeps whole minutes: "
                           "nothing was written; set whole-minute TTLs in the source.")


def _plan_dims(src: StoreInfo, dst: StoreInfo | None, reembed: bool, dst_name: str
               ) -> tuple[int | None, bool]:
    """The destination's dims and whether vectors are re-created (refuses a mismatch)."""
    if not src.vectors:
        return (dst.dims if dst else None), False
    have = dst.dims if dst else None
    # A 256-dimension destination takes WordLlama's vectors: re-create them for it.
    want = DIMS if reembed or (have is not None and have != src.dims and have == DIMS) \
        else src.dims
    if have is not None and have != want:
        raise StoreRefused(f"The store in {dst_name} holds {have}-dimension vectors and the "
                           f"source's are {src.dims}-dimension: nothing was written; migrate "
                           "into a database without a store, or with a 256-dimension one "
                           "(re-created with WordLlama).")
    return want, reembed or want != src.dims


@dataclass
class StorePlan:
    """What ``plan_store`` checked: enough to copy without reading the destination again."""

    info: StoreInfo
    items: dict[ItemKey, Item]
    present: set[ItemKey]  # already in the destination, equal: skipped
    dims: int | None
    recreate: bool


def plan_store(src: Conn, dst: Conn, *, reembed: bool = False, src_name: str = "the source",
               dst_name: str = "the destination") -> StorePlan | None:
    """Every check, before anything is written (the schema versions, the dims, values
    PostgreSQL cannot hold, a destination holding other items); None: no store to move.
    Reads only. Raises ``StoreRefused``."""
    info = store_info(src, src_name)
    if info is None:
        return None
    before = store_info(dst, dst_name)
    dims, recreate = _plan_dims(info, before, reembed, dst_name)
    items = read_items(src)
    _refuse_unmovable(items, dst)
    theirs = read_items(dst) if before and before.items else {}
    for key, item in theirs.items():
        if items.get(key) != item:
            how = "different from the source's" if key in items else "which the source lacks"
            raise StoreRefused(
                f"The store in {dst_name} already holds item {key[1]!r} in namespace "
                f"{key[0]!r}, {how}: nothing was written; migrate into an empty store, or "
                "delete its items.")
    return StorePlan(info, items, set(theirs), dims, recreate)


def migrate_store(src: Conn, dst: Conn, *, batch: int = 1000, reembed: bool = False,
                  plan: StorePlan | None = None, src_name: str = "the source",
                  dst_name: str = "the destination",
                  on_items: Callable[[int], None] | None = None) -> StoreMigrationReport:
    """Copy every item of ``src``'s store, with its embeddings, into ``dst``'s, ``batch``
    items (and their vectors) per transaction. ``plan`` is ``plan_store``'s, made earlier
    (the CLI checks the store before it copies checkpoints). Raises ``StoreRefused``."""
    started = time.perf_counter()
    plan = plan or plan_store(src, dst, reembed=reembed, src_name=src_name, dst_name=dst_name)
    if plan is None:
        raise StoreRefused(f"{src_name} holds no LangGraph store (no store table): nothing "
                           "to move.")
    items = plan.items
    report = StoreMigrationReport(dims=plan.dims, items_skipped=len(plan.present),
                                  namespaces=len({k[0] for k in items}),
                                  embeddings="none" if not plan.info.vectors else
                                  "re-created with WordLlama" if plan.recreate else "copied")
    setup_destination(dst, plan.dims)
    vectors = read_vectors(src)
    by_item: dict[ItemKey, list[str]] = {}
    for p, k, f in vectors:
        by_item.setdefault((p, k), []).append(f)
    todo = [k for k in sorted(items) if k not in plan.present]
    embed = wordllama_embeddings() if plan.recreate and vectors else None
    for start in range(0, len(todo), batch):
        chunk = {k: items[k] for k in todo[start:start + batch]}
        rows = [(p, k, f, vectors[(p, k, f)]) for p, k in chunk for f in by_item.get((p, k), [])]
        if embed is not None:
            texts = [field_text(chunk[(p, k)].value, f) for p, k, f, _ in rows]
            made = iter(embed.embed_documents([t for t in texts if t is not None]))
            rows = [(p, k, f, _f32(next(made)) if t is not None else None)
                    for (p, k, f, _), t in zip(rows, texts, strict=True)]
            report.vectors_reembedded += sum(t is not None for t in texts)
        else:
            report.vectors_copied += len(rows)
        _write(dst, chunk, rows)
        report.items += len(chunk)
        report.batches += 1
        if on_items:
            on_items(len(chunk))
    report.seconds = time.perf_counter() - started
    return report


# --- verify ----------------------------------------------------------------------------------

@dataclass
class StoreVerifyReport:
    items: int = 0
    missing: int = 0
    extra: int = 0  # in the copy only
    different: int = 0  # value, timestamps, expiry or TTL
    vectors: int = 0  # source embeddings checked
    vectors_missing: int = 0  # an indexed field with no embedding in the copy
    vectors_different: int = 0  # copied ones not bit-equal; re-created ones not WordLlama's
    vectors_reembedded: int = 0  # checked against a fresh WordLlama embedding
    seconds: float = 0.0
    examples: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not (self.missing or self.extra or self.different or self.vectors_missing
                    or self.vectors_different)

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "ok": self.ok}


def _item_diff(a: Item, b: Item) -> list[str]:
    return [f for f in ("value", "created_at", "updated_at", "expires_at", "ttl_minutes")
            if getattr(a, f) != getattr(b, f)]


def verify_store(src: Conn, dst: Conn, *, examples: int = 5, reembedded: bool = False,
                 src_name: str = "the source", dst_name: str = "the copy") -> StoreVerifyReport:
    """Compare every item (namespace + key, value, timestamps, expiry, TTL) and embedding.

    Same dims: each embedding must be bit-equal to the source's. Other dims, or
    ``reembedded`` (migrated with ``reembed=True``): each must be present and match
    WordLlama's embedding of the field's text (cosine > 0.999).
    """
    started = time.perf_counter()
    report = StoreVerifyReport()
    info = store_info(src, src_name)
    copy = store_info(dst, dst_name)
    if info is None:
        raise StoreRefused(f"{src_name} holds no LangGraph store: nothing to verify.")

    def example(text: str) -> None:
        if len(report.examples) < examples:
            report.examples.append(text)

    mine, theirs = read_items(src), read_items(dst) if copy else {}
    for key, item in sorted(mine.items()):
        report.items += 1
        other = theirs.pop(key, None)
        if other is None:
            report.missing += 1
            example(f"store item {key[0]}/{key[1]}: missing")
        elif diff := _item_diff(item, other):
            report.different += 1
            example(f"store item {key[0]}/{key[1]}: {', '.join(diff)} differ")
    report.extra = len(theirs)
    for key in sorted(theirs)[:examples]:
        example(f"store item {key[0]}/{key[1]}: only in the copy")
    src_vec, dst_vec = read_vectors(src), read_vectors(dst) if copy else {}
    recreated = reembedded or bool(copy and info.dims and copy.dims and copy.dims != info.dims)
    embed = wordllama_embeddings() if recreated else None
    for vkey, vec in sorted(src_vec.items()):
        if vec is None:
            continue
        report.vectors += 1
        got = dst_vec.get(vkey)
        where = f"embedding {vkey[0]}/{vkey[1]} field {vkey[2]!r}"
        if got is None:
            report.vectors_missing += 1
            example(f"{where}: missing")
        elif embed is not None:
            report.vectors_reembedded += 1
            text = field_text(mine[vkey[:2]].value, vkey[2]) if vkey[:2] in mine else None
            fresh = embed.embed_query(text) if text is not None else None
            if fresh is None or sum(a * b for a, b in zip(fresh, _floats(got), strict=True)
                                    ) < 0.999:
                report.vectors_different += 1
                example(f"{where}: not WordLlama's embedding of the field's text")
        elif got != vec:
            report.vectors_different += 1
            example(f"{where}: differs")
    report.seconds = time.perf_counter() - started
    return report


# --- inspect ---------------------------------------------------------------------------------

def inspect_store(conn: sqlite3.Connection, depth: int = 2) -> dict[str, Any] | None:
    """A SQLite store's namespaces grouped by their first ``depth`` labels: namespaces,
    items, bytes of JSON values, embeddings; None if the file holds no store."""
    info = store_info(conn)
    if info is None:
        return None
    vec = ("(SELECT count(*) FROM store_vectors v WHERE v.prefix = s.prefix AND "
           "v.key = s.key)" if info.vector_version is not None else "0")
    groups: dict[str, dict[str, int]] = {}
    for prefix, items, size, vectors in conn.execute(
            f"SELECT prefix, count(*), sum(length(CAST(value AS BLOB))), sum({vec}) "  # noqa: S608
            "FROM store s GROUP BY prefix ORDER BY prefix"):
        label = ".".join(prefix.split(".")[:depth])
        g = groups.setdefault(label, {"namespaces": 0, "items": 0, "value_bytes": 0,
                                      "embeddings": 0})
        g["namespaces"] += 1
        g["items"] += items
        g["value_bytes"] += size or 0
        g["embeddings"] += vectors or 0
    return {"schema_version": info.version, "vector_schema_version": info.vector_version,
            "items": info.items, "embeddings": info.vectors, "dims": info.dims,
            "by_prefix": [{"prefix": k, **v} for k, v in groups.items()]}


__all__ = [
    "StoreInfo",
    "StoreMigrationReport",
    "StorePlan",
    "StoreRefused",
    "StoreVerifyReport",
    "field_text",
    "inspect_store",
    "migrate_store",
    "plan_store",
    "read_items",
    "read_vectors",
    "setup_destination",
    "store_info",
    "verify_store",
]
