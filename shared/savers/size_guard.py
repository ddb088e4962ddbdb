"""A size guard for any checkpoint saver: refuse an oversized checkpoint before it is written.

    saver = SizeGuardSaver(inner_saver, limit_bytes=10 * 1024 * 1024)
    graph = builder.compile(checkpointer=saver)

Before ``put``/``aput`` and ``put_writes``/``aput_writes`` reach the inner saver, the guard
serializes what would be stored with the inner saver's own serde (``serde.dumps_typed``),
the very bytes ``SqliteSaver`` and ``AsyncSqliteSaver`` put in ``checkpoints.checkpoint``
and ``writes.value``:

- above ``limit_bytes`` it raises ``CheckpointTooLarge`` (and logs it at ERROR) and the
  inner saver is never called: no SQL statement runs, no transaction opens;
- above ``warn_bytes`` it logs a WARNING on the ``shared.savers.size_guard`` logger and
  writes. Logging, not ``warnings.warn``: the warnings module shows a warning once per call
  site, so a service would hear about its first large checkpoint only; a log line is
  emitted every time, names the thread, and goes wherever the service's logs go. Each
  record carries the measurement as ``record.size_report``.

What is measured: for ``put``, the whole checkpoint serialized as one blob, which is the
SQLite row exactly. Savers that keep each channel value as its own blob (``InMemorySaver``,
``PostgresSaver``) write only the channels that changed, but the checkpoint they load back
serializes to this size. For ``put_writes``, the sum of that call's serialized write values
(one row each): what one task adds to the state in one step. Metadata is not counted.
Because the inner saver's serde does the measuring, a saver whose serde offloads large
bytes to S3 is measured after offloading: the guard then sees the short references.

Capabilities: the conformance suite decides what a saver supports by which methods its
class overrides. ``SizeGuardSaver`` is a ``WrappingSaver`` (shared/savers/wrapper.py):
``SizeGuardSaver(inner)`` is an instance of a subclass built once per inner type
(``SizeGuardSaver[InMemorySaver]``) that overrides exactly the methods ``type(inner)``
overrides, so the wrapper never claims a capability its inner saver lacks (``SqliteSaver``
has no ``aput_writes``, and neither has its guard).
"""

from __future__ import annotations

import logging
import sqlite3
import threading
from collections import Counter
from collections.abc import Awaitable, Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Literal

from langchain_core.runnables import RunnableConfig
from langgraph.checkpoint.base import (
    BaseCheckpointSaver,
    Checkpoint,
)
from langgraph.checkpoint.serde.base import SerializerProtocol

from shared.errors import CheckpointError
from shared.savers.sqlite import sqlite_schema
from shared.savers.wrapper import (  # noqa: F401 -- re-exported for callers of this module
    CAPABILITY_METHODS,
    WrappingSaver,
    claimed_capabilities,
)

logger = logging.getLogger(__name__)

MIB = 1024 * 1024
DEFAULT_LIMIT_BYTES = 10 * MIB
OFFLOAD_FIX = ("offload large bytes to S3 by giving the saver the offloading serializer "
               "(OffloadingSerializer, shared/savers/offload.py) or keep them out of the graph "
               "state")

def format_bytes(n: int) -> str:
    """Human size in binary units: '15.0 MiB', '512.0 KiB', '87 bytes'."""
    if n >= MIB:
        return f"{n / MIB:.1f} MiB"
    if n >= 1024:
        return f"{n / 1024:.1f} KiB"
    return f"{n} bytes"


def serialized_size(serde: SerializerProtocol, value: Any) -> int:
    """Bytes ``serde`` produces for ``value``: the length of the blob a saver would store."""
    return len(serde.dumps_typed(value)[1])


