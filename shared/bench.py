"""One set of timing helpers: warm-up, collector paused, percentiles, interleaved rounds.

Timings vary several-fold between machines and between runs on a busy one; a lesson must not
pass or fail by the luck of one sample. So every timing in the project goes through here:

- ``percentile(values, q)``: nearest rank (the smallest value with at least q % of the
  values at or below it); ``p99`` of fewer than 100 samples is their maximum.
- ``time_calls(fn, calls)``: samples in milliseconds, after a warm-up, with the garbage
  collector paused (a collection of the rest of the process stays out of the figure);
  ``p99_ms(fn, calls)`` is their p99.
- ``rounds(fn, calls, k)``: ``k`` rounds of ``calls`` calls, each round's percentile kept.
  For an absolute target ("< 5 ms p99") judge ``.best``, the best round's p99: another
  process taking the CPU can only make a round slower, so the best round is the code's own
  figure. Print ``.spread`` beside it as the evidence.
- ``interleave({"A": fa, "B": fb}, calls, k)``: A and B measured in alternating rounds
  (A B, B A, A B, ...) so that drift (a neighbour starting, the CPU clocking down) hits both
  alike. ``.ratio("B", "A")`` is the median over rounds of B's p99 over A's p99 in the same
  round: the figure to put a target on when the lesson's claim is a comparison.

Example::

    cmp = interleave({"scan": scan, "index": lookup}, calls=50, k=5)
    w.metric("speedup", cmp.ratio("scan", "index"), "x", ">= 5")
    w.show(cmp.describe("ms"))
"""

from __future__ import annotations

import gc
import math
import statistics
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

DEFAULT_ROUNDS = 5
DEFAULT_WARMUP = 3


def percentile(values: Sequence[float], q: float) -> float:
    """The q-th percentile (0-100) of ``values`` by nearest rank; 0.0 for no values."""
    if not 0 <= q <= 100:
        raise ValueError(f"percentile q must be between 0 and 100, got {q}")
    if not values:
        return 0.0
    ordered = sorted(values)
    rank = max(0, min(len(ordered) - 1, math.ceil(q / 100 * len(ordered)) - 1))
    return ordered[rank]


def p50(values: Sequence[float]) -> float:
    """Nearest-rank median (a value that occurred, unlike ``statistics.median``)."""
    return percentile(values, 50)


def p99(values: Sequence[float]) -> float:
    """Nearest-rank 99th percentile: the maximum of fewer than 100 values."""
    return percentile(values, 99)


@contextmanager
def gc_paused() -> Iterator[None]:
    """Pause the garbage collector inside the block; restore its previous state after."""
    collecting = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if collecting:
            gc.enable()


def time_calls(fn: Callable[[], object], calls: int,
               warmup: int = DEFAULT_WARMUP) -> list[float]:
    """Milliseconds of each of ``calls`` calls of ``fn()``, after ``warmup`` untimed calls.

    The garbage collector is paused while the timed calls run.
    """
    if calls < 1:
        raise ValueError(f"calls must be at least 1, got {calls}")
    for _ in range(warmup):
        fn()
    samples: list[float] = []
    with gc_paused():
        for _ in range(calls):
            start = time.perf_counter()
            fn()
            samples.append((time.perf_counter() - start) * 1000)
    return samples


def p99_ms(fn: Callable[[], object], calls: int, warmup: int = DEFAULT_WARMUP) -> float:
    """p99 of ``fn()`` in milliseconds over ``calls`` calls (see ``time_calls``)."""
    return p99(time_calls(fn, calls, warmup))


def _ms(value: float) -> str:
    return f"{value:.3f}" if value < 10 else f"{value:.1f}"


@dataclass
class Rounds:
    """One figure measured in rounds: the chosen percentile of each round's samples."""

    per_round: list[float]  # milliseconds, one per round, in the order measured
    q: float = 99

    @property
    def best(self) -> float:
        """The best (lowest) round: the figure for an absolute target on a busy machine."""
        return min(self.per_round)

    @property
    def median(self) -> float:
        """The median over rounds (the middle round; the mean of the two middle ones)."""
        return statistics.median(self.per_round)

    @property
    def worst(self) -> float:
        return max(self.per_round)

    @property
    def spread(self) -> str:
        """``min..max ms over k rounds``: the evidence printed next to the figure."""
        return f"{_ms(self.best)}..{_ms(self.worst)} ms over {len(self.per_round)} rounds"


