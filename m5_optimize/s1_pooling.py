"""5.1 Connection pooling: what a new connection costs by network path, pool sizing, PgBouncer.

A new connection per request pays TCP, TLS, startup and authentication round trips and a
server process; a pool checkout pays none. Both are measured in interleaved rounds on each
path to the server: Unix socket, TCP loopback, and TLS with 0, 1 and 5 ms of round-trip time
added by a proxy (``shared/infra/proxy.py``). The embedded PostgreSQL is built without
OpenSSL, so the proxy terminates TLS in front of it, as RDS Proxy or PgBouncer do; with
``DATABASE_URL`` pointing at a server that has TLS, the same measurement runs against it
directly (``sslmode=require``). Then 10 to 200 concurrent chat-graph runs share pools of 5 to
20 connections while ``pg_stat_activity`` is sampled; an exhausted pool says why in one
sentence; and PgBouncer in transaction mode serves 500 clients with 20 server connections,
where LangGraph's ``prepare_threshold=0`` breaks and ``None`` fixes it.
"""

from __future__ import annotations

from contextlib import ExitStack
from pathlib import Path

import shared.witness
from shared.errors import CheckpointError
from shared.infra.pgbouncer import find_pgbouncer, pgbouncer
from shared.infra.postgres import create_database
from shared.savers.pooling import PoolExhausted, PoolTimeout
from shared.witness import Witness, fresh_workdir
from shared.workloads.pooling import (
    acquisition,
    bounced_clients,
    concurrent_runs,
    exhausted,
    network_paths,
    setup_tables,
    ssl_in_use,
)

TLS_1MS = "TLS, +1 ms RTT"


def _sizes(text: str, what: str) -> list[int]:
    values = [int(v) for v in text.split(",") if v.strip().isdigit()]
    if not values or min(values) < 1 or len(values) != len(text.split(",")):
        raise CheckpointError(f"{what}={text!r}: give positive whole numbers separated by "
                              "commas, e.g. 10,50,200.")
    return values


