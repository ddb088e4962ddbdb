"""A checkpoint history at scale, loaded into PostgreSQL as ``PostgresSaver`` would have written it.

``load_history(url, checkpoints=1_000_000, threads=100_000)`` fills a database (``setup()``
first, the official schema) with that many checkpoints, their pending writes and channel
blobs, through the migrator's batched COPY writer (``shared.ops.sinks.PostgresSink`` with
``shared.savers.rows.postgres_rows``: the rows ``put``/``put_writes`` would write).

Where the shape comes from: a few real conversations of the shared chat graph
(``build_chat_graph`` with ``OfflineChatModel``) are run on ``PostgresSaver`` in the target
database and read back as stored rows (then deleted). Each generated thread replays a prefix
of one of them: the channel layout, the versions, the blobs (the real serialized messages),
the pending writes and LangGraph's metadata (``source``, ``step``, ``parents``) are what
LangGraph wrote. What varies per thread: the thread id, the checkpoint ids (uuid6, in time
order over ``days``), ``ts``, the length of the history, which conversation (so which
messages), and the application's metadata: ``user_id`` (Zipf-like: a few users own many
threads, most own few) and ``session_type``.

``HistoryPlan`` is that plan, computed from the seed alone (no database): the loader writes
it and ``reference_*`` answers queries from it, so a query through PostgreSQL (with or
without an index) can be checked against an answer that never touched PostgreSQL. Row keys
and metadata are deterministic by seed; the blob bytes come from the real run (message ids
inside them are LangGraph's own random uuids).
"""

from __future__ import annotations

import bisect
import itertools
import random
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from functools import cached_property
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from langchain_core.messages import HumanMessage

from shared.errors import CheckpointError
from shared.graph import build_chat_graph
from shared.llm import OfflineChatModel
from shared.savers import open_postgres_saver
from shared.savers.retention import uuid6_at
from shared.savers.rows import RawCheckpoint, RawThread, read_raw

SESSION_TYPES = ("chat", "support", "onboarding", "research")
SESSION_WEIGHTS = (60, 25, 10, 5)
TEMPLATES = 8  # real conversations replayed
TEMPLATE_TURNS = 16  # 3 checkpoints a turn: the longest thread holds 48
TEMPLATE_PREFIX = "__history_template_"
SAYINGS = ("Hi, my name is Alice.", "I live in Lyon.", "What is my name?",
           "My favourite colour is green.", "Where do I live?", "I work as a baker.",
           "Hello, I am Bruno.", "I live in Porto.", "What do I do?", "Call me Chen.",
           "My favourite colour is blue.", "I work as a nurse.", "Who am I?",
           "Can you summarise our chat?", "Thanks, that helps.")
# The chat graph (START -> chatbot -> END) writes, per checkpoint of a turn: the input
# checkpoint's task writes messages and its branch, chatbot's writes messages, the last none.
# ``load_history`` checks its recorded conversations against this before it writes anything.
CHAT_WRITES: tuple[tuple[str, ...], ...] = (("branch:to:chatbot", "messages"), ("messages",), ())
EPOCH = datetime(2025, 1, 1, tzinfo=UTC)
ZIPF_S = 1.0
BATCH_THREADS = 500


@dataclass
class LoadReport:
    """What ``load_history`` wrote (counted by the sink) and how fast."""

    checkpoints: int
    writes: int  # rows of checkpoint_writes
    blobs: int  # rows of checkpoint_blobs
    threads: int
    users: int
    seconds: float
    template_checkpoints: int = 0  # checkpoints of the real runs the shape was taken from

    @property
    def checkpoints_per_s(self) -> float:
        return self.checkpoints / self.seconds if self.seconds else 0.0


@dataclass(frozen=True)
class ThreadPlan:
    thread_id: str
    index: int
    user_id: str
    session_type: str
    template: int
    length: int
    start_us: int  # microseconds after EPOCH of its first checkpoint