@dataclass(frozen=True)
class SizeReport:
    """What the guard measured for one ``put`` or ``put_writes`` call.

    ``channels`` (serialized bytes per channel) is always filled for writes; for a checkpoint
    only above the warn threshold, so a normal checkpoint costs one serialization, not two.
    """

    kind: Literal["checkpoint", "writes"]
    thread_id: str
    total_bytes: int
    channels: dict[str, int] = field(default_factory=dict)

    @property
    def largest(self) -> tuple[str | None, int]:
        if not self.channels:
            return None, 0
        name = max(self.channels, key=lambda k: self.channels[k])
        return name, self.channels[name]

    def describe(self) -> str:
        """'The checkpoint for thread 't' serializes to 15.0 MiB (15,729,995 bytes)'."""
        what = ("The checkpoint for thread {t!r} serializes" if self.kind == "checkpoint"
                else "One task's writes for thread {t!r} serialize")
        return (what.format(t=self.thread_id)
                + f" to {format_bytes(self.total_bytes)} ({self.total_bytes:,} bytes)")

    def describe_largest(self) -> str:
        name, size = self.largest
        if name is None:
            return "it has no channel values"
        return f"its largest channel is {name!r} at {format_bytes(size)} ({size:,} bytes)"


@dataclass
class GuardStats:
    """What a guard saw, by kind ("checkpoint", "writes"): checked, warned, refused.

    Shared with the clones LangGraph derives through ``with_allowlist`` (with
    LANGGRAPH_STRICT_MSGPACK on), so the guard you built counts every run's calls.
    """

    checked: Counter[str] = field(default_factory=Counter)
    warned: Counter[str] = field(default_factory=Counter)
    refused: Counter[str] = field(default_factory=Counter)
    last_checkpoint: SizeReport | None = None
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    def record(self, report: SizeReport, outcome: Literal["ok", "warned", "refused"]) -> None:
        with self.lock:  # put_writes runs on LangGraph's background threads
            self.checked[report.kind] += 1
            if outcome != "ok":
                getattr(self, outcome)[report.kind] += 1
            if report.kind == "checkpoint":
                self.last_checkpoint = report


class CheckpointTooLarge(CheckpointError):
    """A checkpoint or a task's writes exceed the guard's limit; nothing was written."""

    def __init__(self, report: SizeReport, limit_bytes: int) -> None:
        self.report = report
        self.limit_bytes = limit_bytes
        name, size = report.largest
        self.size_bytes = report.total_bytes
        self.largest_channel = name
        self.largest_channel_bytes = size
        super().__init__(
            f"{report.describe()}, above the {format_bytes(limit_bytes)} ({limit_bytes:,} "
            f"bytes) limit, and {report.describe_largest()}, so nothing was written: "
            f"{OFFLOAD_FIX}.")

    def __reduce__(self) -> tuple[Any, ...]:
        # Rebuilt from the report, so the error survives pickling across processes.
        return type(self), (self.report, self.limit_bytes)


