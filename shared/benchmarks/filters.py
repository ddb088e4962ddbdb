"""``SqliteSaver.list(filter=...)`` latency by table size, with and without expression indexes.

For each size a table of tagged checkpoints is generated (Milestone 2's ``tagged_checkpoints``:
``user_id`` and ``session_type`` per thread, 50 checkpoints a thread, 100 a user on average,
so the answer stays about the same size while the table grows). A copy of it gets the
expression indexes of ``shared/savers/sqlite_filters.py``. Both copies answer the same two
filters (one tag; two tags), checked equal, then are timed in interleaved rounds after a
warm-up: each figure is the median over rounds of that round's p50 / p99.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Sequence
from contextlib import closing
from pathlib import Path
from typing import Any

from shared.bench import percentile
from shared.benchmarks.timing import interleaved, sample_ms, spread
from shared.savers import open_sqlite_saver
from shared.savers.sqlite_filters import (
    create_metadata_indexes,
    filter_query_plan,
    metadata_expression,
    plan_uses_index,
)
from shared.workloads.bulk import bulk_put, tagged_checkpoints

TAGS = ("user_id", "session_type")
VARIANTS = ("no_index", "expression_index")
CHECKPOINTS_PER_THREAD = 50
CHECKPOINTS_PER_USER = 100


def _remove_sqlite(db: Path) -> None:
    for suffix in ("", "-wal", "-shm", "-journal"):
        Path(f"{db}{suffix}").unlink(missing_ok=True)


def build_tables(workdir: Path, checkpoints: int) -> dict[str, Path]:
    """The generated table, and a byte copy of it with the expression indexes."""
    plain, indexed = workdir / f"filters-{checkpoints}.sqlite", workdir / \
        f"filters-{checkpoints}-indexed.sqlite"
    for db in (plain, indexed):
        _remove_sqlite(db)
    threads = max(2, checkpoints // CHECKPOINTS_PER_THREAD)
    users = max(1, checkpoints // CHECKPOINTS_PER_USER)
    with open_sqlite_saver(plain) as saver:
        bulk_put(saver, tagged_checkpoints(checkpoints, threads, users))
        saver.conn.execute("ANALYZE checkpoints")  # both copies with the same statistics
        saver.conn.commit()
        with closing(sqlite3.connect(indexed)) as copy:
            saver.conn.backup(copy)
            create_metadata_indexes(copy, TAGS)
    return {"no_index": plain, "expression_index": indexed}


def pick_filters(conn: sqlite3.Connection) -> dict[str, dict[str, Any]]:
    """The two filters, for the user with the median number of checkpoints (a typical user)."""
    # The expressions come from constant, checked keys; the user is a bound parameter.
    user_expr, session_expr = metadata_expression("user_id"), metadata_expression("session_type")
    users = conn.execute(f"SELECT {user_expr} AS u, count(*) FROM checkpoints "  # noqa: S608
                         "GROUP BY u ORDER BY 2, 1").fetchall()
    user = users[len(users) // 2][0]
    session = conn.execute(f"SELECT {session_expr} FROM checkpoints "  # noqa: S608
                           f"WHERE {user_expr} = ? ORDER BY checkpoint_id LIMIT 1",
                           (user,)).fetchone()[0]
    return {"one_tag": {"user_id": user},
            "two_tags": {"user_id": user, "session_type": session}}


def _found(saver: Any, flt: dict[str, Any]) -> set[tuple[str, str]]:
    return {(c.config["configurable"]["thread_id"], c.config["configurable"]["checkpoint_id"])
            for c in saver.list(None, filter=flt)}


def _round(saver: Any, flt: dict[str, Any], runs: int) -> Callable[[], dict[str, float]]:
    def run() -> dict[str, float]:
        times = sample_ms(lambda: list(saver.list(None, filter=flt)), runs)
        return {"p50_ms": percentile(times, 50), "p99_ms": percentile(times, 99)}
    return run


def measure_size(workdir: Path, checkpoints: int, rounds: int, runs: int) -> dict[str, Any]:
    """Both filters on both copies of one table of ``checkpoints`` rows."""
    dbs = build_tables(workdir, checkpoints)
    out: dict[str, Any] = {"checkpoints": checkpoints, "queries": {}}
    with open_sqlite_saver(dbs["no_index"]) as plain, \
            open_sqlite_saver(dbs["expression_index"]) as indexed:
        savers = {"no_index": plain, "expression_index": indexed}
        out["rows"] = plain.conn.execute("SELECT count(*) FROM checkpoints").fetchone()[0]
        for name, flt in pick_filters(plain.conn).items():
            answers = {v: _found(s, flt) for v, s in savers.items()}
            if answers["no_index"] != answers["expression_index"]:
                raise RuntimeError(f"{name} {flt}: the indexed copy answered differently")
            plans = {v: filter_query_plan(s.conn, None, flt) for v, s in savers.items()}
            timed = interleaved({v: _round(s, flt, runs) for v, s in savers.items()}, rounds)
            out["queries"][name] = {
                "filter": flt, "answer_rows": len(answers["no_index"]),
                **{v: {"index_used": plan_uses_index(plans[v]), "plan": plans[v],
                       "p50_ms": spread([r["p50_ms"] for r in timed[v]]),
                       "p99_ms": spread([r["p99_ms"] for r in timed[v]]),
                       "rounds": timed[v]} for v in VARIANTS}}
    for db in dbs.values():
        _remove_sqlite(db)
    return out


def measure_filters(workdir: Path, sizes: Sequence[int] = (1_000, 10_000, 100_000),
                    rounds: int = 3, runs: int = 50,
                    on_step: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Every table size in ``sizes``; ``runs`` timed calls per round (after a warm-up)."""
    workdir.mkdir(parents=True, exist_ok=True)
    step = on_step or (lambda _msg: None)
    results = []
    for n in sizes:
        step(f"filters: {n:,} checkpoints, {rounds} rounds of {runs} list() calls a variant")
        results.append(measure_size(workdir, n, rounds, runs))
    return {"sizes": list(sizes), "rounds": rounds, "runs_per_round": runs,
            "checkpoints_per_thread": CHECKPOINTS_PER_THREAD,
            "checkpoints_per_user": CHECKPOINTS_PER_USER, "tags_indexed": list(TAGS),
            "sqlite_version": sqlite3.sqlite_version, "series": results}
