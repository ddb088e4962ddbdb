"""Kill drills: ``ckpt migrate`` in a child process, SIGKILLed in the middle of a batch.

``start_migrate(src, dst)`` starts the real command in a fresh interpreter;
``kill_mid_migration(proc, dst_url, at_least)`` waits until that many checkpoints are
committed in PostgreSQL, preferably while the child's next batch transaction is open, sends
SIGKILL, and reports what was committed before and after PostgreSQL rolled back.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass

from shared import ROOT


def start_migrate(src: str, dst: str, *options: str) -> subprocess.Popen[str]:
    """Start ``ckpt migrate SRC DST`` in a fresh interpreter and return at once."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p)}
    return subprocess.Popen([sys.executable, "-m", "shared.cli", "migrate", src, dst,
                             "--json", *options], cwd=ROOT, env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)


@dataclass
class Kill:
    """What a SIGKILL sent to a running migration hit."""

    killed: bool  # the child died of SIGKILL (it had not finished)
    committed_at_kill: int  # checkpoints committed in the destination when the signal went
    in_transaction: bool  # the child's write transaction was open when the signal went
    committed_after: int  # once PostgreSQL had rolled that transaction back


def kill_mid_migration(proc: subprocess.Popen[str], dst_url: str, at_least: int,
                       timeout: float = 120.0) -> Kill:
    """SIGKILL ``proc`` once ``at_least`` checkpoints are committed in ``dst_url``, preferably
    while its next batch transaction is open (has written rows: ``backend_xid`` is set)."""
    import psycopg

    def count() -> int:  # 0 until the child's setup() has created the table
        if conn.execute("SELECT to_regclass('checkpoints')").fetchone()[0] is None:
            return 0
        return conn.execute("SELECT count(*) FROM checkpoints").fetchone()[0]

    others = ("SELECT count(*) FILTER (WHERE backend_xid IS NOT NULL), count(*) FROM "
              "pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid()")
    with psycopg.connect(dst_url, autocommit=True) as conn:
        deadline, reached, writing, committed = time.monotonic() + timeout, None, False, 0
        while proc.poll() is None and time.monotonic() < deadline:
            committed = count()
            if committed >= at_least:
                reached = reached or time.monotonic()
                writing = conn.execute(others).fetchone()[0] > 0
                if writing or time.monotonic() - reached > 5:
                    break
            time.sleep(0.001)
        proc.send_signal(signal.SIGKILL)
        proc.communicate()
        gone = time.monotonic() + 10
        while conn.execute(others).fetchone()[1] and time.monotonic() < gone:
            time.sleep(0.01)  # until the server has noticed the dead client and rolled back
        after = count()
    return Kill(proc.returncode == -signal.SIGKILL, committed, writing, after)
