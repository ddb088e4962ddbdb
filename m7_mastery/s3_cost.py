"""7.3 The honest cost of tiering: Redis-only, PostgreSQL-only and tiered, from measured bytes.

The seeds claim "Redis-only = $3,680/month (10 shards)" and "Redis hot ($92) + PostgreSQL cold
($34) = $126/month (96% reduction)", with no workload and no sizes. Here the same chat
conversations are written to PostgreSQL (the official saver) and to plain Redis (the
``langgraph-checkpoint-plainredis`` peer, every checkpoint kept in Redis), and weighed:
on-disk growth of the checkpoint tables, ``MEMORY USAGE`` of every Redis key, ``INFO memory``.
The cost model (shared/ops/cost.py) turns those bytes into node counts with the prices of
config/prices.toml (each with its source and date), at 1k to 1M active threads.
"""

from __future__ import annotations

from pathlib import Path

import shared.witness
from shared.errors import CheckpointError
from shared.infra.postgres import create_database, postgres_server
from shared.infra.redis import redis_server
from shared.ops.cost import GIB, Prices, Workload, all_bills, load_prices, redis_capacity
from shared.witness import Witness, fresh_workdir
from shared.workloads.cost_sizes import Sizes, measure_sizes

SEED = {"redis_only": 3680.0, "shards": 10, "redis_hot": 92.0, "pg_cold": 34.0,
        "tiered": 126.0, "saving_pct": 96.0, "checkpoint_bytes": 10 * 1024, "hot_keep": 10,
        "writes_per_s": 500}


def workload(threads: int, s: Sizes, turns_per_day: float, retention_days: float) -> Workload:
    """A profile at ``threads`` active threads with the measured sizes."""
    return Workload(threads, turns_per_day, s.checkpoints_per_turn, retention_days, s.hot_keep,
                    s.pg_bytes_per_checkpoint, s.redis_bytes_per_checkpoint,
                    s.redis_hot_bytes_per_checkpoint, s.redis_overhead)


def seed_node(prices: Prices) -> tuple[str, float]:
    """Today's ElastiCache node whose month is nearest the seeds' $3,680 / 10 shards."""
    per_shard = SEED["redis_only"] / SEED["shards"]
    node = min(prices.elasticache,
               key=lambda n: abs(n.usd_per_hour * prices.hours_per_month - per_shard))
    return node.name, round(node.usd_per_hour * prices.hours_per_month, 2)


