"""``HybridSaver``: the newest checkpoints of each thread in Redis, every checkpoint in PostgreSQL.

    with HybridSaver.from_conn_strings(redis_url, postgres_url, hot_keep=10) as saver:
        graph = builder.compile(checkpointer=saver)

PostgreSQL is the source of truth: the official ``PostgresSaver``'s schema and SQL, unchanged,
written first, on every call. Removing Redis at any moment loses nothing, and the database
stays readable by the official saver alone. Redis holds, per thread and namespace, the newest
``hot_keep`` checkpoints with their pending writes and channel blobs (each blob once, as in
PostgreSQL), so ``get_tuple`` of the latest, resuming, and a history page of up to
``hot_keep`` never touch PostgreSQL. Idle threads leave Redis after ``hot_ttl`` seconds.

Never older than PostgreSQL (the scripts are in ``hybrid_scripts.py``):

- A checkpoint write takes a *lease* on its thread in Redis before it commits to PostgreSQL,
  and publishes what it wrote (or drops the thread's hot sets: delete, prune, copy,
  delete_for_runs) after the commit, releasing the lease in the same atomic script. A read
  that sees a lease goes to PostgreSQL, so a commit whose Redis update is still on its way is
  never hidden by the cache. ``put`` and ``put_writes`` send the lease while their
  statements go out and commit once Redis has answered; they return without waiting for the
  publish: until Redis has run it, the lease sends readers to PostgreSQL.
- A read that missed caches what PostgreSQL returned only if nothing was written to the thread
  since the miss (a per-thread generation counter) and no lease is held.
- A lease past its deadline (its writer died, or froze, between the two steps) makes the next
  reader drop the thread's hot sets; the late writer drops them again when it wakes.
- Redis restarted empty or flushed, or stopped (SIGSTOP) or cut off long enough for a client to
  give up on it: a new *epoch* begins and everything cached before is ignored (see the
  scripts' prologue); for ``warmup`` seconds after that nothing is served from Redis, so a
  write that was in flight has landed in PostgreSQL before anything is cached again. A saver
  that wrote a thread to PostgreSQL without reaching Redis drops that thread's hot sets as
  soon as Redis answers it again; a heartbeat thread keeps the "Redis was silent" test honest
  while traffic is idle.

What this cannot promise: a writer process frozen for longer than ``lease`` *between* its
PostgreSQL commit and its Redis update, or cut off from a Redis that other processes still
reach, leaves readers one checkpoint behind until it wakes or reconnects (it then drops the
thread). The stall guard compares the client's clock with Redis's: hosts need NTP.

Redis down or slow: every call has ``timeout`` seconds; a failure is logged (once a burst),
counted (``metrics.hot_tier_error``), and the call goes on in PostgreSQL alone, with 0 failed
requests. For ``retry_after`` seconds after a failure Redis is not asked at all; then the hot
sets refill on use. Values in our keys that this saver did not write are refused, not decoded.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import threading
import time
import uuid
from collections.abc import AsyncIterator, Iterator, Mapping, Sequence
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass, field
from typing import Any, Protocol
from urllib.parse import quote

from langchain_core.runnables import RunnableConfig
from langgraph.checkpoint.base import (
    WRITES_IDX_MAP,
    ChannelVersions,
    Checkpoint,
    CheckpointMetadata,
    CheckpointTuple,
    DeltaChannelHistory,
    get_checkpoint_id,
    get_serializable_checkpoint_metadata,
    writes_sort_key,
)
from langgraph.checkpoint.postgres import PostgresSaver
from psycopg.types.json import Jsonb

from shared.errors import CheckpointError
from shared.savers import hybrid_scripts as lua
from shared.savers.threaded import ThreadedAsync

log = logging.getLogger(__name__)

MAGIC = b"ckpt-hot:1\n"  # the first bytes of every value this saver writes into Redis


class HotTierMetrics(Protocol):
    """What ``metrics=`` needs: ``shared.ops.metrics.CheckpointMetrics`` has it."""

    def hot_read(self, result: str) -> None: ...

    def hot_tier_error(self, op: str, reason: str) -> None: ...


class ForeignValue(Exception):
    """A value under our keys that this saver did not write."""


def _pack(header: list[Any], data: bytes | None) -> bytes:
    return MAGIC + json.dumps(header, separators=(",", ":")).encode() + b"\n" + (data or b"")


def _unpack(raw: bytes) -> tuple[list[Any], bytes]:
    if not isinstance(raw, bytes) or not raw.startswith(MAGIC):
        raise ForeignValue
    head, _, data = raw[len(MAGIC):].partition(b"\n")
    try:
        return json.loads(head), data
    except ValueError:
        raise ForeignValue from None


@dataclass
class HotSettings:
    """The hot tier's knobs (seconds). ``guard`` defaults to ``timeout``, ``warmup`` to
    half a second (a write in flight at a new epoch commits within it; one slower than that
    finds its lease gone and drops its thread), ``heartbeat`` to a third of ``guard``."""

    hot_keep: int = 10
    hot_ttl: float = 3600.0
    timeout: float = 0.5
    lease: float = 2.0
    retry_after: float = 1.0
    guard: float | None = None
    warmup: float | None = None
    heartbeat: float | None = None
    prefix: str = "ckpt:hot"
    reuse_decoded: bool = True  # keep the last decoded checkpoint per thread (see _fresh)

    def __post_init__(self) -> None:
        if not isinstance(self.hot_keep, int) or self.hot_keep < 1:
            raise CheckpointError(f"hot_keep={self.hot_keep!r}: keep at least 1 checkpoint per "
                                  "thread in Redis (10 serves a resume and a short history).")
        for name in ("hot_ttl", "timeout", "lease", "retry_after"):
            if not getattr(self, name) > 0:
                raise CheckpointError(f"{name}={getattr(self, name)!r}: give a number of "
                                      "seconds above 0.")
        self.guard = self.guard or self.timeout
        self.warmup = min(0.5, self.lease) if self.warmup is None else self.warmup
        self.heartbeat = self.heartbeat or self.guard / 3

    def ms(self, name: str) -> int:
        return max(1, int(getattr(self, name) * 1000))


@dataclass
class HotStats:
    """What the hot tier did in this process (the metrics carry the same across processes)."""

    hits: int = 0
    misses: int = 0
    bypassed: int = 0
    fills: int = 0
    errors: int = 0
    foreign: int = 0
    lost_leases: int = 0
    by_reason: dict[str, int] = field(default_factory=dict)


class _Bypass(Exception):
    """Redis is not used for this call (down, slow, or recently failed)."""


DIRTY_LIMIT = 10_000  # threads remembered for dropping; past it, a new epoch drops them all
DECODED_LIMIT = 4096  # threads whose latest decoded checkpoint a saver keeps in this process


def _fresh(tup: CheckpointTuple) -> CheckpointTuple:
    """A copy the caller may change: LangGraph updates the checkpoint's dicts in place, and a
    channel may extend the list it was given (``Topic``), so every container is new; the
    objects inside (messages) are shared, as channels replace them rather than edit them."""
    ckpt: Any = {**tup.checkpoint}
    ckpt["channel_values"] = {k: v.copy() if isinstance(v, list | dict | set) else v
                              for k, v in ckpt["channel_values"].items()}
    ckpt["channel_versions"] = dict(ckpt["channel_versions"])
    ckpt["versions_seen"] = {k: dict(v) for k, v in ckpt["versions_seen"].items()}
    if "pending_sends" in ckpt:
        ckpt["pending_sends"] = list(ckpt["pending_sends"])
    return CheckpointTuple({"configurable": dict(tup.config["configurable"])}, ckpt,
                           dict(tup.metadata),
                           {"configurable": dict(tup.parent_config["configurable"])}
                           if tup.parent_config else None, list(tup.pending_writes or []))


def _ns(config: RunnableConfig) -> tuple[str, str, str | None]:
    conf = config["configurable"]
    return str(conf["thread_id"]), conf.get("checkpoint_ns", "") or "", get_checkpoint_id(config)


class HybridSaver(ThreadedAsync):
    """Redis hot tier over the official ``PostgresSaver`` (see the module docstring).

    ``redis`` is a ``redis.Redis`` client (socket timeouts are set from ``timeout`` when this
    saver makes it); ``pg`` a set-up ``PostgresSaver``. Async methods run the sync ones in a
    worker thread; ``AsyncHybridSaver`` is the same saver under the async name.
    """

    def __init__(self, redis: Any, pg: PostgresSaver, *, metrics: HotTierMetrics | None = None,
                 **settings: Any) -> None:
        super().__init__(serde=pg.serde)
        self.pg, self.redis, self.metrics = pg, redis, metrics
        self.settings = HotSettings(**settings)
        self.stats = HotStats()
        self.epoch = ""
        self._decoded: dict[tuple[str, str], tuple[bytes, CheckpointTuple]] = {}
        self._pending: list[tuple[Any, ...]] = []  # posted scripts whose answers are unread
        self._lock = threading.Lock()
        # Threads written to PostgreSQL without Redis: dropped from Redis when it answers again
        # (past DIRTY_LIMIT of them, a new epoch instead).
        self._dirty: set[str] = set()
        self._dirty_all = False
        self._closed_until = 0.0  # Redis not asked before this monotonic time
        self._warned_at = 0.0
        self._scripts = {name: redis.register_script(getattr(lua, name))
                         for name in ("HEARTBEAT", "INVALIDATE", "BEGIN", "DROP", "PUBLISH_PUT",
                                      "PUBLISH_WRITES", "READ", "FILL")}
        self._stop = threading.Event()
        self._beat = threading.Thread(target=self._heartbeat, name="hot-tier-heartbeat",
                                      daemon=True)
        self._beat.start()

    # --- construction ----------------------------------------------------------------------

    @classmethod
    @contextmanager
    def from_conn_strings(cls, redis_url: str, postgres_url: str, *, setup: bool = True,
                          metrics: HotTierMetrics | None = None,
                          **settings: Any) -> Iterator[HybridSaver]:
        """A saver on its own PostgreSQL connection and Redis client, closed on exit.

        A Redis that does not answer at start is said in one warning; the saver then runs on
        PostgreSQL alone and asks Redis again every ``retry_after`` seconds.
        """
        from shared.infra.redis import check_redis_url, redis_client
        from shared.infra.urls import mask_url
        from shared.savers.postgres import open_postgres_saver

        check_redis_url(redis_url)
        hot = HotSettings(**settings)  # refuse bad settings before connecting anywhere
        client = redis_client(redis_url, timeout=hot.timeout, retry=None)
        try:
            client.ping()
        except Exception as exc:
            log.warning("Redis at %s is not reachable (%s): the checkpoint saver starts on "
                        "PostgreSQL alone and asks Redis again every %g s.", mask_url(redis_url),
                        type(exc).__name__, hot.retry_after)
        with open_postgres_saver(postgres_url, setup=setup) as pg:
            saver = cls(client, pg, metrics=metrics, **settings)
            try:
                yield saver
            finally:
                saver.close()
                client.close()

    def close(self) -> None:
        """Read what is pending, stop the heartbeat (the Redis client and PostgreSQL connection
        are the caller's)."""
        self._drain()
        self._stop.set()
        if self._beat.is_alive() and self._beat is not threading.current_thread():
            self._beat.join(timeout=2)

    def get_next_version(self, current: str | None, channel: None) -> str:
        return self.pg.get_next_version(current, channel)

    # --- talking to Redis --------------------------------------------------------------------

    def _keys(self, thread: str, ns: str | None, epoch: str) -> list[str]:
        base = f"{self.settings.prefix}:{epoch}:{quote(thread, safe='')}"
        keys = [f"{base}:t", f"{base}:l"]
        if ns is not None:
            keys += [f"{base}|{quote(ns, safe='')}:h", f"{base}|{quote(ns, safe='')}:z"]
        return keys

    def _run(self, op: str, name: str, thread: str | None, ns: str | None,
             *args: Any) -> list[Any]:
        """One script, with the epoch protocol; raises ``_Bypass`` when Redis is not used."""
        if self._pending:
            self._drain()
        if time.monotonic() < self._closed_until:
            raise _Bypass
        s = self.settings
        for _ in range(3):  # a new epoch is learnt from the answer, then asked again
            try:
                if (self._dirty or self._dirty_all) and name != "INVALIDATE":
                    self._clean()  # may learn a new epoch: the key names come after it
                epoch = self.epoch  # one value for the names and the check (threads share it)
                keys = [f"{s.prefix}:epoch", f"{s.prefix}:seen"]
                if thread is not None:
                    keys += self._keys(thread, ns, epoch)
                out = self._eval(name, keys, [epoch, int(time.time() * 1000), s.ms("guard"),
                                              s.ms("warmup"), *args])
            except _Bypass:
                raise
            except Exception as exc:
                self._failed(op, exc)
                raise _Bypass from None
            if out and out[0] == b"EPOCH":
                self.epoch = out[1].decode()
                continue
            return out
        raise _Bypass  # the epoch kept changing under us: not worth waiting for

    def _eval(self, name: str, keys: list[str], args: list[Any]) -> Any:
        """EVALSHA straight on a pooled connection: a hot read is one round trip, and the
        client library's command wrappers were a fifth of it."""
        from redis.exceptions import NoScriptError

        script, pool = self._scripts[name], self.redis.connection_pool
        conn = pool.get_connection()  # a failure to connect is _run's to report
        try:
            conn.send_command("EVALSHA", script.sha, len(keys), *keys, *args)
            try:
                return conn.read_response()
            except NoScriptError:  # Redis restarted: its script cache is empty
                conn.send_command("SCRIPT", "LOAD", script.script)
                conn.read_response()
                conn.send_command("EVALSHA", script.sha, len(keys), *keys, *args)
                return conn.read_response()
        except Exception:
            conn.disconnect()  # a half-read answer must not reach the next caller
            raise
        finally:
            pool.release(conn)

    def _clean(self) -> None:
        """Drop from Redis what it holds for threads we wrote without it (or everything)."""
        s = self.settings
        head = [f"{s.prefix}:epoch", f"{s.prefix}:seen"]
        if self._dirty_all:
            out = self._scripts["HEARTBEAT"](keys=head, args=[
                self.epoch, int(time.time() * 1000), s.ms("guard"), s.ms("warmup"), "bump"])
            self.epoch, self._dirty_all = out[1].decode(), False
            self._dirty.clear()
            return
        threads = list(self._dirty)
        for _ in range(3):  # a new epoch may already hold them again (filled after it began)
            epoch = self.epoch
            out = self._scripts["INVALIDATE"](
                keys=head + [self._keys(t, None, epoch)[0] for t in threads],
                args=[epoch, int(time.time() * 1000), s.ms("guard"), s.ms("warmup")])
            if out[0] != b"EPOCH":
                self._dirty.difference_update(threads)
                return
            self.epoch = out[1].decode()
        raise _Bypass  # the epoch kept changing: try again on the next call

    def _mark_dirty(self, thread: str) -> None:
        if len(self._dirty) >= DIRTY_LIMIT:
            self._dirty_all = True
        else:
            self._dirty.add(thread)

    def _failed(self, op: str, exc: BaseException) -> None:
        from redis.exceptions import ResponseError

        text = str(exc)
        if isinstance(exc, ResponseError) and "WRONGTYPE" in text:
            reason = "foreign"  # a key of ours holds something else: not a Redis outage
        else:
            reason = "timeout" if "imeout" in type(exc).__name__ + text else "connection"
            self._closed_until = time.monotonic() + self.settings.retry_after
        self._count_error(op, reason, text)

    def _count_error(self, op: str, reason: str, text: str) -> None:
        self.stats.errors += 1
        self.stats.by_reason[reason] = self.stats.by_reason.get(reason, 0) + 1
        if self.metrics is not None:
            self.metrics.hot_tier_error(op, reason)
        if time.monotonic() - self._warned_at > 5:  # once a burst, not once a call
            self._warned_at = time.monotonic()
            what = ("holds a value this saver did not write: refused, not decoded"
                    if reason == "foreign" else f"failed ({reason}: {text[:120]})")
            log.warning("Redis hot tier %s during %s: served from PostgreSQL instead.", what, op)

    def _heartbeat(self) -> None:
        assert self.settings.heartbeat is not None
        while not self._stop.wait(self.settings.heartbeat):
            if time.monotonic() < self._closed_until:
                continue
            with contextlib.suppress(_Bypass):  # counted in _run; PostgreSQL carries on
                self._run("heartbeat", "HEARTBEAT", None, None, "")

    def _begin(self, op: str, thread: str, token: str | None = None) -> str | None:
        """Take a write lease on the thread; None when Redis is not used (marked dirty)."""
        token = token or uuid.uuid4().hex
        try:
            self._run(op, "BEGIN", thread, None, token, self.settings.ms("lease"),
                      self.settings.ms("hot_ttl"))
            return token
        except _Bypass:
            self._mark_dirty(thread)
            return None

    def _send_begin(self, thread: str, token: str) -> Any:
        """Send BEGIN without waiting for its answer (``_await_begin`` reads it); None when
        Redis is not used or the send failed (``_await_begin`` then takes the slow path)."""
        if self._pending:
            self._drain()  # answered by now, mostly: reading them costs microseconds
        if time.monotonic() < self._closed_until or self._dirty or self._dirty_all \
                or not self.epoch:
            return None
        s = self.settings
        return self._send(thread, None, "BEGIN", token, s.ms("lease"), s.ms("hot_ttl"))

    def _send(self, thread: str, ns: str | None, name: str, *args: Any) -> Any:
        """EVALSHA sent on a connection taken from the pool, its answer unread; None on a
        failure (the caller then takes the slow path, which reports it)."""
        s, pool, epoch = self.settings, self.redis.connection_pool, self.epoch
        keys = [f"{s.prefix}:epoch", f"{s.prefix}:seen", *self._keys(thread, ns, epoch)]
        try:
            conn = pool.get_connection()  # it connects: a Redis that is down raises here
        except Exception:
            return None
        try:
            conn.send_command("EVALSHA", self._scripts[name].sha, len(keys), *keys, epoch,
                              int(time.time() * 1000), s.ms("guard"), s.ms("warmup"), *args)
        except Exception:
            conn.disconnect()
            pool.release(conn)
            return None
        return conn

    def _post(self, op: str, thread: str, ns: str, name: str, *args: Any) -> None:
        """Send a script whose answer ``_drain`` reads later (or run it now if sending fails)."""
        conn = self._send(thread, ns, name, *args)
        if conn is None:
            self._finish(op, name, thread, ns, *args)
            return
        with self._lock:
            self._pending.append((conn, op, thread, ns, name, args))

    def _drain(self) -> None:
        """Read the answers of posted scripts; one that failed or met a new epoch is run again."""
        with self._lock:
            pending, self._pending = self._pending, []
        pool = self.redis.connection_pool
        for conn, op, thread, ns, name, args in pending:
            try:
                out = conn.read_response()
                if out and out[0] == b"LOST":
                    self.stats.lost_leases += 1
                retry = bool(out) and out[0] == b"EPOCH"
            except Exception:
                conn.disconnect()
                retry = True
            finally:
                pool.release(conn)
            if retry:
                self._finish(op, name, thread, ns, *args)

    def _await_begin(self, conn: Any, thread: str, token: str, op: str = "put") -> bool:
        """Whether the lease is held (the answer to ``_send_begin``, or BEGIN sent again)."""
        if conn is not None:
            pool = self.redis.connection_pool
            try:
                out = conn.read_response()
                if out and out[0] == b"OK":
                    return True
            except Exception:
                conn.disconnect()
            finally:
                pool.release(conn)
        return self._begin(op, thread, token) is not None

    def _finish(self, op: str, name: str, thread: str, ns: str | None, token: str | None,
                *args: Any) -> None:
        if token is None:  # no lease was taken: Redis will drop the thread when it answers
            return
        try:
            out = self._run(op, name, thread, ns, token, *args)
        except _Bypass:
            self._mark_dirty(thread)
            return
        if out[0] == b"LOST":
            self.stats.lost_leases += 1

    # --- what goes into Redis ----------------------------------------------------------------

    def _hot_put(self, config: RunnableConfig, checkpoint: Checkpoint,
                 metadata: CheckpointMetadata, new_versions: ChannelVersions
                 ) -> tuple[dict[str, Any], dict[str, tuple[str, bytes | None]], list[str]]:
        """The checkpoint row PostgresSaver writes, its new blobs, and every blob it needs."""
        from langgraph.checkpoint.serde.types import _DeltaSnapshot

        inline = {**checkpoint, "channel_values": dict(checkpoint["channel_values"])}
        blob_values = {}
        for k, v in checkpoint["channel_values"].items():
            if isinstance(v, _DeltaSnapshot):
                blob_values[k] = inline["channel_values"].pop(k)
                inline["channel_values"][k] = True
            elif not (v is None or isinstance(v, str | int | float | bool)):
                blob_values[k] = inline["channel_values"].pop(k)
        new = {k: self.serde.dumps_typed(blob_values[k])
               for k in new_versions if k in blob_values}
        needed = [f"b:{k}\0{checkpoint['channel_versions'][k]}" for k in blob_values
                  if k in checkpoint["channel_versions"]]
        row = {"checkpoint": inline,
               "metadata": get_serializable_checkpoint_metadata(config, metadata)}
        return row, new, needed

    @staticmethod
    def _blob_field(channel: str, version: Any) -> str:
        return f"b:{channel}\0{version}"

    @staticmethod
    def _write_field(cid: str, task_id: str, idx: int) -> str:
        return f"w:{cid}\0{task_id}\0{idx}"

    @staticmethod
    def _checkpoint_value(row: dict[str, Any], parent: str | None,
                          texts: tuple[str, str] | None = None) -> bytes:
        c, m = texts or (json.dumps(row["checkpoint"]), json.dumps(row["metadata"]))
        return _pack(["c", parent], f'{{"checkpoint":{c},"metadata":{m}}}'.encode())

    def _row_fields(self, row: dict[str, Any]) -> list[Any]:
        """HSET pairs caching one PostgreSQL row (SELECT_SQL's shape)."""
        cid = row["checkpoint_id"]
        versions = row["checkpoint"].get("channel_versions", {})
        pairs: list[Any] = ["c:" + cid, self._checkpoint_value(row, row["parent_checkpoint_id"])]
        blobs = []
        for channel, type_, blob in row["channel_values"] or []:
            ch = channel.decode()
            f = self._blob_field(ch, versions[ch])
            blobs.append(f)
            pairs += [f, _pack(["b", ch, type_.decode()], blob)]
        writes = []
        for task, channel, type_, blob, path, idx in row["pending_writes"] or []:
            f = self._write_field(cid, task.decode(), int(idx))
            writes.append(f)
            pairs += [f, _pack(["w", task.decode(), channel.decode(), type_.decode(),
                                path.decode(), int(idx)], blob)]
        pairs += ["v:" + cid, "".join(f + "\n" for f in blobs),
                  "wl:" + cid, "".join(f + "\n" for f in writes)]
        return pairs

    def _decode(self, thread: str, ns: str, out: list[Any]
                ) -> list[tuple[bytes, CheckpointTuple]]:
        """(stamp, tuple) from a READ hit: the same objects ``PostgresSaver`` would return."""
        tuples, i = [], 2
        for _ in range(int(out[1])):
            cid, stamp, (head, data) = out[i].decode(), out[i + 1], _unpack(out[i + 2])
            body = json.loads(data)
            nb = int(out[i + 3])
            values = dict(body["checkpoint"].get("channel_values") or {})
            for raw in out[i + 4:i + 4 + nb]:
                (_, channel, type_), blob = _unpack(raw)
                if type_ != "empty":
                    values[channel] = self.serde.loads_typed((type_, blob))
            i += 4 + nb
            nw = int(out[i])
            writes = sorted((_unpack(raw) for raw in out[i + 1:i + 1 + nw]),
                            key=lambda w: writes_sort_key(w[0][4], w[0][1], w[0][5]))
            i += 1 + nw
            conf = {"thread_id": thread, "checkpoint_ns": ns}
            tuples.append((stamp, CheckpointTuple(
                {"configurable": {**conf, "checkpoint_id": cid}},
                {**body["checkpoint"], "channel_values": values},
                body["metadata"],
                {"configurable": {**conf, "checkpoint_id": head[1]}} if head[1] else None,
                [(h[1], h[2], self.serde.loads_typed((h[3], d))) for h, d in writes])))
        return tuples

    # --- reads -------------------------------------------------------------------------------

    def _hot_read(self, thread: str, ns: str, mode: str, arg: Any = "", before: str = ""
                  ) -> tuple[str, Any]:
        """("hit", tuples) | ("none", None) | ("miss", gen) | ("bypass", None)."""
        known = self._decoded.get((thread, ns)) if mode != "page" else None
        if known is not None and mode == "id" and known[1].config["configurable"][
                "checkpoint_id"] != arg:
            known = None
        try:
            out = self._run("get_tuple", "READ", thread, ns, mode, arg, before,
                            self.settings.ms("hot_ttl"), known[0] if known else "")
            if out[0] == b"SAME" and known is not None:
                result: tuple[str, Any] = ("hit", [_fresh(known[1])])
            elif out[0] == b"HIT":
                decoded = self._decode(thread, ns, out)
                if mode != "page" and self.settings.reuse_decoded:
                    self._remember(thread, ns, *decoded[0])
                result = ("hit", [_fresh(t) for _, t in decoded])
            elif out[0] == b"NONE":
                result = ("none", None)
            else:
                result = ("miss", out[1])
        except _Bypass:
            result = ("bypass", None)
        except ForeignValue:
            self.stats.foreign += 1
            self._count_error("get_tuple", "foreign", "")
            result = ("bypass", None)
        kind = result[0]
        if kind in ("hit", "none"):
            self.stats.hits += 1
        elif kind == "miss":
            self.stats.misses += 1
        else:
            self.stats.bypassed += 1
        if self.metrics is not None:
            self.metrics.hot_read("hit" if kind == "none" else kind)
        return result

    def _remember(self, thread: str, ns: str, stamp: bytes, tup: CheckpointTuple) -> None:
        if len(self._decoded) >= DECODED_LIMIT:
            self._decoded.pop(next(iter(self._decoded)), None)  # the oldest entry
        self._decoded[(thread, ns)] = (stamp, tup)

    def _pg_rows(self, thread: str, ns: str, cid: str | None, limit: int
                 ) -> list[dict[str, Any]] | None:
        """Rows as ``PostgresSaver`` selects them; None for an old format it migrates on read."""
        if cid:
            where, args = ("WHERE thread_id = %s AND checkpoint_ns = %s AND checkpoint_id = %s",
                           (thread, ns, cid))
        else:
            where, args = ("WHERE thread_id = %s AND checkpoint_ns = %s "
                           "ORDER BY checkpoint_id DESC LIMIT %s", (thread, ns, limit))
        with self.pg._cursor() as cur:
            cur.execute(self.pg.SELECT_SQL + where, args)
            rows = cur.fetchall()
        if any(r["checkpoint"].get("v", 4) < 4 and r["parent_checkpoint_id"] for r in rows):
            return None
        return rows

    def _fill(self, thread: str, ns: str, gen: Any, rows: list[dict[str, Any]],
              complete: bool) -> None:
        pairs: list[Any] = []
        for row in rows:
            pairs += self._row_fields(row)
        floor = "" if complete else rows[-1]["checkpoint_id"]
        try:
            out = self._run("fill", "FILL", thread, ns, gen, floor, self.settings.ms("hot_ttl"),
                            len(pairs) // 2, *pairs, *(r["checkpoint_id"] for r in rows))
            if out[0] == b"OK":
                self.stats.fills += 1
        except _Bypass:
            pass

    def get_tuple(self, config: RunnableConfig) -> CheckpointTuple | None:
        thread, ns, cid = _ns(config)
        kind, got = self._hot_read(thread, ns, "id" if cid else "latest", cid or "")
        if kind == "hit":
            return got[0]
        if kind == "none":
            return None
        rows = self._pg_rows(thread, ns, cid, 1)
        if rows is None:
            return self.pg.get_tuple(config)
        if kind == "miss" and not cid:
            self._fill(thread, ns, got, rows, complete=not rows)
        return self.pg._load_checkpoint_tuple(rows[0]) if rows else None

    def list(self, config: RunnableConfig | None, *, filter: dict[str, Any] | None = None,
             before: RunnableConfig | None = None,
             limit: int | None = None) -> Iterator[CheckpointTuple]:
        conf = (config or {}).get("configurable", {})
        page = (config is not None and "thread_id" in conf and "checkpoint_ns" in conf
                and not conf.get("checkpoint_id") and not filter and limit is not None
                and 1 <= limit <= self.settings.hot_keep)
        if page:
            thread, ns = str(conf["thread_id"]), conf["checkpoint_ns"] or ""
            below = get_checkpoint_id(before) if before else ""
            kind, got = self._hot_read(thread, ns, "page", limit, below or "")
            if kind == "hit":
                yield from got
                return
            if kind == "miss" and not below:
                rows = self._pg_rows(thread, ns, None, self.settings.hot_keep)
                if rows is not None:
                    self._fill(thread, ns, got, rows,
                               complete=len(rows) < self.settings.hot_keep)
                    for row in rows[:limit]:
                        yield self.pg._load_checkpoint_tuple(row)
                    return
        yield from self.pg.list(config, filter=filter, before=before, limit=limit)

    def get_delta_channel_history(self, *, config: RunnableConfig, channels: Sequence[str]
                                  ) -> Mapping[str, DeltaChannelHistory]:
        return self.pg.get_delta_channel_history(config=config, channels=channels)

    # --- writes ------------------------------------------------------------------------------

    def put(self, config: RunnableConfig, checkpoint: Checkpoint, metadata: CheckpointMetadata,
            new_versions: ChannelVersions) -> RunnableConfig:
        thread, ns, parent = _ns(config)
        row, new, needed = self._hot_put(config, checkpoint, metadata, new_versions)
        # Dumped once, for PostgreSQL's JSONB columns and for Redis alike.
        texts = (json.dumps(row["checkpoint"]), json.dumps(row["metadata"]))
        token = uuid.uuid4().hex
        sent = self._send_begin(thread, token)  # its round trip overlaps the statements
        try:
            with self.pg._cursor(pipeline=True) as cur:
                if new:
                    cur.executemany(self.pg.UPSERT_CHECKPOINT_BLOBS_SQL, [
                        (thread, ns, k, str(new_versions[k]), t, b) for k, (t, b) in new.items()])
                cur.execute(self.pg.UPSERT_CHECKPOINTS_SQL, (
                    thread, ns, checkpoint["id"], parent,
                    Jsonb(row["checkpoint"], dumps=lambda _: texts[0]),
                    Jsonb(row["metadata"], dumps=lambda _: texts[1])))
                cur.connection.pgconn.flush()  # the server runs them while Redis answers
                # The pipeline commits when this block ends: the lease is held before that.
                leased = self._await_begin(sent, thread, token)
        except BaseException:
            self._finish("put", "DROP", thread, None, token)
            raise
        blobs: list[Any] = []
        for k, (t, b) in new.items():
            blobs += [self._blob_field(k, new_versions[k]), _pack(["b", k, t], b)]
        if leased:  # the answer is read later: until Redis runs it, the lease sends readers
            # to PostgreSQL, so the caller need not wait for it
            self._post("put", thread, ns, "PUBLISH_PUT", token, checkpoint["id"],
                       self._checkpoint_value(row, parent, texts),
                       "".join(f + "\n" for f in needed), self.settings.hot_keep,
                       self.settings.ms("hot_ttl"), *blobs)
        return {"configurable": {"thread_id": thread, "checkpoint_ns": ns,
                                 "checkpoint_id": checkpoint["id"]}}

    def put_writes(self, config: RunnableConfig, writes: Sequence[tuple[str, Any]],
                   task_id: str, task_path: str = "") -> None:
        thread, ns, cid = _ns(config)
        upsert = all(w[0] in WRITES_IDX_MAP for w in writes)
        rows = self.pg._dump_writes(thread, ns, cid, task_id, task_path, writes)
        token = uuid.uuid4().hex
        sent = self._send_begin(thread, token)  # as in put: held before the commit
        try:
            with self.pg._cursor(pipeline=True) as cur:
                cur.executemany(self.pg.UPSERT_CHECKPOINT_WRITES_SQL if upsert
                                else self.pg.INSERT_CHECKPOINT_WRITES_SQL, rows)
                cur.connection.pgconn.flush()
                leased = self._await_begin(sent, thread, token, "put_writes")
        except BaseException:
            self._finish("put_writes", "DROP", thread, None, token)
            raise
        if leased:
            pairs: list[Any] = []
            for *_, task, path, idx, channel, type_, blob in rows:
                pairs += [f"{task}\0{idx}", _pack(["w", task, channel, type_, path, idx], blob)]
            self._post("put_writes", thread, ns, "PUBLISH_WRITES", token, cid,
                       "1" if upsert else "0", self.settings.ms("hot_ttl"), *pairs)

    # --- whole-thread operations: lease, PostgreSQL, drop the thread's hot sets ------------

    @contextmanager
    def _dropping(self, threads: Sequence[str]) -> Iterator[None]:
        tokens = {t: self._begin("delete", t) for t in dict.fromkeys(threads)}
        try:
            yield
        finally:
            for t, token in tokens.items():
                self._finish("delete", "DROP", t, None, token)

    def delete_thread(self, thread_id: str) -> None:
        with self._dropping([str(thread_id)]):
            self.pg.delete_thread(thread_id)

    def prune(self, thread_ids: Sequence[str], *, strategy: str = "keep_latest") -> None:
        if isinstance(thread_ids, str):
            raise TypeError("thread_ids must be a sequence of thread IDs, not a str")
        with self._dropping([str(t) for t in thread_ids]):
            self.pg.prune(thread_ids, strategy=strategy)

    def copy_thread(self, source_thread_id: str, target_thread_id: str) -> None:
        with self._dropping([str(target_thread_id)]):
            self._pg_transaction(COPY_THREAD_SQL, {"src": str(source_thread_id),
                                                   "dst": str(target_thread_id)})

    def delete_for_runs(self, run_ids: Sequence[str]) -> None:
        runs = [str(r) for r in run_ids]
        if not runs:
            return
        with self.pg._cursor() as cur:
            cur.execute(RUN_THREADS_SQL, (runs,))
            threads = [r["thread_id"] for r in cur.fetchall()]
        with self._dropping(threads), self.pg._cursor() as cur, \
                cur.connection.transaction():
            cur.execute(DELETE_FOR_RUNS_SQL, {"runs": runs})
            done = [r["thread_id"] for r in cur.fetchall()]
            cur.execute(DELETE_UNUSED_BLOBS_SQL, {"threads": done})
        late = sorted(set(done) - set(threads))  # the run wrote on while we deleted it
        if late:
            with self._dropping(late):
                pass

    def _pg_transaction(self, statements: Sequence[str], params: dict[str, Any]) -> None:
        with self.pg._cursor() as cur, cur.connection.transaction():
            for sql in statements:
                cur.execute(sql, params)

    # --- async: the sync methods in a worker thread (the rest: ThreadedAsync) -------------

    async def acopy_thread(self, source_thread_id: str, target_thread_id: str) -> None:
        await asyncio.to_thread(self.copy_thread, source_thread_id, target_thread_id)

    async def adelete_for_runs(self, run_ids: Sequence[str]) -> None:
        await asyncio.to_thread(self.delete_for_runs, run_ids)


# --- the whole hot tier, for an operator (``ckpt hot``) -------------------------------------


def hot_tier_status(client: Any, prefix: str = "ckpt:hot") -> dict[str, Any]:
    """The current epoch and its age, why epochs began (counts by reason), and what the
    current epoch holds: threads, hot sets, checkpoints, bytes (``MEMORY USAGE``)."""
    raw = client.get(f"{prefix}:epoch")
    epoch = raw.decode() if raw else None
    why = {k.decode(): int(v) for k, v in client.hgetall(f"{prefix}:epoch:why").items()}
    from shared.infra.redis import memory_usage

    keys = list(client.scan_iter(match=f"{prefix}:{epoch}:*", count=1000)) if epoch else []
    hot_sets = [k for k in keys if k.endswith(b":z")]
    threads = sum(k.endswith(b":t") for k in keys)
    checkpoints = sum(int(client.zcard(k)) for k in hot_sets)
    size = memory_usage(client, keys)
    age = (time.time() * 1000 - int(epoch.split("-")[0])) / 1000 if epoch else None
    return {"prefix": prefix, "epoch": epoch, "epoch_age_s": age, "epochs_begun": why,
            "threads": threads, "hot_sets": len(hot_sets), "checkpoints": checkpoints,
            "bytes": size}


def drop_hot_tier(client: Any, prefix: str = "ckpt:hot") -> str:
    """Begin a new epoch: nothing cached before is served again (it expires by TTL). Run it
    after restoring PostgreSQL, whose history may now be older than what Redis holds."""
    return client.register_script(lua.DROP_ALL)(keys=[f"{prefix}:epoch"]).decode()


# The official schema has no copy or delete-by-run: these run on its tables as they are.
COPY_THREAD_SQL = (
    """INSERT INTO checkpoints (thread_id, checkpoint_ns, checkpoint_id, parent_checkpoint_id,
                                type, checkpoint, metadata)
       SELECT %(dst)s, checkpoint_ns, checkpoint_id, parent_checkpoint_id, type, checkpoint,
              metadata
       FROM checkpoints WHERE thread_id = %(src)s
       ON CONFLICT (thread_id, checkpoint_ns, checkpoint_id) DO NOTHING""",
    """INSERT INTO checkpoint_blobs (thread_id, checkpoint_ns, channel, version, type, blob)
       SELECT %(dst)s, checkpoint_ns, channel, version, type, blob
       FROM checkpoint_blobs WHERE thread_id = %(src)s
       ON CONFLICT (thread_id, checkpoint_ns, channel, version) DO NOTHING""",
    """INSERT INTO checkpoint_writes (thread_id, checkpoint_ns, checkpoint_id, task_id,
                                      task_path, idx, channel, type, blob)
       SELECT %(dst)s, checkpoint_ns, checkpoint_id, task_id, task_path, idx, channel, type,
              blob
       FROM checkpoint_writes WHERE thread_id = %(src)s
       ON CONFLICT (thread_id, checkpoint_ns, checkpoint_id, task_id, idx) DO NOTHING""",
)

RUN_THREADS_SQL = ("SELECT DISTINCT thread_id FROM checkpoints "
                   "WHERE metadata->>'run_id' = ANY(%s)")

# One statement: the writes of the run's checkpoints, then the checkpoints; their threads back.
DELETE_FOR_RUNS_SQL = """
    WITH gone AS (
        DELETE FROM checkpoints WHERE metadata->>'run_id' = ANY(%(runs)s)
        RETURNING thread_id, checkpoint_ns, checkpoint_id),
    writes AS (
        DELETE FROM checkpoint_writes w USING gone
        WHERE w.thread_id = gone.thread_id AND w.checkpoint_ns = gone.checkpoint_ns
          AND w.checkpoint_id = gone.checkpoint_id)
    SELECT DISTINCT thread_id FROM gone"""

# Then the blobs that no remaining checkpoint of those threads points at.
DELETE_UNUSED_BLOBS_SQL = """
    DELETE FROM checkpoint_blobs b
    WHERE b.thread_id = ANY(%(threads)s) AND NOT EXISTS (
        SELECT 1 FROM checkpoints c
        WHERE c.thread_id = b.thread_id AND c.checkpoint_ns = b.checkpoint_ns
          AND c.checkpoint -> 'channel_versions' ->> b.channel = b.version)"""


class AsyncHybridSaver(HybridSaver):
    """``HybridSaver`` for ``graph.ainvoke``: the same saver; its async methods run the sync
    ones in worker threads (one Redis client and one PostgreSQL connection, both
    thread-safe), so sync and async callers share one hot tier and one lease protocol.

        async with AsyncHybridSaver.from_conn_strings(redis_url, postgres_url) as saver:
            await builder.compile(checkpointer=saver).ainvoke(inputs, config)
    """

    @classmethod
    @asynccontextmanager
    async def from_conn_strings(cls, redis_url: str, postgres_url: str,  # type: ignore[override]
                                **kwargs: Any) -> AsyncIterator[AsyncHybridSaver]:
        """``HybridSaver.from_conn_strings`` as an async context manager (connects in a worker
        thread, so the event loop never waits on a socket)."""
        opener = HybridSaver.from_conn_strings.__func__(cls, redis_url, postgres_url, **kwargs)
        saver = await asyncio.to_thread(opener.__enter__)
        try:
            yield saver
        finally:
            await asyncio.to_thread(opener.__exit__, None, None, None)


__all__ = ["MAGIC", "AsyncHybridSaver", "HotSettings", "HotStats", "HybridSaver",
           "drop_hot_tier", "hot_tier_status"]
