"""4.6 Live cutover: SQLite to PostgreSQL by dual-write while conversations keep running.

Proves, with a live load running through every phase (client threads talking in their
conversations turn after turn, and a viewer showing every conversation's history, each
reply and each history length checked):
- SQLite only -> dual-write (SQLite primary, PostgreSQL secondary) with the earlier history
  backfilled by the migrator -> verify (0 missing, 0 mismatches) -> reads of 10 %, 50 %,
  100 % of threads from PostgreSQL by a stable hash of the thread id -> SQLite retired:
  0 failed requests in every phase, each phase switched with a drain, never a pause;
- the share of reads PostgreSQL really served in each routing phase, counted by the saver;
- nothing is written to SQLite after its retirement, and every conversation begun before
  the cutover still knows the user's name afterwards, from PostgreSQL alone.
"""

from __future__ import annotations

import math
import sqlite3
import time
from pathlib import Path

from langgraph.checkpoint.postgres import PostgresSaver
from rich.progress import track

import shared.witness
from shared.graph import build_chat_graph
from shared.infra.postgres import create_database, postgres_server
from shared.ops.cutover import ChatLoad, Deployment, backfill, verify_live
from shared.ops.migrate import thread_ids, verify
from shared.savers import graph_serde, open_sqlite_saver, row_counts
from shared.savers.dualwrite import DualWriteSaver, ShareRouter
from shared.witness import Witness, fresh_workdir
from shared.workloads.postgres_writers import pg_pool

PHASES = ("sqlite", "dual_write", "verify", "route10", "route50", "route100", "postgres")


