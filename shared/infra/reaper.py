"""Embedded servers that never outlive the process that started them.

    guard = spawn([...server command...], name="PostgreSQL", stop_signal=signal.SIGINT)
    ...                                  # guard.pid is the server, guard.process its supervisor
    guard.stop()                         # the server stopped and reaped, or killed after grace

A server is not our direct child: ``spawn`` starts a tiny supervisor (``python -I -S -c``),
which starts the server and reads the read end of a pipe (its stdin) whose only write end is
held by this process (the "lifeline"). When this process closes that end (``stop``) or dies in
any way, SIGKILL included, the kernel closes it and the supervisor reads EOF at once: it sends
the server ``stop_signal``, waits ``grace`` seconds, kills it if need be, reaps it, removes the
``cleanup`` directories and exits with the server's status. Only the server's parent
signals it by pid, so a reused pid is never hit. The supervisor runs as we do (so it can
signal a server that runs as another user) and starts the server with ``PR_SET_PDEATHSIG``
(Linux), so a server also gets ``stop_signal`` if its supervisor is killed. The supervisor
lives in its own session: a Ctrl-C at the terminal reaches the owner only, whose ``with``
blocks stop the server in order. Anything that may be unsafe to print (a password) must not
be in the command: it is on the supervisor's command line, which ``ps`` shows.

SIGTERM: while a guarded server runs, a handler (installed from the main thread only, removed
when the last server stops, never over an ignored SIGTERM) stops every server of this process
and then hands the signal on: to the previous Python handler, or the default action, so the
process still dies "killed by SIGTERM". A child forked from the owner (``os.fork``) drops the
lifelines it inherited: the servers belong to the process that started them.

The owner record (``write_owner``) lets the next start on the same data recognise a server
whose owner is gone (``owner_alive``) and stop it (``stop_orphan``), rather than failing on
its lock file or killing a server a live process is using.
"""

from __future__ import annotations

import json
import os
import select
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import IO, Any

from shared.errors import CheckpointError

# Runs as ``python -I -S -c``: the standard library only, nothing from this repository, so
# it starts fast and works from any directory. argv[1] is the JSON spec built by ``spawn``.
_SUPERVISOR = r"""
import json, os, select, shutil, signal, subprocess, sys
spec = json.loads(sys.argv[1])
class Stop(Exception):
    pass
def on_signal(signum, frame):
    raise Stop
for s in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
    signal.signal(s, on_signal)
preexec = None
if sys.platform.startswith("linux"):
    import ctypes
    prctl = ctypes.CDLL(None, use_errno=True).prctl
    me = os.getpid()
    def preexec():
        prctl(1, spec["stop_signal"])  # PR_SET_PDEATHSIG: our death stops the server too
        if os.getppid() != me:  # we died before that took effect
            os._exit(1)
try:
    child = subprocess.Popen(spec["cmd"], stdin=subprocess.DEVNULL, cwd=spec["cwd"],
                             preexec_fn=preexec, **spec["drop"])
    os.write(spec["status_fd"], b"%d\n" % child.pid)
    os.close(spec["status_fd"])
    while child.poll() is None:
        if select.select([0], [], [], 0.2)[0] and not os.read(0, 512):
            break  # EOF: the owner closed the lifeline, or died
except Stop:
    pass
for s in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
    signal.signal(s, signal.SIG_IGN)
if "child" not in globals():
    sys.exit(1)
if child.poll() is None:
    child.send_signal(spec["stop_signal"])
    try:
        child.wait(spec["grace"])
    except subprocess.TimeoutExpired:
        child.kill()
        child.wait()
for path in spec["cleanup"]:
    shutil.rmtree(path, ignore_errors=True)
sys.exit(child.returncode if child.returncode >= 0 else 128 - child.returncode)
"""


