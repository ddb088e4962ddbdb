"""The shared graphs every milestone runs. Each builder takes a checkpointer.

- ``build_chat_graph``: a chat assistant; ``messages`` uses the ``add_messages`` reducer.
- ``build_pipeline_graph``: five steps in a row; every execution is recorded in a ``Ledger``
  outside the checkpoint, so a re-executed step can be counted after a crash.
- ``build_memory_chat_graph``: the chat assistant with a Store: it remembers what users state
  across threads and, with a message window, keeps its checkpoints small.
- ``build_approval_graph``: ``plan`` then ``execute_action``, paused for a human either by
  ``interrupt_before`` or by ``interrupt()`` inside the node.
"""

from __future__ import annotations

import hashlib
import json
import operator
import os
import re
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal, TypedDict

from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AnyMessage, HumanMessage, RemoveMessage
from langchain_core.runnables import RunnableConfig, RunnableLambda
from langgraph.checkpoint.base import BaseCheckpointSaver
from langgraph.graph import END, START, StateGraph
from langgraph.graph.message import add_messages
from langgraph.graph.state import CompiledStateGraph
from langgraph.runtime import Runtime
from langgraph.store.base import BaseStore
from langgraph.types import interrupt

from shared.llm import get_chat_model


class Ledger:
    """An append-only JSON-lines file of side effects, kept outside the checkpoint.

    Each ``record`` is a single ``os.write`` on an ``O_APPEND`` descriptor: a process killed
    with SIGKILL leaves whole lines only, because the kernel finishes the call or never starts it.
    """

    def __init__(self, path: Path) -> None:
        self.path = Path(path)

    def record(self, thread_id: str, step: str, event: str, **extra: Any) -> None:
        line = json.dumps({"thread": thread_id, "step": step, "event": event,
                           "pid": os.getpid(), "t": time.time(), **extra}) + "\n"
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(fd, line.encode())
        finally:
            os.close(fd)

    def events(self, thread_id: str | None = None) -> list[dict[str, Any]]:
        if not self.path.exists():
            return []
        rows = [json.loads(line) for line in self.path.read_text().splitlines() if line]
        return [r for r in rows if thread_id is None or r["thread"] == thread_id]

    def count(self, thread_id: str, event: str = "start") -> Counter[str]:
        """How many times each step logged ``event`` for this thread."""
        return Counter(r["step"] for r in self.events(thread_id) if r["event"] == event)


def _thread_id(config: RunnableConfig) -> str:
    return str(config["configurable"]["thread_id"])


# --- chat assistant ------------------------------------------------------------------------

class ChatState(TypedDict):
    messages: Annotated[list[AnyMessage], add_messages]


def build_chat_graph(checkpointer: BaseCheckpointSaver | None,
                     model: BaseChatModel | None = None) -> CompiledStateGraph:
    """START -> chatbot -> END; the model sees the whole persisted conversation."""
    llm = model or get_chat_model()

    def chatbot(state: ChatState) -> dict[str, Any]:
        return {"messages": [llm.invoke(state["messages"])]}

    async def achatbot(state: ChatState) -> dict[str, Any]:
        return {"messages": [await llm.ainvoke(state["messages"])]}


    builder = StateGraph(ChatState)
    builder.add_node("chatbot", RunnableLambda(chatbot, afunc=achatbot))
    builder.add_edge(START, "chatbot")
    builder.add_edge("chatbot", END)
    return builder.compile(checkpointer=checkpointer)


# --- chat assistant with memory (Milestone 6) -----------------------------------------------

@dataclass(frozen=True)
class MemoryContext:
    """Who is talking: passed per run, ``graph.invoke(..., context=MemoryContext("alice"))``."""

    user_id: str


class MemoryChatState(TypedDict, total=False):
    messages: Annotated[list[AnyMessage], add_messages]
    memories: list[dict[str, Any]]  # what recall found for this turn (replaced every turn)
    summarised: Annotated[int, operator.add]  # messages moved out of the checkpoint so far


def build_memory_chat_graph(checkpointer: BaseCheckpointSaver | None, store: BaseStore,
                            model: BaseChatModel | None = None,
                            window: int | None = None) -> CompiledStateGraph:
    """START -> remember -> recall -> chatbot [-> compact] -> END, with ``store`` as memory.

    The Store reaches the nodes through LangGraph's runtime (``runtime.store``), the user id
    through the run's context. ``remember`` writes the facts the user states; ``recall``
    searches the Store by meaning and hands the model what it found, ahead of the thread's
    own messages. With ``window`` (messages), ``compact`` moves the oldest messages out of the
    checkpoint whenever there are twice as many, summarised into the user's Store namespace.
    """
    from shared.store.memory import memory_message, recall, remember, store_summary

    llm = model or get_chat_model()

    def last_text(state: MemoryChatState) -> str:
        last = next(m for m in reversed(state["messages"]) if isinstance(m, HumanMessage))
        return str(last.content)

    def remember_node(state: MemoryChatState, runtime: Runtime[MemoryContext]) -> dict[str, Any]:
        assert runtime.store is not None
        remember(runtime.store, runtime.context.user_id, last_text(state))
        return {}

    def recall_node(state: MemoryChatState, runtime: Runtime[MemoryContext]) -> dict[str, Any]:
        assert runtime.store is not None
        return {"memories": recall(runtime.store, runtime.context.user_id, last_text(state))}

    def chatbot(state: MemoryChatState) -> dict[str, Any]:
        prompt = [memory_message(state.get("memories", [])), *state["messages"]]
        return {"messages": [llm.invoke(prompt)]}

    def compact(state: MemoryChatState, runtime: Runtime[MemoryContext]) -> dict[str, Any]:
        assert runtime.store is not None and window is not None
        messages = state["messages"]
        if len(messages) < 2 * window:
            return {}
        old = messages[:-window]
        done = state.get("summarised", 0)
        store_summary(runtime.store, runtime.context.user_id,
                      f"messages-{done + 1:05d}-{done + len(old):05d}", old)
        return {"messages": [RemoveMessage(id=str(m.id)) for m in old],
                "summarised": len(old)}

    builder = StateGraph(MemoryChatState, context_schema=MemoryContext)
    builder.add_node("remember", remember_node)
    builder.add_node("recall", recall_node)
    builder.add_node("chatbot", chatbot)
    builder.add_edge(START, "remember")
    builder.add_edge("remember", "recall")
    builder.add_edge("recall", "chatbot")
    if window:
        builder.add_node("compact", compact)
        builder.add_edge("chatbot", "compact")
        builder.add_edge("compact", END)
    else:
        builder.add_edge("chatbot", END)
    return builder.compile(checkpointer=checkpointer, store=store)


