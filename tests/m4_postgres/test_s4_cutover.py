"""4.6 `m4_postgres/s4_cutover.py`: the witness, metric by metric."""

from __future__ import annotations

import math

from m4_postgres import s4_cutover
from tests.conftest import RunLesson

BASE = ["delete_thread", "get_tuple", "list", "put", "put_writes"]


def test_4_6_cutover(lesson_run: RunLesson) -> None:
    w = lesson_run("m4_postgres.s4_cutover").witness  # phase_s=0.5, clients=2, conversations=4
    for phase in s4_cutover.PHASES:
        assert w[f"{phase}.requests"].value > 0, phase
        assert w[f"{phase}.failed_requests"].value == 0, (phase, w.evidence)
        assert w[f"{phase}.turn_p99_ms"].value > 0, phase
    assert w["backfill.threads"].value >= 8  # every conversation begun on SQLite, at least
    assert w["backfill.checkpoints"].value > 0
    assert w["verify.checkpoints"].value >= w["backfill.checkpoints"].value
    assert w["verify.missing"].value == 0
    assert w["verify.mismatches"].value == 0
    assert w["verify.only_in_postgres"].value == 0
    for share in (10, 50):
        assert 0 < w[f"route{share}.pg_read_share"].value < 100
        n = w[f"route{share}.threads_read"].value
        assert n >= 8
        sd = 100 * math.sqrt(share / 100 * (1 - share / 100) / n)
        assert w[f"route{share}.pg_thread_share_deviation"].value <= 3 * sd
    assert w["route100.pg_read_share"].value == 100
    assert w["route100.threads_read"].value >= 8
    assert w["route100.pg_thread_share_deviation"].value == 0
    assert w["route10.pg_read_share"].value < w["route50.pg_read_share"].value
    assert w["secondary_write_failures"].value == 0
    # retiring SQLite waits only for the requests in flight on it, each one chat turn: a drain
    # that waited for anything else (a stuck request, new ones) would take seconds
    assert w["retire.drain_s"].value < 2
    assert w["retire.checkpoints_compared"].value >= w["verify.checkpoints"].value
    assert w["retire.missing_or_mismatched"].value == 0
    assert w["sqlite_rows_written_after_retirement"].value == 0
    early = w["conversations_begun_before_cutover"].value
    assert early >= 8  # 2 clients x 4 conversations begin at once
    assert w["recalled_first_turn_after_cutover"].value == early
    assert w.passed
