"""``make bench`` at quick scale: bench.json's structure, real PNG charts, no server left."""

from __future__ import annotations

import json
import shutil
import struct
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from shared import ROOT
from shared.bench import percentile
from shared.benchmarks import runner
from shared.benchmarks.timing import interleaved

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _png_size(path: Path) -> tuple[int, int]:
    """Width and height from the IHDR chunk, after checking the signature."""
    data = path.read_bytes()
    assert data[:8] == PNG_MAGIC, f"{path.name} is not a PNG"
    assert data[12:16] == b"IHDR"
    return struct.unpack(">II", data[16:24])


def _spread_ok(s: dict[str, float]) -> None:
    assert set(s) == {"median", "min", "max"}
    assert 0 < s["min"] <= s["median"] <= s["max"]


@pytest.fixture(scope="module")
def quick_report() -> tuple[dict, Path]:
    # Scratch space outside pytest's base temp (see conftest's pg_url: the embedded
    # server may run as another user and must reach its data directory).
    home = Path(tempfile.mkdtemp(prefix="ckpt-test-bench-"))
    try:
        path = runner.run(home / "reports", home / "work", quick=True)
        yield json.loads(path.read_text()), home / "reports"
    finally:
        shutil.rmtree(home, ignore_errors=True)


def test_bench_json_writes(quick_report: tuple[dict, Path]) -> None:
    report, _ = quick_report
    assert report["scale"] == "quick"
    writes = report["benchmarks"]["writes"]
    scale = runner.SCALES["quick"]["writes"]
    assert writes["processes"] == list(scale["processes"])
    assert writes["rounds"] == scale["rounds"]
    assert set(writes["series"]) == {"sqlite", "postgres"}
    assert writes["settings"]["sqlite"]["journal_mode"] == "wal"
    assert writes["settings"]["postgres"]["server_version"]
    for store, series in writes["series"].items():
        assert [s["processes"] for s in series] == list(scale["processes"]), store
        for s in series:
            assert len(s["rounds"]) == scale["rounds"]
            assert all(r["writes"] > 0 for r in s["rounds"]), (store, s)
            assert s["errors"] == 0, (store, s)  # SQLite waits on its busy timeout here
            for key in ("writes_per_s", "p50_ms", "p99_ms"):
                _spread_ok(s[key])
            # writes/s is what was written in the time given, round by round
            assert sorted(r["writes"] / scale["seconds"] for r in s["rounds"])[0] == \
                pytest.approx(s["writes_per_s"]["min"])
            assert s["p50_ms"]["median"] <= s["p99_ms"]["max"]


def test_bench_json_filters(quick_report: tuple[dict, Path]) -> None:
    report, _ = quick_report
    filters = report["benchmarks"]["filters"]
    scale = runner.SCALES["quick"]["filters"]
    assert [s["checkpoints"] for s in filters["series"]] == list(scale["sizes"])
    for s in filters["series"]:
        assert s["rows"] == s["checkpoints"]  # the table really holds that many
        assert set(s["queries"]) == {"one_tag", "two_tags"}
        for name, q in s["queries"].items():
            assert 0 < q["answer_rows"] < s["checkpoints"], name
            assert q["no_index"]["index_used"] is False
            assert q["expression_index"]["index_used"] is True
            for variant in ("no_index", "expression_index"):
                assert len(q[variant]["rounds"]) == scale["rounds"]
                _spread_ok(q[variant]["p50_ms"])
                _spread_ok(q[variant]["p99_ms"])


