"""Shared pieces of the benchmarks: an interleaved, paired timer."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable


def interleaved(modes: dict[str, Callable[[], None]], *, rounds: int, steps: int,
                warmup: int, sync: Callable[[], None] = lambda: None,
                positions: dict[str, list[list[float]]] | None = None) -> dict[str, list[float]]:
    """Seconds per step of each mode in each round. Every round runs every mode for ``steps``
    steps, in an order that rotates from round to round, so that drifts of the machine's speed
    fall on all modes alike. ``sync`` (a device synchronisation) runs before the clock starts and
    after the ``steps`` steps, not between them: queued device work is timed, not serialised.
    ``positions`` (CPU only: no synchronisation between steps) receives, for each mode, the seconds of
    each step by its position in the round: ``positions[mode][i]`` lists the i-th steps of every round."""
    for run in modes.values():
        for _ in range(warmup):
            run()
    sync()
    names = list(modes)
    samples: dict[str, list[float]] = {name: [] for name in names}
    for r in range(rounds):
        order = names[r % len(names):] + names[:r % len(names)]
        for name in order:
            run = modes[name]
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


def paired_overhead(samples: list[float], baseline: list[float]) -> tuple[float, float, float]:
    """Median, first and third quartile of the per-round ratio to the baseline, minus one."""
    ratios = sorted(s / b - 1 for s, b in zip(samples, baseline))
    q1, median, q3 = statistics.quantiles(ratios, n=4)
    return median, q1, q3


def median_ms(values: list[float]) -> float:
    return statistics.median(values) * 1e3
