"""The role of a site's module — what kind of layer it is — from its class name as the file stores it."""

from __future__ import annotations

import fnmatch
from collections.abc import Sequence

import numpy as np

from ..runfile.reader import Run

ACTIVATIONS = frozenset({
    "ReLU", "WIBReLU", "ReLU6", "LeakyReLU", "PReLU", "RReLU", "ELU", "CELU", "SELU", "GELU", "SiLU", "Mish",
    "Softplus", "Hardswish", "Tanh", "Sigmoid", "Hardtanh", "Hardsigmoid", "Softsign", "Tanhshrink",
})
# Activations that zero or squash the negative side, so shift the mean away from 0.
RELU_LIKE = frozenset({"ReLU", "WIBReLU", "ReLU6", "LeakyReLU", "PReLU", "RReLU", "ELU", "CELU", "SELU", "GELU",
                       "SiLU", "Mish", "Softplus", "Hardswish"})
# Activations whose outputs are exactly zero for about half of centred inputs.
ZEROING = frozenset({"ReLU", "ReLU6", "RReLU"})


def role(module_type: str) -> str:
    """``activation``, ``conv``, ``linear``, ``norm``, ``pool``, ``dropout``, or the class name itself."""
    if module_type in ACTIVATIONS:
        return "activation"
    if module_type.startswith(("Conv", "LazyConv")):
        return "conv"
    if module_type in ("Linear", "LazyLinear", "Bilinear"):
        return "linear"
    if "Norm" in module_type:
        return "norm"
    if "Pool" in module_type:
        return "pool"
    if module_type.startswith(("Dropout", "AlphaDropout")):
        return "dropout"
    return module_type


def sites_with_role(run: Run, *roles: str) -> list[int]:
    """Column indices of the sites whose module has one of ``roles``, in recording order."""
    return [i for i, kind in enumerate(run.site_module_types) if role(kind) in roles]


def sites_matching(run: Run, globs: Sequence[str]) -> list[int]:
    """Column indices of the sites whose name matches any of ``globs`` (fnmatch, case-sensitive)."""
    return [i for i, name in enumerate(run.sites) if any(fnmatch.fnmatchcase(name, g) for g in globs)]


def layer_chain(run: Run) -> list[int]:
    """The sites that follow the signal layer by layer: the activations when there are at least two,
    else the convolutions and linear layers, else every site."""
    acts = sites_with_role(run, "activation")
    if len(acts) >= 2:
        return acts
    weighted = sites_with_role(run, "conv", "linear")
    return weighted if len(weighted) >= 2 else list(range(len(run.sites)))


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
