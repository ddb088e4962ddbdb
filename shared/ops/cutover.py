"""A live cutover from one checkpoint store to another while conversations keep running.

    deployment = Deployment(build_chat_graph(sqlite_saver), "sqlite")
    with ChatLoad(deployment, clients=4) as load:         # users talk, turn after turn
        time.sleep(2)
        deployment.deploy(build_chat_graph(DualWriteSaver(sqlite, pg)), "dual_write")
        backfill(dual, threads_before)                     # copy, thread by thread
        ...
    load.stats["dual_write"].failed                         # per phase

``Deployment`` is what a blue-green switch is: new requests go to the new graph at once,
and ``deploy`` returns when every request begun on the old one has finished (the drain),
so the caller knows from then on nothing writes through the old saver.

``ChatLoad`` runs client threads, each with its own conversations on the shared chat
graph, and viewer threads showing histories (``get_state``); every turn's reply is known
in advance (the offline model), so a request *fails* when it raises, when the reply is
wrong, or when a conversation comes back with a different number of messages than it had:
a read served from a store missing part of the history shows up as a failed request, not
as a silent wrong answer.

``backfill`` and ``verify_live`` copy and compare thread by thread, each thread's writes
held (``DualWriteSaver.hold``) while it is copied or compared.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from langgraph.checkpoint.base import BaseCheckpointSaver
from langgraph.graph.state import CompiledStateGraph

from shared.bench import percentile
from shared.ops.migrate import copy_thread, verify
from shared.savers.dualwrite import DualWriteSaver

NAMES = ("Alice", "Bruno", "Chiara", "Dmitri", "Elena", "Farid", "Greta", "Hiro", "Ines",
         "Jonas", "Kofi", "Lena", "Mateo", "Nadia", "Omar", "Priya", "Quentin", "Rosa")
CITIES = ("Lisbon", "Oslo", "Lagos", "Lima", "Kyoto", "Quito", "Porto", "Turin")


def scripted_turn(name: str, turn: int) -> tuple[str, str]:
    """The user's message at ``turn`` (0-based) and the reply a model with the history gives."""
    if turn == 0:
        return f"Hi, my name is {name}.", f"Nice to meet you, {name}."
    if turn % 2:
        return "What's my name?", f"Your name is {name}."
    city = CITIES[(turn // 2) % len(CITIES)]
    return f"I live in {city}.", f"Noted: you live in {city}."


class Deployment:
    """The graph serving new requests, swapped by ``deploy`` with a drain of the old one."""

    def __init__(self, graph: CompiledStateGraph, phase: str) -> None:
        self._cond = threading.Condition()
        self._generation = 0
        self._current = (graph, phase)
        self._inflight: Counter[int] = Counter()

    @property
    def phase(self) -> str:
        with self._cond:
            return self._current[1]

    @contextmanager
    def request(self) -> Iterator[tuple[CompiledStateGraph, str]]:
        """One request: the graph and phase it runs on, counted until it returns."""
        with self._cond:
            generation, current = self._generation, self._current
            self._inflight[generation] += 1
        try:
            yield current
        finally:
            with self._cond:
                self._inflight[generation] -= 1
                self._cond.notify_all()

    def deploy(self, graph: CompiledStateGraph, phase: str, timeout: float = 60.0) -> float:
        """Send new requests to ``graph``; return the seconds spent draining the old ones."""
        started = time.perf_counter()
        with self._cond:
            old = self._generation
            self._generation += 1
            self._current = (graph, phase)
            drained = self._cond.wait_for(
                lambda: all(n == 0 for g, n in self._inflight.items() if g <= old), timeout)
        if not drained:
            raise TimeoutError(f"requests on the previous deployment still running after "
                               f"{timeout:.0f} s")
        return time.perf_counter() - started


@dataclass
class PhaseStats:
    """Requests begun during one phase of the cutover: chat turns and history views."""

    turns: int = 0
    views: int = 0
    failed: int = 0
    turn_latencies_ms: list[float] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)  # the first few, for the reader

    @property
    def requests(self) -> int:
        return self.turns + self.views

    @property
    def turn_p99_ms(self) -> float:
        return percentile(self.turn_latencies_ms, 99)


@dataclass
class Conversation:
    thread_id: str
    name: str
    began_in: str  # the phase of its first turn
    turns: int = 0  # turns completed and checked
    broken: bool = False  # a failed turn: what the store holds is no longer known


class ChatLoad:
    """``clients`` threads, each talking in ``conversations`` threads round-robin and
    beginning a new one every ``new_every`` of its turns, and ``viewers`` threads that keep
    showing every conversation's history (``get_state``), as a UI does, until ``stop``."""

    def __init__(self, deployment: Deployment, clients: int = 4, conversations: int = 6,
                 new_every: int = 10, viewers: int = 1, think_s: float = 0.002) -> None:
        self.deployment = deployment
        self.clients, self.initial, self.new_every = clients, conversations, new_every
        self.viewers, self.think_s = viewers, think_s
        self.stats: dict[str, PhaseStats] = {}
        self.conversations: dict[str, Conversation] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []

    def _begin(self, client: int, n: int) -> Conversation:
        conv = Conversation(f"conv-{client:02d}-{n:03d}", NAMES[(client * 7 + n) % len(NAMES)],
                            self.deployment.phase)
        with self._lock:
            self.conversations[conv.thread_id] = conv
        return conv

    def _turn(self, conv: Conversation) -> None:
        text, expected = scripted_turn(conv.name, conv.turns)
        config: dict[str, Any] = {"configurable": {"thread_id": conv.thread_id}}
        with self.deployment.request() as (graph, phase):
            if conv.turns == 0:
                conv.began_in = phase
            t0 = time.perf_counter()
            try:
                out = graph.invoke({"messages": [("user", text)]}, config)
                reply, count = out["messages"][-1].content, len(out["messages"])
                error = None if (reply, count) == (expected, 2 * conv.turns + 2) else (
                    f"{conv.thread_id} turn {conv.turns + 1}: {reply!r} with {count} messages,"
                    f" expected {expected!r} with {2 * conv.turns + 2}")
            except Exception as exc:  # counted, never hidden
                error = f"{conv.thread_id} turn {conv.turns + 1}: {type(exc).__name__}: {exc}"
            latency = (time.perf_counter() - t0) * 1000
        with self._lock:
            stats = self._record(phase, error)
            stats.turns += 1
            stats.turn_latencies_ms.append(latency)
        conv.turns += error is None
        conv.broken = error is not None

    def _record(self, phase: str, error: str | None) -> PhaseStats:
        stats = self.stats.setdefault(phase, PhaseStats())
        if error is not None:
            stats.failed += 1
            if len(stats.errors) < 5:
                stats.errors.append(f"[{phase}] {error}")
        return stats

    def _view(self, conv: Conversation) -> None:
        """Show one history; it must hold every turn completed, at most one more in flight."""
        config: dict[str, Any] = {"configurable": {"thread_id": conv.thread_id}}
        done_before = conv.turns
        with self.deployment.request() as (graph, phase):
            try:
                n = len(graph.get_state(config).values.get("messages", []))
                low, high = 2 * done_before, 2 * conv.turns + 2
                error = None if low <= n <= high or conv.broken else (
                    f"{conv.thread_id}: history of {n} messages, expected {low} to {high}")
            except Exception as exc:
                error = f"{conv.thread_id} view: {type(exc).__name__}: {exc}"
        with self._lock:
            self._record(phase, error).views += 1

    def _viewer(self) -> None:
        while not self._stop.is_set():
            with self._lock:
                everyone = list(self.conversations.values())
            for conv in everyone:
                if self._stop.is_set():
                    return
                self._view(conv)
                if self.think_s:
                    time.sleep(self.think_s)
            if not everyone:
                time.sleep(0.01)

    def _client(self, client: int) -> None:
        mine = [self._begin(client, n) for n in range(self.initial)]
        i = 0
        while not self._stop.is_set():
            if i and i % self.new_every == 0:
                mine.append(self._begin(client, len(mine)))
            live = [c for c in mine if not c.broken]
            if not live:
                return
            self._turn(live[i % len(live)])
            i += 1
            if self.think_s:
                time.sleep(self.think_s)

    def start(self) -> ChatLoad:
        workers = [(f"chat-client-{k}", self._client, (k,)) for k in range(self.clients)]
        workers += [(f"chat-viewer-{k}", self._viewer, ()) for k in range(self.viewers)]
        for name, target, args in workers:
            t = threading.Thread(target=target, args=args, name=name, daemon=True)
            t.start()
            self._threads.append(t)
        return self

    def stop(self) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(timeout=60)

    def __enter__(self) -> ChatLoad:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


@dataclass
class CopyTotals:
    threads: int = 0
    checkpoints: int = 0
    writes: int = 0
    missing: int = 0
    mismatches: int = 0
    extra: int = 0  # checkpoints of a thread in the secondary only
    examples: list[str] = field(default_factory=list)
    seconds: float = 0.0


def backfill(dual: DualWriteSaver, threads: Iterable[str], *,
             src: BaseCheckpointSaver | None = None,
             dst: BaseCheckpointSaver | None = None) -> CopyTotals:
    """Copy each thread primary -> secondary with the migrator, its live writes held meanwhile.

    The copy is ``shared.ops.migrate.copy_thread``: every checkpoint and write through the
    public API, each an upsert, into whatever the secondary already holds. Not ``migrate``,
    which rightly refuses a destination thread that differs from the source: a thread
    dual-written since the switch is partial in the secondary by construction (its new
    checkpoints refer to channel values stored only with older ones). And not "delete the
    thread, then migrate": LangGraph saves a task's writes concurrently with the checkpoint
    they belong to, often first, so a thread caught mid-step has writes whose checkpoint is
    not stored yet. No history copy can carry those (they belong to no checkpoint in it);
    deleting the secondary's dual-written copy of them would lose them for good (measured:
    one checkpoint in a few hundred came out without its writes). Upserting keeps them.

    ``src`` / ``dst``: the same stores through savers of the migrator's own (own connections),
    so the copy does not queue behind the live traffic on the serving savers' locks.
    """
    src, dst = src or dual.primary, dst or dual.secondary
    totals, started = CopyTotals(), time.perf_counter()
    for thread_id in threads:
        with dual.hold([thread_id]):
            checkpoints, writes, _ = copy_thread(src, dst, thread_id)
        totals.threads += 1
        totals.checkpoints += checkpoints
        totals.writes += writes
    totals.seconds = time.perf_counter() - started
    return totals


def verify_live(dual: DualWriteSaver, threads: Iterable[str], *,
                src: BaseCheckpointSaver | None = None,
                dst: BaseCheckpointSaver | None = None) -> CopyTotals:
    """``verify`` thread by thread, each thread's writes held so both sides are comparable."""
    src, dst = src or dual.primary, dst or dual.secondary
    totals, started = CopyTotals(), time.perf_counter()
    for thread_id in threads:
        with dual.hold([thread_id]):
            report = verify(src, dst, threads=[thread_id])
        totals.threads += report.threads
        totals.checkpoints += report.checkpoints
        totals.missing += report.missing
        totals.mismatches += report.mismatches
        totals.extra += getattr(report, "extra", 0)
        totals.examples.extend(report.examples[: max(0, 5 - len(totals.examples))])
    totals.seconds = time.perf_counter() - started
    return totals
