"""The statistics of several processes' values from each process's mergeable partials (distributed runs).

Each rank of a distributed run stores, per row and column, ``format.PARTIAL_NAMES`` float64 values
(count, mean and M2 of the finite values, min, max, the number of values, of values with |x| > eps and
of non-finite ones) and, per unit, ``format.UNIT_PARTIAL_NAMES`` (count, mean, M2). ``combine`` merges them
with the parallel variance formula (Chan et al.) in float64: the result is the statistics of all ranks'
values taken together, as one process would compute them on the concatenated batch, up to float64
rounding. A unit is dead when its std over all ranks' values is ``<= dead_eps``.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from .format import PARTIAL_NAMES, UNIT_PARTIAL_NAMES

COUNT, MEAN, M2, MIN, MAX, NUMEL, FAR, NONFINITE = range(len(PARTIAL_NAMES))


def _moments(count: np.ndarray, mean: np.ndarray, m2: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(count, mean, M2) of ranks (first axis) → of their union; mean and M2 are 0 where nothing was counted."""
    n = count.sum(axis=0)
    safe = np.where(n > 0, n, 1.0)
    total_mean = np.where(n > 0, (count * mean).sum(axis=0) / safe, 0.0)
    spread = mean - total_mean
    total_m2 = m2.sum(axis=0) + (count * spread * spread).sum(axis=0)
    return n, total_mean, total_m2


def combine(partials: Sequence[np.ndarray], units: Sequence[np.ndarray] | None, unit_columns: np.ndarray,
            dead_eps: float) -> np.ndarray:
    """Statistics (n, C, len(STATISTICS)) float64 of R ranks' rows.

    Args:
        partials: per rank, (n, C, PARTIAL_VALUES) float64: the same n steps of each rank.
        units: per rank, (n, U, UNIT_VALUES) float64; None: ``dead`` is left NaN (``dead_fraction`` computes
            it alone: a wide model's unit partials are most of what a rank file holds).
        unit_columns: (C, 2) int64: each column's first unit column (−1: it has no units) and units.
        dead_eps: a unit is dead when its std over all ranks' values is ``<= dead_eps``.
    """
    p = np.stack([np.asarray(x, dtype=np.float64) for x in partials])  # (R, n, C, 8)
    n, mean, m2 = _moments(p[..., COUNT], p[..., MEAN], p[..., M2])
    with np.errstate(invalid="ignore", divide="ignore"):
        minimum = np.fmin.reduce(p[..., MIN], axis=0)
        maximum = np.fmax.reduce(p[..., MAX], axis=0)
        numel = p[..., NUMEL].sum(axis=0)
        far = p[..., FAR].sum(axis=0)
        nonfinite = p[..., NONFINITE].sum(axis=0)
        some = n > 0
        stats = np.stack((
            np.where(numel > 0, n, np.nan),
            np.where(some, mean, np.nan),
            np.where(some, np.sqrt(m2 / np.where(some, n, 1.0)), np.nan),
            np.where(some, minimum, np.nan),
            np.where(some, maximum, np.nan),
            (numel - far) / numel,
            np.full(n.shape, np.nan) if units is None else dead_fraction(units, unit_columns, dead_eps),
            nonfinite / numel,
        ), axis=-1)
    return stats


def dead_fraction(units: Sequence[np.ndarray], unit_columns: np.ndarray, dead_eps: float) -> np.ndarray:
    """(n, C): the fraction of each column's units whose std over all ranks is ``<= dead_eps``; NaN for
    columns without units, and where a rank's row had another number of units than the column."""
    with np.errstate(invalid="ignore", divide="ignore"):
        return _dead(units, unit_columns, dead_eps)


def _dead(units: Sequence[np.ndarray], unit_columns: np.ndarray, dead_eps: float) -> np.ndarray:
    u = np.stack([np.asarray(x, dtype=np.float64) for x in units])  # (R, n, U, 3)
    dead = np.full((u.shape[1], len(unit_columns)), np.nan)
    assert u.shape[-1] == len(UNIT_PARTIAL_NAMES)
    for column, (first, count) in enumerate(np.asarray(unit_columns)):
        if first < 0 or count <= 0:
            continue
        block = u[:, :, first:first + count]
        n, _, m2 = _moments(block[..., 0], block[..., 1], block[..., 2])
        std = np.sqrt(m2 / np.where(n > 0, n, np.nan))  # no value at all: NaN, not dead
        fraction = (std <= dead_eps).sum(axis=-1) / count
        unknown = np.isnan(block[..., 0]).any(axis=(0, 2))  # a rank's row had other units
        dead[:, column] = np.where(unknown, np.nan, fraction)
    return dead

