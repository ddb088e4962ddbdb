"""The hot tier beside the plain-Redis peer: every figure present and sane at small scale; the
hybrid loses nothing when Redis is flushed, the peer loses what it held; the hybrid keeps
``hot_keep`` checkpoints per thread in Redis however long the thread. Speed is reported, not
asserted (either may win)."""

from __future__ import annotations

from itertools import pairwise

from shared.workloads.tier_peer import Arm, compare_with_peer, peer_write_atomicity


def _latency_sane(arm: Arm) -> None:
    for lat in (arm.read, arm.turn):
        assert lat is not None
        assert 0 < lat.p50_ms <= lat.p99_ms, lat
        assert "over 2 rounds" in lat.p50_spread and "over 2 rounds" in lat.p99_spread


def test_side_by_side_small(redis_db: str, pg_db: str) -> None:
    steps: list[str] = []
    res = compare_with_peer(redis_db, pg_db, threads=4, turns=3, rounds=2, reads=50,
                            on_step=steps.append)
    assert (res.threads, res.turns, res.rounds, res.reads, res.hot_keep) == (4, 3, 2, 50, 10)
    assert res.how_lost == "FLUSHALL" and steps
    for arm in (res.hybrid, res.peer):
        _latency_sane(arm)
        assert arm.keys > 0 and arm.bytes_per_thread > 0
        assert len(arm.bytes_per_thread_by_turn) == len(arm.keys_by_turn) == 3
        assert arm.acknowledged == 4 * 3 * 3  # 3 checkpoints a turn in the chat graph
    # memory: 9 checkpoints a thread, under hot_keep=10, so both hold all of them in Redis
    assert res.hybrid.checkpoints_in_redis_by_turn == res.peer.checkpoints_in_redis_by_turn \
        == [3.0, 6.0, 9.0]
    assert res.peer.keys_by_turn[0] < res.peer.keys_by_turn[-1]  # new keys every turn
    assert len(set(res.hybrid.keys_by_turn)) == 1  # a fixed set of keys per thread
    # Redis lost: the hybrid resumes every thread from PostgreSQL; the peer had only Redis
    assert res.hybrid.lost == 0 and res.hybrid.threads_resumable == 4
    assert res.peer.lost == res.peer.acknowledged and res.peer.threads_resumable == 0
    assert res.peer_write_atomicity == peer_write_atomicity()
    assert "put:" in res.peer_write_atomicity and "put_writes:" in res.peer_write_atomicity
    assert res.to_dict()["peer"]["lost"] == res.peer.lost


def test_hybrid_keeps_hot_keep_checkpoints(redis_db: str, pg_db: str) -> None:
    res = compare_with_peer(redis_db, pg_db, threads=1, turns=5, rounds=1, reads=5, hot_keep=3)
    hyb, peer = res.hybrid, res.peer
    # 3 checkpoints a turn: the hybrid holds hot_keep=3 from the first turn on, the peer all
    assert hyb.checkpoints_in_redis_by_turn == [3.0] * 5
    assert peer.checkpoints_in_redis_by_turn == [3.0, 6.0, 9.0, 12.0, 15.0]
    # bytes: the hybrid's grow only with the newest state (two more messages a turn), by
    # about the same amount each turn; the peer keeps every version, so its growth grows
    hyb_steps = [b - a for a, b in pairwise(hyb.bytes_per_thread_by_turn)]
    peer_steps = [b - a for a, b in pairwise(peer.bytes_per_thread_by_turn)]
    assert max(hyb_steps[1:]) <= 1.5 * min(hyb_steps[1:]), hyb_steps
    assert all(b > a for a, b in pairwise(peer_steps)), peer_steps
    assert hyb_steps[-1] < peer_steps[-1] / 3
    assert hyb.lost == 0 and hyb.threads_resumable == 1 and peer.threads_resumable == 0
