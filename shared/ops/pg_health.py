"""Is this PostgreSQL fit to hold LangGraph checkpoints? One look, with the reasons.

    health = check_health("postgresql://app:pw@db:5432/agents")
    health.healthy, health.problems      # False, ["checkpoints: 31 % of tuples are dead ..."]
    health.to_dict()                     # what `ckpt health URL --json` prints

``check_health`` opens one connection of its own (nothing is written), times ``SELECT 1``
``samples`` times (the network + server floor under every checkpoint call; a p99 over the
limit is measured once more and the better round kept, so one scheduler stall on a busy
client does not fail the check while a slow network fails both rounds), then reads one
snapshot in one statement (``SNAPSHOT_SQL``): server version, client connections by state
and ``max_connections``, the database's buffer cache hit ratio, and for each checkpoint
table (``CHECKPOINT_TABLES``) its live and dead tuples, table and index bytes (each index
by name) and when it was last vacuumed and analyzed. ``problems`` holds one sentence per
threshold crossed, the thresholds being the ``[postgres]`` section of
``config/thresholds.toml`` (``shared.ops.decide.Thresholds``: the same numbers the alert
rules in deploy/ are rendered from). The exporter (``shared.ops.pg_metrics``) reads the same
snapshot on every scrape.

A wrong URL, wrong credentials, an unreachable server or a timeout is one CheckpointError
sentence with the password masked.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field
from typing import Any

from shared.bench import percentile
from shared.errors import CheckpointError
from shared.infra.postgres import check_url
from shared.infra.urls import mask_url, redact
from shared.ops.decide import Thresholds, load_thresholds

CHECKPOINT_TABLES = ("checkpoints", "checkpoint_blobs", "checkpoint_writes")
CONNECT_TIMEOUT_S = 5  # libpq's connect_timeout: an unreachable host fails in this long
STATEMENT_TIMEOUT_MS = 5_000  # the snapshot never hangs a health check or a scrape
LOCK_TIMEOUT_MS = 1_000  # sizes need a share lock: give up rather than queue behind DDL

# The thresholds' defaults, by name (config/thresholds.toml [postgres] overrides them).
DEFAULTS = Thresholds()
RTT_P99_MS_MAX = DEFAULTS.pg_rtt_p99_ms
CONNECTIONS_USED_MAX = DEFAULTS.pg_connections_used
DEAD_RATIO_MAX = DEFAULTS.pg_dead_ratio
DEAD_TUPLES_MIN = DEFAULTS.pg_dead_tuples_min
CACHE_HIT_MIN = DEFAULTS.pg_cache_hit_min
CACHE_MIN_BLOCKS = DEFAULTS.pg_cache_min_blocks

# One statement, one round trip: everything a health check or a scrape reads from the server.
SNAPSHOT_SQL = """
WITH wanted AS (
    SELECT t.name, to_regclass(t.name) AS rel FROM unnest(%(tables)s::text[]) AS t(name)
)
SELECT json_build_object(
    'server_version', current_setting('server_version'),
    'database', current_database(),
    'max_connections', current_setting('max_connections')::int,
    'connections', (
        SELECT coalesce(json_object_agg(state, n), '{}'::json) FROM (
            SELECT coalesce(state, 'unknown') AS state, count(*) AS n
            FROM pg_stat_activity WHERE backend_type = 'client backend' GROUP BY 1) s),
    'blks_hit', (SELECT blks_hit FROM pg_stat_database WHERE datname = current_database()),
    'blks_read', (SELECT blks_read FROM pg_stat_database WHERE datname = current_database()),
    'tables', (
        SELECT json_object_agg(w.name, CASE WHEN w.rel IS NULL THEN NULL ELSE json_build_object(
            'rows', coalesce(s.n_live_tup, 0),
            'dead_tuples', coalesce(s.n_dead_tup, 0),
            'table_bytes', pg_table_size(w.rel),
            'index_bytes', pg_indexes_size(w.rel),
            'indexes', (SELECT coalesce(json_object_agg(c.relname, pg_relation_size(c.oid)
                                                        ORDER BY c.relname), '{}'::json)
                        FROM pg_index x JOIN pg_class c ON c.oid = x.indexrelid
                        WHERE x.indrelid = w.rel),
            'last_vacuum', s.last_vacuum,
            'last_autovacuum', s.last_autovacuum,
            'last_analyze', s.last_analyze,
            'last_autoanalyze', s.last_autoanalyze,
            'seconds_since_vacuum', extract(epoch FROM now() - s.last_vacuum),
            'seconds_since_autovacuum', extract(epoch FROM now() - s.last_autovacuum)) END)
        FROM wanted w LEFT JOIN pg_stat_user_tables s ON s.relid = w.rel)
)
"""


@dataclass
class TableHealth:
    """One checkpoint table; ``exists`` False leaves every figure at zero / None."""

    name: str
    exists: bool
    rows: int = 0  # n_live_tup: the planner's estimate, refreshed by (auto)vacuum/analyze
    dead_tuples: int = 0
    dead_ratio: float = 0.0  # dead / (live + dead)
    table_bytes: int = 0  # pg_table_size: heap + TOAST + free space and visibility maps
    index_bytes: int = 0
    indexes: dict[str, int] = field(default_factory=dict)  # index name -> bytes
    last_vacuum: str | None = None  # ISO 8601 timestamps, None: never since stats reset
    last_autovacuum: str | None = None
    last_analyze: str | None = None
    last_autoanalyze: str | None = None
    seconds_since_vacuum: float | None = None
    seconds_since_autovacuum: float | None = None


@dataclass
class Health:
    """What ``check_health`` found; ``healthy`` is ``not problems``."""

    url: str  # password masked
    server_version: str
    database: str
    samples: int
    rtt_ms_p50: float
    rtt_ms_p99: float
    connections: dict[str, int]  # client backends by state (active, idle, idle in transaction)
    connections_total: int
    max_connections: int
    connections_used: float  # connections_total / max_connections
    cache_hit_ratio: float | None  # None: no block was ever read or hit
    cache_blocks: int  # blks_hit + blks_read
    tables: dict[str, TableHealth]
    tables_exist: bool
    problems: list[str]
    thresholds: dict[str, Any]
    rtt_rounds: int = 1  # 2: the first round's p99 was over the limit, the better one is shown

    @property
    def healthy(self) -> bool:
        return not self.problems

    def to_dict(self) -> dict[str, Any]:
        return {"healthy": self.healthy, **asdict(self)}


# --- connecting ---------------------------------------------------------------------------------

def connect_error(url: str, exc: Exception) -> CheckpointError:
    """One sentence for a connection that failed: what, where (password masked), the fix."""
    reason = redact(" ".join(str(exc).split()) or type(exc).__name__, url)
    text = reason.lower()
    if "password" in text or "authentication" in text or "role" in text:
        fix = "check the user name and password in the URL"
    elif "database" in text and "does not exist" in text:
        fix = "check the database name at the end of the URL"
    elif "timeout" in text or "timed out" in text:
        fix = (f"the server did not answer within {CONNECT_TIMEOUT_S} s: check the host, the "
               "port and any firewall or security group in between")
    else:
        fix = "check that the server is running and that the host and port are right"
    return CheckpointError(f"Could not connect to PostgreSQL at {mask_url(url)} ({reason}): "
                           f"{fix}.")


def connect(url: str) -> Any:
    """An autocommit connection of our own, or one CheckpointError (password masked)."""
    import psycopg

    check_url(url)
    try:
        return psycopg.connect(url, autocommit=True, connect_timeout=CONNECT_TIMEOUT_S)
    except psycopg.Error as exc:
        raise connect_error(url, exc) from None


# --- reading ----------------------------------------------------------------------------------

def read_snapshot(conn: Any, tables: tuple[str, ...] = CHECKPOINT_TABLES) -> dict[str, Any]:
    """The server-side figures in one statement, under short statement and lock timeouts."""
    from psycopg.rows import tuple_row

    with conn.transaction(), conn.cursor(row_factory=tuple_row) as cur:
        # one statement (a pool's connections may prepare every statement: no "a; b")
        cur.execute("SELECT set_config('statement_timeout', %s, true), "
                    "set_config('lock_timeout', %s, true)",
                    (str(STATEMENT_TIMEOUT_MS), str(LOCK_TIMEOUT_MS)))
        cur.execute(SNAPSHOT_SQL, {"tables": list(tables)})
        row = cur.fetchone()
    data = row[0]
    return json.loads(data) if isinstance(data, str) else data


def measure_rtt(conn: Any, samples: int) -> list[float]:
    """``SELECT 1`` round trips, in milliseconds."""
    out = []
    for _ in range(samples):
        start = time.perf_counter()
        conn.execute("SELECT 1").fetchone()
        out.append((time.perf_counter() - start) * 1000)
    return out


def table_health(name: str, raw: dict[str, Any] | None) -> TableHealth:
    if raw is None:
        return TableHealth(name, exists=False)
    live, dead = int(raw["rows"]), int(raw["dead_tuples"])
    return TableHealth(
        name, True, live, dead, dead / (live + dead) if live + dead else 0.0,
        int(raw["table_bytes"]), int(raw["index_bytes"]),
        {k: int(v) for k, v in (raw["indexes"] or {}).items()},
        raw["last_vacuum"], raw["last_autovacuum"], raw["last_analyze"],
        raw["last_autoanalyze"], raw["seconds_since_vacuum"], raw["seconds_since_autovacuum"])


# --- judging ----------------------------------------------------------------------------------

def find_problems(h: Health, th: Thresholds) -> list[str]:
    """One sentence per threshold crossed, with the figure, the limit and what to do."""
    problems = []
    missing = [t.name for t in h.tables.values() if not t.exists]
    if missing:
        problems.append(
            f"checkpoint tables missing in database {h.database!r}: {', '.join(missing)}: "
            "this is not a PostgresSaver database or setup() never ran on it; run "
            "PostgresSaver.setup() or point the URL at the right database.")
    if h.samples and h.rtt_ms_p99 > th.pg_rtt_p99_ms:
        problems.append(
            f"round trip p99 {h.rtt_ms_p99:.2f} ms over {h.samples} SELECT 1"
            f"{f' (the better of {h.rtt_rounds} rounds)' if h.rtt_rounds > 1 else ''} is above "
            f"{th.pg_rtt_p99_ms:g} ms: every checkpoint call pays at least one; run the "
            "application next to the database (same zone) or check the network.")
    if h.connections_used > th.pg_connections_used:
        problems.append(
            f"{h.connections_total} of max_connections {h.max_connections} in use "
            f"({h.connections_used:.0%}), above {th.pg_connections_used:.0%}: pool "
            "connections (psycopg_pool, PgBouncer) or raise max_connections.")
    for t in h.tables.values():
        if t.exists and t.dead_ratio > th.pg_dead_ratio and t.dead_tuples >= th.pg_dead_tuples_min:
            problems.append(
                f"{t.name}: {t.dead_ratio:.0%} of tuples are dead ({t.dead_tuples:,} dead, "
                f"{t.rows:,} live), above {th.pg_dead_ratio:.0%}: autovacuum is not keeping "
                f"up; run VACUUM (ANALYZE) {t.name} and lower its "
                "autovacuum_vacuum_scale_factor.")
    if (h.cache_hit_ratio is not None and h.cache_blocks >= th.pg_cache_min_blocks
            and h.cache_hit_ratio < th.pg_cache_hit_min):
        problems.append(
            f"buffer cache hit ratio {h.cache_hit_ratio:.1%} over {h.cache_blocks:,} blocks is "
            f"below {th.pg_cache_hit_min:.0%}: the working set does not fit in shared_buffers; "
            "raise shared_buffers (or the instance's memory) or prune old checkpoints.")
    return problems


def health_from(url: str, snap: dict[str, Any], rtt_ms: list[float], th: Thresholds,
                rtt_rounds: int = 1) -> Health:
    tables = {name: table_health(name, (snap.get("tables") or {}).get(name))
              for name in CHECKPOINT_TABLES}
    conns = {k: int(v) for k, v in (snap.get("connections") or {}).items()}
    total, max_conn = sum(conns.values()), int(snap["max_connections"])
    hit, read = int(snap.get("blks_hit") or 0), int(snap.get("blks_read") or 0)
    h = Health(
        url=mask_url(url), server_version=snap["server_version"], database=snap["database"],
        samples=len(rtt_ms), rtt_ms_p50=percentile(rtt_ms, 50),
        rtt_ms_p99=percentile(rtt_ms, 99), connections=conns, connections_total=total,
        max_connections=max_conn, connections_used=total / max_conn if max_conn else 0.0,
        cache_hit_ratio=hit / (hit + read) if hit + read else None, cache_blocks=hit + read,
        tables=tables, tables_exist=all(t.exists for t in tables.values()), problems=[],
        thresholds={k: v for k, v in asdict(th).items() if k.startswith("pg_")},
        rtt_rounds=rtt_rounds)
    h.problems = find_problems(h, th)
    return h


def check_health(url: str, *, samples: int = 20, thresholds: Thresholds | None = None
                 ) -> Health:
    """Connect to ``url``, measure and judge; nothing is written. See the module docstring."""
    if samples < 1:
        raise CheckpointError(f"samples = {samples}: measure at least 1 round trip, such as 20.")
    th = thresholds or load_thresholds()
    import psycopg

    conn = connect(url)
    try:
        conn.execute("SELECT 1").fetchone()  # warm: the first statement pays for catalogs
        rounds = [measure_rtt(conn, samples)]
        if percentile(rounds[0], 99) > th.pg_rtt_p99_ms:  # once more: a stall, or the network?
            rounds.append(measure_rtt(conn, samples))
        rtt = min(rounds, key=lambda r: percentile(r, 99))
        snap = read_snapshot(conn)
    except psycopg.errors.QueryCanceled:
        raise CheckpointError(
            f"PostgreSQL at {mask_url(url)} did not answer the health queries within "
            f"{STATEMENT_TIMEOUT_MS / 1000:g} s (lock timeout {LOCK_TIMEOUT_MS / 1000:g} s): "
            "the server is overloaded or DDL holds a lock on a checkpoint table; try "
            "again.") from None
    except psycopg.OperationalError as exc:
        raise connect_error(url, exc) from None
    finally:
        conn.close()
    return health_from(url, snap, rtt, th, rtt_rounds=len(rounds))
