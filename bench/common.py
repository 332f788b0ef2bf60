"""Shared pieces of the benchmarks: an interleaved, paired timer."""

from __future__ import annotations

import math
import statistics
import time
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext


def interleaved(modes: dict[str, Callable[[], None]], *, rounds: int, steps: int,
                warmup: int, sync: Callable[[], None] = lambda: None,
                positions: dict[str, list[list[float]]] | None = None,
                around: Callable[[str], AbstractContextManager] = lambda name: nullcontext()) -> dict[str, list[float]]:
    """Seconds per step of each mode in each round. Every round runs every mode for ``steps``
    steps, in an order that rotates from round to round, so that drifts of the machine's speed
    fall on all modes alike. ``sync`` (a device synchronisation) runs before the clock starts and
    after the ``steps`` steps, not between them: queued device work is timed, not serialised.
    ``positions`` (CPU only: no synchronisation between steps) receives, for each mode, the seconds of
    each step by its position in the round: ``positions[mode][i]`` lists the i-th steps of every round.
    ``around(mode)`` is entered before each of the mode's blocks of ``steps`` steps and left after it, outside
    the timed span (and around its warmup)."""
    for name, run in modes.items():
        with around(name):
            for _ in range(warmup):
                run()
    sync()
    names = list(modes)
    samples: dict[str, list[float]] = {name: [] for name in names}
    for r in range(rounds):
        order = names[r % len(names):] + names[:r % len(names)]
        for name in order:
            run = modes[name]
            with around(name):
                sync()
                start = time.perf_counter()
                if positions is None:
                    for _ in range(steps):
                        run()
                else:
                    at = positions.setdefault(name, [[] for _ in range(steps)])
                    for i in range(steps):
                        begun = time.perf_counter()
                        run()
                        at[i].append(time.perf_counter() - begun)
                sync()
                samples[name].append((time.perf_counter() - start) / steps)
    return samples


def position_overhead(times: list[list[float]], baseline: list[list[float]]) -> float:
    """The sum over a round's positions of the median step time, relative to the baseline's, minus one: each
    position (the recorded step of every 10th, the step after it, …) measured by its own median over rounds."""
    return sum(statistics.median(t) for t in times) / sum(statistics.median(t) for t in baseline) - 1


def _ratios(samples: list[float], baseline: list[float]) -> list[float]:
    """The per-round ratios to the baseline, minus one, sorted."""
    return sorted(s / b - 1 for s, b in zip(samples, baseline))


def paired_overhead(samples: list[float], baseline: list[float]) -> tuple[float, float, float]:
    """Median, first and third quartile of the per-round ratio to the baseline, minus one."""
    q1, median, q3 = statistics.quantiles(_ratios(samples, baseline), n=4)
    return median, q1, q3


def median_interval(samples: list[float], baseline: list[float]) -> tuple[float, float]:
    """A 95% confidence interval of the median per-round ratio (minus one), from order statistics (no assumption on
    the ratios' distribution): how far the median of this many rounds can stray on this machine. It is the k-th
    smallest and k-th largest ratio, for the largest k that the binomial distribution lets cover the median with
    a probability of at least 95% (the smallest and the largest below 6 rounds, where none does)."""
    ratios = _ratios(samples, baseline)
    k = order_statistic(len(ratios))
    return ratios[k], ratios[len(ratios) - 1 - k]


def order_statistic(n: int, coverage: float = 0.95) -> int:
    """The largest k (0-based) such that the k-th smallest and k-th largest of n samples enclose their distribution's
    median with probability ≥ ``coverage``: P(fewer than k + 1 samples lie below the median) ≤ (1 − coverage) / 2."""
    k, below = 0, 0  # below: the number of ways that at most k samples lie below the median
    while k < n // 2:
        below += math.comb(n, k)
        if 2 * below / 2 ** n > 1 - coverage:  # exact integers, one rounding
            break
        k += 1
    return max(k - 1, 0)


def median_ms(values: list[float]) -> float:
    return statistics.median(values) * 1e3
