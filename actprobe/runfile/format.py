"""Names fixed by the run-file format (docs/FORMAT.md), shared by the writer, the reader and the engine.

Imports nothing: the statistics kernels and the engine read these names without loading h5py.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

FORMAT_NAME = "actprobe"
FORMAT_VERSION = 1

# The statistics recorded for every site and step, in the order of the last axis of a row.
STATISTICS: tuple[str, ...] = ("count", "mean", "std", "min", "max", "near_zero", "dead", "nonfinite")

# The groups of statistics a file may hold, each a (rows, sites) dataset per name of STATISTICS:
# ``stats`` of the sites' outputs (always), ``grad_stats`` of the gradients of the loss with respect
# to those outputs (``Probe(grads=True)``; absent otherwise).
STATS = "stats"
GRAD_STATS = "grad_stats"
STAT_GROUPS: tuple[str, ...] = (STATS, GRAD_STATS)
# Per parameter tensor (``Probe(params=True, optimizer=…)``; columns named by ``params``): its values
# and its gradient just before the optimizer's step, and the step's change Δw.
PARAM_STATS = "param_stats"
PARAM_GRAD_STATS = "param_grad_stats"
UPDATE_STATS = "update_stats"
PARAM_GROUPS: tuple[str, ...] = (PARAM_STATS, PARAM_GRAD_STATS, UPDATE_STATS)

# The mergeable partials of each row, kept by each rank of a distributed run (``partials/<name>``, (T, C)
# float64, C: every column of a row, the stat groups side by side), and per unit of the columns that have
# units (``unit_partials/<name>``, (T, U) float64; ``unit_partials/columns``: (C, 2) first unit column or
# −1, and units, of each column). A distributed run's statistics are merged from them (``runfile.ranks``).
PARTIALS = "partials"
PARTIAL_NAMES: tuple[str, ...] = ("count", "mean", "m2", "min", "max", "numel", "far", "nonfinite")
UNIT_PARTIALS = "unit_partials"
UNIT_PARTIAL_NAMES: tuple[str, ...] = ("count", "mean", "m2")


def unit_total(unit_columns: Any) -> int:
    """U, the unit columns of a row: the units of every column that has them (an int64 (C, 2) array of
    first unit column, or −1, and units)."""
    return int(unit_columns[:, 1][unit_columns[:, 0] >= 0].sum())

def scalar_key(name: str) -> str:
    """The dataset name of scalar ``name`` in ``scalars/``: the name itself, with ``%`` and ``/`` written as
    ``%25`` and ``%2F`` (and ``.``/``..`` as ``%2E``…), which HDF5 would read as a path; such a dataset keeps
    the name in its attribute ``name`` (docs/FORMAT.md)."""
    key = name.replace("%", "%25").replace("/", "%2F")
    return key.replace(".", "%2E") if key in (".", "..") else key


# Per row, 1 when a site's output held a NaN or an Inf (``stats/nonfinite`` > 0 anywhere in the row), else 0:
# readers find the rows with non-finite values without scanning ``stats/nonfinite`` (since actprobe 0.4)
ROW_NONFINITE = "row_nonfinite"

# The histogram bins (``hist/edges``): symmetric and log-spaced in |x|, HIST_PER_DECADE per decade from
# 1e-6 to 1e6, a bin [-1e-6, 1e-6) around zero, and underflow/overflow bins out to ∓inf (see
# ``stats.histogram``).
HIST_PER_DECADE = 4
_HIST_MAGNITUDES = tuple(10.0 ** (k / HIST_PER_DECADE - 6) for k in range(12 * HIST_PER_DECADE + 1))
HIST_EDGES: tuple[float, ...] = (-math.inf, *(-m for m in reversed(_HIST_MAGNITUDES)), *_HIST_MAGNITUDES, math.inf)

# ``step`` of a row whose commit has not written it (a writer stopped by a crash or a write error):
# readers take the rows up to the first step that is negative or not larger than the one before.
STEP_FILL = -1

# The default thresholds of ``near_zero`` (|x| <= eps) and ``dead`` (a unit's std <= eps), stored in
# every file as the root attributes near_zero_eps and dead_eps.
NEAR_ZERO_EPS = 0.05
DEAD_EPS = 1e-6


# The source of a ``graph/edges`` entry whose call's inputs derive from no recorded site (the
# model's input, or a computation from parameters alone).
GRAPH_INPUT = -1


@dataclass(frozen=True)
class SiteGraph:
    """Which sites feed which (``graph/edges``), and the selected modules that were never called."""

    edges: tuple[tuple[int, int], ...]  # (source column or GRAPH_INPUT, target column), sorted
    uncalled: tuple[str, ...] = ()


@dataclass(frozen=True)
class Site:
    """One column of a run file: a recorded module call and output, as ``sites`` names it."""

    name: str
    module_type: str
    unit_dim: int | None  # 1, -1, or None when the output has no units (stored as 0)
