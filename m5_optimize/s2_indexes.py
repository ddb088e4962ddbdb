"""5.2 Indexes at a million checkpoints: which PostgresSaver queries an index speeds up.

A history of ``checkpoints`` over ``threads`` is loaded with the migrator's batched COPY writer
(``shared.workloads.history``). Its shape comes from real runs of the shared chat graph on
``PostgresSaver``: each thread replays a prefix of one recorded conversation (its channel
blobs, pending writes and LangGraph's metadata), with its own ids, times and owner
(``user_id`` Zipf-like, ``session_type``). The database is then copied, and the copy gets the
indexes through ``ckpt pg indexes --apply`` (``CREATE INDEX CONCURRENTLY``). For each query
LangGraph users run, through the official saver on both copies: ``EXPLAIN (ANALYZE, BUFFERS)``
plans, p50/p99 in interleaved rounds, every result checked against the plan's own answer.
The cost side: each index's bytes and ``put`` p99 with and without it. At full scale (1M
checkpoints) the filtered ``list`` must be >= 25x faster and < 5 ms p99; at a smaller scale
the table scan it replaces is smaller, so the speed-up target is lower and the p99 must beat
the scan's (said in the metric).
"""

from __future__ import annotations

import contextlib
import io
from pathlib import Path

import shared.witness
from shared.bench import interleave
from shared.cli import main as ckpt
from shared.errors import CheckpointError
from shared.infra.postgres import create_database, drop_database, postgres_server
from shared.ops.pg_indexes import INDEXES, SERVED_BY_SETUP, apply_indexes
from shared.savers import open_postgres_saver
from shared.witness import Witness, fresh_workdir
from shared.workloads.history import HistoryPlan, clone_database, load_history
from shared.workloads.saver_queries import KINDS, SaverQueries, bench_put, key_lines, scans

FULL_SCALE = 1_000_000


