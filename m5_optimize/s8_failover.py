"""5.8 A hot standby and failover: SIGKILL the primary, promote the standby, lose nothing.

Two embedded servers on loopback, both with ``DURABLE`` settings (fsync=on,
synchronous_commit=on) plus streaming replication (shared/infra/standby.py): the standby is
a ``pg_basebackup -R -X stream`` of the primary. Proves, against a ledger of every
acknowledged checkpoint:

- the standby streams under chat traffic: replication lag in bytes and ms, sampled; the
  history of a conversation (``list``) read on the standby equals the primary's;
- with synchronous replication (``synchronous_standby_names='*'``) the app, whose pool
  connects through a multi-host URL with ``target_session_attrs=read-write``, survives
  repeated failovers (SIGKILL the primary, promote the standby, rebuild the old primary as
  the new standby on its old port): 0 failed invocations, 0 acknowledged checkpoints lost,
  0 duplicates, and each conversation still recalls its first turn;
- with asynchronous replication the same drill's losses are counted and printed as measured;
- an unreachable primary is one clear sentence.
"""

from __future__ import annotations

import time
from pathlib import Path

import shared.witness
from shared.bench import percentile
from shared.errors import CheckpointError
from shared.infra import standby as sb
from shared.infra.postgres import EmbeddedPostgres, embedded_postgres, wait_until_ready
from shared.witness import Witness, fresh_workdir
from shared.workloads import failover_drill
from shared.workloads.postgres_writers import setup_postgres
from shared.workloads.restart_drill import Audit, audit


def failover(primary: EmbeddedPostgres, standby: EmbeddedPostgres,
             traffic: failover_drill.Drill) -> dict[str, float]:
    """One failover under traffic: seconds from the SIGKILL to each step, and what was
    acknowledged while the new primary had no standby yet."""
    lag = sb.replication_lag(primary.url)  # the last sample before the crash
    killed = time.monotonic()
    primary.kill()  # SIGKILL; returns once the postmaster and all its backends are gone
    dead = time.monotonic()
    sb.promote(standby)
    promoted = time.monotonic()
    rebuilt = sb.rebuild_standby(primary, standby)  # a fresh base backup, on the old port
    return {"promoted": promoted - killed, "standby_back": rebuilt.streaming - killed,
            "first_write": traffic.first_write(killed, dead),
            # acknowledged by the new primary before any standby of it existed
            "acked_alone": len(traffic.acks_called_after(dead, until=rebuilt.backup_done)),
            "lag_bytes": lag.flush_bytes, "lag_ms": lag.write_ms}


def drill(w: Witness, wd: Path, *, synchronous: bool, failovers: int, workers: int,
          traffic_s: float, lag_s: float) -> tuple[list[dict[str, float]], tuple[failover_drill.Drill, Audit], int, int]:
    mode = "sync" if synchronous else "async"
    settings = sb.replication_settings(synchronous)
    with embedded_postgres(wd / f"{mode}-a", settings) as a, \
            sb.start_standby(a, wd / f"{mode}-b", settings) as b:
        setup_postgres(a.url)
        for server in (a, b):
            shown = sb.show_settings(server)
            w.show(f"{mode}: port {server.port} " + ", ".join(
                f"{k}={v!r}" if k == "synchronous_standby_names" else f"{k}={v}"
                for k, v in shown.items()))
        url = sb.multi_host_url(a, b)
        primary, standby, runs = a, b, []
        with failover_drill.traffic(url, prefix=mode, workers=workers) as traffic:
            # --- the standby under load: lag, and history reads it serves ------------------
            lags = sb.sample_lag(primary.url, lag_s)
            w.show(f"{mode}: replication lag under chat traffic, {len(lags)} samples: replay "
                   f"p50 {percentile([x.replay_bytes for x in lags], 50):,.0f} B / max "
                   f"{max(x.replay_bytes for x in lags):,} B; replay_lag p50 "
                   f"{percentile([x.replay_ms for x in lags], 50):.1f} ms / max "
                   f"{max(x.replay_ms for x in lags):.1f} ms; write_lag max "
                   f"{max(x.write_ms for x in lags):.1f} ms; standby "
                   f"{'/'.join(lags[-1].sync_states)}")
            w.metric(f"{mode}.lag_samples", len(lags), "samples", "> 0")
            w.metric(f"{mode}.lag_replay_bytes_max", max(x.replay_bytes for x in lags), "B")
            w.metric(f"{mode}.lag_replay_ms_max", round(max(x.replay_ms for x in lags), 1),
                     "ms")
            done = traffic.finished_threads()[:10]
            sb.wait_replayed(primary, standby)
            equal, read, served = failover_drill.same_history(primary.url, standby.url, done)
            w.show(f"{mode}: {len(done)} finished conversations listed on the standby "
                   f"({read} checkpoints, in recovery: {served}): {equal} equal to the primary's")
            w.metric(f"{mode}.histories_equal_on_standby", equal, "threads", f"== {len(done)}")
            w.metric(f"{mode}.histories_checked", len(done), "threads", "> 0")
            w.metric(f"{mode}.reads_served_by_standby", served, "", "== yes")
            # --- the failovers --------------------------------------------------------------
            for _ in range(failovers):
                time.sleep(traffic_s)
                runs.append(failover(primary, standby, traffic))
                primary, standby = standby, primary
            time.sleep(traffic_s)
        asked, recalled = failover_drill.recall(url, traffic)
        found = audit(url, {"retrying": traffic.arm})
    return runs, (traffic, found), asked, recalled