class SizeGuardSaver(WrappingSaver):
    """Wrap ``inner`` so that oversized checkpoints and writes are refused before storage.

    ``warn_bytes`` defaults to half of ``limit_bytes``. Everything except the size check is
    delegated to ``inner``; the wrapper has no serde of its own (``serde`` is the inner's).
    """

    def __init__(self, inner: BaseCheckpointSaver, *, limit_bytes: int = DEFAULT_LIMIT_BYTES,
                 warn_bytes: int | None = None) -> None:
        warn = limit_bytes // 2 if warn_bytes is None else warn_bytes
        if limit_bytes <= 0 or not 0 < warn <= limit_bytes:
            raise ValueError(f"limit_bytes={limit_bytes} and warn_bytes={warn} must satisfy "
                             "0 < warn_bytes <= limit_bytes: pass positive byte counts.")
        super().__init__(inner)
        self.limit_bytes = limit_bytes
        self.warn_bytes = warn
        self.stats = GuardStats()

    def rewrap(self, inner: BaseCheckpointSaver) -> SizeGuardSaver:
        clone = SizeGuardSaver(inner, limit_bytes=self.limit_bytes, warn_bytes=self.warn_bytes)
        clone.stats = self.stats  # the guard you built counts the clone's calls too
        return clone

    def __repr__(self) -> str:
        return (f"{type(self).__name__}({self.inner!r}, limit_bytes={self.limit_bytes}, "
                f"warn_bytes={self.warn_bytes})")

    # --- the hooks: check before the inner saver sees anything ----------------------------

    def _check(self, op: str, args: tuple[Any, ...]) -> None:
        if op in ("put", "aput"):
            self.check_checkpoint(args[0], args[1])
        elif op in ("put_writes", "aput_writes"):
            self.check_writes(args[0], args[1])

    def _call(self, op: str, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        self._check(op, args)
        return fn(*args, **kwargs)

    async def _acall(self, op: str, fn: Callable[..., Awaitable[Any]], *args: Any,
                     **kwargs: Any) -> Any:
        self._check(op, args)
        return await fn(*args, **kwargs)

    # --- the checks -----------------------------------------------------------------------

    def check_checkpoint(self, config: RunnableConfig, checkpoint: Checkpoint) -> SizeReport:
        """Measure ``checkpoint`` as the inner saver would store it; raise above the limit."""
        serde = self.inner.serde
        total = serialized_size(serde, checkpoint)
        report = SizeReport("checkpoint", _thread(config), total)
        if total > self.warn_bytes:  # only now is naming the largest channel worth its cost
            report = SizeReport("checkpoint", report.thread_id, total, {
                k: serialized_size(serde, v) for k, v in checkpoint["channel_values"].items()})
        self._judge(report)
        return report

    def check_writes(self, config: RunnableConfig, writes: Sequence[tuple[str, Any]]
                     ) -> SizeReport:
        """Measure one task's writes (one row each); raise when their sum is above the limit."""
        per_channel: dict[str, int] = {}
        for channel, value in writes:
            per_channel[channel] = per_channel.get(channel, 0) + serialized_size(
                self.inner.serde, value)
        report = SizeReport("writes", _thread(config), sum(per_channel.values()), per_channel)
        self._judge(report)
        return report

    def _judge(self, report: SizeReport) -> None:
        if report.total_bytes > self.limit_bytes:
            self.stats.record(report, "refused")
            error = CheckpointTooLarge(report, self.limit_bytes)
            # Logged as well as raised: LangGraph's background executor re-raises only the
            # first failure of a step, so a second refusal would otherwise go unseen.
            logger.error("%s", error, extra={"size_report": report})
            raise error
        if report.total_bytes <= self.warn_bytes:
            self.stats.record(report, "ok")
        else:
            self.stats.record(report, "warned")
            logger.warning("%s, above the %s warning threshold (limit %s), and %s; it was "
                           "written, but %s.", report.describe(),
                           format_bytes(self.warn_bytes), format_bytes(self.limit_bytes),
                           report.describe_largest(), OFFLOAD_FIX,
                           extra={"size_report": report})


def _thread(config: RunnableConfig) -> str:
    return str(config.get("configurable", {}).get("thread_id", ""))


def sqlite_blob_audit(conn: sqlite3.Connection, limit_bytes: int) -> dict[str, tuple[int, int]]:
    """``{"table.column": (largest length, rows longer than limit_bytes)}`` for every BLOB column.

    Read from the database itself, to check after the fact that the guard held.
    """
    audit: dict[str, tuple[int, int]] = {}
    for table, columns in sqlite_schema(conn).items():
        for column, kind, _, _ in columns:
            if kind.upper() != "BLOB":
                continue
            # Identifiers come from sqlite_master, never from user text.
            largest, over = conn.execute(
                f'SELECT coalesce(max(length("{column}")), 0), '  # noqa: S608
                f'coalesce(sum(length("{column}") > ?), 0) FROM "{table}"',
                (limit_bytes,)).fetchone()
            audit[f"{table}.{column}"] = (largest, over)
    return audit


@contextmanager
def captured_guard_log(level: int = logging.WARNING) -> Iterator[list[logging.LogRecord]]:
    """Collect the guard's log records (each carries ``record.size_report``) while inside.

    With a handler attached, Python's last-resort stderr printer stays quiet.
    """
    records: list[logging.LogRecord] = []
    handler = logging.Handler(level)
    handler.emit = records.append  # type: ignore[method-assign]
    logger.addHandler(handler)
    try:
        yield records
    finally:
        logger.removeHandler(handler)
