"""Recipe ``toy`` (the paper's Fig. 3–5 and Eq. 4): matrix products of standard-normal inputs.

Each experiment draws new weights and a new input ``x ~ N(0, 1)`` of ``width`` values and runs it
through a stack of bias-free ``Linear(width, width)`` layers (with or without an activation); the
probe records every layer's output, one row per experiment. Single-layer cases redraw Fig. 3
(N(0,1) and Eq. 5 weights, no activation), Fig. 4 (ReLU under Eq. 5 and Kaiming) and Fig. 5
(WIB-ReLU with μ from Eq. 7, measured on separate calibration experiments); deep cases show the
growth or decay per layer that Eq. 4 predicts.

Theory (float64, used in the table): a layer's pre-activation variance is
``Var(z_l) = n·Var(w) · g · Var(z_{l-1})`` with ``g = 1`` after no activation, ``1/2`` after ReLU
and ``1/2 − 1/(2π)`` after WIB-ReLU (ReLU's variance), and ``Var(z_0)`` the input's variance 1
(``g = 1`` for the first layer).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ..analysis.roles import activation_sites, linear_sites
from ..engine.probe import Probe
from ..init import expected_std, init_weights
from ..nn import WIBReLU, calibrate, make_activation
from ..render import figures
from ..runfile.reader import Run, read
from ..training import run_loop
from .base import Context, RecipeResult
from .tables import fmt, table

NAME = "toy"
RELU_MEAN = 1.0 / math.sqrt(2.0 * math.pi)  # E[max(0, z)] for z ~ N(0, 1)
RELU_VAR = 0.5 - 1.0 / (2.0 * math.pi)  # Var[max(0, z)] for z ~ N(0, 1)
GAIN = {"none": 1.0, "relu": 0.5, "wib-relu-fixed": RELU_VAR}


@dataclass(frozen=True)
class ToyCase:
    key: str
    label: str
    init: str
    activation: str  # "none", "relu" or "wib-relu-fixed"
    deep: bool


CASES = (
    ToyCase("linear-normal", "N(0,1) weights, no activation (Fig. 3a)", "normal", "none", False),
    ToyCase("linear-eq5", "Eq. 5 weights, no activation (Fig. 3b)", "eq5", "none", False),
    ToyCase("relu-eq5", "ReLU, Eq. 5 weights (Fig. 4a)", "eq5", "relu", False),
    ToyCase("relu-kaiming", "ReLU, Kaiming weights (Fig. 4b)", "kaiming", "relu", False),
    ToyCase("wib-kaiming", "WIB-ReLU (μ by Eq. 7), Kaiming weights (Fig. 5)", "kaiming", "wib-relu-fixed", False),
    ToyCase("deep-linear-normal", "deep, N(0,1), no activation", "normal", "none", True),
    ToyCase("deep-linear-torch-default", "deep, PyTorch default, no activation", "torch-default", "none", True),
    ToyCase("deep-linear-eq5", "deep, Eq. 5, no activation", "eq5", "none", True),
    ToyCase("deep-relu-eq5", "deep, ReLU, Eq. 5", "eq5", "relu", True),
    ToyCase("deep-relu-kaiming", "deep, ReLU, Kaiming", "kaiming", "relu", True),
    ToyCase("deep-relu-eq6", "deep, ReLU, Eq. 6", "eq6", "relu", True),
    ToyCase("deep-wib-kaiming", "deep, WIB-ReLU, Kaiming", "kaiming", "wib-relu-fixed", True),
)


def theory(case: ToyCase, width: int, layers: int) -> tuple[list[float], list[float], list[float]]:
    """Per layer: the pre-activation std, and the activation output's mean and std (float64 theory)."""
    nv = width * expected_std(case.init, width) ** 2
    z_std, a_mean, a_std = [], [], []
    var_in = 1.0
    for layer in range(layers):
        var_z = nv * var_in
        s = math.sqrt(var_z)
        z_std.append(s)
        if case.activation == "relu":
            a_mean.append(RELU_MEAN * s)
            a_std.append(math.sqrt(RELU_VAR) * s)
            var_in = var_z / 2.0  # E[a²] of ReLU output
        elif case.activation == "wib-relu-fixed":
            a_mean.append(0.0)
            a_std.append(math.sqrt(RELU_VAR) * s)
            var_in = var_z * RELU_VAR
        else:
            a_mean.append(0.0)
            a_std.append(s)
            var_in = var_z
    return z_std, a_mean, a_std


def _model(case: ToyCase, width: int, layers: int) -> nn.Sequential:
    parts: list[nn.Module] = []
    for _ in range(layers):
        parts.append(nn.Linear(width, width, bias=False))
        if case.activation != "none":
            parts.append(make_activation(case.activation))
    return nn.Sequential(*parts)


