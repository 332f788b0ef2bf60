"""Which sites of a recipe's run file are the paper's "layers": the convolutions' outputs and the activations'."""

from __future__ import annotations

import numpy as np

from ..reader import Run
from ..roles import sites_with_role


def activation_sites(run: Run) -> list[int]:
    """Column indices of the activation modules' outputs, in the model's order."""
    return sites_with_role(run, "activation")


def linear_sites(run: Run) -> list[int]:
    """Column indices of the Conv and Linear outputs (the pre-activations z), in the model's order."""
    return sites_with_role(run, "conv", "linear")


def mean_over_steps(run: Run, stat: str, columns: list[int]) -> np.ndarray:
    """The average of ``stat`` over all recorded steps, per column (NaN rows ignored)."""
    values = run.stats[stat][:, columns].astype(np.float64)
    return np.nanmean(values, axis=0) if len(values) else np.full(len(columns), np.nan)
