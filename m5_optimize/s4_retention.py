"""5.4 Retention on PostgreSQL: 90 days of chat traffic, ``ckpt prune URL``, live writers.

PostgresSaver never deletes by age. ``ckpt prune postgresql://... --older-than 30d
--keep-last N`` applies Milestone 2's retention rules to its tables (the same planner, over
PostgreSQL rows, nothing decoded) in short batched transactions with a lock timeout, removing
the writes of deleted checkpoints and the blobs no remaining checkpoint references.

90 days are written through PostgresSaver's own ``put``/``put_writes``, row for row as the
shared chat graph writes them, with ``ts`` and uuid6 ids made for the simulated moments
(``shared.workloads.chat_days``, as in 2.4). Every check reads each checkpoint's own ``ts``,
not the ids the planner used: what must remain is computed in plain Python, then compared
with what SQL finds. Writer processes ``put`` through their own pools while the prune runs
(their rows are checked, then removed). Sizes: ``pg_total_relation_size`` of the 3 tables.
"""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from contextlib import ExitStack
from datetime import UTC, datetime, timedelta
from pathlib import Path

import psycopg

import shared.witness
from shared import ROOT
from shared.errors import CheckpointError
from shared.infra.postgres import create_database, postgres_server
from shared.ops.prune_pg import audit_counts, expected_after, prune_url, row_digests
from shared.savers import open_postgres_saver
from shared.savers.retention import DELTA, RetentionPolicy
from shared.savers.retention_pg import table_bytes
from shared.witness import Witness, fresh_workdir
from shared.workloads import chat_days
from shared.workloads.delta_graph import build_delta_graph, history
from shared.workloads.postgres_writers import measure_pg_writers, setup_postgres

RETAIN = timedelta(days=30)


