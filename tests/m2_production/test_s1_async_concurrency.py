"""2.1 `m2_production/s1_async_concurrency.py`: the witness, metric by metric."""

from __future__ import annotations

from tests.conftest import RunLesson


def test_2_1_async_concurrency(lesson_run: RunLesson) -> None:
    w = lesson_run("m2_production.s1_async_concurrency").witness  # n=10
    assert w["speedup_n10"].value >= 9
    assert 1 < w["speedup_n10_median"].value <= w["speedup_n10"].value  # best round >= median
    assert w["errors"].value == 0
    assert w["database_locked_errors"].value == 0
    assert w["threads_saved"].value == 40  # 2 rounds x (10 one after another + 10 at once)
    assert w["errors_no_io"].value == 0
    # the no-I/O node cannot overlap anything: far below the I/O-bound speed-up
    assert w["speedup_n10_no_io"].value < w["speedup_n10"].value / 2
    for procs in (1, 2, 4, 8):
        for label in ("default", "short"):
            prefix = f"procs{procs}.{label}_timeout"
            assert w[f"{prefix}.writes_per_s"].value > 0
            assert w[f"{prefix}.other_errors"].value == 0
            assert w[f"{prefix}.p99_ms"].value > 0
        assert w[f"procs{procs}.default_timeout.lock_errors"].value == 0
    assert w["procs1.short_timeout.lock_errors"].value == 0  # one writer never waits
    assert w["short_timeout_lock_errors_total"].value > 0
    assert w.passed