def main(workdir: Path | None = None, calls: int = 100, rounds: int = 5,
         runs: str = "10,50,200", pools: str = "5,10,20", clients: int = 500,
         puts: int = 2) -> Witness:
    w = Witness("5.1", "Connection pooling")
    wd = fresh_workdir(workdir, "m5_s1_pooling")
    try:
        run_counts, pool_sizes = _sizes(runs, "runs"), _sizes(pools, "pools")
        if calls < 5 or rounds < 1 or clients < 1 or puts < 1:
            raise CheckpointError(f"calls={calls}, rounds={rounds}, clients={clients}, puts="
                                  f"{puts}: need calls >= 5 and the others >= 1.")
    except CheckpointError as exc:
        w.error = str(exc)
        return w
    with ExitStack() as stack:
        paths = stack.enter_context(network_paths(wd / "pg"))

        # --- 1. a new connection per request against a pool checkout, path by path --------
        cost = {p.label: acquisition(p.url, calls, rounds) for p in paths if p.url}
        w.show("path: query round trip | connect p50/p99 (new) | checkout p50/p99 (pool) | "
               "ratio | connect+query+close against checkout+query, p50 (ms)")
        for p in paths:
            if not p.url:
                w.show(f"{p.label:20} skipped: {p.skipped}")
                continue
            a = cost[p.label]
            w.show(f"{p.label:20} {a.query_rtt:5.2f} | {a.new_connect[0]:5.2f}/"
                   f"{a.new_connect[1]:5.2f} | {a.pool_checkout[0]:.3f}/{a.pool_checkout[1]:.3f}"
                   f" | {a.ratio:4.0f}x | {a.new_request[0]:5.2f} vs {a.pool_request[0]:.2f}")
        tls = cost[TLS_1MS]
        w.metric("unix_socket", "measured" if paths[0].url else "skipped")
        w.metric("tls_negotiated", all(ssl_in_use(p.url) for p in paths
                                       if p.url and p.label.startswith("TLS")), target="== yes")
        w.metric("query_rtt_tls_1ms", round(tls.query_rtt, 3), "ms", ">= 1")
        w.metric("pool_checkout_p99", round(max(a.pool_checkout[1] for a in cost.values()), 3),
                 "ms", "< 1")
        w.metric("new_connect_p50_tls_1ms", round(tls.new_connect[0], 2), "ms")
        w.metric("acquire_new_over_pool_tls_1ms", round(tls.ratio, 1), "x", ">= 50")
        w.metric("request_new_over_pool_tls_1ms",
                 round(tls.new_request[0] / tls.pool_request[0], 1), "x")

        # --- 2. pool sizing: concurrent graph runs on pools of a few connections -----------
        db = create_database(paths[1].url, "ckpt_m5_s1_pooling")
        setup_tables(db)
        sizing = [concurrent_runs(db, n, m) for n in run_counts for m in pool_sizes]
        for s in sizing:
            w.show(f"{s.runs:4} runs on a pool of {s.pool_max:3}: {s.runs_per_s:6.0f} runs/s, "
                   f"p99 {s.p99_ms:6.0f} ms, server held at most {s.max_server_conns} "
                   f"connections ({s.samples} samples of pg_stat_activity)")
        w.metric("runs_failed", sum(s.failed for s in sizing), "runs", "== 0")
        w.metric("server_conns_over_pool_max",
                 max(s.max_server_conns - s.pool_max for s in sizing), "conns", "<= 0")
        w.metric("activity_samples_min", min(s.samples for s in sizing), "samples", ">= 3")
        big = [s for s in sizing if s.runs == max(run_counts)]
        for s in big[:1] + big[1:][-1:]:  # the smallest and the largest pool
            w.metric(f"runs_per_s_{s.runs}_on_{s.pool_max}", round(s.runs_per_s, 1), "runs/s")

        # --- 3. an exhausted pool: one sentence, still a PoolTimeout -----------------------
        errors = exhausted(db, max_size=2, holders=4, timeout=0.2)
        w.show(f"exhausted pool: {errors[0]}" if errors else "exhausted pool: no error")
        w.metric("exhausted_timeouts", len(errors), "requests", "== 2")
        w.metric("exhausted_is_pool_timeout", bool(errors) and all(
            isinstance(e, PoolExhausted) and isinstance(e, PoolTimeout) for e in errors),
            target="== yes")
        w.metric("exhausted_says_max_size_and_timeout", bool(errors) and all(
            "max_size=2" in str(e) and "timeout" in str(e) and "0.2 s" in str(e)
            for e in errors), target="== yes")

        # --- 4. PgBouncer in transaction mode: many clients, few server connections -------
        if find_pgbouncer() is None:
            w.show("PgBouncer: skipped, no pgbouncer binary (set PGBOUNCER or apt-get install "
                   "pgbouncer); its metrics say 'skipped'.")
            for name in ("bouncer_clients_ok", "bouncer_server_conns_max",
                         "prepared_errors_threshold_0", "prepared_errors_threshold_5",
                         "prepared_errors_threshold_none"):
                w.metric(name, "skipped")
        else:
            _bouncer(w, stack, paths[1].url, clients, puts)
    w.note("prepare_threshold=0 (LangGraph's setting) means 'prepare every statement on first "
           "use', not 'no prepared statements': None disables them. Behind PgBouncer in "
           "transaction mode use None (PgBouncer >= 1.21 can also track them: "
           "max_prepared_statements; Debian bookworm ships 1.18).")
    w.note("The seed's '50 ms -> 5 ms' (10x) is what one request with one query saves at about "
           "1 ms RTT; acquisition alone (connect against checkout) differs by far more.")
    return w


def _bouncer(w: Witness, stack: ExitStack, url: str, clients: int, puts: int) -> None:
    """500 clients over 20 server connections; prepared statements broken, then fixed."""
    bdb = create_database(url, "ckpt_m5_s1_bouncer")
    setup_tables(bdb)
    bounced = stack.enter_context(pgbouncer(bdb, pool_size=20, pool_mode="transaction",
                                            max_client_conn=max(600, clients + 50)))
    many = bounced_clients(bounced, bdb, clients, puts, None, tag="many")
    w.show(f"PgBouncer: {many.max_clients_open} client connections open at once, "
           f"{many.clients_ok} finished their {2 * puts} calls, over at most "
           f"{many.max_server_conns} server connections, in {many.seconds:.1f} s")
    broken = {thr: bounced_clients(bounced, bdb, 50, reps, thr, tag=f"thr{thr}")
              for thr, reps in ((0, 4), (5, 8))}  # 5: only once a statement ran 5 times
    fixed = bounced_clients(bounced, bdb, 50, 4, None, tag="fixed")
    for thr, b in {**broken, None: fixed}.items():
        w.show(f"prepare_threshold={thr}: {b.errors} of {b.calls} calls failed "
               f"{b.error_kinds or ''} {b.error_examples[:2] or ''}".rstrip())
    w.metric("bouncer_clients_ok", many.clients_ok, "clients", f"== {clients}")
    w.metric("bouncer_server_conns_max", many.max_server_conns, "conns", "<= 20")
    w.metric("prepared_errors_threshold_0", broken[0].errors, "errors", "> 0")
    w.metric("prepared_errors_threshold_5", broken[5].errors, "errors", "> 0")
    w.metric("prepared_errors_threshold_none", fixed.errors, "errors", "== 0")


if __name__ == "__main__":
    raise SystemExit(shared.witness.cli(main))