@dataclass
class HistoryPlan:
    """The whole history, decided by the seed: threads, their owners, lengths and times."""

    checkpoints: int
    threads: int
    users: int
    seed: int = 0
    days: int = 90
    plans: list[ThreadPlan] = field(init=False)

    def __post_init__(self) -> None:
        if self.threads < 1 or self.users < 1:
            raise CheckpointError(f"threads={self.threads}, users={self.users}: a history "
                                  "needs at least one thread and one user.")
        cap = 3 * TEMPLATE_TURNS
        if not self.threads <= self.checkpoints <= self.threads * cap:
            raise CheckpointError(
                f"checkpoints={self.checkpoints:,} over threads={self.threads:,}: each thread "
                f"holds 1 to {cap} checkpoints, so use {self.threads:,} to "
                f"{self.threads * cap:,} checkpoints.")
        rng = random.Random(self.seed)
        # Zipf-like owners: user of rank r owns threads in proportion to 1 / r^s.
        zipf = list(itertools.accumulate(1 / (r + 1) ** ZIPF_S for r in range(self.users)))
        owners = [bisect.bisect(zipf, rng.random() * zipf[-1]) for _ in range(self.threads)]
        sessions = rng.choices(SESSION_TYPES, SESSION_WEIGHTS, k=self.threads)
        lengths = self._lengths(rng, cap)
        span_us = self.days * 86_400 * 10**6
        starts = sorted(rng.randrange(span_us) for _ in range(self.threads))
        self.plans = [ThreadPlan(f"thread-{i:06d}", i, f"user-{min(owners[i], self.users - 1):06d}",
                                 sessions[i], rng.randrange(TEMPLATES), lengths[i], starts[i])
                      for i in range(self.threads)]

    def _lengths(self, rng: random.Random, cap: int) -> list[int]:
        """Every thread at least 1 checkpoint, the rest spread with a long tail, at most cap."""
        lengths = [1] * self.threads
        weights = list(itertools.accumulate(rng.expovariate(1.0) for _ in range(self.threads)))
        extra = self.checkpoints - self.threads
        for i in rng.choices(range(self.threads), cum_weights=weights, k=extra):
            lengths[i] += 1
        spill = sum(max(0, n - cap) for n in lengths)
        lengths = [min(n, cap) for n in lengths]
        i = 0
        while spill:  # the overflow goes to the threads with room, in order
            if lengths[i] < cap:
                lengths[i] += 1
                spill -= 1
            i = (i + 1) % self.threads
        return lengths

    @staticmethod
    def checkpoint_time_us(plan: ThreadPlan, step: int) -> int:
        """Checkpoints of a turn milliseconds apart, turns about a minute apart."""
        return plan.start_us + (step // 3) * 60_000_000 + (step % 3) * 2_000

    def checkpoint_id(self, plan: ThreadPlan, step: int) -> str:
        moment = EPOCH + timedelta(microseconds=self.checkpoint_time_us(plan, step))
        return uuid6_at(moment, clock_seq=step, node=plan.index)

    def ids(self, plan: ThreadPlan) -> list[str]:
        """The thread's checkpoint ids, oldest first (uuid6: they sort in time order)."""
        return [self.checkpoint_id(plan, s) for s in range(plan.length)]

    @cached_property
    def by_user(self) -> dict[str, list[ThreadPlan]]:
        out: dict[str, list[ThreadPlan]] = {}
        for p in self.plans:
            out.setdefault(p.user_id, []).append(p)
        return out

    def user_checkpoints(self, user_id: str) -> int:
        return sum(p.length for p in self.by_user.get(user_id, []))


# --- the reference: answers computed from the plan, never from PostgreSQL -------------------

def reference_latest(plan: HistoryPlan, thread: ThreadPlan) -> str:
    return plan.checkpoint_id(thread, thread.length - 1)


def reference_page(plan: HistoryPlan, thread: ThreadPlan, before: str | None,
                   limit: int) -> list[str]:
    """``list(config, before=..., limit=...)``: ids older than ``before``, newest first."""
    ids = sorted((i for i in plan.ids(thread) if before is None or i < before), reverse=True)
    return ids[:limit]


def reference_filtered(plan: HistoryPlan, flt: dict[str, Any], limit: int) -> list[str]:
    """``list(None, filter=flt, limit=...)`` over the loaded threads, newest first."""
    if unknown := set(flt) - {"user_id", "session_type"}:
        raise ValueError(f"the reference answers user_id and session_type filters, not {unknown}")
    threads = plan.by_user.get(flt["user_id"], []) if "user_id" in flt else plan.plans
    ids = [i for t in threads if flt.get("session_type", t.session_type) == t.session_type
           for i in plan.ids(t)]
    return sorted(ids, reverse=True)[:limit]


# --- the shape: real runs of the shared chat graph ------------------------------------------

def record_templates(url: str, seed: int = 0) -> list[RawThread]:
    """Run ``TEMPLATES`` conversations on ``PostgresSaver`` in ``url``; their stored rows."""
    rng = random.Random(seed)
    ids = [f"{TEMPLATE_PREFIX}{k}" for k in range(TEMPLATES)]
    with open_postgres_saver(url, setup=True) as saver:
        graph = build_chat_graph(saver, OfflineChatModel())
        for tid in ids:
            config = {"configurable": {"thread_id": tid}}
            for _ in range(TEMPLATE_TURNS):
                graph.invoke({"messages": [HumanMessage(rng.choice(SAYINGS))]}, config)
        raw = read_raw(saver, ids)
        with saver._cursor() as cur:
            for table in ("checkpoint_writes", "checkpoint_blobs", "checkpoints"):
                cur.execute(f"DELETE FROM {table} WHERE thread_id = ANY(%s)", (ids,))  # noqa: S608
    return [raw[t] for t in ids]


def _thread(plan: HistoryPlan, thread: ThreadPlan, template: RawThread) -> RawThread:
    """``thread`` as ``template``'s first ``length`` checkpoints: new ids, times, owner."""
    out = RawThread(thread.thread_id)
    parent = None
    for step, proto in enumerate(template.checkpoints[:thread.length]):
        us = plan.checkpoint_time_us(thread, step)
        moment = EPOCH + timedelta(microseconds=us)
        cid = uuid6_at(moment, clock_seq=step, node=thread.index)
        meta = {**proto.metadata, "user_id": thread.user_id,
                "session_type": thread.session_type}
        out.checkpoints.append(RawCheckpoint(
            proto.ns, cid, parent, {**proto.fields, "id": cid, "ts": moment.isoformat()},
            proto.values, meta, proto.writes))
        parent = cid
    return out


def iter_threads(plan: HistoryPlan, templates: list[RawThread]) -> Iterator[RawThread]:
    for t in plan.plans:
        yield _thread(plan, t, templates[t.template])


def load_history(url: str, *, checkpoints: int, threads: int, users: int | None = None,
                 seed: int = 0, progress: bool = True, days: int = 90) -> LoadReport:
    """Write the seed's history into ``url`` (tables created first); see the module doc."""
    import psycopg
    from langgraph.checkpoint.postgres import PostgresSaver

    from shared.ops.migrate import Committer
    from shared.ops.sinks import Batch, PostgresSink
    from shared.progress import progress_bar
    from shared.workloads.postgres_writers import PG_KWARGS

    plan = HistoryPlan(checkpoints, threads, users or max(1, threads // 10), seed, days)
    t0 = time.perf_counter()
    templates = record_templates(url, seed)
    for t in templates:
        shape = [tuple(sorted(w.channel for w in c.writes)) for c in t.checkpoints]
        if shape != [CHAT_WRITES[s % 3] for s in range(3 * TEMPLATE_TURNS)]:
            raise CheckpointError(f"the chat graph wrote {len(shape)} checkpoints with writes "
                                  f"{shape[:3]}..., not the shape this history replays "
                                  f"({3 * TEMPLATE_TURNS} checkpoints, {CHAT_WRITES}).")
    bar = progress_bar("checkpoints", description="loading history", transient=False,
                       disable=not progress)
    report = LoadReport(0, 0, 0, 0, plan.users, 0.0,
                        sum(len(t.checkpoints) for t in templates))
    with psycopg.connect(url, **PG_KWARGS) as conn, bar:
        task = bar.add_task("load", total=checkpoints)
        sink = PostgresSink(PostgresSaver(conn))
        sink.prepare()

        def done(b: Batch) -> None:  # in the committing thread, after each commit
            report.checkpoints += b.counts.checkpoints
            report.writes += b.counts.writes
            report.blobs += len(b.rows["blobs"])  # rows written to checkpoint_blobs
            report.threads += len(b.copies)
            bar.advance(task, b.counts.checkpoints)

        committer = Committer(sink, done)
        try:
            it = iter_threads(plan, templates)
            while chunk := list(itertools.islice(it, BATCH_THREADS)):
                batch = sink.build(chunk)  # while the previous batch is written
                sink.keys([c.thread_id for c in chunk])  # fresh threads: COPY straight in
                committer.submit(batch)
        finally:
            committer.close()
    report.seconds = time.perf_counter() - t0
    return report


def clone_database(url: str, name: str) -> str:
    """A copy of ``url``'s database named ``name`` (files copied: seconds for gigabytes), on
    the same server, so that one load serves a before/after comparison side by side."""
    import psycopg
    from psycopg import sql

    from shared.infra.postgres import create_database

    parts = urlsplit(url)
    source, admin = parts.path.lstrip("/"), urlunsplit(parts._replace(path="/postgres"))
    target = create_database(admin, name)  # validates the name, drops an old copy
    with psycopg.connect(admin, autocommit=True) as conn:  # not on the source: it must be idle
        conn.execute(sql.SQL("DROP DATABASE {} WITH (FORCE)").format(sql.Identifier(name)))
        conn.execute(sql.SQL("CREATE DATABASE {} TEMPLATE {} STRATEGY FILE_COPY").format(
            sql.Identifier(name), sql.Identifier(source)))
    return target


__all__ = [
    "CHAT_WRITES",
    "SESSION_TYPES",
    "HistoryPlan",
    "LoadReport",
    "ThreadPlan",
    "clone_database",
    "load_history",
    "record_templates",
    "reference_filtered",
    "reference_latest",
    "reference_page",
]
