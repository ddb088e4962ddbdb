"""A saver that retries transient database failures, with exponential backoff and full jitter.

    saver = RetryingSaver(PostgresSaver(pool), metrics=metrics)   # 3 retries, 0.1 s .. 5 s
    graph = builder.compile(checkpointer=saver)

A PostgreSQL restart, a failover or a full pool makes a checkpoint call fail although the
same call a moment later would succeed. ``RetryingSaver`` repeats such a call, sync or async,
up to ``retries`` more times, sleeping ``uniform(0, min(max_delay, first_delay * base **
attempt))`` before retry ``attempt`` (0, 1, 2, ...): with the defaults the caps are 0.1, 0.2,
0.4 s. Full jitter: many clients cut off by one restart do not come back in step. After the
last retry the last error is raised as it was, with a note saying how many attempts were made.

What is transient (``transient_reason``): a lost or refused connection (psycopg's
``OperationalError`` with no SQLSTATE: "server closed the connection unexpectedly",
"connection refused", "the connection is closed"; and SQLSTATE class 08), the server
shutting down or starting (``AdminShutdown``, ``CrashShutdown``, ``CannotConnectNow``), too
many connections, a serialization failure or a deadlock (the transaction was rolled back),
and a pool timeout (``psycopg_pool.PoolTimeout``, ``PoolExhausted`` included). Everything
else is permanent and raised at once, the call made once: bad SQL (``ProgrammingError``),
bad data (``DataError``), an ``OperationalError`` with another SQLSTATE (a statement timeout,
a row over a program limit, a full disk), the size guard's ``CheckpointTooLarge``, any
``CheckpointError`` refusal, ``ValueError``, ...

Retry over a pool, not over one connection: ``PostgresSaver(conn)`` on a single connection
that the server dropped fails the same way on every retry, while ``PostgresSaver(pool)``
takes a fresh connection. Give the pool ``check=ConnectionPool.check_connection`` so that a
connection the restart broke is found out when it is lent, not by a retry.

``list`` / ``alist`` are iterators: they are retried only while nothing was yielded yet (the
query failed before its first row reached the caller). A failure in the middle of a history
is raised: starting again would hand the caller rows it has already seen.

Why a replayed write writes nothing twice. The dangerous case is a lost acknowledgement:
the server committed, then the connection died before the client heard so, and the retry
sends the same rows again. ``PostgresSaver`` writes only upserts keyed on the row's identity
(``langgraph/checkpoint/postgres/base.py``):

    -- put: the channel values that changed, then the checkpoint row
    INSERT INTO checkpoint_blobs (thread_id, checkpoint_ns, channel, version, type, blob) ...
        ON CONFLICT (thread_id, checkpoint_ns, channel, version) DO NOTHING
    INSERT INTO checkpoints (thread_id, checkpoint_ns, checkpoint_id, parent_checkpoint_id,
                             checkpoint, metadata) ...
        ON CONFLICT (thread_id, checkpoint_ns, checkpoint_id)
        DO UPDATE SET checkpoint = EXCLUDED.checkpoint, metadata = EXCLUDED.metadata;
    -- put_writes: special channels (ERROR, INTERRUPT, ...) are upserted, the rest inserted once
    INSERT INTO checkpoint_writes (thread_id, checkpoint_ns, checkpoint_id, task_id, task_path,
                                   idx, channel, type, blob) ...
        ON CONFLICT (thread_id, checkpoint_ns, checkpoint_id, task_id, idx) DO UPDATE SET
        channel = EXCLUDED.channel, type = EXCLUDED.type, blob = EXCLUDED.blob;
    ... ON CONFLICT (thread_id, checkpoint_ns, checkpoint_id, task_id, idx) DO NOTHING

Every key is chosen by the client before the first attempt (the checkpoint id is in the
checkpoint, a blob's version in ``new_versions``, a write's ``idx`` is its position in the
call or its special channel's fixed index), so the replay carries the same keys: a blob or
a write already there is left alone (``DO NOTHING``), a checkpoint row already there is
overwritten with the same values (``DO UPDATE`` with ``EXCLUDED``). No row is added, none
changes. A write that committed only in part (the blobs, not yet the checkpoint row) is
completed by the replay. ``delete_thread`` and ``prune`` delete by key and are idempotent
as well. tests/shared/test_retry.py replays put and put_writes on a real PostgresSaver and
compares every row.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import Any, Protocol

import psycopg
import psycopg.errors as pg_errors
from langgraph.checkpoint.base import BaseCheckpointSaver, CheckpointTuple
from psycopg_pool import PoolTimeout

from shared.savers.wrapper import WrappingSaver

# SQLSTATE -> reason, for the errors the server sends that a retry can outlive.
_TRANSIENT_STATES: dict[type[Exception], str] = {
    pg_errors.AdminShutdown: "shutdown",        # 57P01: the server is shutting down
    pg_errors.CrashShutdown: "shutdown",        # 57P02: another backend crashed
    pg_errors.CannotConnectNow: "shutdown",     # 57P03: the server is starting up
    pg_errors.TooManyConnections: "connection",  # 53300: every slot taken, for now
    pg_errors.ConnectionException: "connection",  # class 08: the connection failed
    pg_errors.SerializationFailure: "serialization",  # 40001: rolled back, run it again
    pg_errors.DeadlockDetected: "deadlock",     # 40P01: rolled back, run it again
}


def transient_reason(exc: BaseException) -> str | None:
    """Why ``exc`` is worth a retry (``connection``, ``shutdown``, ``serialization``,
    ``deadlock``, ``pool_timeout``), or None for a permanent error (raised at once)."""
    if isinstance(exc, PoolTimeout):  # PoolExhausted too, though it is also a CheckpointError
        return "pool_timeout"
    for kind, reason in _TRANSIENT_STATES.items():
        if isinstance(exc, kind):
            return reason
    # Raised by the client itself, no SQLSTATE: lost connection, refused connection, closed.
    if type(exc) in (psycopg.OperationalError, pg_errors.ConnectionTimeout):
        return "connection"
    return None


class RetryMetrics(Protocol):
    """What ``metrics=`` needs: ``shared.ops.metrics.CheckpointMetrics`` has it."""

    def retried(self, op: str, reason: str) -> None: ...


OnRetry = Callable[[str, int, float, BaseException], None]
"""``on_retry(op, attempt, delay, exc)``: called before each sleep; attempt 1 is the first retry."""


class RetryingSaver(WrappingSaver):
    """Retries the inner saver's calls that fail with a transient error (see the module
    docstring); claims exactly the inner saver's capabilities (``WrappingSaver``).

    ``list`` / ``alist`` are retried only if the failure came before their first item.
    """

    def __init__(self, inner: BaseCheckpointSaver, *, retries: int = 3, first_delay: float = 0.1,
                 max_delay: float = 5.0, base: float = 2.0, metrics: RetryMetrics | None = None,
                 on_retry: OnRetry | None = None, sleep: Callable[[float], Any] = time.sleep,
                 asleep: Callable[[float], Awaitable[Any]] = asyncio.sleep,
                 rng: random.Random | None = None) -> None:
        if retries < 0 or first_delay < 0 or max_delay < 0 or base < 1:
            raise ValueError(f"RetryingSaver needs retries >= 0, delays >= 0 and base >= 1, "
                             f"not retries={retries}, first_delay={first_delay}, "
                             f"max_delay={max_delay}, base={base}.")
        super().__init__(inner)
        self.retries, self.first_delay, self.max_delay, self.base = (
            retries, first_delay, max_delay, base)
        self.metrics, self.on_retry = metrics, on_retry
        self.sleep, self.asleep = sleep, asleep
        self.rng = rng or random.Random()  # jitter, not a secret

    def rewrap(self, inner: BaseCheckpointSaver) -> RetryingSaver:
        return RetryingSaver(inner, retries=self.retries, first_delay=self.first_delay,
                             max_delay=self.max_delay, base=self.base, metrics=self.metrics,
                             on_retry=self.on_retry, sleep=self.sleep, asleep=self.asleep,
                             rng=self.rng)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.inner!r}, retries={self.retries})"

    # --- the policy --------------------------------------------------------------------------

    def cap(self, attempt: int) -> float:
        """The longest sleep before retry ``attempt`` (0-based): first_delay * base**attempt,
        at most max_delay."""
        return min(self.max_delay, self.first_delay * self.base ** attempt)

    def _next_delay(self, op: str, attempt: int, exc: Exception) -> float:
        """The sleep before retry ``attempt``, recorded; or ``exc`` raised if it is permanent
        or the retries are used up."""
        reason = transient_reason(exc)
        if reason is None:
            raise exc
        if attempt >= self.retries:
            exc.add_note(f"RetryingSaver: {op} failed {attempt + 1} times "
                         f"(1 call + {attempt} retries), the last with this {reason} error; "
                         "giving up.")
            raise exc
        delay = self.rng.uniform(0, self.cap(attempt))
        if self.metrics is not None:
            self.metrics.retried(op, reason)
        if self.on_retry is not None:
            self.on_retry(op, attempt + 1, delay, exc)
        return delay

    # --- the hooks ---------------------------------------------------------------------------

    def _call(self, op: str, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        attempt = 0
        while True:
            try:
                return fn(*args, **kwargs)
            except Exception as exc:
                delay = self._next_delay(op, attempt, exc)
            self.sleep(delay)
            attempt += 1

    async def _acall(self, op: str, fn: Callable[..., Awaitable[Any]], *args: Any,
                     **kwargs: Any) -> Any:
        attempt = 0
        while True:
            try:
                return await fn(*args, **kwargs)
            except Exception as exc:
                delay = self._next_delay(op, attempt, exc)
            await self.asleep(delay)
            attempt += 1

    def _iterate(self, op: str, make: Callable[[], Iterator[CheckpointTuple]]
                 ) -> Iterator[CheckpointTuple]:
        attempt = 0
        while True:
            try:
                it = make()
                first = next(it)
            except StopIteration:
                return
            except Exception as exc:
                delay = self._next_delay(op, attempt, exc)
                self.sleep(delay)
                attempt += 1
                continue
            break
        yield first
        yield from it  # past the first item: a failure is the caller's

    async def _aiterate(self, op: str, make: Callable[[], AsyncIterator[CheckpointTuple]]
                        ) -> AsyncIterator[CheckpointTuple]:
        attempt = 0
        while True:
            try:
                it = make().__aiter__()
                first = await it.__anext__()
            except StopAsyncIteration:
                return
            except Exception as exc:
                delay = self._next_delay(op, attempt, exc)
                await self.asleep(delay)
                attempt += 1
                continue
            break
        yield first
        async for item in it:
            yield item


__all__ = ["OnRetry", "RetryMetrics", "RetryingSaver", "transient_reason"]
