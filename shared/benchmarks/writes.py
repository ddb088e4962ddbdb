"""SQLite vs PostgreSQL: writes/s and p99 latency by number of writer processes.

Each measurement forks N writer processes that start together and ``put`` 1 KiB checkpoints
for ``seconds`` (Milestone 2's ``measure_process_writers`` on one SQLite file, Milestone 4's
``measure_pg_writers`` on PostgreSQL, each writer with its own connection). Both stores start
every measurement empty. After an untimed warm-up of each store, ``rounds`` rounds measure
every N on both stores, in alternating order, and each figure is the median over the rounds
(min and max kept alongside).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Sequence
from contextlib import closing
from pathlib import Path
from typing import Any

import psycopg

from shared.benchmarks.timing import spread
from shared.infra.postgres import create_database, postgres_server
from shared.savers import open_sqlite_saver
from shared.workloads.postgres_writers import measure_pg_writers, setup_postgres
from shared.workloads.sqlite_writers import SQLITE_DEFAULT_BUSY_TIMEOUT_MS, measure_process_writers

STORES = ("sqlite", "postgres")
DATABASE = "ckpt_bench_writes"
PAYLOAD_BYTES = 1024  # what both writer machineries put per checkpoint


def _remove_sqlite(db: Path) -> None:
    for suffix in ("", "-wal", "-shm", "-journal"):
        Path(f"{db}{suffix}").unlink(missing_ok=True)


def _empty_postgres(url: str) -> None:
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("TRUNCATE checkpoints, checkpoint_blobs, checkpoint_writes")


def _settings(url: str, db: Path) -> dict[str, Any]:
    """The durability settings both stores ran with, read from the stores themselves."""
    with psycopg.connect(url) as conn:
        pg = {name: conn.execute(f"SHOW {name}").fetchone()[0]  # type: ignore[index]
              for name in ("server_version", "fsync", "synchronous_commit")}
    with open_sqlite_saver(db):  # set up as the writers' file is (WAL is set there)
        pass
    with closing(sqlite3.connect(db)) as lite_conn:  # what a new connection, a writer's, gets
        lite = {"version": sqlite3.sqlite_version,
                "journal_mode": lite_conn.execute("PRAGMA journal_mode").fetchone()[0],
                "synchronous": lite_conn.execute("PRAGMA synchronous").fetchone()[0],
                "busy_timeout_ms": SQLITE_DEFAULT_BUSY_TIMEOUT_MS}
    return {"postgres": pg, "sqlite": lite}


def _one(store: str, url: str, workdir: Path, processes: int, seconds: float) -> dict[str, Any]:
    """One measurement of ``processes`` writers on an empty ``store``."""
    if store == "postgres":
        _empty_postgres(url)
        stats = measure_pg_writers(url, workdir, processes, seconds)
        examples = stats.error_examples
    else:
        db = workdir / f"writers-{processes}.sqlite"
        _remove_sqlite(db)
        stats = measure_process_writers(db, processes, seconds)
        _remove_sqlite(db)
        examples = []
    return {"writes": stats.writes, "writes_per_s": stats.writes_per_s, "p50_ms": stats.p50_ms,
            "p99_ms": stats.p99_ms, "lock_errors": stats.lock_errors,
            "other_errors": stats.other_errors, "error_examples": examples}


def _summary(processes: int, rounds: list[dict[str, Any]]) -> dict[str, Any]:
    return {"processes": processes,
            "writes_per_s": spread([r["writes_per_s"] for r in rounds]),
            "p50_ms": spread([r["p50_ms"] for r in rounds]),
            "p99_ms": spread([r["p99_ms"] for r in rounds]),
            "errors": sum(r["lock_errors"] + r["other_errors"] for r in rounds),
            "rounds": rounds}


def measure_writes(workdir: Path, processes: Sequence[int] = (1, 2, 4, 8),
                   seconds: float = 2.0, rounds: int = 3, warmup_s: float = 1.0,
                   on_step: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Every N in ``processes`` on both stores, ``rounds`` times; the servers stopped after.

    PostgreSQL is ``DATABASE_URL`` if set (a database ``ckpt_bench_writes`` is created on
    it, replacing one of that name), else an embedded server under ``workdir/pg``.
    """
    workdir.mkdir(parents=True, exist_ok=True)
    step = on_step or (lambda _msg: None)
    runs: dict[str, dict[int, list[dict[str, Any]]]] = {s: {n: [] for n in processes}
                                                         for s in STORES}
    with postgres_server(workdir / "pg") as server:
        url = create_database(server, DATABASE)
        setup_postgres(url)  # once, before any writer: the schema is not theirs to race on
        settings = _settings(url, workdir / "settings.sqlite")
        _remove_sqlite(workdir / "settings.sqlite")
        for store in STORES:  # warm-up: caches, the server's first backends; not recorded
            step(f"warm-up: {store}, {max(processes)} processes, {warmup_s:g} s")
            _one(store, url, workdir, max(processes), warmup_s)
        for r in range(rounds):
            for i, n in enumerate(processes):
                order = STORES if (r + i) % 2 == 0 else STORES[::-1]  # ABAB..., then BABA...
                for store in order:
                    step(f"round {r + 1}/{rounds}: {store}, {n} process(es), {seconds:g} s")
                    runs[store][n].append(_one(store, url, workdir, n, seconds))
    return {"processes": list(processes), "seconds": seconds, "rounds": rounds,
            "warmup_s": warmup_s, "payload_bytes": PAYLOAD_BYTES, "settings": settings,
            "series": {s: [_summary(n, runs[s][n]) for n in processes] for s in STORES}}
