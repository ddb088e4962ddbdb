"""Lesson 7.2's drills: the hot tier under live traffic from several processes, with Redis killed,
flushed and paused; every read judged against PostgreSQL's latest at the moment it began.

Forked children, each with its own ``HybridSaver``: *writers* read a race thread's latest and put
the next checkpoint on it (two writers share every thread); *readers* ask PostgreSQL for the
thread's newest id (and the server clock), then read through the hot tier, and count a read as
stale if it returns an older checkpoint, none, or one a deleter had deleted before the read
began; a *deleter* writes, reads and deletes (``delete_thread`` or ``prune``) threads of its
own, logging each deletion in ``drill_deleted`` with the server clock after it committed. The
parent runs one phase per fault while they work. Afterwards every acknowledged checkpoint is
read back, through PostgreSQL and through a fresh hot tier.
"""

from __future__ import annotations

import json
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from langgraph.checkpoint.base import empty_checkpoint
from langgraph.checkpoint.base.id import uuid6

from shared.infra.redis import EmbeddedRedis, redis_client
from shared.proc import child_ready, close_gate, fork_child, join_children, open_gate, read_results

FAULTS = ("none", "kill", "flushall", "pause")
PACE_S = 0.005  # between a writer's turns: a model's reply takes far longer in real life
SETTINGS = {"lease": 1.0, "retry_after": 0.3}  # short: the drill lasts seconds


@dataclass
class Phase:
    fault: str
    reads: int = 0
    hot_hits: int = 0
    stale: int = 0
    acked: int = 0
    failed: int = 0
    examples: list[str] = field(default_factory=list)


@dataclass
class DrillResult:
    phases: list[Phase]
    acked: int
    lost: int
    read_back_hot: int
    deleted_left: int
    pause_s: float
    writers: int
    readers: int

    @property
    def failed(self) -> int:
        return sum(p.failed for p in self.phases)

    @property
    def stale(self) -> int:
        return sum(p.stale for p in self.phases)