def main(workdir: Path | None = None, days: int = 90, conversations_per_day: int = 24,
         keep_last: int = 3, batch_size: int = 300, writers: int = 2,
         writer_seconds: float = 3.0, seed: int = 5) -> Witness:
    w = Witness("5.4", "Retention on PostgreSQL")
    wd = fresh_workdir(workdir, "m5_s4_retention")
    with ExitStack() as stack:
        try:
            url = stack.enter_context(postgres_server(wd / "pg"))
        except CheckpointError as exc:
            w.error = " ".join(str(exc).split())
            return w
        db = create_database(url, "ckpt_m5_s4_retention")
        setup_postgres(db)
        # Day d's conversations run within its first ~22 h, so a cutoff 1 h before a day
        # starts falls where no checkpoint is: every run within the hour plans the same.
        now = datetime.now(UTC)
        with open_postgres_saver(db) as saver:
            made, writes = chat_days.write_chat_days(saver, now - timedelta(days=days, hours=-1),
                                                     days, conversations_per_day, seed)
        policy = RetentionPolicy(RETAIN, keep_last)
        with psycopg.connect(db, autocommit=True) as conn:
            before, bytes0 = row_digests(conn), table_bytes(conn)
            expect = expected_after(conn, now - RETAIN, keep_last, before)
            dry = prune_url(db, policy, dry_run=True)
            dry_changed = row_digests(conn) != before

            # --- the prune, while writer processes put checkpoints through their pools ------
            stats: list = []
            live = threading.Thread(target=lambda: stats.append(measure_pg_writers(
                db, wd, writers, seconds=writer_seconds, start_delay_s=0.3)))
            t0 = time.time()
            live.start()
            time.sleep(0.5)
            started = time.time()
            done = prune_url(db, policy, batch_size=batch_size, vacuum=False)
            ended = time.time()
            live.join()
            after, audit = row_digests(conn), audit_counts(conn)
            cli = subprocess.run([sys.executable, "-m", "shared.cli", "prune", db,
                                  "--older-than", "30d", "--keep-last", str(keep_last), "--json"],
                                 cwd=ROOT, capture_output=True, text=True, timeout=120)
            mine = {t: {k for k in rows if not k[0].startswith("pg-writer-")}
                    for t, rows in after.items()}
            ours = sum(1 for k in after["checkpoints"] if k[0].startswith("pg-writer-"))
            for table in ("checkpoints", "checkpoint_blobs", "checkpoint_writes"):
                conn.execute(f"DELETE FROM {table} WHERE thread_id LIKE 'pg-writer-%%'")  # noqa: S608
            bytes_pruned = table_bytes(conn)  # the writers' rows, checked, are gone too
            conn.execute("VACUUM checkpoints, checkpoint_blobs, checkpoint_writes")
            bytes_vacuumed = table_bytes(conn)

            # --- space: reused by new rows after plain VACUUM; returned only by VACUUM FULL --
            with open_postgres_saver(db) as saver:
                chat_days.write_chat_days(saver, now - timedelta(days=2), 1,
                                          conversations_per_day, seed, day_offset=days)
            bytes_rewritten = table_bytes(conn)
            payload = conn.execute("SELECT sum(octet_length(blob)) FROM checkpoint_blobs "
                                   "WHERE thread_id LIKE %s", (f"conv-{days:03d}-%",)).fetchone()[0]
            t_full = time.perf_counter()
            conn.execute("VACUUM FULL checkpoints, checkpoint_blobs, checkpoint_writes")
            full_s, bytes_full = time.perf_counter() - t_full, table_bytes(conn)

            # --- DeltaChannel safety: a kept checkpoint still loads its rebuilt list ---------
            with open_postgres_saver(db) as saver:
                graph, config = build_delta_graph(saver), {"configurable": {"thread_id": "delta"}}
                for i in range(6):
                    graph.invoke({"n": i}, config)
                delta_before = history(graph, config)
                delta = prune_url(db, RetentionPolicy(keep_last=2), ["delta"])
                delta_after = history(graph, config)
                graph.invoke({"n": 6}, config)
                continues = graph.get_state(config).values["items"] == list(range(7))

    w.show(f"{made:,} checkpoints and {writes:,} writes over {days} days; policy: "
           f"{policy.describe()}; {done.batches} batches of <= {batch_size}, "
           f"{done.retries} retried, {ended - started:.2f} s")
    w.show("kept: " + ", ".join(f"{n:,} {r}" for r, n in done.kept_reasons.items()))
    w.show("table bytes (pg_total_relation_size of the three tables): before "
           f"{sum(bytes0.values()):,}, after the prune {sum(bytes_pruned.values()):,}, after "
           f"plain VACUUM {sum(bytes_vacuumed.values()):,}, after a new day of traffic "
           f"{sum(bytes_rewritten.values()):,}, after VACUUM FULL {sum(bytes_full.values()):,}")
    w.metric("checkpoints_generated", made, "checkpoints", "> 0")
    w.metric("blobs_before", len(before["checkpoint_blobs"]), "rows", "> 0")
    w.metric("dry_run_would_delete", dry.checkpoints_deleted, "checkpoints", "> 0")
    w.metric("dry_run_changed_rows", dry_changed, target="== no")
    w.metric("deleted_as_dry_run_said", (done.checkpoints_deleted, done.blobs_deleted)
             == (dry.checkpoints_deleted, dry.blobs_deleted), target="== yes")
    for table, short in (("checkpoints", "checkpoints"), ("checkpoint_blobs", "blobs"),
                         ("checkpoint_writes", "writes")):
        w.metric(f"{short}_remaining_sql", len(mine[table]), "rows",
                 f"== {len(expect[table])}")
        w.metric(f"{short}_unlike_expectation", len(mine[table] ^ expect[table]), "rows", "== 0")
    w.metric("kept_rows_changed", sum(before[t][k] != after[t][k] for t in after
                                      for k in mine[t]), "rows", "== 0")
    for name, n in audit.items():
        w.metric(name, n, "rows", "== 0")
    w.metric("batches", done.batches, "transactions", "> 1")
    w.metric("prune_seconds", round(ended - started, 2), "s")
    ws = stats[0]
    w.metric("writer_puts_during_prune", ws.writes, "puts", "> 0")
    w.metric("prune_overlapped_writers", started < t0 + 0.3 + writer_seconds, target="== yes")
    w.metric("writer_errors", ws.lock_errors + ws.other_errors, "errors", "== 0")
    w.metric("writer_checkpoints_missing", ws.writes - ours, "checkpoints", "== 0")
    w.metric("writer_put_p99_ms", round(ws.p99_ms, 2), "ms")
    w.metric("cli_exit_status", cli.returncode, "", "== 0")
    w.metric("cli_second_run_deleted", cli.stdout.count('"checkpoints_deleted": 0'), "runs",
             "== 1")
    b0, b1, b2 = (sum(b.values()) for b in (bytes0, bytes_pruned, bytes_vacuumed))
    w.metric("table_bytes_before", b0, "bytes")
    w.metric("table_bytes_after_prune", b1, "bytes", f">= {int(0.9 * b0)}")
    w.metric("table_bytes_after_vacuum", b2, "bytes", f">= {int(0.9 * b0)}")
    w.metric("new_day_growth_bytes", sum(bytes_rewritten.values()) - b2, "bytes",
             f"< {payload}")
    w.metric("new_day_blob_payload_bytes", payload, "bytes")
    w.metric("table_bytes_after_vacuum_full", sum(bytes_full.values()), "bytes",
             f"< {int(b2 * (1 - 0.5 * done.checkpoints_deleted / made))}")
    w.metric("vacuum_full_seconds", round(full_s, 3), "s")
    w.metric("delta_ancestors_kept", delta.kept_reasons.get(DELTA, 0), "checkpoints", "> 0")
    w.metric("delta_history_unchanged", bool(delta_after) and all(
        delta_after[k] == delta_before[k] for k in delta_after), target="== yes")
    w.metric("delta_thread_continues", continues, target="== yes")
    w.note("Plain VACUUM (and autovacuum) makes the deleted rows' space reusable: the files "
           "keep their size, and the next day's rows fill it (new_day_growth_bytes < its blob "
           "payload). VACUUM FULL (or pg_repack) returns it to the OS, but VACUUM FULL holds "
           "an ACCESS EXCLUSIVE lock: every put and get waits for the rewrite.")
    return w


if __name__ == "__main__":
    raise SystemExit(shared.witness.cli(main))
