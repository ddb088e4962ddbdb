"""Resuming a thread only when there is something to resume, with a clear word otherwise.

``graph.invoke(None, config)`` on an unknown thread fails with LangGraph's
"Received no input for __start__", and on a finished thread it silently returns the old
state. ``resume`` answers both with one sentence and changes nothing.
"""

from __future__ import annotations

from typing import Any

from langgraph.checkpoint.base import BaseCheckpointSaver
from langgraph.graph.state import CompiledStateGraph
from langgraph.types import Command

from shared.errors import CheckpointError, NothingToResume


def thread_config(thread_id: str, **configurable: Any) -> dict[str, Any]:
    """``{"configurable": {"thread_id": ...}}``: the config that names a thread."""
    return {"configurable": {"thread_id": thread_id, **configurable}}


def _checkpointer(graph: CompiledStateGraph) -> BaseCheckpointSaver:
    saver = graph.checkpointer
    if not isinstance(saver, BaseCheckpointSaver):
        raise CheckpointError("This graph was compiled without a checkpointer, so it has no "
                              "threads to resume: compile it with checkpointer=<a saver>.")
    return saver


def pending(graph: CompiledStateGraph, config: dict[str, Any]) -> tuple[str, ...] | None:
    """The tasks of the thread's current step; ``()`` if finished, None if never started.

    Not ``get_state(config).next``: when a process dies after a step's tasks saved their
    writes but before the step's checkpoint was written, ``next`` is ``()`` although the run
    is unfinished; ``tasks`` still lists those tasks, and ``invoke(None)`` carries on.
    """
    if _checkpointer(graph).get_tuple(config) is None:
        return None
    return tuple(task.name for task in graph.get_state(config).tasks)


def resume(graph: CompiledStateGraph, config: dict[str, Any], command: Command | None = None,
           **invoke_kwargs: Any) -> Any:
    """Continue a paused or crashed thread: ``invoke(None)`` or ``invoke(Command(resume=...))``.

    Raises ``NothingToResume`` for an unknown thread, or one whose last run finished.
    """
    thread = config["configurable"]["thread_id"]
    nodes = pending(graph, config)
    if nodes is None:
        raise NothingToResume(
            f"Thread {thread!r} has no checkpoint in this database: check the thread id "
            "(`ckpt inspect DB` lists them), or start it with an input instead of resuming.")
    if not nodes:
        raise NothingToResume(
            f"Thread {thread!r} has nothing pending: its last run finished, so there is "
            "nothing to resume; send it new input to start a new run.")
    snapshot = graph.get_state(config)
    if command is None and snapshot.interrupts:
        raise NothingToResume(
            f"Thread {thread!r} is waiting for an answer to interrupt() in {nodes[0]!r}: "
            "resume it with Command(resume=<the answer>), not with None.")
    return graph.invoke(command, config, **invoke_kwargs)


def run_or_resume(graph: CompiledStateGraph, config: dict[str, Any], first_input: Any,
                  **invoke_kwargs: Any) -> Any:
    """Crash recovery in one call: start if never started, resume if pending, else done."""
    nodes = pending(graph, config)
    if nodes is None:
        return graph.invoke(first_input, config, **invoke_kwargs)
    if nodes:
        return graph.invoke(None, config, **invoke_kwargs)
    return graph.get_state(config).values
