"""User-facing errors: one sentence that names the problem and the fix."""

from __future__ import annotations

import argparse
import os
import signal
import sys
import threading
from collections.abc import Callable, Iterator
from typing import Any, NoReturn


class CheckpointError(Exception):
    """Bad input or an impossible request; the message is meant for the user as is."""


class DatabaseLocationError(CheckpointError):
    """The SQLite file cannot be created or opened where it was asked for."""


class NothingToResume(CheckpointError):
    """A resume was asked for a thread that is unknown or has no pending work."""


class OneLineArgumentParser(argparse.ArgumentParser):
    """An ``ArgumentParser`` whose usage errors are one line on stderr (exit status 2)."""

    def error(self, message: str) -> NoReturn:
        import re

        from shared.infra.urls import mask_url

        # argparse echoes bad values ("invalid choice: 'postgresql://u:pw@h/db'"): mask URLs.
        message = re.sub(r"[A-Za-z][A-Za-z0-9+.\-]*://[^\s']+|password=[^\s']+",
                         lambda m: mask_url(m[0]), " ".join(message.split()))
        self.exit(2, f"{self.prog}: {message}: see {self.prog} --help.\n")


# What a Ctrl-C leaves behind, said by the command once it knows (see ``on_interrupt``).
_state = threading.local()
NOTHING_CHANGED = "nothing was changed"


def check_range(flag: str, value: int, low: int, high: int, example: int) -> int:
    """``value`` if ``low <= value <= high``, else one sentence naming the flag and the range."""
    if not low <= value <= high:
        raise CheckpointError(f"{flag} {value} must be a whole number from {low:,} to "
                              f"{high:,}, such as {example}.")
    return value


def refusal(attempt: Callable[[], object],
            kind: type[BaseException] | tuple[type[BaseException], ...] = CheckpointError
            ) -> str | None:
    """Run ``attempt``: the message of the ``kind`` error it raised, or None if it raised none
    (how a lesson shows the one sentence a bad input gets)."""
    try:
        attempt()
    except kind as exc:
        return str(exc)
    return None


def on_interrupt(note: str) -> None:
    """Say what a Ctrl-C from now on leaves behind and how to resume; ``run_command`` prints
    it after "interrupted". Call it again when that changes (e.g. once writing begins)."""
    _state.note = note


def _chain(exc: BaseException | None) -> Iterator[BaseException]:
    seen: set[int] = set()
    todo = [exc]
    while todo:
        e = todo.pop()
        if e is None or id(e) in seen:
            continue
        seen.add(id(e))
        yield e
        todo += [e.__cause__, e.__context__]


def _from_interrupt(exc: BaseException) -> bool:
    """A KeyboardInterrupt anywhere in the chain: a callback (msgpack's ext_hook) may have
    caught it and raised something else."""
    return any(isinstance(e, KeyboardInterrupt) for e in _chain(exc))


def _url_like(args: Any) -> tuple[list[str], list[str]]:
    """URLs among the arguments and the environment, and raw secrets, for ``redact``."""
    values: list[Any] = list(vars(args).values()) if hasattr(args, "__dict__") else []
    urls = [v for value in values for v in (value if isinstance(value, list) else [value])
            if isinstance(v, str) and ("://" in v or "password" in v.lower())]
    urls += [os.environ[k] for k in ("DATABASE_URL", "S3_ENDPOINT_URL", "REDIS_URL")
             if os.environ.get(k)]
    return urls, [os.environ.get("AWS_SECRET_ACCESS_KEY", "")]


def _database_reason(exc: Exception) -> str | None:
    """One sentence for a database error no command turned into a CheckpointError."""
    import sqlite3

    reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
    if isinstance(exc, sqlite3.DatabaseError):
        return (f"SQLite failed ({reason}): if the file is damaged, restore it from a backup "
                "(sqlite3 DB .recover saves what is left); if it is locked, try again later.")
    if type(exc).__module__.split(".")[0] == "psycopg":
        return (f"PostgreSQL failed ({reason}): check the server, the URL and that the role "
                "may read and write the checkpoint tables.")
    return None


def run_command(func: Callable[[Any], int], args: Any, prog: str = "ckpt") -> int:
    """Run a command: a CheckpointError becomes one line on stderr and exit status 2, a
    Ctrl-C "interrupted" with what the command left behind, exit status 130.

    Every line is scrubbed of any part of a password found in the arguments or in
    ``DATABASE_URL`` / ``S3_ENDPOINT_URL`` / ``AWS_SECRET_ACCESS_KEY``.
    """
    from shared.infra.urls import redact

    urls, secrets = _url_like(args)
    _state.note = None
    interrupted = threading.Event()

    def say(text: str, code: int) -> int:
        print(redact(f"{prog}: {' '.join(text.split())}", *urls, secrets=secrets),
              file=sys.stderr)
        return code

    def stopped() -> int:
        note = getattr(_state, "note", None)
        return say(f"interrupted: {note}." if note else "interrupted.", 130)

    previous = None
    if (threading.current_thread() is threading.main_thread()
            and signal.getsignal(signal.SIGINT) is signal.default_int_handler):
        def on_sigint(signum: int, frame: Any) -> None:
            interrupted.set()  # remembered, in case a callback swallows the exception
            raise KeyboardInterrupt

        on_sigint.ckpt_command = True  # type: ignore[attr-defined]  # a command may take over
        previous = signal.signal(signal.SIGINT, on_sigint)
    try:
        return int(func(args))
    except KeyboardInterrupt:
        return stopped()
    except CheckpointError as exc:
        if interrupted.is_set() or _from_interrupt(exc):
            return stopped()
        return say(str(exc), 2)
    except Exception as exc:
        if interrupted.is_set() or _from_interrupt(exc):
            return stopped()
        reason = _database_reason(exc)
        if reason is not None:
            return say(reason, 2)
        if os.environ.get("CKPT_DEBUG"):
            import traceback

            print(redact("".join(traceback.format_exception(exc)), *urls, secrets=secrets),
                  file=sys.stderr)
        first = (str(exc).strip().splitlines() or [""])[0]
        return say(f"unexpected {type(exc).__name__} ({first}): this is a bug; run again with "
                   "CKPT_DEBUG=1 for the traceback and report it.", 1)
    finally:
        if previous is not None:
            signal.signal(signal.SIGINT, previous)
