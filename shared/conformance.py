"""Run the LangGraph team's conformance suite (langgraph-checkpoint-conformance) on a saver.

    report = run_conformance("MySaver", factory)   # factory: async generator yielding a saver
    assert report.passed_all(), report_failures(report)

Only the capabilities a saver *claims* (overrides) are tested; the rest are reported as not
detected. Savers that wrap a sync saver must implement the async methods the suite calls.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, Callable

from langgraph.checkpoint.base import BaseCheckpointSaver
from langgraph.checkpoint.conformance import checkpointer_test, validate
from langgraph.checkpoint.conformance.report import CapabilityReport

SaverFactory = Callable[[], AsyncGenerator[BaseCheckpointSaver, None]]


async def arun_conformance(name: str, factory: SaverFactory,
                           capabilities: set[str] | None = None) -> CapabilityReport:
    """Validate a fresh saver from ``factory`` for every capability it claims."""
    registered = checkpointer_test(name=name)(factory)
    return await validate(registered, capabilities=capabilities)


def run_conformance(name: str, factory: SaverFactory,
                    capabilities: set[str] | None = None) -> CapabilityReport:
    """Synchronous form of ``arun_conformance`` (runs its own event loop)."""
    return asyncio.run(arun_conformance(name, factory, capabilities))


def detected_capabilities(report: CapabilityReport) -> list[str]:
    return sorted(k for k, r in report.results.items() if r.detected)


def report_failures(report: CapabilityReport) -> str:
    """A readable list of failed conformance tests, for an assertion message."""
    lines = []
    for cap, result in report.results.items():
        if result.detected and result.passed is not True:
            lines.append(f"{cap}: {result.tests_failed} failed")
            lines.extend(f"  {f}" for f in (result.failures or [])[:5])
    return "\n".join(lines) or "all detected capabilities passed"
