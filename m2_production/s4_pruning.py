"""2.4 Pruning: 90 days of chat traffic, a 30-day retention policy, and a file that levels off.

The official SqliteSaver never deletes. ``shared.ops.prune`` deletes checkpoints older than
30 days except the newest ``keep_last`` of each thread, keeps whatever the kept ones need
(DeltaChannel ancestors), removes their writes, cuts parent links only where it deleted the
parent, and VACUUMs. Here it runs on 90 days of traffic, then ten times more, once a day,
and the file size must level off (under 5 % growth over the last five days).

How 90 days are made: a real graph cannot run in the past without faking its clock, so the
traffic goes through the saver's public ``put``/``put_writes``, row for row as the shared
chat graph writes it (per turn: input, START and chatbot checkpoints with their writes), with
``ts`` and the uuid6 id both made for the simulated moment. At the end the real chat graph
continues a pruned conversation, and its own rows show that id time and ``ts`` agree.

The planner reads age from the uuid6 id; every check below reads ``ts`` from the blobs
instead, so the verification does not trust the method it verifies.
"""

from __future__ import annotations

import random
from collections import defaultdict
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TypedDict

from langgraph.graph import START, StateGraph

import shared.witness
from shared.graph import build_chat_graph
from shared.infra.s3 import s3_client, s3_server
from shared.ops import prune
from shared.savers.offload import OffloadingSerializer, S3BlobStore, collect_unreferenced_blobs
from shared.savers.prunable import open_prunable_saver
from shared.witness import Witness, fresh_workdir
from shared.workloads import chat_days

RETAIN = timedelta(days=30)


class Upload(TypedDict):
    attachment: bytes


def _s3_gc(w: Witness, db: Path) -> None:
    """Offloaded blobs go with the last checkpoint that referenced them, and only then."""
    with s3_server(bucket="ckpt-prune-gc") as s3:
        store = S3BlobStore(s3_client(s3), s3.bucket)
        old, new = (random.Random(seed).randbytes(300 * 1024) for seed in (1, 2))
        with open_prunable_saver(db, serde=OffloadingSerializer(store=store)) as saver:
            graph = StateGraph(Upload).add_node("keep", lambda s: {})
            graph = graph.add_edge(START, "keep").compile(checkpointer=saver)
            config = {"configurable": {"thread_id": "upload"}}
            for blob in (old, new):  # the attachment is replaced: the old blob loses its rows
                graph.invoke({"attachment": blob}, config)
            objects = len(store.keys())
            result = prune.prune_now(saver, prune.RetentionPolicy(keep_last=1), after_prune=(
                lambda conn, dry: collect_unreferenced_blobs(conn, store, dry_run=dry)))
            exact = graph.get_state(config).values["attachment"] == new
    w.show(f"S3 GC: {objects} objects before the prune, deleted {result.after_prune}")
    w.metric("s3_objects_before_prune", objects, "objects", "== 2")
    w.metric("s3_unreferenced_collected", len(result.after_prune or []), "objects", "== 1")
    w.metric("s3_kept_blob_loads_exact", exact, target="== yes")