def main(workdir: Path | None = None, threads: int = 40, turns: int = 10,
         scales: str = "1000,10000,100000,1000000", retention_days: int = 30) -> Witness:
    w = Witness("7.3", "The honest cost of tiering")
    wd = fresh_workdir(workdir, "m7_s3_cost")
    try:
        levels = sorted({int(x) for x in scales.split(",") if x.strip()})
        if not levels or min(levels) < 1:
            raise CheckpointError(f"--scales {scales!r}: give positive thread counts, "
                                  "e.g. 1000,10000.")
        prices = load_prices()
        with postgres_server(wd / "pg") as server, redis_server(wd / "redis") as redis_url:
            url = create_database(server, "ckpt_m7_s3_cost")
            s = measure_sizes(url, redis_url, threads=threads, turns=turns)
    except CheckpointError as exc:
        w.error = " ".join(str(exc).split())
        return w

    # --- what one checkpoint weighs, measured
    w.show(f"{s.threads} conversations x {s.turns} turns = {s.checkpoints} checkpoints in each "
           f"store ({s.checkpoints_per_turn:g} a turn)")
    w.metric("checkpoints_per_turn", s.checkpoints_per_turn, "", "> 0")
    w.metric("pg_bytes_per_checkpoint", s.pg_bytes_per_checkpoint, "bytes", "> 0")
    w.metric("redis_bytes_per_checkpoint", s.redis_bytes_per_checkpoint, "bytes", "> 0")
    w.metric("redis_hot_bytes_per_checkpoint", s.redis_hot_bytes_per_checkpoint, "bytes", "> 0")
    w.metric("redis_used_memory_over_keys", s.redis_overhead, "x")
    w.metric("redis_over_pg_bytes", round(s.redis_bytes_per_checkpoint
                                          / s.pg_bytes_per_checkpoint, 2), "x")

    # --- monthly cost at each scale
    savings, extras = [], []
    for n in levels:
        bills = all_bills(workload(n, s, turns, retention_days), prices)
        r, p, t = (bills[k].usd_per_month for k in ("Redis-only", "PostgreSQL-only", "tiered"))
        savings.append(round(100 * (1 - t / r), 1))
        extras.append(round(t - p, 2))
        for key, value in (("redis_only", r), ("postgres_only", p), ("tiered", t)):
            w.metric(f"usd_month_{key}_{n}", value, "$/month")
        w.show(f"{n:>9,} threads: Redis-only ${r:>10,.2f} ({bills['Redis-only'].describe()}) | "
               f"PostgreSQL-only ${p:,.2f} ({bills['PostgreSQL-only'].describe()}) | "
               f"tiered ${t:,.2f} ({bills['tiered'].describe()})")
    w.metric("scales_where_tiered_beats_redis_only", sum(x > 0 for x in savings),
             f"of {len(levels)}", f"== {len(levels)}")
    w.metric("tiered_saving_vs_redis_only_min", min(savings), "%", "> 0")
    w.metric("tiered_saving_vs_redis_only_max", max(savings), "%")
    w.metric("tiered_extra_over_postgres_only_max", max(extras), "$/month")

    # --- the seeds' own figures with today's prices
    node, month = seed_node(prices)
    held = redis_capacity(node, SEED["shards"], prices)
    hours = held / SEED["checkpoint_bytes"] / SEED["writes_per_s"] / 3600
    w.show(f"seeds: Redis-only ${SEED['redis_only']:,.0f} = {SEED['shards']} shards of "
           f"${SEED['redis_only'] / SEED['shards']:,.0f}; today's nearest node {node} costs "
           f"${month:,.2f}, so 10 shards = ${10 * month:,.2f}")
    w.show(f"seeds: 10 x {node} hold {held / GIB:,.0f} GiB = {hours:,.1f} h of their own "
           f"{SEED['writes_per_s']} writes/s of 10 KB checkpoints: '10 shards' is no size "
           "computed from a workload")
    w.show(f"seeds: tiered ${SEED['tiered']:,.0f} (Redis ${SEED['redis_hot']:,.0f} + "
           f"PostgreSQL ${SEED['pg_cold']:,.0f}) = {SEED['saving_pct']:g}% saving; measured: "
           f"{min(savings):g}% to {max(savings):g}% across {len(levels)} scales")
    w.metric("seed_10_shards_usd_month_today", round(10 * month, 2), "$/month")
    w.metric("seed_10_shards_hold_hours_at_500_writes_s", round(hours, 1), "h")
    w.metric("seed_saving_claimed", SEED["saving_pct"], "%")
    unverified = prices.unverified()
    w.note(f"Bytes per checkpoint grow with the conversation (the chat graph keeps every "
           f"message): measured on {turns}-turn conversations, {turns} turns a day per active "
           f"thread, {retention_days} days kept, hot tier = newest {s.hot_keep} checkpoints.")
    w.note("Tiered is cheaper than Redis-only because history leaves memory; it is dearer "
           "than PostgreSQL-only, whose RAM already holds the hot set: the hot tier buys read "
           "latency (7.2), not a lower bill.")
    w.note(f"{len(unverified)} prices in config/prices.toml could not be confirmed on a "
           f"readable page (source 'not found: ...'): {', '.join(unverified)}.")
    return w


if __name__ == "__main__":
    raise SystemExit(shared.witness.cli(main))
