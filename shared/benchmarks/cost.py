"""Monthly cost of Redis-only, PostgreSQL-only and tiered by number of active threads.

Bytes per checkpoint are measured as in lesson 7.3 (``shared.workloads.cost_sizes``: the same
chat conversations in PostgreSQL and in plain Redis), then priced with config/prices.toml by
``shared.ops.cost`` at every scale.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from shared.infra.postgres import create_database, postgres_server
from shared.infra.redis import redis_server
from shared.ops.cost import Workload, all_bills, load_prices
from shared.workloads.cost_sizes import measure_sizes


def measure_cost(workdir: Path, threads: int = 40, turns: int = 10,
                 scales: tuple[int, ...] = (1_000, 10_000, 100_000, 1_000_000),
                 retention_days: int = 30,
                 on_step: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Measured sizes, then each setup's bill ($/month and its parts) at each scale."""
    step = on_step or (lambda _msg: None)
    workdir.mkdir(parents=True, exist_ok=True)
    prices = load_prices()
    step(f"{threads} conversations x {turns} turns into PostgreSQL and plain Redis")
    with postgres_server(workdir / "pg") as server, redis_server(workdir / "redis") as redis:
        sizes = measure_sizes(create_database(server, "ckpt_bench_cost"), redis,
                              threads=threads, turns=turns)
    step(f"PostgreSQL {sizes.pg_bytes_per_checkpoint:,.0f} B, Redis "
         f"{sizes.redis_bytes_per_checkpoint:,.0f} B a checkpoint")
    series = []
    for n in scales:
        w = Workload(n, turns, sizes.checkpoints_per_turn, retention_days, sizes.hot_keep,
                     sizes.pg_bytes_per_checkpoint, sizes.redis_bytes_per_checkpoint,
                     sizes.redis_hot_bytes_per_checkpoint, sizes.redis_overhead)
        bills = all_bills(w, prices)
        series.append({"threads": n, **{name: {"usd_per_month": b.usd_per_month,
                                               "parts": b.describe()}
                                        for name, b in bills.items()}})
    return {"sizes": sizes.to_dict(), "turns_per_day": turns, "retention_days": retention_days,
            "scales": list(scales), "series": series, "unverified_prices": prices.unverified()}