def main(workdir: Path | None = None, sync_failovers: int = 10, async_failovers: int = 5,
         workers: int = 2, traffic_s: float = 2.0, lag_s: float = 3.0) -> Witness:
    w = Witness("5.8", "A hot standby and failover")
    wd = fresh_workdir(workdir, "m5_s8_failover")
    try:
        for synchronous, n in ((True, sync_failovers), (False, async_failovers)):
            mode = "sync" if synchronous else "async"
            runs, (traffic, found), asked, recalled = drill(
                w, wd, synchronous=synchronous, failovers=n, workers=workers,
                traffic_s=traffic_s, lag_s=lag_s)
            report(w, mode, runs, traffic, found, asked, recalled)
        # --- a primary nobody can reach -------------------------------------------------------
        dead = "postgresql://app:s3cret@127.0.0.1:1,127.0.0.1:2/postgres?target_session_attrs=read-write"
        try:
            wait_until_ready(dead, timeout=1)
            refused = ""
        except CheckpointError as exc:
            refused = str(exc)
        w.show(f"no primary reachable: {refused}")
        w.metric("unreachable_primary_one_sentence", bool(refused) and "\n" not in refused
                 and "s3cret" not in refused, "", "== yes")
    except CheckpointError as exc:
        w.error = " ".join(str(exc).split())
    return w


def report(w: Witness, mode: str, runs: list[dict[str, float]], traffic: failover_drill.Drill,
           found: Audit, asked: int, recalled: int) -> None:
    arm = traffic.arm
    for i, r in enumerate(runs, 1):
        w.show(f"{mode} failover {i}: last lag before the kill {r['lag_bytes']:,.0f} B unflushed"
               f" (write_lag {r['lag_ms']:.1f} ms); promoted {r['promoted']:.2f} s, new standby "
               f"streaming {r['standby_back']:.2f} s, first write on the new primary "
               f"{r['first_write']:.2f} s after the SIGKILL; {r['acked_alone']:.0f} writes "
               "acknowledged before its standby streamed")
    firsts = [r["first_write"] for r in runs]
    errors = ", ".join(f"{n} {e}" for e, n in arm.errors.most_common()) or "none"
    w.show(f"{mode}: {arm.ok:,} invocations, {arm.failed} failed ({errors}), "
           f"{len(arm.retries):,} retries; {len(arm.acked):,} checkpoints acknowledged, "
           f"{found.lost['retrying']} of them missing on the final primary; "
           f"{recalled}/{asked} conversations recall their first turn")
    w.metric(f"{mode}.failovers", len(runs), "failovers", f"== {len(runs)}")
    w.metric(f"{mode}.failover_to_first_write_p50_s", round(percentile(firsts, 50), 2), "s")
    w.metric(f"{mode}.failover_to_first_write_max_s", round(max(firsts), 2), "s", "< 60")
    w.metric(f"{mode}.acknowledged_checkpoints", len(arm.acked), "checkpoints", "> 0")
    lost = found.lost["retrying"]
    w.metric(f"{mode}.acknowledged_lost", lost, "checkpoints",
             "== 0" if mode == "sync" else None)
    if mode == "async":
        return
    w.metric(f"{mode}.failed_invocations", arm.failed, "invocations", "== 0")
    w.metric(f"{mode}.conversations_recalling_turn_1", recalled, "threads", f"== {asked}")
    w.metric(f"{mode}.duplicate_messages", found.duplicate_messages, "messages", "== 0")
    w.metric(f"{mode}.duplicate_checkpoint_steps", found.duplicate_steps, "checkpoints", "== 0")


if __name__ == "__main__":
    raise SystemExit(shared.witness.cli(main))