def main(workdir: Path | None = None, checkpoints: int = FULL_SCALE, threads: int = 100_000,
         calls: int = 40, rounds: int = 5, puts: int = 200, seed: int = 0) -> Witness:
    w = Witness("5.2", "Indexes at a million checkpoints")
    wd = fresh_workdir(workdir, "m5_s2_indexes")
    full = checkpoints >= FULL_SCALE
    try:
        plan = HistoryPlan(checkpoints, threads, max(1, threads // 10), seed)
        with postgres_server(wd / "pg") as server:
            # --- load once, copy, index the copy with the command an operator would run ---
            before_url = create_database(server, "ckpt_m5_s2_plain")
            load = load_history(before_url, checkpoints=checkpoints, threads=threads, seed=seed)
            after_url = clone_database(before_url, "ckpt_m5_s2_indexed")
            out = io.StringIO()
            with contextlib.redirect_stdout(out):
                exit_code = ckpt(["pg", "indexes", after_url, "--apply", "--json"])
            again = apply_indexes(after_url)  # a second run: nothing to do
            with open_postgres_saver(before_url) as plain, open_postgres_saver(after_url) as idx:
                for s in (plain, idx):
                    s.conn.execute("VACUUM ANALYZE")
                q = SaverQueries(plan)
                wrong = speedup = 0.0
                for kind in KINDS:
                    old, new = q.explain(plain, kind), q.explain(idx, kind)
                    w.show(f"{kind} without: {' | '.join(key_lines(old, 3))}")
                    w.show(f"{kind} with:    {' | '.join(key_lines(new, 3))}")
                    wrong += q.wrong(plain, kind) + q.wrong(idx, kind)
                    run = {"without": q.caller(plain, kind), "with": q.caller(idx, kind)}
                    slow = max(5, calls // 4) if kind == "filtered_list" else calls  # scans
                    counts = {"without": slow, "with": calls}
                    cmp = interleave(run, counts, k=rounds)
                    p50 = interleave(run, counts, k=rounds, q=50, warmup=0)
                    ratio = cmp.ratio("without", "with")
                    w.show(f"{kind}: {cmp.describe()}; speed-up {ratio:.1f}x "
                           f"({cmp.ratio_spread('without', 'with')}); on CPU time: "
                           f"{cmp.describe('cpu')}")
                    for name in ("without", "with"):  # p50: median round; p99: best round
                        w.metric(f"{kind}_p50_{name}_ms", round(p50[name].median, 3), "ms")
                        # the seed's "< 5 ms" is a claim at 1M: below that, faster than
                        # the scan it replaces (a test session's shared server is slower)
                        budget = "< 5" if full else f"< {cmp['without'].best:.3f}"
                        target = budget if name == "with" and kind == "filtered_list" else None
                        w.metric(f"{kind}_p99_{name}_ms", round(cmp[name].best, 3), "ms", target)
                    if kind == "filtered_list":
                        speedup = ratio
                        w.show(f"filtered_list scans without: {scans(old)}; with: {scans(new)}")
                        w.metric("filtered_scans_table_without", "Seq Scan on checkpoints" in
                                 scans(old), target="== yes")  # Parallel Seq Scan at 1M
                        w.metric("filtered_uses_gin", INDEXES[0].name in scans(new),
                                 target="== yes")
                    else:  # the primary key serves: the index is not even considered
                        w.metric(f"{kind}_same_plan", scans(old) == scans(new), target="== yes")
                put = bench_put(plain, idx, puts, rounds)
                sizes = {r["relname"]: r["b"] for r in idx.conn.execute(
                    "SELECT c.relname, pg_relation_size(c.oid) b FROM pg_class c WHERE "
                    "c.relname = ANY(%s)", ([i.name for i in INDEXES] + ["checkpoints"],))}
            for name in ("ckpt_m5_s2_plain", "ckpt_m5_s2_indexed"):  # GBs at full scale
                drop_database(server, name)
    except CheckpointError as exc:
        w.error = " ".join(str(exc).split())
        return w

    # --- what was loaded, what the index costs, what it bought -------------------------------
    w.show(f"loaded {load.checkpoints:,} checkpoints, {load.writes:,} writes, {load.blobs:,} "
           f"blobs over {load.threads:,} threads in {load.seconds:.1f} s "
           f"({load.checkpoints_per_s:,.0f} checkpoints/s)")
    w.show(f"filter users own {min(q.matched)}..{max(q.matched)} checkpoints each")
    w.show("served by setup()'s indexes already: " + "; ".join(f"{c} -> {i}"
                                                          for c, i in SERVED_BY_SETUP))
    w.show(f"put: {put.describe()}")
    w.metric("checkpoints_loaded", load.checkpoints, "rows", f"== {checkpoints}")
    w.metric("load_checkpoints_per_s", round(load.checkpoints_per_s), "ckpt/s")
    w.metric("wrong_result_sets", int(wrong), "sets", "== 0")
    w.metric("filtered_speedup", round(speedup, 1), "x", ">= 25" if full else ">= 2")
    w.metric("cli_exit", exit_code, target="== 0")
    w.metric("second_apply_changes", sum(r.action != "kept" for r in again), "indexes", "== 0")
    for i in INDEXES:
        w.metric(f"{i.name}_bytes", sizes.get(i.name, 0), "bytes", "> 0")
    w.metric("index_to_table_bytes", round(sum(sizes.get(i.name, 0) for i in INDEXES)
                                           / max(1, sizes.get("checkpoints", 1)), 3), "x")
    w.metric("put_p99_without_ms", round(put["without"].best, 3), "ms")
    w.metric("put_p99_with_ms", round(put["with"].best, 3), "ms")
    w.metric("put_p99_ratio", round(put.ratio("with", "without"), 2), "x", "< 2")
    scale_note = ("full scale: >= 25x at 1M checkpoints" if full else "a smaller scale: >= 2x, "
                  "as the scan it replaces grows with the table (25x is enforced at 1M)")
    w.note(f"Filtered list speed-up target at {scale_note}; p99 with the index "
           + ("< 5 ms." if full else "below the scan's (< 5 ms is enforced at 1M)."))
    w.note("Latest checkpoint, history pages and pending writes are served by the indexes "
           "setup() creates (primary keys, thread_id): a new index cannot help them, and the "
           "plans show it is not used. Their p99 is reported, not targeted here (5.3's budget): "
           "a history page's time is mostly the saver decoding 10 checkpoints in Python.")
    return w


if __name__ == "__main__":
    raise SystemExit(shared.witness.cli(main))
