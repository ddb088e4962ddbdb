"""shared/bench.py: percentiles on known lists, the collector paused, rounds and interleaving."""

from __future__ import annotations

import gc
import time
from pathlib import Path

import pytest

from shared import bench


def _sleep(ms: float):
    return lambda: time.sleep(ms / 1000)


def _spin(ms: float):
    """Keep the CPU busy for ``ms`` of this thread's own CPU time."""
    def run() -> None:
        end = time.thread_time() + ms / 1000
        while time.thread_time() < end:
            pass
    return run


def test_percentile_nearest_rank_on_known_lists() -> None:
    hundred = [float(v) for v in range(1, 101)]
    assert bench.percentile([], 99) == 0.0
    assert bench.percentile([5.0], 99) == 5.0
    assert bench.percentile(hundred, 99) == 99.0
    assert bench.percentile(hundred, 50) == 50.0
    assert bench.percentile(hundred, 100) == 100.0
    assert bench.percentile(hundred, 0) == 1.0
    assert bench.percentile([3.0, 1.0, 2.0], 50) == 2.0  # unsorted input
    assert bench.p99([float(v) for v in range(1, 51)]) == 50.0  # < 100 samples: the maximum
    assert bench.p99([float(v) for v in range(1, 201)]) == 198.0  # rank ceil(0.99 * 200) = 198
    assert bench.p50([1.0, 2.0, 3.0, 4.0]) == 2.0  # a value that occurred, not 2.5


def test_percentile_refuses_q_out_of_range() -> None:
    with pytest.raises(ValueError, match="between 0 and 100"):
        bench.percentile([1.0], 101)


def test_gc_paused_restores_previous_state() -> None:
    assert gc.isenabled()
    with bench.gc_paused():
        assert not gc.isenabled()
    assert gc.isenabled()
    gc.disable()
    try:
        with bench.gc_paused():
            pass
        assert not gc.isenabled()  # was off before: stays off
    finally:
        gc.enable()


def test_time_calls_warms_up_counts_and_pauses_the_collector() -> None:
    seen: list[bool] = []
    samples = bench.time_calls(lambda: seen.append(gc.isenabled()), calls=7, warmup=2)
    assert len(samples) == 7
    assert len(seen) == 9
    assert seen[:2] == [True, True]  # warm-up calls run with the collector on
    assert not any(seen[2:])  # timed calls with it paused
    assert gc.isenabled()
    with pytest.raises(ValueError, match="at least 1"):
        bench.time_calls(lambda: None, calls=0)


def test_time_calls_measures_milliseconds() -> None:
    samples = bench.time_calls(_sleep(2), calls=3, warmup=0)
    assert all(s >= 2.0 for s in samples)
    assert all(s < 200 for s in samples)
    assert bench.p99_ms(_sleep(2), calls=3, warmup=0) >= 2.0


def test_rounds_best_median_spread() -> None:
    r = bench.Rounds([4.0, 2.0, 9.0, 3.0, 5.0])
    assert r.best == 2.0
    assert r.worst == 9.0
    assert r.median == 4.0
    assert r.spread == "2.000..9.000 ms over 5 rounds"
    measured = bench.best_p99_ms(_sleep(1), calls=3, k=4, warmup=1)
    assert len(measured.per_round) == 4
    assert measured.best >= 1.0
    with pytest.raises(ValueError, match="at least 1"):
        bench.rounds(lambda: None, calls=1, k=0)


def test_best_round_ignores_one_slow_round() -> None:
    """A neighbour that stalls one round (here: a sleep in round 2) does not decide the best."""
    calls = iter(range(10**6))

    def sometimes_slow() -> None:
        n = next(calls)
        time.sleep(0.02 if 3 <= n < 6 else 0.001)  # the second round's three calls

    r = bench.rounds(sometimes_slow, calls=3, k=3, warmup=0)
    assert r.per_round[1] >= 20
    assert r.best < 20
    assert r.median < 20


def test_interleave_alternates_order_and_warms_each_once() -> None:
    log: list[str] = []
    cmp = bench.interleave({"A": lambda: log.append("A"), "B": lambda: log.append("B")},
                           calls=2, k=4, warmup=1)
    assert cmp.order == [["A", "B"], ["B", "A"], ["A", "B"], ["B", "A"]]
    assert log == ["A", "B"] + ["A", "A", "B", "B", "B", "B", "A", "A"] * 2
    assert len(cmp["A"].per_round) == len(cmp["B"].per_round) == 4


def test_interleave_calls_per_contender() -> None:
    counts = {"A": 0, "B": 0}

    def bump(name: str):
        return lambda: counts.__setitem__(name, counts[name] + 1)

    bench.interleave({"A": bump("A"), "B": bump("B")}, calls={"A": 5, "B": 2}, k=3, warmup=0)
    assert counts == {"A": 15, "B": 6}


