"""shared/ops/cost.py: the cost model on small hand-checkable figures, bad input, and the
real config/prices.toml (every entry with its source and the date it was read)."""

from __future__ import annotations

from pathlib import Path

import pytest

from shared.errors import CheckpointError
from shared.ops.cost import (
    GB,
    GIB,
    Workload,
    all_bills,
    load_prices,
    postgres_instance,
    redis_capacity,
    redis_nodes,
)

TOY = """
[settings]
hours_per_month = 100
redis_usable_fraction = 0.5
pg_cache_fraction = 0.5
redis_replicas = {replicas}

[storage.gp3]
usd_per_gb_month = 0.1
source = "https://example.test/gp3"
read_on = "2026-12-02"
region = "us-east-1"

[rds."db.one"]
usd_per_hour = 2.0
memory_gib = 1
source = "https://example.test/rds"
read_on = "2026-12-02"
region = "us-east-1"

[rds."db.four"]
usd_per_hour = 6.0
memory_gib = 4
source = "not found: toy"
read_on = "2026-12-02"
region = "us-east-1"

[elasticache."cache.one"]
usd_per_hour = 1.0
memory_gib = 1
source = "https://example.test/cache"
read_on = "2026-12-02"
region = "us-east-1"
"""


def toy(tmp_path: Path, replicas: int = 0) -> Path:
    path = tmp_path / "prices.toml"
    path.write_text(TOY.format(replicas=replicas))
    return path


def work(**over: object) -> Workload:
    # 10 threads x 1 turn x 1 checkpoint x 100 days = 1,000 checkpoints; 1 GiB in Redis,
    # 1 GB in PostgreSQL; hot: 10 threads x 10 = 100 checkpoints
    base: dict[str, object] = dict(active_threads=10, turns_per_day=1, checkpoints_per_turn=1,
                                   retention_days=100, hot_keep=10,
                                   bytes_per_checkpoint_pg=GB / 1000,
                                   bytes_per_checkpoint_redis=GIB / 1000)
    return Workload(**{**base, **over})  # type: ignore[arg-type]


def test_bills_by_hand(tmp_path: Path) -> None:
    prices = load_prices(toy(tmp_path))
    w = work()
    assert w.retained_checkpoints == 1000 and w.hot_checkpoints == 100
    bills = all_bills(w, prices)
    # 1 GiB at 0.5 GiB usable a node: 2 nodes x $1/h x 100 h
    assert bills["Redis-only"].usd_per_month == 200.0
    assert bills["Redis-only"].parts[0].count == 2
    # 100 MB working set fits db.one (0.5 GiB); 1 GB of gp3 at $0.1
    assert bills["PostgreSQL-only"].usd_per_month == 200.1
    assert bills["PostgreSQL-only"].parts[0].kind == "db.one"
    # hot: 100 x 1 MiB = 0.1 GiB -> 1 node ($100) + the PostgreSQL above
    assert bills["tiered"].usd_per_month == 300.1
    assert "1 x cache.one ($100)" in bills["tiered"].describe()


def test_overhead_replicas_and_hot_bytes(tmp_path: Path) -> None:
    prices = load_prices(toy(tmp_path, replicas=1))
    # overhead 1.5: 1.5 GiB -> 3 nodes, each with a replica -> 6 nodes x $100
    assert all_bills(work(redis_overhead=1.5), prices)["Redis-only"].usd_per_month == 600.0
    # the hot tier's own per-checkpoint size: 100 x 6 MiB = 0.6 GiB -> 2 nodes (+2 replicas)
    hot = all_bills(work(bytes_per_hot_checkpoint_redis=6 * GIB / 1000), prices)["tiered"]
    assert hot.parts[0].count == 4


def test_postgres_picks_the_smallest_that_fits_else_shards(tmp_path: Path) -> None:
    prices = load_prices(toy(tmp_path))
    assert postgres_instance(0.4 * GIB, 0, prices)[0].kind == "db.one"
    assert postgres_instance(1.5 * GIB, 0, prices)[0].kind == "db.four"  # 2 GiB cache
    shards = postgres_instance(5 * GIB, 0, prices)[0]
    assert (shards.kind, shards.count, shards.usd_per_month) == ("db.four", 3, 1800.0)
    assert redis_nodes(0, prices).count == 1  # a cluster has at least one node
    assert redis_capacity("cache.one", 4, prices) == 2 * GIB


def test_hot_set_capped_by_history(tmp_path: Path) -> None:
    # 2 checkpoints a thread in all: the hot tier holds 2, not hot_keep=10
    assert work(retention_days=2).hot_checkpoints == 20


@pytest.mark.parametrize("field,value", [("active_threads", 0), ("turns_per_day", -1),
                                         ("bytes_per_checkpoint_pg", 0),
                                         ("redis_overhead", -0.5), ("hot_keep", 0),
                                         ("retention_days", "30")])
def test_bad_workload_is_one_sentence(field: str, value: object) -> None:
    with pytest.raises(CheckpointError, match=f"Workload {field} must be a positive number"):
        work(**{field: value})


def test_bad_price_files(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match=r"not found: restore config/prices\.toml"):
        load_prices(tmp_path / "missing.toml")
    bad = tmp_path / "bad.toml"
    bad.write_text("[settings\n")
    with pytest.raises(CheckpointError, match="is not valid TOML"):
        load_prices(bad)
    path = toy(tmp_path)
    path.write_text(path.read_text().replace('source = "https://example.test/rds"\n', ""))
    with pytest.raises(CheckpointError, match=r"\[rds.db.one\] has no 'source'"):
        load_prices(path)
    path.write_text(TOY.format(replicas=0).replace("usd_per_hour = 2.0", "usd_per_hour = -2"))
    with pytest.raises(CheckpointError, match="needs a positive usd_per_hour"):
        load_prices(path)
    with pytest.raises(CheckpointError, match=r"No ElastiCache node 'cache\.huge'"):
        redis_capacity("cache.huge", 1, load_prices(toy(tmp_path)))


def test_unverified_entries_are_named(tmp_path: Path) -> None:
    assert load_prices(toy(tmp_path)).unverified() == ["rds.db.four"]


def test_real_prices_load_with_sources_and_dates() -> None:
    prices = load_prices()
    assert prices.rds and prices.elasticache and prices.gp3_usd_per_gb_month > 0
    assert 0 < prices.redis_usable_fraction <= 1 and 0 < prices.pg_cache_fraction <= 1
    for name, entry in prices.entries.items():
        assert entry["source"].startswith(("https://", "not found:")), name
        assert entry["read_on"], name
        assert entry["region"] == "us-east-1", name
