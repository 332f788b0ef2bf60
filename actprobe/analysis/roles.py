"""The role of a site's module — what kind of layer it is — from its class name as the file stores it."""

from __future__ import annotations

import fnmatch
from collections.abc import Sequence

import numpy as np

from ..runfile.reader import Run

ACTIVATIONS = frozenset({
    "ReLU", "WIBReLU", "ReLU6", "LeakyReLU", "PReLU", "RReLU", "ELU", "CELU", "SELU", "GELU", "SiLU", "Mish",
    "Softplus", "Hardswish", "Tanh", "Sigmoid", "Hardtanh", "Hardsigmoid", "Softsign", "Tanhshrink", "Softmax",
    "Softmax2d", "Softmin", "LogSoftmax", "LogSigmoid",
})
# Activations that zero or squash the negative side, so shift the mean away from 0.
RELU_LIKE = frozenset({"ReLU", "WIBReLU", "ReLU6", "LeakyReLU", "PReLU", "RReLU", "ELU", "CELU", "SELU", "GELU",
                       "SiLU", "Mish", "Softplus", "Hardswish"})
# Activations that put about half of centred inputs at or near zero: exactly (ReLU, ReLU6), or within
# the near-zero band for all but large negative inputs (LeakyReLU's 0.01, RReLU's and PReLU's slopes).
ZEROING = frozenset({"ReLU", "ReLU6", "RReLU", "LeakyReLU", "PReLU"})
# Activations used as gates (multiplying another signal) or for probabilities: their outputs lie in
# [0, 1] by design, so they are not layers of the signal path and are not judged for saturation.
GATES = frozenset({"Sigmoid", "Hardsigmoid", "Softmax", "Softmax2d", "Softmin", "LogSoftmax", "LogSigmoid"})
# Modules that pass their input on reshaped or masked: what they show is judged where it came from.
PASS_THROUGH = frozenset({"Flatten", "Unflatten", "Identity", "Dropout", "Dropout1d", "Dropout2d", "Dropout3d",
                          "AlphaDropout", "FeatureAlphaDropout"})


def role(module_type: str) -> str:
    """``gate``, ``activation``, ``conv``, ``linear``, ``norm``, ``pool``, ``dropout``, or the class name itself."""
    if module_type in GATES:
        return "gate"
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


def sites_matching(run: Run, patterns: Sequence[str]) -> list[int]:
    """Column indices of the sites that any of ``patterns`` picks; see ``matching``."""
    return matching(run.sites, run.site_module_types, patterns)


def matching(names: Sequence[str], module_types: Sequence[str], patterns: Sequence[str]) -> list[int]:
    """Indices of the sites whose name matches a glob of ``patterns`` (fnmatch, case-sensitive) or whose
    module class is named by one (``ReLU``, ``nn.ReLU``), as ``Probe(select=…)`` reads them."""
    wanted = {p.removeprefix("torch.").removeprefix("nn.") for p in patterns}
    return [i for i, (name, kind) in enumerate(zip(names, module_types))
            if kind in wanted or any(fnmatch.fnmatchcase(name, p) for p in patterns)]


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