def _phase_of(t: float, start: float, phase_s: float) -> int:
    return min(len(FAULTS) - 1, max(0, int((t - start) // phase_s)))


def _checkpoint(saver: Any, parent: Any, turn: int, who: str) -> tuple[dict, dict]:
    ckpt = empty_checkpoint()
    ckpt["id"] = str(uuid6(clock_seq=random.getrandbits(14)))
    old = parent.checkpoint["channel_versions"] if parent else {}
    versions = {ch: saver.get_next_version(old.get(ch), None) for ch in ("messages", "turn")}
    ckpt["channel_values"] = {"messages": [f"{who} turn {turn} " + "x" * 200], "turn": turn}
    ckpt["channel_versions"] = versions
    return ckpt, versions


def _quiet() -> None:
    """A child counts Redis failures in its results; the parent prints them, once."""
    import logging

    logging.getLogger("shared.savers.hybrid").setLevel(logging.ERROR)


@dataclass
class _Child:
    """What one drill process works with."""

    index: int
    saver: Any
    conn: Any  # its own PostgreSQL connection, for the judge's queries
    threads: list[str]
    rng: random.Random
    acked: list[list[Any]] = field(default_factory=list)


def _write(c: _Child, phase: Phase, turn: int) -> None:
    """Read a race thread's latest, put the next checkpoint on it."""
    thread = c.threads[turn % len(c.threads)]
    config = {"configurable": {"thread_id": thread, "checkpoint_ns": ""}}
    parent = c.saver.get_tuple(config)
    ckpt, versions = _checkpoint(c.saver, parent, turn, f"w{c.index}")
    c.saver.put(parent.config if parent else config, ckpt,
                {"source": "loop", "step": turn, "writer": c.index}, versions)
    c.acked.append([thread, ckpt["id"], turn])
    phase.acked += 1
    time.sleep(PACE_S)


def _stale(c: _Child, thread: str) -> str | None:
    """Read ``thread`` through the hot tier; why the answer is stale, or None."""
    began, newest = c.conn.execute(
        "SELECT clock_timestamp(), (SELECT checkpoint_id FROM checkpoints "
        "WHERE thread_id = %s AND checkpoint_ns = '' "
        "ORDER BY checkpoint_id DESC LIMIT 1)", (thread,)).fetchone()
    got = c.saver.get_tuple({"configurable": {"thread_id": thread, "checkpoint_ns": ""}})
    got_id = got.checkpoint["id"] if got else None
    if newest and (got_id is None or got_id < newest) and c.conn.execute(
            "SELECT 1 FROM checkpoints WHERE thread_id = %s AND checkpoint_id = %s",
            (thread, newest)).fetchone():  # (not deleted while we read: a race)
        return f"{thread}: read {got_id}, PostgreSQL had {newest}"
    if got_id and c.conn.execute(
            "SELECT 1 FROM drill_deleted WHERE checkpoint_id = %s AND deleted_at < %s",
            (got_id, began)).fetchone():
        return f"{thread}: read {got_id}, deleted before the read began"
    return None


def _read(c: _Child, phase: Phase, turn: int) -> None:
    hits = c.saver.stats.hits
    why = _stale(c, c.rng.choice(c.threads))
    phase.reads += 1
    phase.hot_hits += c.saver.stats.hits - hits
    if why:
        phase.stale += 1
        phase.examples = [*phase.examples, why][:3]


def _delete(c: _Child, phase: Phase, turn: int) -> None:
    """Write a thread of its own, read it (now cached in Redis), delete or prune it, log it."""
    thread = c.threads[turn % len(c.threads)]
    config = {"configurable": {"thread_id": thread, "checkpoint_ns": ""}}
    try:
        ckpt, versions = _checkpoint(c.saver, None, turn, "d")
        c.saver.put(config, ckpt, {"source": "loop", "step": turn}, versions)
        c.saver.get_tuple(config)
        if turn % 2:
            c.saver.delete_thread(thread)
        else:
            c.saver.prune([thread], strategy="delete")
        c.conn.execute("INSERT INTO drill_deleted VALUES (%s, %s, clock_timestamp())",
                       (thread, ckpt["id"]))
        phase.acked += 1
    finally:
        time.sleep(0.02)


def _child(step: Callable[[_Child, Phase, int], None], index: int, redis_url: str,
           pg_url: str, threads: list[str], gate: str, phase_s: float, out: str) -> None:
    """One drill process: ``step`` again and again through the phases, failures counted."""
    import psycopg

    from shared.savers.hybrid import HybridSaver

    _quiet()
    phases = [Phase(f) for f in FAULTS]
    with HybridSaver.from_conn_strings(redis_url, pg_url, setup=False, **SETTINGS) as saver, \
            psycopg.connect(pg_url, autocommit=True) as conn:
        c = _Child(index, saver, conn, threads, random.Random(index))
        start = child_ready(gate, index)
        end = start + phase_s * len(FAULTS)
        turn = 0
        while (now := time.time()) < end:
            if now < start:
                time.sleep(0.001)
                continue
            phase = phases[_phase_of(now, start, phase_s)]
            turn += 1
            try:
                step(c, phase, turn)
            except Exception as exc:  # counted: the claim is that none happen
                phase.failed += 1
                phase.examples = [*phase.examples, repr(exc)[:160]][:3]
    Path(out).write_text(json.dumps({"phases": [p.__dict__ for p in phases],
                                     "acked": c.acked}))


def race_drill(server: EmbeddedRedis, pg_url: str, workdir: Path, *, writers: int = 2,
               readers: int = 2, threads: int = 12, phase_s: float = 2.0,
               pause_s: float = 1.5) -> DrillResult:
    """Traffic from ``writers`` + ``readers`` + 1 deleter processes through four phases: no
    fault, Redis SIGKILLed and restarted empty, ``FLUSHALL``, Redis paused ``pause_s`` s."""
    import psycopg

    from shared.savers.postgres import open_postgres_saver

    with open_postgres_saver(pg_url, setup=True), psycopg.connect(pg_url, autocommit=True) as c:
        c.execute("CREATE TABLE IF NOT EXISTS drill_deleted (thread_id text, checkpoint_id text,"
                  " deleted_at timestamptz)")
    race = [f"race-{i}" for i in range(threads)]
    gone = [f"gone-{i}" for i in range(max(2, threads // 2))]
    workdir.mkdir(parents=True, exist_ok=True)
    gate = str(workdir / "gate")
    plan = ([(_write, race)] * writers + [(_read, race + gone)] * readers
            + [(_delete, gone)])
    outs = [workdir / f"child{i}.json" for i in range(len(plan))]
    children = [fork_child(_child, step, i, server.url, pg_url, ths, gate, phase_s,
                           str(outs[i])) for i, (step, ths) in enumerate(plan)]
    try:
        start = open_gate(gate, children)
        _run_faults(server, start, phase_s, pause_s)
        join_children(children, timeout=phase_s * len(FAULTS) + 60)
    finally:
        server.resume()
        close_gate(gate, len(children))
    results = read_results(outs, "drill processes")
    phases = [Phase(f) for f in FAULTS]
    for r in results:
        for p, got in zip(phases, r["phases"], strict=True):
            for k in ("reads", "hot_hits", "stale", "acked", "failed"):
                setattr(p, k, getattr(p, k) + got[k])
            p.examples = (p.examples + got["examples"])[:3]
    acked = [a for r in results for a in r["acked"]]
    lost, hot = _read_back(server.url, pg_url, acked)
    with psycopg.connect(pg_url) as c:
        deleted_left = c.execute(  # deleted ids still in PostgreSQL: never
            "SELECT count(*) FROM drill_deleted d JOIN checkpoints c "
            "ON c.checkpoint_id = d.checkpoint_id AND c.thread_id = d.thread_id").fetchone()[0]
    return DrillResult(phases, len(acked), lost, hot, deleted_left, pause_s, writers, readers)


def _run_faults(server: EmbeddedRedis, start: float, phase_s: float, pause_s: float) -> None:
    for i, fault in enumerate(FAULTS):
        at = start + i * phase_s + phase_s / 4  # a quarter into the phase: traffic is running
        time.sleep(max(0.0, at - time.time()))
        if fault == "kill":
            server.kill()
            server.restart()
        elif fault == "flushall":
            redis_client(server.url).flushall()
        elif fault == "pause":
            server.pause()
            time.sleep(pause_s)
            server.resume()
    time.sleep(max(0.0, start + len(FAULTS) * phase_s - time.time()))


def _read_back(redis_url: str, pg_url: str, acked: list[list[Any]]) -> tuple[int, int]:
    """(acknowledged checkpoints missing or different in PostgreSQL, read back through a
    fresh hot tier unchanged)."""
    from shared.savers.hybrid import HybridSaver
    from shared.savers.postgres import open_postgres_saver

    lost = same = 0
    with open_postgres_saver(pg_url) as pg, HybridSaver.from_conn_strings(
            redis_url, pg_url, setup=False, warmup=0.0) as hot:
        for thread, cid, turn in acked:
            config = {"configurable": {"thread_id": thread, "checkpoint_ns": "",
                                       "checkpoint_id": cid}}
            cold = pg.get_tuple(config)
            if cold is None or cold.checkpoint["channel_values"].get("turn") != turn:
                lost += 1
            warm = hot.get_tuple(config)
            same += int(warm is not None and cold is not None
                        and warm.checkpoint == cold.checkpoint)
    return lost, same


__all__ = ["FAULTS", "DrillResult", "Phase", "race_drill"]
