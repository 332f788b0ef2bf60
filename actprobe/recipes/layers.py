"""Which sites of a recipe's run file are the paper's "layers": the convolutions' outputs and the activations'."""

from __future__ import annotations

import numpy as np

from ..reader import Run

ACTIVATION_TYPES = frozenset({"ReLU", "LeakyReLU", "PReLU", "ELU", "WIBReLU"})
LINEAR_TYPES = frozenset({"Conv2d", "Linear"})


def activation_sites(run: Run) -> list[int]:
    """Column indices of the activation modules' outputs, in the model's order."""
    return [i for i, kind in enumerate(run.site_module_types) if kind in ACTIVATION_TYPES]


def linear_sites(run: Run) -> list[int]:
    """Column indices of the Conv2d and Linear outputs (the pre-activations z), in the model's order."""
    return [i for i, kind in enumerate(run.site_module_types) if kind in LINEAR_TYPES]


def mean_over_steps(run: Run, stat: str, columns: list[int]) -> np.ndarray:
    """The average of ``stat`` over all recorded steps, per column (NaN rows ignored)."""
    values = run.stats[stat][:, columns].astype(np.float64)
    return np.nanmean(values, axis=0) if len(values) else np.full(len(columns), np.nan)
