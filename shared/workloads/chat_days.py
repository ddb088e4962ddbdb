"""Backdated chat traffic: conversations of the shared chat graph as they happened days ago.

``write_chat_days(saver, first_day, days, per_day, seed)`` stores, through ``put`` and
``put_writes``, row for row what the chat graph writes, with ``ts`` and uuid6 ids made for
the simulated moments, so the retention lessons can prune by a real age.
"""

from __future__ import annotations

import random
import uuid
from datetime import datetime, timedelta
from typing import Any

from langchain_core.messages import AIMessage, HumanMessage
from langgraph.checkpoint.base import Checkpoint
from langgraph.checkpoint.sqlite import SqliteSaver
from rich.console import Console
from rich.progress import Progress

from shared.savers.retention import aware, uuid6_at

_WORDS = tuple(" ".join((
    "checkpoint thread state graph node message reply order invoice refund shipping "
    "address account password reset weather tomorrow meeting calendar summary report "
    "python error stack trace database index query latency budget plan travel hotel "
    "flight price discount customer ticket status update please thanks sorry because the "
    "a to of and in is it for on with that this you we can will",
)).split())


def _text(rng: random.Random, chars: int) -> str:
    words: list[str] = []
    size = 0
    while size < chars:
        word = rng.choice(_WORDS)
        words.append(word)
        size += len(word) + 1
    return " ".join(words).capitalize() + "."


def write_chat_conversation(saver: SqliteSaver, thread_id: str, start: datetime, turns: int,
                            rng: random.Random) -> tuple[int, int]:
    """Store a ``turns``-turn conversation of the shared chat graph as it happened at
    ``start``, through ``put``/``put_writes``, row for row as the graph writes it: per turn
    an ``input`` checkpoint (with the START task's writes), a ``loop`` checkpoint (with the
    chatbot's write) and the answered ``loop`` checkpoint. ``ts`` and the uuid6 id are both
    made for the simulated moment. Returns (checkpoints, writes) stored."""
    config: dict[str, Any] = {"configurable": {"thread_id": thread_id, "checkpoint_ns": ""}}
    messages: list[Any] = []
    versions: dict[str, Any] = {}
    seen: dict[str, dict[str, Any]] = {"__input__": {}}
    step, moment, n_ckpt, n_writes = -1, aware(start), 0, 0

    def bump(*channels: str) -> dict[str, Any]:
        new = saver.get_next_version(max(versions.values(), default=None), None)
        for ch in channels:
            versions[ch] = new
        return {ch: new for ch in channels}

    def put(values: dict[str, Any], source: str, new: dict[str, Any], updated: list[str]) -> None:
        nonlocal config, step, n_ckpt
        ckpt = Checkpoint(v=4, id=uuid6_at(moment, clock_seq=step, node=rng.getrandbits(48)),
                          ts=moment.isoformat(), channel_values=values,
                          channel_versions=dict(versions),
                          versions_seen={k: dict(v) for k, v in seen.items()},
                          updated_channels=updated)
        config = saver.put(config, ckpt, {"source": source, "step": step, "parents": {}}, new)
        step, n_ckpt = step + 1, n_ckpt + 1

    def put_writes(writes: list[tuple[str, Any]], node: str) -> None:
        nonlocal n_writes
        saver.put_writes(config, writes, str(uuid.UUID(int=rng.getrandbits(128))),
                         f"~__pregel_pull, {node}")
        n_writes += len(writes)

    for turn in range(turns):
        user = HumanMessage(_text(rng, rng.randint(20, 300)),
                            id=str(uuid.UUID(int=rng.getrandbits(128))))
        answer = AIMessage(_text(rng, rng.randint(150, 2000)),
                           id=str(uuid.UUID(int=rng.getrandbits(128))))
        values: dict[str, Any] = {"messages": list(messages)} if messages else {}
        put({**values, "__start__": {"messages": [user]}}, "input", bump("__start__"),
            ["__start__"])
        put_writes([("messages", [user]), ("branch:to:chatbot", None)], "__start__")
        moment += timedelta(milliseconds=rng.randint(1, 5))
        seen["__start__"] = {"__start__": versions["__start__"]}
        new = bump("__start__", "messages", "branch:to:chatbot")
        put({"messages": [*messages, user], "branch:to:chatbot": None}, "loop", new,
            ["branch:to:chatbot", "messages"])
        put_writes([("messages", [answer])], "chatbot")
        moment += timedelta(milliseconds=rng.randint(400, 4000))  # the model thinks
        seen["chatbot"] = {"branch:to:chatbot": versions["branch:to:chatbot"]}
        messages += [user, answer]
        put({"messages": list(messages)}, "loop", bump("messages", "branch:to:chatbot"),
            ["messages"])
        if turn < turns - 1:
            moment += timedelta(seconds=rng.randint(20, 900))  # the user reads and types
    return n_ckpt, n_writes


def write_chat_days(saver: SqliteSaver, first_day: datetime, days: int, per_day: int,
                    seed: int, label: str = "traffic", day_offset: int = 0) -> tuple[int, int]:
    """``per_day`` conversations (2 to 8 turns) on each of ``days`` days from ``first_day``,
    with a rich progress bar on a terminal. Thread ids are ``conv-<day>-<n>``."""
    totals = [0, 0]
    console = Console(stderr=True)
    with Progress(console=console, transient=True, disable=not console.is_terminal) as bar:
        task = bar.add_task(label, total=days * per_day)
        for d in range(days):
            rng = random.Random(seed * 1_000_003 + day_offset + d)
            day = aware(first_day) + timedelta(days=d)
            for n in range(per_day):
                start = day + timedelta(seconds=rng.randint(0, 20 * 3600))
                turns = 2 + (n + d + day_offset) % 7  # every day the same mix of lengths
                c, w = write_chat_conversation(saver, f"conv-{day_offset + d:03d}-{n:03d}",
                                               start, turns, rng)
                totals[0] += c
                totals[1] += w
                bar.advance(task)
    return totals[0], totals[1]