def main(workdir: Path | None = None, days: int = 90, conversations_per_day: int = 8,
         keep_last: int = 2, cycles: int = 10, seed: int = 7) -> Witness:
    w = Witness("2.4", "Pruning: retention for the SQLite saver")
    db = fresh_workdir(workdir, "m2_s4_pruning") / "checkpoints.sqlite"
    now = datetime.now(UTC) - timedelta(days=cycles)  # the drill's clock; the cycles end today
    policy = prune.RetentionPolicy(RETAIN, keep_last)
    with open_prunable_saver(db) as saver:
        conn, serde = saver.conn, saver.serde
        conn.execute("PRAGMA synchronous = NORMAL")  # WAL + NORMAL: no fsync for every put
        made, writes = chat_days.write_chat_days(saver, now - timedelta(days=days), days,
                                             conversations_per_day, seed, "traffic")
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")  # "before" = every page in the file
        before, counts0 = prune.audit_rows(conn), prune.audit_counts(conn)
        bytes0 = prune.file_bytes(conn)
        span = max(r.ts for r in before.values()) - min(r.ts for r in before.values())

        # --- dry run, the prune, and the same prune once more -------------------------------
        plan = prune.plan_prune(conn, policy, now=now, serde=serde)
        dry = prune.apply_prune(saver, plan, dry_run=True)
        dry_changed = (prune.audit_counts(conn) != counts0, prune.file_bytes(conn) != bytes0)
        done = prune.apply_prune(saver, plan)
        after, counts1 = prune.audit_rows(conn), prune.audit_counts(conn)
        again = prune.prune_now(saver, policy, now=now)

        # --- verify with each blob's own ts, not the ids the planner used -------------------
        cutoff = now - RETAIN
        by_thread = defaultdict(list)
        for k, row in before.items():
            by_thread[k[:2]].append((row.ts, k))
        rank = {k: i + 1 for rows in by_thread.values()
                for i, (_, k) in enumerate(sorted(rows, reverse=True))}
        deleted = before.keys() - after.keys()
        kept_old = [k for k in after if after[k].ts < cutoff]
        newest = prune.newest_reason(keep_last)
        unexplained = [k for k in kept_old if not (plan.keep_reasons.get(k) == prune.DELTA or (
            plan.keep_reasons.get(k) == newest and rank[k] <= keep_last))]
        cut = [k for k in after if after[k].parent is None and before[k].parent is not None]
        loads = sum(saver.get_tuple({"configurable": {
            "thread_id": t, "checkpoint_ns": ns, "checkpoint_id": c}}) is not None
            for t, ns, c in after)
        for reason, n in done.kept_reasons.items():
            w.show(f"kept {n:,} checkpoints: {reason}")

        # --- ten days more: a day of traffic, then the daily prune --------------------------
        sizes, kept_newest = [], [done.kept_reasons.get(newest, 0)]
        for day in range(cycles):
            chat_days.write_chat_days(saver, now, 1, conversations_per_day, seed,
                                  day_offset=days + day)
            now += timedelta(days=1)
            r = prune.prune_now(saver, policy, now=now)
            sizes.append(r.db_bytes_after)
            kept_newest.append(r.kept_reasons.get(newest, 0))
            w.show(f"day {days + day + 1}: {r.checkpoints_before:,} checkpoints, "
                   f"-{r.checkpoints_deleted:,}, file {r.db_bytes_after:,} bytes")

        # --- the real chat graph continues a pruned conversation ----------------------------
        config = {"configurable": {"thread_id": max({k[0] for k in deleted} & {
            k[0] for k in after})}}
        graph = build_chat_graph(saver)
        had = len(graph.get_state(config).values["messages"])
        graph.invoke({"messages": [("user", "Are you still there?")]}, config)
        resumed = len(graph.get_state(config).values["messages"]) == had + 2
        skew = max(abs(prune.uuid6_time(t.checkpoint["id"]) - datetime.fromisoformat(
            t.checkpoint["ts"])) for t in saver.list(config, limit=3))  # the graph's own rows

    freed = done.db_bytes_before - done.db_bytes_after
    w.metric("traffic_span_days", round(span / timedelta(days=1), 1), "days", f">= {days - 1}")
    w.metric("checkpoints_generated", made, "checkpoints")
    w.metric("writes_generated", writes, "writes")
    w.metric("dry_run_would_delete", dry.checkpoints_deleted, "checkpoints", "> 0")
    w.metric("dry_run_changed_rows", dry_changed[0], target="== no")
    w.metric("dry_run_changed_bytes", dry_changed[1], target="== no")
    w.metric("deleted_as_dry_run_said", done.checkpoints_deleted == dry.checkpoints_deleted,
             target="== yes")
    w.metric("deleted_by_sql_count", counts0["checkpoints"] - counts1["checkpoints"],
             "checkpoints", f"== {done.checkpoints_deleted}")
    w.metric("remaining_by_sql_count", counts1["checkpoints"], "checkpoints",
             f"== {done.checkpoints_after}")
    w.metric("deleted_against_policy", sum(before[k].ts >= cutoff or rank[k] <= keep_last
                                           for k in deleted), "checkpoints", "== 0")
    w.metric("old_checkpoints_kept", len(kept_old), "checkpoints")
    w.metric("old_kept_without_reason", len(unexplained), "checkpoints", "== 0")
    w.metric("kept_rows_changed", sum(after[k].digest != before[k].digest for k in after),
             "rows", "== 0")
    w.metric("kept_checkpoints_loading", round(100 * loads / len(after), 2), "%", "== 100")
    w.metric("parent_links_cut", len(cut), "links", f"== {done.parents_cut}")
    w.metric("cut_only_below_deleted", all((k[0], k[1], before[k].parent) in deleted
                                           for k in cut), target="== yes")
    w.metric("dangling_parent_links", counts1["dangling_parent_links"], "links", "== 0")
    w.metric("orphaned_writes", counts1["orphaned_writes"], "rows", "== 0")
    w.metric("second_run_deleted", again.checkpoints_deleted, "checkpoints", "== 0")
    w.metric("file_bytes_before", done.db_bytes_before, "bytes")
    w.metric("file_bytes_after", done.db_bytes_after, "bytes", f"< {done.db_bytes_before}")
    w.metric("file_shrink", round(100 * freed / done.db_bytes_before, 1), "%")
    w.metric("file_bytes_per_payload_byte_deleted", round(
        freed / (counts0["payload_bytes"] - counts1["payload_bytes"]), 2), "", ">= 0.9")
    w.metric("daily_cycles", len(sizes), "cycles", f"== {cycles}")
    if len(sizes) >= 6:
        w.metric("growth_over_last_5_cycles", round(100 * (sizes[-1] / sizes[-6] - 1), 2), "%",
                 "<= 5")
    w.metric("old_rows_kept_per_day", round((kept_newest[-1] - kept_newest[0]) / cycles, 1),
             "checkpoints")
    w.metric("pruned_thread_resumed", resumed, target="== yes")
    w.metric("uuid6_vs_ts_skew_real_rows", round(skew.total_seconds() * 1000, 3), "ms", "<= 50")
    _s3_gc(w, db.with_name("offloaded.sqlite"))
    w.note(f"Policy: {policy.describe()}. Age is the uuid6 time in each checkpoint id, "
           "compared as a string on the primary key; no blob is read.")
    w.note("A finished conversation keeps its newest keep_last checkpoints for ever "
           "(old_rows_kept_per_day): to bound that too, prune without --keep-last (idle "
           "threads go whole) or delete_thread() abandoned ones.")
    w.note("Traffic is written with PRAGMA synchronous=NORMAL (WAL), so 3 puts per turn "
           "measure the saver, not fsync.")
    return w


if __name__ == "__main__":
    raise SystemExit(shared.witness.cli(main))
