"""A tiny graph with a ``DeltaChannel``: the retention lessons' DeltaChannel-safety check.

``items`` is a ``DeltaChannel`` with a snapshot every 4 updates: most checkpoints store no
value for it, and a checkpoint's list is rebuilt from its ancestors' writes back to the last
snapshot. A prune that deleted those ancestors would silently shorten the list.
"""

from __future__ import annotations

from typing import Annotated, Any, TypedDict

from langgraph.channels.delta import DeltaChannel
from langgraph.checkpoint.base import BaseCheckpointSaver
from langgraph.graph import END, START, StateGraph
from langgraph.graph.state import CompiledStateGraph


def _append(state: list[int], writes: list[list[int]]) -> list[int]:
    return [*state, *(x for w in writes for x in w)]


class DeltaState(TypedDict):
    items: Annotated[list, DeltaChannel(_append, snapshot_frequency=4)]
    n: int


def build_delta_graph(saver: BaseCheckpointSaver) -> CompiledStateGraph:
    """Each run appends ``n`` to ``items`` and increments ``n``."""
    builder = StateGraph(DeltaState)
    builder.add_node("add", lambda s: {"items": [s["n"]], "n": s["n"] + 1})
    builder.add_edge(START, "add")
    builder.add_edge("add", END)
    return builder.compile(checkpointer=saver)


def history(graph: CompiledStateGraph, config: dict[str, Any]) -> dict[str, Any]:
    """Every checkpoint of the thread: id -> the state values it loads with."""
    return {s.config["configurable"]["checkpoint_id"]: s.values
            for s in graph.get_state_history(config)}
