"""The monthly cost of keeping checkpoints: Redis-only, PostgreSQL-only, tiered.

Prices come from ``config/prices.toml`` (each with its source and the date it was read), the
bytes per checkpoint from measured runs (``shared/workloads/cost_sizes.py``); nothing here is
a price or a size. Sizing rules:

- Redis-only: all retained history in memory. Nodes needed = data bytes x the measured Redis
  overhead / (node memory x the usable fraction), for every node type; the cheapest wins.
- PostgreSQL-only: the smallest instance whose RAM (x the cache fraction) holds the working
  set (the newest ``hot_keep`` checkpoints of every active thread), plus gp3 storage for all
  retained history.
- Tiered: Redis sized for the ``hot_keep`` newest checkpoints of every active thread, plus the
  PostgreSQL of the PostgreSQL-only case (it keeps every checkpoint).
"""

from __future__ import annotations

import math
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from shared import ROOT
from shared.errors import CheckpointError

PRICES = ROOT / "config" / "prices.toml"
GIB = 1024 ** 3
GB = 1000 ** 3  # storage is billed per GB-month


@dataclass(frozen=True)
class Instance:
    """A priced machine: an RDS instance class or an ElastiCache node type."""

    name: str
    usd_per_hour: float
    memory_gib: float
    source: str
    read_on: str


@dataclass(frozen=True)
class Prices:
    hours_per_month: float
    redis_usable_fraction: float
    pg_cache_fraction: float
    redis_replicas: int
    gp3_usd_per_gb_month: float
    rds: tuple[Instance, ...]
    elasticache: tuple[Instance, ...]
    entries: dict[str, dict[str, Any]]

    def unverified(self) -> list[str]:
        """Entries whose source page could not be read: their figure is unconfirmed."""
        return [name for name, e in self.entries.items()
                if str(e.get("source", "")).startswith("not found")]


def _need(table: dict[str, Any], key: str, where: str, path: Path) -> Any:
    if key not in table:
        raise CheckpointError(f"{path}: [{where}] has no {key!r}; add it (see the other "
                              "entries for the shape).")
    return table[key]


def _instances(data: dict[str, Any], section: str, path: Path) -> tuple[Instance, ...]:
    out = []
    for name, e in _need(data, section, "top level", path).items():
        where = f'{section}."{name}"'
        price = float(_need(e, "usd_per_hour", where, path))
        memory = float(_need(e, "memory_gib", where, path))
        if price <= 0 or memory <= 0:
            raise CheckpointError(f"{path}: [{where}] needs a positive usd_per_hour and "
                                  f"memory_gib, not {price} and {memory}.")
        out.append(Instance(name, price, memory, str(_need(e, "source", where, path)),
                            str(_need(e, "read_on", where, path))))
    return tuple(sorted(out, key=lambda i: (i.memory_gib, i.usd_per_hour)))


def load_prices(path: Path = PRICES) -> Prices:
    """Read and check ``prices.toml``: one sentence for a missing or malformed file or key."""
    path = Path(path)
    try:
        data = tomllib.loads(path.read_text())
    except FileNotFoundError:
        raise CheckpointError(f"Price file {path} not found: restore config/prices.toml or "
                              "pass the path of yours.") from None
    except tomllib.TOMLDecodeError as exc:
        raise CheckpointError(f"Price file {path} is not valid TOML ({exc}): fix that "
                              "line.") from None
    settings = _need(data, "settings", "top level", path)
    storage = _need(data, "storage", "top level", path)
    gp3 = _need(storage, "gp3", "storage", path)
    entries = {f"{section}.{name}": e for section in ("rds", "elasticache", "storage")
               for name, e in data.get(section, {}).items()}
    for name, e in entries.items():
        for key in ("source", "read_on", "region"):
            _need(e, key, name, path)
    return Prices(
        hours_per_month=float(_need(settings, "hours_per_month", "settings", path)),
        redis_usable_fraction=float(_need(settings, "redis_usable_fraction", "settings", path)),
        pg_cache_fraction=float(_need(settings, "pg_cache_fraction", "settings", path)),
        redis_replicas=int(_need(settings, "redis_replicas", "settings", path)),
        gp3_usd_per_gb_month=float(_need(gp3, "usd_per_gb_month", "storage.gp3", path)),
        rds=_instances(data, "rds", path), elasticache=_instances(data, "elasticache", path),
        entries=entries)


@dataclass(frozen=True)
class Workload:
    """Who writes how much, and how much each checkpoint weighs (measured)."""

    active_threads: int
    turns_per_day: float
    checkpoints_per_turn: float
    retention_days: float
    hot_keep: int
    bytes_per_checkpoint_pg: float      # on disk: rows, TOAST and indexes of the 3 tables
    bytes_per_checkpoint_redis: float   # MEMORY USAGE of the keys, all history
    bytes_per_hot_checkpoint_redis: float | None = None  # newest hot_keep only (default: above)
    redis_overhead: float = 1.0         # used_memory / sum of MEMORY USAGE, measured

    def __post_init__(self) -> None:
        for name in ("active_threads", "turns_per_day", "checkpoints_per_turn",
                     "retention_days", "hot_keep", "bytes_per_checkpoint_pg",
                     "bytes_per_checkpoint_redis", "redis_overhead"):
            value = getattr(self, name)
            if not isinstance(value, int | float) or isinstance(value, bool) or value <= 0:
                raise CheckpointError(f"Workload {name} must be a positive number, not "
                                      f"{value!r}.")
        hot = self.bytes_per_hot_checkpoint_redis
        if hot is not None and (not isinstance(hot, int | float) or hot <= 0):
            raise CheckpointError(f"Workload bytes_per_hot_checkpoint_redis must be a positive "
                                  f"number or None, not {hot!r}.")

    @property
    def retained_checkpoints(self) -> float:
        """Every checkpoint kept: active threads x turns a day x checkpoints a turn x days."""
        return (self.active_threads * self.turns_per_day * self.checkpoints_per_turn
                * self.retention_days)

    @property
    def hot_checkpoints(self) -> float:
        """The newest ``hot_keep`` of each active thread (fewer if it has fewer)."""
        per_thread = min(self.hot_keep, self.turns_per_day * self.checkpoints_per_turn
                         * self.retention_days)
        return self.active_threads * per_thread


