"""Chat turns on the shared graph from several threads, flat out or paced: the load lesson 3.1
watches on the dashboard."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor

from langgraph.graph.state import CompiledStateGraph

CHAT_TURNS = ("Hi, my name is Alice.", "I live in Lisbon.", "What is my name?",
              "Where do I live?")


def chat_load(graph: CompiledStateGraph, tag: str, seconds: float, workers: int = 1,
              conversations: int = 100, turns_per_s: float | None = None,
              ) -> tuple[int, list[str]]:
    """Chat turns for ``seconds`` from ``workers`` threads; returns (turns, error texts).

    Worker ``k`` owns conversations ``tag-k``, ``tag-(k+workers)``, ... so no two threads
    write one thread's history at once. ``turns_per_s`` paces all workers together.
    """
    done, errors, end = [0] * workers, [], time.perf_counter() + seconds

    def work(k: int) -> None:
        mine, start = range(k, conversations, workers), time.perf_counter()
        while (now := time.perf_counter()) < end:
            if turns_per_s and now < start + done[k] * workers / turns_per_s:
                time.sleep(0.002)  # ahead of the pace
                continue
            n = done[k]
            text = CHAT_TURNS[n // len(mine) % len(CHAT_TURNS)]
            try:
                graph.invoke({"messages": [("user", text)]},
                             {"configurable": {"thread_id": f"{tag}-{mine[n % len(mine)]}"}})
            except Exception as exc:  # counted and reported, never hidden
                errors.append(f"{type(exc).__name__}: {exc}")
            done[k] += 1

    with ThreadPoolExecutor(workers) as pool:
        list(pool.map(work, range(workers)))
    return sum(done), errors
