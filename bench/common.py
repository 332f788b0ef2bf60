"""Shared pieces of the benchmarks: the paper's reference CNN and an interleaved timer."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable

import torch
from torch import nn


def paper_cnn(in_channels: int = 1, classes: int = 10) -> nn.Sequential:
    """The reference CNN of the WIB-ReLU paper (Fig. 6)."""
    return nn.Sequential(
        nn.Conv2d(in_channels, 8, 5, stride=2, padding=2), nn.ReLU(),
        nn.Conv2d(8, 16, 3, stride=2, padding=1), nn.ReLU(),
        nn.Conv2d(16, 32, 3, stride=2, padding=1), nn.ReLU(),
        nn.Conv2d(32, 64, 3, stride=2, padding=1), nn.ReLU(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(64, classes),
    )


def interleaved(modes: dict[str, Callable[[], None]], *, rounds: int, steps: int,
                warmup: int) -> dict[str, list[float]]:
    """Per-step seconds of each mode: ``rounds`` rounds, each running every mode for ``steps`` steps,
    in an order that rotates every round so that no mode always runs first."""
    for run in modes.values():
        for _ in range(warmup):
            run()
    names = list(modes)
    samples: dict[str, list[float]] = {name: [] for name in names}
    for r in range(rounds):
        order = names[r % len(names):] + names[:r % len(names)]
        for name in order:
            run = modes[name]
            start = time.perf_counter()
            for _ in range(steps):
                run()
            samples[name].append((time.perf_counter() - start) / steps)
    return samples


def median_ms(values: list[float]) -> float:
    return statistics.median(values) * 1e3
