"""``reports/bench.json`` and the PNG charts drawn from it (matplotlib, no display needed).

Every chart is drawn from the JSON's figures only: the median over rounds as the point, the
lowest and highest round as the error bar, axes labelled with their units.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # files only: no display, no GUI toolkit
import matplotlib.pyplot as plt  # after the backend is chosen
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter, NullFormatter

LABELS = {"sqlite": "SQLite (one file)", "postgres": "PostgreSQL",
          "no_index": "no index (full scan)", "expression_index": "expression index"}
QUERY_LABELS = {"one_tag": "user_id", "two_tags": "user_id + session_type"}


def _errorbar(ax: Axes, xs: list[float], spreads: list[dict[str, float]], **style: Any) -> None:
    med = [s["median"] for s in spreads]
    low = [s["median"] - s["min"] for s in spreads]
    high = [s["max"] - s["median"] for s in spreads]
    ax.errorbar(xs, med, yerr=[low, high], marker="o", capsize=4, **style)


def _plain_log_y(ax: Axes) -> None:
    """A log y axis with plain numbers (0.5, 2, 30) instead of powers of ten."""
    ax.set_yscale("log")
    ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _pos: f"{v:g}"))
    ax.yaxis.set_minor_formatter(FuncFormatter(
        lambda v, _pos: f"{v:g}" if f"{v:.0e}"[0] in "25" else ""))


def _count(n: float) -> str:
    return f"{n / 1_000_000:g}M" if n >= 1_000_000 else f"{n / 1000:g}k" if n >= 1000 \
        else f"{n:g}"


def _save(fig: Figure, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _writes_note(writes: dict[str, Any]) -> str:
    pg, lite = writes["settings"]["postgres"], writes["settings"]["sqlite"]
    return (f"{writes['payload_bytes']} B checkpoints, {writes['seconds']:g} s a run, median of "
            f"{writes['rounds']} rounds (bars: min-max). PostgreSQL {pg['server_version']} "
            f"fsync={pg['fsync']}; SQLite {lite['version']} {lite['journal_mode']}, "
            f"synchronous={lite['synchronous']}")


def writes_charts(writes: dict[str, Any], out: Path) -> list[Path]:
    """Writes/s and p99 put latency against the number of writer processes."""
    paths = []
    for key, ylabel, title, name, log in (
            ("writes_per_s", "checkpoint writes per second (writes/s)",
             "Checkpoint writes/s by number of writer processes", "bench-writes-per-s.png",
             False),
            ("p99_ms", "p99 put() latency (ms, log scale)",
             "p99 put() latency by number of writer processes", "bench-writes-p99.png", True)):
        fig, ax = plt.subplots(figsize=(8, 5))
        for store, series in writes["series"].items():
            _errorbar(ax, [s["processes"] for s in series], [s[key] for s in series],
                      label=LABELS.get(store, store))
        ax.set_xscale("log", base=2)
        ax.set_xticks(writes["processes"], [str(n) for n in writes["processes"]])
        ax.set_xlabel("writer processes (each with its own connection)")
        ax.set_ylabel(ylabel)
        if log:
            _plain_log_y(ax)
        else:
            ax.set_ylim(bottom=0)
        ax.set_title(title)
        ax.grid(True, which="both", alpha=0.3)
        ax.legend()
        fig.text(0.01, 0.005, _writes_note(writes), fontsize=7, alpha=0.8)
        fig.subplots_adjust(bottom=0.15)
        paths.append(_save(fig, out / name))
    return paths


def filters_chart(filters: dict[str, Any], out: Path) -> list[Path]:
    """list(filter=...) p50 and p99 against the table size, with and without the indexes."""
    fig, axes = plt.subplots(1, 2, figsize=(12, 5), sharey=True)
    sizes = [s["checkpoints"] for s in filters["series"]]
    for ax, key in zip(axes, ("p50_ms", "p99_ms"), strict=True):
        for query in filters["series"][0]["queries"]:
            for variant, line in (("no_index", "-"), ("expression_index", "--")):
                _errorbar(ax, sizes, [s["queries"][query][variant][key]
                                      for s in filters["series"]], linestyle=line,
                          label=f"{QUERY_LABELS.get(query, query)}, {LABELS[variant]}")
        ax.set_xscale("log")
        ax.set_xticks(sizes, [_count(n) for n in sizes])
        ax.xaxis.set_minor_formatter(NullFormatter())
        _plain_log_y(ax)
        ax.tick_params(axis="y", which="both", labelleft=True)
        ax.set_xlabel("checkpoints in the table (rows, log scale)")
        ax.set_ylabel(f"SqliteSaver.list(filter=...) {key[:3]} latency (ms, log scale)")
        ax.set_title(f"Metadata filter latency, {key[:3]}")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8)
    answers = sorted({q["answer_rows"] for s in filters["series"] for q in s["queries"].values()})
    fig.text(0.01, 0.005, f"SQLite {filters['sqlite_version']}; answers of "
             f"{answers[0]}-{answers[-1]} checkpoints; {filters['runs_per_round']} calls a round, "
             f"median of {filters['rounds']} interleaved rounds (bars: min-max)",
             fontsize=7, alpha=0.8)
    fig.subplots_adjust(bottom=0.15)
    return [_save(fig, out / "bench-filter-latency.png")]


def budget_charts(budget: dict[str, Any], out: Path) -> list[Path]:
    """p99 of every checkpoint operation by table size and by concurrency, both setups."""
    paths = []
    for key, xkey, xlabel, name, log_x in (
            ("by_size", "checkpoints", "checkpoints in the table (log scale)",
             "bench-budget-by-size.png", True),
            ("by_processes", "processes", "service processes at once",
             "bench-budget-by-concurrency.png", False)):
        series = budget[key]
        if not series:
            continue
        xs = [s[xkey] for s in series]
        fig, axes = plt.subplots(1, 2, figsize=(12, 5), sharey=True)
        for ax, setup in zip(axes, ("baseline", "tuned"), strict=True):
            for i, op in enumerate(budget["ops"]):
                color = f"C{i}"
                _errorbar(ax, xs, [s[setup][op]["p99_ms"] for s in series], label=op,
                          color=color)
                if setup == "tuned" and "ready_p99_ms" in series[0][setup][op]:
                    _errorbar(ax, xs, [s[setup][op]["ready_p99_ms"] for s in series],
                              color=color, linestyle="--", alpha=0.6,
                              label=f"{op}, less run-queue waits")
            ax.axhline(5.0, color="red", linestyle=":", label="5 ms budget")
            if log_x:
                ax.set_xscale("log")
                ax.xaxis.set_minor_formatter(NullFormatter())
            ax.set_xticks(xs, [_count(x) for x in xs])
            _plain_log_y(ax)
            ax.tick_params(axis="y", which="both", labelleft=True)
            ax.set_xlabel(xlabel)
            ax.set_ylabel("p99 latency (ms, log scale)")
            ax.set_title({"baseline": "no pool, setup() indexes only",
                          "tuned": "pool + ckpt pg indexes"}[setup])
            ax.grid(True, which="both", alpha=0.3)
            ax.legend(fontsize=8)
        fixed = (f"{series[0]['processes']} processes" if key == "by_size"
                 else f"{_count(series[0]['checkpoints'])} checkpoints")
        fig.text(0.01, 0.005, f"{fixed}; Poisson arrivals ({budget['rate']:g} turns/s per process, "
                 f"{budget['seconds']:g} s a round); median of {budget['rounds']} alternating "
                 "rounds (bars: min-max)", fontsize=7, alpha=0.8)
        fig.subplots_adjust(bottom=0.15)
        paths.append(_save(fig, out / name))
    return paths


def memory_chart(memory: dict[str, Any], out: Path) -> list[Path]:
    """Checkpoint bytes after each turn, naive and hybrid, with the guard's limit."""
    fig, ax = plt.subplots(figsize=(8, 4.5))
    naive, hybrid = memory["naive"], memory["hybrid"]
    for name, data, style in (("naive (every message)", naive, "-"),
                              ("hybrid (window + Store)", hybrid, "-")):
        series = data["bytes_per_turn"]
        ax.plot(range(1, len(series) + 1), [b / 1024 for b in series], style, label=name)
    ax.axhline(memory["limit_bytes"] / 1024, color="red", linestyle="--",
               label=f"SizeGuardSaver limit ({memory['limit_bytes'] // 1024} KB)")
    if naive["refused_turn"]:
        ax.axvline(naive["refused_turn"], color="grey", linestyle=":",
                   label=f"naive refused at turn {naive['refused_turn']}")
    ax.set_xlabel("conversation turn")
    ax.set_ylabel("checkpoint size, KB (read from SQLite)")
    ax.set_title(f"Checkpoint bytes per turn over {memory['turns']} turns")
    ax.set_ylim(bottom=0)
    ax.legend(loc="lower right")
    return [_save(fig, out / "bench-memory-bytes-per-turn.png")]