class Guarded:
    """A server started by ``spawn``: ``pid`` is the server, ``process`` its supervisor."""

    def __init__(self, process: subprocess.Popen[bytes], pid: int, lifeline: int,
                 name: str, grace: float) -> None:
        self.process, self.pid, self.name, self.grace = process, pid, name, grace
        self.start = start_time(pid)  # the server's identity, with its pid
        self._lifeline: int | None = lifeline
        self._owner = os.getpid()

    def poll(self) -> int | None:
        """None while the server runs, else its exit status (128 + N: killed by signal N)."""
        return self.process.poll()

    def _release(self) -> None:
        """Close our end of the lifeline: the supervisor then stops the server."""
        fd, self._lifeline = self._lifeline, None
        if fd is not None:
            os.close(fd)

    def stop(self) -> None:
        """Stop the server (its stop signal, then SIGKILL after ``grace``) and reap it."""
        self._release()
        try:
            self.process.wait(timeout=self.grace + 10)
        except subprocess.TimeoutExpired:  # a stuck supervisor: its death stops the server
            self.process.kill()
            self.process.wait()
        finally:
            _forget(self)


def spawn(cmd: list[str], *, name: str, stop_signal: int = signal.SIGTERM, grace: float = 30,
          drop: dict[str, Any] | None = None, cleanup: tuple[Path, ...] = (),
          stdout: IO[bytes] | None = None, cwd: str = "/") -> Guarded:
    """Start ``cmd`` under a supervisor that stops it when this process stops or dies.

    ``drop``: the ``user``/``group``/``extra_groups`` keywords of ``subprocess.Popen`` for
    the server (the supervisor itself runs as we do). ``stdout`` receives the server's output
    and stderr. Do not put secrets in ``cmd``: it is on the supervisor's command line.
    """
    spec_fd_r, spec_fd_w = os.pipe()  # the supervisor reports the server's pid here
    life_r, life_w = os.pipe()  # non-inheritable: no other child of ours holds the write end
    spec = {"cmd": cmd, "cwd": cwd, "drop": drop or {}, "stop_signal": int(stop_signal),
            "grace": grace, "cleanup": [str(p) for p in cleanup], "status_fd": spec_fd_w}
    try:
        process = subprocess.Popen(
            [sys.executable, "-I", "-S", "-c", _SUPERVISOR, json.dumps(spec)],
            stdin=life_r, stdout=stdout, stderr=subprocess.STDOUT if stdout else None,
            pass_fds=(spec_fd_w,), start_new_session=True, cwd="/")
    except BaseException:
        os.close(life_w)
        raise
    finally:
        os.close(life_r)
        os.close(spec_fd_w)
    try:
        pid = _read_pid(spec_fd_r)
    finally:
        os.close(spec_fd_r)
    if pid is None:
        os.close(life_w)
        status = process.wait()
        raise CheckpointError(f"{name} could not be started (its supervisor exited with status "
                              f"{status}): check that its binaries are installed and readable.")
    guard = Guarded(process, pid, life_w, name, grace)
    _remember(guard)
    return guard


def _read_pid(fd: int, timeout: float = 60) -> int | None:
    data, deadline = b"", time.monotonic() + timeout
    while b"\n" not in data and time.monotonic() < deadline:
        if select.select([fd], [], [], 0.5)[0]:
            chunk = os.read(fd, 64)
            if not chunk:
                break
            data += chunk
    return int(data) if data.strip().isdigit() else None


# --- processes -------------------------------------------------------------------------------

