"""The queries LangGraph users run, through the official ``PostgresSaver``, with their plans.

``SaverQueries(plan)`` picks deterministic samples from a loaded ``HistoryPlan`` and offers,
for each kind of query (``latest``, ``history_page``, ``filtered_list``, ``pending_writes``):

- ``call(saver, kind, i)``: the saver's own call (``get_tuple`` / ``list``), its answer reduced
  to what a result set is (checkpoint ids, or pending-write channels);
- ``expected(kind, i)``: the same answer from the plan (``shared.workloads.history``), which
  never touched PostgreSQL;
- ``explain(saver, kind, i)``: ``EXPLAIN (ANALYZE, BUFFERS)`` of the very SQL the saver runs
  (its ``SELECT_SQL`` and ``_search_where``), and ``key_lines`` of that plan.
"""

from __future__ import annotations

import itertools
import random
import re
from collections.abc import Callable
from typing import Any

from langgraph.checkpoint.postgres import PostgresSaver

from shared.bench import Comparison, interleave
from shared.workloads.history import (
    CHAT_WRITES,
    HistoryPlan,
    ThreadPlan,
    reference_filtered,
    reference_latest,
    reference_page,
)

KINDS = ("latest", "history_page", "filtered_list", "pending_writes")
PAGE = 10
SELECTIVE = (10, 200)  # a selective filter: a user owning this many checkpoints


def _config(thread: str, checkpoint_id: str | None = None) -> dict[str, Any]:
    c: dict[str, Any] = {"thread_id": thread, "checkpoint_ns": ""}
    if checkpoint_id:
        c["checkpoint_id"] = checkpoint_id
    return {"configurable": c}