def test_bench_json_budget(quick_report: tuple[dict, Path]) -> None:
    report, _ = quick_report
    budget = report["benchmarks"]["budget"]
    scale = runner.SCALES["quick"]["budget"]
    # every size at the most processes, every number of processes at the largest size
    assert [s["checkpoints"] for s in budget["by_size"]] == list(scale["sizes"])
    assert {s["processes"] for s in budget["by_size"]} == {max(scale["processes"])}
    assert [s["processes"] for s in budget["by_processes"]] == list(scale["processes"])
    assert {s["checkpoints"] for s in budget["by_processes"]} == {max(scale["sizes"])}
    for s in budget["by_size"] + budget["by_processes"]:
        for setup in ("baseline", "tuned"):
            assert s[setup]["errors"] == 0, (s["checkpoints"], s["processes"], setup)
            for op in ("get_tuple", "put", "put_writes"):  # every turn runs these
                _spread_ok(s[setup][op]["p50_ms"])
                _spread_ok(s[setup][op]["p99_ms"])
        # a new connection for every call costs more than a pooled one, in the same rounds
        assert s["baseline"]["put"]["p50_ms"]["median"] > s["tuned"]["put"]["p50_ms"]["median"]


def test_bench_json_memory(quick_report: tuple[dict, Path]) -> None:
    report, _ = quick_report
    memory = report["benchmarks"]["memory"]
    turns = runner.SCALES["quick"]["memory"]["turns"]
    limit = memory["limit_bytes"]
    assert 1 < memory["naive"]["refused_turn"] < turns  # the guard stopped the naive graph
    assert len(memory["naive"]["bytes_per_turn"]) == memory["naive"]["refused_turn"] - 1
    assert len(memory["hybrid"]["bytes_per_turn"]) == turns
    assert max(memory["hybrid"]["bytes_per_turn"]) <= memory["hybrid"]["largest_bytes"] < limit
    assert memory["hybrid"]["facts_recalled"] == 4
    assert memory["store"]["items"] > 0 and memory["store"]["bytes"] > 0


def test_bench_json_cost(quick_report: tuple[dict, Path]) -> None:
    report, _ = quick_report
    cost = report["benchmarks"]["cost"]
    assert cost["scales"] == list(runner.SCALES["quick"]["cost"]["scales"])
    sizes = cost["sizes"]
    assert sizes["pg_bytes_per_checkpoint"] > 0 and sizes["redis_bytes_per_checkpoint"] > 0
    for s in cost["series"]:
        bills = {k: s[k]["usd_per_month"] for k in ("Redis-only", "PostgreSQL-only", "tiered")}
        assert 0 < bills["PostgreSQL-only"] <= bills["tiered"] < bills["Redis-only"], bills


def test_charts_are_real_pngs(quick_report: tuple[dict, Path]) -> None:
    report, out = quick_report
    names = [n for charts in report["charts"].values() for n in charts]
    assert set(report["charts"]) == {"writes", "filters", "budget", "memory", "cost"}
    assert sorted(names) == sorted(p.name for p in out.glob("*.png"))
    assert len(names) == 7
    for name in names:
        width, height = _png_size(out / name)
        assert width >= 600 and height >= 400, (name, width, height)
        assert (out / name).stat().st_size > 20_000, name  # axes, lines, text: not blank


def test_timing_helpers() -> None:
    assert percentile([], 99) == 0.0
    assert percentile(list(range(1, 101)), 99) == 99
    assert percentile(list(range(1, 101)), 50) == 50
    calls: list[str] = []
    got = interleaved({"a": lambda: calls.append("a") or 1,
                       "b": lambda: calls.append("b") or 2}, rounds=3)
    assert calls == ["a", "b", "b", "a", "a", "b"]
    assert got == {"a": [1, 1, 1], "b": [2, 2, 2]}


def test_cli_help_and_bad_only() -> None:
    ok = subprocess.run([sys.executable, "-m", "shared.benchmarks", "--help"], cwd=ROOT,
                        capture_output=True, text=True, timeout=60)
    assert ok.returncode == 0
    assert "--quick" in ok.stdout and "--out DIR" in ok.stdout
    bad = subprocess.run([sys.executable, "-m", "shared.benchmarks", "--only", "nope"],
                         cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert bad.returncode == 2
    assert "unknown benchmark 'nope': choose from writes, filters" in bad.stderr