def rounds(fn: Callable[[], object], calls: int, k: int = DEFAULT_ROUNDS,
           warmup: int = DEFAULT_WARMUP, q: float = 99) -> Rounds:
    """``k`` rounds of ``calls`` timed calls of ``fn``; each round's q-th percentile kept.

    The warm-up runs once, before the first round.
    """
    if k < 1:
        raise ValueError(f"rounds must be at least 1, got {k}")
    per_round = [percentile(time_calls(fn, calls, warmup if i == 0 else 0), q)
                 for i in range(k)]
    return Rounds(per_round, q)


def best_p99_ms(fn: Callable[[], object], calls: int, k: int = DEFAULT_ROUNDS,
                warmup: int = DEFAULT_WARMUP) -> Rounds:
    """Best of ``k`` rounds' p99 (``.best``), with ``.spread`` to print beside it."""
    return rounds(fn, calls, k, warmup, 99)


@dataclass
class Comparison:
    """Several figures measured in interleaved rounds (see ``interleave``)."""

    figures: dict[str, Rounds]
    order: list[list[str]]  # the order the contenders ran in, round by round

    def __getitem__(self, name: str) -> Rounds:
        return self.figures[name]

    def ratios(self, num: str, den: str) -> list[float]:
        """``num`` over ``den``, round by round (each from the same round)."""
        return [a / b if b > 0 else math.inf
                for a, b in zip(self[num].per_round, self[den].per_round, strict=True)]

    def ratio(self, num: str, den: str) -> float:
        """The median over rounds of ``num``'s figure over ``den``'s in the same round."""
        return statistics.median(self.ratios(num, den))

    def ratio_spread(self, num: str, den: str) -> str:
        values = self.ratios(num, den)
        return f"{min(values):.2f}..{max(values):.2f}x over {len(values)} rounds"

    def describe(self) -> str:
        """One line per reader: each figure's median and spread over the rounds."""
        q = next(iter(self.figures.values())).q if self.figures else 99
        label = f"p{q:g}"
        return "; ".join(f"{name} {label} median {_ms(r.median)} ms ({r.spread})"
                         for name, r in self.figures.items())


def interleave(contenders: Mapping[str, Callable[[], object]], calls: int | Mapping[str, int],
               k: int = DEFAULT_ROUNDS, warmup: int = DEFAULT_WARMUP,
               q: float = 99) -> Comparison:
    """Each contender timed in ``k`` rounds, the rounds interleaved: A B, B A, A B, ...

    In every round each contender makes its ``calls`` calls (a number, or one per name) and
    keeps the q-th percentile of them; the order is reversed every other round, so neither
    always runs first. Every contender is warmed up once, before the first round.
    """
    names = list(contenders)
    if not names:
        raise ValueError("interleave needs at least one contender")
    if k < 1:
        raise ValueError(f"rounds must be at least 1, got {k}")
    count = {n: calls if isinstance(calls, int) else calls[n] for n in names}
    for name in names:
        for _ in range(warmup):
            contenders[name]()
    per_round: dict[str, list[float]] = {n: [] for n in names}
    order: list[list[str]] = []
    for i in range(k):
        this_round = names if i % 2 == 0 else names[::-1]
        order.append(list(this_round))
        for name in this_round:
            samples = time_calls(contenders[name], count[name], warmup=0)
            per_round[name].append(percentile(samples, q))
    return Comparison({n: Rounds(per_round[n], q) for n in names}, order)


def compare_ab(a: Callable[[], object], b: Callable[[], object], calls: int,
               k: int = DEFAULT_ROUNDS, warmup: int = DEFAULT_WARMUP,
               q: float = 99) -> Comparison:
    """``interleave({"A": a, "B": b}, ...)``; ``.ratio("B", "A")`` > 1 when B is slower."""
    return interleave({"A": a, "B": b}, calls, k, warmup, q)
