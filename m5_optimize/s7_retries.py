"""5.7 Retries that outlive a crash: SIGKILL PostgreSQL mid-traffic, restart it, lose nothing.

``RetryingSaver`` (shared/savers/retry.py) repeats a checkpoint call that failed with a
transient error (connection lost, server shutting down or starting, pool timeout,
serialization failure) after a jittered, growing sleep; a permanent error is raised at once.

The drill: worker threads invoke the shared chat graph through ``PostgresSaver`` on a pool,
in two arms side by side, with the wrapper and without. The embedded PostgreSQL is killed
with SIGKILL (no shutdown, crash recovery on restart) and started again on the same data
directory and port, ``kills`` times. Every ``put`` that returned is written in a ledger: an
acknowledged checkpoint. Afterwards: how many invocations failed in each arm, whether every
acknowledged checkpoint is in the table, and whether any message or step was stored twice.
The server runs with ``fsync=on``, ``full_page_writes=on`` and ``synchronous_commit=on``
(read back from it and printed): an acknowledged commit is on disk, so what crash recovery
brings back is what a crashed production server would bring back.
"""

from __future__ import annotations

import time
from pathlib import Path

import shared.witness
from shared.bench import percentile
from shared.errors import CheckpointError
from shared.infra.postgres import DURABLE, durability, embedded_postgres
from shared.witness import Witness, fresh_workdir
from shared.workloads import restart_drill
from shared.workloads.postgres_writers import setup_postgres


def main(workdir: Path | None = None, kills: int = 10, workers: int = 2,
         traffic_s: float = 1.5, down_s: float = 1.0, retries: int = 20,
         max_delay: float = 2.0, pool_timeout: float = 0.5) -> Witness:
    w = Witness("5.7", "Retries that outlive a database crash")
    wd = fresh_workdir(workdir, "m5_s7_retries")
    outages: list[float] = []
    try:
        with embedded_postgres(wd / "pg", settings=DURABLE) as server:
            setup_postgres(server.url)
            settings = durability(server.url)
            with restart_drill.traffic(server.url, workers=workers, retries=retries,
                                       max_delay=max_delay, pool_timeout=pool_timeout) as arms:
                for _ in range(kills):
                    time.sleep(traffic_s)
                    killed = time.monotonic()
                    server.kill()  # SIGKILL: no shutdown, no goodbye to the clients
                    time.sleep(down_s)
                    server.restart()  # crash recovery, same port: the URL stays valid
                    outages.append(time.monotonic() - killed)
                time.sleep(traffic_s)  # the last outage's retries come through
            found = restart_drill.audit(server.url, arms)
    except CheckpointError as exc:
        w.error = " ".join(str(exc).split())
        return w

    mine, plain = arms["retrying"], arms["plain"]
    w.show(f"server: {settings} (an acknowledged commit is on disk before the SIGKILL)")
    w.metric("server_fsync_on", "fsync=on" in settings, "", "== yes")
    w.note("The application's outage is longer than the server's: after a failed reconnection "
           "psycopg_pool waits 1, 2, 4 s ... before its next attempt, so the retry budget "
           f"({retries} retries, sleeps capped at {max_delay:g} s, each attempt waiting up to "
           f"{pool_timeout:g} s for a connection) must cover that too.")
    w.show(f"{kills} SIGKILLs, each down {down_s:g} s then restarted: outage (kill to accepting "
           f"connections) median {percentile(outages, 50):.2f} s, longest {max(outages):.2f} s")
    for arm in (mine, plain):
        errors = ", ".join(f"{n} {e}" for e, n in arm.errors.most_common()) or "none"
        w.show(f"{arm.name:>8}: {arm.ok:,} invocations returned, {arm.failed:,} failed "
               f"({errors}); {len(arm.acked):,} checkpoints acknowledged")
    w.show(f"the wrapper retried {len(mine.retries):,} calls; the most attempts one call "
           f"needed: {max(mine.retries, default=0) + 1} (budget: 1 + {retries})")
    w.metric("kills", len(outages), "SIGKILLs", f"== {kills}")
    w.metric("outage_longest_s", round(max(outages), 2), "s")
    w.metric("invocations_with_wrapper", mine.ok, "invocations", "> 0")
    w.metric("failed_with_wrapper", mine.failed, "invocations", "== 0")
    w.metric("failed_without_wrapper", plain.failed, "invocations", "> 0")
    w.metric("invocations_without_wrapper", plain.ok, "invocations", "> 0")
    w.metric("retries", len(mine.retries), "retries", "> 0")
    w.metric("acknowledged_checkpoints", len(mine.acked) + len(plain.acked), "checkpoints",
             "> 0")
    w.metric("acknowledged_lost_with_wrapper", found.lost["retrying"], "checkpoints", "== 0")
    w.metric("acknowledged_lost_without_wrapper", found.lost["plain"], "checkpoints", "== 0")
    w.metric("duplicate_messages", found.duplicate_messages, "messages", "== 0")
    w.metric("duplicate_checkpoint_steps", found.duplicate_steps, "checkpoints", "== 0")
    w.metric("conversations_unlike_their_turns", found.mismatched_threads, "threads", "== 0")
    w.metric("conversations_checked", found.threads_checked, "threads", "> 0")
    return w


if __name__ == "__main__":
    raise SystemExit(shared.witness.cli(main))