class SaverQueries:
    def __init__(self, plan: HistoryPlan, samples: int = 50, seed: int = 1) -> None:
        rng = random.Random(seed)
        self.plan = plan
        self.threads = rng.sample(plan.plans, min(samples, len(plan.plans)))
        long = [t for t in plan.plans if t.length > PAGE + 1] or plan.plans
        self.paged = [(t, plan.checkpoint_id(t, rng.randrange(t.length // 2, t.length)))
                      for t in rng.sample(long, min(samples, len(long)))]
        lo, hi = SELECTIVE
        users = sorted(u for u in plan.by_user if lo <= plan.user_checkpoints(u) <= hi)
        if not users:  # a tiny plan: the least busy users
            users = sorted(plan.by_user, key=plan.user_checkpoints)[:samples]
        self.users = rng.sample(users, min(samples, len(users)))
        self.pending = [(t, s) for t in self.threads
                        for s in [rng.randrange(t.length)]]
        self.matched = [plan.user_checkpoints(u) for u in self.users]

    def size(self, kind: str) -> int:
        return len({"latest": self.threads, "history_page": self.paged,
                    "filtered_list": self.users, "pending_writes": self.pending}[kind])

    # --- the official calls --------------------------------------------------------------

    def call(self, saver: PostgresSaver, kind: str, i: int) -> Any:
        if kind == "latest":
            t = self.threads[i % len(self.threads)]
            tup = saver.get_tuple(_config(t.thread_id))
            return tup and tup.config["configurable"]["checkpoint_id"]
        if kind == "history_page":
            t, before = self.paged[i % len(self.paged)]
            return [c.config["configurable"]["checkpoint_id"] for c in saver.list(
                _config(t.thread_id), before=_config(t.thread_id, before), limit=PAGE)]
        if kind == "filtered_list":
            user = self.users[i % len(self.users)]
            return [c.config["configurable"]["checkpoint_id"]
                    for c in saver.list(None, filter={"user_id": user}, limit=PAGE)]
        t, step = self.pending[i % len(self.pending)]
        tup = saver.get_tuple(_config(t.thread_id, self.plan.checkpoint_id(t, step)))
        return tup and tuple(sorted(ch for _, ch, _ in tup.pending_writes or []))

    def caller(self, saver: PostgresSaver, kind: str) -> Callable[[], Any]:
        """``call`` as a function of nothing, each call the next sample (for timing)."""
        n = itertools.count()
        return lambda: self.call(saver, kind, next(n))

    def expected(self, kind: str, i: int) -> Any:
        p = self.plan
        if kind == "latest":
            return reference_latest(p, self.threads[i % len(self.threads)])
        if kind == "history_page":
            t, before = self.paged[i % len(self.paged)]
            return reference_page(p, t, before, PAGE)
        if kind == "filtered_list":
            return reference_filtered(p, {"user_id": self.users[i % len(self.users)]}, PAGE)
        _, step = self.pending[i % len(self.pending)]
        return CHAT_WRITES[step % 3]

    def wrong(self, saver: PostgresSaver, kind: str) -> int:
        """Result sets that differ from the reference, over every sample of ``kind``."""
        return sum(self.call(saver, kind, i) != self.expected(kind, i)
                   for i in range(self.size(kind)))

    # --- the SQL behind each call --------------------------------------------------------

    def sql(self, saver: PostgresSaver, kind: str, i: int) -> tuple[str, list[Any]]:
        """The statement and parameters ``call`` makes the saver run (its own SQL)."""
        if kind in ("latest", "pending_writes"):
            if kind == "latest":
                t, cid = self.threads[i % len(self.threads)], None
            else:
                t, step = self.pending[i % len(self.pending)]
                cid = self.plan.checkpoint_id(t, step)
            if cid is None:
                return (saver.SELECT_SQL + "WHERE thread_id = %s AND checkpoint_ns = %s "
                        "ORDER BY checkpoint_id DESC LIMIT 1", [t.thread_id, ""])
            return (saver.SELECT_SQL + "WHERE thread_id = %s AND checkpoint_ns = %s AND "
                    "checkpoint_id = %s", [t.thread_id, "", cid])
        if kind == "history_page":
            t, before = self.paged[i % len(self.paged)]
            where, args = saver._search_where(_config(t.thread_id), None,
                                              _config(t.thread_id, before))
        else:
            where, args = saver._search_where(None, {"user_id": self.users[i % len(self.users)]})
        return saver.SELECT_SQL + where + " ORDER BY checkpoint_id DESC LIMIT %s", [*args, PAGE]

    def explain(self, saver: PostgresSaver, kind: str, i: int = 0) -> list[str]:
        query, args = self.sql(saver, kind, i)
        with saver._cursor() as cur:
            cur.execute("EXPLAIN (ANALYZE, BUFFERS) " + query, args)
            return [next(iter(r.values())) if isinstance(r, dict) else r[0]
                    for r in cur.fetchall()]


_KEY = re.compile(r"Scan|Sort Method|Limit|Execution Time|Rows Removed")


def key_lines(plan: list[str], top: int = 4) -> list[str]:
    """The lines of a plan a reader needs: the outer query's nodes (before the per-row
    subplans, which read blobs and writes by primary key), its first buffers line and the
    execution time."""
    outer = list(itertools.takewhile(lambda line: "SubPlan" not in line, plan))
    lines = [" ".join(x.split()) for x in outer if _KEY.search(x)][:top]
    lines += [" ".join(x.split()) for x in outer if "Buffers: shared" in x][:1]
    return lines + [" ".join(x.split()) for x in plan if x.startswith("Execution Time")]


def scans(plan: list[str]) -> str:
    """The scan nodes of the outer query (before the first SubPlan), comma-separated."""
    found = []
    for line in plan:
        if "SubPlan" in line:
            break
        if m := re.search(r"((?:Parallel )?(?:Seq|Index Only|Index|Bitmap Heap|Bitmap Index) Scan"
                          r"(?: Backward)?(?: using \w+)?(?: on \w+)?)", line):
            found.append(m[1])
    return ", ".join(found)


__all__ = ["CHAT_WRITES", "KINDS", "PAGE", "SaverQueries", "ThreadPlan", "bench_put", "key_lines",
           "scans"]


def bench_put(plain: PostgresSaver, indexed: PostgresSaver, puts: int, rounds: int
              ) -> Comparison:
    """``put`` p99 on two databases in interleaved rounds: a chat checkpoint as the loaded
    history holds them (taken from the first database), written to a thread of its own with
    the application's metadata, so every index on ``checkpoints`` is updated."""
    from langgraph.checkpoint.base.id import uuid6

    source = next(plain.list(None, limit=1))
    cp, meta = dict(source.checkpoint), {**source.metadata, "user_id": "user-put-bench"}
    versions = {k: v for k, v in cp["channel_versions"].items()
                if k in source.checkpoint["channel_values"]}

    def writer(saver: PostgresSaver, name: str) -> Callable[[], object]:
        config = {"configurable": {"thread_id": f"put-bench-{name}", "checkpoint_ns": ""}}

        def put() -> None:
            nonlocal config
            config = saver.put(config, {**cp, "id": str(uuid6())}, meta, versions)
        return put

    return interleave({"without": writer(plain, "without"), "with": writer(indexed, "with")},
                      puts, k=rounds, by_call=True)
