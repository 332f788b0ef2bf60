"""A statistic against step, with a bounded number of points: what a figure draws of a long run.

A run of more than ``points`` rows is cut into ``points`` buckets of consecutive rows; each bucket
gives its mean, and its minimum and maximum (an envelope, so that a spike is never averaged away),
and whether any of its rows was non-finite at the site. The statistic is read in blocks
(``runfile.lazy.row_blocks``): memory does not grow with the number of rows.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from ..runfile.lazy import row_blocks
from ..runfile.reader import Run

POINTS = 1000  # twice the pixels of a panel's width (two panels of an 11-inch figure at 90 dpi)


@dataclass(frozen=True)
class Series:
    """(P,) ``step`` and ``row`` (1-based, of each bucket's first row) and (P, C) values of the columns."""

    step: np.ndarray
    row: np.ndarray
    mean: np.ndarray
    low: np.ndarray
    high: np.ndarray
    nonfinite: np.ndarray  # bool: a NaN or Inf at the site in the bucket
    decimated: bool


def series(run: Run, stat: str, columns: Sequence[int] | None = None, points: int = POINTS,
           nonfinite: np.ndarray | None = None) -> Series:
    """``stat`` of the ``columns`` (default: every site), decimated to at most ``points`` buckets of rows.
    ``nonfinite`` (from an earlier ``Series`` of the same run, columns and points) saves a scan."""
    rows = run.rows
    columns = list(range(len(run.sites))) if columns is None else list(columns)
    size = max(1, -(-rows // points))  # rows per bucket
    parts = [_buckets(block[:, columns], size) for _, block in _aligned(run.stats[stat], size)]
    mean, low, high = (np.concatenate([p[k] for p in parts]) if parts else np.empty((0, len(columns)))
                       for k in range(3))
    if nonfinite is None:  # a NaN/Inf in the bucket (a site that did not fire has NaN values, and 0 here)
        flags = [_buckets(block[:, columns] > 0, size)[2] for _, block in _aligned(run.stats["nonfinite"], size)]
        nonfinite = np.concatenate(flags) > 0 if flags else np.zeros((0, len(columns)), bool)
    first = np.arange(0, rows, size)
    return Series(run.step[first], first + 1, mean, low, high, nonfinite, size > 1)


def _aligned(values: object, size: int):  # type: ignore[no-untyped-def]
    """Blocks of rows whose lengths are multiples of ``size`` (but the last): buckets never straddle two."""
    leftover = None
    for start, block in row_blocks(values, multiple=size):
        if leftover is not None:
            block = np.concatenate([leftover, block])
            start -= len(leftover)
        cut = len(block) - len(block) % size
        leftover = block[cut:] if cut < len(block) else None
        if cut:
            yield start, block[:cut]
    if leftover is not None and len(leftover):
        yield -1, leftover


def _buckets(block: np.ndarray, size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Mean, min and max over each run of ``size`` rows (NaN where a bucket has no value)."""
    if size == 1:
        values = block.astype(np.float64)
        return values, values, values
    n = -(-len(block) // size)
    padded = np.full((n * size, block.shape[1]), np.nan, dtype=np.float32)
    padded[:len(block)] = block
    grouped = padded.reshape(n, size, block.shape[1])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # a bucket of NaN only: NaN, as it should be
        return (np.nanmean(grouped, axis=1, dtype=np.float64), np.nanmin(grouped, axis=1).astype(np.float64),
                np.nanmax(grouped, axis=1).astype(np.float64))
