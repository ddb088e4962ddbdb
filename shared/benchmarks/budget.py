"""Checkpoint operation latency by table size and by concurrency, baseline against tuned.

For each size a history is loaded (``shared.workloads.history``) and copied; the copy gets
the indexes of ``shared.ops.pg_indexes`` and is reached through a pool per process
("tuned"), the original through a new connection per call and ``setup()``'s indexes only
("baseline"). ``shared.workloads.op_mix`` then serves paced turns from N processes on each,
in alternating rounds: every size at the largest N, and every N at the largest size. Each
figure is the median over rounds of that round's p50 / p99 (min and max kept alongside);
``ready_p99_ms`` is the p99 of each call's time less its run-queue waits (what 5.3 judges).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from shared.bench import percentile
from shared.benchmarks.timing import interleaved, spread
from shared.infra.postgres import create_database, drop_database, postgres_server
from shared.ops.pg_indexes import apply_indexes
from shared.workloads.history import clone_database, load_history
from shared.workloads.op_mix import OPS, measure_op_mix, sample_targets

SETUPS = {"baseline": "connect", "tuned": "pool"}


def _histories(server: str, size: int) -> dict[str, str]:
    """A baseline database of ``size`` checkpoints and its tuned copy (indexes applied)."""
    base = create_database(server, f"ckpt_bench_budget_{size}")
    load_history(base, checkpoints=size, threads=max(1, size // 10), progress=False)
    tuned = clone_database(base, f"ckpt_bench_budget_{size}_tuned")
    apply_indexes(tuned)
    return {"baseline": base, "tuned": tuned}


def _series(urls: dict[str, str], workdir: Path, processes: int, rounds: int, seconds: float,
            rate: float) -> dict[str, Any]:
    """Both setups at ``processes``, ``rounds`` alternating rounds; p50/p99 spread per op."""
    thread_ids, user_of = sample_targets(urls["baseline"], 2_000)
    runs = interleaved({setup: (lambda setup=setup: measure_op_mix(
        urls[setup], workdir, mode=SETUPS[setup], processes=processes, seconds=seconds,
        rate=rate, thread_ids=thread_ids, user_of=user_of)) for setup in urls}, rounds)
    return {setup: {op: {"p50_ms": spread([percentile(r["times"][op], 50) for r in out]),
                         "p99_ms": spread([percentile(r["times"][op], 99) for r in out]),
                         # less the run-queue waits (see shared.workloads.op_mix)
                         "ready_p99_ms": spread([percentile(r["ready"][op], 99) for r in out])}
                    for op in OPS} | {"errors": sum(r["errors"] for r in out)}
            for setup, out in runs.items()}


def measure_budget(workdir: Path, sizes: Sequence[int] = (10_000, 100_000, 1_000_000),
                   processes: Sequence[int] = (1, 2, 4, 8), rounds: int = 3,
                   seconds: float = 3.0, rate: float = 10.0,
                   on_step: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Latency by size (at the largest N) and by N (at the largest size)."""
    step = on_step or (lambda _msg: None)
    by_size, by_processes = [], []
    with postgres_server(workdir / "pg") as server:
        for size in sizes:
            step(f"loading {size:,} checkpoints (and a tuned copy)")
            urls = _histories(server, size)
            counts = [max(processes)] if size != max(sizes) else list(processes)
            for n in counts:
                step(f"{size:,} checkpoints, {n} processes: {rounds} rounds of each setup")
                figures = {"checkpoints": size, "processes": n,
                           **_series(urls, workdir / "mix", n, rounds, seconds, rate)}
                if n == max(processes):
                    by_size.append(figures)
                if size == max(sizes):
                    by_processes.append(figures)
            for name in (f"ckpt_bench_budget_{size}", f"ckpt_bench_budget_{size}_tuned"):
                drop_database(server, name)
    return {"sizes": list(sizes), "processes": list(processes), "rounds": rounds,
            "seconds": seconds, "rate": rate, "ops": list(OPS), "by_size": by_size,
            "by_processes": by_processes}