@dataclass(frozen=True)
class Part:
    """One line of a bill: what, how many, at what price."""

    what: str
    kind: str
    count: int
    usd_per_month: float
    detail: str = ""


@dataclass(frozen=True)
class Bill:
    setup: str
    parts: tuple[Part, ...] = field(default_factory=tuple)

    @property
    def usd_per_month(self) -> float:
        return round(sum(p.usd_per_month for p in self.parts), 2)

    def describe(self) -> str:
        return " + ".join(f"{p.count} x {p.kind} (${p.usd_per_month:,.0f})" if p.count
                          else f"{p.kind} (${p.usd_per_month:,.0f})" for p in self.parts)


def redis_nodes(data_bytes: float, prices: Prices, what: str = "Redis") -> Part:
    """The cheapest way to hold ``data_bytes`` in ElastiCache: (node type, count) by price."""
    if data_bytes < 0:
        raise CheckpointError(f"Redis data of {data_bytes} bytes: a size cannot be negative.")
    copies = 1 + prices.redis_replicas
    best: Part | None = None
    for node in prices.elasticache:
        usable = node.memory_gib * GIB * prices.redis_usable_fraction
        count = max(1, math.ceil(data_bytes / usable)) * copies
        cost = round(count * node.usd_per_hour * prices.hours_per_month, 2)
        if best is None or cost < best.usd_per_month:
            best = Part(what, node.name, count, cost,
                        f"{data_bytes / GIB:,.2f} GiB in {count} x {node.memory_gib:g} GiB "
                        f"at {prices.redis_usable_fraction:.0%} usable")
    assert best is not None, "prices.toml lists no ElastiCache node"
    return best


def postgres_instance(working_set_bytes: float, stored_bytes: float,
                      prices: Prices) -> tuple[Part, Part]:
    """The smallest RDS instance whose cache holds the working set (several of the largest
    when none does: shards), and gp3 storage for everything stored."""
    if working_set_bytes < 0 or stored_bytes < 0:
        raise CheckpointError("PostgreSQL sizes cannot be negative: working set "
                              f"{working_set_bytes}, stored {stored_bytes}.")
    fits = [i for i in prices.rds
            if i.memory_gib * GIB * prices.pg_cache_fraction >= working_set_bytes]
    if fits:
        inst, count = min(fits, key=lambda i: i.usd_per_hour), 1
    else:
        inst = prices.rds[-1]
        count = math.ceil(working_set_bytes / (inst.memory_gib * GIB
                                                * prices.pg_cache_fraction))
    instance = Part("PostgreSQL", inst.name, count,
                    round(count * inst.usd_per_hour * prices.hours_per_month, 2),
                    f"working set {working_set_bytes / GIB:,.2f} GiB")
    gb = max(stored_bytes / GB, 0.0)
    storage = Part("PostgreSQL storage", f"gp3 {gb:,.1f} GB", 0,
                   round(gb * prices.gp3_usd_per_gb_month, 2))
    return instance, storage


def redis_only(w: Workload, prices: Prices) -> Bill:
    """All retained history in Redis memory."""
    data = w.retained_checkpoints * w.bytes_per_checkpoint_redis * w.redis_overhead
    return Bill("Redis-only", (redis_nodes(data, prices, "Redis (all history)"),))


def postgres_only(w: Workload, prices: Prices) -> Bill:
    """All history on gp3; RAM for the hot checkpoints."""
    instance, storage = postgres_instance(w.hot_checkpoints * w.bytes_per_checkpoint_pg,
                                          w.retained_checkpoints * w.bytes_per_checkpoint_pg,
                                          prices)
    return Bill("PostgreSQL-only", (instance, storage))


def tiered(w: Workload, prices: Prices) -> Bill:
    """Redis for the newest ``hot_keep`` of each active thread + PostgreSQL-only's database."""
    hot = w.bytes_per_hot_checkpoint_redis or w.bytes_per_checkpoint_redis
    redis = redis_nodes(w.hot_checkpoints * hot * w.redis_overhead, prices, "Redis (hot)")
    return Bill("tiered", (redis, *postgres_only(w, prices).parts))


def all_bills(w: Workload, prices: Prices) -> dict[str, Bill]:
    return {b.setup: b for b in (redis_only(w, prices), postgres_only(w, prices),
                                 tiered(w, prices))}


def redis_capacity(node: str, count: int, prices: Prices) -> float:
    """Bytes of data ``count`` nodes of type ``node`` hold at the usable fraction."""
    by_name = {n.name: n for n in prices.elasticache}
    if node not in by_name:
        raise CheckpointError(f"No ElastiCache node {node!r} in prices.toml; it lists "
                              f"{', '.join(by_name)}.")
    return count * by_name[node].memory_gib * GIB * prices.redis_usable_fraction
