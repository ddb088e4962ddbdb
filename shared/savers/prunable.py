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
  ``aget_delta_channel_history`` run the sync methods in a worker thread (``ThreadedAsync``,
  shared/savers/threaded.py). The sync saver serialises every call through its lock, and its
  connection is opened with ``check_same_thread=False``, so this is safe; it does not make
  SQLite concurrent.

It passes ``langgraph-checkpoint-conformance`` for put, put_writes, get_tuple, list,
delete_thread and prune (``tests/test_m2_pruning.py``).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

from langgraph.checkpoint.serde.base import SerializerProtocol
from langgraph.checkpoint.sqlite import SqliteSaver

from shared.savers.retention import RetentionPolicy
from shared.savers.retention_apply import PruneResult, prune_now
from shared.savers.rows import in_list
from shared.savers.sqlite import open_sqlite_saver
from shared.savers.threaded import ThreadedAsync

PRUNE_STRATEGIES = ("keep_latest", "delete")


class PrunableSqliteSaver(ThreadedAsync, SqliteSaver):
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


@contextmanager
def open_prunable_saver(path: str | Path, *,
                        serde: SerializerProtocol | None = None) -> Iterator[PrunableSqliteSaver]:
    """A set-up ``PrunableSqliteSaver`` on ``path`` (location checked first), closed on exit."""
    with open_sqlite_saver(path, serde=serde, saver_class=PrunableSqliteSaver) as saver:
        yield saver  # type: ignore[misc]