# --- five-step pipeline --------------------------------------------------------------------

PIPELINE_STEPS = ("extract", "validate", "enrich", "score", "publish")


class PipelineState(TypedDict):
    doc: str
    digest: str
    completed: Annotated[list[str], operator.add]


def _digest(previous: str, step: str) -> str:
    return hashlib.sha256(f"{previous}|{step}".encode()).hexdigest()[:16]


def expected_pipeline_output(doc: str) -> dict[str, Any]:
    """What a correct run of the pipeline returns, computed without LangGraph."""
    digest = doc
    for step in PIPELINE_STEPS:
        digest = _digest(digest, step)
    return {"doc": doc, "digest": digest, "completed": list(PIPELINE_STEPS)}


def build_pipeline_graph(checkpointer: BaseCheckpointSaver | None, ledger: Ledger,
                         step_seconds: float = 0.0) -> CompiledStateGraph:
    """extract -> validate -> enrich -> score -> publish, each logging start/done to ``ledger``.

    ``step_seconds`` is the work each step does (a sleep), the window in which a crash lands.
    """

    def make_step(step: str) -> Callable[..., dict[str, Any]]:
        def run(state: PipelineState, config: RunnableConfig) -> dict[str, Any]:
            thread = _thread_id(config)
            ledger.record(thread, step, "start")
            if step_seconds:
                time.sleep(step_seconds)
            digest = _digest(state.get("digest") or state["doc"], step)
            ledger.record(thread, step, "done")
            return {"digest": digest, "completed": [step]}

        run.__name__ = step
        return run

    builder = StateGraph(PipelineState)
    previous = START
    for step in PIPELINE_STEPS:
        builder.add_node(step, make_step(step))
        builder.add_edge(previous, step)
        previous = step
    builder.add_edge(previous, END)
    return builder.compile(checkpointer=checkpointer)


# --- approval flow -------------------------------------------------------------------------

class ApprovalState(TypedDict, total=False):
    request: str
    action: str
    amount: float
    approved_by: str
    result: str


def plan_action(request: str) -> tuple[str, float]:
    """A deterministic planner: 'Refund order 1042 for 250 EUR' -> ('Refund order 1042', 250.0)."""
    match = re.search(r"^(.*?)\s+for\s+(\d+(?:\.\d+)?)", request.strip())
    if not match:
        return request.strip().rstrip("."), 0.0
    return match.group(1), float(match.group(2))


def build_approval_graph(checkpointer: BaseCheckpointSaver | None, ledger: Ledger,
                         mode: Literal["interrupt_before", "interrupt"]) -> CompiledStateGraph:
    """plan -> execute_action. ``execute_action`` writes its side effect to ``ledger``.

    - ``interrupt_before``: the graph is compiled to stop before ``execute_action``; a human
      reads ``get_state``, edits with ``update_state`` and resumes with ``invoke(None)``.
    - ``interrupt``: ``execute_action`` calls ``interrupt()`` first and is resumed with
      ``Command(resume={"approved": True, "amount": ..., "by": ...})``. The node body runs
      again from the top on resume, so the side effect must come after ``interrupt()``.
    """

    def plan(state: ApprovalState) -> dict[str, Any]:
        action, amount = plan_action(state["request"])
        return {"action": action, "amount": amount}

    def execute_action(state: ApprovalState, config: RunnableConfig) -> dict[str, Any]:
        thread = _thread_id(config)
        ledger.record(thread, "execute_action", "enter")
        amount, by = state["amount"], state.get("approved_by", "")
        if mode == "interrupt":
            decision = interrupt({"action": state["action"], "amount": amount,
                                  "question": "Approve this action? You may change the amount."})
            if not decision.get("approved"):
                return {"result": "rejected"}
            amount, by = float(decision.get("amount", amount)), decision.get("by", "")
        # The side effect: after the pause, so it happens once, with the approved value.
        ledger.record(thread, "execute_action", "executed", action=state["action"],
                      amount=amount)
        return {"amount": amount, "approved_by": by,
                "result": f"executed {state['action']} for {amount:.2f}"}

    builder = StateGraph(ApprovalState)
    builder.add_node("plan", plan)
    builder.add_node("execute_action", execute_action)
    builder.add_edge(START, "plan")
    builder.add_edge("plan", "execute_action")
    builder.add_edge("execute_action", END)
    interrupt_before = ["execute_action"] if mode == "interrupt_before" else None
    return builder.compile(checkpointer=checkpointer, interrupt_before=interrupt_before)