def cost_chart(cost: dict[str, Any], out: Path) -> list[Path]:
    """$/month of each setup against the number of active threads (both axes log)."""
    fig, ax = plt.subplots(figsize=(8, 5))
    xs = [s["threads"] for s in cost["series"]]
    for setup, marker in (("Redis-only", "o"), ("PostgreSQL-only", "s"), ("tiered", "^")):
        ax.plot(xs, [s[setup]["usd_per_month"] for s in cost["series"]], marker=marker,
                label=setup)
    ax.set_xscale("log")
    ax.set_xticks(xs, [_count(x) for x in xs])
    ax.xaxis.set_minor_formatter(NullFormatter())
    _plain_log_y(ax)
    ax.set_xlabel("active threads (log scale)")
    ax.set_ylabel("monthly cost, USD (log scale)")
    ax.set_title("Checkpoint storage cost by setup (us-east-1, on-demand)")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend()
    s = cost["sizes"]
    fig.text(0.01, 0.005, f"measured: PostgreSQL {s['pg_bytes_per_checkpoint']:,.0f} B, Redis "
             f"{s['redis_bytes_per_checkpoint']:,.0f} B a checkpoint (x{s['redis_overhead']:g}); "
             f"{cost['turns_per_day']} turns/day, {s['checkpoints_per_turn']:g} checkpoints/turn, "
             f"{cost['retention_days']} days, hot = newest {s['hot_keep']}; "
             "prices.toml", fontsize=7, alpha=0.8)
    fig.subplots_adjust(bottom=0.15)
    return [_save(fig, out / "bench-cost-monthly.png")]


CHARTS = {"writes": writes_charts, "filters": filters_chart, "budget": budget_charts,
          "memory": memory_chart, "cost": cost_chart}


def write_report(results: dict[str, Any], out: Path) -> Path:
    """Draw the charts of every benchmark in ``results`` and write ``out/bench.json``."""
    out.mkdir(parents=True, exist_ok=True)
    charts = {}
    for name, data in results["benchmarks"].items():
        if name in CHARTS:
            charts[name] = [p.name for p in CHARTS[name](data, out)]
    path = out / "bench.json"
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps({**results, "charts": charts}, indent=2) + "\n")
    tmp.replace(path)
    return path