def test_slower_b_gives_ratio_above_one() -> None:
    cmp = bench.compare_ab(_sleep(1), _sleep(8), calls=3, k=3, warmup=0)
    assert cmp.ratio("B", "A") > 1.5
    assert cmp.ratio("A", "B") < 1 / 1.5
    assert len(cmp.ratios("B", "A")) == 3
    assert cmp.ratio_spread("B", "A").endswith("x over 3 rounds")
    assert "A p99 median" in cmp.describe() and "B p99 median" in cmp.describe()


def test_ratio_is_the_median_of_per_round_ratios() -> None:
    cmp = bench.Comparison({"wall": {"A": bench.Rounds([1.0, 2.0, 10.0]),
                                     "B": bench.Rounds([2.0, 2.0, 50.0])}}, [])
    assert cmp.ratios("B", "A") == [2.0, 1.0, 5.0]
    assert cmp.ratio("B", "A") == 2.0
    assert cmp.ratio_spread("B", "A") == "1.00..5.00x over 3 rounds"


def test_median_quantile_for_comparisons() -> None:
    cmp = bench.interleave({"fast": _sleep(0.5), "slow": _sleep(3)}, calls=5, k=2, warmup=0,
                           q=50)
    assert cmp["slow"].q == 50
    assert cmp.ratio("slow", "fast") > 1.5
    assert "p50 median" in cmp.describe()


def test_cpu_clock_counts_only_the_threads_own_work() -> None:
    """Sleeping costs wall-clock time but no CPU time; spinning costs both."""
    cmp = bench.compare_ab(_sleep(3), _spin(3), calls=3, k=2, warmup=0, clock="cpu")
    assert cmp["A"].clock == "cpu"
    assert cmp["A"].best < 1.0  # slept 3 ms: almost no CPU
    assert cmp["B"].best >= 3.0
    assert cmp.ratio("B", "A") > 3
    wall = cmp.on("wall")
    assert wall["A"].best >= 3.0 and wall["B"].best >= 3.0
    assert "cpu p99 median" in cmp.describe()
    assert "cpu" not in cmp.describe("wall")
    assert bench.time_calls(_sleep(2), calls=2, warmup=0, clock="cpu")[0] < 1.0
    assert bench.best_p99_ms(_spin(2), calls=2, k=2, warmup=0, clock="cpu").best >= 2.0


def test_interleave_by_call_alternates_inside_a_round() -> None:
    log: list[str] = []
    cmp = bench.interleave({"A": lambda: log.append("A"), "B": lambda: log.append("B")},
                           calls=3, k=2, warmup=0, by_call=True)
    assert log == ["A", "B", "B", "A", "A", "B", "B", "A", "A", "B", "B", "A"]  # 2 rounds
    assert len(cmp["A"].per_round) == 2
    with pytest.raises(ValueError, match="one number of calls"):
        bench.interleave({"A": lambda: None}, calls={"A": 1}, by_call=True)


def test_by_call_spreads_a_burst_over_every_contender() -> None:
    """A stall lasting part of a round lands on A and B alike when they alternate by call."""
    calls = iter(range(10**6))

    def stall_sometimes() -> None:  # the first half of every 16 calls is slow
        time.sleep(0.010 if next(calls) % 16 < 8 else 0.001)

    # p25 of each contender's 8 calls: a fast call, whichever contender, unless the stall
    # fell on one contender only; a single late wake-up of the OS timer cannot decide it.
    cmp = bench.interleave({"A": stall_sometimes, "B": stall_sometimes}, calls=8, k=2,
                           warmup=0, q=25, by_call=True)
    assert 0.5 < cmp.ratio("B", "A") < 2
    blocks = bench.interleave({"A": stall_sometimes, "B": stall_sometimes}, calls=8, k=2,
                              warmup=0, q=25)
    assert max(blocks.ratios("B", "A")) > 3 or min(blocks.ratios("B", "A")) < 1 / 3


@pytest.mark.skipif(not Path("/proc/thread-self/schedstat").exists(), reason="Linux only")
def test_run_queue_ns_counts_the_time_another_process_held_our_cpu() -> None:
    import multiprocessing
    import os

    def spin(seconds: float) -> None:
        end = time.perf_counter() + seconds
        while time.perf_counter() < end:
            pass

    cpu = min(os.sched_getaffinity(0))
    before_affinity = os.sched_getaffinity(0)
    os.sched_setaffinity(0, {cpu})  # we and a busy child share one CPU
    try:
        child = multiprocessing.get_context("fork").Process(target=spin, args=(1.0,))
        child.start()
        try:
            waited = bench.run_queue_ns()
            spin(0.4)
            waited = bench.run_queue_ns() - waited
        finally:
            child.join()
    finally:
        os.sched_setaffinity(0, before_affinity)
    assert waited > 50_000_000  # of 0.4 s runnable, a good share spent waiting for the CPU
    assert bench.run_queue_ns(os.getpid()) >= 0
    assert bench.run_queue_ns(2**22 + 12345) == 0  # no such process: 0, not an error
