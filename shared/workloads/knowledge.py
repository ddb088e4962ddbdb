"""The labelled company knowledge base (lesson 6.1): facts, questions, two ways to search them.

``data/company_kb.json`` holds 200 short facts of a fictional company's handbook and 40
employee questions, each with the id(s) of the fact(s) that answer it, written by hand before
any search ran. Most questions are phrased as people ask them, not in the handbook's words.

The keyword baseline, defined here so it can be judged: a question and a fact are reduced to
their content words (lower case, stop words dropped, a plural ``s`` cut); a fact's score is
how many of the question's words it contains; the top k by score (ties in file order, a
score of 0 never returned). That is what a LIKE-per-word or a full-text match ranks by; the
Store's own ``filter`` is an exact match on a field, which needs the answer's topic known
before searching, so it is not a search by the question's words at all.
"""

from __future__ import annotations

import json
import random
import re
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

from langgraph.store.base import BaseStore, PutOp

KB_FILE = Path(__file__).parent / "data" / "company_kb.json"
NAMESPACE = ("company", "knowledge")
STOP = frozenset({
    "a", "an", "the", "and", "or", "of", "to", "in", "on", "at", "for", "by", "with",
    "from", "is", "are", "am", "be", "do", "does", "did", "i", "me", "my", "we", "our",
    "you", "your", "it", "its", "this", "that", "there", "what", "which", "who", "whom",
    "how", "when", "where", "can", "could", "should", "would", "will", "may", "must", "get",
    "got", "have", "has", "if", "not", "no", "into", "about", "any", "some", "each", "per",
    "than", "then", "them", "they", "their", "he", "she", "his", "her", "as", "so", "up",
    "out", "all", "one", "off"})


@dataclass(frozen=True)
class Question:
    text: str
    answers: frozenset[str]


@lru_cache(maxsize=1)
def load_kb() -> tuple[list[dict[str, str]], list[Question]]:
    """``(facts, questions)``: facts as ``{"id", "topic", "text"}``, in file order."""
    data = json.loads(KB_FILE.read_text())
    questions = [Question(q["question"], frozenset(q["answers"])) for q in data["questions"]]
    return data["facts"], questions


def words(text: str) -> set[str]:
    """Content words: lower case, no stop words, a trailing plural ``s`` cut (days -> day)."""
    out = set()
    for w in re.findall(r"[a-z0-9]+", text.lower()):
        if w in STOP:
            continue
        out.add(w[:-1] if len(w) > 3 and w.endswith("s") and not w.endswith("ss") else w)
    return out


def keyword_search(question: str, facts: list[dict[str, str]], k: int = 3) -> list[str]:
    """The ids of the k facts sharing most content words with the question (see module doc)."""
    q = words(question)
    scored = [(len(q & words(f["text"])), i, f["id"]) for i, f in enumerate(facts)]
    ranked = sorted((s for s in scored if s[0] > 0), key=lambda s: (-s[0], s[1]))
    return [fid for _, _, fid in ranked[:k]]


def recall_at_k(search: Callable[[str], list[str]], questions: list[Question],
                k: int = 3) -> float:
    """Share of questions with at least one right fact among ``search``'s first k ids."""
    hits = sum(bool(q.answers & set(search(q.text)[:k])) for q in questions)
    return hits / len(questions)


def semantic_search(store: BaseStore, k: int = 3) -> Callable[[str], list[str]]:
    """``question -> ids``: the store's own search by meaning in the knowledge namespace."""
    return lambda text: [it.key for it in store.search(NAMESPACE, query=text, limit=k)]