def run_case(case: ToyCase, ctx: Context, seed: int = 0) -> tuple[Run, float]:
    """Run ``experiments`` experiments of one case: its run file and the seconds they took."""
    options = ctx.options
    layers = options.depth if case.deep else 1
    width = options.width
    model = _model(case, width, layers)

    def experiment(model: nn.Module, index: int) -> torch.Tensor:
        g = torch.Generator().manual_seed(seed * 1_000_003 + index)
        init_weights(model, case.init, generator=g)
        return model(torch.randn(1, width, generator=g))

    mus: dict[str, float] = {}
    if any(isinstance(m, WIBReLU) for m in model.modules()):
        # Eq. 7 over experiments of their own: indices past the recorded ones.
        calibration = list(range(options.experiments, 2 * options.experiments))
        mus = calibrate(model, calibration, forward=experiment)
    path = ctx.out(NAME) / f"{case.key}.h5"
    path.parent.mkdir(parents=True, exist_ok=True)
    meta = {"recipe": NAME, "data": "standard-normal", "init": case.init, "activation": case.activation,
            "seed": seed, "optimizer": "none", "lr": 0.0, "epochs": 0, "batch_size": 1,
            "case": case.key, "width": width, "layers": layers, "experiments": options.experiments}
    if mus:
        meta["wib_mu"] = list(mus.values())
    with torch.no_grad(), Probe(model, path, meta=meta, overwrite=True, train_only=False,
                                flush_every=max(options.experiments, 1)) as probe:
        def one(index: int) -> None:
            experiment(model, index)

        result = run_loop(one, lambda epoch: range(options.experiments), probe=probe, progress=ctx.progress,
                          label=f"  {case.key}", total=options.experiments)
    return read(path), result.seconds


def output_columns(run: Run) -> list[int]:
    """The columns of each layer's final output: the activation's, or the Linear's without one."""
    acts = activation_sites(run)
    return acts if acts else linear_sites(run)


FIGURE_PANELS = {"fig3": (("linear-normal", "(a)"), ("linear-eq5", "(b)")),
                 "fig4": (("relu-eq5", "(a)"), ("relu-kaiming", "(b)")),
                 "fig5": (("wib-kaiming", ""),)}


def draw_figures(runs: dict[str, Run], width: int, out: Path) -> list[Path]:
    """Fig. 3–5 (one layer's output per experiment) and Eq. 4 (std per layer of the deep stacks)."""
    labels = {case.key: case.label for case in CASES}
    written = [figures.experiment_panels([(f"{tag} {labels[key]}", runs[key], output_columns(runs[key])[-1])
                                          for key, tag in panels], out / f"toy-{name}.png")
               for name, panels in FIGURE_PANELS.items()]
    curves = []
    for case in CASES:
        if case.deep:
            z = np.median(runs[case.key].stats["std"][:, linear_sites(runs[case.key])].astype(np.float64), axis=0)
            curves.append((case.label.removeprefix("deep, "), z, np.array(theory(case, width, len(z))[0])))
    written.append(figures.depth_curves(curves, "Eq. 4: std per layer (dashed: theory)", out / "toy-eq4-deep.png"))
    return written


def reproduce(ctx: Context) -> RecipeResult:
    result = RecipeResult(NAME)
    runs: dict[str, Run] = {}
    for case in CASES:
        runs[case.key], seconds = run_case(case, ctx)
        ctx.done(case.key, "", seconds)
        result.runs.append(runs[case.key].path)
    options = ctx.options
    rows = []
    for case in CASES:
        if case.deep:
            continue
        r = runs[case.key]
        column = output_columns(r)[-1]
        means, stds = r.stats["mean"][:, column].astype(np.float64), r.stats["std"][:, column].astype(np.float64)
        _, t_mean, t_std = theory(case, options.width, 1)
        rows.append((case.label, f"{means.mean():+.3f} ± {means.std():.3f}", f"{t_mean[0]:+.3f}",
                     f"{stds.mean():.3f} ({stds.min():.3f}–{stds.max():.3f})", f"{t_std[0]:.3f}"))
        result.facts[f"{case.key}.std"] = (float(stds.min()), float(stds.max()), float(stds.mean()))
        result.facts[f"{case.key}.mean"] = float(means.mean())
    result.tables.append(table(
        f"One layer, {options.experiments} experiments, n = {options.width}: the output's mean and std",
        ("case", "mean over experiments (± sd)", "theory", "std: average (range)", "theory"), rows,
        ("theory: float64 formulas of the recipe's docstring; WIB-ReLU's μ by Eq. 7 from as many separate "
         "experiments",)))
    deep_rows = []
    for case in CASES:
        if not case.deep:
            continue
        r = runs[case.key]
        z = np.median(r.stats["std"][:, linear_sites(r)].astype(np.float64), axis=0)
        z_theory, _, _ = theory(case, options.width, options.depth)
        per_layer = (z[-1] / z[0]) ** (1.0 / max(len(z) - 1, 1))
        deep_rows.append((case.label, fmt(z[0], 3), f"{z[-1]:.3g}", f"{z_theory[-1]:.3g}", f"×{per_layer:.3f}",
                          f"×{(z_theory[-1] / z_theory[0]) ** (1.0 / max(len(z) - 1, 1)):.3f}"))
        result.facts[f"{case.key}.per_layer"] = float(per_layer)
    result.tables.append(table(
        f"Eq. 4: a stack of {options.depth} layers, pre-activation std (median over experiments)",
        ("case", "layer 1", f"layer {options.depth}", "theory", "per layer", "theory per layer"), deep_rows))
    out = ctx.out(NAME)
    result.figures += draw_figures(runs, options.width, out / "figures")
    return result
