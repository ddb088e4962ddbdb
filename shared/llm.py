"""A deterministic offline chat model, so every lesson runs without a network or a key.

``OfflineChatModel`` is a real langchain-core ``BaseChatModel``: it plugs into a graph like
any provider's model. It has no memory of its own. It answers only from the messages it is
given, so a graph can recall "My name is Alice" only if persistence gave it the history.

A real provider is used only when asked explicitly: set ``CKPT_CHAT_MODEL`` to
``provider:model`` (for example ``openai:gpt-4o-mini``) and install ``langchain`` and the
provider's package. Tests never need it.
"""

from __future__ import annotations

import asyncio
import os
import re
import time
from typing import Any

from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, BaseMessage, HumanMessage, SystemMessage
from langchain_core.outputs import ChatGeneration, ChatResult

from shared.errors import CheckpointError

# Facts the model can learn from a user's message: (fact, pattern). Later statements win.
_FACTS: list[tuple[str, re.Pattern[str]]] = [
    ("name", re.compile(r"\b(?i:my name is|i am called|call me|i'm|i am)\s+([A-Z][a-z]+)")),
    ("city", re.compile(r"\bi live in\s+([A-Z][\w-]+(?:\s[A-Z][\w-]+)*)", re.I)),
    ("colour", re.compile(r"\bmy favou?rite colou?r is\s+(\w+)", re.I)),
    ("job", re.compile(r"\bi work as an?\s+([\w-]+)", re.I)),
]
# Questions it can answer from what it learned: (fact, pattern, answer template).
_QUESTIONS: list[tuple[str, re.Pattern[str], str]] = [
    ("name", re.compile(r"\b(what'?s|what is) my name\b|\bwho am i\b", re.I), "Your name is {}."),
    ("city", re.compile(r"\bwhere do i live\b", re.I), "You live in {}."),
    ("colour", re.compile(r"\bfavou?rite colou?r\b.*\?", re.I), "Your favourite colour is {}."),
    ("job", re.compile(r"\bwhat do i do\b|\bmy job\b.*\?", re.I), "You work as a {}."),
]
_UNKNOWN = {
    "name": "I don't know your name yet.",
    "city": "I don't know where you live yet.",
    "colour": "I don't know your favourite colour yet.",
    "job": "I don't know what you do yet.",
}
# Company knowledge: "Company note: the VPN server is vpn.acme.example." (stated once, shared).
_NOTE = re.compile(r"\bcompany note:\s*the ([a-z][\w -]*?) is ([^\s,;]*[^\s.,;])", re.I)
_ASK_NOTE = re.compile(r"\bwhat is the ([a-z][\w -]*?)\s*\?", re.I)
# A fact as one canonical sentence: what a memory node stores and the model re-reads.
STATEMENTS = {
    "name": "My name is {}.",
    "city": "I live in {}.",
    "colour": "My favourite colour is {}.",
    "job": "I work as a {}.",
}
_ACK = {
    "name": "Nice to meet you, {}.",
    "city": "Noted: you live in {}.",
    "colour": "Noted: your favourite colour is {}.",
    "job": "Noted: you work as a {}.",
}


def message_text(message: BaseMessage) -> str:
    """A message's text, whether its content is a string or a list of parts."""
    content = message.content
    if isinstance(content, str):
        return content
    return " ".join(p.get("text", "") if isinstance(p, dict) else str(p) for p in content)


def learned_facts(messages: list[BaseMessage]) -> dict[str, str]:
    """The facts stated by the user in this conversation, the latest statement winning.

    A ``SystemMessage`` counts too: that is where a memory node hands the model what the
    Store remembered (shared/store/memory.py), before the conversation that may override it.
    """
    facts: dict[str, str] = {}
    for message in messages:
        if not isinstance(message, HumanMessage | SystemMessage):
            continue
        for fact, pattern in _FACTS:
            for match in pattern.finditer(message_text(message)):
                facts[fact] = match.group(1)
    return facts


def company_notes(messages: list[BaseMessage]) -> dict[str, str]:
    """Company knowledge stated or remembered: ``{"vpn server": "vpn.acme.example"}``."""
    notes: dict[str, str] = {}
    for message in messages:
        if isinstance(message, HumanMessage | SystemMessage):
            for match in _NOTE.finditer(message_text(message)):
                notes[match.group(1).lower()] = match.group(2)
    return notes


def offline_reply(messages: list[BaseMessage]) -> str:
    """The deterministic answer to the last user message, using only ``messages``.

    Every question the message asks is answered, in the order of ``_QUESTIONS``.
    """
    last = next((m for m in reversed(messages) if isinstance(m, HumanMessage)), None)
    if last is None:
        return "Hello! Tell me something about yourself."
    facts = learned_facts(messages)
    text = message_text(last)
    answers = [template.format(facts[fact]) if fact in facts else _UNKNOWN[fact]
               for fact, pattern, template in _QUESTIONS if pattern.search(text)]
    if answers:
        return " ".join(answers)
    stated = learned_facts([last])
    if stated:
        return " ".join(_ACK[f].format(v) for f, v in stated.items())
    noted = company_notes([last])
    if noted:
        return " ".join(f"Noted for everyone: the {m.group(1)} is {m.group(2)}."
                        for m in _NOTE.finditer(text))
    asked = _ASK_NOTE.search(text)
    if asked:
        topic = asked.group(1).lower()
        known = company_notes(messages)
        return (f"The {asked.group(1)} is {known[topic]}." if topic in known
                else f"I don't know the {asked.group(1)} yet.")
    return f"I hear you: {text.strip()}"


class OfflineChatModel(BaseChatModel):
    """Answers from the conversation it is given; optional simulated latency; counts calls."""

    latency_s: float = 0.0
    """Simulated model latency per call: ``time.sleep`` in sync, ``asyncio.sleep`` in async."""
    calls: int = 0
    """How many times this instance generated a reply."""

    @property
    def _llm_type(self) -> str:
        return "offline-deterministic"

    def _result(self, messages: list[BaseMessage]) -> ChatResult:
        self.calls += 1
        return ChatResult(generations=[ChatGeneration(message=AIMessage(
            content=offline_reply(messages)))])

    def _generate(self, messages: list[BaseMessage], stop: list[str] | None = None,
                  run_manager: Any = None, **kwargs: Any) -> ChatResult:
        if self.latency_s:
            time.sleep(self.latency_s)
        return self._result(messages)

    async def _agenerate(self, messages: list[BaseMessage], stop: list[str] | None = None,
                         run_manager: Any = None, **kwargs: Any) -> ChatResult:
        if self.latency_s:
            await asyncio.sleep(self.latency_s)
        return self._result(messages)


def get_chat_model(latency_s: float = 0.0) -> BaseChatModel:
    """The offline model, unless ``CKPT_CHAT_MODEL=provider:model`` asks for a real one."""
    spec = os.environ.get("CKPT_CHAT_MODEL", "").strip()
    if not spec or spec == "offline":
        return OfflineChatModel(latency_s=latency_s)
    try:
        from langchain.chat_models import init_chat_model  # type: ignore[import-not-found]
    except ImportError as exc:
        raise CheckpointError(
            f"CKPT_CHAT_MODEL={spec!r} asks for a real model, but the 'langchain' package is "
            "not installed: pip install langchain and the provider's package, or unset "
            "CKPT_CHAT_MODEL to use the offline model.") from exc
    return init_chat_model(spec)
