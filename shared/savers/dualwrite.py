"""A dual-write saver for a blue-green cutover: write to both, read from one.

    dual = DualWriteSaver(sqlite_saver, postgres_saver)                  # reads: SQLite
    dual = DualWriteSaver(sqlite_saver, postgres_saver, router=ShareRouter(0.10))
    graph = build_chat_graph(dual)

Writes (``put``, ``put_writes``, ``delete_thread``, ...) go to the **primary** (the old
store, the source of truth during the cutover) and then to the **secondary** (the new one).
Reads (``get_tuple``, ``list``) go to the primary, or, with a ``ShareRouter``, to the
secondary for the threads whose stable hash falls below the router's share. The hash is
SHA-256 of the thread id (never Python's salted ``hash``): every process and every restart
sends a thread to the same side, and the threads at 10 % are among those at 50 %, so
raising the share never moves a thread back.

When one side's write fails (decided here, never silent):

- the primary fails: the exception reaches the caller and the secondary is not called, so
  neither store holds anything the other lacks;
- the secondary fails after the primary succeeded: the thread is recorded as diverged
  (``divergences``, and an ERROR log line), its reads are pinned to the primary from then
  on, whatever the router says, and ``SecondaryWriteError`` reaches the caller (with
  ``on_secondary_error="record"`` the call succeeds and the record alone remains).
  ``repair()`` copies each diverged thread again from the primary (deleting it on the
  secondary first if a delete was what failed) and releases its reads.

Per-thread write gate: each write holds a lock for its thread(s) across both sides, and
``hold(thread_ids)`` takes the same locks, so a backfill or a verification of a thread sees
both stores at the same point even while live traffic writes to it. Locks are striped
(``STRIPES``, by the same hash): memory stays bounded however many threads there are. That
point may be mid-step: LangGraph saves a task's writes concurrently with their checkpoint,
often first, which is why ``shared.ops.cutover.backfill`` upserts and never deletes.

Counters for the reader of a cutover: ``reads`` (by side) and ``thread_reads`` (by thread
and side; one entry per thread read). Clones made by ``with_allowlist`` share them, and the
locks and divergence records, with the saver they came from.

Capabilities: the conformance suite detects capabilities by the methods a class overrides.
``DualWriteSaver(primary, secondary)`` is an instance of a subclass, built once per pair of
inner types, that defines exactly the capability methods **both** inner classes define
(sync and async counted apart): ``SqliteSaver`` + ``PostgresSaver`` give sync methods only,
``AsyncSqliteSaver`` + ``AsyncPostgresSaver`` both. ``repair()`` uses the sync API.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import threading
import time
from collections import Counter
from collections.abc import AsyncIterator, Iterable, Iterator, Mapping, Sequence
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal

from langchain_core.runnables import RunnableConfig
from langgraph.checkpoint.base import (
    BaseCheckpointSaver,
    ChannelVersions,
    Checkpoint,
    CheckpointMetadata,
    CheckpointTuple,
    DeltaChannelHistory,
)

from shared.errors import CheckpointError
from shared.savers.copy import copy_thread
from shared.savers.reading import thread_ids
from shared.savers.wrapper import CAPABILITY_METHODS, SharesBasics, overrides

logger = logging.getLogger(__name__)

STRIPES = 256  # write-gate locks; two threads may share one, which only costs a short wait
PRIMARY, SECONDARY = "primary", "secondary"


def thread_bucket(thread_id: str) -> float:
    """Where ``thread_id`` falls in [0, 1): the first 8 bytes of its SHA-256, stable forever."""
    digest = hashlib.sha256(str(thread_id).encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


@dataclass(frozen=True)
class ShareRouter:
    """Send reads of a thread to the secondary when its bucket is below ``share`` (0 to 1)."""

    share: float

    def __post_init__(self) -> None:
        if not 0.0 <= self.share <= 1.0:
            raise CheckpointError(f"Read share {self.share!r} is outside 0..1: give a fraction "
                                  "such as 0.1 for 10 % of threads.")

    def __call__(self, thread_id: str) -> bool:
        return thread_bucket(thread_id) < self.share


@dataclass(frozen=True)
class Divergence:
    """A write that reached the primary but not the secondary."""

    op: str
    thread_ids: tuple[str, ...]  # empty: the operation named no thread (delete_for_runs)
    error: str
    at: float  # time.time()


class SecondaryWriteError(CheckpointError):
    """The primary took a write the secondary refused; the thread is recorded for repair."""

    def __init__(self, record: Divergence) -> None:
        self.record = record
        where = ", ".join(record.thread_ids) or "threads unknown"
        super().__init__(
            f"{record.op} was written to the primary but failed on the secondary ({where}): "
            f"{record.error}. Reads of these threads stay on the primary; run "
            "DualWriteSaver.repair() once the secondary is healthy.")


@dataclass
class _Shared:
    """State shared by a saver and the clones LangGraph makes with ``with_allowlist``."""

    locks: list[threading.Lock] = field(
        default_factory=lambda: [threading.Lock() for _ in range(STRIPES)])
    guard: threading.Lock = field(default_factory=threading.Lock)
    reads: Counter[str] = field(default_factory=Counter)
    thread_reads: Counter[tuple[str, str]] = field(default_factory=Counter)
    divergences: list[Divergence] = field(default_factory=list)
    diverged: set[str] = field(default_factory=set)
    diverged_unknown: bool = False  # a failed write named no thread: every read on primary


class DualWriteSaver(SharesBasics):
    """Writes to ``primary`` then ``secondary``; reads from the primary or as routed."""

    _classes: ClassVar[dict[tuple[type, type, type], type]] = {}

    def __new__(cls, primary: BaseCheckpointSaver, secondary: BaseCheckpointSaver,
                *args: Any, **kwargs: Any) -> Any:
        for role, saver in ((PRIMARY, primary), (SECONDARY, secondary)):
            if not isinstance(saver, BaseCheckpointSaver):
                raise TypeError(f"DualWriteSaver's {role} must be a BaseCheckpointSaver, not "
                                f"{type(saver).__name__}: pass a saver such as SqliteSaver.")
        if "_for_inner" not in cls.__dict__:
            cls = _specialise(cls, type(primary), type(secondary))
        return object.__new__(cls)

    def __init__(self, primary: BaseCheckpointSaver, secondary: BaseCheckpointSaver, *,
                 router: ShareRouter | None = None,
                 on_secondary_error: Literal["raise", "record"] = "raise") -> None:
        # No super().__init__: the serde is the primary's (see the property below).
        if on_secondary_error not in ("raise", "record"):
            raise CheckpointError(f"on_secondary_error={on_secondary_error!r}: use 'raise' "
                                  "or 'record'.")
        self.primary, self.secondary = primary, secondary
        self.router = router
        self.on_secondary_error = on_secondary_error
        self._shared = _Shared()

    # --- what a reader of the cutover looks at -----------------------------------------

    @property
    def reads(self) -> Counter[str]:
        """Read calls served so far, by side ("primary", "secondary")."""
        with self._shared.guard:
            return Counter(self._shared.reads)

    @property
    def thread_reads(self) -> Counter[tuple[str, str]]:
        """Read calls by (thread_id, side): one entry per thread read, which side served it."""
        with self._shared.guard:
            return Counter(self._shared.thread_reads)

    @property
    def divergences(self) -> list[Divergence]:
        with self._shared.guard:
            return list(self._shared.divergences)

    @property
    def diverged_threads(self) -> set[str]:
        with self._shared.guard:
            return set(self._shared.diverged)

    def reads_from_secondary(self, thread_id: str | None) -> bool:
        """Whether a read of ``thread_id`` (None: across threads) goes to the secondary."""
        s = self._shared
        with s.guard:
            if self.router is None or s.diverged_unknown:
                return False
            if thread_id is None:  # a cross-thread list: only once every thread has moved
                return self.router.share >= 1.0 and not s.diverged
            return thread_id not in s.diverged and self.router(thread_id)

    # --- the write gate ------------------------------------------------------------------

    def _locks(self, thread_ids: Iterable[str]) -> list[threading.Lock]:
        # Sorted, distinct stripes: two writers needing two locks never wait on each other.
        stripes = sorted({int(thread_bucket(t) * STRIPES) for t in thread_ids})
        return [self._shared.locks[i] for i in stripes]

    @contextmanager
    def hold(self, thread_ids: Iterable[str]) -> Iterator[None]:
        """Hold back writes to these threads (a consistent view of both sides)."""
        locks = self._locks(thread_ids)
        for lock in locks:
            lock.acquire()
        try:
            yield
        finally:
            for lock in reversed(locks):
                lock.release()

    @asynccontextmanager
    async def ahold(self, thread_ids: Iterable[str]) -> AsyncIterator[None]:
        """``hold`` without blocking the event loop (polls; the lock is a thread lock)."""
        taken: list[threading.Lock] = []
        try:
            for lock in self._locks(thread_ids):
                while not lock.acquire(blocking=False):
                    await asyncio.sleep(0.0005)
                taken.append(lock)
            yield
        finally:
            for lock in reversed(taken):
                lock.release()

    def _record(self, op: str, thread_ids: Sequence[str], exc: BaseException) -> None:
        record = Divergence(op, tuple(thread_ids), f"{type(exc).__name__}: {exc}", time.time())
        with self._shared.guard:
            self._shared.divergences.append(record)
            self._shared.diverged.update(thread_ids)
            self._shared.diverged_unknown |= not thread_ids
        logger.error("dual-write divergence: %s", SecondaryWriteError(record))
        if self.on_secondary_error == "raise":
            raise SecondaryWriteError(record) from exc

    def _write(self, op: str, thread_ids: Sequence[str], *args: Any, **kwargs: Any) -> Any:
        with self.hold(thread_ids):
            result = getattr(self.primary, op)(*args, **kwargs)  # fails: nothing else tried
            try:
                getattr(self.secondary, op)(*args, **kwargs)
            except Exception as exc:
                self._record(op, thread_ids, exc)
        return result

    async def _awrite(self, op: str, thread_ids: Sequence[str], *args: Any,
                      **kwargs: Any) -> Any:
        async with self.ahold(thread_ids):
            result = await getattr(self.primary, op)(*args, **kwargs)
            try:
                await getattr(self.secondary, op)(*args, **kwargs)
            except Exception as exc:
                self._record(op, thread_ids, exc)
        return result

    def _reader(self, config: RunnableConfig | None) -> BaseCheckpointSaver:
        thread = (config or {}).get("configurable", {}).get("thread_id")
        thread = None if thread is None else str(thread)
        side = SECONDARY if self.reads_from_secondary(thread) else PRIMARY
        with self._shared.guard:
            self._shared.reads[side] += 1
            if thread is not None:
                self._shared.thread_reads[thread, side] += 1
        return self.secondary if side == SECONDARY else self.primary

    # --- repair --------------------------------------------------------------------------

    def repair(self) -> list[str]:
        """Copy every diverged thread from the primary to the secondary again (sync API).

        A failed delete (``delete_thread``, ``prune``, ``delete_for_runs``) may have left the
        secondary holding more than the primary: the thread is deleted there first. Other
        failures only left it holding less: the copy upserts into what it has, which keeps
        writes dual-written ahead of their checkpoint (see ``shared.ops.cutover.backfill``).
        """
        with self._shared.guard:
            records = list(self._shared.divergences)
            todo = set(self._shared.diverged)
            everything = self._shared.diverged_unknown
        if everything:
            todo |= set(thread_ids(self.primary)) | set(thread_ids(self.secondary))
        deleted = {t for r in records if "delete" in r.op or "prune" in r.op
                   for t in (r.thread_ids or todo)}
        for thread_id in sorted(todo):
            with self.hold([thread_id]):
                if thread_id in deleted:
                    self.secondary.delete_thread(thread_id)
                copy_thread(self.primary, self.secondary, thread_id)
                with self._shared.guard:
                    self._shared.diverged.discard(thread_id)
        if everything:
            with self._shared.guard:
                self._shared.diverged_unknown = False
        return sorted(todo)

    # --- shared with the primary -----------------------------------------------------------

    @property
    def _basis(self) -> BaseCheckpointSaver:
        return self.primary

    def get_delta_channel_history(self, *, config: RunnableConfig, channels: Sequence[str]
                                  ) -> Mapping[str, DeltaChannelHistory]:
        return self._reader(config).get_delta_channel_history(config=config,
                                                              channels=channels)

    async def aget_delta_channel_history(self, *, config: RunnableConfig,
                                         channels: Sequence[str]
                                         ) -> Mapping[str, DeltaChannelHistory]:
        return await self._reader(config).aget_delta_channel_history(config=config,
                                                                     channels=channels)

    def with_allowlist(self, extra_allowlist: Any) -> DualWriteSaver:
        primary = self.primary.with_allowlist(extra_allowlist)
        secondary = self.secondary.with_allowlist(extra_allowlist)
        if primary is self.primary and secondary is self.secondary:
            return self
        clone = object.__new__(type(self))
        clone.__dict__.update(self.__dict__, primary=primary, secondary=secondary)
        return clone  # same locks, counters and divergence records

    def __repr__(self) -> str:
        return f"DualWriteSaver({self.primary!r}, {self.secondary!r}, router={self.router})"


def _thread(config: RunnableConfig) -> list[str]:
    return [str(config["configurable"]["thread_id"])]


class _Methods(DualWriteSaver):
    """The pool of capability methods; ``_specialise`` copies those both inner types have."""

    def put(self, config: RunnableConfig, checkpoint: Checkpoint,
            metadata: CheckpointMetadata, new_versions: ChannelVersions) -> RunnableConfig:
        return self._write("put", _thread(config), config, checkpoint, metadata, new_versions)

    async def aput(self, config: RunnableConfig, checkpoint: Checkpoint,
                   metadata: CheckpointMetadata, new_versions: ChannelVersions
                   ) -> RunnableConfig:
        return await self._awrite("aput", _thread(config), config, checkpoint, metadata,
                                  new_versions)

    def put_writes(self, config: RunnableConfig, writes: Sequence[tuple[str, Any]],
                   task_id: str, task_path: str = "") -> None:
        self._write("put_writes", _thread(config), config, writes, task_id, task_path)

    async def aput_writes(self, config: RunnableConfig, writes: Sequence[tuple[str, Any]],
                          task_id: str, task_path: str = "") -> None:
        await self._awrite("aput_writes", _thread(config), config, writes, task_id, task_path)

    def get_tuple(self, config: RunnableConfig) -> CheckpointTuple | None:
        return self._reader(config).get_tuple(config)

    async def aget_tuple(self, config: RunnableConfig) -> CheckpointTuple | None:
        return await self._reader(config).aget_tuple(config)

    def list(self, config: RunnableConfig | None, *, filter: dict[str, Any] | None = None,
             before: RunnableConfig | None = None, limit: int | None = None
             ) -> Iterator[CheckpointTuple]:
        yield from self._reader(config).list(config, filter=filter, before=before,
                                             limit=limit)

    async def alist(self, config: RunnableConfig | None, *,
                    filter: dict[str, Any] | None = None,
                    before: RunnableConfig | None = None, limit: int | None = None
                    ) -> AsyncIterator[CheckpointTuple]:
        async for item in self._reader(config).alist(config, filter=filter, before=before,
                                                     limit=limit):
            yield item

    def delete_thread(self, thread_id: str) -> None:
        self._write("delete_thread", [str(thread_id)], thread_id)

    async def adelete_thread(self, thread_id: str) -> None:
        await self._awrite("adelete_thread", [str(thread_id)], thread_id)

    def delete_for_runs(self, run_ids: Sequence[str]) -> None:
        self._write("delete_for_runs", [], run_ids)

    async def adelete_for_runs(self, run_ids: Sequence[str]) -> None:
        await self._awrite("adelete_for_runs", [], run_ids)

    def copy_thread(self, source_thread_id: str, target_thread_id: str) -> None:
        self._write("copy_thread", [str(source_thread_id), str(target_thread_id)],
                    source_thread_id, target_thread_id)

    async def acopy_thread(self, source_thread_id: str, target_thread_id: str) -> None:
        await self._awrite("acopy_thread", [str(source_thread_id), str(target_thread_id)],
                           source_thread_id, target_thread_id)

    def prune(self, thread_ids: Sequence[str], *, strategy: str = "keep_latest") -> None:
        self._write("prune", [str(t) for t in thread_ids], thread_ids, strategy=strategy)

    async def aprune(self, thread_ids: Sequence[str], *, strategy: str = "keep_latest") -> None:
        await self._awrite("aprune", [str(t) for t in thread_ids], thread_ids,
                           strategy=strategy)


def _specialise(cls: type, primary: type, secondary: type) -> type:
    """The subclass of ``cls`` for this pair of inner types, built once and cached."""
    key = (cls, primary, secondary)
    spec = DualWriteSaver._classes.get(key)
    if spec is None:
        methods = {name: _Methods.__dict__[name] for name in CAPABILITY_METHODS
                   if overrides(primary, name) and overrides(secondary, name)}
        spec = type(f"{cls.__name__}[{primary.__name__}, {secondary.__name__}]", (cls,),
                    {**methods, "_for_inner": (primary, secondary),
                     "__module__": cls.__module__, "__doc__": cls.__doc__})
        DualWriteSaver._classes[key] = spec
    return spec