def _stat(pid: int) -> list[str] | None:
    """Fields of /proc/PID/stat after the command name (field 3 onwards), None if unknown."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None


def running(pid: int, start: int | None = None) -> bool:
    """Whether ``pid`` is a live process; a zombie (dead, not yet reaped) is not.

    With ``start`` (from ``start_time``), only that very process: pids are reused, and
    quickly on a busy machine (pid_max is often 32768).
    """
    if pid <= 0:
        return False
    fields = _stat(pid)
    if fields is not None:
        return fields[0] not in ("Z", "X") and start in (None, int(fields[19]))
    if Path("/proc/self/stat").exists():  # Linux, and no such process
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def start_time(pid: int) -> int | None:
    """When ``pid`` started (clock ticks since boot): tells a process from a reused pid."""
    fields = _stat(pid)
    return int(fields[19]) if fields is not None else None


def parent(pid: int) -> int | None:
    fields = _stat(pid)
    return int(fields[1]) if fields is not None else None


def wait_gone(pid: int, timeout: float, start: int | None = None) -> bool:
    """Wait until ``pid`` (started at ``start``) no longer runs; False if it still does."""
    deadline = time.monotonic() + timeout
    while running(pid, start):
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.05)
    return True


# --- owner records ---------------------------------------------------------------------------

def write_owner(path: Path, server_pid: int) -> None:
    """Record that this process owns the server ``server_pid`` (atomically replaced)."""
    me = os.getpid()
    record = {"owner": me, "owner_start": start_time(me), "server": server_pid,
              "server_start": start_time(server_pid)}
    tmp = path.with_name(f".{path.name}.{me}")
    tmp.write_text(json.dumps(record))
    os.replace(tmp, path)


def remove_owner(path: Path, server_pid: int) -> None:
    """Remove the record if it is still ours (a later start may have written its own)."""
    record = _read_owner(path)
    if record is not None and record.get("server") == server_pid \
            and record.get("owner") == os.getpid():
        path.unlink(missing_ok=True)


def _read_owner(path: Path) -> dict[str, Any] | None:
    try:
        record = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return record if isinstance(record, dict) else None


def owner_alive(path: Path, server_pid: int) -> bool:
    """Whether the process that started server ``server_pid`` still runs.

    From the owner record when it names this server (pid and start time, so a reused pid is
    not mistaken for the owner); with no such record (a server started some other way, or one
    still starting), the server is taken as owned unless it was orphaned to PID 1.
    """
    record = _read_owner(path)
    if record is not None and record.get("server") == server_pid and \
            record.get("server_start") in (None, start_time(server_pid)):
        owner, owner_start = record.get("owner"), record.get("owner_start")
        return isinstance(owner, int) and running(owner, owner_start)
    return parent(server_pid) not in (0, 1)


def stop_orphan(pid: int, stop_signal: int, timeout: float = 30,
                start: int | None = None) -> bool:
    """Stop a server whose owner is gone: ``stop_signal``, then SIGKILL; True once it is gone.

    ``start``: its ``start_time`` when it was recognised, so that another process that got
    its pid meanwhile is never signalled.
    """
    start = start if start is not None else start_time(pid)
    for sig, wait in ((stop_signal, timeout), (signal.SIGKILL, 10)):
        if not running(pid, start):
            return True
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            return True
        if wait_gone(pid, wait, start):
            return True
    return False


# --- SIGTERM and fork ------------------------------------------------------------------------

_live: dict[int, Guarded] = {}  # id(guard) -> guard, servers of this process still running
_previous: Any = None  # the SIGTERM handler ours replaced
_installed = False


def _remember(guard: Guarded) -> None:
    _live[id(guard)] = guard
    _install()


def _forget(guard: Guarded) -> None:
    _live.pop(id(guard), None)
    if not _live:
        _uninstall()


def _main_thread() -> bool:
    return threading.current_thread() is threading.main_thread()


def _install() -> None:
    global _installed, _previous
    if _installed or not _main_thread():
        return  # signal handlers can only be set from the main thread
    current = signal.getsignal(signal.SIGTERM)
    if current is signal.SIG_IGN or current is None:
        return  # ignored on purpose, or a handler set outside Python that we cannot chain
    _previous = current
    signal.signal(signal.SIGTERM, _on_sigterm)
    _installed = True


def _uninstall() -> None:
    global _installed, _previous
    if not _installed or not _main_thread():
        return
    if signal.getsignal(signal.SIGTERM) is _on_sigterm:  # not if someone stacked theirs on ours
        signal.signal(signal.SIGTERM, _previous)
        _installed, _previous = False, None


def _on_sigterm(signum: int, frame: Any) -> None:
    """Stop our servers, then let SIGTERM do what it would have done without us."""
    guards = [g for g in list(_live.values()) if g._owner == os.getpid()]
    for guard in guards:
        guard._release()
    for guard in guards:  # wait on the server pid, not the supervisor: no Popen lock here
        wait_gone(guard.pid, guard.grace + 10, guard.start)
    previous = _previous
    if callable(previous):
        previous(signum, frame)
        return
    signal.signal(signum, signal.SIG_DFL)
    os.kill(os.getpid(), signum)  # die as SIGTERM would have killed us


def _after_fork_in_child() -> None:
    for guard in list(_live.values()):
        guard._release()  # only the process that started a server keeps it alive
    _live.clear()


os.register_at_fork(after_in_child=_after_fork_in_child)