def main(workdir: Path | None = None, phase_s: float = 2.0, clients: int = 4,
         conversations: int = 8) -> Witness:
    w = Witness("4.6", "Live cutover: SQLite to PostgreSQL with zero downtime")
    wd = fresh_workdir(workdir, "m4_s4_cutover")
    db = wd / "checkpoints.sqlite"
    duals: dict[str, DualWriteSaver] = {}
    with postgres_server(wd / "pg") as server, open_sqlite_saver(db) as sqlite, \
            open_sqlite_saver(db) as sqlite_job, \
            pg_pool(create_database(server, "ckpt_m4_cutover")) as pool:
        pg, pg_job = (PostgresSaver(pool, serde=graph_serde()) for _ in "ab")  # the migrator's own
        pg.setup()

        def deploy(phase: str, share: float | None = None) -> float:
            duals[phase] = DualWriteSaver(sqlite, pg,
                                           router=ShareRouter(share) if share else None)
            return deployment.deploy(build_chat_graph(duals[phase]), phase)

        # --- phase 1: SQLite only, users talking -------------------------------------------
        deployment = Deployment(build_chat_graph(sqlite), "sqlite")
        with ChatLoad(deployment, clients, conversations) as load:
            time.sleep(phase_s)
            # --- phase 2: dual-write; the history from before it is backfilled -------------
            deploy("dual_write")  # returns once no request writes to SQLite alone
            before = thread_ids(sqlite)  # so every thread with a SQLite-only write is here
            filled = backfill(duals["dual_write"], track(before, "backfill", transient=True),
                              src=sqlite_job, dst=pg_job)
            time.sleep(phase_s)
            # --- phase 3: verify every thread, each held still for its comparison ----------
            deploy("verify")
            checked = verify_live(duals["verify"], thread_ids(sqlite), src=sqlite_job,
                                  dst=pg_job)
            time.sleep(max(0.0, phase_s - checked.seconds))  # a phase lasts phase_s at least
            # --- phases 4-6: reads move to PostgreSQL, thread by thread --------------------
            for share in (10, 50, 100):
                deploy(f"route{share}", share / 100)
                time.sleep(phase_s)
            # --- phase 7: SQLite retired ---------------------------------------------------
            drain_s = deployment.deploy(build_chat_graph(pg), "postgres")
            rows_at_retirement = row_counts(sqlite.conn)
            sqlite.conn.close()  # from here any use of SQLite would fail a request
            final = verify(sqlite_job, pg_job)  # SQLite is frozen now: nothing to hold
            time.sleep(phase_s)
        ro = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
        rows_after = row_counts(ro)
        ro.close()

        # --- after the cutover: the first turn is recalled, from PostgreSQL only -----------
        graph = build_chat_graph(pg)
        early = [c for c in load.conversations.values() if c.began_in == "sqlite" and c.turns]
        recalled = 0
        for c in early:
            out = graph.invoke({"messages": [("user", "What's my name?")]},
                               {"configurable": {"thread_id": c.thread_id}})
            recalled += out["messages"][-1].content == f"Your name is {c.name}."
            if c is early[0]:
                w.show(f"{c.thread_id} after {c.turns} turns, PostgreSQL only: "
                       f"'What's my name?' -> {out['messages'][-1].content!r}")

    # --- metrics, phase by phase ---------------------------------------------------------
    for phase in PHASES:
        s = load.stats.get(phase)
        w.metric(f"{phase}.requests", s.requests if s else 0, "requests", "> 0")
        w.metric(f"{phase}.failed_requests", s.failed if s else 0, "requests", "== 0")
        w.metric(f"{phase}.turn_p99_ms", s.turn_p99_ms if s else 0.0, "ms")
        if s:
            w.show(f"{phase}: {s.turns:,} turns, {s.views:,} history views, p99 turn "
                   f"{s.turn_p99_ms:.0f} ms" + "".join(f"\n  {e}" for e in s.errors))
    w.metric("backfill.threads", filled.threads, "threads", f"== {len(before)}")
    w.metric("backfill.checkpoints", filled.checkpoints, "checkpoints", "> 0")
    w.metric("verify.checkpoints", checked.checkpoints, "checkpoints", "> 0")
    w.metric("verify.missing", checked.missing, "checkpoints", "== 0")
    w.metric("verify.mismatches", checked.mismatches, "checkpoints", "== 0")
    w.metric("verify.only_in_postgres", checked.extra, "checkpoints", "== 0")
    for line in checked.examples + final.examples:
        if not line.endswith("not in the source"):  # those are PostgreSQL's newer ones
            w.show(f"verify: {line}")
    # The hash draws each thread once: over n threads its share is a sample, sd known.
    for share in (10, 50, 100):
        reads, by_thread = duals[f"route{share}"].reads, duals[f"route{share}"].thread_reads
        measured = 100 * reads["secondary"] / max(1, sum(reads.values()))
        n = len({t for t, _ in by_thread})
        on_pg = 100 * len({t for t, side in by_thread if side == "secondary"}) / max(1, n)
        sd = 100 * math.sqrt(share / 100 * (1 - share / 100) / max(1, n))
        w.metric(f"route{share}.pg_read_share", measured, "%",
                 "== 100" if share == 100 else "> 0")
        w.metric(f"route{share}.threads_read", n, "threads", "> 0")
        w.metric(f"route{share}.pg_thread_share_deviation", abs(on_pg - share), "pts",
                 f"<= {3 * sd:.1f}")
        w.show(f"route{share}: PostgreSQL served {reads['secondary']:,} of "
               f"{sum(reads.values()):,} reads ({measured:.1f} %), {on_pg:.1f} % of {n} "
               f"threads (3 sd = {3 * sd:.1f} pts)")
    w.metric("secondary_write_failures", sum(len(d.divergences) for d in duals.values()),
             "writes", "== 0")
    w.metric("retire.drain_s", drain_s, "s")
    w.metric("retire.checkpoints_compared", final.checkpoints, "checkpoints", "> 0")
    w.metric("retire.missing_or_mismatched", final.missing + final.mismatches,
             "checkpoints", "== 0")
    w.show(f"after retirement: every one of {final.checkpoints:,} SQLite checkpoints equal in "
           f"PostgreSQL, which also holds {getattr(final, 'extra', 0):,} newer ones of theirs")
    w.metric("sqlite_rows_written_after_retirement",
             sum(rows_after) - sum(rows_at_retirement), "rows", "== 0")
    w.metric("conversations_begun_before_cutover", len(early), "threads", "> 0")
    w.metric("recalled_first_turn_after_cutover", recalled, "threads", f"== {len(early)}")
    began = {p: sum(c.began_in == p for c in load.conversations.values()) for p in PHASES}
    w.show("conversations begun per phase: " + ", ".join(f"{p} {n}" for p, n in began.items()))
    w.show(f"backfill: {filled.checkpoints:,} checkpoints of {filled.threads} threads in "
           f"{filled.seconds:.2f} s; verify: {checked.checkpoints:,} in {checked.seconds:.2f} s")
    w.note("A failed request is an exception, a wrong reply or a history of the wrong length: "
           "a read from a PostgreSQL missing part of a thread would show here.")
    w.note("Reads move to PostgreSQL only after the backfill and the verification: a "
           "dual-written checkpoint refers to channel values written before dual-write began, "
           "which only the backfill brings over.")
    w.note("Each switch is a drain, not a pause: new requests take the new saver at once, the "
           "switch completes when the last request on the old one returns.")
    return w


if __name__ == "__main__":
    raise SystemExit(shared.witness.cli(main))
