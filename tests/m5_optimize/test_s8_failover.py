"""5.8 `m5_optimize/s8_failover.py`: the witness, metric by metric."""

from __future__ import annotations

from tests.conftest import RunLesson


def test_5_8_failover(lesson_run: RunLesson) -> None:
    # 5 failovers with synchronous replication, 2 with asynchronous, 0.5 s of traffic between
    w = lesson_run("m5_optimize.s8_failover").witness
    assert w.error is None, w.error
    for mode, failovers in (("sync", 5), ("async", 2)):
        assert w[f"{mode}.lag_samples"].value > 0
        assert w[f"{mode}.lag_replay_bytes_max"].value >= w[f"{mode}.lag_replay_bytes_p50"].value
        assert w[f"{mode}.lag_replay_ms_max"].value >= w[f"{mode}.lag_replay_ms_p50"].value
        assert w[f"{mode}.histories_checked"].value > 0
        assert w[f"{mode}.histories_equal_on_standby"].value == w[f"{mode}.histories_checked"].value
        assert w[f"{mode}.reads_served_by_standby"].value is True
        assert w[f"{mode}.failovers"].value == failovers
        assert w[f"{mode}.failover_to_first_write_p50_s"].value > 0
        assert w[f"{mode}.failover_to_first_write_max_s"].value < 60
        assert w[f"{mode}.acknowledged_checkpoints"].value > 0
    assert w["sync.promoted_commit_waited"].value == 5  # '*' with no standby: commits wait
    assert w["async.promoted_commit_waited"].value == 0
    assert w["sync.acknowledged_lost"].value == 0
    assert w["async.acknowledged_lost"].value >= 0  # printed as measured, no target
    assert w["async.acknowledged_lost"].target is None
    assert w["sync.failed_invocations"].value == 0
    assert w["sync.conversations_recalling_turn_1"].value > 0
    assert w["sync.conversations_recalling_turn_1"].met
    assert w["sync.duplicate_messages"].value == 0
    assert w["sync.duplicate_checkpoint_steps"].value == 0
    assert w["sync.conversations_unlike_their_turns"].value == 0
    assert w["unreachable_primary_one_sentence"].value is True
    assert w["bad_url_one_sentence"].value is True
    assert any("synchronous_standby_names='*'" in line and "fsync=on" in line
               for line in w.evidence)
    assert any("synchronous_standby_names=''" in line for line in w.evidence)
    assert any(note.startswith("Decision:") for note in w.notes)
    assert w.passed
