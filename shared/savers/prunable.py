"""``PrunableSqliteSaver``: LangGraph's ``SqliteSaver`` with ``prune`` and an async API.

The official SQLite saver implements neither ``prune`` nor the async methods (they raise
``NotImplementedError``). This subclass adds:

- ``prune(thread_ids, strategy="keep_latest" | "delete")`` with the base-class meaning:
  ``"delete"`` removes every checkpoint and write of the threads; ``"keep_latest"`` keeps
  the most recent checkpoint of each (thread, namespace) with its pending writes. It is
  DeltaChannel-aware by *keeping the needed ancestors* (PostgresSaver refuses instead): a
  DeltaChannel value lives in the ``writes`` of the ancestors back to the nearest
  ``_DeltaSnapshot``, so those ancestors stay, reported as "DeltaChannel ancestor of a kept
  checkpoint". ``prune_report`` returns what was kept and why. Parent links into deleted
  checkpoints become NULL, as in PostgresSaver; writes of deleted checkpoints go, and so do
  the threads' orphaned writes (no checkpoint row, id older than an hour). No VACUUM here.
- ``aget_tuple``, ``alist``, ``aput``, ``aput_writes``, ``adelete_thread``, ``aprune`` and
  ``aget_delta_channel_history`` run the sync methods in a worker thread. The sync saver
  serialises every call through its lock, and its connection is opened with
  ``check_same_thread=False``, so this is safe; it does not make SQLite concurrent.

It passes ``langgraph-checkpoint-conformance`` for put, put_writes, get_tuple, list,
delete_thread and prune (``tests/test_m2_pruning.py``).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from langchain_core.runnables import RunnableConfig
from langgraph.checkpoint.base import (
    ChannelVersions,
    Checkpoint,
    CheckpointMetadata,
    CheckpointTuple,
    DeltaChannelHistory,
)
from langgraph.checkpoint.serde.base import SerializerProtocol
from langgraph.checkpoint.sqlite import SqliteSaver

from shared.savers.retention import RetentionPolicy
from shared.savers.retention_apply import PruneResult, prune_now
from shared.savers.rows import in_list
from shared.savers.sqlite import open_sqlite_saver

PRUNE_STRATEGIES = ("keep_latest", "delete")


class PrunableSqliteSaver(SqliteSaver):
    """A ``SqliteSaver`` with ``prune``/``aprune`` and async methods run in a worker thread."""

    def prune(self, thread_ids: Sequence[str], *, strategy: str = "keep_latest") -> None:
        """Prune the threads: ``"keep_latest"`` keeps each namespace's newest checkpoint
        (plus the DeltaChannel ancestors it needs), ``"delete"`` removes everything.

        One transaction for all threads. Raises TypeError for a bare string, ValueError for
        an unknown strategy. No VACUUM here: ``ckpt prune`` (``shared.ops.prune``) shrinks the
        file.
        """
        self.prune_report(thread_ids, strategy=strategy)

    def prune_report(self, thread_ids: Sequence[str], *,
                     strategy: str = "keep_latest") -> PruneResult | None:
        """``prune`` that returns what it did (None when there was nothing to ask)."""
        if isinstance(thread_ids, str):
            raise TypeError("thread_ids must be a sequence of thread IDs, not a str")
        if strategy not in PRUNE_STRATEGIES:
            raise ValueError(f"Unknown prune strategy: {strategy!r}; use one of "
                             f"{', '.join(PRUNE_STRATEGIES)}")
        threads = [str(t) for t in thread_ids]
        if not threads:
            return None
        if strategy == "delete":
            self._delete_threads(threads)
            return None
        return prune_now(self, RetentionPolicy(keep_last=1), threads, vacuum=False)

    def _delete_threads(self, threads: list[str]) -> None:
        with self.cursor(transaction=False) as cur:  # holds the lock; we commit ourselves
            cur.execute("BEGIN IMMEDIATE")
            try:
                for table in ("writes", "checkpoints"):
                    # Table names are constants; each thread id is its own parameter (a
                    # JSON list would stop at a NUL character).
                    cur.execute(f"DELETE FROM {table} WHERE thread_id IN "  # noqa: S608
                                f"{in_list(threads)}", threads)
                self.conn.commit()
            except BaseException:
                self.conn.rollback()
                raise

    # --- async API: the sync methods in a worker thread ------------------------------------

    async def aget_tuple(self, config: RunnableConfig) -> CheckpointTuple | None:
        return await asyncio.to_thread(self.get_tuple, config)

    async def alist(self, config: RunnableConfig | None, *, filter: dict[str, Any] | None = None,
                    before: RunnableConfig | None = None,
                    limit: int | None = None) -> AsyncIterator[CheckpointTuple]:
        # Materialised in the worker: the sync generator holds the saver's lock while it is
        # suspended, and a caller writing between two items would then wait forever.
        items = await asyncio.to_thread(
            lambda: list(self.list(config, filter=filter, before=before, limit=limit)))
        for item in items:
            yield item

    async def aput(self, config: RunnableConfig, checkpoint: Checkpoint,
                   metadata: CheckpointMetadata, new_versions: ChannelVersions) -> RunnableConfig:
        return await asyncio.to_thread(self.put, config, checkpoint, metadata, new_versions)

    async def aput_writes(self, config: RunnableConfig, writes: Sequence[tuple[str, Any]],
                          task_id: str, task_path: str = "") -> None:
        await asyncio.to_thread(self.put_writes, config, writes, task_id, task_path)

    async def adelete_thread(self, thread_id: str) -> None:
        await asyncio.to_thread(self.delete_thread, thread_id)

    async def aprune(self, thread_ids: Sequence[str], *, strategy: str = "keep_latest") -> None:
        await asyncio.to_thread(self.prune, thread_ids, strategy=strategy)

    async def aget_delta_channel_history(
            self, *, config: RunnableConfig,
            channels: Sequence[str]) -> Mapping[str, DeltaChannelHistory]:
        return await asyncio.to_thread(
            lambda: self.get_delta_channel_history(config=config, channels=channels))


@contextmanager
def open_prunable_saver(path: str | Path, *,
                        serde: SerializerProtocol | None = None) -> Iterator[PrunableSqliteSaver]:
    """A set-up ``PrunableSqliteSaver`` on ``path`` (location checked first), closed on exit."""
    with open_sqlite_saver(path, serde=serde, saver_class=PrunableSqliteSaver) as saver:
        yield saver  # type: ignore[misc]