# Filler for the scale test: the haystack the 200 facts hide in. Each note is 6-12 words drawn
# at random (seeded) from the handbook's own vocabulary and some office words: distractors
# that share words with the questions, spread over the embedding space the way a real,
# varied collection is. (Notes from a few fixed templates were tried first: 100,000 of them
# form one dense cluster of near-duplicates, in which HNSW's greedy search gets trapped and
# top-10 ties make "the same answer" ill-defined.)
_EXTRA = re.findall(r"\S+", """sales support design firmware finance facilities platform
security data marketing
legal people reviewed postponed discussed approved rejected estimated planned summarised
escalated closed roadmap battery recall warehouse layout dashboard printer conveyor pallet
scanner invoice dispute forklift heatmap translation backlog charging dock shelf sensor
export Hamburg Lyon Poznan Osaka Leeds Porto Denver Ghent Turin Malmo""")


@lru_cache(maxsize=1)
def _vocabulary() -> tuple[str, ...]:
    facts, _ = load_kb()
    found = {w for f in facts for w in re.findall(r"[A-Za-z][A-Za-z-]+", f["text"])
             if len(w) > 2}
    return tuple(sorted(found | set(_EXTRA)))


def filler_texts(n: int, seed: int = 7) -> Iterator[tuple[str, dict[str, Any]]]:
    """``n`` ``(key, value)`` notes of random handbook words (seeded), none a fact."""
    rng, vocab = random.Random(seed), _vocabulary()
    for i in range(n):
        text = " ".join(rng.choices(vocab, k=rng.randint(6, 12)))
        yield f"n{i:06d}", {"text": text, "topic": "notes"}


def load_items(store: BaseStore, items: Iterable[tuple[str, dict[str, Any]]],
               namespace: tuple[str, ...] = NAMESPACE, batch: int = 1000) -> tuple[int, float]:
    """Put ``items`` in batches of ``batch`` (one embedding call and one round of SQL per
    batch, not per item): ``(count, seconds)``."""
    start, count, ops = time.perf_counter(), 0, []
    for key, value in items:
        ops.append(PutOp(namespace, key, value))
        if len(ops) == batch:
            store.batch(ops)
            count, ops = count + len(ops), []
    if ops:
        store.batch(ops)
        count += len(ops)
    return count, time.perf_counter() - start


def fact_items() -> list[tuple[str, dict[str, Any]]]:
    """The 200 facts as Store items: key = fact id, value = ``{"text", "topic"}``."""
    facts, _ = load_kb()
    return [(f["id"], {"text": f["text"], "topic": f["topic"]}) for f in facts]


def cycling_search(store: BaseStore, questions: list[Question],
                   k: int = 10) -> Callable[[], object]:
    """A no-argument call for timing: each call searches the next question (then wraps)."""
    texts, i = [q.text for q in questions], [0]

    def call() -> object:
        i[0] += 1
        return store.search(NAMESPACE, query=texts[i[0] % len(texts)], limit=k)
    return call


def agreement(approx: BaseStore, exact: BaseStore, questions: list[Question],
              k: int = 10) -> float:
    """Mean share of the exact top k that the approximate search also returned (recall@k)."""
    shares = []
    for q in questions:
        truth = {it.key for it in exact.search(NAMESPACE, query=q.text, limit=k)}
        got = {it.key for it in approx.search(NAMESPACE, query=q.text, limit=k)}
        shares.append(len(truth & got) / len(truth))
    return sum(shares) / len(shares)


def watch_expiry(store: BaseStore, rows: Callable[[], int], ttl_s: float,
                 timeout_s: float = 30.0) -> tuple[bool, float]:
    """Put one item with a TTL of ``ttl_s`` seconds, the store's sweeper running; poll the
    table (``rows()``: a raw count, not the store's reads, which already hide expired items)
    until the row is gone: ``(gone, seconds from expiry to gone)``."""
    store.put(("users", "ttl-demo", "summaries"), "s1", {"text": "short-lived"},
              ttl=ttl_s / 60)  # LangGraph's TTLs are in minutes
    expires = time.monotonic() + ttl_s
    while rows() and time.monotonic() < expires + timeout_s:
        time.sleep(0.02)
    return rows() == 0, time.monotonic() - expires
